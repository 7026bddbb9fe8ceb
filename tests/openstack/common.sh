# shellcheck shell=bash
# Shared settings and helpers for up.sh / down.sh. Sourced, not executed.

OSIH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OSIH_REPO=$(git -C "$OSIH_HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$OSIH_HERE/../.." && pwd))

BED=${OSIH_BED_DIR:-$OSIH_REPO/target/openstack-bed}
mkdir -p "$BED" && BED=$(cd "$BED" && pwd)
VENV=${OSIH_BED_VENV:-$HOME/.cache/openstack-image-helper/venv}
KEYSTONE_PORT=${OSIH_KEYSTONE_PORT:-35357}
GLANCE_PORT=${OSIH_GLANCE_PORT:-9292}
# A second Glance API on the same database and store, with a small image_size_cap,
# so that a test can hit "image too large" without capping everybody's Glance.
GLANCE_CAPPED_PORT=${OSIH_GLANCE_CAPPED_PORT:-9293}
GLANCE_CAPPED_SIZE=${OSIH_GLANCE_CAPPED_SIZE:-16777216}
# glance-capped also enforces Keystone unified limits: project charm-quota-project
# (cloud charm-quota) may store this many MiB of image data (image_size_total).
QUOTA_MIB=${OSIH_GLANCE_QUOTA_MIB:-4}
# Cloud B's Glance API: its own database and store, the image endpoint of
# RegionTwo in the catalog (clouds.yaml entry charm-b).
GLANCE_B_PORT=${OSIH_GLANCE_B_PORT:-9294}
# Glances configured as other real clouds are, each with its own database,
# store, region and user (README.md, "Clouds configured like real ones"):
# interoperable import with node_staging_uri (a single-store, legacy config),
# two file stores (enabled_backends), and a policy that forbids direct upload.
GLANCE_IMPORT_PORT=${OSIH_GLANCE_IMPORT_PORT:-9295}
GLANCE_STORES_PORT=${OSIH_GLANCE_STORES_PORT:-9296}
GLANCE_IMPORTONLY_PORT=${OSIH_GLANCE_IMPORTONLY_PORT:-9297}
TOKEN_LIFETIME=${OSIH_TOKEN_LIFETIME:-3600}
IMAGE_SIZE_CAP=${OSIH_GLANCE_IMAGE_SIZE_CAP:-}
HOST=127.0.0.1
KEYSTONE_URL=http://$HOST:$KEYSTONE_PORT/v3
GLANCE_URL=http://$HOST:$GLANCE_PORT
GLANCE_B_URL=http://$HOST:$GLANCE_B_PORT
GLANCE_IMPORT_URL=http://$HOST:$GLANCE_IMPORT_PORT
GLANCE_STORES_URL=http://$HOST:$GLANCE_STORES_PORT
GLANCE_IMPORTONLY_URL=http://$HOST:$GLANCE_IMPORTONLY_PORT
# The image endpoint of each region in Keystone's catalog (REGION=URL);
# glance-capped has none.
IMAGE_ENDPOINTS=("RegionOne=$GLANCE_URL" "RegionTwo=$GLANCE_B_URL" "RegionImport=$GLANCE_IMPORT_URL"
  "RegionStores=$GLANCE_STORES_URL" "RegionImportOnly=$GLANCE_IMPORTONLY_URL")
# The services up.sh runs; each has its dir <bed>/SVC. up.sh starts them all
# at once, down.sh stops the Glances at once and then Keystone.
GLANCE_SERVICES=(glance glance-capped glance-b glance-import glance-stores glance-importonly)
SERVICES=(keystone "${GLANCE_SERVICES[@]}")

# Serialise up.sh/down.sh runs on one bed (tests may call up.sh in parallel).
lock_bed() {
  exec 9>"$BED/.lock"
  flock -w 600 9 || die "timed out waiting for the lock $BED/.lock"
}

log() { printf 'openstack-bed: %s\n' "$*" >&2; }
die() { printf 'openstack-bed: ERROR: %s\n' "$*" >&2; exit 1; }

# port_open PORT -> 0 if something accepts connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# svc_pid SVC -> prints the pid from the pid file if that process is alive
svc_pid() {
  local f="$BED/$1/$1.pid" pid
  [[ -s $f ]] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: the process must be our uWSGI for this service.
  grep -qa -- "$BED/$1/uwsgi.ini" "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

svc_port() {
  case $1 in
    keystone) echo "$KEYSTONE_PORT" ;;
    glance) echo "$GLANCE_PORT" ;;
    glance-capped) echo "$GLANCE_CAPPED_PORT" ;;
    glance-b) echo "$GLANCE_B_PORT" ;;
    glance-import) echo "$GLANCE_IMPORT_PORT" ;;
    glance-stores) echo "$GLANCE_STORES_PORT" ;;
    glance-importonly) echo "$GLANCE_IMPORTONLY_PORT" ;;
    *) die "unknown service '$1' (expected one of: ${SERVICES[*]})" ;;
  esac
}

# stop_svc SVC: stop the process recorded in the pid file, wait for the port.
stop_svc() {
  local svc=$1 pid port i
  port=$(cat "$BED/$svc/port" 2>/dev/null || svc_port "$svc")
  if pid=$(svc_pid "$svc"); then
    # up.sh started the service with setsid: its process group is the service
    # and its workers, nothing else. Stop the group, not just the first process.
    kill -INT -- "-$pid" 2>/dev/null || kill -INT "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 -- "-$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$BED/$svc/$svc.pid" "$BED/$svc/running.fp"
  for ((i = 0; i < 100; i++)); do port_open "$port" || return 0; sleep 0.1; done
  die "$svc stopped but port $port is still in use"
}
