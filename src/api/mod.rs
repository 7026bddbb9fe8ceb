//! The API's wire types: every request and answer body of the HTTP API v1, in one
//! place. The handlers serialise them, the CLI deserialises the same types, and
//! the OpenAPI document ([`openapi`]) is generated from them, so a renamed field
//! shows in all three at once (and in the checked-in `docs/openapi.json`).
//!
//! Plain data: no HTTP, no Glance. Fields a 0.1 client does not know are
//! extensions of the contract (`/work/shared/API.md` allows new fields).

pub(crate) mod openapi;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::jobs::{JobFailure, JobId, JobRecord, JobState, StateCounts};

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok` while the process serves.
    #[schema(example = "ok")]
    pub(crate) status: String,
    /// The daemon's version (the crate's): the charm library checks it (0.3).
    #[schema(example = "0.3.0")]
    pub(crate) version: String,
    /// The API's major version, the `v1` of its paths (0.3).
    #[schema(example = 1)]
    pub(crate) api: u32,
}

/// One cloud in `GET /v1/status`. Never a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct CloudStatus {
    pub(crate) name: String,
    pub(crate) authenticated: bool,
    #[schema(required = true)]
    pub(crate) token_expires_at: Option<DateTime<Utc>>,
    /// As the catalog (or `image_endpoint_override`) gives it.
    #[schema(required = true)]
    pub(crate) image_endpoint: Option<String>,
    #[schema(required = true)]
    pub(crate) last_error: Option<String>,
    /// Extension: tokens requested since the session was created.
    pub(crate) token_requests: u64,
    /// Extension: 401 answers from Glance that forced a re-authentication.
    pub(crate) unauthorized_responses: u64,
    /// How image data goes to this cloud now: `direct` (`PUT .../file`) or
    /// `import` (glance-direct), by `image_upload_method`, `image_stores`, or
    /// learnt by `auto` from a 403 to a direct upload.
    #[schema(example = "direct")]
    pub(crate) upload_method: String,
}

impl From<crate::openstack::session::CloudStatus> for CloudStatus {
    fn from(s: crate::openstack::session::CloudStatus) -> Self {
        CloudStatus {
            name: s.name,
            authenticated: s.authenticated,
            token_expires_at: s.token_expires_at,
            image_endpoint: s.image_endpoint,
            last_error: s.last_error,
            token_requests: s.token_requests,
            unauthorized_responses: s.unauthorized_responses,
            upload_method: "direct".to_string(),
        }
    }
}

/// Jobs by state: `{"queued": n, "uploading": n, ...}`, every state present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct JobCounts {
    pub(crate) queued: usize,
    pub(crate) uploading: usize,
    pub(crate) verifying: usize,
    pub(crate) pruning: usize,
    pub(crate) succeeded: usize,
    pub(crate) failed: usize,
}

impl From<StateCounts> for JobCounts {
    fn from(c: StateCounts) -> Self {
        JobCounts {
            queued: c.get(JobState::Queued),
            uploading: c.get(JobState::Uploading),
            verifying: c.get(JobState::Verifying),
            pruning: c.get(JobState::Pruning),
            succeeded: c.get(JobState::Succeeded),
            failed: c.get(JobState::Failed),
        }
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Status {
    /// Exactly the configured clouds.
    pub(crate) clouds: Vec<CloudStatus>,
    /// Jobs holding an upload slot (`uploading`, `verifying` or `pruning`): at
    /// most `max_concurrent_uploads`.
    pub(crate) uploads_in_flight: usize,
    /// Extension: the cloud used when a request names none.
    #[schema(required = true)]
    pub(crate) default_cloud: Option<String>,
    /// Extension: the daemon's version.
    pub(crate) version: String,
    /// Extension: the jobs this daemon knows (running, and finished within
    /// `job_retention`), by state.
    pub(crate) jobs: JobCounts,
}

/// `PUT /v1/clouds`: the clouds now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct CloudNames {
    pub(crate) clouds: Vec<String>,
}

/// `GET /v1/images/latest`: the image name always, the image when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Latest {
    /// `null` when no active image of that name exists.
    #[schema(required = true)]
    pub(crate) id: Option<String>,
    /// The name the template gives.
    pub(crate) name: String,
    #[schema(required = true)]
    pub(crate) created_at: Option<DateTime<Utc>>,
}

/// `POST /v1/images`: the upload fields as they arrive, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadFields {
    /// focal, jammy, noble, resolute (or 20.04, 22.04, 24.04, 26.04).
    pub(crate) base: String,
    /// A Juju application name.
    pub(crate) app_name: String,
    /// x64, arm64, s390x, ppc64le.
    pub(crate) arch: String,
    /// How many active revisions to keep, the new one included (at least 1).
    pub(crate) num_revisions: u32,
    /// The image file; must resolve inside one of the daemon's `upload_dirs`.
    /// Exactly one of `src_path` and `src_fd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, nullable = false)]
    pub(crate) src_path: Option<PathBuf>,
    /// Over the unix socket only: the image file as a descriptor sent with the
    /// request (`SCM_RIGHTS` on its first bytes), counted from 0; an open,
    /// readable, regular file, wherever it is (0.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub(crate) src_fd: Option<u32>,
    /// The cloud (default: the daemon's default cloud). Not with `clouds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) cloud: Option<String>,
    /// Several clouds from one read of the file (`["*"]`: every configured
    /// cloud); the answer and the job are then per cloud. Not with `cloud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) clouds: Option<Vec<String>>,
    /// Hash the file first, and upload only to the clouds whose newest active
    /// image of the name holds other bytes (the others answer it, `unchanged`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) skip_unchanged: bool,
    /// Default: detected from the file (qcow2, raw, vmdk, vhd, vhdx or iso);
    /// one the content contradicts is refused (422 unsafe_image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) disk_format: Option<String>,
    /// Default: bare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) container_format: Option<String>,
    /// Default: private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) visibility: Option<String>,
    /// Extra image properties (not the daemon's own, not Glance attributes;
    /// keys at most 255 characters, values at most 65535).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) properties: BTreeMap<String, String>,
    /// `delete` (default) or `hide`: revisions past `num_revisions` are
    /// deleted, or hidden (`os_hidden`), the hidden ones past a further
    /// `num_revisions` deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "hide")]
    pub(crate) retire: Option<String>,
    /// Tags added to the ones every image gets (`base:`, `arch:`, `app:`,
    /// `managed-by:openstack-image-helper`): at most 20, each 1 to 255 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
}

