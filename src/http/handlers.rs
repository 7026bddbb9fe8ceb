//! The handlers: parse at the edge, call the service, answer JSON.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, TextBody};
use super::AppState;
use crate::images::names::ImageFamily;
use crate::images::{LatestImage, UploadFields, UploadOutcome, UploadRequest};

pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

pub(crate) async fn status(State(state): State<AppState>) -> Json<Value> {
    // One snapshot: the clouds and the default from the same set, even while a
    // PUT /v1/clouds replaces it.
    let set = state.clouds.snapshot();
    let clouds: Vec<_> = set.sessions.iter().map(|s| s.status()).collect();
    let default = set.default.clone();
    Json(json!({
        "clouds": clouds,
        "uploads_in_flight": state.images.in_flight().count(),
        "default_cloud": default,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub(crate) async fn uploads(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "uploads": state.images.in_flight().list() }))
}

/// `PUT /v1/clouds`: YAML or JSON (JSON is YAML), so any content type is read as text.
pub(crate) async fn put_clouds(
    State(state): State<AppState>,
    TextBody(document): TextBody,
) -> Result<Json<Value>, ApiError> {
    let names = state.clouds.replace(&document).await?;
    Ok(Json(json!({ "clouds": names })))
}

#[derive(Deserialize)]
pub(crate) struct LatestParams {
    base: Option<String>,
    app_name: Option<String>,
    arch: Option<String>,
    cloud: Option<String>,
}

fn required(value: Option<String>, field: &str) -> Result<String, ApiError> {
    value.ok_or_else(|| ApiError::invalid_request(format!("{field}: missing query parameter")))
}

pub(crate) async fn latest(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LatestParams>,
) -> Result<Json<LatestImage>, ApiError> {
    let family = ImageFamily::parse(
        &required(params.base, "base")?,
        &required(params.app_name, "app_name")?,
        &required(params.arch, "arch")?,
    )
    .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let latest = state
        .images
        .latest(params.cloud.as_deref(), &family)
        .await?;
    Ok(Json(latest))
}

/// The caller's `X-Request-Id` becomes the upload id when it is a sane token, so a
/// client can follow its own upload in `/v1/uploads`.
fn upload_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    let sane = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    sane.then(|| id.to_string())
}

pub(crate) async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(fields): ApiJson<UploadFields>,
) -> Result<impl IntoResponse, ApiError> {
    let request = UploadRequest::parse(fields, upload_id(&headers))
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let outcome: UploadOutcome = state.images.upload(request).await?;
    Ok((StatusCode::CREATED, Json(outcome)))
}
