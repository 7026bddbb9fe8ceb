#!/usr/bin/env bash
# Install (once) and start a real Keystone + Glance on 127.0.0.1 for integration
# tests. Idempotent: re-running with everything up and unchanged takes well
# under a second; a stopped or reconfigured service is (re)started.
# See tests/openstack/README.md.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CONSTRAINTS=$OSIH_HERE/constraints.txt
START_TIMEOUT=${OSIH_START_TIMEOUT:-90}
PY=${OSIH_PYTHON:-python3}
mkdir -p "$BED/keystone" "$BED/glance" "$BED/images"

# Write $2 to file $1 only if the content differs (atomic replace).
put() {
  local f=$1 content=$2
  if [[ -f $f ]] && [[ "$(cat "$f")" == "$content" ]]; then return 0; fi
  printf '%s\n' "$content" >"$f.tmp.$$" && mv -f "$f.tmp.$$" "$f"
}

# sha FILE...: a digest of the files' contents (missing files count as empty).
sha() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1; }

ensure_debs() {
  local missing=() cmd pkg
  for cmd in curl:curl setsid:util-linux flock:util-linux sha256sum:coreutils awk:mawk; do
    command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd#*:}")
  done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >>"$BED/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$BED/apt.log" 2>&1 ||
    { tail -20 "$BED/apt.log" >&2; die "apt-get install failed (log: $BED/apt.log)"; }
}