/// An old revision whose deletion failed (the upload itself succeeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct PruneFailure {
    pub(crate) id: String,
    /// `in_use` for a 409 from Glance (the image is kept and tried again at the
    /// next prune of the name), else the error's code.
    #[serde(default)]
    pub(crate) code: String,
    pub(crate) message: String,
}

impl PruneFailure {
    pub(crate) fn new(id: String, code: &str, message: String) -> PruneFailure {
        PruneFailure {
            id,
            code: code.to_string(),
            message,
        }
    }
}

/// `201` to `POST /v1/images`: the new image, active and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UploadAnswer {
    pub(crate) id: String,
    pub(crate) name: String,
    /// Always `active`.
    #[schema(example = "active")]
    pub(crate) status: String,
    pub(crate) size: u64,
    /// md5 of the bytes, as Glance reports it.
    pub(crate) checksum: String,
    pub(crate) os_hash_algo: String,
    pub(crate) os_hash_value: String,
    /// Every old image deleted.
    pub(crate) pruned: Vec<String>,
    /// Old images hidden (`retire: hide`), not deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) hidden: Vec<String>,
    /// The stores the image is in (a multi-store Glance), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) stores: Option<Vec<String>>,
    /// Extension: old images whose deletion failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) prune_failed: Vec<PruneFailure>,
    /// Extension: the cloud it went to.
    pub(crate) cloud: String,
    /// Extension: the upload's id, the value of the image's upload marker (the
    /// request's `X-Request-Id`, else the job id).
    pub(crate) upload_id: String,
    /// `true` when `skip_unchanged` found this image already holding the file's
    /// bytes: nothing was uploaded or pruned.
    #[serde(default)]
    pub(crate) unchanged: bool,
    /// `true` when a stop or a crash cut the prune short: the new image is
    /// active and kept; the next upload of the name prunes the rest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) prune_incomplete: bool,
    /// How many tries the upload took (transient faults are retried).
    #[serde(default = "one")]
    pub(crate) attempts: u32,
    /// Extension (0.3): the file's disk format, detected from its content.
    #[serde(default)]
    #[schema(example = "qcow2")]
    pub(crate) format: String,
    /// Extension (0.3): the disk format Glance holds the image as.
    #[serde(default)]
    #[schema(example = "qcow2")]
    pub(crate) disk_format: String,
}

fn one() -> u32 {
    1
}

/// One cloud's part of an upload to several clouds: its answer, or its error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum CloudUpload {
    Ok(Box<UploadAnswer>),
    Err(ErrorBody),
}

