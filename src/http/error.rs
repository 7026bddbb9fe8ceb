//! The API's errors: one type, mapped to the contract's status codes in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{ErrorBody, ErrorDetail};
use crate::images::convert::ConvertError;
use crate::images::source::SourceError;
use crate::images::ImageError;
use crate::jobs::{JobFailure, JobsError};
use crate::openstack::registry::RegistryError;
use crate::openstack::OpenStackError;

/// `{"error": {"code", "message"}}` with its HTTP status.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// `Retry-After` in seconds (`429 too_many_uploads`).
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
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

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The error a failed job answers a waiting `POST /v1/images` with: its code,
    /// with the status the contract gives that code.
    pub(crate) fn of_failure(failure: &JobFailure) -> Self {
        let (status, code) = STATUS_OF_CODE
            .iter()
            .find(|(_, code)| *code == failure.code)
            .copied()
            .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, "internal_error"));
        Self::new(status, code, failure.message.clone())
    }

    /// `{"code", "message"}`.
    pub(crate) fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_string(),
            message: self.message.clone(),
        }
    }

    /// What a job records when it fails with this error.
    pub(crate) fn to_failure(&self) -> JobFailure {
        JobFailure::new(self.code, self.message.clone())
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

/// The status of each error code a job can end with (the contract's table).
const STATUS_OF_CODE: &[(StatusCode, &str)] = &[
    (StatusCode::BAD_REQUEST, "invalid_request"),
    (StatusCode::BAD_REQUEST, "file_not_found"),
    (StatusCode::FORBIDDEN, "path_not_allowed"),
    (StatusCode::NOT_FOUND, "unknown_cloud"),
    (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large"),
    (StatusCode::UNPROCESSABLE_ENTITY, "openstack_unauthorized"),
    (StatusCode::UNPROCESSABLE_ENTITY, "unsafe_image"),
    (StatusCode::INSUFFICIENT_STORAGE, "insufficient_space"),
    (StatusCode::BAD_GATEWAY, "get_image_failed"),
    (StatusCode::BAD_GATEWAY, "upload_image_failed"),
    (StatusCode::BAD_GATEWAY, "openstack_connection_failed"),
    (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    (StatusCode::CONFLICT, "conflict"),
    (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
    // A stop cut the job off: the daemon is (or was) going away.
    (StatusCode::SERVICE_UNAVAILABLE, JobFailure::INTERRUPTED),
    (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
];

impl From<JobsError> for ApiError {
    fn from(err: JobsError) -> Self {
        Self::from(&err)
    }
}

impl From<&JobsError> for ApiError {
    fn from(err: &JobsError) -> Self {
        let message = err.to_string();
        match err {
            JobsError::Conflict { .. } => Self::conflict(message),
            JobsError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            JobsError::TooManyUploads { retry_after, .. } => ApiError {
                retry_after: Some(retry_after.as_secs()),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_uploads", message)
            },
            JobsError::Finished { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                JobFailure::INTERRUPTED,
                message,
            ),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message),
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
        let retry_after = self.retry_after;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        Self::from(&err)
    }
}

impl From<&RegistryError> for ApiError {
    fn from(err: &RegistryError) -> Self {
        let message = err.to_string();
        match err {
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
        Self::from(&err)
    }
}

impl From<&ImageError> for ApiError {
    fn from(err: &ImageError) -> Self {
        let message = err.to_string();
        match err {
            ImageError::Invalid(_) => Self::invalid_request(message),
            ImageError::Source(SourceError::NotAllowed { .. }) => {
                Self::new(StatusCode::FORBIDDEN, "path_not_allowed", message)
            }
            ImageError::Source(
                SourceError::NotAbsolute(_) | SourceError::DescriptorNotReadable { .. },
            ) => Self::invalid_request(message),
            ImageError::Source(
                SourceError::NotFound { .. }
                | SourceError::Read { .. }
                | SourceError::DescriptorNotFile { .. },
            ) => Self::new(StatusCode::BAD_REQUEST, "file_not_found", message),
            ImageError::Source(SourceError::Abandoned)
            | ImageError::Verification { .. }
            | ImageError::Stalled { .. }
            | ImageError::NotActivated { .. }
            | ImageError::Import { .. }
            | ImageError::FileChanged { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "upload_image_failed", message)
            }
            ImageError::Unsafe { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unsafe_image", message)
            }
            ImageError::Convert(ConvertError::InsufficientSpace { .. }) => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_space",
                message,
            ),
            ImageError::Convert(
                ConvertError::Failed { .. }
                | ConvertError::Unsupported(_)
                | ConvertError::NoConversion { .. },
            ) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unsafe_image", message),
            ImageError::Convert(ConvertError::Staging { .. }) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
            ImageError::Cloud(registry) => registry.into(),
            ImageError::Get(os) => Self::openstack(os, "get_image_failed"),
            ImageError::Upload(os) => Self::openstack(os, "upload_image_failed"),
            ImageError::UploadIdInUse(_) => Self::conflict(message),
            ImageError::Job(job) => job.into(),
            ImageError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
        }
    }
}
