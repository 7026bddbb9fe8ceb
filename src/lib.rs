//! # openstack-image-helper
//!
//! A long-running daemon that keeps a Juju charm's OpenStack images: it holds a
//! Keystone session per cloud, uploads new revisions streamed from disk and
//! verified by their hashes, prunes old ones only after that, and answers "which
//! image is the latest" with one Glance query. Charm hooks call it over localhost
//! HTTP or through its CLI.
//!
//! # Layout
//!
//! - [`config`]: the daemon's own YAML config: its keys, defaults and checks.
//! - [`runtime`]: what start-up creates and checks on disk (state dir, API token, daemon id).
//! - [`clouds`]: clouds.yaml (and secure.yaml) in openstacksdk's format: the search
//!   path, the per-cloud settings, the auth types.
//! - [`openstack`]: Keystone sessions (token refresh, the login backoff), Glance
//!   calls (direct and import), the cloud registry; it reports its calls to an
//!   `openstack::observe::Observer` the daemon hands in (the metrics).
//! - [`images`]: names (and the name template), upload requests, what a file is
//!   (`images::format`) and its conversion (`images::convert`), the upload as
//!   stages to one or many clouds from one read, retried on transient faults
//!   (`images::upload`), pruning and hiding, the reaper. Knows no HTTP.
//! - [`api`]: the API's wire types (request and answer bodies), shared by the
//!   handlers, the CLI and the OpenAPI document.
//! - [`jobs`]: every upload is a job: recorded on disk, idempotency keys, upload
//!   slots, restart recovery, retention. Knows no HTTP or Glance.
//! - [`http`]: the API v1 router, auth, handlers and the error → status mapping.
//! - [`daemon`]: `serve`: start-up rules, wiring, reload (`SIGHUP`), the stop (`SIGTERM`).
//! - [`cli`]: the subcommands, and the client side of the API.
//! - `exit`: the process's exit codes, read by `cli` and `daemon` alike.
//! - [`systemd`]: readiness, the `STATUS=` line, the watchdog, stopping.
//! - [`shutdown`]: the stop: no new uploads, `shutdown_grace`, aborting the rest.
//! - [`metrics`]: the Prometheus series of `GET /metrics`.
//! - [`telemetry`]: the tracing subscriber.
//! - [`secret`]: the wrapper that keeps passwords and tokens out of logs.
//! - `parser_props` (tests only): property tests of the request, config and clouds.yaml parsers.
//! - `closed_set!`: an enum for a closed set of words, its text written once.

#[macro_use]
mod closed_set;

pub(crate) mod api;
pub mod cli;
pub mod clouds;
pub mod config;
pub mod daemon;
pub(crate) mod exit;
pub(crate) mod heap;
pub(crate) mod http;
pub(crate) mod image_fields;
pub(crate) mod images;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub mod openstack;
#[cfg(test)]
mod parser_props;
pub(crate) mod runtime;
pub mod secret;
pub(crate) mod shutdown;
pub(crate) mod systemd;
pub(crate) mod telemetry;
