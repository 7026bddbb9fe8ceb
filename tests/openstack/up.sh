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

# fresh STAMP WANT: the stamp file STAMP holds WANT (a step done with these inputs).
fresh() { [[ "$(cat "$1" 2>/dev/null)" == "$2" ]]; }

ensure_debs() {
  local missing=() cmd
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
  if [[ -x $VENV/bin/python ]] && fresh "$VENV/.osih-constraints.sha256" "$want" &&
    "$VENV/bin/python" -c '' 2>/dev/null; then
    return 0
  fi
  # Several beds may share one venv: serialise the install.
  mkdir -p "$(dirname "$VENV")"
  exec 8>"$VENV.lock"
  flock -w 900 8 || die "timed out waiting for $VENV.lock"
  if [[ -x $VENV/bin/python ]] && fresh "$VENV/.osih-constraints.sha256" "$want"; then
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
# Fixed test-only passwords. A bed made before a password was added gets the
# new line appended; existing lines are kept.
ensure_secrets() {
  local line
  [[ -s $BED/secrets.env ]] || echo "# Fixed test-only passwords of the local OpenStack test bed." >"$BED/secrets.env"
  chmod 600 "$BED/secrets.env"
  for line in ADMIN_PASSWORD=osih-admin-secret GLANCE_PASSWORD=osih-glance-secret \
    CHARM_PASSWORD=osih-charm-secret CHARM_B_PASSWORD=osih-charm-b-secret DOMAIN_PASSWORD=osih-domain-secret \
    CHARM_IMPORT_PASSWORD=osih-charm-import-secret CHARM_STORES_PASSWORD=osih-charm-stores-secret \
    CHARM_IMPORTONLY_PASSWORD=osih-charm-importonly-secret CHARM_QUOTA_PASSWORD=osih-charm-quota-secret; do
    grep -q "^${line%%=*}=" "$BED/secrets.env" || echo "$line" >>"$BED/secrets.env"
  done
  # shellcheck disable=SC1091
  source "$BED/secrets.env"
}

# ---------------------------------------------------------------- config
# render_uwsgi SVC PORT MODULE [LINE...]: SVC's uwsgi.ini, the LINEs added to the
# settings every service shares. Each request is logged, one line, to
# <bed>/SVC/requests.log (tests count calls there: glance-requests.sh).
render_uwsgi() {
  local svc=$1 port=$2 module=$3 d=$BED/$1
  shift 3
  put "$d/uwsgi.ini" "[uwsgi]
http-socket = $HOST:$port
module = $module
$(printf '%s\n' "$@")
enable-threads = true
need-app = true
die-on-term = true
buffer-size = 65535
# uWSGI's http-socket closes every connection after one response; say so, or
# pooling clients reuse a dead connection and get connection-reset errors.
add-header = Connection: close
# SQLite's database-is-locked error becomes a deadlock that oslo.db retries.
pythonpath = $OSIH_HERE/pyhooks
import = osih_sqlite_retry
import = osih_short_tokens
pidfile = $d/$svc.pid
logto = $d/uwsgi.log
req-logger = file:$d/requests.log
log-format = %(method) %(uri) %(status) %(size) %(msecs)ms pid=%(pid) at=%(tmsecs)"
}

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

# Every failed password check (identity.authenticate, outcome failure, with the
# user's id and name) is a CADF notification written to keystone.log: the
# count of password attempts per user (failed-auths.sh).
[oslo_messaging_notifications]
driver = log

[oslo_concurrency]
lock_path = $d/locks"
  render_uwsgi keystone "$KEYSTONE_PORT" keystone.wsgi.api:application "processes = 1" "threads = 8"
}

