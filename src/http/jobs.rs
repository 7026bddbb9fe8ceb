//! Uploads and jobs: `POST /v1/images` makes a job (or finds the one its
//! `Idempotency-Key` names) and answers at once (`?wait=false`) or when the job
//! ended; `GET /v1/jobs` and `GET /v1/jobs/{id}` show them. The job's task runs
//! the upload ([`ImageService::run_job`]) and records its answer or its error
//! with the contract's code.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::passed_fds::ReceivedFds;
use super::AppState;
use crate::api::{
    CloudUpload, ErrorBody, Job, JobList, UploadAnswer, UploadFields, UploadResults,
    UploadResultsError,
};
use crate::images::request::Src;
use crate::images::source::{FileIdentity, SourceFile};
use crate::images::{CloudOutcome, ImageError, ImageService, PreparedUpload, UploadRequest};
use crate::jobs::{IdempotencyKey, JobHandle, JobId, JobState, JobTask, Jobs, NewJob};

/// The daemon's jobs: every upload is one.
pub(crate) type UploadJobs = Jobs<UploadJobRequest>;

/// What a job records of its request: the fields as sent and, for a `src_fd`
/// upload, which file the descriptor was. A retry passes another descriptor; it
/// is the same request when it is the same file, unchanged (same device,
/// inode, size and modification time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct UploadJobRequest {
    /// The fields as the client sent them (what `GET /v1/jobs` shows).
    #[serde(flatten)]
    fields: UploadFields,
    /// The passed file (`src_fd` uploads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src_file: Option<FileIdentity>,
}

/// The query of `POST /v1/images`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadParams {
    /// `false`: answer `202` with the job at once instead of waiting for it.
    wait: Option<bool>,
}

/// Uploads an image file as a new revision, as a job.
#[utoipa::path(post, path = "/v1/images",
    params(UploadParams,
        ("Idempotency-Key" = Option<String>, Header,
            description = "Letters, digits and -_.: (at most 128): a retry with the same key \
                           and body gets the same job; another body is 409 conflict."),
        ("X-Request-Id" = Option<String>, Header,
            description = "Names the upload in the image's marker; one already used by an \
                           upload under way is 409 conflict.")),
    request_body = UploadFields,
    responses(
        (status = 201, body = Uploaded, description = "The new image (waiting form); with `clouds`, every cloud's (`results`)"),
        (status = 202, body = Job, description = "The job, under way (wait=false)"),
        (status = 200, body = Job, description = "The job the key names, already ended (wait=false)"),
        (status = 400, body = ErrorBody, description = "invalid_request, file_not_found"),
        (status = 403, body = ErrorBody, description = "path_not_allowed"),
        (status = 404, body = ErrorBody, description = "unknown_cloud"),
        (status = 409, body = ErrorBody, description = "conflict"),
        (status = 429, body = ErrorBody, description = "too_many_uploads: max_queued_uploads jobs are queued; Retry-After says when to try again"),
        (status = 413, body = ErrorBody, description = "image_too_large, request_too_large"),
        (status = 422, body = ErrorBody, description = "unsafe_image (the file's content is refused: the message says why), openstack_unauthorized"),
        (status = 502, body = UploadFailed, description = "upload_image_failed, get_image_failed, openstack_connection_failed; with `clouds`, also every cloud's result (`results`)"),
        (status = 503, body = ErrorBody, description = "not_ready, shutting_down, interrupted")))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Extension(received): Extension<ReceivedFds>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<UploadParams>,
    ApiJson(fields): ApiJson<UploadFields>,
) -> Result<Response, ApiError> {
    let wait = params.wait.unwrap_or(true);
    let key = idempotency_key(&headers)?;
    let request = UploadRequest::parse(fields.clone())
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let passed = open_passed(&state.images, &request.src, &received).await?;
    let src_file = passed
        .as_ref()
        .map(SourceFile::identity)
        .transpose()
        .map_err(ImageError::from)?;
    let fields = UploadJobRequest { fields, src_file };
    // Identical requests arriving together take turns under their key: the
    // second finds the first's job.
    let _turn = match &key {
        Some(key) => Some(state.jobs.take_turn(key).await),
        None => None,
    };
    // A retry is answered before its file or cloud are looked at: the file may be
    // gone by now, and the job is what the client wants.
    if let Some(retried) = retried_job(&state.jobs, key.as_ref(), &fields)? {
        return Ok(answer(&retried, wait, false).await);
    }
    // A full queue is answered before a file is opened (each queued job holds one).
    state.jobs.check_room()?;
    let id = JobId::random();
    let upload_id = request_id(&headers).unwrap_or_else(|| id.to_string());
    let prepared = match state.images.prepare(request, passed, &upload_id).await {
        Ok(prepared) => prepared,
        Err(err @ ImageError::UploadIdInUse(_)) => {
            // The same request sent twice at once under one key: the other one won.
            if let Some(retried) = retried_job(&state.jobs, key.as_ref(), &fields)? {
                return Ok(answer(&retried, wait, false).await);
            }
            return Err(err.into());
        }
        Err(err) => return Err(err.into()),
    };
    let submitted = state
        .jobs
        .submit(NewJob {
            id,
            request: fields,
            idempotency_key: key,
            bytes_total: prepared.size(),
            clouds: prepared.clouds(),
            per_cloud: prepared.per_cloud(),
        })
        .await?;
    drop(_turn);
    let created = submitted.task.is_some();
    if let Some(task) = submitted.task {
        // Every log line of the job names it, its cloud and its image.
        let span = tracing::info_span!(
            "job",
            job = %id,
            upload_id = %upload_id,
            cloud = %prepared.clouds().join(","),
            image = %state.images.image_name(&prepared.request().family),
        );
        let work = run_job(state.images.clone(), prepared, task).instrument(span);
        // Under the daemon's stop: a client that hangs up does not cancel it; a
        // stop lets it run for shutdown_grace (see crate::shutdown). Refused
        // once the stop began: the dropped task records the job interrupted.
        if state.images.shutdown().spawn(work).is_err() {
            tracing::info!(job = %id, "the daemon is stopping: the job does not start");
        }
    }
    Ok(answer(&submitted.handle, wait, created).await)
}

