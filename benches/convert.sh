# shellcheck shell=bash
# shellcheck disable=SC2154 # set by compare.sh, which sources this
# Sourced by benches/compare.sh after scale.sh (uses its daemon, `cli`, `now`/`since`,
# `measured` (seconds, MiB read, peak RSS), $gtoken, $glance, $work). Issue 16's rows:
#
#   1. a 2 GiB qcow2, half empty (random data in its first GiB, never written after),
#      to a cloud that wants raw (`charm-raw`: image_format: raw): the daemon
#      (qemu-img convert into state_dir/staging, one read, md5 + sha512, verify)
#      against `qemu-img convert -O raw` alone plus `curl -T` of its result straight
#      to the same Glance. Goal: at most 1.1x their sum.
#   2. the daemon's peak RSS over it (VmHWM, reset first). Goal: at most 40 MiB.

conv_gib=${BENCH_CONVERT_GIB:-2}
qcow=$work/images/bench-half.qcow2
if [[ ! -s $qcow ]]; then
  half=$work/bench-half.src
  head -c $((conv_gib * 512 * 1024 * 1024)) /dev/urandom >"$half"
  truncate -s $((conv_gib * 1024 * 1024 * 1024)) "$half"
  qemu-img convert -q -f raw -O qcow2 "$half" "$qcow"
  rm -f "$half"
fi

echo "== a $conv_gib GiB qcow2 (half empty) to a raw cloud (charm-raw)"
raw=$work/bench-half.raw
rm -f "$raw"
t=$(now)
qemu-img convert -q -f qcow2 -O raw "$qcow" "$raw"
convert_s=$(since "$t")
id=$(curl -fsS -H "X-Auth-Token: $gtoken" -H 'Content-Type: application/json' \
  -d '{"name":"bench-curl-raw","disk_format":"raw","container_format":"bare"}' "$glance/v2/images" | sed 's/.*"id": "\([^"]*\)".*/\1/')
t=$(now)
curl -fsS -H 'Expect:' -H "X-Auth-Token: $gtoken" -H 'Content-Type: application/octet-stream' -T "$raw" "$glance/v2/images/$id/file"
put_s=$(since "$t")
curl -fsS -X DELETE -H "X-Auth-Token: $gtoken" "$glance/v2/images/$id" >/dev/null
rm -f "$raw"
conv_upload() { cli upload --base jammy --app-name bench-conv --arch x64 --num-revisions 1 --src-path "$qcow" --cloud charm-raw; }
read -r conv_s conv_read conv_peak < <(measured conv_upload)
[[ -n $(cli latest --base jammy --app-name bench-conv --arch x64 --cloud charm-raw) ]] ||
  { echo "the daemon's upload to charm-raw failed (log: $work/daemon.log)" >&2; exit 1; }
awk -v c="$convert_s" -v p="$put_s" -v d="$conv_s" -v r="$conv_read" -v m="$conv_peak" 'BEGIN {
  printf "%-44s%7.2f s\n", "qemu-img convert -O raw alone:", c
  printf "%-44s%7.2f s\n", "curl -T of the raw file straight to Glance:", p
  printf "%-44s%7.2f s\n", "  their sum:", c + p
  printf "%-44s%7.2f s  read %6d MiB  peak RSS %6.1f MiB\n", "daemon (convert, one read, verify):", d, r, m
  printf "%-44s%7.2f   (goal <= 1.10; peak RSS goal <= 40 MiB)\n", "  daemon / sum:", d / (c + p) }'
