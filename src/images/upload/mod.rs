//! An upload, as stages a reader can follow:
//!
//! 1. **open** ([`ImageService::prepare`]): the file judged and opened as one
//!    step, the clouds looked up (and, for several, checked not to share a
//!    Glance project), before a job exists;
//! 2. **queue**: the name's lock in every cloud, then an upload slot;
//! 3. **skip** (`skip_unchanged` only): the file hashed first; a cloud whose
//!    newest image of the name has the same bytes is done;
//! 4. **create** the image in each cloud;
//! 5. **stream**: one read of the file ([`reader`]), each block to every cloud
//!    (a cloud whose `image_format` differs from the file's gets a conversion
//!    made once for all that want it, read once too: [`targets`]);
//! 6. **verify**: each image active and holding the file's bytes ([`verify`]);
//! 7. **prune** the old revisions in each cloud.
//!
//! Each cloud goes through the stages on its own: one cloud's failure (a stall,
//! a 5xx, a mismatch, a quota) deletes that cloud's image and drops it, and the
//! others go on. The per-cloud work of a stage is in [`cloud`].

mod activation;
mod cloud;
mod import;
pub(crate) mod reader;
mod report;
mod targets;
pub(crate) mod verify;

use std::sync::Arc;

use tokio::time::Instant;

use super::names::ImageName;
use super::progress::UploadReservation;
use super::request::{Src, Targets, UploadRequest};
use super::source::SourceFile;
use super::{ImageError, ImageService, ImageSettings, UploadOutcome};
use crate::jobs::{JobFailure, JobRequest, JobState, JobTask};
use crate::openstack::glance::{DiskFormat, Image};
use crate::openstack::session::Session;
use activation::UploadClocks;
pub(crate) use import::GlanceWays;
use import::Way;
use report::Report;

/// An upload whose request, file and clouds were checked (the request's errors
/// are answered before a job exists), ready to run as a job.
#[derive(Debug)]
pub(crate) struct PreparedUpload {
    request: UploadRequest,
    /// Opened where it was judged: the file read is the file judged.
    source: SourceFile,
    /// The clouds, in the request's order; a cloud that could not authenticate
    /// when several were checked carries its error.
    clouds: Vec<(Arc<Session>, Option<ImageError>)>,
    /// The disk format each cloud gets (`image_format`), in `clouds`' order.
    formats: Vec<DiskFormat>,
    /// The upload id (the image's marker), held until the upload ends.
    reservation: UploadReservation,
}

impl PreparedUpload {
    /// The bytes the upload reads: the file's size, plus a converted disk's
    /// for clouds that want another format.
    pub(crate) fn size(&self) -> u64 {
        let file_format = self
            .request
            .disk_format
            .unwrap_or(self.source.detect_disk_format());
        targets::bytes_to_read(&self.source, file_format, &self.formats)
    }

    /// The clouds it goes to, in the request's order.
    pub(crate) fn clouds(&self) -> Vec<String> {
        self.clouds
            .iter()
            .map(|(s, _)| s.name().to_string())
            .collect()
    }

    /// Whether the request named its clouds with `clouds` (the answer and the
    /// job are then per cloud, even for one).
    pub(crate) fn per_cloud(&self) -> bool {
        !matches!(self.request.targets, Targets::One(_))
    }

    /// The request it came from.
    pub(crate) fn request(&self) -> &UploadRequest {
        &self.request
    }
}

/// What happened in one cloud.
pub(crate) type CloudOutcome = (String, Result<UploadOutcome, ImageError>);

/// One cloud of an upload, as it goes through the stages.
#[derive(Debug)]
struct CloudRun {
    session: Arc<Session>,
    stage: Stage,
    /// The try under way: a transient fault sends the cloud through the
    /// stages again, up to `upload_attempts` tries.
    attempts: u32,
    /// How this try sends its data, chosen when its image is created.
    way: Way,
    /// The disk format Glance gets: the file's, or the cloud's `image_format`.
    disk_format: DiskFormat,
    /// Its place in the request: the runs are sorted by format while the
    /// stages run, and back in this order for the answer.
    position: usize,
}