/// The file of a `src_fd` request: its descriptor taken from those the
/// request came with, and checked; `None` for a `src_path` request.
async fn open_passed(
    images: &ImageService,
    src: &Src,
    received: &ReceivedFds,
) -> Result<Option<SourceFile>, ApiError> {
    let Src::Descriptor(index) = *src else {
        return Ok(None);
    };
    let fd = received
        .take(index)
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    Ok(Some(images.open_passed(fd, index).await?))
}

fn retried_job(
    jobs: &UploadJobs,
    key: Option<&IdempotencyKey>,
    fields: &UploadJobRequest,
) -> Result<Option<JobHandle<UploadJobRequest>>, ApiError> {
    match key {
        Some(key) => Ok(jobs.find_by_key(key, fields)?),
        None => Ok(None),
    }
}

/// The `Idempotency-Key` header, if any; a malformed one is `400 invalid_request`.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = |e: crate::jobs::InvalidIdempotencyKey| ApiError::invalid_request(e.to_string());
    let text = value
        .to_str()
        .map_err(|_| invalid(crate::jobs::InvalidIdempotencyKey))?;
    text.parse().map(Some).map_err(invalid)
}

/// The caller's `X-Request-Id` names the upload (the image's marker) when it is a
/// sane token; otherwise the job id does.
fn request_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    let sane = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    sane.then(|| id.to_string())
}

/// The answer to `POST /v1/images` for `handle`'s job: at once (`wait=false`:
/// `202` while it runs or when it was just made, `200` when a retry finds it
/// ended), or once it ended (`201` with the upload's answer, or its error; for
/// a job of several clouds, with every cloud's result).
async fn answer(handle: &JobHandle<UploadJobRequest>, wait: bool, created: bool) -> Response {
    if !wait {
        let job = wire_job(handle);
        let status = if created || !job.state.is_terminal() {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        return (status, Json(job)).into_response();
    }
    let record = handle.wait_finished().await;
    let failure = record.error.clone().unwrap_or_else(|| {
        crate::jobs::JobFailure::new("internal_error", "the job failed without an error")
    });
    let results = handle
        .outcome()
        .and_then(|v| serde_json::from_value::<UploadResults>(v).ok());
    match (record.clouds.is_some(), record.state == JobState::Succeeded) {
        (true, succeeded) => match results {
            Some(results) if succeeded => (StatusCode::CREATED, Json(results)).into_response(),
            Some(results) => {
                let error = ApiError::of_failure(&failure);
                let body = UploadResultsError {
                    error: error.detail(),
                    results: results.results,
                };
                (error.status, Json(body)).into_response()
            }
            None if succeeded => lost_answer(&record),
            None => ApiError::of_failure(&failure).into_response(),
        },
        (false, true) => match handle
            .outcome()
            .and_then(|v| serde_json::from_value::<UploadAnswer>(v).ok())
        {
            Some(outcome) => (StatusCode::CREATED, Json(outcome)).into_response(),
            None => lost_answer(&record),
        },
        (false, false) => ApiError::of_failure(&failure).into_response(),
    }
}

fn lost_answer(record: &crate::jobs::JobRecord<UploadJobRequest>) -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        format!("job {} succeeded but its answer was not kept", record.job),
    )
    .into_response()
}

