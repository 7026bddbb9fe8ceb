//! One job in memory: its record behind a lock, its byte counters as atomics (the
//! file reader bumps them per block), a watch of its state for waiters, and the
//! writes of its record to disk.
//!
//! The read side is [`JobHandle`] (the HTTP layer, waiters); the write side is
//! [`JobTask`], owned by the one task that runs the upload.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::slots::UploadSlot;

use super::model::{
    CloudProgress, CreatedImage, Fingerprint, IdempotencyKey, JobFailure, JobId, JobRecord,
    JobRequest, JobState,
};
use super::store::StoredJob;
use super::{JobsCtx, JobsError};

/// How often, at most, a job's progress (`bytes_sent` alone) is written to disk.
/// State changes are written at once.
pub const PROGRESS_PERSIST_INTERVAL: Duration = Duration::from_secs(5);

/// A count of bytes that only grows: shared by the file reader, the stall watch
/// and the job's record.
#[derive(Debug, Clone, Default)]
pub struct ByteCounter(Arc<AtomicU64>);

impl ByteCounter {
    /// Adds `n` bytes; returns the new total.
    #[cfg(test)]
    pub fn add(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed).saturating_add(n)
    }

    /// Raises the count to `n`; a lower `n` leaves it as it is (it never shrinks).
    pub fn advance_to(&self, n: u64) -> u64 {
        self.0.fetch_max(n, Ordering::Relaxed).max(n)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The shared atomic itself, for code that counts into an `AtomicU64` (the
    /// file reader, the stall watch). Only ever add to it.
    pub fn atomic(&self) -> Arc<AtomicU64> {
        self.0.clone()
    }
}

/// The part of a job the lock guards: the record (its byte counts are filled in
/// from the counters when it is read) and the images it created.
#[derive(Debug)]
pub(crate) struct JobData<R> {
    pub(super) record: JobRecord<R>,
    pub(super) images: Vec<CreatedImage>,
    /// What the job answered when it succeeded (see [`JobTask::succeed_with`]).
    pub(super) outcome: Option<serde_json::Value>,
}

/// A job in memory.
#[derive(Debug)]
pub(crate) struct JobShared<R> {
    pub(super) id: JobId,
    /// Compared with a retried request's under the same key.
    pub(crate) fingerprint: Fingerprint,
    /// The request's `Idempotency-Key`, if any.
    pub(crate) key: Option<IdempotencyKey>,
    bytes_sent: ByteCounter,
    /// Per cloud, for a job of several clouds (fixed at creation).
    cloud_bytes: BTreeMap<String, ByteCounter>,
    data: Mutex<JobData<R>>,
    /// The current state, for waiters and for counting without the lock.
    state: watch::Sender<JobState>,
    /// Held while the record is written, so that writes reach the disk in order.
    write_lock: Mutex<()>,
    /// The progress (sum of every byte counter) in the last record written.
    persisted_progress: AtomicU64,
    ctx: Arc<JobsCtx>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<R: JobRequest> JobShared<R> {
    /// A job from its stored form (new or read back at start-up).
    pub(crate) fn from_stored(stored: StoredJob<R>, ctx: Arc<JobsCtx>) -> Result<Self, JobsError> {
        let record = stored.record;
        let fingerprint =
            Fingerprint::of(&record.request).map_err(|source| JobsError::Request {
                job: record.job,
                source,
            })?;
        let cloud_bytes = record
            .clouds
            .iter()
            .flatten()
            .map(|(name, c)| (name.clone(), counter_at(c.bytes_sent)))
            .collect();
        let bytes_sent = counter_at(record.bytes_sent);
        let (state, _) = watch::channel(record.state);
        let shared = JobShared {
            id: record.job,
            fingerprint,
            key: stored.idempotency_key,
            bytes_sent,
            cloud_bytes,
            data: Mutex::new(JobData {
                record,
                images: stored.images,
                outcome: stored.outcome,
            }),
            state,
            write_lock: Mutex::new(()),
            persisted_progress: AtomicU64::new(0),
            ctx,
        };
        shared
            .persisted_progress
            .store(shared.progress(), Ordering::Relaxed);
        Ok(shared)
    }

    pub(crate) fn id(&self) -> JobId {
        self.id
    }

    pub(crate) fn state(&self) -> JobState {
        *self.state.borrow()
    }

    pub(crate) fn snapshot(&self) -> JobRecord<R> {
        let data = lock(&self.data);
        self.fill_counts(data.record.clone())
    }

    fn fill_counts(&self, mut record: JobRecord<R>) -> JobRecord<R> {
        record.bytes_sent = self.bytes_sent.get();
        for (name, cloud) in record.clouds.iter_mut().flatten() {
            if let Some(counter) = self.cloud_bytes.get(name) {
                cloud.bytes_sent = counter.get();
            }
        }
        record
    }

    fn stored(&self) -> StoredJob<R> {
        let data = lock(&self.data);
        let mut stored = StoredJob::new(
            self.fill_counts(data.record.clone()),
            self.key.clone(),
            data.images.clone(),
        );
        stored.outcome = data.outcome.clone();
        stored
    }

    /// The images this job created that a stop cut off, to delete: all of them
    /// but the kept ones (verified: a stop never deletes them) and those of
    /// clouds of a job of several clouds that already succeeded.
    pub(crate) fn unfinished_images(&self) -> Vec<CreatedImage> {
        let data = lock(&self.data);
        let done = |cloud: &str| {
            data.record.clouds.as_ref().is_some_and(|clouds| {
                clouds
                    .get(cloud)
                    .is_some_and(|c| c.state == JobState::Succeeded)
            })
        };
        data.images
            .iter()
            .filter(|image| image.kept.is_none() && !done(&image.cloud))
            .cloned()
            .collect()
    }

    /// Whether the job ended more than `retention` before `now`.
    pub(crate) fn expired(&self, now: DateTime<Utc>, retention: Duration) -> bool {
        let data = lock(&self.data);
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        data.record.state.is_terminal()
            && data
                .record
                .updated_at
                .checked_add_signed(retention)
                .is_some_and(|until| until <= now)
    }

    pub(crate) fn created_at(&self) -> DateTime<Utc> {
        lock(&self.data).record.created_at
    }

    fn progress(&self) -> u64 {
        self.cloud_bytes
            .values()
            .fold(self.bytes_sent.get(), |sum, c| sum.saturating_add(c.get()))
    }

    /// Changes the record under the lock, stamps `updated_at` and publishes the
    /// state. Does not write it: call [`JobShared::persist`] after.
    pub(crate) fn update(
        &self,
        change: impl FnOnce(&mut JobData<R>) -> Result<(), JobsError>,
    ) -> Result<(), JobsError> {
        let mut data = lock(&self.data);
        change(&mut data)?;
        data.record.updated_at = Utc::now();
        let state = data.record.state;
        self.state.send_replace(state);
        Ok(())
    }

    /// Moves the job to `next` (a forward move, or `failed` from any state that
    /// is not terminal), with its error when it fails.
    pub(crate) fn transition(
        &self,
        next: JobState,
        failure: Option<JobFailure>,
    ) -> Result<(), JobsError> {
        self.update(|data| {
            let from = data.record.state;
            if !from.can_move_to(next) {
                return Err(JobsError::IllegalTransition {
                    job: self.id,
                    from,
                    to: next,
                });
            }
            data.record.state = next;
            if next == JobState::Failed {
                data.record.error = failure;
                // Clouds still under way end with the job.
                let error = data.record.error.clone();
                for cloud in data.record.clouds.iter_mut().flatten().map(|(_, c)| c) {
                    if !cloud.state.is_terminal() {
                        cloud.state = JobState::Failed;
                        cloud.error = cloud.error.take().or_else(|| error.clone());
                    }
                }
            }
            Ok(())
        })
    }

    /// Writes the record now (blocking: fsync). Writes are serialised and each
    /// takes its snapshot under the write lock, so the last write is the newest.
    pub(crate) fn persist_blocking(&self) -> std::io::Result<()> {
        let _in_order = lock(&self.write_lock);
        let progress = self.progress();
        let stored = self.stored();
        self.ctx.store.write(&stored)?;
        self.persisted_progress.store(progress, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the record from async code; a failure is logged (the job goes on,
    /// and the reaper is the backstop for its images).
    pub(crate) async fn persist(self: &Arc<Self>) {
        if let Err(err) = self.persist_checked().await {
            tracing::error!(job = %self.id, error = %err, "cannot record the job's state");
        }
    }

    /// Writes the record from async code and says whether it worked.
    pub(crate) async fn persist_checked(self: &Arc<Self>) -> std::io::Result<()> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.persist_blocking())
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join)))
    }

    /// Waits until the job is terminal.
    async fn finished(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = rx.wait_for(|s| s.is_terminal()).await;
    }

    /// Writes progress at most every [`PROGRESS_PERSIST_INTERVAL`] while the job
    /// runs, and only when a byte counter moved since the last write.
    async fn persist_progress_until_finished(self: Arc<Self>) {
        let mut rx = self.state.subscribe();
        loop {
            if rx.borrow_and_update().is_terminal() {
                return;
            }
            tokio::select! {
                _ = rx.changed() => {}
                () = tokio::time::sleep(PROGRESS_PERSIST_INTERVAL) => {
                    if self.progress() != self.persisted_progress.load(Ordering::Relaxed) {
                        self.persist().await;
                    }
                }
            }
        }
    }
}

