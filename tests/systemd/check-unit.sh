#!/usr/bin/env bash
# Checks the systemd unit: `systemd-analyze verify` finds nothing to say about it,
# and `systemd-analyze security --offline=true` scores it at most 2.0 ("OK").
#
#   tests/systemd/check-unit.sh [UNIT [BINARY]]
#
# UNIT defaults to systemd/openstack-image-helper.service; BINARY (what ExecStart=
# runs in the verified copy) to target/debug/openstack-image-helper. verify needs
# ExecStart='s binary to exist, so the check runs on a copy of the unit that points
# at the built one; the unit itself keeps /usr/bin (where the package puts it).
# Installs Debian's systemd when systemd-analyze is missing. Exit 0 when both pass.
set -euo pipefail
cd "$(dirname "$0")/../.."

unit=${1:-systemd/openstack-image-helper.service}
binary=${2:-target/debug/openstack-image-helper}
# systemd-analyze's threshold is on its internal 0-100 scale: 20 is 2.0.
max_exposure_tenths=${OSIH_MAX_EXPOSURE_TENTHS:-20}

if ! command -v systemd-analyze >/dev/null; then
  echo "check-unit: installing Debian's systemd (for systemd-analyze)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
[[ -f $unit ]] || { echo "check-unit: no unit at $unit" >&2; exit 1; }
[[ -x $binary ]] || { echo "check-unit: no binary at $binary (build it first)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The copy keeps the unit's name: systemd-analyze judges names and dependencies too.
copy=$work/$(basename "$unit")
sed -E "s|^ExecStart=[^ ]+|ExecStart=$(realpath "$binary")|" "$unit" >"$copy"
grep -q "^ExecStart=$(realpath "$binary") " "$copy" || {
  echo "check-unit: $unit has no ExecStart= to point at $binary" >&2
  exit 1
}

failed=0
echo "check-unit: systemd-analyze verify $unit (ExecStart= -> $binary)"
if ! verify_out=$(systemd-analyze verify "$copy" 2>&1) || [[ -n $verify_out ]]; then
  printf '%s\n' "$verify_out" | sed 's/^/  /'
  echo "check-unit: FAIL: systemd-analyze verify is not clean"
  failed=1
fi

echo "check-unit: systemd-analyze security --offline=true (at most $((max_exposure_tenths / 10)).$((max_exposure_tenths % 10)))"
if ! security_out=$(systemd-analyze security --offline=true --threshold="$max_exposure_tenths" "$copy" 2>&1); then
  # Show what costs points, so a failure says what to fix.
  grep -E '✗|Overall' <<<"$security_out" | sed 's/^/  /'
  echo "check-unit: FAIL: the exposure is over the threshold"
  failed=1
else
  grep -E 'Overall' <<<"$security_out" | sed 's/^/  /'
fi

((failed == 0)) && echo "check-unit: ok"
exit "$failed"