/// One cloud's part of `latest?cloud=*`: its answer, or its error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum CloudLatest {
    Ok(Latest),
    Err(ErrorBody),
}

/// `201` to `POST /v1/images` with `clouds`: every cloud succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UploadResults {
    pub(crate) results: BTreeMap<String, CloudUpload>,
}

/// `502` to `POST /v1/images` with `clouds`: some cloud failed; the clouds that
/// succeeded keep their new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UploadResultsError {
    /// `upload_image_failed`, naming the clouds that failed.
    pub(crate) error: ErrorDetail,
    pub(crate) results: BTreeMap<String, CloudUpload>,
}

/// `GET /v1/images/latest?cloud=*`: every cloud's answer, or its error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct LatestResults {
    pub(crate) results: BTreeMap<String, CloudLatest>,
}

/// One cloud of a job of several clouds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct JobCloud {
    pub(crate) state: JobState,
    /// Bytes this cloud's upload took so far.
    pub(crate) bytes_sent: u64,
    #[schema(required = true)]
    pub(crate) image_id: Option<String>,
    #[schema(required = true)]
    pub(crate) error: Option<ErrorDetail>,
    /// The try under way, or the last one (transient faults are retried).
    pub(crate) attempts: u32,
}

/// `{"code", "message"}` of an error, in an error answer or a failed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// One of the contract's error codes (or `interrupted` in a job).
    pub(crate) code: String,
    pub(crate) message: String,
}

/// Every error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

impl From<JobFailure> for ErrorDetail {
    fn from(f: JobFailure) -> Self {
        ErrorDetail {
            code: f.code,
            message: f.message,
        }
    }
}

/// `GET /v1/jobs/{id}`, and `202` to `POST /v1/images?wait=false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Job {
    /// 32 lowercase hex digits.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    pub(crate) job: JobId,
    pub(crate) state: JobState,
    /// Bytes of the file read and sent so far; it only grows.
    pub(crate) bytes_sent: u64,
    /// The file's size.
    pub(crate) bytes_total: u64,
    /// The new image, once created (it is the result only when `succeeded`).
    #[schema(required = true)]
    pub(crate) image_id: Option<String>,
    #[schema(required = true)]
    pub(crate) error: Option<ErrorDetail>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// The upload fields as the client sent them.
    pub(crate) request: UploadFields,
    /// Extension: the upload's answer once the job `succeeded`, else `null`
    /// (a job of one cloud).
    #[schema(required = true)]
    pub(crate) result: Option<UploadAnswer>,
    /// A job of several clouds (`clouds` in the request): each cloud's state;
    /// the job is `succeeded` only when every cloud is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) clouds: Option<BTreeMap<String, JobCloud>>,
    /// Extension, a job of several clouds: once it ended, each cloud's answer
    /// or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) results: Option<BTreeMap<String, CloudUpload>>,
}

impl Job {
    /// The wire form of a job's record and what it kept of its end: a job of
    /// one cloud keeps its answer when it succeeded, a job of several every
    /// cloud's result.
    pub(crate) fn new(record: JobRecord<UploadFields>, outcome: Option<serde_json::Value>) -> Job {
        let per_cloud = record.clouds.is_some();
        let (result, results) = match outcome {
            Some(value) if per_cloud => (
                None,
                serde_json::from_value::<UploadResults>(value)
                    .ok()
                    .map(|r| r.results),
            ),
            Some(value) => (serde_json::from_value(value).ok(), None),
            None => (None, None),
        };
        let clouds = record.clouds.map(|clouds| {
            clouds
                .into_iter()
                .map(|(name, c)| {
                    let cloud = JobCloud {
                        state: c.state,
                        bytes_sent: c.bytes_sent,
                        image_id: c.image_id,
                        error: c.error.map(ErrorDetail::from),
                        attempts: c.attempts,
                    };
                    (name, cloud)
                })
                .collect()
        });
        Job {
            job: record.job,
            state: record.state,
            bytes_sent: record.bytes_sent,
            bytes_total: record.bytes_total,
            image_id: record.image_id,
            error: record.error.map(ErrorDetail::from),
            created_at: record.created_at,
            updated_at: record.updated_at,
            request: record.request,
            result,
            clouds,
            results,
        }
    }
}

/// `GET /v1/jobs`: every job this daemon knows, the newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct JobList {
    pub(crate) jobs: Vec<Job>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_counts_serialise_like_the_jobs_own_counts() {
        let counts = serde_json::to_value(JobCounts::from(StateCounts::default())).unwrap();
        assert_eq!(
            serde_json::to_value(StateCounts::default()).unwrap(),
            counts
        );
    }
}
