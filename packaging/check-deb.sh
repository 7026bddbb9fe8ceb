#!/usr/bin/env bash
# Builds the .deb (`make deb`), checks its metadata and contents, installs it,
# runs the daemon's --version from /usr/bin, and purges it, leaving the machine as
# it was. Refuses to run where the package is already installed (it would remove it).
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=openstack-image-helper
fail() { echo "check-deb: $*" >&2; exit 1; }
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed'; then
  fail "$pkg is installed on this machine already; not touching it"
fi
for path in /etc/$pkg /var/lib/$pkg /usr/bin/$pkg; do
  [[ ! -e $path ]] || fail "$path exists before the install: this check would not leave the machine as it was"
done

version=$(cargo metadata --no-deps --format-version 1 --locked \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
make deb
deb=$(ls -t target/deb/${pkg}_"${version}"-*_*.deb | head -n 1)
echo "check-deb: $deb"

# Metadata.
info=$(dpkg-deb --info "$deb")
field() { dpkg-deb --field "$deb" "$1"; }
[[ $(field Package) == "$pkg" ]] || fail "Package: $(field Package)"
[[ $(field Version) == "$version"-* ]] || fail "Version: $(field Version), Cargo.toml says $version"
[[ $(field Architecture) == "$(dpkg --print-architecture)" ]] || fail "Architecture: $(field Architecture)"
[[ $(field Depends) == *libc6* ]] || fail "Depends lacks libc6: $(field Depends)"
[[ $(field Depends) == *ca-certificates* && $(field Depends) == *procps* ]] || fail "Depends lacks ca-certificates or procps (the daemon needs a CA store; the unit's ExecReload is /bin/kill): $(field Depends)"
for script in postinst postrm; do
  grep -q " $script " <<<"$info" || fail "no $script in the control archive"
done
control=$(mktemp -d)
root=$(mktemp -d)
trap 'rm -rf "$control" "$root"' EXIT
dpkg-deb --control "$deb" "$control"
[[ $(cat "$control/conffiles") == "/etc/$pkg/config.yaml" ]] || fail "conffiles: $(cat "$control/conffiles")"
grep -q 'systemctl --system daemon-reload' "$control/postinst" || fail "postinst does not daemon-reload"
grep -q 'systemctl --system daemon-reload' "$control/postrm" || fail "postrm does not daemon-reload"
# The unit is the charm's to enable and start: cargo-deb re-enables only a unit that
# was enabled before (an upgrade), and starts nothing.
! grep -q 'deb-systemd-invoke start' "$control/postinst" || fail "postinst starts the unit"
if grep -q 'deb-systemd-helper enable' "$control/postinst"; then
  grep -B2 'deb-systemd-helper enable' "$control/postinst" | grep -q was-enabled || fail "postinst enables the unit"
fi

# Contents: paths and modes.
contents=$(dpkg-deb --contents "$deb")
expect() { # mode path
  grep -Eq "^$1 .* \./$2\$" <<<"$contents" || fail "no $2 with mode $1 in the package"
}
expect '-rwxr-xr-x' "usr/bin/$pkg"
expect '-rw-r--r--' "usr/lib/systemd/system/$pkg.service"
expect '-rw-r--r--' "etc/$pkg/config.yaml"
expect '-rw-r--r--' "usr/share/doc/$pkg/README.md"
expect '-rw-r--r--' "usr/share/doc/$pkg/charm-library.md"
expect '-rw-r--r--' "usr/share/doc/$pkg/copyright"
expect '-rw-r--r--' "usr/share/$pkg/charm/lib/charms/openstack_image_helper/v0/openstack_manager.py"
expect '-rw-r--r--' "usr/share/$pkg/charm/lib/charms/openstack_image_helper/v0/image_info.py"
expect '-rw-r--r--' "usr/share/$pkg/charm/lib/charms/openstack_image_helper/v0/testing.py"
expect '-rw-r--r--' "usr/share/$pkg/charm/interfaces/openstack_image/v0/schema.json"
dpkg-deb --extract "$deb" "$root"
grep -qx "ExecStart=/usr/bin/$pkg serve --config /etc/$pkg/config.yaml" "$root/usr/lib/systemd/system/$pkg.service" \
  || fail "the unit does not run /usr/bin/$pkg: $(grep ExecStart "$root/usr/lib/systemd/system/$pkg.service")"
cmp -s "$root/etc/$pkg/config.yaml" config/config.yaml || fail "the packaged config is not config/config.yaml"

# Install, run, purge.
purge() { dpkg --purge "$pkg" >/dev/null 2>&1 || true; }
trap 'purge; rm -rf "$control" "$root"' EXIT
dpkg -i "$deb"
[[ $(dpkg-query -W -f='${Status}' "$pkg") == "install ok installed" ]] || fail "dpkg says: $(dpkg-query -W -f='${Status}' "$pkg")"
dpkg-query -W -f='${Conffiles}\n' "$pkg" | grep -q "/etc/$pkg/config.yaml" || fail "config.yaml is not a conffile once installed"
out=$(/usr/bin/$pkg --version)
[[ $out == "$pkg $version" ]] || fail "--version printed: $out"
echo "check-deb: /usr/bin/$pkg --version: $out"

# The charm's settings in a drop-in: read after config.yaml (a bad value there
# is refused naming the drop-in; a good one is the one in force: the CLI looks
# for the token file it names), and kept, with no conffile prompt (stdin
# closed: a prompt would fail dpkg), by a reinstall.
dropin=/etc/$pkg/config.d/50-charm.yaml
[[ -d /etc/$pkg/config.d ]] || fail "postinst did not make /etc/$pkg/config.d"
printf 'max_concurrent_uploads: 0\n' >"$dropin"
set +e; out=$(/usr/bin/$pkg status 2>&1); rc=$?; set -e
[[ $rc != 0 && $out == *50-charm.yaml*max_concurrent_uploads* ]] || fail "a bad drop-in: exit $rc, $out"
printf 'api_token_file: /nonexistent/check-deb-token\n' >"$dropin"
set +e; out=$(/usr/bin/$pkg status 2>&1); rc=$?; set -e
[[ $rc == 3 && $out == */nonexistent/check-deb-token* ]] || fail "the drop-in is not in force: exit $rc, $out"
cp "$dropin" "$control/dropin.before"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" </dev/null || fail "the reinstall over a charm's drop-in failed (a prompt?)"
cmp -s "$dropin" "$control/dropin.before" || fail "the reinstall changed the charm's drop-in"
cmp -s "/etc/$pkg/config.yaml" config/config.yaml || fail "the reinstall left config.yaml changed"
# An upgrade whose packaged config.yaml changed (the case where dpkg asks about a
# conffile the admin edited): the same package repacked as a later version with
# a line added to config.yaml. The charm never edited the conffile, so the new
# one is installed with no prompt, and the drop-in is kept.
up=$(mktemp -d)
dpkg-deb -R "$deb" "$up/pkg"
sed -i "s/^Version: .*/&+upgrade/" "$up/pkg/DEBIAN/control"
echo "# a later version's reference config" >>"$up/pkg/etc/$pkg/config.yaml"
(cd "$up/pkg" && sed -i "/ etc\/$pkg\/config.yaml\$/d" DEBIAN/md5sums 2>/dev/null || true)
dpkg-deb -b "$up/pkg" "$up/upgrade.deb" >/dev/null
DEBIAN_FRONTEND=noninteractive dpkg -i "$up/upgrade.deb" </dev/null || fail "the upgrade over a charm's drop-in failed (a prompt?)"
cmp -s "$dropin" "$control/dropin.before" || fail "the upgrade changed the charm's drop-in"
cmp -s "/etc/$pkg/config.yaml" "$up/pkg/etc/$pkg/config.yaml" || fail "the upgrade did not install the new config.yaml"
rm -rf "$up"
dpkg --purge "$pkg"
trap 'rm -rf "$control" "$root"' EXIT

# As it was.
! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q installed || fail "still installed after purge"
for path in /etc/$pkg /var/lib/$pkg /usr/bin/$pkg /usr/lib/systemd/system/$pkg.service /usr/share/doc/$pkg /usr/share/$pkg; do
  [[ ! -e $path ]] || fail "$path is left after the purge"
done
left=$(find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
  /var/lib/systemd/deb-systemd-helper-masked -name "$pkg*" 2>/dev/null || true)
[[ -z $left ]] || fail "systemd state left after the purge: $left"
echo "check-deb: ok"