fn counter_at(n: u64) -> ByteCounter {
    let counter = ByteCounter::default();
    counter.advance_to(n);
    counter
}

/// A job as the HTTP layer and waiters see it.
#[derive(Debug)]
pub struct JobHandle<R> {
    pub(crate) shared: Arc<JobShared<R>>,
}

impl<R> Clone for JobHandle<R> {
    fn clone(&self) -> Self {
        JobHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<R: JobRequest> JobHandle<R> {
    #[cfg(test)]
    pub fn id(&self) -> JobId {
        self.shared.id()
    }

    #[cfg(test)]
    pub fn state(&self) -> JobState {
        self.shared.state()
    }

    /// The record as `GET /v1/jobs/{id}` shows it, with the current byte counts.
    pub fn record(&self) -> JobRecord<R> {
        self.shared.snapshot()
    }

    /// The answer the job's task gave when it succeeded ([`JobTask::succeed_with`]).
    pub fn outcome(&self) -> Option<serde_json::Value> {
        lock(&self.shared.data).outcome.clone()
    }

    /// Waits until the job succeeded or failed, and returns its record.
    pub async fn wait_finished(&self) -> JobRecord<R> {
        self.shared.finished().await;
        self.record()
    }
}

/// The write side of a job, owned by the task that runs its upload. Dropped
/// before the job ended (a panic, an abort), it records the job `failed`:
/// `interrupted` when the daemon is stopping, else `internal_error`.
#[derive(Debug)]
pub struct JobTask<R: JobRequest> {
    pub(crate) shared: Arc<JobShared<R>>,
}

impl<R: JobRequest> JobTask<R> {
    pub fn id(&self) -> JobId {
        self.shared.id()
    }

    #[cfg(test)]
    pub fn handle(&self) -> JobHandle<R> {
        JobHandle {
            shared: self.shared.clone(),
        }
    }

    /// The job's `bytes_sent`, for the file reader to count blocks into.
    pub fn bytes_sent(&self) -> ByteCounter {
        self.shared.bytes_sent.clone()
    }

    /// One cloud's `bytes_sent`, for a job of several clouds.
    pub fn cloud_bytes_sent(&self, cloud: &str) -> Option<ByteCounter> {
        self.shared.cloud_bytes.get(cloud).cloned()
    }

    /// Waits as `queued` for one of the `max_concurrent_uploads` slots, then moves
    /// the job to `uploading`. Take the name's lock before: waiting for it is
    /// `queued` too. A stop while waiting records the job `failed`/`interrupted`
    /// and answers [`JobsError::ShuttingDown`].
    pub async fn acquire_slot(&self) -> Result<UploadSlot, JobsError> {
        let slots = self.shared.ctx.slots.clone();
        let slot = tokio::select! {
            slot = slots.acquire() => slot,
            () = self.shared.finished() => {
                return Err(JobsError::Finished { job: self.id(), state: self.shared.state() })
            }
        };
        let Ok(slot) = slot else {
            // The semaphore is closed only by a stop.
            let failure = JobFailure::interrupted(
                "the daemon was stopping before the job got an upload slot",
            );
            self.shared.transition(JobState::Failed, Some(failure))?;
            self.shared.persist().await;
            return Err(JobsError::ShuttingDown);
        };
        self.advance(JobState::Uploading).await?;
        tokio::spawn(self.shared.clone().persist_progress_until_finished());
        Ok(slot)
    }

    /// Moves the job forward to `uploading`, `verifying` or `pruning`, and records it.
    /// (`succeeded` and `failed` are [`JobTask::succeed`] and [`JobTask::fail`].)
    pub async fn advance(&self, next: JobState) -> Result<(), JobsError> {
        if next.is_terminal() {
            return Err(JobsError::IllegalTransition {
                job: self.id(),
                from: self.shared.state(),
                to: next,
            });
        }
        self.shared.transition(next, None)?;
        self.shared.persist().await;
        Ok(())
    }

    /// Records an image the job created, at once: after a crash, the restarted
    /// daemon deletes it. For a job of one cloud it is also the record's `image_id`.
    /// When the job already ended (a stop interrupted it) the image is not recorded
    /// and the answer is [`JobsError::Finished`]: delete it and stop.
    pub async fn image_created(&self, cloud: &str, image_id: &str) -> Result<(), JobsError> {
        let job = self.id();
        self.shared.update(|data| {
            if data.record.state.is_terminal() {
                // A stop ended the job: the caller deletes this image itself.
                return Err(JobsError::Finished {
                    job,
                    state: data.record.state,
                });
            }
            match data.record.clouds.as_mut() {
                None => data.record.image_id = Some(image_id.to_string()),
                Some(clouds) => {
                    let entry = clouds
                        .get_mut(cloud)
                        .ok_or_else(|| JobsError::NoSuchCloud {
                            job,
                            cloud: cloud.to_string(),
                        })?;
                    entry.image_id = Some(image_id.to_string());
                }
            }
            data.images.push(CreatedImage {
                cloud: cloud.to_string(),
                image_id: image_id.to_string(),
                kept: None,
            });
            Ok(())
        })?;
        self.shared.persist().await;
        Ok(())
    }

    /// Records `image_id` (verified) as kept, with the answer `answer` that the
    /// job gives for that cloud if a stop or a crash cuts it off from now on.
    /// Written before it returns: only then may old revisions be pruned. Called
    /// again with the final answer once the prune is done.
    pub async fn image_kept(
        &self,
        cloud: &str,
        image_id: &str,
        answer: serde_json::Value,
    ) -> Result<(), JobsError> {
        let job = self.id();
        self.shared.update(|data| {
            let image = data
                .images
                .iter_mut()
                .find(|i| i.cloud == cloud && i.image_id == image_id)
                .ok_or_else(|| JobsError::NoSuchCloud {
                    job,
                    cloud: format!("{cloud} (image {image_id})"),
                })?;
            image.kept = Some(answer);
            Ok(())
        })?;
        let path = self.shared.ctx.store.path_of(&job);
        self.shared
            .persist_checked()
            .await
            .map_err(|source| JobsError::Io {
                action: "record a kept image",
                path,
                source,
            })
    }

    /// The job of one cloud succeeded with `image_id`.
    #[cfg(test)]
    pub async fn succeed(self, image_id: &str) -> Result<JobRecord<R>, JobsError> {
        self.succeed_with(image_id, None).await
    }

    /// The job of one cloud succeeded with `image_id`, and `outcome` is its answer
    /// (kept with the record: [`JobHandle::outcome`]).
    pub async fn succeed_with(
        self,
        image_id: &str,
        outcome: Option<serde_json::Value>,
    ) -> Result<JobRecord<R>, JobsError> {
        let job = self.id();
        self.shared.update(|data| {
            let from = data.record.state;
            if !from.can_move_to(JobState::Succeeded) {
                return Err(JobsError::IllegalTransition {
                    job,
                    from,
                    to: JobState::Succeeded,
                });
            }
            data.record.state = JobState::Succeeded;
            data.record.image_id = Some(image_id.to_string());
            data.outcome = outcome;
            Ok(())
        })?;
        self.shared.persist().await;
        Ok(self.shared.snapshot())
    }

    /// The job failed with `failure` (clouds still under way fail with it).
    pub async fn fail(self, failure: JobFailure) -> Result<JobRecord<R>, JobsError> {
        self.finish(JobState::Failed, Some(failure)).await
    }

    /// Moves one cloud of a job of several clouds forward (not to a terminal state).
    pub async fn advance_cloud(&self, cloud: &str, next: JobState) -> Result<(), JobsError> {
        if next.is_terminal() {
            return Err(JobsError::IllegalTransition {
                job: self.id(),
                from: self.cloud_state(cloud)?,
                to: next,
            });
        }
        self.move_cloud(cloud, next, None, None).await
    }

    /// One cloud of a job of several clouds starts its try number `attempt`.
    pub async fn cloud_attempt(&self, cloud: &str, attempt: u32) -> Result<(), JobsError> {
        self.change_cloud(cloud, |_, entry| {
            entry.attempts = attempt;
            Ok(())
        })
        .await
    }

    /// Changes one cloud's entry of a job of several clouds, and records it.
    async fn change_cloud(
        &self,
        cloud: &str,
        change: impl FnOnce(JobId, &mut CloudProgress) -> Result<(), JobsError>,
    ) -> Result<(), JobsError> {
        let job = self.id();
        self.shared.update(|data| {
            let entry = data
                .record
                .clouds
                .as_mut()
                .and_then(|clouds| clouds.get_mut(cloud))
                .ok_or_else(|| JobsError::NoSuchCloud {
                    job,
                    cloud: cloud.to_string(),
                })?;
            change(job, entry)
        })?;
        self.shared.persist().await;
        Ok(())
    }

    /// One cloud of a job of several clouds succeeded with `image_id`.
    pub async fn succeed_cloud(&self, cloud: &str, image_id: &str) -> Result<(), JobsError> {
        self.move_cloud(cloud, JobState::Succeeded, Some(image_id), None)
            .await
    }

    /// One cloud of a job of several clouds failed; the others go on.
    pub async fn fail_cloud(&self, cloud: &str, failure: JobFailure) -> Result<(), JobsError> {
        self.move_cloud(cloud, JobState::Failed, None, Some(failure))
            .await
    }

    /// Ends a job of several clouds from its clouds' states: `succeeded` when every
    /// cloud succeeded, else `failed` with `upload_image_failed` naming the clouds
    /// that did not (clouds still under way fail with it). `outcome` (every
    /// cloud's result) is kept either way: [`JobHandle::outcome`].
    pub async fn finish_from_clouds(
        self,
        outcome: Option<serde_json::Value>,
    ) -> Result<JobRecord<R>, JobsError> {
        if outcome.is_some() {
            self.shared.update(|data| {
                data.outcome = outcome;
                Ok(())
            })?;
        }
        let failed: Vec<String> = {
            let data = lock(&self.shared.data);
            data.record
                .clouds
                .iter()
                .flatten()
                .filter(|(_, c)| c.state != JobState::Succeeded)
                .map(|(name, c)| match &c.error {
                    Some(e) => format!("cloud '{name}': {}", e.message),
                    None => format!("cloud '{name}': did not finish"),
                })
                .collect()
        };
        if failed.is_empty() {
            self.finish(JobState::Succeeded, None).await
        } else {
            let failure = JobFailure::new("upload_image_failed", failed.join("; "));
            self.finish(JobState::Failed, Some(failure)).await
        }
    }

    fn cloud_state(&self, cloud: &str) -> Result<JobState, JobsError> {
        lock(&self.shared.data)
            .record
            .clouds
            .as_ref()
            .and_then(|clouds| clouds.get(cloud))
            .map(|c| c.state)
            .ok_or_else(|| JobsError::NoSuchCloud {
                job: self.id(),
                cloud: cloud.to_string(),
            })
    }

    async fn move_cloud(
        &self,
        cloud: &str,
        next: JobState,
        image_id: Option<&str>,
        failure: Option<JobFailure>,
    ) -> Result<(), JobsError> {
        self.change_cloud(cloud, |job, entry| {
            if !entry.state.can_move_to(next) {
                return Err(JobsError::IllegalTransition {
                    job,
                    from: entry.state,
                    to: next,
                });
            }
            entry.state = next;
            if let Some(id) = image_id {
                entry.image_id = Some(id.to_string());
            }
            if failure.is_some() {
                entry.error = failure;
            }
            Ok(())
        })
        .await
    }

    async fn finish(
        self,
        state: JobState,
        failure: Option<JobFailure>,
    ) -> Result<JobRecord<R>, JobsError> {
        self.shared.transition(state, failure)?;
        self.shared.persist().await;
        Ok(self.shared.snapshot())
    }
}

impl<R: JobRequest> Drop for JobTask<R> {
    fn drop(&mut self) {
        if self.shared.state().is_terminal() {
            return;
        }
        let failure = if self.shared.ctx.is_closing() {
            JobFailure::interrupted("the daemon stopped during the job")
        } else {
            JobFailure::new(
                "internal_error",
                "the job's task ended before the job did (a bug; see the log)",
            )
        };
        tracing::warn!(job = %self.id(), code = %failure.code, "job task dropped before the job ended");
        if self
            .shared
            .transition(JobState::Failed, Some(failure))
            .is_err()
        {
            return;
        }
        let shared = self.shared.clone();
        let write = move || {
            if let Err(err) = shared.persist_blocking() {
                tracing::error!(job = %shared.id(), error = %err, "cannot record the job's state");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}
