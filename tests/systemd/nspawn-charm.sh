# shellcheck shell=bash
# Sourced by nspawn-test.sh: the checks of a charm's own use of the package, in the
# booted container, against the real DynamicUser unit and the bed (issue 17):
#   - src_fd: root's 0600 file outside every upload dir, uploaded by the CLI and by
#     the charm library (each hands the daemon the open file over the unix socket);
#     the same file by path is refused (path_not_allowed);
#   - the example charm's install event and upload action (charm/example/src/charm.py,
#     driven by ops[testing] with tests/systemd/nspawn_charm.py): real apt-get of the
#     .deb resource, real systemd, the config the charm writes, the image in Glance;
#   - apt-get install --reinstall, and an upgrade to a higher version whose packaged
#     config.yaml changed, never prompt and leave the charm's config.d drop-in as it
#     was; the restarted daemon keeps the charm's settings and clouds.
# Uses nspawn-test.sh's helpers (in_ct, cli, api, glance, expect, wait_for, ...) and
# globals (rootfs, cache, ctroot, scratch, unit, socket, app_name):
# shellcheck disable=SC2154

charm_python_reqs=tests/systemd/charm-requirements.txt
charm_drop_in=/etc/openstack-image-helper/config.d/50-charm.yaml
charm_port=
charm_python_site=

