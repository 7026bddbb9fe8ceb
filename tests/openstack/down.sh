#!/usr/bin/env bash
# Stop the test bed's services started by up.sh (by pid file only).
# Usage: down.sh [keystone|glance|glance-capped]...   (no argument: both)
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
lock_bed
services=("$@")
((${#services[@]})) || services=(glance-capped glance keystone)
for svc in "${services[@]}"; do
  case $svc in
    keystone | glance | glance-capped) [[ -d $BED/$svc ]] && stop_svc "$svc" ;;
    *) die "unknown service '$svc' (expected keystone, glance or glance-capped)" ;;
  esac
done
