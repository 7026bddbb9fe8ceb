//! Extractors whose rejections speak the contract: JSON errors with its codes
//! instead of axum's plain-text ones.
//!
//! What no wrapper here covers (an extractor a handler uses bare, such as
//! `Path`) is rewritten by the router's `json_errors` layer: every answer is
//! JSON either way; a wrapper only chooses the words.

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The most a request body may hold.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// `Json<T>`: over 1 MiB is `413 request_too_large`; not JSON, a wrong type or an
/// unknown field is `400 invalid_request` (with serde's words on what was wrong).
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::request_too_large();
    }
    let message = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "the body must be JSON with Content-Type: application/json".to_string()
        }
        other => other.body_text(),
    };
    ApiError::invalid_request(message)
}

/// The body as UTF-8 text, at most [`MAX_BODY`].
pub(crate) struct TextBody(pub String);

impl<S> FromRequest<S> for TextBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes =
            axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|r: BytesRejection| {
                    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::request_too_large()
                    } else {
                        ApiError::invalid_request(r.body_text())
                    }
                })?;
        String::from_utf8(bytes.to_vec())
            .map(TextBody)
            .map_err(|_| ApiError::invalid_request("the body is not UTF-8 text"))
    }
}

/// `Query<T>` with a `400 invalid_request` rejection.
pub(crate) struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| ApiError::invalid_request(r.body_text()))
    }
}
