#!/usr/bin/env bash
# The unit under a real systemd: boots Debian bookworm (systemd 252) as PID 1 in
# systemd-nspawn, installs the daemon into it the way a charm would, and shows with
# the real Keystone + Glance of tests/openstack/ (the bed must be up: make bed):
#   - the unit is active only after the daemon's READY=1 (Type=notify);
#   - the hardened daemon runs unprivileged (no capabilities, seccomp, no_new_privs);
#   - PUT /v1/clouds, an upload of a file root placed in the upload dir, and a
#     `latest`, through the unix socket in the unit's RuntimeDirectory, with the
#     API token read by root;
#   - a frozen daemon (SIGSTOP) is killed by the watchdog and restarted;
#   - `systemctl stop` ends it cleanly (exit 0);
#   - `systemctl status` shows the daemon's STATUS= line;
#   - `systemctl reload` (SIGHUP) applies a changed clouds.yaml without a restart;
#   - `systemctl stop` during an upload leaves no unfinished image;
# and, in tests/systemd/nspawn-charm.sh, a charm's own use of the package (issue 17):
#   - src_fd: root's 0600 file outside every upload dir, which the daemon's uid
#     cannot open, uploaded by the CLI and by the charm library the package installs
#     (each passes the open file over the socket); by path it is path_not_allowed;
#   - the example charm's install event and upload action (charm/example/src/charm.py
#     under ops[testing], tests/systemd/nspawn_charm.py: only Juju and cos_agent are
#     stand-ins): from a purged machine, real apt-get of the .deb resource, the unit
#     started with the charm's config.d drop-in and the secret's clouds, the image
#     active in Glance with the file's md5, the action's results and the relation;
#   - `apt-get install --reinstall` and an upgrade whose packaged config.yaml changed
#     run with no terminal and no question, the charm's drop-in unchanged byte for
#     byte, the restarted daemon on the charm's port answering `latest` from its
#     clouds; and, as the control, an edited config.yaml does stop the upgrade.
#
#   tests/systemd/nspawn-test.sh            (as root; installs its own Debian packages)
#
# Environment: OSIH_BINARY (default target/debug/openstack-image-helper),
# OSIH_BED_DIR (default target/openstack-bed), OSIH_NSPAWN_SUITE (default bookworm),
# OSIH_NSPAWN_PENDING=a,b to also run checks of daemon features still being
# written (see "Pending checks" below; none today).
#
# The Debian tree is cached in target/systemd-nspawn/ (debootstrap, ~50 s, once), and
# so is ops[testing] for its python3 (tests/systemd/charm-requirements.txt, from PyPI
# with the host's pip, ~5 s, once); every run boots the tree under an overlay on a
# tmpfs, so a run changes nothing in it.
# Cost with both cached: 35 to 45 s, of which the charm's checks (src_fd, charm,
# reinstall, upgrade, control) take 10 to 16 s.
# Everything runs in a private mount namespace: the mounts vanish with the script,
# and the trap powers the container off (or kills it) on any exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

suite=${OSIH_NSPAWN_SUITE:-bookworm}
binary=$(realpath -m "${OSIH_BINARY:-target/debug/openstack-image-helper}")
bed=${OSIH_BED_DIR:-$repo/target/openstack-bed}
cache=$repo/target/systemd-nspawn
rootfs=$cache/rootfs-$suite
# Packages of the tree beyond minbase: an init, D-Bus for systemctl, procps for the
# unit's ExecReload=/bin/kill, ca-certificates (without a system CA store the daemon
# cannot build any cloud's HTTP client, even for http://: "TLS settings: builder
# error: unexpected error: No CA certificates were loaded from the system"; the
# package must depend on it), curl to call the API over its socket as a hook does,
# python3 for the charm library and the example charm (nspawn-charm.sh).
rootfs_packages=systemd,systemd-sysv,dbus,procps,ca-certificates,curl,python3
unit=openstack-image-helper.service
socket=/run/openstack-image-helper/api.sock
config=/etc/openstack-image-helper/config.yaml
state=/var/lib/openstack-image-helper
app_name=nspawn-t$(date +%s)x$$

