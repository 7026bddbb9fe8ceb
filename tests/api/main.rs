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
mod fd_upload;
mod file_changes;
mod formats;
mod foundation;
mod helpers;
mod images;
mod import;
mod jobs;
mod kept;
mod keystone_faults;
mod latest_burst;
mod metrics;
mod notify;
mod openapi;
mod quota;
mod reload;
mod retire;
mod retries;
mod served;
mod shutdown;
mod src_path;
mod stores;
mod tls;
mod tokens;
mod units;
