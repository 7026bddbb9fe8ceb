//! The HTTP API v1: router, shared state, bearer-token check, handlers, and the
//! OpenAPI document of exactly these routes.
//!
//! One file per resource; errors map to status codes in [`error`]; extractors that
//! reject with the contract's codes in [`extract`]. This layer never builds a Glance
//! URL: it calls [`ImageService`] and [`CloudRegistry`]. Bodies are the wire types
//! of [`api`](crate::api).
//!
//! Every route is registered through `utoipa_axum`'s `routes!`, which takes the
//! handler's `#[utoipa::path]` for the document and its method and path for the
//! router: the two cannot disagree (`GET /v1/openapi.json` serves the document).

pub(crate) mod error;
pub(crate) mod extract;
mod handlers;
pub(crate) mod jobs;
mod metrics;
pub(crate) mod passed_fds;

use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::openapi::ApiDoc;
use crate::images::ImageService;
use crate::openstack::registry::CloudRegistry;
use crate::secret::ApiToken;
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The image operations.
    pub(crate) images: Arc<ImageService>,
    /// The clouds in force.
    pub(crate) clouds: Arc<CloudRegistry>,
    /// The bearer token clients must present (`api_token_file`; a reload replaces it).
    pub(crate) api_token: Arc<ApiToken>,
    /// Every upload is a job.
    pub(crate) jobs: Arc<jobs::UploadJobs>,
}

/// The routes anyone may call.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(handlers::health))
}

/// The routes that want the bearer token.
fn protected_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::status))
        .routes(routes!(handlers::put_clouds))
        .routes(routes!(handlers::latest))
        .routes(routes!(jobs::upload))
        .routes(routes!(jobs::jobs))
        .routes(routes!(jobs::job))
        .routes(routes!(openapi_json))
        .routes(routes!(metrics::metrics))
}

/// The OpenAPI document of the router's routes (built once).
pub(crate) fn openapi_document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        OpenApiRouter::with_openapi(ApiDoc::openapi())
            .merge(public_routes())
            .merge(protected_routes())
            .into_openapi()
    })
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/v1/openapi.json", responses(
    (status = 200, description = "This document", content_type = "application/json")))]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

/// The router with every route; `/v1/health` is the only one without auth.
pub(crate) fn router(state: AppState) -> Router {
    let (public, _) = public_routes().split_for_parts();
    let (protected, _) = protected_routes().split_for_parts();
    let protected =
        protected.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    public
        .merge(protected)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(passed_fds::take_for_request))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// The most of a plain-text error body that is kept as the message.
const MAX_REJECTION_TEXT: usize = 4096;

/// "Every answer is JSON": an error answer that is not JSON is rewritten into
/// the contract's shape. The [`extract`] wrappers already answer so; this
/// catches every other rejection (axum's `Path` on `GET /v1/jobs/%FF`, any
/// extractor a new handler uses bare): a client error is `400
/// invalid_request` (`413 request_too_large` for a body over the limit) with
/// axum's words as the message, a server error `500 internal_error`.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), MAX_REJECTION_TEXT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::request_too_large()
    } else if status.is_client_error() {
        let reason = status.canonical_reason().unwrap_or("malformed request");
        ApiError::invalid_request(if text.is_empty() {
            reason.to_lowercase()
        } else {
            text
        })
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("the request could not be served ({status}): {text}"),
        )
    };
    axum::response::IntoResponse::into_response(error)
}

/// Compares the bearer token in constant time.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let ok = presented.is_some_and(|token| state.api_token.matches(token));
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
    use super::{bearer_token, openapi_document};

    /// Where the checked-in copy of the document lives.
    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

    /// `make openapi` (`OSIH_WRITE_OPENAPI=1 cargo test --lib openapi`) rewrites the
    /// checked-in copy; otherwise a difference fails, so a change of the API's
    /// types or routes is seen in review.
    #[test]
    fn the_checked_in_openapi_document_is_the_generated_one() {
        let generated = openapi_document().to_pretty_json().unwrap() + "\n";
        if std::env::var_os("OSIH_WRITE_OPENAPI").is_some() {
            std::fs::write(CHECKED_IN, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{CHECKED_IN} differs from the document the code generates: run `make openapi` \
             and commit it"
        );
    }

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
