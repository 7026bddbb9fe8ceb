//! The HTTP API v1: router, shared state, bearer-token check, handlers.
//!
//! One file per resource; errors map to status codes in [`error`]; extractors that
//! reject with the contract's codes in [`extract`]. This layer never builds a Glance
//! URL: it calls [`ImageService`] and [`CloudRegistry`].

pub(crate) mod error;
pub(crate) mod extract;
mod handlers;
mod metrics;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use subtle::ConstantTimeEq;

use crate::images::ImageService;
use crate::openstack::registry::CloudRegistry;
use crate::secret::Secret;
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The image operations.
    pub(crate) images: Arc<ImageService>,
    /// The clouds in force.
    pub(crate) clouds: Arc<CloudRegistry>,
    /// The bearer token clients must present (`api_token_file`).
    pub(crate) api_token: Arc<Secret>,
}

/// The router with every route; `/v1/health` is the only one without auth.
pub(crate) fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(handlers::status))
        .route("/v1/clouds", put(handlers::put_clouds))
        .route("/v1/images/latest", get(handlers::latest))
        .route("/v1/images", post(handlers::upload))
        .route("/v1/uploads", get(handlers::uploads))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(handlers::health))
        .merge(protected)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Compares the bearer token in constant time.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let ok = presented.is_some_and(|token| {
        bool::from(token.as_bytes().ct_eq(state.api_token.expose().as_bytes()))
    });
    if ok {
        next.run(request).await
    } else {
        axum::response::IntoResponse::into_response(ApiError::unauthorized())
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is matched
/// case-insensitively (RFC 7235 section 2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// One line per request: method, path, status, duration. Never headers or bodies.
/// Everything logged while serving it is in its span (the query names the cloud
/// and the image family of a `latest`; an upload's own span names its cloud and image).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let span = tracing::info_span!("request", %method, %path, %query);
    let started = std::time::Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let _in = span.entered();
    let status = response.status();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status == StatusCode::OK && path == "/v1/health" {
        tracing::debug!(status = status.as_u16(), ms, "request");
    } else {
        tracing::info!(status = status.as_u16(), ms, "request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
