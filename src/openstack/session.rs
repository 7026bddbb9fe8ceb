//! One authenticated Keystone session per cloud, kept fresh in the background.
//!
//! The point of the daemon is that a hook never waits on Keystone (a token costs
//! 0.35-0.42 s here). So a [`Session`] holds the current token and a background
//! [`refresh loop`](Session::start_refresher) replaces it before it expires:
//!
//! - at `lifetime - margin`, where the margin is `token_refresh_margin` but at least
//!   10 % of the lifetime (so never later than 90 % of it), and for tokens too
//!   short for the configured margin (margin over half the lifetime) 10 % of the
//!   lifetime, so that there is one token request per lifetime, not a storm;
//! - when that fails, again with exponential backoff and jitter, while the current
//!   token stays in use until it expires;
//! - one login at a time, and the backoff is the cloud's, not the loop's: a
//!   request that needs a token during it gets the failed login's error at once
//!   (a wrong password must not cost Keystone one attempt per hook call: accounts
//!   get locked), and requests that arrive during a login share it;
//! - a token without a project is refused like bad credentials: the project id
//!   is the owner every image query filters on;
//! - a service's 401 (a revoked token) triggers one re-authentication shared by
//!   every request that saw it (single flight), and the request is retried once.
//!
//! Tokens are timed on our monotonic clock (see [`Token::valid_until`]), and the
//! token source is injectable, so the schedule is tested with `tokio::time::pause`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderValue;
use tokio::sync::Notify;
use tokio::time::Instant;
use url::Url;

use super::keystone::{self, Token};
use super::login_backoff::{Backoff, LoginBackoffs};
use super::{error_chain, HttpClients, OpenStackError, Service};
use crate::clouds::CloudConfig;

/// A token this close to expiry is not sent: it could expire on the way.
pub(crate) const EXPIRY_SAFETY: Duration = Duration::from_secs(5);
/// When to refresh a token of `lifetime`, counted from when it was requested.
pub(crate) fn refresh_delay(lifetime: Duration, margin: Duration) -> Duration {
    let tenth = lifetime / 10;
    let effective = if margin > lifetime / 2 {
        tenth
    } else {
        margin.max(tenth)
    };
    lifetime.saturating_sub(effective)
}

/// What produces tokens: Keystone in the daemon, a counter in unit tests.
pub(crate) type TokenFuture = Pin<Box<dyn Future<Output = Result<Token, OpenStackError>> + Send>>;
pub(crate) type TokenIssuer = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// Which of a cloud's HTTP clients ([`HttpClients`]) a request goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// An API call, bounded by a total timeout.
    Api,
    /// Image data: no total timeout (the upload watches for stalls itself).
    Upload,
}

/// A valid token and the image endpoint that goes with it.
#[derive(Debug)]
pub struct Authenticated {
    /// The token and its catalog.
    pub token: Token,
    /// Glance's base URL, without the `/v2` suffix.
    pub image_endpoint: Url,
    /// The token's project id: the owner every image query filters on.
    pub(crate) owner: String,
    /// Counts re-authentications, so that concurrent 401s share one (single flight).
    pub generation: u64,
    /// A service answered 401 to this token (revoked): it is not sent again, even
    /// when no new one can be had.
    refused: AtomicBool,
}

impl Authenticated {
    fn usable_at(&self, now: Instant) -> bool {
        !self.refused.load(Ordering::Relaxed) && now + EXPIRY_SAFETY < self.token.valid_until
    }
}

/// Counters and the last error, for `/v1/status`.
#[derive(Debug, Default, Clone)]
struct Stats {
    /// Every `POST /v3/auth/tokens` made, failed ones included.
    token_requests: u64,
    /// 401s from Glance (revoked or expired tokens seen by a service).
    unauthorized_responses: u64,
    /// The last authentication error, cleared by the next success.
    last_error: Option<String>,
}

