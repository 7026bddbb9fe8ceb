//! What an upload tells its job as it goes: the job's own stage, and, for a job
//! of several clouds (`"clouds"` in the request), each cloud's stage, image and
//! end. A job of one cloud (`"cloud"`) has no per-cloud part: the caller records
//! its end from the outcome.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::reader::Flow;
use crate::images::{ImageError, UploadOutcome};
use crate::jobs::{JobFailure, JobRequest, JobState, JobTask, JobsError};

pub(super) struct Report<'a, R: JobRequest> {
    pub(super) job: &'a JobTask<R>,
    per_cloud: bool,
    to_failure: &'a (dyn Fn(&ImageError) -> JobFailure + Sync),
}

impl<'a, R: JobRequest> Report<'a, R> {
    pub(super) fn new(
        job: &'a JobTask<R>,
        per_cloud: bool,
        to_failure: &'a (dyn Fn(&ImageError) -> JobFailure + Sync),
    ) -> Self {
        Report {
            job,
            per_cloud,
            to_failure,
        }
    }

    /// The job moves to `state` (`verifying`, `pruning`); a job already past
    /// it (a cloud's next try) stays where it is.
    pub(super) async fn job_stage(&self, state: JobState) -> Result<(), JobsError> {
        already_past(self.job.advance(state).await)
    }

    /// One cloud moves to `state` (not a terminal one), unless already past it.
    pub(super) async fn cloud_stage(&self, cloud: &str, state: JobState) -> Result<(), JobsError> {
        if self.per_cloud {
            already_past(self.job.advance_cloud(cloud, state).await)?;
        }
        Ok(())
    }

    /// One cloud starts its try number `attempt` after a transient fault.
    pub(super) async fn cloud_retrying(&self, cloud: &str, attempt: u32) -> Result<(), JobsError> {
        crate::metrics::upload_retried(cloud);
        if self.per_cloud {
            self.job.cloud_attempt(cloud, attempt).await?;
        }
        Ok(())
    }

    /// One cloud's image exists (recorded at once: a restart deletes it).
    pub(super) async fn image_created(&self, cloud: &str, image_id: &str) -> Result<(), JobsError> {
        self.job.image_created(cloud, image_id).await
    }

    /// One cloud's image is verified and kept, with the answer a stop would
    /// leave (recorded before it returns).
    pub(super) async fn image_kept(
        &self,
        cloud: &str,
        answer: &UploadOutcome,
    ) -> Result<(), JobsError> {
        let value = serde_json::to_value(answer).map_err(|source| JobsError::Request {
            job: self.job.id(),
            source,
        })?;
        self.job.image_kept(cloud, &answer.id, value).await
    }

    pub(super) async fn cloud_succeeded(
        &self,
        cloud: &str,
        image_id: &str,
    ) -> Result<(), JobsError> {
        if self.per_cloud {
            self.job.succeed_cloud(cloud, image_id).await?;
        }
        Ok(())
    }

    pub(super) async fn cloud_failed(
        &self,
        cloud: &str,
        err: &ImageError,
    ) -> Result<(), JobsError> {
        if self.per_cloud {
            self.job.fail_cloud(cloud, (self.to_failure)(err)).await?;
        }
        Ok(())
    }
}

/// A move backwards is no error while the job runs: a cloud's next try goes
/// through the stages again while the job (or the cloud) shows the furthest.
fn already_past(moved: Result<(), JobsError>) -> Result<(), JobsError> {
    match moved {
        Err(JobsError::IllegalTransition { from, .. }) if !from.is_terminal() => Ok(()),
        other => other,
    }
}

impl<R: JobRequest> Report<'_, R> {
    /// How one cloud's bytes count: in the job's `bytes_sent` for a job of one
    /// cloud, in that cloud's for a job of several.
    pub(super) fn flow(&self, cloud: &str) -> Flow {
        let counter = if self.per_cloud {
            self.job.cloud_bytes_sent(cloud).unwrap_or_default()
        } else {
            self.job.bytes_sent()
        };
        Flow::counting_into(counter.atomic())
    }

    /// What the reader counts the bytes it handed to every cloud into: a job of
    /// several clouds' own `bytes_sent`, on the first read (a retry's read of
    /// the file again counts nowhere: `bytes_sent` is the file read once).
    pub(super) fn read_counter(&self, first_read: bool) -> Arc<AtomicU64> {
        if self.per_cloud && first_read {
            self.job.bytes_sent().atomic()
        } else {
            Arc::default()
        }
    }
}
