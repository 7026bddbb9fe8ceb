#!/usr/bin/env bash
# Benchmarks that print a comparison (speed and memory goals live here, not in
# timed tests). Needs the test bed (tests/openstack/up.sh) and a release build.
#
#   1. "latest": the old Python module's way (fresh process, openstacksdk, list all
#      images, filter on the client) against the daemon (CLI and plain HTTP).
#   2. upload: the daemon (read once, md5 + sha512 while streaming, verify, prune)
#      against `curl -T` of the same file straight to the same Glance.
#   3. the daemon's peak memory (VmHWM) over the upload.
#   4. one image to two clouds (fan-out) against two sequential uploads, and
#      "latest" with 2,000 images in the project (benches/scale.sh).
#   5. many hooks asking "latest" at once (benches/load.rs).
#   6. a 2 GiB qcow2 to a raw cloud: conversion and upload against qemu-img plus
#      curl -T, and peak RSS (benches/convert.sh).
#   7. import (glance-direct) against a direct PUT of the same file (benches/import.sh).
# benches/versus-0.1.sh (`make bench-versus`): idle RSS and upload medians against 0.1.
#
# BENCH_ROWS picks rows (default: all): latest upload scale convert import load.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tests/daemon.sh
source "$repo/tests/daemon.sh"
bed=$osih_bed
work=$repo/target/bench
venv=$(sed -n 's/^export OSIH_BED_VENV=//p' "$bed/env")
runs=${BENCH_RUNS:-10}
size_mib=${BENCH_IMAGE_MIB:-1024}
port=${BENCH_PORT:-18428}
rows=" ${BENCH_ROWS:-latest upload scale convert import load} "
want() { [[ $rows == *" $1 "* ]]; }
# The bed's clouds, and two for the import row (benches/import.sh): the import
# Glance's cloud, once with direct PUTs and once with glance-direct import.
mkdir -p "$work"
"$venv/bin/python" - "$bed/clouds.yaml" "$work/clouds.yaml" <<'PY'
import copy, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for how in ("direct", "import"):
    entry = copy.deepcopy(doc["clouds"]["charm-import"])
    entry["image_upload_method"] = how
    doc["clouds"]["bench-" + how] = entry
with open(sys.argv[2], "w") as f:
    yaml.safe_dump(doc, f)
PY
chmod 600 "$work/clouds.yaml"
start_daemon "$work" "$port" "$work/clouds.yaml"
daemon=$osih_daemon
token=$(cat "$work/state/api-token")

# Something to find: a few images in the project, one of them ours.
image=$work/images/bench.img
if [[ ! -s $image ]] || (( $(stat -c %s "$image") != size_mib * 1024 * 1024 )); then
  head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$image"
fi
head -c 1048576 /dev/urandom >"$work/images/small.img"
cli upload --base jammy --app-name bench --arch x64 --num-revisions 2 --src-path "$work/images/small.img" >/dev/null

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { print e - s }'; }
stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "mean %7.1f ms   median %7.1f ms   (n=%d)\n", s/NR*1000, a[int((NR+1)/2)]*1000, NR}'; }

# $runs "latest" through the daemon's HTTP API, as a hook would, timed.
daemon_latest_runs() {
  for _ in $(seq "$runs"); do
    t=$(now)
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$port/v1/images/latest?base=jammy&app_name=bench&arch=x64"
    since "$t"
  done | stats
}
if want latest; then
  echo "== latest active image, $runs runs each"
  printf '%-44s' "old: fresh python + openstacksdk, list all:"
  for _ in $(seq "$runs"); do
    t=$(now); OS_CLIENT_CONFIG_FILE=$bed/clouds.yaml "$venv/bin/python" "$repo/benches/old_latest.py" charm jammy-bench-x64 >/dev/null; since "$t"
  done | stats
  printf '%-44s' "daemon, CLI (fresh process):"
  for _ in $(seq "$runs"); do
    t=$(now); cli latest --base jammy --app-name bench --arch x64 >/dev/null; since "$t"
  done | stats
  printf '%-44s' "daemon, HTTP (curl, as a hook would):"
  daemon_latest_runs
