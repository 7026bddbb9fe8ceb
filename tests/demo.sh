#!/usr/bin/env bash
# The main job, end to end: the daemon (release build) against the local real
# Keystone + Glance of tests/openstack/up.sh, then what a charm hook does: an
# upload of a new revision, and a "latest" query, with the CLI and with curl.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=daemon.sh
source "$repo/tests/daemon.sh"
demo=$repo/target/demo
port=${OSIH_DEMO_PORT:-18427}
size_mib=${OSIH_DEMO_IMAGE_MIB:-256}
mkdir -p "$demo/images"

image=$demo/images/runner-jammy.qcow2
if [[ ! -s $image ]]; then
  echo "== making a ${size_mib} MiB qcow2 image"
  head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$demo/images/raw.tmp"
  qemu-img convert -f raw -O qcow2 "$demo/images/raw.tmp" "$image"
  rm -f "$demo/images/raw.tmp"
fi

echo "== starting the daemon (log: $demo/daemon.log)"
start_daemon "$demo" "$port"

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
