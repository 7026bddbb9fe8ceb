//! A thin client for the two OpenStack services the daemon talks to.
//!
//! - [`keystone`]: issues tokens and reads the service catalog.
//! - [`session`]: one authenticated session per cloud, refreshed in the background.
//! - [`glance`]: the image API calls the daemon needs, through a session.
//!
//! Why not an OpenStack SDK crate: the ones measured here either cap every call with
//! a 30 s total timeout (fatal for multi-GiB uploads), keep a token cache in the
//! user's home, or pull in a second HTTP stack. What we need is a dozen calls.

pub(crate) mod glance;
pub(crate) mod glance_import;
pub(crate) mod keystone;
pub(crate) mod login_backoff;
pub(crate) mod observe;
pub(crate) mod registry;
pub mod session;

use std::time::Duration;

use crate::clouds::{CloudConfig, TlsSettings};

/// Which OpenStack service an error came from, for messages an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Keystone,
    Glance,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Keystone => "Keystone",
            Service::Glance => "Glance",
        })
    }
}

/// Why a cloud's credentials are refused (`openstack_unauthorized`).
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Keystone answered 401 to `POST /v3/auth/tokens` (404 for a deleted
    /// application credential).
    Rejected { message: String },
    /// The token is scoped to a domain or the system, or not at all: there is no
    /// project to filter images on (another project's images could be listed,
    /// and pruned).
    NotProjectScoped {
        /// "a domain-scoped (domain 'Default')", "a system-scoped", "an unscoped".
        scope: String,
    },
}

impl Refusal {
    /// The refusal in words; `status` is Keystone's answer to the token request.
    fn describe(&self, status: u16) -> String {
        match self {
            Refusal::Rejected { message } => {
                format!("Keystone rejected the credentials ({status}): {message}")
            }
            Refusal::NotProjectScoped { scope } => format!(
                "Keystone issued {scope} token, which is not project-scoped: the daemon \
                 filters every image query on the token's project, so the cloud needs \
                 project_name or project_id (or an application credential)"
            ),
        }
    }
}

/// Everything that can go wrong talking to OpenStack. Every variant names the cloud;
/// none carries a secret (URLs never hold one, bodies are OpenStack's own messages).
/// Clone: a failed login is answered again, as it was, during its backoff.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenStackError {
    /// Keystone refused the credentials, or gave a token the daemon must not use.
    #[error("cloud '{cloud}': {}", .reason.describe(*.status))]
    Unauthorized {
        cloud: String,
        /// Keystone's status for the token request (201 when the token was
        /// issued but is refused here).
        status: u16,
        reason: Refusal,
    },
    /// The service could not be reached at all (refused, DNS, TLS, timeout).
    #[error("cloud '{cloud}': cannot reach {service} at {url}: {cause}")]
    Connection {
        cloud: String,
        service: Service,
        url: String,
        cause: String,
    },
    /// The connection broke after the request started (cut mid-upload, say).
    #[error("cloud '{cloud}': {service} connection broke during {operation}: {cause}")]
    Interrupted {
        cloud: String,
        service: Service,
        operation: String,
        cause: String,
    },
    /// The service answered with an error status.
    #[error("cloud '{cloud}': {service} answered {status} to {operation}: {message}")]
    Api {
        cloud: String,
        service: Service,
        operation: String,
        status: u16,
        message: String,
    },
    /// The service answered 2xx with something we cannot read.
    #[error("cloud '{cloud}': unexpected answer from {service} to {operation}: {detail}")]
    InvalidResponse {
        cloud: String,
        service: Service,
        operation: String,
        detail: String,
    },
    /// The catalog has no image endpoint for this cloud's region and interface.
    #[error("cloud '{cloud}': {detail}")]
    NoEndpoint { cloud: String, detail: String },
    /// The TLS settings of the cloud (cacert, cert, key) cannot be used.
    #[error("cloud '{cloud}': TLS settings: {detail}")]
    Tls { cloud: String, detail: String },
    /// No valid token, and getting one failed for a reason other than bad credentials.
    #[error("cloud '{cloud}': no valid Keystone session yet: {reason}")]
    NotReady { cloud: String, reason: String },
}

impl OpenStackError {
    /// A fault that may pass on a fresh try: the service answered 500, 502, 503
    /// or 504 (a restart behind a load balancer, sqlite's "database is
    /// locked"), or the connection was refused, reset or timed out before it
    /// answered. Never a 4xx (a refusal, by policy or quota, stays one).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            OpenStackError::Api { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            OpenStackError::Connection { .. } | OpenStackError::Interrupted { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn connection(
        cloud: &str,
        service: Service,
        url: &str,
        err: &reqwest::Error,
    ) -> Self {
        OpenStackError::Connection {
            cloud: cloud.to_string(),
            service,
            url: url.to_string(),
            cause: error_chain(err),
        }
    }
}