/// The daemon's view of a cloud, as `/v1/status` shows it. Holds no secret.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct CloudStatus {
    pub(crate) name: String,
    pub(crate) authenticated: bool,
    pub(crate) token_expires_at: Option<DateTime<Utc>>,
    pub image_endpoint: Option<String>,
    pub(crate) last_error: Option<String>,
    /// Extension: tokens requested since the session was created.
    pub(crate) token_requests: u64,
    /// Extension: 401 answers from Glance that forced a re-authentication.
    pub(crate) unauthorized_responses: u64,
}

/// The authenticated session of one cloud.
pub struct Session {
    /// The cloud as clouds.yaml describes it.
    cloud: CloudConfig,
    /// HTTP clients built with the cloud's TLS settings.
    clients: HttpClients,
    /// `token_refresh_margin` from the daemon config (a reload may change it).
    margin: Mutex<Duration>,
    /// Where tokens come from.
    issuer: TokenIssuer,
    /// The current token, if any; replaced as a whole.
    current: RwLock<Option<Arc<Authenticated>>>,
    /// Held while a token is requested, so that concurrent needs share one request.
    renewing: tokio::sync::Mutex<()>,
    /// Counters and last error.
    stats: Mutex<Stats>,
    /// Failed logins and when the next may be made; shared by every session
    /// of the same cloud name and auth ([`LoginBackoffs`]).
    backoff: Arc<Mutex<Backoff>>,
    /// Wakes the refresh loop when a token was replaced outside it.
    wake: Arc<Notify>,
    /// The refresh loop, aborted when the session is dropped (clouds replaced).
    refresher: Mutex<Option<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cloud", &self.cloud.name)
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut handle) = self.refresher.lock() {
            if let Some(handle) = handle.take() {
                handle.abort();
            }
        }
    }
}

impl Session {
    /// A session that gets its tokens from the cloud's Keystone.
    pub fn new(cloud: CloudConfig, margin: Duration) -> Result<Arc<Session>, OpenStackError> {
        Self::sharing_backoff(cloud, margin, &LoginBackoffs::default())
    }

    /// A session whose login backoff is the one `backoffs` keeps for its cloud's
    /// name and auth: a refused password stays refused for a new session of it
    /// (a `PUT /v1/clouds`, a reload) until the backoff ends.
    pub(crate) fn sharing_backoff(
        cloud: CloudConfig,
        margin: Duration,
        backoffs: &LoginBackoffs,
    ) -> Result<Arc<Session>, OpenStackError> {
        let clients = HttpClients::for_cloud(&cloud)?;
        let issuer: TokenIssuer = {
            let clients = clients.clone();
            let cloud = cloud.clone();
            Arc::new(move || {
                let clients = clients.clone();
                let cloud = cloud.clone();
                Box::pin(async move {
                    clients.check_url(&cloud.name, cloud.auth.auth_url())?;
                    super::observe::token(&cloud.name, keystone::issue_token(&clients.api, &cloud))
                        .await
                })
            })
        };
        let backoff = backoffs.of(&cloud);
        Ok(Self::build(cloud, clients, margin, issuer, backoff))
    }

    /// A session with its own token source (tests).
    #[cfg(test)]
    pub(crate) fn with_issuer(
        cloud: CloudConfig,
        clients: HttpClients,
        margin: Duration,
        issuer: TokenIssuer,
    ) -> Arc<Session> {
        Self::build(cloud, clients, margin, issuer, Arc::default())
    }

