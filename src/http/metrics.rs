//! `GET /metrics`: the Prometheus series (OpenMetrics text), behind the bearer token.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::{render, Gauges, CONTENT_TYPE};

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = render(&Gauges::of(&state.images));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}
