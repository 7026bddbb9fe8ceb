#!/usr/bin/env bash
# Print how many requests reached Glance whose log line contains STRING (a
# fixed string, matched case-sensitively). Each Glance service logs one line
# per request to <bed>/SVC/requests.log:
#   GET /v2/images?name=x&limit=1 200 233 12ms pid=123 at=1796000784434
# (method, path and query string as sent, status, response size, duration,
# worker pid, start time in ms since the epoch). uWSGI writes the line just
# after the response, so the count is printed once it has not moved for 0.2 s.
# Usage: glance-requests.sh [--svc SVC]... STRING   (default: every Glance service)
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
services=()
while [[ ${1:-} == --svc ]]; do
  [[ -n ${2:-} ]] || die "--svc needs a service name"
  if [[ " ${GLANCE_SERVICES[*]} " != *" $2 "* ]]; then
    die "unknown Glance service '$2' (expected one of: ${GLANCE_SERVICES[*]})"
  fi
  services+=("$2")
  shift 2
done
if (($# != 1)) || [[ -z $1 ]]; then die "usage: glance-requests.sh [--svc SVC]... STRING"; fi
((${#services[@]})) || services=("${GLANCE_SERVICES[@]}")
files=()
for svc in "${services[@]}"; do files+=("$BED/$svc/requests.log"); done
count() { cat "${files[@]}" 2>/dev/null | grep -cF -- "$1" || true; }
last=$(count "$1")
while sleep 0.2; do
  now=$(count "$1")
  [[ $now == "$last" ]] && break
  last=$now
done
echo "$last"
