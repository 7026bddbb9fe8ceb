# shellcheck shell=bash
# Sourced by tests/demo.sh and benches/compare.sh: run the release daemon against
# the local test bed, in a work dir of its own. Not executed.
#
#   start_daemon WORK PORT [CLOUDS_YAML]
#                            writes WORK/config.yaml (clouds: CLOUDS_YAML, else the bed's; default
#                            cloud: charm; uploads from WORK/images), starts the
#                            daemon (log: WORK/daemon.log), stops it on exit, and
#                            waits until cloud charm is authenticated.
#   cli ARGS...              the CLI with that config.
#   charm_glance_token       a fresh Keystone token of the bed's user charm (charm-project),
#                            to call Glance straight, as the benchmarks' baselines do.

osih_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
osih_bed=${OSIH_BED_DIR:-$osih_repo/target/openstack-bed}
osih_bin=$osih_repo/target/release/openstack-image-helper

start_daemon() {
  local work=$1 port=$2 clouds=${3:-$osih_bed/clouds.yaml}
  [[ -x $osih_bin ]] || cargo build --release --manifest-path "$osih_repo/Cargo.toml"
  [[ -s $osih_bed/clouds.yaml ]] || { echo "no test bed: run tests/openstack/up.sh" >&2; exit 1; }
  mkdir -p "$work/images"
  cat >"$work/config.yaml" <<YAML
listen: 127.0.0.1:$port
clouds_yaml: $clouds
default_cloud: charm
state_dir: $work/state
api_token_file: $work/state/api-token
upload_dirs: [$work/images]
YAML
  osih_config=$work/config.yaml
  "$osih_bin" serve --config "$osih_config" >"$work/daemon.log" 2>&1 &
  osih_daemon=$!
  trap 'kill $osih_daemon 2>/dev/null; wait $osih_daemon 2>/dev/null || true' EXIT
  local _
  for _ in $(seq 150); do cli status 2>/dev/null | grep -q '^charm: authenticated' && return 0; sleep 0.2; done
  echo "the daemon did not authenticate to cloud charm (log: $work/daemon.log)" >&2
  exit 1
}

cli() { "$osih_bin" --config "$osih_config" "$@"; }

charm_glance_token() {
  local password keystone
  password=$(sed -n 's/^CHARM_PASSWORD=//p' "$osih_bed/secrets.env")
  keystone=$(sed -n 's/^export KEYSTONE_URL=//p' "$osih_bed/env")
  curl -si -H 'Content-Type: application/json' \
    -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"charm\",\"domain\":{\"name\":\"Default\"},\"password\":\"$password\"}}},\"scope\":{\"project\":{\"name\":\"charm-project\",\"domain\":{\"name\":\"Default\"}}}}}" \
    "$keystone/auth/tokens" | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p' | tr -d '\r'
}