    fn build(
        cloud: CloudConfig,
        clients: HttpClients,
        margin: Duration,
        issuer: TokenIssuer,
        backoff: Arc<Mutex<Backoff>>,
    ) -> Arc<Session> {
        Arc::new(Session {
            cloud,
            clients,
            margin: Mutex::new(margin),
            issuer,
            current: RwLock::new(None),
            renewing: tokio::sync::Mutex::new(()),
            stats: Mutex::new(Stats::default()),
            backoff,
            wake: Arc::new(Notify::new()),
            refresher: Mutex::new(None),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.cloud.name
    }

    /// The cloud's settings (a reload keeps the session when they are unchanged).
    pub(crate) fn cloud(&self) -> &CloudConfig {
        &self.cloud
    }

    fn margin(&self) -> Duration {
        *self.margin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a new `token_refresh_margin` in force (a reload): the token is kept,
    /// and the refresh loop reschedules its next refresh by it.
    pub(crate) fn set_margin(&self, margin: Duration) {
        *self.margin.lock().unwrap_or_else(|p| p.into_inner()) = margin;
        self.wake.notify_waiters();
    }

    fn current(&self) -> Option<Arc<Authenticated>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    fn with_stats<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        match self.stats.lock() {
            Ok(mut stats) => f(&mut stats),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn with_backoff<R>(&self, f: impl FnOnce(&mut Backoff) -> R) -> R {
        match self.backoff.lock() {
            Ok(mut backoff) => f(&mut backoff),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The failed login's error while its backoff runs.
    fn backing_off(&self, now: Instant) -> Option<OpenStackError> {
        self.with_backoff(|b| match b.until {
            Some(until) if now < until => b.last.clone(),
            _ => None,
        })
    }

    /// When the backoff ends, if one runs.
    fn backoff_until(&self) -> Option<Instant> {
        self.with_backoff(|b| b.until)
    }

    /// Records a failed login and starts (or lengthens) the backoff.
    fn login_failed(&self, err: &OpenStackError) {
        let wait = self.with_backoff(|b| b.failed(err));
        tracing::warn!(
            cloud = %self.cloud.name, error = %err, retry_in_ms = wait.as_millis() as u64,
            "authentication failed"
        );
        self.with_stats(|s| s.last_error = Some(err.to_string()));
    }

    /// The current token if it is still good to send.
    pub(crate) fn valid(&self) -> Option<Arc<Authenticated>> {
        self.current().filter(|a| a.usable_at(Instant::now()))
    }

    /// Requests a new token unless someone already replaced the one the caller saw
    /// (`seen`: the generation it saw, `None` if it saw none). One login at a time:
    /// callers that arrive while one is under way wait for it and share its result,
    /// and during the backoff after a failed one they get its error at once.
    pub(crate) async fn renew(
        &self,
        seen: Option<u64>,
    ) -> Result<Arc<Authenticated>, OpenStackError> {
        let _guard = self.renewing.lock().await;
        if let Some(current) = self.current() {
            if Some(current.generation) != seen && current.usable_at(Instant::now()) {
                return Ok(current);
            }
        }
        if let Some(err) = self.backing_off(Instant::now()) {
            return Err(err);
        }
        self.with_stats(|s| s.token_requests += 1);
        let result = (self.issuer)().await.and_then(|token| {
            let owner = token.scope.project_id(&self.cloud.name)?.to_string();
            let image_endpoint = keystone::image_endpoint(&self.cloud, &token)?;
            Ok((token, image_endpoint, owner))
        });
        match result {
            Ok((token, image_endpoint, owner)) => {
                let generation = self.current().map(|c| c.generation + 1).unwrap_or(1);
                tracing::info!(
                    cloud = %self.cloud.name,
                    expires_at = %token.expires_at,
                    lifetime_s = token.lifetime.as_secs(),
                    "authenticated"
                );
                let fresh = Arc::new(Authenticated {
                    token,
                    image_endpoint,
                    owner,
                    generation,
                    refused: AtomicBool::new(false),
                });
                if let Ok(mut current) = self.current.write() {
                    *current = Some(fresh.clone());
                }
                self.with_backoff(|b| *b = Backoff::default());
                self.with_stats(|s| s.last_error = None);
                self.wake.notify_waiters();
                Ok(fresh)
            }
            Err(err) => {
                self.login_failed(&err);
                self.wake.notify_waiters();
                Err(err)
            }
        }
    }

    /// A token good to send now: the current one, or a new one when there is none
    /// (Keystone was down at start, or the token expired while refreshes failed).
    /// Bad credentials stay `Unauthorized`; anything else becomes `NotReady`.
    pub async fn authenticated(&self) -> Result<Arc<Authenticated>, OpenStackError> {
        if let Some(valid) = self.valid() {
            return Ok(valid);
        }
        let seen = self.current().map(|c| c.generation);
        self.renew(seen).await.map_err(|err| self.not_ready(err))
    }

    /// A failed login as a request sees it: refused credentials stay
    /// `Unauthorized`, anything else means there is no session yet.
    fn not_ready(&self, err: OpenStackError) -> OpenStackError {
        match err {
            OpenStackError::Unauthorized { .. } | OpenStackError::NotReady { .. } => err,
            other => OpenStackError::NotReady {
                cloud: self.cloud.name.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// Sends the request `build` makes (from the client `via` names and the image
    /// endpoint) with the current token. On a 401 the token is replaced (once,
    /// shared with concurrent requests) and the request sent again once, unless
    /// its body was a stream (an upload: the data is gone). Idempotent calls are
    /// also retried after a dropped connection or a 502/503/504. The response is
    /// returned whatever its status.
    pub(crate) async fn send_authenticated<F>(
        &self,
        service: Service,
        via: Via,
        build: F,
    ) -> Result<reqwest::Response, OpenStackError>
    where
        F: FnOnce(&reqwest::Client, &Url) -> reqwest::RequestBuilder,
    {
        let client = self.client(via);
        let auth = self.authenticated().await?;
        let request = build(client, &auth.image_endpoint)
            .build()
            .map_err(|e| OpenStackError::connection(&self.cloud.name, service, "", &e))?;
        let again = request.try_clone();
        let response = self.execute(service, via, request, &auth).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        self.with_stats(|s| s.unauthorized_responses += 1);
        tracing::info!(cloud = %self.cloud.name, "{service} answered 401: re-authenticating");
        auth.refused.store(true, Ordering::Relaxed);
        let auth = self
            .renew(Some(auth.generation))
            .await
            .map_err(|err| self.not_ready(err))?;
        match again {
            Some(request) => self.execute(service, via, request, &auth).await,
            None => Ok(response),
        }
    }

    fn client(&self, via: Via) -> &reqwest::Client {
        match via {
            Via::Api => &self.clients.api,
            Via::Upload => &self.clients.upload,
        }
    }

    /// Sends `request` with `auth`'s token, retrying idempotent calls.
    async fn execute(
        &self,
        service: Service,
        via: Via,
        mut request: reqwest::Request,
        auth: &Authenticated,
    ) -> Result<reqwest::Response, OpenStackError> {
        let client = self.client(via);
        self.clients.check_url(&self.cloud.name, request.url())?;
        request
            .headers_mut()
            .insert("X-Auth-Token", token_header(auth)?);
        let url = request.url().to_string();
        let operation = format!("{} {}", request.method(), request.url().path());
        let idempotent = is_idempotent(request.method());
        let mut pending = request;
        let mut attempt = 0u32;
        loop {
            // Keep a copy for a second try before the request is consumed.
            let spare = if idempotent && attempt < RETRIES {
                pending.try_clone()
            } else {
                None
            };
            let result =
                super::observe::request(service, &operation, client.execute(pending)).await;
            let retry_reason = match (&result, &spare) {
                (_, None) => None,
                // A connection the server closed while it sat in the pool fails
                // at once; a timeout is not retried (it already took long).
                (Err(err), Some(_)) if !err.is_timeout() => Some(error_chain(err)),
                // A 5xx burst (a restarting API behind a proxy) often passes.
                (Ok(r), Some(_)) if RETRY_STATUSES.contains(&r.status().as_u16()) => {
                    Some(format!("{} answered {}", service, r.status()))
                }
                _ => None,
            };
            match (retry_reason, spare) {
                (Some(reason), Some(spare)) => {
                    attempt += 1;
                    tracing::debug!(cloud = %self.cloud.name, %url, %reason, attempt, "retrying");
                    tokio::time::sleep(RETRY_DELAY * attempt).await;
                    pending = spare;
                }
                _ => {
                    return result.map_err(|e| self.send_error(service, via, &url, &operation, &e))
                }
            }
        }
    }

    /// A failed send: the service was not reached, or (for an upload, which
    /// runs for minutes) the connection broke once the data was flowing.
    fn send_error(
        &self,
        service: Service,
        via: Via,
        url: &str,
        operation: &str,
        err: &reqwest::Error,
    ) -> OpenStackError {
        if via == Via::Api || err.is_connect() {
            return OpenStackError::connection(&self.cloud.name, service, url, err);
        }
        OpenStackError::Interrupted {
            cloud: self.cloud.name.clone(),
            service,
            operation: operation.to_string(),
            cause: error_chain(err),
        }
    }

    /// Starts the background refresh loop. It holds only a weak reference, so
    /// dropping the session (clouds replaced) ends it.
    pub(crate) fn start_refresher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        let handle = tokio::spawn(refresh_loop(weak, wake));
        if let Ok(mut slot) = self.refresher.lock() {
            *slot = Some(handle.abort_handle());
        }
    }

    pub(crate) fn status(&self) -> CloudStatus {
        let current = self.current();
        let stats = self.with_stats(|s| s.clone());
        let now = Instant::now();
        CloudStatus {
            name: self.cloud.name.clone(),
            authenticated: current.as_ref().is_some_and(|c| c.usable_at(now)),
            token_expires_at: current.as_ref().map(|c| c.token.expires_at),
            image_endpoint: current
                .as_ref()
                .map(|c| c.image_endpoint.to_string())
                .or_else(|| {
                    self.cloud
                        .image_endpoint_override
                        .as_ref()
                        .map(|u| u.to_string())
                }),
            last_error: stats.last_error,
            token_requests: stats.token_requests,
            unauthorized_responses: stats.unauthorized_responses,
        }
    }
}

/// How often an idempotent call is sent again after a connection failure or a 5xx.
const RETRIES: u32 = 2;
/// Waits before the retries: this, then twice this.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// Answers that say "try again" rather than "no".
const RETRY_STATUSES: &[u16] = &[502, 503, 504];

fn is_idempotent(method: &reqwest::Method) -> bool {
    matches!(
        *method,
        reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::DELETE
    )
}

/// The token as a header value marked sensitive, so that hyper never logs it.
fn token_header(auth: &Authenticated) -> Result<HeaderValue, OpenStackError> {
    let mut value = HeaderValue::from_str(auth.token.value.expose()).map_err(|_| {
        OpenStackError::InvalidResponse {
            cloud: String::new(),
            service: Service::Keystone,
            operation: "POST /v3/auth/tokens".to_string(),
            detail: "the token is not a valid header value".to_string(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

async fn refresh_loop(weak: Weak<Session>, wake: Arc<Notify>) {
    loop {
        // Listening before reading the state: a wake-up in between is not lost.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let at = {
            let Some(session) = weak.upgrade() else {
                return;
            };
            let now = Instant::now();
            match (session.backoff_until(), session.current()) {
                (Some(until), _) => until,
                (None, Some(current)) if current.usable_at(now) => {
                    let requested_at = current.token.valid_until - current.token.lifetime;
                    requested_at + refresh_delay(current.token.lifetime, session.margin())
                }
                _ => now,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = woken => continue,
        }
        let Some(session) = weak.upgrade() else {
            return;
        };
        let seen = session.current().map(|c| c.generation);
        // A failure is recorded in the session's backoff, which the next turn reads.
        let _ = session.renew(seen).await;
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
