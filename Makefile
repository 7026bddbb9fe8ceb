# The two commands of the README, and a few more.
#   make demo   the daemon against a local real Keystone + Glance: an upload and a latest query
#   make test   every test: unit tests, and the API tests against the real Keystone + Glance

SHELL := /bin/bash
# Short tokens, so that the token-refresh test sees three lifetimes in three minutes.
TEST_TOKEN_LIFETIME ?= 60

.PHONY: demo test unit bed bed-down bench build fmt lint deps openapi systemd-check systemd-test

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

test: deps bed
	cargo test --all-targets

unit:
	cargo test --lib

bench: build
	tests/openstack/up.sh
	benches/compare.sh

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
# start gated by READY=1, upload and latest, the watchdog, a clean stop. As root.
systemd-test: bed
	cargo build
	tests/systemd/nspawn-test.sh