/// A 3xx answer as an error: redirects are never followed (they would carry the
/// token or the password to wherever they point). Names the `Location`, without
/// any user or password it may hold.
pub(crate) fn redirect_error(
    cloud: &str,
    service: Service,
    operation: &str,
    response: &reqwest::Response,
) -> OpenStackError {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| match response.url().join(l) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            Err(_) => l.to_string(),
        });
    OpenStackError::Api {
        cloud: cloud.to_string(),
        service,
        operation: operation.to_string(),
        status: response.status().as_u16(),
        message: match location {
            Some(location) => format!(
                "a redirect to {location}, not followed (it would carry the credentials there)"
            ),
            None => "a redirect without a Location, not followed".to_string(),
        },
    }
}

/// A reqwest error with its sources, because reqwest's own `Display` stops at
/// "error sending request" and hides the useful part (connection refused, TLS...).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// OpenStack's error text from a response body: Keystone's and Glance's JSON
/// `{"error": {"message"}}`, or Glance's HTML pages reduced to their words.
pub(crate) fn error_message_from_body(body: &str) -> String {
    const MAX: usize = 500;
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        let found = value
            .pointer("/error/message")
            .or_else(|| value.get("message"))
            .or_else(|| value.pointer("/badRequest/message"))
            .and_then(|m| m.as_str());
        if let Some(message) = found {
            return words_of(message, MAX);
        }
    }
    words_of(body, MAX)
}

/// Text with HTML tags removed and white space folded (Glance puts `<br />` even
/// in its JSON messages).
fn words_of(body: &str, max: usize) -> String {
    let mut text = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    // Glance's pages repeat the title ("413 Request Entity Too Large") as a heading.
    let mut joined = words.join(" ");
    if let Some(rest) = dedupe_heading(&joined) {
        joined = rest;
    }
    if joined.is_empty() {
        "(empty body)".to_string()
    } else {
        truncate(&joined, max)
    }
}

