//! The handlers of health, status, clouds and latest: parse at the edge, call the
//! service, answer JSON. Uploads and jobs are in [`jobs`](super::jobs).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{ApiQuery, TextBody};
use super::AppState;
use crate::api::{
    CloudLatest, CloudNames, CloudStatus, ErrorBody, Health, Latest, LatestResults, Status,
};
use crate::images::names::ImageFamily;
use crate::jobs::JobState;

/// The process serves (no token needed).
#[utoipa::path(get, path = "/v1/health", security(()),
    responses((status = 200, body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: API_VERSION,
    })
}

/// The API's major version: the `v1` of every path.
const API_VERSION: u32 = 1;

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
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

/// The daemon's view of each cloud, and its jobs.
#[utoipa::path(get, path = "/v1/status", responses(
    (status = 200, body = Status),
    (status = 401, body = ErrorBody, description = "unauthorized")))]
pub(crate) async fn status(State(state): State<AppState>) -> Json<Status> {
    // One snapshot: the clouds and the default from the same set, even while a
    // PUT /v1/clouds replaces it.
    let set = state.clouds.snapshot();
    let clouds = set
        .sessions
        .iter()
        .map(|s| CloudStatus {
            upload_method: state.images.upload_way(s).as_str().to_string(),
            ..s.status().into()
        })
        .collect();
    let counts = state.jobs.counts();
    let holding_a_slot = [JobState::Uploading, JobState::Verifying, JobState::Pruning];
    Json(Status {
        clouds,
        uploads_in_flight: holding_a_slot.into_iter().map(|s| counts.get(s)).sum(),
        default_cloud: set.default.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        jobs: counts.into(),
    })
}

/// Replaces clouds.yaml once every cloud in it authenticates. YAML or JSON (JSON
/// is YAML), so any content type is read as text.
#[utoipa::path(put, path = "/v1/clouds",
    request_body(content = String, content_type = "application/yaml",
        description = "A clouds.yaml document (or JSON of the same shape)"),
    responses(
        (status = 200, body = CloudNames),
        (status = 422, body = ErrorBody,
            description = "openstack_unauthorized or invalid_clouds_yaml")))]
pub(crate) async fn put_clouds(
    State(state): State<AppState>,
    TextBody(document): TextBody,
) -> Result<Json<CloudNames>, ApiError> {
    let clouds = state.clouds.replace(&document).await?;
    Ok(Json(CloudNames { clouds }))
}

/// The query of `GET /v1/images/latest`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LatestParams {
    /// focal, jammy, noble, resolute (or 20.04, ...). Required.
    base: Option<String>,
    /// A Juju application name. Required.
    app_name: Option<String>,
    /// x64, arm64, s390x, ppc64le. Required.
    arch: Option<String>,
    /// The cloud (default: the daemon's default cloud); `*`: every cloud, each
    /// answered on its own (`results`).
    cloud: Option<String>,
}

fn required(value: Option<String>, field: &str) -> Result<String, ApiError> {
    value.ok_or_else(|| ApiError::invalid_request(format!("{field}: missing query parameter")))
}

/// The newest active image of the name the template gives; with `cloud=*`, in
/// every cloud (queried side by side).
#[utoipa::path(get, path = "/v1/images/latest", params(LatestParams), responses(
    (status = 200, body = LatestAnswer, description = "The newest image; with cloud=*, every cloud's answer or error"),
    (status = 400, body = ErrorBody, description = "invalid_request"),
    (status = 404, body = ErrorBody, description = "unknown_cloud"),
    (status = 502, body = ErrorBody, description = "get_image_failed, openstack_connection_failed"),
    (status = 503, body = ErrorBody, description = "not_ready")))]
pub(crate) async fn latest(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LatestParams>,
) -> Result<Response, ApiError> {
    let family = ImageFamily::parse(
        &required(params.base, "base")?,
        &required(params.app_name, "app_name")?,
        &required(params.arch, "arch")?,
    )
    .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    if params.cloud.as_deref() == Some("*") {
        let results = state
            .images
            .latest_everywhere(&family)
            .await?
            .into_iter()
            .map(|(cloud, result)| {
                let result = match result {
                    Ok(latest) => CloudLatest::Ok(latest),
                    Err(err) => CloudLatest::Err(ErrorBody {
                        error: ApiError::from(&err).detail(),
                    }),
                };
                (cloud, result)
            })
            .collect();
        return Ok(Json(LatestResults { results }).into_response());
    }
    let latest = state
        .images
        .latest(params.cloud.as_deref(), &family)
        .await?;
    Ok(Json(latest).into_response())
}

/// `200` to `GET /v1/images/latest`: one cloud's answer, or every cloud's.
#[derive(utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the answer's two shapes in the OpenAPI document"
)]
pub(crate) enum LatestAnswer {
    One(Latest),
    Every(LatestResults),
}