# --- what the container needs: ops[testing], the charm, its clouds ------------------
# ops[testing] for the tree's python3, from PyPI with the host's pip (the container
# has no network but the host's loopback), cached under target/ by Python version.
ensure_charm_python() {
  local version site
  version=$(readlink "$rootfs/usr/bin/python3")
  version=${version#python}
  site=$cache/python-$version
  charm_python_site=$site
  cmp -s "$charm_python_reqs" "$site.stamp" && return 0
  say "pip: $charm_python_reqs for Python $version into $site"
  rm -rf "$site" "$site.stamp"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$site" \
    --only-binary=:all: --implementation cp --python-version "$version" \
    --platform "manylinux2014_$(uname -m)" -r "$charm_python_reqs" >/dev/null
  cp "$charm_python_reqs" "$site.stamp"
}

# Into the booted container: ops[testing], the charm as charmcraft packs it (its lib/
# vendored: the repository's is a symlink), the driver, the secret's clouds.yaml.
stage_charm() {
  cp -a "$charm_python_site" "$ctroot/root/pysite"
  cp -rL charm/example "$ctroot/root/charm"
  rm -rf "$ctroot/root/charm/tests"
  install -m 0644 tests/systemd/nspawn_charm.py "$ctroot/root/nspawn_charm.py"
  clouds_doc | in_ct sh -c 'umask 077 && cat >/root/clouds.yaml'
  say "ok: ops $(in_ct env PYTHONPATH=/root/pysite python3 -c 'import ops; print(ops.__version__)') in the container"
}

# A free TCP port of the loopback the container shares with the host.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# nspawn_charm EVENT ARGS...: the example charm's EVENT, as root in the container, with
# no terminal (stdin from /dev/null; DEBIAN_FRONTEND unset: in_ct clears the environment).
nspawn_charm() {
  in_ct env PYTHONPATH=/root/pysite python3 /root/nspawn_charm.py "$1" --deb /root/osih.deb \
    --clouds /root/clouds.yaml --port "$charm_port" --app-name "$app_name-charm" "${@:2}" </dev/null
}

# A file of SIZE random bytes at PATH in the container, with MODE.
ct_random_file() { in_ct sh -c "head -c $2 /dev/urandom >'$1' && chmod $3 '$1'"; }

# expect_in_glance WHAT ID FILE: the image ID is active in Glance, with FILE's md5.
expect_in_glance() {
  local image
  image=$(glance "$GLANCE_URL/v2/images/$2")
  expect "$1: Glance status" active "$(json_field status <<<"$image")"
  expect "$1: Glance checksum (md5 of $3)" "$(in_ct md5sum "$3" | cut -d' ' -f1)" "$(json_field checksum <<<"$image")"
}

# --- 1. src_fd: a file the DynamicUser cannot open ------------------------------------
root_file=/root/nspawn-fd.img

check_src_fd() {
  ct_random_file "$root_file" 4194304 0600
  expect "$root_file owner and mode" "root 600" "$(in_ct stat -c '%U %a' "$root_file")"
  local uid
  uid=$(in_ct stat -c %u "/proc/$(show MainPID)")
  ! in_ct setpriv --reuid "$uid" --regid "$uid" --clear-groups head -c 1 "$root_file" >/dev/null 2>&1 ||
    die "the daemon's uid $uid can read $root_file: this check proves nothing"
  say "ok: the daemon's uid $uid cannot open $root_file"
  # By path: the allow-list decides first.
  local answer
  answer=$(api POST /v1/images -H 'Content-Type: application/json' -w ' %{http_code}' \
    --data "{\"base\":\"jammy\",\"app_name\":\"$app_name-path\",\"arch\":\"x64\",\"num_revisions\":1,\"src_path\":\"$root_file\"}")
  [[ $answer == *'"path_not_allowed"'*' 403' ]] || die "a path upload of $root_file: $answer"
  say "ok: by path: 403 path_not_allowed"
  # The CLI opens the file itself (root) and passes it.
  local id
  id=$(cli upload --base jammy --app-name "$app_name-fd" --arch x64 --num-revisions 1 --src-path "$root_file")
  expect_in_glance "CLI upload of $root_file" "$id" "$root_file"
  # The charm library, as installed by the package, does the same on the unix socket.
  # shellcheck disable=SC2016 # python, not shell
  id=$(in_ct env PYTHONPATH=/usr/share/openstack-image-helper/charm/lib \
    OPENSTACK_IMAGE_HELPER_URL="unix:$socket" python3 -c '
import sys
from charms.openstack_image_helper.v0.openstack_manager import OpenstackManager, UploadImageConfig
config = UploadImageConfig(arch="x64", app_name=sys.argv[1], base="jammy", num_revisions=1, src_path=sys.argv[2])
print(OpenstackManager(None).upload(config).id)' "$app_name-lib" "$root_file")
  expect_in_glance "library upload of $root_file" "$id" "$root_file"
}

# --- 3. the example charm: install, then the upload action ---------------------------
# From a machine without the package: the charm's install event installs the .deb
# resource, writes its drop-in, starts the unit and sends the secret's clouds.yaml.
check_charm_install() {
  [[ -n $(package_deb) ]] || die "the charm installs the package: build it first (DEB_PROFILE=dev make deb)"
  in_ct systemctl disable --now "$unit" >/dev/null 2>&1
  in_ct apt-get purge -y openstack-image-helper </dev/null >/dev/null
  local path
  for path in /usr/bin/openstack-image-helper /var/lib/openstack-image-helper \
    /var/lib/private/openstack-image-helper /etc/openstack-image-helper/config.d; do
    in_ct test ! -e "$path" || die "the purge left $path"
  done
  stage_charm
  install -m 0644 "$(package_deb)" "$ctroot/root/osih.deb"
  charm_port=$(free_port)
  local out
  out=$(nspawn_charm install) || die "the charm's install event failed"
  expect "unit status after install" "active: uploading to charm" "$(json_field status <<<"$out")"
  # shellcheck disable=SC2016 # dpkg-query's format
  expect "package installed by the charm" "install ok installed" \
    "$(in_ct dpkg-query -W -f '${Status}' openstack-image-helper)"
  expect "ActiveState after the charm's install" active "$(show ActiveState)"
  expect "UnitFileState" enabled "$(show UnitFileState)"
  in_ct grep -Fx "listen: \"127.0.0.1:$charm_port\"" "$charm_drop_in" >/dev/null ||
    die "$charm_drop_in has not the charm's listen: $(in_ct cat "$charm_drop_in")"
  expect "/v1/health on the charm's port" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$charm_port/v1/health")"
  wait_for "cloud charm to authenticate (the charm's daemon)" 100 charm_authenticated
}

charm_image=
charm_image_id=

# The upload action, with a file the charm placed in its upload dir.
check_charm_upload() {
  charm_image=/var/lib/openstack-image-helper/images/nspawn-charm.img
  ct_random_file "$charm_image" 4194304 0644
  local out results
  out=$(nspawn_charm upload --path "$charm_image") || die "the charm's upload action failed"
  results=$(python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["results"]))' <<<"$out")
  charm_image_id=$(json_field id <<<"$results")
  [[ -n $charm_image_id ]] || die "the upload action returned no id: $out"
  say "ok: upload action results: $results"
  expect "action result: name" "jammy-$app_name-charm-x64" "$(json_field name <<<"$results")"
  expect_in_glance "the upload action's image" "$charm_image_id" "$charm_image"
  expect "action result: checksum" "$(in_ct md5sum "$charm_image" | cut -d' ' -f1)" "$(json_field checksum <<<"$results")"
  python3 -c 'import json, sys; [e] = json.load(sys.stdin)["published"]; assert e["image_id"] == sys.argv[1], e' \
    "$charm_image_id" <<<"$out" || die "the image relation does not hold $charm_image_id: $out"
  say "ok: published on the image relation"
}

# --- 2. reinstall and upgrade: no prompt, the charm's config kept --------------------
# The package again, then one of a higher version whose packaged config.yaml changed:
# the charm never wrote config.yaml, so dpkg replaces it silently, and the drop-in is
# no package's file.
check_no_prompt() {
  local before pid
  before=$(in_ct sha256sum "$charm_drop_in")
  pid=$(show MainPID)
  apt_no_prompt install --reinstall -y /root/osih.deb
  expect "$charm_drop_in after the reinstall" "$before" "$(in_ct sha256sum "$charm_drop_in")"
  local version
  version=$(build_upgrade_deb 1)
  apt_no_prompt install -y /root/osih-up.deb
  # shellcheck disable=SC2016 # dpkg-query's format
  expect "version after the upgrade" "$version" "$(in_ct dpkg-query -W -f '${Version}' openstack-image-helper)"
  expect "$charm_drop_in after the upgrade" "$before" "$(in_ct sha256sum "$charm_drop_in")"
  in_ct grep -Fx "$upgrade_mark 1" /etc/openstack-image-helper/config.yaml >/dev/null ||
    die "the upgrade did not replace the packaged config.yaml"
  say "ok: the packaged config.yaml was replaced, with no question"
  expect "ActiveState after the upgrade" active "$(show ActiveState)"
  [[ $(show MainPID) != "$pid" ]] || die "the upgrade did not restart the daemon"
  say "ok: the upgrade restarted the daemon ($pid, now $(show MainPID))"
  wait_for "cloud charm to authenticate after the upgrade" 100 charm_authenticated
  expect "latest after the upgrade (charm's port, charm's clouds)" "$charm_image_id" \
    "$(cli latest --base jammy --app-name "$app_name-charm" --arch x64)"
}

# apt_no_prompt ARGS...: apt-get ARGS in the container with no terminal, failing on
# any error, or on a conffile question (dpkg reads EOF there and fails too).
apt_no_prompt() {
  local out
  out=$(in_ct timeout 120 apt-get "$@" </dev/null 2>&1) || die "apt-get $*: $out"
  ! grep -E "Configuration file '|\(Y/I/N/O/D/Z\)" <<<"$out" >/dev/null || die "apt-get $* asked about a conffile: $out"
  say "ok: apt-get $* (no prompt)"
}

upgrade_mark="# nspawn-test: the upgrade's packaged defaults"

# The control: the way 0.2's charms wrote their settings, into the conffile itself. The
# next upgrade that changes the packaged config.yaml stops at dpkg's question, and
# apt_no_prompt would catch it: with no terminal dpkg reads EOF and fails.
check_conffile_prompt_is_caught() {
  echo "# a 0.2 charm's edit" >>"$ctroot/etc/openstack-image-helper/config.yaml"
  build_upgrade_deb 2 >/dev/null
  local out
  if out=$(in_ct timeout 120 apt-get install -y /root/osih-up.deb </dev/null 2>&1); then
    die "an upgrade over an edited conffile went through with no question: $out"
  fi
  grep -F "Configuration file '/etc/openstack-image-helper/config.yaml'" <<<"$out" >/dev/null ||
    die "the upgrade over an edited conffile failed, but not at the conffile question: $out"
  say "ok: over an edited config.yaml the upgrade stops at dpkg's question (caught: no terminal)"
  # Answered "keep mine": the package is configured again, the daemon back up.
  in_ct dpkg --configure -a --force-confold </dev/null >/dev/null 2>&1
  expect "ActiveState after dpkg --configure --force-confold" active "$(show ActiveState)"
}

# build_upgrade_deb N: the package at version <its version>+nspawnN, its packaged
# config.yaml changed, as /root/osih-up.deb in the container; prints the version.
build_upgrade_deb() {
  local dir=$scratch/deb-up version
  rm -rf "$dir"
  dpkg-deb -R "$(package_deb)" "$dir"
  version=$(sed -n 's/^Version: //p' "$dir/DEBIAN/control")+nspawn$1
  sed -i "s/^Version: .*/Version: $version/" "$dir/DEBIAN/control"
  echo "$upgrade_mark $1" >>"$dir/etc/openstack-image-helper/config.yaml"
  dpkg-deb -Zgzip -z1 --root-owner-group -b "$dir" "$ctroot/root/osih-up.deb" >/dev/null
  rm -rf "$dir"
  echo "$version"
}
