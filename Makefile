# The two commands of the README, and a few more.
#   make demo   the daemon against a local real Keystone + Glance: an upload and a latest query
#   make test   every test: unit tests, and the API tests against the real Keystone + Glance

SHELL := /bin/bash
# Short tokens, so that the token-refresh test sees three lifetimes in three minutes.
TEST_TOKEN_LIFETIME ?= 60

.PHONY: demo test test-api package-test unit bed bed-down bench bench-versus build fmt lint deps openapi systemd-check systemd-test install deb charmlib-test charmlib-check charmlib-wheel charmlib-wheel-test

# Debian packages the demo and the tests use (qcow2 images are made with qemu-img).
deps:
	@command -v qemu-img >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils; }

build:
	cargo build --release

demo: deps build
	tests/openstack/up.sh
	tests/demo.sh

bed:
	OSIH_TOKEN_LIFETIME=$(TEST_TOKEN_LIFETIME) tests/openstack/up.sh

bed-down:
	tests/openstack/down.sh

# Every test. Everything is built first; then the unit tests; then the API tests, the
# charm library's tests and its wheel's run side by side (each mostly waits on the
# bed's services, so the 2 cores are not the limit), their output kept per part.
# Then the package (build, install, reinstall, upgrade, purge) and the unit under a real
# systemd in systemd-nspawn, which installs that package (both as root).
API_TEST_THREADS ?= 4
test: deps bed
	cargo test --all-targets --no-run
	cargo test --lib --bins --benches
	$(MAKE) -j3 --output-sync=target test-api charmlib-test charmlib-wheel-test
	$(MAKE) package-test systemd-test

# The .deb of the dev-profile binary the tests built: what this checks is the package
# (contents, metadata, maintainer scripts, install, purge); `make deb` is what ships.
package-test:
	DEB_PROFILE=dev packaging/check-deb.sh

# The API tests (tests/api) against the bed.
test-api: $(if $(OSIH_BED_DIR),,bed)
	cargo test --test api -- --test-threads=$(API_TEST_THREADS)

unit:
	cargo test --lib

bench: build
	cargo build --release --bench load
	tests/openstack/up.sh
	benches/compare.sh

# Idle RSS and upload medians against 0.1 (builds 0.1 once into target/bench/v0.1).
bench-versus: build
	tests/openstack/up.sh
	benches/versus-0.1.sh

fmt:
	cargo fmt --all

# Regenerates docs/openapi.json from the code (a unit test fails while they differ).
openapi:
	OSIH_WRITE_OPENAPI=1 cargo test --lib the_checked_in_openapi_document

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# The systemd unit: `systemd-analyze verify` clean and a security exposure of at most 2.0.
systemd-check:
	cargo build
	tests/systemd/check-unit.sh systemd/openstack-image-helper.service target/debug/openstack-image-helper

# The unit under a real systemd 252 (PID 1 in systemd-nspawn) against the test bed:
# start gated by READY=1, upload and latest, the watchdog, a clean stop; src_fd from
# the CLI and the library, the example charm's install and upload for real, and a
# reinstall and an upgrade with no prompt over the charm's config. As root. The charm's
# checks need the package: target/deb/*.deb (CI's check-deb has just built it), else a
# dev one is built here. Against the bed of OSIH_BED_DIR when set (left as it is).
systemd-test: $(if $(OSIH_BED_DIR),,bed)
	cargo build
	@ls target/deb/openstack-image-helper_*.deb >/dev/null 2>&1 || $(MAKE) deb DEB_PROFILE=dev
	tests/systemd/nspawn-test.sh

# --- Install, package, charm library ---------------------------------------------------
#   make install         the binary, the unit, the reference config, the docs and the charm library
#   make deb             target/deb/openstack-image-helper_<version>_<arch>.deb (cargo-deb)
#   make charmlib-check  ruff, mypy --strict and the Python 3.8 check of the charm library
#   make charmlib-test   the charm library's tests against the real daemon and test bed
#   make charmlib-wheel  target/charm-wheel/*.whl: the charm libraries as a Python package
#   make charmlib-wheel-test  the library tests from the installed wheel, oldest and newest Python

