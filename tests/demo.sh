#!/usr/bin/env bash
# The main job, end to end: the daemon (release build) against the local real
# Keystone + Glance of tests/openstack/up.sh, then what a charm hook does: an
# upload of a new revision, and a "latest" query, with the CLI and with curl.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bed=${OSIH_BED_DIR:-$repo/target/openstack-bed}
demo=$repo/target/demo
bin=$repo/target/release/openstack-image-helper
port=${OSIH_DEMO_PORT:-18427}
size_mib=${OSIH_DEMO_IMAGE_MIB:-256}
[[ -x $bin ]] || cargo build --release --manifest-path "$repo/Cargo.toml"
[[ -s $bed/clouds.yaml ]] || { echo "no test bed: run tests/openstack/up.sh" >&2; exit 1; }

mkdir -p "$demo/images"
cat >"$demo/config.yaml" <<YAML
listen: 127.0.0.1:$port
clouds_yaml: $bed/clouds.yaml
default_cloud: charm
state_dir: $demo/state
api_token_file: $demo/state/api-token
upload_dirs: [$demo/images]
YAML

image=$demo/images/runner-jammy.qcow2
if [[ ! -s $image ]]; then
  echo "== making a ${size_mib} MiB qcow2 image"
  head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$demo/images/raw.tmp"
  qemu-img convert -f raw -O qcow2 "$demo/images/raw.tmp" "$image"
  rm -f "$demo/images/raw.tmp"
fi

echo "== starting the daemon (log: $demo/daemon.log)"
"$bin" serve --config "$demo/config.yaml" >"$demo/daemon.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done
cli() { "$bin" --config "$demo/config.yaml" "$@"; }
for _ in $(seq 100); do cli status | grep -q '^charm: authenticated' && break; sleep 0.2; done

echo "== status"
cli status

echo "== upload (keep 2 revisions)"
start=$(date +%s.%N)
id=$(cli upload --base jammy --app-name github-runner --arch x64 --num-revisions 2 --src-path "$image")
end=$(date +%s.%N)
echo "uploaded: $id ($(awk -v s="$start" -v e="$end" -v m="$size_mib" 'BEGIN{printf "%.1f s, %.0f MiB/s", e-s, m/(e-s)}'))"

echo "== latest (CLI)"
latest=$(cli latest --base jammy --app-name github-runner --arch x64)
echo "latest:   $latest"
[[ $latest == "$id" ]] || { echo "latest is not the upload" >&2; exit 1; }

echo "== latest (curl, as a hook would)"
token=$(cat "$demo/state/api-token")
curl -sS -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$port/v1/images/latest?base=jammy&app_name=github-runner&arch=x64"
echo
echo "== done: the daemon stops now"
