# shellcheck shell=bash
# Sourced by benches/compare.sh after its own rows (uses its daemon, `cli`,
# `now`/`since`/`stats`/`daemon_latest_runs`, $image, $size_mib, $gtoken, $glance, $bed, $venv, $port,
# $token, $runs). Two rows of issue #10:
#
#   1. one image to two clouds: the daemon's fan-out (one read) against two
#      sequential single-cloud uploads (the image-builder charm's way today): wall
#      time, bytes the daemon read (/proc/PID/io rchar: file and sockets), and its
#      peak RSS during each (VmHWM, reset before each through clear_refs).
#   2. "latest" with the project's images as they are and with 2,000: the daemon
#      (one server-side query) and the old way (list everything, filter locally).

# io_read, reset_peak, peak_mib and measured are compare.sh's.
echo "== one $size_mib MiB image to two clouds (A: charm, B: charm-b, each its own Glance)"
upload_to() { cli upload --base jammy --app-name bench-fan --arch x64 --num-revisions 1 --src-path "$image" "$@"; }
sequential() { upload_to --cloud charm && upload_to --cloud charm-b; }
read -r seq_s seq_read seq_peak < <(measured sequential)
read -r fan_s fan_read fan_peak < <(measured upload_to --cloud charm --cloud charm-b)
awk -v s="$seq_s" -v sr="$seq_read" -v sp="$seq_peak" -v f="$fan_s" -v fr="$fan_read" -v fp="$fan_peak" -v m="$size_mib" 'BEGIN {
  printf "%-44s%7.2f s  read %6d MiB  peak RSS %6.1f MiB\n", "two sequential single-cloud uploads:", s, sr, sp
  printf "%-44s%7.2f s  read %6d MiB  peak RSS %6.1f MiB\n", "one fan-out to both (one read):", f, fr, fp
  printf "%-44s%7.2f   (file %d MiB)\n", "  sequential / fan-out wall time:", s / f, m }'

echo "== latest with more images in the project (the daemon: one server-side query)"
count_all() {
  # Every image of the project, page by page.
  local url="$glance/v2/images?limit=1000" n=0 page
  while [[ -n $url ]]; do
    page=$(curl -fsS -H "X-Auth-Token: $gtoken" "$url")
    n=$((n + $(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["images"]))' <<<"$page")))
    url=$(python3 -c 'import json,sys; n=json.load(sys.stdin).get("next"); print(sys.argv[1]+n if n else "")' "$glance" <<<"$page")
  done
  echo "$n"
}
latest_rows() {
  local label=$1
  printf '%-44s' "  daemon, HTTP ($label):"
  daemon_latest_runs
  printf '%-44s' "  old way, fresh python ($label):"
  for _ in $(seq 3); do
    t=$(now); OS_CLIENT_CONFIG_FILE=$bed/clouds.yaml "$venv/bin/python" "$repo/benches/old_latest.py" charm jammy-bench-x64 >/dev/null; since "$t"
  done | stats
}
before=$(count_all)
latest_rows "$before images"
target=${BENCH_MANY_IMAGES:-2000}
filler() {
  curl -fsS -o /dev/null -H "X-Auth-Token: $gtoken" -H 'Content-Type: application/json' \
    -d "{\"name\":\"bench-filler-$1\",\"disk_format\":\"raw\",\"container_format\":\"bare\"}" "$glance/v2/images"
}
export -f filler
export gtoken glance
if (( before < target )); then
  seq $((target - before)) | xargs -P 8 -I{} bash -c 'filler {}'
fi
latest_rows "$(count_all) images"
# The fillers go again (queued images without the daemon's marker: nobody else would).
filler_ids() {
  curl -fsS -H "X-Auth-Token: $gtoken" "$glance/v2/images?limit=1000&status=queued" |
    python3 -c 'import json,sys; print("\n".join(i["id"] for i in json.load(sys.stdin)["images"] if (i.get("name") or "").startswith("bench-filler-")))'
}
while ids=$(filler_ids) && [[ -n $ids ]]; do
  xargs -P 8 -I{} curl -fsS -o /dev/null -X DELETE -H "X-Auth-Token: $gtoken" "$glance/v2/images/{}" <<<"$ids"
done