#[derive(Debug)]
enum Stage {
    /// Not created yet.
    Waiting,
    Created(Image),
    /// Every byte sent and answered; the activation clock runs from `last_byte`.
    Sent {
        image: Image,
        last_byte: Instant,
    },
    Verified(Image),
    /// Verified and recorded kept: from here on nothing deletes it.
    Kept(Image),
    Done(UploadOutcome),
    /// A transient fault ended this try (its image deleted): the cloud goes
    /// through the stages again after the backoff.
    Retry(ImageError),
    /// `auto` met a 403 to a direct upload from a Glance that offers import:
    /// the same try goes on by import with a fresh image, at once.
    Switched,
    Failed(ImageError),
}

impl CloudRun {
    fn cloud(&self) -> &str {
        self.session.name()
    }

    /// The image this upload made and has not finished with.
    fn unfinished_image(&self) -> Option<&str> {
        match &self.stage {
            Stage::Created(image) | Stage::Sent { image, .. } | Stage::Verified(image) => {
                Some(&image.id)
            }
            _ => None,
        }
    }

    fn is_live(&self) -> bool {
        !matches!(self.stage, Stage::Done(_) | Stage::Failed(_))
    }
}

/// What every stage of one upload shares.
struct Upload<'a, R: JobRequest> {
    service: &'a ImageService,
    settings: Arc<ImageSettings>,
    request: &'a UploadRequest,
    name: ImageName,
    upload_id: &'a str,
    /// The disk format the file's first bytes say (when the request gives none).
    detected_format: DiskFormat,
    clocks: UploadClocks,
    report: Report<'a, R>,
}

impl ImageService {
    /// Checks what can be checked before an upload becomes a job: where the file
    /// is (first: `path_not_allowed`), that it is a regular file, the clouds,
    /// that several clouds do not reach one Glance project, and that `upload_id`
    /// (an `X-Request-Id`) is not used by an upload under way. `passed` is the
    /// file of a `src_fd` request, already checked ([`ImageService::open_passed`]).
    pub(crate) async fn prepare(
        &self,
        request: UploadRequest,
        passed: Option<SourceFile>,
        upload_id: &str,
    ) -> Result<PreparedUpload, ImageError> {
        let source = match (passed, &request.src) {
            (Some(source), Src::Descriptor(_)) => source,
            (None, Src::Path(path)) => self.open_source(path).await?,
            (_, src) => {
                return Err(ImageError::Internal(format!(
                    "the upload's file does not match its request ({src:?})"
                )))
            }
        };
        let file_format = source
            .judge(request.disk_format, request.container_format)
            .map_err(|reason| ImageError::Unsafe {
                path: source.path.clone(),
                reason,
            })?;
        let sessions = match &request.targets {
            Targets::One(name) => vec![self.clouds.session(name.as_deref())?],
            Targets::Several(names) => names
                .iter()
                .map(|n| self.clouds.session(Some(n)))
                .collect::<Result<_, _>>()?,
            Targets::Every => self.every_session()?,
        };
        let one = matches!(request.targets, Targets::One(_));
        let mut clouds = match request.targets {
            Targets::One(_) => {
                for session in &sessions {
                    self.check_stores(session).await?;
                }
                sessions.into_iter().map(|s| (s, None)).collect()
            }
            _ => {
                let mut clouds = cloud::distinct_projects(sessions).await?;
                for (session, refused) in &mut clouds {
                    if refused.is_none() {
                        *refused = self.check_stores(session).await.err();
                    }
                }
                clouds
            }
        };
        let formats = targets::plan(
            &source,
            file_format,
            request.container_format,
            &self.settings().state_dir,
            &mut clouds,
            one,
        )?;
        let reservation = self.in_flight.reserve(upload_id)?;
        Ok(PreparedUpload {
            request,
            source,
            clouds,
            formats,
            reservation,
        })
    }

