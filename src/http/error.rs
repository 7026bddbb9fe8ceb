//! The API's errors: one type, mapped to the contract's status codes in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::images::source::SourceError;
use crate::images::ImageError;
use crate::openstack::registry::RegistryError;
use crate::openstack::OpenStackError;

/// `{"error": {"code", "message"}}` with its HTTP status.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn request_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "the request body is over 1 MiB",
        )
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (see api_token_file)",
        )
    }

    /// An OpenStack failure; `code` is the operation's own (`get_image_failed`,
    /// `upload_image_failed`) for errors OpenStack answered.
    fn openstack(err: &OpenStackError, code: &'static str) -> Self {
        let message = err.to_string();
        match err {
            OpenStackError::Unauthorized { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "openstack_unauthorized",
                message,
            ),
            OpenStackError::NotReady { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
            }
            OpenStackError::Connection { .. } | OpenStackError::Tls { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "openstack_connection_failed",
                message,
            ),
            OpenStackError::Api { status: 413, .. } if code == "upload_image_failed" => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "image_too_large", message)
            }
            OpenStackError::Api { .. }
            | OpenStackError::Interrupted { .. }
            | OpenStackError::InvalidResponse { .. }
            | OpenStackError::NoEndpoint { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, code, message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        } else {
            tracing::info!(code = self.code, message = %self.message, "request refused");
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        let message = err.to_string();
        match &err {
            RegistryError::UnknownCloud(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_cloud", message)
            }
            RegistryError::NoClouds(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
            }
            RegistryError::InvalidClouds(_) | RegistryError::InvalidDocument(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_clouds_yaml",
                message,
            ),
            RegistryError::OpenStack(os) => Self::openstack(os, "openstack_connection_failed"),
            RegistryError::Write { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(err: ImageError) -> Self {
        let message = err.to_string();
        match err {
            ImageError::Invalid(_) => Self::invalid_request(message),
            ImageError::Source(SourceError::NotAllowed { .. }) => {
                Self::new(StatusCode::FORBIDDEN, "path_not_allowed", message)
            }
            ImageError::Source(SourceError::NotAbsolute(_)) => Self::invalid_request(message),
            ImageError::Source(SourceError::NotFound { .. } | SourceError::Read { .. }) => {
                Self::new(StatusCode::BAD_REQUEST, "file_not_found", message)
            }
            ImageError::Source(SourceError::Abandoned)
            | ImageError::Verification { .. }
            | ImageError::Stalled { .. }
            | ImageError::NotActivated { .. }
            | ImageError::FileChanged { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "upload_image_failed", message)
            }
            ImageError::Cloud(registry) => registry.into(),
            ImageError::Get(os) => Self::openstack(&os, "get_image_failed"),
            ImageError::Upload(os) => Self::openstack(&os, "upload_image_failed"),
            ImageError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
            ImageError::ShuttingDown | ImageError::Interrupted { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
        }
    }
}