# /usr/local: a `make install` is the local administrator's, beside (not over) what the
# .deb puts in /usr. The installed unit's ExecStart is rewritten to $(BINDIR), so the
# unit runs the binary this install put there, whatever PREFIX is. The config lives in
# /etc whatever PREFIX is, as the unit and the CLI expect; an existing one is kept.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/openstack-image-helper
DATADIR ?= $(PREFIX)/share/openstack-image-helper
DEB_PROFILE ?= release
# Every charm library file (the client, the fake, the relation library), installed
# under $(DATADIR)/charm/lib/ as charms vendor them.
CHARMLIBS := $(wildcard charm/lib/charms/openstack_image_helper/v0/*.py)
UNIT := systemd/openstack-image-helper.service
# The unit with ExecStart in bin dir $(1) (the checked-in unit names /usr/bin or
# /usr/local/bin) and its Documentation in doc dir $(2).
unit_for = sed -e 's\#^ExecStart=/usr/\(local/\)\{0,1\}bin/\#ExecStart=$(1)/\#' \
	-e 's\#file:///usr/share/doc/openstack-image-helper/\#file://$(2)/\#' $(UNIT)

install: build
	install -D -m 755 target/release/openstack-image-helper $(DESTDIR)$(BINDIR)/openstack-image-helper
	install -d -m 755 $(DESTDIR)$(UNITDIR)
	$(call unit_for,$(BINDIR),$(DOCDIR)) > $(DESTDIR)$(UNITDIR)/openstack-image-helper.service
	chmod 644 $(DESTDIR)$(UNITDIR)/openstack-image-helper.service
	install -d -m 755 $(DESTDIR)$(SYSCONFDIR)/openstack-image-helper
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/openstack-image-helper/config.yaml ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/openstack-image-helper/config.yaml; the reference is $(DESTDIR)$(DOCDIR)/config.yaml"; \
	else \
		install -m 644 config/config.yaml $(DESTDIR)$(SYSCONFDIR)/openstack-image-helper/config.yaml; \
	fi
	install -D -m 644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -D -m 644 charm/README.md $(DESTDIR)$(DOCDIR)/charm-library.md
	install -D -m 644 config/config.yaml $(DESTDIR)$(DOCDIR)/config.yaml
	for lib in $(CHARMLIBS); do install -D -m 644 $$lib $(DESTDIR)$(DATADIR)/$$lib; done
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# cargo-deb builds the binary itself, with DEB_PROFILE (release: what ships; CI's
# package check passes dev, the binary its tests already built). The package's unit is made here from the
# checked-in one, with ExecStart at /usr/bin (Cargo.toml [package.metadata.deb]).
deb:
	@command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
	mkdir -p target/deb/systemd
	$(call unit_for,/usr/bin,/usr/share/doc/openstack-image-helper) > target/deb/systemd/openstack-image-helper.service
	cargo deb --profile $(DEB_PROFILE) --output target/deb/ -- --locked

CHARM_VENV := target/charm-venv
$(CHARM_VENV)/stamp: charm/requirements-dev.txt
	python3 -m venv $(CHARM_VENV)
	$(CHARM_VENV)/bin/pip install --quiet --disable-pip-version-check -r charm/requirements-dev.txt
	touch $@

charmlib-check: $(CHARM_VENV)/stamp
	cd charm && ../$(CHARM_VENV)/bin/ruff check .
	cd charm && ../$(CHARM_VENV)/bin/ruff format --check .
	cd charm && ../$(CHARM_VENV)/bin/mypy --strict
	cd charm && ../$(CHARM_VENV)/bin/python check_py38.py

# Against the bed of OSIH_BED_DIR when it is set (one running elsewhere: left as it is),
# else this checkout's own (started by `make bed`).
charmlib-test: $(CHARM_VENV)/stamp $(if $(OSIH_BED_DIR),,bed)
	cargo build --bin openstack-image-helper
	cd charm && ../$(CHARM_VENV)/bin/pytest $(PYTEST_ARGS)

# Built without isolation, from requirements-dev.txt's pinned setuptools.
CHARM_WHEEL_DIR := target/charm-wheel
charmlib-wheel: $(CHARM_VENV)/stamp
	rm -rf $(CHARM_WHEEL_DIR) charm/build charm/lib/*.egg-info
	cd charm && ../$(CHARM_VENV)/bin/python -m build --wheel --no-isolation --outdir ../$(CHARM_WHEEL_DIR) .
	rm -rf charm/build charm/lib/*.egg-info

# The tests that exercise the library's code on each Python (the long upload tests of
# test_openstack_manager.py and the COS tools' tests run in charmlib-test).
CHARMLIB_WHEEL_TESTS ?= tests/test_packaging.py tests/test_fake.py tests/test_image_info.py \
	tests/test_upload_identity.py tests/test_compat.py tests/test_cloud_order.py tests/test_typed_api.py
charmlib-wheel-test: charmlib-wheel $(if $(OSIH_BED_DIR),,bed)
	cargo build --bin openstack-image-helper
	cd charm && ../$(CHARM_VENV)/bin/python wheel_test.py -ra $(CHARMLIB_WHEEL_TESTS)