# render_glance SVC PORT DB DEFAULTS STORES: a Glance API answering on PORT,
# with the database of service DB (itself, or another Glance it shares it
# with). DEFAULTS are lines for [DEFAULT] (the stores, a size cap, import
# methods...), STORES the store sections (file_stores or legacy_store). Every
# Glance inspects uploads (require_image_format_match, the default since
# 2024.2, set here so that the bed does not depend on the default).
render_glance() {
  local svc=$1 port=$2 d=$BED/$1 db=$BED/$3
  mkdir -p "$d/locks" "$db"
  put "$d/glance-api.conf" "[DEFAULT]
log_file = $d/glance.log
debug = false
worker_self_reference_url = http://$HOST:$port
public_endpoint = http://$HOST:$port
python_interpreter = $VENV/bin/python
$4

[database]
connection = sqlite:///$db/glance.db?timeout=30

[image_format]
require_image_format_match = true

$5

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
  # Two processes: Glance hashes uploads in Python, and one process's GIL would
  # make every other call wait behind an upload. A master process, so that
  # stopping it stops its workers.
  render_uwsgi "$svc" "$port" glance.wsgi.api:application "processes = 2" "threads = 8" "master = true" \
    "socket-timeout = 600" "chunked-input-limit = 10485760" "chunked-input-timeout = 600"
  [[ -f $d/glance-api-paste.ini ]] || cp "$VENV/etc/glance/glance-api-paste.ini" "$d/glance-api-paste.ini"
}