fn wire_job(handle: &JobHandle<UploadJobRequest>) -> Job {
    Job::new(handle.record().map_request(|r| r.fields), handle.outcome())
}

/// The job's task: the upload, then its answer or its error in the job.
async fn run_job(
    images: Arc<ImageService>,
    prepared: PreparedUpload,
    task: JobTask<UploadJobRequest>,
) {
    let job = task.id();
    let per_cloud = prepared.per_cloud();
    let started = std::time::Instant::now();
    let to_failure = |err: &ImageError| ApiError::from(err).to_failure();
    let outcomes = match images.run_job(prepared, &task, &to_failure).await {
        Ok(outcomes) => outcomes,
        Err(err) => {
            let failure = to_failure(&err);
            tracing::warn!(%job, code = %failure.code, message = %failure.message, "job failed");
            // A job a stop already ended stays as the stop recorded it.
            let _ = task.fail(failure).await;
            return;
        }
    };
    for (cloud, result) in &outcomes {
        crate::metrics::upload_ended(cloud, result.is_ok(), started.elapsed().as_secs_f64());
    }
    let recorded = if per_cloud {
        let results = UploadResults {
            results: outcomes.into_iter().map(cloud_result).collect(),
        };
        task.finish_from_clouds(serde_json::to_value(&results).ok())
            .await
    } else {
        match outcomes.into_iter().next().map(|(_, result)| result) {
            Some(Ok(answer)) => {
                let kept = serde_json::to_value(&answer).ok();
                task.succeed_with(&answer.id, kept).await
            }
            Some(Err(err)) => {
                let failure = to_failure(&err);
                tracing::warn!(%job, code = %failure.code, message = %failure.message, "job failed");
                task.fail(failure).await
            }
            None => {
                let failure =
                    crate::jobs::JobFailure::new("internal_error", "the upload had no cloud");
                task.fail(failure).await
            }
        }
    };
    match recorded {
        Ok(record) if record.state == JobState::Failed => {
            if let Some(error) = &record.error {
                tracing::warn!(%job, code = %error.code, message = %error.message, "job failed");
            }
        }
        Ok(_) => {}
        // A job a stop already ended stays as the stop recorded it.
        Err(err) => tracing::warn!(%job, error = %err, "cannot record the job's end"),
    }
}

/// One cloud's result as the answer and the job show it.
fn cloud_result((cloud, result): CloudOutcome) -> (String, CloudUpload) {
    let result = match result {
        Ok(answer) => CloudUpload::Ok(Box::new(answer)),
        Err(err) => CloudUpload::Err(ErrorBody {
            error: ApiError::from(&err).detail(),
        }),
    };
    (cloud, result)
}

/// `201` to `POST /v1/images`: one cloud's answer, or every cloud's (`clouds`).
#[derive(utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the answer's two shapes in the OpenAPI document"
)]
pub(crate) enum Uploaded {
    One(Box<UploadAnswer>),
    Several(UploadResults),
}

/// `502` to `POST /v1/images`: the error, and with `clouds` every cloud's result.
#[derive(utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the answer's two shapes in the OpenAPI document"
)]
pub(crate) enum UploadFailed {
    One(ErrorBody),
    Several(UploadResultsError),
}

/// One job.
#[utoipa::path(get, path = "/v1/jobs/{id}",
    params(("id" = String, Path, description = "The job id (32 lowercase hex digits)")),
    responses(
        (status = 200, body = Job),
        (status = 404, body = ErrorBody, description = "not_found: no such job")))]
pub(crate) async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let no_such_job = || ApiError::not_found(format!("no such job: '{id}'"));
    let parsed: JobId = id.parse().map_err(|_| no_such_job())?;
    let handle = state.jobs.handle(&parsed).ok_or_else(no_such_job)?;
    Ok(Json(wire_job(&handle)))
}

/// Every job (running, and ended within `job_retention`), the newest first.
#[utoipa::path(get, path = "/v1/jobs", responses((status = 200, body = JobList)))]
pub(crate) async fn jobs(State(state): State<AppState>) -> Json<JobList> {
    let jobs = state.jobs.handles().iter().map(wire_job).collect();
    Json(JobList { jobs })
}
