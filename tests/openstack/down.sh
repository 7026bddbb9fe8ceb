#!/usr/bin/env bash
# Stop the test bed's services started by up.sh (by pid file only).
# Usage: down.sh [keystone|glance|glance-capped|glance-b|glance-import|glance-stores|glance-importonly]...
# (no argument: all). The Glances named stop in parallel (uWSGI takes ~3 s to
# bury its workers), Keystone after them: a Glance stopping may still ask it.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
lock_bed
services=("$@")
((${#services[@]})) || services=("${GLANCE_SERVICES[@]}" keystone)
for svc in "${services[@]}"; do svc_port "$svc" >/dev/null; done # dies on an unknown name
pids=() failed=0 stop_keystone=false
for svc in "${services[@]}"; do
  [[ -d $BED/$svc ]] || continue
  if [[ $svc == keystone ]]; then stop_keystone=true; continue; fi
  stop_svc "$svc" &
  pids+=("$!")
done
for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || failed=1; done
! $stop_keystone || stop_svc keystone || failed=1
exit "$failed"