# file_stores DB NAME:DIR...: sets STORE_DEFAULTS ([DEFAULT] lines) and
# STORE_SECTIONS for a multi-store Glance (enabled_backends) with file stores
# NAME in <bed>/DIR, the first the default, and the staging and tasks stores in
# the dir of service DB.
file_stores() {
  local db=$BED/$1 names=() spec
  shift
  for spec in "$@"; do names+=("${spec%%:*}:file"); done
  STORE_DEFAULTS="enabled_backends = $(IFS=,; echo "${names[*]}")"
  STORE_SECTIONS="[glance_store]
default_backend = ${1%%:*}"
  for spec in "$@"; do
    mkdir -p "$BED/${spec#*:}"
    STORE_SECTIONS+="

[${spec%%:*}]
store_description = file store ${spec%%:*} of the test bed
filesystem_store_datadir = $BED/${spec#*:}/"
  done
  mkdir -p "$db/staging" "$db/tasks"
  STORE_SECTIONS+="

[os_glance_staging_store]
filesystem_store_datadir = $db/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $db/tasks/"
}

# render_multi SVC PORT DB DEFAULTS SECTIONS STORE...: render_glance with
# file_stores STORE..., DEFAULTS added to [DEFAULT] and SECTIONS to the sections.
render_multi() {
  file_stores "$3" "${@:6}"
  render_glance "$1" "$2" "$3" "$STORE_DEFAULTS
$4" "$STORE_SECTIONS
$5"
}

render_glances() {
  local cap=""
  [[ -n $IMAGE_SIZE_CAP ]] && cap="image_size_cap = $IMAGE_SIZE_CAP"
  render_multi glance "$GLANCE_PORT" glance "$cap" "" fs:images
  # The capped Glance also enforces Keystone unified limits (image quotas):
  # provision.py sets them, oslo.limit reads them as the glance user.
  render_multi glance-capped "$GLANCE_CAPPED_PORT" glance "image_size_cap = $GLANCE_CAPPED_SIZE
use_keystone_limits = true" "[oslo_limit]
auth_type = password
auth_url = $KEYSTONE_URL
username = glance
password = $GLANCE_PASSWORD
user_domain_id = default
system_scope = all
endpoint_service_type = image
endpoint_region_name = RegionOne
endpoint_interface = public" fs:images
  render_multi glance-b "$GLANCE_B_PORT" glance-b "" "" fs:images-b
  # Interoperable import on a single-store Glance configured the legacy way
  # ([glance_store] stores, node_staging_uri), as many clouds still are: its
  # GET /v2/info/stores answers 404.
  mkdir -p "$BED/glance-import/staging" "$BED/images-import"
  render_glance glance-import "$GLANCE_IMPORT_PORT" glance-import \
    "enabled_import_methods = [glance-direct,web-download,copy-image]
node_staging_uri = file://$BED/glance-import/staging/" "[glance_store]
stores = file,http
default_store = file
filesystem_store_datadir = $BED/images-import/"
  # Two file stores: GET /v2/info/stores lists fast (the default) and slow.
  render_multi glance-stores "$GLANCE_STORES_PORT" glance-stores \
    "enabled_import_methods = [glance-direct,web-download,copy-image]" "" fast:images-stores/fast slow:images-stores/slow
  # Import only: the policy forbids PUT .../file to members (upload_image is
  # admin-only); glance-direct (PUT .../stage, POST .../import) works.
  local policy=$BED/glance-importonly/policy.yaml
  mkdir -p "$BED/glance-importonly"
  put "$policy" "# Generated by tests/openstack/up.sh: direct upload is for admins only.
\"upload_image\": \"role:admin\""
  render_multi glance-importonly "$GLANCE_IMPORTONLY_PORT" glance-importonly \
    "enabled_import_methods = [glance-direct]" "[oslo_policy]
policy_file = $policy" fs:images-importonly
}

# ---------------------------------------------------------------- database
wal() { "$VENV/bin/python" -c 'import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute("pragma journal_mode=wal")' "$1"; }

init_keystone_db() {
  local d=$BED/keystone want
  want=$(sha "$VENV/.osih-constraints.sha256" <(echo "$KEYSTONE_URL $ADMIN_PASSWORD"))
  [[ -f $d/keystone.db ]] && fresh "$d/db.stamp" "$want" && return 0
  [[ -f $d/keystone.db ]] || rm -f "$d/db.stamp" "$BED/provision.stamp" "$BED/appcred.json"
  local km=("$VENV/bin/keystone-manage" --config-file "$d/keystone.conf")
  mkdir -p "$d/fernet-keys" "$d/credential-keys" "$d/locks"
  # The key repositories do not depend on the database: made while db_sync runs.
  local owner=(--keystone-user "$(id -un)" --keystone-group "$(id -gn)") fernet=: cred=:
  [[ -e $d/fernet-keys/0 ]] || { "${km[@]}" fernet_setup "${owner[@]}" >"$d/fernet.log" 2>&1 & fernet="wait $!"; }
  [[ -e $d/credential-keys/0 ]] || { "${km[@]}" credential_setup "${owner[@]}" >"$d/credential.log" 2>&1 & cred="wait $!"; }
  "${km[@]}" db_sync >"$d/manage.log" 2>&1 || { tail -30 "$d/manage.log" >&2; die "keystone-manage db_sync failed (log: $d/manage.log)"; }
  $fernet || { tail -30 "$d/fernet.log" >&2; die "keystone-manage fernet_setup failed (log: $d/fernet.log)"; }
  $cred || { tail -30 "$d/credential.log" >&2; die "keystone-manage credential_setup failed (log: $d/credential.log)"; }
  {
    "${km[@]}" bootstrap --bootstrap-password "$ADMIN_PASSWORD" \
      --bootstrap-username admin --bootstrap-project-name admin \
      --bootstrap-role-name admin --bootstrap-region-id RegionOne \
      --bootstrap-admin-url "$KEYSTONE_URL" --bootstrap-internal-url "$KEYSTONE_URL" \
      --bootstrap-public-url "$KEYSTONE_URL" &&
      wal "$d/keystone.db"
  } >>"$d/manage.log" 2>&1 || { tail -30 "$d/manage.log" >&2; die "keystone-manage bootstrap failed (log: $d/manage.log)"; }
  echo "$want" >"$d/db.stamp"
}

# db_sync DIR: glance-manage db_sync of the database in DIR (with DIR's glance-api.conf).
db_sync() {
  { "$VENV/bin/glance-manage" --config-file "$1/glance-api.conf" db_sync && wal "$1/glance.db"; } \
    >"$1/manage.log" 2>&1 || { tail -30 "$1/manage.log" >&2; die "glance-manage db_sync failed (log: $1/manage.log)"; }
}

# init_glance_dbs SVC...: the database of each Glance SVC that has one of its
# own. A new one is a copy of a template: db_sync takes seconds of CPU, and the
# schema does not depend on the configuration (WAL mode is kept in the file).
# An existing one made with another venv is upgraded in place.
init_glance_dbs() {
  local want svc t=$BED/glance-schema
  want=$(sha "$VENV/.osih-constraints.sha256")
  for svc in "$@"; do
    [[ -f $BED/$svc/glance.db ]] && fresh "$BED/$svc/db.stamp" "$want" && continue
    if [[ -f $BED/$svc/glance.db ]]; then
      db_sync "$BED/$svc"
    else
      if [[ ! -f $t/glance.db ]] || ! fresh "$t/db.stamp" "$want"; then
        mkdir -p "$t"
        rm -f "$t/glance.db" "$t/db.stamp"
        printf '[database]\nconnection = sqlite:///%s/glance.db\n' "$t" >"$t/glance-api.conf"
        db_sync "$t"
        echo "$want" >"$t/db.stamp"
      fi
      cp "$t/glance.db" "$BED/$svc/glance.db.tmp" && mv -f "$BED/$svc/glance.db.tmp" "$BED/$svc/glance.db"
    fi
    echo "$want" >"$BED/$svc/db.stamp"
  done
}

# ---------------------------------------------------------------- processes
health_url() {
  if [[ $1 == keystone ]]; then echo "$KEYSTONE_URL"; else echo "http://$HOST:$(svc_port "$1")/versions"; fi
}

healthy() { [[ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$(health_url "$1")")" == 200 ]]; }

fingerprint() {
  local d=$BED/$1
  sha "$d/uwsgi.ini" "$d/"*.conf "$d/"*.yaml "$VENV/.osih-constraints.sha256" "$d/db.stamp" "$OSIH_HERE/pyhooks/"*.py
}

fail_start() {
  local svc=$1 msg=$2 f
  {
    echo "openstack-bed: ERROR: $svc $msg"
    for f in "$BED/$svc/uwsgi.log" "$BED/$svc/"{keystone,glance}.log; do
      [[ -f $f ]] && { echo "----- tail of $f"; tail -n 40 "$f"; }
    done
  } >&2
  stop_svc "$svc" 2>/dev/null || true
  exit 1
}

# needs_start SVC: SVC does not run healthy with its current configuration
# (its fingerprint goes to FP[SVC]).
declare -A FP=()
needs_start() {
  local svc=$1
  FP[$svc]=$(fingerprint "$svc")
  svc_pid "$svc" >/dev/null || return 0
  if fresh "$BED/$svc/running.fp" "${FP[$svc]}" && healthy "$svc"; then return 1; fi
  log "restarting $svc (configuration changed or unhealthy)"
}

# launch SVC...: start in the background each SVC that needs it, after stopping
# those of them that run, all at once (a Glance takes seconds to stop); appends
# them to LAUNCHED (await_started waits for them).
LAUNCHED=()
launch() {
  local svc todo=() stops=() pid
  for svc in "$@"; do
    if needs_start "$svc"; then todo+=("$svc"); fi
  done
  for svc in "${todo[@]}"; do
    stop_svc "$svc" &
    stops+=("$!")
  done
  for pid in "${stops[@]}"; do wait "$pid" || exit 1; done
  for svc in "${todo[@]}"; do start_svc "$svc"; done
}

# start_svc SVC: start the stopped SVC in the background.
start_svc() {
  local svc=$1 d=$BED/$1 port
  port=$(svc_port "$svc")
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
  LAUNCHED+=("$svc")
}

# await_started SVC...: wait until each launched SVC answers its health URL;
# appends it to STARTED. They start at once: after down.sh, under load 7-10,
# the four services of before took 22.6-23.7 s one after the other, the seven
# of now 21.6-23.2 s together (README.md, "Measured").
STARTED=()
await_started() {
  local pending=() still svc i deadline=$((SECONDS + START_TIMEOUT))
  for svc in "$@"; do [[ " ${LAUNCHED[*]} " == *" $svc "* ]] && pending+=("$svc"); done
  for ((i = 0; ${#pending[@]}; i++)); do
    ((SECONDS < deadline)) || fail_start "${pending[0]}" "did not answer $(health_url "${pending[0]}") within ${START_TIMEOUT}s"
    sleep 0.2
    still=()
    for svc in "${pending[@]}"; do
      if svc_pid "$svc" >/dev/null && healthy "$svc"; then
        echo "${FP[$svc]}" >"$BED/$svc/running.fp"
        STARTED+=("$svc")
      elif ((i > 10)) && ! svc_pid "$svc" >/dev/null; then
        fail_start "$svc" "exited during start-up"
      else
        still+=("$svc")
      fi
    done
    pending=(${still[@]+"${still[@]}"})
  done
}

# ---------------------------------------------------------------- provisioning
provision() {
  local want
  want=$(sha "$BED/keystone/db.stamp" <(echo "$KEYSTONE_URL ${IMAGE_ENDPOINTS[*]} $QUOTA_MIB") "$BED/secrets.env" "$OSIH_HERE/provision.py")
  fresh "$BED/provision.stamp" "$want" && [[ -s $BED/appcred.json ]] && return 0
  BED=$BED KEYSTONE_URL=$KEYSTONE_URL IMAGE_ENDPOINTS="${IMAGE_ENDPOINTS[*]}" \
    ADMIN_PASSWORD=$ADMIN_PASSWORD GLANCE_PASSWORD=$GLANCE_PASSWORD CHARM_PASSWORD=$CHARM_PASSWORD \
    CHARM_B_PASSWORD=$CHARM_B_PASSWORD DOMAIN_PASSWORD=$DOMAIN_PASSWORD \
    CHARM_IMPORT_PASSWORD=$CHARM_IMPORT_PASSWORD CHARM_STORES_PASSWORD=$CHARM_STORES_PASSWORD \
    CHARM_IMPORTONLY_PASSWORD=$CHARM_IMPORTONLY_PASSWORD CHARM_QUOTA_PASSWORD=$CHARM_QUOTA_PASSWORD QUOTA_MIB=$QUOTA_MIB \
    "$VENV/bin/python" "$OSIH_HERE/provision.py" || die "provisioning Keystone failed"
  echo "$want" >"$BED/provision.stamp"
}

# password_cloud NAME USER PASSWORD SCOPE REGION: a clouds.yaml entry with
# password auth in the Default domain; SCOPE is the auth's scope line(s).
password_cloud() {
  echo "  $1:
    auth_type: password
    auth:
      auth_url: $KEYSTONE_URL
      username: $2
      password: $3
      user_domain_name: Default
$4
    region_name: $5
    interface: public
    identity_api_version: 3"
}

project_scope() { printf '      project_name: %s\n      project_domain_name: Default' "$1"; }

write_client_files() {
  local ac_id ac_secret
  ac_id=$(sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' "$BED/appcred.json")
  ac_secret=$(sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p' "$BED/appcred.json")
  put "$BED/clouds.yaml" "# Generated by tests/openstack/up.sh
clouds:
$(password_cloud charm charm "$CHARM_PASSWORD" "$(project_scope charm-project)" RegionOne)
  charm-appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: $KEYSTONE_URL
      application_credential_id: $ac_id
      application_credential_secret: $ac_secret
    region_name: RegionOne
    interface: public
    identity_api_version: 3
$(password_cloud admin admin "$ADMIN_PASSWORD" "$(project_scope admin)" RegionOne)
$(password_cloud charm-b charm-b "$CHARM_B_PASSWORD" "$(project_scope charm-b-project)" RegionTwo)
$(password_cloud charm-domain charm-domain "$DOMAIN_PASSWORD" "      domain_name: Default" RegionOne)
$(password_cloud charm-import charm-import "$CHARM_IMPORT_PASSWORD" "$(project_scope charm-import-project)" RegionImport)
$(password_cloud charm-stores charm-stores "$CHARM_STORES_PASSWORD" "$(project_scope charm-stores-project)" RegionStores)
$(password_cloud charm-importonly charm-importonly "$CHARM_IMPORTONLY_PASSWORD" "$(project_scope charm-importonly-project)" RegionImportOnly)
$(password_cloud charm-raw charm "$CHARM_PASSWORD" "$(project_scope charm-project)" RegionOne)
    image_format: raw
$(password_cloud charm-quota charm-quota "$CHARM_QUOTA_PASSWORD" "$(project_scope charm-quota-project)" RegionOne)
    image_endpoint_override: http://$HOST:$GLANCE_CAPPED_PORT"
  put "$BED/env" "# source me: settings of the running OpenStack test bed
export OSIH_BED_DIR=$BED
export OSIH_BED_VENV=$VENV
export KEYSTONE_URL=$KEYSTONE_URL
export GLANCE_URL=$GLANCE_URL
export GLANCE_B_URL=$GLANCE_B_URL
export OS_CLIENT_CONFIG_FILE=$BED/clouds.yaml
export OSIH_TOKEN_LIFETIME=$TOKEN_LIFETIME
export OSIH_GLANCE_IMAGE_SIZE_CAP=$IMAGE_SIZE_CAP
export OSIH_CHARM_PASSWORD=$CHARM_PASSWORD
export OSIH_CHARM_B_PASSWORD=$CHARM_B_PASSWORD
export OSIH_DOMAIN_PASSWORD=$DOMAIN_PASSWORD
export OSIH_ADMIN_PASSWORD=$ADMIN_PASSWORD
export OSIH_APPCRED_ID=$ac_id
export OSIH_APPCRED_SECRET=$ac_secret
export PATH=$VENV/bin:\$PATH
export GLANCE_IMPORT_URL=$GLANCE_IMPORT_URL
export GLANCE_STORES_URL=$GLANCE_STORES_URL
export GLANCE_IMPORTONLY_URL=$GLANCE_IMPORTONLY_URL
export OSIH_CHARM_IMPORT_PASSWORD=$CHARM_IMPORT_PASSWORD
export OSIH_CHARM_STORES_PASSWORD=$CHARM_STORES_PASSWORD
export OSIH_CHARM_IMPORTONLY_PASSWORD=$CHARM_IMPORTONLY_PASSWORD
export OSIH_CHARM_QUOTA_PASSWORD=$CHARM_QUOTA_PASSWORD
export GLANCE_CAPPED_URL=http://$HOST:$GLANCE_CAPPED_PORT"
  put "$BED/settings" "token_lifetime=$TOKEN_LIFETIME
image_size_cap=$IMAGE_SIZE_CAP
keystone_port=$KEYSTONE_PORT
glance_port=$GLANCE_PORT
glance_capped_port=$GLANCE_CAPPED_PORT
glance_capped_size=$GLANCE_CAPPED_SIZE
glance_b_port=$GLANCE_B_PORT
glance_import_port=$GLANCE_IMPORT_PORT
glance_stores_port=$GLANCE_STORES_PORT
glance_importonly_port=$GLANCE_IMPORTONLY_PORT
quota_mib=$QUOTA_MIB"
}

# check_glance_auth SVC USER PASSWORD PROJECT: Glance SVC accepts USER's token,
# which proves keystonemiddleware <-> Keystone works. One user's token serves
# every Glance checked (TOKENS).
declare -A TOKENS=()
check_glance_auth() {
  local svc=$1 user=$2 code
  user_token "$2" "$3" "$4"
  code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -H "X-Auth-Token: ${TOKENS[$user]}" "http://$HOST:$(svc_port "$svc")/v2/images?limit=1")
  [[ $code == 200 ]] || fail_start "$svc" "answered GET /v2/images with HTTP $code for a valid token of $user"
}

# user_token USER PASSWORD PROJECT: sets TOKENS[USER] (once) to a token of USER.
user_token() {
  local user=$1 pw=$2 project=$3
  if [[ -z ${TOKENS[$user]:-} ]]; then
    TOKENS[$user]=$(curl -s -D - -o /dev/null -m 10 -H 'Content-Type: application/json' -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"$user\",\"domain\":{\"id\":\"default\"},\"password\":\"$pw\"}}},\"scope\":{\"project\":{\"name\":\"$project\",\"domain\":{\"id\":\"default\"}}}}}" \
      "$KEYSTONE_URL/auth/tokens" | tr -d '\r' | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p')
    [[ -n ${TOKENS[$user]} ]] || fail_start keystone "did not issue a token for $user"
  fi
}

# warm_keystone USER PASSWORD PROJECT: one token validation (Keystone's
# identity:validate_token policy) before any concurrent one. A Keystone just
# started answered 2 of 6 concurrent first validations with 403 "You are not
# authorized to perform the requested action: identity:validate_token" (its
# policy rules load on first use, and not thread-safely), so the Glances that
# asked answered 401 to a valid token.
warm_keystone() {
  local code
  user_token "$@"
  code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -H "X-Auth-Token: ${TOKENS[$1]}" -H "X-Subject-Token: ${TOKENS[$1]}" "$KEYSTONE_URL/auth/tokens")
  [[ $code == 200 ]] || fail_start keystone "answered GET /v3/auth/tokens with HTTP $code for a token validating itself"
}

# ---------------------------------------------------------------- main
t0=$EPOCHREALTIME
ensure_debs
lock_bed
ensure_venv
ensure_secrets

render_keystone
render_glances
OWN_DBS=(glance glance-b glance-import glance-stores glance-importonly)
# Keystone's database takes longest to make (four keystone-manage runs): the
# Glances, which need no Keystone to start, start meanwhile.
init_keystone_db &
keystone_db=$!
init_glance_dbs "${OWN_DBS[@]}"
launch "${GLANCE_SERVICES[@]}"
wait "$keystone_db" || exit 1
launch keystone
# Keystone first (provisioning needs it); the Glances go on starting meanwhile.
await_started keystone
provision
[[ " ${STARTED[*]} " != *" keystone "* ]] || warm_keystone charm "$CHARM_PASSWORD" charm-project
write_client_files
await_started "${GLANCE_SERVICES[@]}"
# Each Glance (re)started, or all after a Keystone restart, accepts charm's
# token (any project's will do), one Glance after the other: concurrent first
# logins made Keystone answer 500, "database is locked" updating
# last_active_at, which it does not retry.
for svc in "${GLANCE_SERVICES[@]}"; do
  if [[ " ${STARTED[*]} " == *" $svc "* || " ${STARTED[*]} " == *" keystone "* ]]; then
    check_glance_auth "$svc" charm "$CHARM_PASSWORD" charm-project
  fi
done
elapsed=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
started=${STARTED[*]:-nothing}
log "up in ${elapsed}s (started: ${started// /, }): keystone $KEYSTONE_URL, Glances ${IMAGE_ENDPOINTS[*]}, capped $HOST:$GLANCE_CAPPED_PORT"
log "  clouds.yaml $BED/clouds.yaml (clouds charm, charm-appcred, admin, charm-b, charm-domain, charm-import, charm-stores,"
log "  charm-importonly, charm-raw, charm-quota); env: source $BED/env"
