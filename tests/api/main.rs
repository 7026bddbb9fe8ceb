//! Black-box tests: daemons spawned in-process on port 0, driven over HTTP (and the
//! CLI binary), against the real Keystone and Glance of `tests/openstack/up.sh`.
//! One test binary with a module per feature, so it links once.

mod activation;
mod admission;
mod chaos;
mod cli;
mod clouds_put;
mod convert;
mod credentials;
mod fanout;
mod fault_proxy;
mod faults;
mod file_changes;
mod formats;
mod foundation;
mod helpers;
mod images;
mod jobs;
mod kept;
mod keystone_faults;
mod latest_burst;
mod metrics;
mod notify;
mod openapi;
mod reload;
mod retries;
mod served;
mod shutdown;
mod src_path;
mod tls;
mod tokens;
mod units;
