#!/usr/bin/env bash
# This build against 0.1 (commit 27d1226), both release builds, same bed, same Glance:
#
#   1. idle RSS: each daemon started with two clouds (charm, charm-b), both
#      authenticated, then left alone 3 s: VmRSS. Goal (issue 15): under 10 MiB.
#   2. upload: the same file (BENCH_VERSUS_MIB, default 512 MiB) through each
#      daemon's HTTP API, alternating, BENCH_VERSUS_RUNS (default 12) each: medians,
#      and a `curl -T` of the file straight to Glance between them.
#
# 0.1 is built once into target/bench/v0.1 (a git worktree with its own target
# dir: about 6 minutes on 2 cores, then cached). Needs the bed (tests/openstack/up.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tests/daemon.sh
source "$repo/tests/daemon.sh"
bed=$osih_bed
work=$repo/target/bench/versus
old=$repo/target/bench/v0.1
old_commit=27d1226
runs=${BENCH_VERSUS_RUNS:-12}
size_mib=${BENCH_VERSUS_MIB:-512}
mkdir -p "$work/images"

[[ -s $bed/clouds.yaml ]] || { echo "no test bed: run tests/openstack/up.sh" >&2; exit 1; }
[[ -x $repo/target/release/openstack-image-helper ]] || cargo build --release --locked --manifest-path "$repo/Cargo.toml"
if [[ ! -x $old/target/release/openstack-image-helper ]]; then
  [[ -d $old ]] || git -C "$repo" worktree add --detach "$old" "$old_commit" >/dev/null
  echo "building 0.1 ($old_commit) into $old (once)"
  CARGO_TARGET_DIR=$old/target cargo build --release --locked --quiet --manifest-path "$old/Cargo.toml"
fi

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { print e - s }'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The two clouds of the issue's measure, from the bed's clouds.yaml.
"$(sed -n 's/^export OSIH_BED_VENV=//p' "$bed/env")/bin/python" - "$bed/clouds.yaml" "$work/clouds.yaml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
doc["clouds"] = {k: v for k, v in doc["clouds"].items() if k in ("charm", "charm-b")}
with open(sys.argv[2], "w") as f:
    yaml.safe_dump(doc, f)
PY
chmod 600 "$work/clouds.yaml"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# start NAME BINARY PORT: a daemon in $work/NAME; sets pid_NAME.
start() {
  local name=$1 bin=$2 port=$3 dir=$work/$1
  rm -rf "$dir/state"
  mkdir -p "$dir"
  cat >"$dir/config.yaml" <<YAML
listen: 127.0.0.1:$port
clouds_yaml: $work/clouds.yaml
default_cloud: charm
state_dir: $dir/state
api_token_file: $dir/state/api-token
upload_dirs: [$work/images]
YAML
  "$bin" serve --config "$dir/config.yaml" >"$dir/daemon.log" 2>&1 &
  pids+=($!)
  printf -v "pid_${name//./_}" '%s' "$!"
  local _ status
  for _ in $(seq 150); do
    status=$(curl -fsS -H "Authorization: Bearer $(cat "$dir/state/api-token" 2>/dev/null)" \
      "http://127.0.0.1:$port/v1/status" 2>/dev/null || true)
    [[ $(grep -o '"authenticated": *true' <<<"$status" | wc -l) -ge 2 ]] && return 0
    sleep 0.2
  done
  echo "$name did not authenticate both clouds (log: $dir/daemon.log)" >&2
  exit 1
}
start new "$repo/target/release/openstack-image-helper" 18441
start old "$old/target/release/openstack-image-helper" 18442
sleep 3
echo "== idle RSS after start-up with two clouds authenticated (goal: under 10 MiB)"
for name in old new; do
  pid_var=pid_$name
  printf '  %-5s %s\n' "$name" "$(grep VmRSS "/proc/${!pid_var}/status" | awk '{printf "%.1f MiB", $2/1024}')"
done

image=$work/images/versus.img
if [[ ! -s $image ]] || (($(stat -c %s "$image") != size_mib * 1024 * 1024)); then
  head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$image"
fi
# upload NAME PORT: one upload through that daemon's API; prints its seconds.
upload() {
  local dir=$work/$1 t
  t=$(now)
  curl -fsS -o /dev/null -H "Authorization: Bearer $(cat "$dir/state/api-token")" \
    -H 'Content-Type: application/json' \
    -d "{\"base\":\"jammy\",\"app_name\":\"versus-$1\",\"arch\":\"x64\",\"num_revisions\":1,\"src_path\":\"$image\"}" \
    "http://127.0.0.1:$2/v1/images"
  since "$t"
}
glance=$(sed -n 's/^export GLANCE_URL=//p' "$bed/env")
curl_put() {
  local id t gtoken
  gtoken=$(charm_glance_token) # fresh: the bed's tokens may live only 60 s
  id=$(curl -fsS -H "X-Auth-Token: $gtoken" -H 'Content-Type: application/json' \
    -d '{"name":"versus-curl","disk_format":"raw","container_format":"bare"}' "$glance/v2/images" | sed 's/.*"id": "\([^"]*\)".*/\1/')
  t=$(now)
  curl -fsS -H 'Expect:' -H "X-Auth-Token: $gtoken" -H 'Content-Type: application/octet-stream' -T "$image" "$glance/v2/images/$id/file"
  since "$t"
  curl -fsS -X DELETE -H "X-Auth-Token: $gtoken" "$glance/v2/images/$id" >/dev/null
}

echo "== upload of $size_mib MiB, $runs alternating runs each (old = 0.1, $old_commit)"
: >"$work/times"
for i in $(seq "$runs"); do
  # Alternate which goes first, so that neither always follows the curl.
  if ((i % 2)); then order="old new"; else order="new old"; fi
  for name in $order; do
    port=18442; [[ $name == new ]] && port=18441
    echo "$name $(upload "$name" "$port")" >>"$work/times"
  done
  echo "curl $(curl_put)" >>"$work/times"
done
medians=()
for name in old new curl; do
  medians+=("$(awk -v n="$name" '$1 == n {print $2}' "$work/times" | median)")
  printf '  %-5s median %6.2f s\n' "$name" "${medians[-1]}"
done
awk -v o="${medians[0]}" -v n="${medians[1]}" 'BEGIN { printf "  new / old (medians): %.3f\n", n / o }'
