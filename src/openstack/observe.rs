//! What the client reports of its calls: every request it sent (with its
//! answer's status and latency) and every token request (with its outcome).
//! The daemon hands in the sink (its metrics) at start-up, so that this module
//! knows nothing above it; with none installed (unit tests), nothing is reported.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use super::{OpenStackError, Service};

/// The sink of what the client did.
pub(crate) trait Observer: Send + Sync {
    /// A request to `service` (`operation` is `METHOD /path` as sent) was
    /// answered with `status` (`None`: no answer) after `seconds`.
    fn request(&self, service: Service, operation: &str, status: Option<u16>, seconds: f64);
    /// A token request for `cloud` ended, with its error if it failed, after `seconds`.
    fn token(&self, cloud: &str, error: Option<&OpenStackError>, seconds: f64);
}

static OBSERVER: OnceLock<&'static dyn Observer> = OnceLock::new();

/// Installs the sink (once per process: later calls change nothing).
pub(crate) fn install(observer: &'static dyn Observer) {
    let _ = OBSERVER.set(observer);
}

/// Sends a request and reports it.
pub(crate) async fn request<E>(
    service: Service,
    operation: &str,
    send: impl Future<Output = Result<reqwest::Response, E>>,
) -> Result<reqwest::Response, E> {
    let started = Instant::now();
    let result = send.await;
    if let Some(observer) = OBSERVER.get() {
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        observer.request(service, operation, status, started.elapsed().as_secs_f64());
    }
    result
}

/// Requests a token and reports it.
pub(crate) async fn token<T>(
    cloud: &str,
    issue: impl Future<Output = Result<T, OpenStackError>>,
) -> Result<T, OpenStackError> {
    let started = Instant::now();
    let result = issue.await;
    if let Some(observer) = OBSERVER.get() {
        let seconds = started.elapsed().as_secs_f64();
        observer.token(cloud, result.as_ref().err(), seconds);
    }
    result
}