say() { printf 'nspawn-test: %s\n' "$*"; }
die() {
  printf 'nspawn-test: FAIL: %s\n' "$*" >&2
  exit 1
}

# --- phases and their cost ---------------------------------------------------
# Phases done before the re-exec into the private mount namespace come in the environment.
IFS='|' read -r -a timings <<<"${OSIH_NSPAWN_TIMINGS:-}"
phase() {
  local name=$1 t0=$SECONDS
  shift
  say "== $name"
  "$@"
  timings+=("$(printf '%-30s %4d s' "$name" $((SECONDS - t0)))")
  say "-- $name: $((SECONDS - t0)) s"
}
print_timings() {
  ((${#timings[@]})) || return 0
  say "phase costs:"
  printf '  %s\n' "${timings[@]}"
}

# --- Debian packages on the host ----------------------------------------------
ensure_host_debs() {
  local missing=() cmd
  for cmd in systemd-nspawn:systemd-container debootstrap:debootstrap unshare:util-linux \
    nsenter:util-linux curl:curl python3:python3 pip3:python3-pip; do
    command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd#*:}")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# --- the cached Debian tree -----------------------------------------------------
# The Debian mirror apt on this machine uses (only Debian's registry is reachable).
debian_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ { print $2 } /^deb / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' |
    grep -E '/debian/?$' | head -1) || true
  echo "${uri:-http://deb.debian.org/debian}"
}

ensure_rootfs() {
  local want="$suite $rootfs_packages"
  if [[ -x $rootfs/lib/systemd/systemd && "$(cat "$rootfs.stamp" 2>/dev/null)" == "$want" ]]; then
    say "cached tree: $rootfs"
    return 0
  fi
  local mirror tmp=$rootfs.tmp
  mirror=$(debian_mirror)
  say "debootstrap $suite from $mirror into $rootfs (log: $cache/debootstrap.log)"
  mkdir -p "$cache"
  rm -rf "$tmp" "$rootfs" "$rootfs.stamp"
  debootstrap --variant=minbase --include="$rootfs_packages" "$suite" "$tmp" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || {
    tail -20 "$cache/debootstrap.log" >&2
    die "debootstrap failed"
  }
  rm -rf "$tmp"/var/cache/apt/archives/*.deb
  mv "$tmp" "$rootfs"
  echo "$want" >"$rootfs.stamp"
}

# --- the container ------------------------------------------------------------
scratch=
ctroot=
nspawn_pid=
leader=

# A tmpfs for the overlay's upper layer, and one on /run (systemd-nspawn keeps its
# state in /run/systemd/nspawn; the host's /run stays untouched).
boot_container() {
  scratch=$(mktemp -d /tmp/osih-nspawn.XXXXXX)
  mount -t tmpfs -o mode=0755 osih-nspawn "$scratch"
  mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
  mount -t overlay osih-nspawn -o "lowerdir=$rootfs,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
  ctroot=$scratch/root
  mount -t tmpfs -o mode=0755 osih-run /run
  # No --private-network: the container shares the host's loopback, where the bed is.
  systemd-nspawn -D "$ctroot" -b --register=no --keep-unit --pipe \
    --machine="osih-$$" >"$scratch/console.log" 2>&1 </dev/null &
  nspawn_pid=$!
  local _
  for _ in $(seq 100); do
    leader=$(ps -o pid= --ppid "$nspawn_pid" | head -1 | tr -d ' ') || true
    [[ -n $leader && $(cat "/proc/$leader/comm" 2>/dev/null) == systemd ]] && break
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$scratch/console.log" >&2; die "systemd-nspawn exited"; }
    leader=
    sleep 0.1
  done
  [[ -n $leader ]] || die "no systemd in the container after 10 s"
  # systemctl talks to PID 1 over /run/systemd/private, which comes a moment later.
  for _ in $(seq 100); do
    in_ct test -S /run/systemd/private && break
    sleep 0.1
  done
  local running
  running=$(in_ct timeout 60 systemctl is-system-running --wait) || true
  say "container booted: PID 1 is $(in_ct systemctl --version | head -1) ($running)"
  [[ $running == running || $running == degraded ]] || {
    in_ct systemctl --failed --no-pager >&2 || true
    die "the container did not finish booting ($running)"
  }
}

# Runs a command in the container, as its root, with a clean environment (and its stdin).
in_ct() {
  nsenter --target "$leader" --mount --uts --ipc --pid --root --wd -- \
    /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_COLORS=0 SYSTEMD_PAGER= "$@"
}

shutdown_container() {
  [[ -n $nspawn_pid ]] || return 0
  if kill -0 "$nspawn_pid" 2>/dev/null; then
    # systemd-nspawn asks the container's systemd to power off on SIGTERM.
    kill -TERM "$nspawn_pid" 2>/dev/null || true
    local _
    for _ in $(seq 200); do
      kill -0 "$nspawn_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$nspawn_pid" 2>/dev/null; then
      say "container still up after 20 s: killing it"
      kill -KILL "$nspawn_pid" 2>/dev/null || true
      if [[ -n $leader ]]; then kill -KILL "$leader" 2>/dev/null || true; fi
    fi
  fi
  wait "$nspawn_pid" 2>/dev/null || true
  nspawn_pid=
}

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0)) && [[ -n $leader ]] && kill -0 "$leader" 2>/dev/null; then
    say "the daemon's journal (last 40 lines):"
    in_ct journalctl -u "$unit" --no-pager -n 40 2>/dev/null | sed 's/^/  /'
  fi
  delete_test_images
  shutdown_container
  # The mounts live in this private mount namespace only; undo them anyway so
  # that nothing is held while the namespace dies with this script.
  if [[ -n $scratch ]]; then
    umount /run 2>/dev/null
    umount "$scratch/root" 2>/dev/null
    umount "$scratch" 2>/dev/null
    rmdir "$scratch" 2>/dev/null
  fi
  print_timings
  if ((rc == 0)); then say "ok"; else say "FAILED (exit $rc)"; fi
  exit "$rc"
}

# --- the bed's Keystone and Glance, as the test's own observer --------------------
bed_ok=
keystone_token() {
  # shellcheck disable=SC1091
  local body
  body=$(printf '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"charm","domain":{"name":"Default"},"password":"%s"}}},"scope":{"project":{"name":"charm-project","domain":{"name":"Default"}}}}}' "$OSIH_CHARM_PASSWORD")
  curl -sS -D - -o /dev/null -H 'Content-Type: application/json' -d "$body" "$KEYSTONE_URL/auth/tokens" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "x-subject-token" { print $2 }'
}
# A fresh token per call: the bed's tokens may live only 60 s.
glance() {
  local token
  token=$(keystone_token)
  [[ -n $token ]] || die "the bed's Keystone gave no token"
  curl -sS --fail -H "X-Auth-Token: $token" "$@"
}
json_field() { python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"; }

check_bed() {
  [[ -s $bed/env ]] || die "no test bed in $bed: start it with make bed"
  # shellcheck disable=SC1091
  source "$bed/env"
  [[ -n $(keystone_token) ]] || die "the bed's Keystone ($KEYSTONE_URL) gave no token: is the bed up (make bed)?"
  bed_ok=1
}

# Every image of this run (its names all hold $app_name), whoever made it.
delete_test_images() {
  [[ -n $bed_ok ]] || return 0
  local id
  for id in $(glance_images "$app_name" | cut -d: -f1); do
    glance -o /dev/null -X DELETE "$GLANCE_URL/v2/images/$id" || true
  done
}

# glance_images TEXT: "id:status" of the project's images whose name holds TEXT.
glance_images() {
  glance "$GLANCE_URL/v2/images?limit=1000" |
    python3 -c 'import json, sys; [print(i["id"] + ":" + i["status"]) for i in json.load(sys.stdin)["images"] if sys.argv[1] in i["name"]]' "$1"
}
glance_has_image() { [[ -n $(glance_images "$1") ]]; }

# --- install: the one place that knows how the daemon gets into the tree ----------
# The way a charm installs it: the Debian package (`make deb`; in CI,
# packaging/check-deb.sh has just built it), else the built binary and the unit.
package_deb() { echo "${OSIH_NSPAWN_DEB:-$(ls -t target/deb/openstack-image-helper_*.deb 2>/dev/null | head -n 1)}"; }
install_daemon() {
  local deb
  deb=$(package_deb)
  if [[ -n $deb ]]; then
    say "installing the package $deb"
    # Not /tmp: the booted container has a tmpfs there.
    install -D -m 0644 "$deb" "$ctroot/root/osih.deb"
    in_ct dpkg -i /root/osih.deb >/dev/null
    rm -f "$ctroot/root/osih.deb"
    [[ -x $ctroot/usr/bin/openstack-image-helper ]] || die "the package did not install /usr/bin/openstack-image-helper"
  else
    say "no target/deb/*.deb (make deb): installing $binary and the unit by hand"
    install -D -m 0755 "$binary" "$ctroot/usr/bin/openstack-image-helper"
    install -D -m 0644 systemd/$unit "$ctroot/lib/systemd/system/$unit"
    install -d -m 0755 "$ctroot/etc/openstack-image-helper"
  fi
  write_config
  in_ct systemctl daemon-reload
}

write_config() {
  cat >"$ctroot$config" <<YAML
# written by tests/systemd/nspawn-test.sh
listen: unix:$socket
clouds_yaml: $state/clouds.yaml
state_dir: $state
api_token_file: $state/api-token
upload_dirs: [$state/images]
YAML
  chmod 0644 "$ctroot$config"
}

# --- helpers for the checks --------------------------------------------------------
show() { in_ct systemctl show -P "$1" "$unit"; }
expect() {
  local what=$1 want=$2 got=$3
  [[ $got == "$want" ]] || die "$what: want '$want', got '$got'"
  say "ok: $what = $got"
}
# The API through the unit's socket, as a hook does: root reads the token.
api() {
  local method=$1 path=$2
  shift 2
  # shellcheck disable=SC2016 # expanded by the container's sh
  in_ct sh -c 'socket=$1 token_file=$2 method=$3; shift 3
    exec curl -sS --unix-socket "$socket" -H "Authorization: Bearer $(cat "$token_file")" -X "$method" "$@"' \
    sh "$socket" "$state/api-token" "$method" "$@" "http://localhost$path"
}
health_code() { in_ct curl -s -o /dev/null -w '%{http_code}' --unix-socket "$socket" http://localhost/v1/health || true; }
cli() { in_ct openstack-image-helper --config "$config" "$@"; }
drop_in() {
  mkdir -p "$ctroot/etc/systemd/system/$unit.d"
  printf '[Service]\n%s\n' "$2" >"$ctroot/etc/systemd/system/$unit.d/$1.conf"
  in_ct systemctl daemon-reload
}
drop_in_remove() {
  rm -f "$ctroot/etc/systemd/system/$unit.d/$1.conf"
  in_ct systemctl daemon-reload
}
# Predicates for wait_for.
healthy() { [[ $(health_code) == 200 ]]; }
active_state_is() { [[ $(show ActiveState) == "$1" ]]; }
charm_authenticated() { cli status 2>/dev/null | grep '^charm: authenticated' >/dev/null; }
restarted_after() { (($(show NRestarts) > $1)) && active_state_is active; }
status_names() { api GET /v1/status | grep "\"$1\"" >/dev/null; }
# wait_for WHAT TRIES COMMAND...: runs COMMAND every 0.2 s until it succeeds.
wait_for() {
  local what=$1 tries=$2
  shift 2
  local _
  for _ in $(seq "$tries"); do
    "$@" && return 0
    sleep 0.2
  done
  die "timed out waiting for: $what"
}

# --- the checks ------------------------------------------------------------------
# READY=1 is what makes the unit active: when the daemon cannot notify (a test drop-in
# runs it without NOTIFY_SOCKET; NotifyAccess=none is overridden for Type=notify),
# it serves but the unit stays "activating" until the start times out.
check_ready_gates_active() {
  # Restart=no: a start timeout would otherwise be retried.
  drop_in no-notify "ExecStart=
ExecStart=/usr/bin/env -u NOTIFY_SOCKET $(sed -n 's/^ExecStart=//p' "systemd/$unit")
TimeoutStartSec=4s
Restart=no"
  in_ct systemctl start --no-block "$unit"
  wait_for "the daemon to answer /v1/health" 50 healthy
  expect "ActiveState while serving without READY=1" activating "$(show ActiveState)"
  wait_for "the start to time out" 50 active_state_is failed
  expect "Result without READY=1" timeout "$(show Result)"
  drop_in_remove no-notify
  in_ct systemctl reset-failed "$unit"

  # The real start: `systemctl start` returns once READY=1 arrived.
  in_ct systemctl enable --now "$unit"
  expect "ActiveState after start" active "$(show ActiveState)"
  expect "SubState after start" running "$(show SubState)"
  expect "/v1/health" 200 "$(health_code)"
}

# The hardening took effect on the running process.
check_sandbox() {
  local pid status
  pid=$(show MainPID)
  status=$(in_ct cat "/proc/$pid/status")
  local uid
  uid=$(awk '/^Uid:/ { print $2 }' <<<"$status")
  [[ $uid != 0 ]] || die "the daemon runs as root"
  say "ok: the daemon runs as uid $uid ($(in_ct ps -o user= -p "$pid"))"
  expect "CapEff" 0000000000000000 "$(awk '/^CapEff:/ { print $2 }' <<<"$status")"
  expect "CapBnd" 0000000000000000 "$(awk '/^CapBnd:/ { print $2 }' <<<"$status")"
  expect "NoNewPrivs" 1 "$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$status")"
  expect "Seccomp (2: filter)" 2 "$(awk '/^Seccomp:/ { print $2 }' <<<"$status")"
  expect "state dir (DynamicUser: a link into /var/lib/private)" \
    "/var/lib/private/openstack-image-helper" "$(in_ct readlink -f "$state")"
  expect "api-token mode" 600 "$(in_ct stat -c %a "$state/api-token")"
}

# The bed's cloud "charm", as a charm holds it in clouds.yaml.
clouds_doc() {
  cat <<YAML
clouds:
  charm:
    auth_type: password
    auth:
      auth_url: $KEYSTONE_URL
      username: charm
      password: $OSIH_CHARM_PASSWORD
      project_name: charm-project
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
YAML
}

# A charm sends its clouds.yaml; the daemon writes it into its state dir.
check_put_clouds() {
  local answer
  answer=$(clouds_doc | api PUT /v1/clouds -H 'Content-Type: application/yaml' --data-binary @- -w ' %{http_code}')
  [[ $answer == *' 200' ]] || die "PUT /v1/clouds: $answer"
  say "ok: PUT /v1/clouds: $answer"
  expect "clouds.yaml mode" 600 "$(in_ct stat -c %a "$state/clouds.yaml")"
  wait_for "cloud charm to authenticate" 100 charm_authenticated
  say "ok: $(cli status | grep '^charm:')"
}

image_file=$state/images/nspawn-test.img
image_id=

# Root places an image file in the upload dir; the CLI (as root) uploads it.
check_upload_and_latest() {
  # A charm writes the file readable by the daemon's dynamic user: mode 0644
  # (the upload dir itself is 0700 inside a 0700 state dir: nobody else gets in).
  in_ct sh -c "head -c 8388608 /dev/urandom >'$image_file.tmp' && chmod 0644 '$image_file.tmp' && mv '$image_file.tmp' '$image_file'"
  local size
  size=$(in_ct stat -c %s "$image_file")
  image_id=$(cli upload --base jammy --app-name "$app_name" --arch x64 --num-revisions 1 --src-path "$image_file")
  [[ -n $image_id ]] || die "upload printed no image id"
  say "ok: uploaded $image_id"
  local image
  image=$(glance "$GLANCE_URL/v2/images/$image_id")
  expect "Glance: status" active "$(json_field status <<<"$image")"
  expect "Glance: size" "$size" "$(json_field size <<<"$image")"
  expect "Glance: name" "jammy-$app_name-x64" "$(json_field name <<<"$image")"
  expect "Glance: checksum" "$(in_ct md5sum "$image_file" | cut -d' ' -f1)" "$(json_field checksum <<<"$image")"
  expect "latest (CLI)" "$image_id" "$(cli latest --base jammy --app-name "$app_name" --arch x64)"
  local answer
  answer=$(api GET "/v1/images/latest?base=jammy&app_name=$app_name&arch=x64")
  expect "latest (curl)" "$image_id" "$(json_field id <<<"$answer")"
}

# A frozen daemon stops pinging the watchdog: systemd kills it and restarts it.
check_watchdog() {
  # LimitCORE=0: the SIGABRT of the watchdog needs no core dump here.
  drop_in watchdog $'WatchdogSec=3s\nRestartSec=1s\nTimeoutAbortSec=5s\nLimitCORE=0'
  in_ct systemctl restart "$unit"
  local pid restarts
  pid=$(show MainPID)
  restarts=$(show NRestarts)
  expect "WatchdogUSec (test drop-in)" 3s "$(show WatchdogUSec)"
  sleep 4 # a healthy daemon pings: no restart while it runs
  expect "MainPID of a healthy daemon after 4 s" "$pid" "$(show MainPID)"
  in_ct systemctl kill --kill-who=main --signal=SIGSTOP "$unit"
  say "daemon $pid frozen (SIGSTOP)"
  wait_for "the watchdog restart" 100 restarted_after "$restarts"
  local new_pid
  new_pid=$(show MainPID)
  [[ $new_pid != "$pid" ]] || die "MainPID unchanged after the watchdog restart"
  # Not grep -q: it stops reading at the first match, and under pipefail
  # journalctl's SIGPIPE then fails the pipeline when the journal is long.
  in_ct journalctl -u "$unit" --no-pager | grep 'Watchdog timeout' >/dev/null ||
    die "no 'Watchdog timeout' in the journal"
  say "ok: watchdog timeout killed $pid, restarted as $new_pid (NRestarts $(show NRestarts))"
  # The restarted daemon kept its state: same clouds.yaml, same image.
  wait_for "cloud charm to authenticate after the restart" 100 charm_authenticated
  expect "latest after the restart" "$image_id" "$(cli latest --base jammy --app-name "$app_name" --arch x64)"
  drop_in_remove watchdog
}

# `systemctl stop`: SIGTERM, the daemon exits 0, the runtime dir goes.
check_stop() {
  in_ct systemctl stop "$unit"
  expect "ActiveState after stop" inactive "$(show ActiveState)"
  expect "Result after stop" success "$(show Result)"
  expect "ExecMainCode (1: exited)" 1 "$(show ExecMainCode)"
  expect "ExecMainStatus" 0 "$(show ExecMainStatus)"
  in_ct test ! -e /run/openstack-image-helper || die "the RuntimeDirectory outlived the stop"
  say "ok: RuntimeDirectory removed"
}

# `systemctl status` shows the daemon's STATUS= line (issue 9, point 4).
check_status() {
  in_ct systemctl start "$unit"
  local text
  text=$(show StatusText)
  [[ $text == *'clouds authenticated'* ]] || die "StatusText: '$text'"
  in_ct systemctl status --no-pager "$unit" | grep -F "Status: \"$text\"" >/dev/null ||
    die "systemctl status does not show the STATUS= line"
  say "ok: STATUS= $text"
}

# `systemctl reload` (SIGHUP) applies a changed clouds.yaml: a second cloud
# appears in /v1/status, without a restart (same MainPID).
check_reload() {
  in_ct systemctl start "$unit"
  local pid
  pid=$(show MainPID)
  in_ct sh -c "sed -n '/^  charm:/,\$p' '$state/clouds.yaml' | sed 's/^  charm:/  charm-again:/' >>'$state/clouds.yaml'"
  in_ct systemctl reload "$unit"
  wait_for "cloud charm-again in /v1/status" 100 status_names charm-again
  expect "MainPID after reload" "$pid" "$(show MainPID)"
}

# `systemctl stop` during an upload leaves no unfinished image: the image ends
# active or deleted, and the daemon exits 0.
check_stop_upload() {
  in_ct systemctl start "$unit"
  local big=$state/images/nspawn-big.img
  in_ct sh -c "head -c 314572800 /dev/urandom >'$big' && chmod 0644 '$big'"
  in_ct sh -c "openstack-image-helper --config '$config' upload --base jammy --app-name '$app_name-big' --arch x64 --num-revisions 1 --src-path '$big' >/dev/null 2>&1 &"
  # Stop only once the image exists in Glance: the upload is under way.
  wait_for "the upload to reach Glance" 150 glance_has_image "jammy-$app_name-big-x64"
  in_ct systemctl stop "$unit"
  expect "ExecMainStatus after a stop during an upload" 0 "$(show ExecMainStatus)"
  local left
  left=$(glance_images "jammy-$app_name-big-x64" | grep -v ':active$' || true)
  [[ -z $left ]] || die "unfinished images after the stop: $left"
  say "ok: no unfinished image after a stop during an upload"
}

# --- Pending checks ------------------------------------------------------------------
# Daemon features being written now: a function pending_NAME runs only when NAME is
# in OSIH_NSPAWN_PENDING (comma-separated); move it into main's list once it lands.
run_pending() {
  [[ -n ${OSIH_NSPAWN_PENDING:-} ]] || return 0
  local name
  for name in ${OSIH_NSPAWN_PENDING//,/ }; do
    declare -F "pending_${name//-/_}" >/dev/null || die "no pending check '$name'"
    phase "pending: $name" "pending_${name//-/_}"
  done
}

# The checks of a charm's own use: src_fd, the example charm, reinstall and upgrade.
# shellcheck source=tests/systemd/nspawn-charm.sh
source "$repo/tests/systemd/nspawn-charm.sh"

# --- main ------------------------------------------------------------------------
main() {
  [[ $(id -u) == 0 ]] || die "run as root (debootstrap, mounts, systemd-nspawn)"
  [[ -x $binary ]] || die "no binary at $binary (cargo build)"
  # Everything below runs in a private mount namespace.
  if [[ ${OSIH_NSPAWN_UNSHARED:-} != 1 ]]; then
    phase "host packages" ensure_host_debs
    OSIH_NSPAWN_TIMINGS=$(IFS='|'; echo "${timings[*]}") OSIH_NSPAWN_UNSHARED=1 exec unshare --mount --propagation private -- "$0" "$@"
  fi
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  phase "bed" check_bed
  phase "Debian tree" ensure_rootfs
  phase "ops[testing] for the tree" ensure_charm_python
  phase "boot" boot_container
  phase "install" install_daemon
  phase "start (READY=1 gates active)" check_ready_gates_active
  phase "sandbox" check_sandbox
  phase "PUT /v1/clouds" check_put_clouds
  phase "upload and latest" check_upload_and_latest
  phase "src_fd: root's 0600 file" check_src_fd
  phase "watchdog" check_watchdog
  phase "stop" check_stop
  phase "STATUS= in systemctl status" check_status
  phase "reload" check_reload
  phase "stop during an upload" check_stop_upload
  phase "charm: install event" check_charm_install
  phase "charm: upload action" check_charm_upload
  phase "reinstall, upgrade: no prompt" check_no_prompt
  phase "control: conffile prompt" check_conffile_prompt_is_caught
  run_pending
  phase "power off" shutdown_container
}

main "$@"
