//! Keystone v3: issue a token (`POST /v3/auth/tokens`) and read the catalog.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use url::Url;

use super::{error_message_from_body, redirect_error, OpenStackError, Refusal, Service};
use crate::clouds::{AppCredential, Auth, CloudConfig, DomainRef, ProjectRef, Scope, UserRef};
use crate::secret::Secret;

/// A Keystone token and what came with it.
#[derive(Clone, Debug)]
pub struct Token {
    /// The `X-Subject-Token` value; sent as `X-Auth-Token`.
    pub value: Secret,
    /// When Keystone says the token expires (its clock), for `/v1/status`.
    pub(crate) expires_at: DateTime<Utc>,
    /// When the token stops being valid by *our* monotonic clock: the moment we
    /// sent the request plus the lifetime Keystone gave (`expires_at - issued_at`).
    /// Anchoring to our own clock makes refresh immune to clock skew between
    /// this host and Keystone, and lets tests drive time with `tokio::time::pause`.
    pub(crate) valid_until: Instant,
    /// The token's whole lifetime as Keystone issued it.
    pub(crate) lifetime: std::time::Duration,
    /// What the token is scoped to; only a project scope is used (its id is the
    /// owner every image query filters on).
    pub(crate) scope: TokenScope,
    /// The image service's endpoints from the catalog.
    pub(crate) catalog: Vec<CatalogService>,
}

/// One service of the catalog.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct CatalogService {
    /// The service type, e.g. `image`.
    #[serde(rename = "type")]
    pub(crate) service_type: String,
    /// Its endpoints, one per interface and region.
    #[serde(default)]
    pub(crate) endpoints: Vec<CatalogEndpoint>,
}

/// One endpoint of a catalog service.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct CatalogEndpoint {
    /// `public`, `internal` or `admin`.
    pub(crate) interface: String,
    /// The region id (`region_id`), or the legacy `region` name.
    #[serde(default)]
    pub(crate) region_id: Option<String>,
    /// The legacy region field, still sent by Keystone.
    #[serde(default)]
    pub(crate) region: Option<String>,
    /// The endpoint's base URL.
    pub(crate) url: String,
}

/// What a token is scoped to, as Keystone's answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenScope {
    /// A project, by id: the owner of the cloud's images.
    Project(String),
    /// A domain, by name (or id when the name is missing).
    Domain(String),
    /// The whole system.
    System,
    /// Nothing.
    Unscoped,
}

