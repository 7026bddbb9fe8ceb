//! `GET /metrics`: the Prometheus series (OpenMetrics text), behind the bearer token.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::{render, Gauges, CONTENT_TYPE};

/// The Prometheus series, OpenMetrics text (see the README's operator section).
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body = String, description = "the series in OpenMetrics text format"),
    (status = 401, body = crate::api::ErrorBody, description = "unauthorized")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = render(&Gauges::of(&state.jobs));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}