fi

gtoken=$(charm_glance_token)
glance=$(sed -n 's/^export GLANCE_URL=//p' "$bed/env")
if want upload; then
  echo "== upload of $size_mib MiB"
  id=$(curl -fsS -H "X-Auth-Token: $gtoken" -H 'Content-Type: application/json' \
    -d '{"name":"bench-curl","disk_format":"raw","container_format":"bare"}' "$glance/v2/images" | sed 's/.*"id": "\([^"]*\)".*/\1/')
  t=$(now)
  curl -fsS -H 'Expect:' -H "X-Auth-Token: $gtoken" -H 'Content-Type: application/octet-stream' -T "$image" "$glance/v2/images/$id/file"
  curl_s=$(since "$t")
  curl -fsS -X DELETE -H "X-Auth-Token: $gtoken" "$glance/v2/images/$id" >/dev/null
  t=$(now)
  cli upload --base jammy --app-name bench --arch x64 --num-revisions 2 --src-path "$image" >/dev/null 2>&1
  daemon_s=$(since "$t")
  awk -v c="$curl_s" -v d="$daemon_s" -v m="$size_mib" 'BEGIN {
    printf "%-44s%6.2f s  %6.0f MiB/s\n", "curl -T straight to Glance (no hashing):", c, m/c
    printf "%-44s%6.2f s  %6.0f MiB/s\n", "daemon (md5+sha512 in one read, verify):", d, m/d }'
  echo "== daemon memory"
  grep -E 'VmHWM|VmRSS' "/proc/$daemon/status" | sed 's/^/  /'
fi

io_read() { sed -n 's/^rchar: //p' "/proc/$daemon/io"; }
reset_peak() { echo 5 >"/proc/$daemon/clear_refs" 2>/dev/null || true; }
peak_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$daemon/status"; }
# Runs "$@" and prints: seconds, MiB read by the daemon, the daemon's peak RSS in MiB.
measured() {
  local t r
  reset_peak
  r=$(io_read)
  t=$(now)
  "$@" >/dev/null 2>&1
  printf '%s %s %s\n' "$(since "$t")" "$(( ($(io_read) - r) / 1048576 ))" "$(peak_mib)"
}
# shellcheck source=scale.sh
if want scale; then source "$repo/benches/scale.sh"; fi
# shellcheck source=convert.sh
if want convert; then source "$repo/benches/convert.sh"; fi
# shellcheck source=import.sh
if want import; then source "$repo/benches/import.sh"; fi
want load || exit 0

echo "== many hooks at once (benches/load.rs: every answer checked; Glance calls counted at Glance)"
load_files=()
for i in 1 2 3 4; do
  f=$work/images/load-$i.img
  [[ -s $f ]] || head -c $((${BENCH_LOAD_UPLOAD_MIB:-128} * 1024 * 1024)) /dev/urandom >"$f"
  load_files+=("$f")
done
export LOAD_DAEMON=http://127.0.0.1:$port LOAD_TOKEN=$token LOAD_APP=bench \
  LOAD_EXPECT=$(cli latest --base jammy --app-name bench --arch x64) \
  LOAD_GLANCE=$glance LOAD_GLANCE_TOKEN=$gtoken \
  LOAD_OWNER=$(sed -n 's/.*"charm_project_id": "\([^"]*\)".*/\1/p' "$bed/ids.json") \
  LOAD_UPLOADS="${load_files[*]}"
glance_calls() { OSIH_BED_DIR=$bed "$repo/tests/openstack/glance-requests.sh" --svc glance "name=jammy-bench-x64"; }
cargo build --release --bench load --manifest-path "$repo/Cargo.toml" -q 2>/dev/null || cargo build --release --bench load --manifest-path "$repo/Cargo.toml"
for mode in direct daemon during-uploads; do
  before=$(glance_calls)
  cargo bench -q --bench load --manifest-path "$repo/Cargo.toml" -- "$mode"
  echo "  Glance calls for that burst: $(($(glance_calls) - before))"
done