impl TokenScope {
    /// The project id, or the refusal of a token that has none.
    pub(crate) fn project_id(&self, cloud: &str) -> Result<&str, OpenStackError> {
        let scope = match self {
            TokenScope::Project(id) => return Ok(id),
            TokenScope::Domain(domain) => format!("a domain-scoped (domain '{domain}')"),
            TokenScope::System => "a system-scoped".to_string(),
            TokenScope::Unscoped => "an unscoped".to_string(),
        };
        Err(OpenStackError::Unauthorized {
            cloud: cloud.to_string(),
            // Keystone issued it (201 Created); the daemon refuses it.
            status: 201,
            reason: Refusal::NotProjectScoped { scope },
        })
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenData,
}

#[derive(Deserialize)]
struct TokenData {
    expires_at: DateTime<Utc>,
    issued_at: Option<DateTime<Utc>>,
    #[serde(default)]
    project: Option<NamedId>,
    #[serde(default)]
    domain: Option<NamedId>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
}

#[derive(Deserialize)]
struct NamedId {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

impl TokenData {
    fn scope(&self) -> TokenScope {
        match (&self.project, &self.domain, &self.system) {
            (Some(project), _, _) => TokenScope::Project(project.id.clone()),
            (None, Some(domain), _) => {
                TokenScope::Domain(domain.name.clone().unwrap_or_else(|| domain.id.clone()))
            }
            (None, None, Some(_)) => TokenScope::System,
            (None, None, None) => TokenScope::Unscoped,
        }
    }
}

/// `<auth_url>/auth/tokens`, whether `auth_url` ends in `/v3` or not (both are common
/// in clouds.yaml files).
pub(crate) fn tokens_url(auth_url: &Url) -> Url {
    let mut base = auth_url.as_str().trim_end_matches('/').to_string();
    let has_version = base
        .rsplit('/')
        .next()
        .map(|last| last == "v3" || last.starts_with("v3."))
        .unwrap_or(false);
    if !has_version {
        base.push_str("/v3");
    }
    base.push_str("/auth/tokens");
    Url::parse(&base).unwrap_or_else(|_| auth_url.clone())
}

/// A request that failed after it was sent on a connection, with no answer and
/// no time-out: the server closed the connection (an idle pooled one, mostly).
/// A refused connection or a time-out is not this: the backoff handles those.
pub(crate) fn closed_unanswered(err: &reqwest::Error) -> bool {
    err.is_request() && !err.is_connect() && !err.is_timeout()
}

/// Authenticates once. The caller decides when (see [`super::session`]).
pub(crate) async fn issue_token(
    client: &reqwest::Client,
    cloud: &CloudConfig,
) -> Result<Token, OpenStackError> {
    let url = tokens_url(cloud.auth.auth_url());
    let body = auth_request_body(&cloud.auth);
    let sent_at = Instant::now();
    let send = || client.post(url.clone()).json(&body).send();
    let response = match send().await {
        // A pooled connection the server closed while it sat idle fails before
        // any answer: once more, on a fresh connection (the pool dropped it).
        Err(err) if closed_unanswered(&err) => {
            tracing::debug!(cloud = %cloud.name, error = %super::error_chain(&err), "token request: connection closed before an answer; once more");
            send().await
        }
        sent => sent,
    }
    .map_err(|e| OpenStackError::connection(&cloud.name, Service::Keystone, url.as_str(), &e))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(redirect_error(
            &cloud.name,
            Service::Keystone,
            "POST /v3/auth/tokens",
            &response,
        ));
    }
    let subject = response
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.map_err(|e| {
        OpenStackError::connection(&cloud.name, Service::Keystone, url.as_str(), &e)
    })?;
    if refuses_credentials(&cloud.auth, status) {
        return Err(OpenStackError::Unauthorized {
            cloud: cloud.name.clone(),
            status: status.as_u16(),
            reason: Refusal::Rejected {
                message: error_message_from_body(&text),
            },
        });
    }
    if !status.is_success() {
        return Err(OpenStackError::Api {
            cloud: cloud.name.clone(),
            service: Service::Keystone,
            operation: "POST /v3/auth/tokens".to_string(),
            status: status.as_u16(),
            message: error_message_from_body(&text),
        });
    }
    let invalid = |detail: String| OpenStackError::InvalidResponse {
        cloud: cloud.name.clone(),
        service: Service::Keystone,
        operation: "POST /v3/auth/tokens".to_string(),
        detail,
    };
    let value = subject.ok_or_else(|| invalid("no X-Subject-Token header".to_string()))?;
    let parsed: TokenBody =
        serde_json::from_str(&text).map_err(|e| invalid(format!("token body: {e}")))?;
    let issued_at = parsed.token.issued_at.unwrap_or_else(Utc::now);
    let lifetime = (parsed.token.expires_at - issued_at)
        .to_std()
        .map_err(|_| invalid("token expires before it was issued".to_string()))?;
    let scope = parsed.token.scope();
    Ok(Token {
        value: Secret::new(value),
        expires_at: parsed.token.expires_at,
        valid_until: sent_at + lifetime,
        lifetime,
        scope,
        catalog: parsed
            .token
            .catalog
            .into_iter()
            .filter(|s| s.service_type == "image")
            .collect(),
    })
}

/// Whether Keystone's answer to the token request says the credentials are bad:
/// a 401, or for an application credential a 404 (Keystone's answer when it was
/// deleted: "Could not find Application Credential").
fn refuses_credentials(auth: &Auth, status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::UNAUTHORIZED
        || (status == reqwest::StatusCode::NOT_FOUND
            && matches!(auth, Auth::ApplicationCredential { .. }))
}

/// The image endpoint for this cloud: the override, else the catalog's `image`
/// endpoint for the cloud's interface and region. The version suffix (`/v2`) is
/// removed so that callers always append `/v2/...`.
pub(crate) fn image_endpoint(cloud: &CloudConfig, token: &Token) -> Result<Url, OpenStackError> {
    if let Some(url) = &cloud.image_endpoint_override {
        return Ok(strip_version(url));
    }
    let interface = cloud.interface.as_str();
    let region = cloud.region_name.as_deref();
    let found = token
        .catalog
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .find(|e| {
            e.interface == interface
                && region.is_none_or(|r| {
                    e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r)
                })
        });
    let endpoint = found.ok_or_else(|| OpenStackError::NoEndpoint {
        cloud: cloud.name.clone(),
        detail: format!(
            "the catalog has no image endpoint for interface '{interface}'{}",
            region
                .map(|r| format!(" in region '{r}'"))
                .unwrap_or_default()
        ),
    })?;
    let url = Url::parse(&endpoint.url).map_err(|e| OpenStackError::NoEndpoint {
        cloud: cloud.name.clone(),
        detail: format!(
            "the catalog's image endpoint '{}' is not a URL: {e}",
            endpoint.url
        ),
    })?;
    Ok(strip_version(&url))
}