fn dedupe_heading(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split(' ').collect();
    for n in (1..=words.len() / 2).rev() {
        if words[..n] == words[n..2 * n] {
            return Some(words[n..].join(" "));
        }
    }
    None
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// How long an ordinary API call (not an upload) may take in all.
pub(crate) const API_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long establishing a connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The two HTTP clients of a cloud: one for API calls with a total timeout, one for
/// uploads with none (reqwest#2784: a read timeout aborted an upload that was still
/// progressing), whose stall is watched by the upload itself. Neither follows
/// redirects (see [`redirect_error`]).
#[derive(Clone, Debug)]
pub(crate) struct HttpClients {
    /// For API calls: bounded by [`API_CALL_TIMEOUT`].
    pub(crate) api: reqwest::Client,
    /// For image data: no total timeout; the caller enforces a stall timeout.
    pub(crate) upload: reqwest::Client,
    /// Set when the cloud would verify servers with the system's CA certificates
    /// and none could be loaded (no `ca-certificates` under a hardened unit): the
    /// clients then trust nothing, plain http:// still works, and an https:// URL
    /// is refused with this cause.
    no_system_roots: Option<String>,
}

/// The clients of every cloud with the default TLS settings (the system's CA
/// store, verification on, no client certificate): one pair for the process.
/// Each client holds its own copy of the system's CA store, read when it is
/// built (about 140 KB, 145 certificates): with a pair per cloud, ten clouds
/// held twenty. Nothing in a client is the cloud's; the connection pool is per
/// host. The system's store is therefore read once per process.
static DEFAULT_TLS_CLIENTS: std::sync::Mutex<Option<HttpClients>> = std::sync::Mutex::new(None);

impl HttpClients {
    /// The clients for `cloud`'s TLS settings: the process's shared pair for the
    /// default settings, a pair of its own otherwise.
    pub(crate) fn for_cloud(cloud: &CloudConfig) -> Result<Self, OpenStackError> {
        if cloud.tls != crate::clouds::TlsSettings::default() {
            return Self::for_settings(cloud);
        }
        let mut shared = DEFAULT_TLS_CLIENTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(clients) = shared.as_ref() {
            return Ok(clients.clone());
        }
        let clients = Self::for_settings(cloud)?;
        *shared = Some(clients.clone());
        Ok(clients)
    }

    fn for_settings(cloud: &CloudConfig) -> Result<Self, OpenStackError> {
        match Self::build(cloud, Roots::System) {
            Ok(clients) => Ok(clients),
            // The same settings without the system's roots work: what failed is
            // loading those roots. Only an https:// connection needs them.
            Err(err) if cloud.tls.cacert.is_none() && cloud.tls.verify => {
                let cause = match &err {
                    OpenStackError::Tls { detail, .. } => detail.clone(),
                    other => other.to_string(),
                };
                let mut clients = Self::build(cloud, Roots::None).map_err(|_| err)?;
                tracing::warn!(
                    cloud = %cloud.name, %cause,
                    "no CA certificates were found on this system: only http:// URLs will work for this cloud"
                );
                clients.no_system_roots = Some(cause);
                Ok(clients)
            }
            Err(err) => Err(err),
        }
    }

    fn build(cloud: &CloudConfig, roots: Roots) -> Result<Self, OpenStackError> {
        let api = builder(&cloud.name, &cloud.tls, roots)?
            .timeout(API_CALL_TIMEOUT)
            .build()
            .map_err(|e| tls_error(&cloud.name, &e))?;
        let upload = builder(&cloud.name, &cloud.tls, roots)?
            .build()
            .map_err(|e| tls_error(&cloud.name, &e))?;
        Ok(HttpClients {
            api,
            upload,
            no_system_roots: None,
        })
    }

    /// Refuses an https:// URL when there are no CA certificates to verify it with.
    pub(crate) fn check_url(&self, cloud: &str, url: &url::Url) -> Result<(), OpenStackError> {
        match &self.no_system_roots {
            Some(cause) if url.scheme() == "https" => Err(OpenStackError::Tls {
                cloud: cloud.to_string(),
                detail: format!(
                    "cannot verify {url}: no CA certificates were found on this system \
                     ({cause}); install ca-certificates, point SSL_CERT_FILE at a bundle, \
                     or set `cacert` for this cloud"
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// Which CA certificates verify servers when the cloud gives no `cacert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roots {
    /// The system's (rustls-platform-verifier; honours SSL_CERT_FILE/SSL_CERT_DIR).
    System,
    /// None: every https:// server is refused (there are none to be found).
    None,
}

fn tls_error(cloud: &str, err: &reqwest::Error) -> OpenStackError {
    OpenStackError::Tls {
        cloud: cloud.to_string(),
        detail: error_chain(err),
    }
}

/// An idle pooled connection is dropped after this: below the keep-alive
/// timeouts servers use (Apache's default is 5 s), so that a request is not
/// sent on a connection the server is closing. One that still is (a shorter
/// server timeout) is retried on a fresh connection.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

fn builder(
    cloud: &str,
    tls: &TlsSettings,
    roots: Roots,
) -> Result<reqwest::ClientBuilder, OpenStackError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| OpenStackError::Tls {
            cloud: cloud.to_string(),
            detail: format!("cannot read {}: {e}", path.display()),
        })
    };
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!(
            "openstack-image-helper/",
            env!("CARGO_PKG_VERSION")
        ))
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(cacert) = &tls.cacert {
        let certs = reqwest::Certificate::from_pem_bundle(&read(cacert)?)
            .map_err(|e| tls_error(cloud, &e))?;
        // openstacksdk (requests' `verify=<bundle>`) trusts only the given bundle.
        builder = builder.tls_certs_only(certs);
    } else if roots == Roots::None {
        builder = builder.tls_certs_only(Vec::new());
    }
    if !tls.verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), key) => {
            let mut pem = read(cert)?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(read(key)?);
            }
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| tls_error(cloud, &e))?;
            builder = builder.identity(identity);
        }
        (None, Some(_)) => {
            return Err(OpenStackError::Tls {
                cloud: cloud.to_string(),
                detail: "`key` is set without `cert`".to_string(),
            })
        }
        (None, None) => {}
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystone_json_error_gives_its_message() {
        let body = r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#;
        assert_eq!(
            error_message_from_body(body),
            "The request you have made requires authentication."
        );
    }

    #[test]
    fn glance_html_error_is_reduced_to_its_words() {
        let body = "<html>\n <head>\n  <title>413 Request Entity Too Large</title>\n </head>\n <body>\n  <h1>413 Request Entity Too Large</h1>\n  Image exceeds the storage quota: 10 bytes<br /><br />\n\n\n\n </body>\n</html>";
        assert_eq!(
            error_message_from_body(body),
            "413 Request Entity Too Large Image exceeds the storage quota: 10 bytes"
        );
    }

    #[test]
    fn glance_json_error_loses_its_html() {
        let body = r#"{"message": "The incoming image is too large: The provided image is too large.<br /><br />\n\n\n", "code": "413 Request Entity Too Large", "title": "Request Entity Too Large"}"#;
        assert_eq!(
            error_message_from_body(body),
            "The incoming image is too large: The provided image is too large."
        );
    }

    #[test]
    fn long_bodies_are_truncated() {
        let body = "x".repeat(2000);
        assert!(error_message_from_body(&body).chars().count() <= 501);
    }
}
