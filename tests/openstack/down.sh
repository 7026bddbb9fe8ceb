#!/usr/bin/env bash
# Stop the test bed's services started by up.sh (by pid file only).
# Usage: down.sh [keystone|glance|glance-capped|glance-b]...   (no argument: all)
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
lock_bed
services=("$@")
# Glance first, Keystone last: a Glance stopping may still ask Keystone.
((${#services[@]})) || services=(glance-b glance-capped glance keystone)
for svc in "${services[@]}"; do
  svc_port "$svc" >/dev/null # dies on an unknown name
  [[ ! -d $BED/$svc ]] || stop_svc "$svc"
done