fn strip_version(url: &Url) -> Url {
    let mut url = url.clone();
    let path = url.path().trim_end_matches('/').to_string();
    let trimmed = match path.rsplit_once('/') {
        Some((head, last)) if last == "v2" || last.starts_with("v2.") => head.to_string(),
        _ => path,
    };
    url.set_path(&trimmed);
    url
}

fn domain_json(domain: &DomainRef) -> Value {
    match domain {
        DomainRef::Id(id) => json!({ "id": id }),
        DomainRef::Name(name) => json!({ "name": name }),
    }
}

fn user_json(user: &UserRef) -> Value {
    match user {
        UserRef::Id(id) => json!({ "id": id }),
        UserRef::Name { name, domain } => json!({ "name": name, "domain": domain_json(domain) }),
    }
}

fn scope_json(scope: &Scope) -> Option<Value> {
    match scope {
        Scope::Project(ProjectRef::Id(id)) => Some(json!({ "project": { "id": id } })),
        Scope::Project(ProjectRef::Name { name, domain }) => {
            Some(json!({ "project": { "name": name, "domain": domain_json(domain) } }))
        }
        Scope::Domain(domain) => Some(json!({ "domain": domain_json(domain) })),
        Scope::Unscoped => None,
    }
}

/// The body of `POST /v3/auth/tokens` for each auth type. Application credentials
/// carry their own scope; the others take the cloud's project or domain.
pub(crate) fn auth_request_body(auth: &Auth) -> Value {
    let (identity, scope) = match auth {
        Auth::Password {
            user,
            password,
            scope,
            ..
        } => {
            let mut user = user_json(user);
            user["password"] = Value::String(password.expose().to_string());
            (
                json!({ "methods": ["password"], "password": { "user": user } }),
                scope_json(scope),
            )
        }
        Auth::ApplicationCredential { credential, .. } => {
            let cred = match credential {
                AppCredential::ById { id, secret } => {
                    json!({ "id": id, "secret": secret.expose() })
                }
                AppCredential::ByName { name, user, secret } => {
                    json!({ "name": name, "user": user_json(user), "secret": secret.expose() })
                }
            };
            (
                json!({ "methods": ["application_credential"], "application_credential": cred }),
                None,
            )
        }
        Auth::Token { token, scope, .. } => (
            json!({ "methods": ["token"], "token": { "id": token.expose() } }),
            scope_json(scope),
        ),
    };
    let mut body = json!({ "auth": { "identity": identity } });
    if let Some(scope) = scope {
        body["auth"]["scope"] = scope;
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_url_adds_v3_only_when_missing() {
        let u = |s: &str| tokens_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(u("http://k:5000"), "http://k:5000/v3/auth/tokens");
        assert_eq!(u("http://k:5000/"), "http://k:5000/v3/auth/tokens");
        assert_eq!(u("http://k:5000/v3"), "http://k:5000/v3/auth/tokens");
        assert_eq!(
            u("https://k/identity/v3/"),
            "https://k/identity/v3/auth/tokens"
        );
    }

    fn scope_of(token: &str) -> TokenScope {
        let body: TokenBody = serde_json::from_str(token).unwrap();
        body.token.scope()
    }

    #[test]
    fn only_a_project_scoped_token_gives_an_owner() {
        let at = r#""expires_at": "2030-01-01T00:00:00Z""#;
        let project =
            format!(r#"{{"token": {{{at}, "project": {{"id": "p1", "name": "charm-project"}}}}}}"#);
        assert_eq!(scope_of(&project).project_id("c").unwrap(), "p1");
        let domain =
            format!(r#"{{"token": {{{at}, "domain": {{"id": "default", "name": "Default"}}}}}}"#);
        let system = format!(r#"{{"token": {{{at}, "system": {{"all": true}}}}}}"#);
        let unscoped = format!(r#"{{"token": {{{at}}}}}"#);
        for (body, says) in [
            (domain, "domain-scoped (domain 'Default')"),
            (system, "system-scoped"),
            (unscoped, "unscoped"),
        ] {
            let err = scope_of(&body).project_id("c").unwrap_err();
            assert!(matches!(err, OpenStackError::Unauthorized { .. }));
            let text = err.to_string();
            assert!(text.contains("cloud 'c'") && text.contains(says), "{text}");
            assert!(text.contains("not project-scoped"), "{text}");
        }
    }

    #[test]
    fn version_suffix_is_stripped_from_image_endpoints() {
        let s = |u: &str| strip_version(&Url::parse(u).unwrap()).to_string();
        assert_eq!(s("http://g:9292/v2"), "http://g:9292/");
        assert_eq!(s("http://g:9292/v2/"), "http://g:9292/");
        assert_eq!(s("https://g/image"), "https://g/image");
        assert_eq!(s("https://g/image/v2.1"), "https://g/image");
    }

    #[test]
    fn password_body_scopes_to_the_project_by_name_and_domain() {
        let auth = Auth::Password {
            auth_url: Url::parse("http://k/v3").unwrap(),
            user: UserRef::Name {
                name: "charm".into(),
                domain: DomainRef::Name("Default".into()),
            },
            password: Secret::new("pw"),
            scope: Scope::Project(ProjectRef::Name {
                name: "p".into(),
                domain: DomainRef::Id("default".into()),
            }),
        };
        let body = auth_request_body(&auth);
        assert_eq!(body["auth"]["identity"]["methods"][0], "password");
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["name"],
            "charm"
        );
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["password"],
            "pw"
        );
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "Default"
        );
        assert_eq!(body["auth"]["scope"]["project"]["name"], "p");
        assert_eq!(body["auth"]["scope"]["project"]["domain"]["id"], "default");
    }

    #[test]
    fn application_credential_body_has_no_scope() {
        let auth = Auth::ApplicationCredential {
            auth_url: Url::parse("http://k/v3").unwrap(),
            credential: AppCredential::ByName {
                name: "c".into(),
                user: UserRef::Id("u1".into()),
                secret: Secret::new("s"),
            },
        };
        let body = auth_request_body(&auth);
        assert_eq!(
            body["auth"]["identity"]["methods"][0],
            "application_credential"
        );
        assert_eq!(
            body["auth"]["identity"]["application_credential"]["user"]["id"],
            "u1"
        );
        assert!(body["auth"].get("scope").is_none());
    }
}

/// A token request on a pooled connection that the server closes without an
/// answer (as a server whose keep-alive ran out does) is sent once more, on a
/// fresh connection. The fake Keystone answers a connection's first request
/// and closes it at the second: a real one cannot be made to do that on demand.
#[cfg(test)]
mod stale_connection_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request (headers and a Content-Length body); `false` at EOF.
    async fn read_request(stream: &mut tokio::net::TcpStream) -> bool {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let Ok(n) = stream.read(&mut buf).await else {
                return false;
            };
            if n == 0 {
                return false;
            }
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    return true;
                }
            }
        }
    }

    async fn fake_keystone(connections: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v3", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if !read_request(&mut stream).await {
                        return;
                    }
                    let body = r#"{"token": {"expires_at": "2099-01-01T00:00:00Z", "issued_at": "2098-12-31T23:00:00Z", "project": {"id": "p1", "name": "p"}, "catalog": []}}"#;
                    let answer = format!(
                        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Subject-Token: t\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    stream.write_all(answer.as_bytes()).await.unwrap();
                    // The next request on this connection: closed, unanswered.
                    let _ = read_request(&mut stream).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_token_request_on_a_connection_closed_unanswered_goes_again_on_a_fresh_one() {
        let connections = Arc::new(AtomicUsize::new(0));
        let url = fake_keystone(connections.clone()).await;
        let yaml = format!(
            "clouds:\n  c:\n    auth:\n      auth_url: {url}\n      username: u\n      password: p\n      project_name: p\n"
        );
        let cloud = crate::clouds::CloudsFile::parse(&yaml, None, None)
            .unwrap()
            .clouds[0]
            .clone();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        issue_token(&client, &cloud).await.unwrap();
        // The pooled connection is reused, the fake closes it: one more try.
        let token = issue_token(&client, &cloud).await.unwrap();
        assert_eq!(token.scope.project_id("c").unwrap(), "p1");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}