    /// Runs a prepared upload as `job` (see the module for the stages): every
    /// cloud's outcome in the request's order, or the error that ended the whole
    /// job (a stop). Per cloud, a failure leaves no image behind (the reaper
    /// retries a failed delete). `to_failure` says what a failed cloud records.
    pub(crate) async fn run_job<R: JobRequest>(
        &self,
        prepared: PreparedUpload,
        job: &JobTask<R>,
        to_failure: &(dyn Fn(&ImageError) -> JobFailure + Sync),
    ) -> Result<Vec<CloudOutcome>, ImageError> {
        let per_cloud = prepared.per_cloud();
        let PreparedUpload {
            request,
            source,
            clouds,
            formats,
            reservation,
        } = prepared;
        let settings = self.settings();
        let upload = Upload {
            service: self,
            name: request.family.image_name(&settings.template),
            clocks: UploadClocks {
                stall: settings.upload_stall_timeout,
                activation: settings.activation_timeout,
                import: settings.import_timeout,
            },
            settings,
            request: &request,
            upload_id: &reservation.upload_id,
            detected_format: source.detect_disk_format(),
            report: Report::new(job, per_cloud, to_failure),
        };
        let mut runs = Vec::new();
        for (position, ((session, refused), disk_format)) in
            clouds.into_iter().zip(formats).enumerate()
        {
            let stage = match refused {
                Some(err) => {
                    upload.report.cloud_failed(session.name(), &err).await?;
                    Stage::Failed(err)
                }
                None => Stage::Waiting,
            };
            runs.push(CloudRun {
                session,
                stage,
                attempts: 1,
                way: Way::Direct,
                disk_format,
                position,
            });
        }
        // Each format's clouds side by side: one slice per format.
        let order = targets::group_order(&runs);
        runs.sort_by_key(|r| order.iter().position(|f| *f == r.disk_format));
        let ended = upload.run_stages(&mut runs, source, &reservation).await;
        upload.clean_up(&mut runs, ended.as_ref().err()).await;
        runs.sort_by_key(|r| r.position);
        ended?;
        Ok(runs
            .into_iter()
            .map(|run| {
                let cloud = run.cloud().to_string();
                let result = match run.stage {
                    Stage::Done(answer) => Ok(answer),
                    Stage::Failed(err) => Err(err),
                    _ => Err(ImageError::Internal(format!(
                        "cloud '{cloud}': the upload ended before its last stage"
                    ))),
                };
                (cloud, result)
            })
            .collect())
    }
}

