//! The OpenAPI document's frame: title, the bearer-token scheme every endpoint
//! but `/v1/health` requires, and the wire types as components. The paths come
//! from the handlers' `#[utoipa::path]` as the router registers them (see
//! `http::openapi_document`), so the document lists exactly the router's routes.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    CloudNames, CloudStatus, ErrorBody, ErrorDetail, Health, Job, JobCounts, JobList, Latest,
    PruneFailure, Status, UploadAnswer, UploadFields,
};
use crate::jobs::JobState;

/// The name of the security scheme in the document.
pub(crate) const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "openstack-image-helper",
        description = "Keeps a Juju charm's OpenStack images: uploads (as jobs), verifies, \
                       prunes, answers \"latest\". Every answer, errors included, is JSON; \
                       errors are `{\"error\": {\"code\", \"message\"}}`.",
    ),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    components(schemas(
        Health, Status, CloudStatus, JobCounts, CloudNames, Latest, UploadFields, UploadAnswer,
        PruneFailure, ErrorBody, ErrorDetail, Job, JobList, JobState
    ))
)]
pub(crate) struct ApiDoc;

/// `Authorization: Bearer <contents of api_token_file>`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The contents of the daemon's api_token_file."))
                    .build(),
            ),
        );
    }
}