ensure_venv() {
  local want
  want=$(sha "$CONSTRAINTS")
  if [[ -x $VENV/bin/python && "$(cat "$VENV/.osih-constraints.sha256" 2>/dev/null)" == "$want" ]] &&
    "$VENV/bin/python" -c '' 2>/dev/null; then
    return 0
  fi
  # Several beds may share one venv: serialise the install.
  mkdir -p "$(dirname "$VENV")"
  exec 8>"$VENV.lock"
  flock -w 900 8 || die "timed out waiting for $VENV.lock"
  if [[ -x $VENV/bin/python && "$(cat "$VENV/.osih-constraints.sha256" 2>/dev/null)" == "$want" ]]; then
    exec 8>&-
    return 0
  fi
  log "installing Keystone/Glance into $VENV (log: $BED/pip.log)"
  local t0=$SECONDS
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  {
    "$PY" -m venv "$VENV" &&
      "$VENV/bin/pip" install --no-input --disable-pip-version-check -c "$CONSTRAINTS" \
        keystone glance pyuwsgi openstacksdk python-openstackclient
  } >"$BED/pip.log" 2>&1 || { tail -30 "$BED/pip.log" >&2; die "pip install failed (log: $BED/pip.log)"; }
  echo "$want" >"$VENV/.osih-constraints.sha256"
  exec 8>&-
  log "venv ready in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- secrets
ensure_secrets() {
  if [[ ! -s $BED/secrets.env ]]; then
    cat >"$BED/secrets.env" <<'EOF'
# Fixed test-only passwords of the local OpenStack test bed.
ADMIN_PASSWORD=osih-admin-secret
GLANCE_PASSWORD=osih-glance-secret
CHARM_PASSWORD=osih-charm-secret
EOF
    chmod 600 "$BED/secrets.env"
  fi
  # shellcheck disable=SC1091
  source "$BED/secrets.env"
}

# ---------------------------------------------------------------- config
render_keystone() {
  local d=$BED/keystone
  put "$d/keystone.conf" "[DEFAULT]
log_file = $d/keystone.log
debug = false

[database]
connection = sqlite:///$d/keystone.db?timeout=30

[token]
provider = fernet
expiration = $TOKEN_LIFETIME

[fernet_tokens]
key_repository = $d/fernet-keys

[fernet_receipts]
key_repository = $d/fernet-keys

[credential]
key_repository = $d/credential-keys

[cache]
enabled = true
backend = dogpile.cache.memory

[oslo_concurrency]
lock_path = $d/locks"
  put "$d/uwsgi.ini" "[uwsgi]
http-socket = $HOST:$KEYSTONE_PORT
module = keystone.wsgi.api:application
processes = 1
threads = 8
enable-threads = true
need-app = true
die-on-term = true
buffer-size = 65535
# uWSGI's http-socket closes every connection after one response; say so, or
# pooling clients reuse a dead connection and get connection-reset errors.
add-header = Connection: close
pidfile = $d/keystone.pid
logto = $d/uwsgi.log"
}

# render_glance SVC PORT CAP: a Glance API; every one shares glance/'s database and the store.
render_glance() {
  local svc=$1 port=$2 d=$BED/$1 cap=""
  [[ -n $3 ]] && cap="image_size_cap = $3"
  mkdir -p "$d/locks"
  put "$d/glance-api.conf" "[DEFAULT]
log_file = $d/glance.log
debug = false
enabled_backends = fs:file
worker_self_reference_url = http://$HOST:$port
public_endpoint = http://$HOST:$port
python_interpreter = $VENV/bin/python
$cap

[database]
connection = sqlite:///$BED/glance/glance.db?timeout=30

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $BED/images/

[os_glance_staging_store]
filesystem_store_datadir = $BED/glance/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $BED/glance/tasks/

[keystone_authtoken]
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = glance
password = $GLANCE_PASSWORD
user_domain_id = default
project_name = service
project_domain_id = default
region_name = RegionOne
interface = public
# Never cache token validation: a token revoked in Keystone must be rejected
# on the very next call.
token_cache_time = -1

[paste_deploy]
flavor = keystone
config_file = $d/glance-api-paste.ini

[oslo_concurrency]
lock_path = $d/locks"
  put "$d/uwsgi.ini" "[uwsgi]
http-socket = $HOST:$port
module = glance.wsgi.api:application
# Two processes: Glance hashes uploads in Python, and one process's GIL would
# make every other call wait behind an upload.
processes = 2
threads = 8
# A master process, so that stopping it stops its workers.
master = true
enable-threads = true
need-app = true
die-on-term = true
buffer-size = 65535
add-header = Connection: close
socket-timeout = 600
chunked-input-limit = 10485760
chunked-input-timeout = 600
pidfile = $d/$svc.pid
logto = $d/uwsgi.log"
  [[ -f $d/glance-api-paste.ini ]] || cp "$VENV/etc/glance/glance-api-paste.ini" "$d/glance-api-paste.ini"
}

# ---------------------------------------------------------------- database
wal() { "$VENV/bin/python" -c 'import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute("pragma journal_mode=wal")' "$1"; }

init_keystone_db() {
  local d=$BED/keystone want
  want=$(sha "$VENV/.osih-constraints.sha256" <(echo "$KEYSTONE_URL $ADMIN_PASSWORD"))
  [[ -f $d/keystone.db && "$(cat "$d/db.stamp" 2>/dev/null)" == "$want" ]] && return 0
  [[ -f $d/keystone.db ]] || rm -f "$d/db.stamp" "$BED/provision.stamp" "$BED/appcred.json"
  local km=("$VENV/bin/keystone-manage" --config-file "$d/keystone.conf")
  mkdir -p "$d/fernet-keys" "$d/credential-keys" "$d/locks"
  {
    "${km[@]}" db_sync &&
      { [[ -e $d/fernet-keys/0 ]] || "${km[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"; } &&
      { [[ -e $d/credential-keys/0 ]] || "${km[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"; } &&
      "${km[@]}" bootstrap --bootstrap-password "$ADMIN_PASSWORD" \
        --bootstrap-username admin --bootstrap-project-name admin \
        --bootstrap-role-name admin --bootstrap-region-id RegionOne \
        --bootstrap-admin-url "$KEYSTONE_URL" --bootstrap-internal-url "$KEYSTONE_URL" \
        --bootstrap-public-url "$KEYSTONE_URL" &&
      wal "$d/keystone.db"
  } >"$d/manage.log" 2>&1 || { tail -30 "$d/manage.log" >&2; die "keystone-manage failed (log: $d/manage.log)"; }
  echo "$want" >"$d/db.stamp"
}

init_glance_db() {
  local d=$BED/glance want
  want=$(sha "$VENV/.osih-constraints.sha256")
  [[ -f $d/glance.db && "$(cat "$d/db.stamp" 2>/dev/null)" == "$want" ]] && return 0
  mkdir -p "$d/staging" "$d/tasks" "$d/locks"
  { "$VENV/bin/glance-manage" --config-file "$d/glance-api.conf" db_sync && wal "$d/glance.db"; } \
    >"$d/manage.log" 2>&1 || { tail -30 "$d/manage.log" >&2; die "glance-manage db_sync failed (log: $d/manage.log)"; }
  echo "$want" >"$d/db.stamp"
}

# ---------------------------------------------------------------- processes
health_url() {
  if [[ $1 == keystone ]]; then echo "$KEYSTONE_URL"; else echo "http://$HOST:$(svc_port "$1")/versions"; fi
}

healthy() { [[ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$(health_url "$1")")" == 200 ]]; }

fingerprint() {
  local d=$BED/$1
  sha "$d/uwsgi.ini" "$d/"*.conf "$VENV/.osih-constraints.sha256" "$d/db.stamp"
}

fail_start() {
  local svc=$1 msg=$2 f
  {
    echo "openstack-bed: ERROR: $svc $msg"
    for f in "$BED/$svc/uwsgi.log" "$BED/$svc/$svc.log"; do
      [[ -f $f ]] && { echo "----- tail of $f"; tail -n 40 "$f"; }
    done
  } >&2
  stop_svc "$svc" 2>/dev/null || true
  exit 1
}

# ensure_running SVC: start/restart SVC unless it runs healthy with the current
# config; appends SVC to STARTED when it (re)started it.
STARTED=()
ensure_running() {
  local svc=$1 d=$BED/$1 fp port pid i
  port=$(svc_port "$svc")
  fp=$(fingerprint "$svc")
  if pid=$(svc_pid "$svc"); then
    if [[ "$(cat "$d/running.fp" 2>/dev/null)" == "$fp" ]] && healthy "$svc"; then
      return 0
    fi
    log "restarting $svc (configuration changed or unhealthy)"
  fi
  stop_svc "$svc"
  port_open "$port" && die "port $port is in use by a process this script did not start"
  : >"$d/uwsgi.log"
  (
    cd "$d"
    # pyuwsgi's "env =" option comes too late for os.environ, so export here.
    export OS_KEYSTONE_CONFIG_FILES=$BED/keystone/keystone.conf OS_GLANCE_CONFIG_DIR=$d
    # Do not leak the lock fds into the daemon (it would hold the locks).
    exec 8>&- 9>&- </dev/null >>"$d/uwsgi.log" 2>&1
    exec setsid "$VENV/bin/pyuwsgi" --ini "$d/uwsgi.ini"
  ) &
  echo "$port" >"$d/port"
  for ((i = 0; i < START_TIMEOUT * 5; i++)); do
    sleep 0.2
    if ((i > 10)) && ! svc_pid "$svc" >/dev/null; then
      fail_start "$svc" "exited during start-up"
    fi
    if svc_pid "$svc" >/dev/null && healthy "$svc"; then
      echo "$fp" >"$d/running.fp"
      STARTED+=("$svc")
      return 0
    fi
  done
  fail_start "$svc" "did not answer $(health_url "$svc") within ${START_TIMEOUT}s"
}

# ---------------------------------------------------------------- provisioning
provision() {
  local want
  want=$(sha "$BED/keystone/db.stamp" <(echo "$KEYSTONE_URL $GLANCE_URL") "$BED/secrets.env" "$OSIH_HERE/provision.py")
  if [[ "$(cat "$BED/provision.stamp" 2>/dev/null)" == "$want" && -s $BED/appcred.json ]]; then
    return 0
  fi
  BED=$BED KEYSTONE_URL=$KEYSTONE_URL GLANCE_URL=$GLANCE_URL ADMIN_PASSWORD=$ADMIN_PASSWORD \
    GLANCE_PASSWORD=$GLANCE_PASSWORD CHARM_PASSWORD=$CHARM_PASSWORD \
    "$VENV/bin/python" "$OSIH_HERE/provision.py" || die "provisioning Keystone failed"
  echo "$want" >"$BED/provision.stamp"
}

write_client_files() {
  local ac_id ac_secret
  ac_id=$(sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' "$BED/appcred.json")
  ac_secret=$(sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p' "$BED/appcred.json")
  put "$BED/clouds.yaml" "# Generated by tests/openstack/up.sh
clouds:
  charm:
    auth_type: password
    auth:
      auth_url: $KEYSTONE_URL
      username: charm
      password: $CHARM_PASSWORD
      project_name: charm-project
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  charm-appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: $KEYSTONE_URL
      application_credential_id: $ac_id
      application_credential_secret: $ac_secret
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  admin:
    auth_type: password
    auth:
      auth_url: $KEYSTONE_URL
      username: admin
      password: $ADMIN_PASSWORD
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3"
  put "$BED/env" "# source me: settings of the running OpenStack test bed
export OSIH_BED_DIR=$BED
export OSIH_BED_VENV=$VENV
export KEYSTONE_URL=$KEYSTONE_URL
export GLANCE_URL=$GLANCE_URL
export OS_CLIENT_CONFIG_FILE=$BED/clouds.yaml
export OSIH_TOKEN_LIFETIME=$TOKEN_LIFETIME
export OSIH_GLANCE_IMAGE_SIZE_CAP=$IMAGE_SIZE_CAP
export OSIH_CHARM_PASSWORD=$CHARM_PASSWORD
export OSIH_ADMIN_PASSWORD=$ADMIN_PASSWORD
export OSIH_APPCRED_ID=$ac_id
export OSIH_APPCRED_SECRET=$ac_secret
export PATH=$VENV/bin:\$PATH"
  put "$BED/settings" "token_lifetime=$TOKEN_LIFETIME
image_size_cap=$IMAGE_SIZE_CAP
keystone_port=$KEYSTONE_PORT
glance_port=$GLANCE_PORT
glance_capped_port=$GLANCE_CAPPED_PORT
glance_capped_size=$GLANCE_CAPPED_SIZE"
}

# Glance with a charm token: proves keystonemiddleware <-> Keystone works.
check_glance_auth() {
  local tok code
  tok=$(curl -s -D - -o /dev/null -m 10 -H 'Content-Type: application/json' -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"charm\",\"domain\":{\"id\":\"default\"},\"password\":\"$CHARM_PASSWORD\"}}},\"scope\":{\"project\":{\"name\":\"charm-project\",\"domain\":{\"id\":\"default\"}}}}}" \
    "$KEYSTONE_URL/auth/tokens" | tr -d '\r' | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p')
  [[ -n $tok ]] || fail_start keystone "did not issue a token for charm"
  code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -H "X-Auth-Token: $tok" "$GLANCE_URL/v2/images?limit=1")
  [[ $code == 200 ]] || fail_start glance "answered GET /v2/images with HTTP $code for a valid token"
}

# ---------------------------------------------------------------- main
t0=$EPOCHREALTIME
ensure_debs
lock_bed
ensure_venv
ensure_secrets
render_keystone
render_glance glance "$GLANCE_PORT" "$IMAGE_SIZE_CAP"
render_glance glance-capped "$GLANCE_CAPPED_PORT" "$GLANCE_CAPPED_SIZE"
init_keystone_db
init_glance_db
ensure_running keystone
provision
write_client_files
ensure_running glance
ensure_running glance-capped
((${#STARTED[@]} == 0)) || check_glance_auth
elapsed=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
started=${STARTED[*]:-nothing}
log "up in ${elapsed}s (started: ${started// /, }): keystone $KEYSTONE_URL, glance $GLANCE_URL,"
log "  clouds.yaml $BED/clouds.yaml (clouds charm, charm-appcred, admin); env: source $BED/env"