impl<R: JobRequest> Upload<'_, R> {
    /// The stages after open, in order; an error ends the whole job.
    async fn run_stages(
        &self,
        runs: &mut [CloudRun],
        source: SourceFile,
        reservation: &UploadReservation,
    ) -> Result<(), ImageError> {
        // The name's lock in each cloud (in one order, so two uploads never wait
        // for each other), then a slot: both waits show as `queued`.
        let locks = self.lock_names(runs);
        let mut guards = Vec::with_capacity(locks.len());
        for lock in &locks {
            guards.push(lock.lock().await);
        }
        let _slot = self.report.job.acquire_slot().await?;
        // Each format the clouds want, made once (the file's own: the file).
        let mut groups = self.make_targets(runs, source).await?;
        if self.request.skip_unchanged {
            self.skip_unchanged_groups(runs, &mut groups).await?;
        }
        loop {
            self.create(runs, reservation).await?;
            let streamed = self.stream_groups(runs, &mut groups).await?;
            self.verify_groups(runs, &streamed).await?;
            self.report.job_stage(JobState::Pruning).await?;
            // The clouds that succeeded are done before any other tries again.
            self.prune(runs).await?;
            if !self.retry_after_backoff(runs).await? {
                return Ok(());
            }
        }
    }

    /// The clouds a transient fault stopped wait out the backoff, then go
    /// through the stages again (those switched to import go again at once,
    /// the same try); `false` when there are none.
    async fn retry_after_backoff(&self, runs: &mut [CloudRun]) -> Result<bool, ImageError> {
        let tried = runs
            .iter()
            .filter(|r| matches!(r.stage, Stage::Retry(_)))
            .map(|r| r.attempts)
            .max();
        let mut switched = false;
        for run in runs.iter_mut() {
            if matches!(run.stage, Stage::Switched) {
                tracing::info!(cloud = %run.cloud(), "uploading again by import (glance-direct)");
                run.stage = Stage::Waiting;
                switched = true;
            }
        }
        let Some(tried) = tried else {
            return Ok(switched);
        };
        tokio::time::sleep(crate::images::retry::backoff(
            self.settings.upload_retry_backoff,
            tried,
        ))
        .await;
        for run in runs.iter_mut() {
            if let Stage::Retry(err) = &run.stage {
                run.attempts += 1;
                tracing::info!(cloud = %run.cloud(), attempt = run.attempts, after = %err, "trying the upload again");
                self.report
                    .cloud_retrying(run.cloud(), run.attempts)
                    .await?;
                run.stage = Stage::Waiting;
            }
        }
        Ok(true)
    }

    fn lock_names(&self, runs: &[CloudRun]) -> Vec<super::NameLock> {
        let mut clouds: Vec<&str> = runs
            .iter()
            .filter(|r| r.is_live())
            .map(|r| r.cloud())
            .collect();
        clouds.sort_unstable();
        clouds.dedup();
        clouds
            .into_iter()
            .map(|cloud| self.service.lock_for(cloud, &self.name))
            .collect()
    }

    /// Every image still unfinished when the stages ended (a stop, a bug) is
    /// deleted, and its cloud failed with `ended`'s error; a kept image stays,
    /// its cloud done with `prune_incomplete`.
    async fn clean_up(&self, runs: &mut [CloudRun], ended: Option<&ImageError>) {
        for run in runs.iter_mut() {
            if let Stage::Kept(image) = &run.stage {
                // Verified and kept: cut off in its prune, never deleted.
                let mut answer = self.answer(run, image, Vec::new(), Vec::new(), false);
                answer.prune_incomplete = true;
                run.stage = Stage::Done(answer);
                continue;
            }
            if run.unfinished_image().is_some() || (ended.is_some() && run.is_live()) {
                let err = ImageError::Internal(match ended {
                    Some(err) => format!("the upload was cut off: {err}"),
                    None => "the upload ended before its last stage".to_string(),
                });
                self.fail(run, err).await;
            }
        }
    }

    /// Fails one cloud: deletes its image (if it made one), records the failure.
    async fn fail(&self, run: &mut CloudRun, err: ImageError) {
        let cloud = run.cloud().to_string();
        self.discard_image(run, &err).await;
        // A job a stop ended keeps what the stop recorded.
        let _ = self.report.cloud_failed(&cloud, &err).await;
        run.stage = Stage::Failed(err);
    }

    /// A transient fault with tries left ends this try only (its image
    /// deleted): the cloud goes again after the backoff. A 403 to a direct
    /// upload on an `auto` cloud that offers import switches it to import
    /// (its image deleted, a fresh one made at once). Anything else fails it.
    async fn fail_or_retry(&self, run: &mut CloudRun, err: ImageError) {
        if run.way == Way::Direct && self.service.switch_to_import(&run.session, &err).await {
            self.discard_image(run, &err).await;
            run.stage = Stage::Switched;
            return;
        }
        if !err.is_transient() || run.attempts >= self.settings.upload_attempts {
            return self.fail(run, err).await;
        }
        tracing::warn!(cloud = %run.cloud(), attempt = run.attempts, error = %err, "transient fault; the upload will be tried again");
        self.discard_image(run, &err).await;
        run.stage = Stage::Retry(err);
    }

    /// Deletes the image this try made, if any (the reaper retries a failed delete).
    async fn discard_image(&self, run: &CloudRun, err: &ImageError) {
        let cloud = run.cloud();
        let Some(id) = run.unfinished_image() else {
            tracing::warn!(cloud = %cloud, error = %err, "upload failed");
            return;
        };
        tracing::warn!(cloud = %cloud, image = %id, error = %err, "upload failed; deleting the image");
        if let Err(delete_err) = run.session.glance().delete(id).await {
            tracing::error!(
                cloud = %cloud, image = %id, error = %delete_err,
                "could not delete the failed upload; the reaper will retry"
            );
        }
    }
}
