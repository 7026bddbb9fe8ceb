//! Jobs: every upload is one. A job is recorded in `<state_dir>/jobs/` as it
//! changes (so it survives a restart, where a job cut off reads `failed` with code
//! `interrupted`), named by an `Idempotency-Key` so a retried hook gets the same
//! job, kept `job_retention` after it ended, and bounded by
//! `max_concurrent_uploads` (the rest wait as `queued`).
//!
//! Nothing here knows about HTTP or Glance. The HTTP layer [`Jobs::submit`]s a
//! request and gets a [`JobHandle`] to answer or wait with, and, for a new job, a
//! [`JobTask`] for the upload task to drive: [`JobTask::acquire_slot`], the byte
//! counters, [`JobTask::image_created`], then [`JobTask::succeed`] or
//! [`JobTask::fail`].
//!
//! - [`model`]: ids, states and their order, the record, the idempotency key.
//! - `store`: one file per job, written atomically; reading them back at start-up.
//! - `job`: one job in memory (atomics, a watch, its writes).
//! - `slots`: the upload slots, resized by a reload without cutting an upload.
//! - `table`: the jobs by id and by key.
//!
//! A reload changes the [`JobSettings`] in force ([`Jobs::replace_settings`]).

mod interrupt;
pub mod job;
pub mod model;
mod slots;
mod store;
mod table;
mod turns;

#[cfg(test)]
mod kept_tests;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::Serialize;

pub use job::{JobHandle, JobTask};
pub use model::{
    CloudProgress, CreatedImage, IdempotencyKey, InvalidIdempotencyKey, JobFailure, JobId,
    JobRecord, JobRequest, JobState,
};
pub use turns::Turn;

use job::JobShared;
use model::Fingerprint;
use slots::Slots;
use store::{JobStore, StoredJob};
use table::Table;
use turns::Turns;

/// The daemon config's settings for jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSettings {
    /// `max_concurrent_uploads` (0 is taken as 1).
    pub max_concurrent_uploads: usize,
    /// `job_retention`: how long a finished job and its key are kept.
    pub job_retention: Duration,
    /// `max_queued_uploads`: past it, a new job is refused
    /// ([`JobsError::TooManyUploads`]); each queued job holds its file open.
    pub max_queued_uploads: usize,
}

/// What a client refused for a full queue is told to wait (`Retry-After`).
pub const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A request to start a job.
#[derive(Debug, Clone)]
pub struct NewJob<R> {
    /// The new job's id (a fresh [`JobId::random`]), chosen by the caller so that
    /// what it prepares (e.g. the image's upload marker) can name the job.
    pub id: JobId,
    /// The upload fields as the client sent them (shown in the record, compared
    /// with a retry's under the same key).
    pub request: R,
    pub idempotency_key: Option<IdempotencyKey>,
    /// The file's size.
    pub bytes_total: u64,
    /// The clouds it goes to.
    pub clouds: Vec<String>,
    /// Whether the record carries per-cloud progress (`clouds`): a request
    /// that named its clouds with `clouds`, even one.
    pub per_cloud: bool,
}

/// The answer to [`Jobs::submit`].
#[derive(Debug)]
pub struct Submitted<R: JobRequest> {
    pub handle: JobHandle<R>,
    /// `Some` for a new job: run it (e.g. `tokio::spawn`) with this. `None` when
    /// the key named a job that exists: answer with `handle`, upload nothing.
    pub task: Option<JobTask<R>>,
}

/// What [`Jobs::open`] found and did at start-up.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Jobs a stop cut off, now `failed`/`interrupted`.
    pub interrupted: Vec<JobId>,
    /// Their images: delete them (the reaper is the backstop).
    pub images_to_delete: Vec<CreatedImage>,
    /// Records that could not be read, moved to `jobs/unreadable/`.
    pub moved_aside: Vec<PathBuf>,
    /// Jobs read back (interrupted ones included), after retention.
    pub loaded: usize,
}

/// Jobs by state (for `/v1/status`, metrics and the systemd status line);
/// serialises as `{"queued": n, ...}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts([usize; 6]);

impl StateCounts {
    pub fn get(&self, state: JobState) -> usize {
        self.0[state.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (JobState, usize)> + '_ {
        JobState::ALL.into_iter().map(|s| (s, self.get(s)))
    }

    /// Jobs that have not ended.
    #[cfg(test)]
    pub fn unfinished(&self) -> usize {
        self.iter()
            .filter(|(s, _)| !s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }
}

impl Serialize for StateCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(JobState::ALL.len()))?;
        for (state, n) in self.iter() {
            map.serialize_entry(state.as_str(), &n)?;
        }
        map.end()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// `409 conflict`.
    #[error("Idempotency-Key '{key}' is already in use by a different request (job {job})")]
    Conflict { key: IdempotencyKey, job: JobId },
    /// `503 shutting_down`.
    #[error("the daemon is shutting down and takes no new uploads")]
    ShuttingDown,
    /// `429 too_many_uploads`, with `Retry-After`.
    #[error("{queued} uploads are already queued (max_queued_uploads); try again in {} s", retry_after.as_secs())]
    TooManyUploads {
        queued: usize,
        retry_after: Duration,
    },
    /// The job ended (e.g. a stop interrupted it) while its task waited.
    #[error("job {job} is already {state}")]
    Finished { job: JobId, state: JobState },
    /// A bug in the caller: states only move forward.
    #[error("job {job} cannot move from {from} to {to}")]
    IllegalTransition {
        job: JobId,
        from: JobState,
        to: JobState,
    },
    #[error("job {job} has no cloud '{cloud}'")]
    NoSuchCloud { job: JobId, cloud: String },
    #[error("job {job}: the request cannot be serialised: {source}")]
    Request {
        job: JobId,
        #[source]
        source: serde_json::Error,
    },
    #[error("job records in {}: cannot {action}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl JobsError {
    /// The contract's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            JobsError::Conflict { .. } => "conflict",
            JobsError::ShuttingDown => "shutting_down",
            JobsError::TooManyUploads { .. } => "too_many_uploads",
            _ => "internal_error",
        }
    }
}

/// What every job of this daemon shares.
#[derive(Debug)]
pub(crate) struct JobsCtx {
    store: JobStore,
    /// `max_concurrent_uploads` slots; closed by a stop.
    slots: Arc<Slots>,
    /// Set by [`Jobs::close`].
    closing: AtomicBool,
}

impl JobsCtx {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}

/// Every job of this daemon, live and finished (until `job_retention` ends).
#[derive(Debug)]
pub struct Jobs<R> {
    ctx: Arc<JobsCtx>,
    /// The settings in force; a reload replaces them.
    settings: Mutex<JobSettings>,
    table: Mutex<Table<R>>,
    /// Held across "look up the key, or create and record the job", so two
    /// identical requests arriving at once get one job.
    submit: tokio::sync::Mutex<()>,
    /// Wakes [`Jobs::run_retention`] when a reload replaced the settings.
    settings_changed: tokio::sync::Notify,
    /// One request at a time per `Idempotency-Key` ([`Jobs::take_turn`]).
    turns: Turns,
}

/// How often jobs past `job_retention` are forgotten: a tenth of it, between a
/// second and an hour.
fn retention_interval(job_retention: Duration) -> Duration {
    (job_retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

impl<R: JobRequest> Jobs<R> {
    /// Opens `<state_dir>/jobs` at start-up (blocking I/O): removes leftovers of
    /// writes a crash cut off, moves unreadable records aside, forgets jobs past
    /// `job_retention`, and records every job that had not ended as `failed` with
    /// code `interrupted`. Their images are in the [`Recovery`]: delete them.
    pub fn open(state_dir: &Path, settings: JobSettings) -> Result<(Jobs<R>, Recovery), JobsError> {
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| JobsError::Io {
                action,
                path,
                source,
            }
        };
        let store = JobStore::open(state_dir).map_err(io("create", state_dir))?;
        let scan = store
            .scan::<R>()
            .map_err(io("read the directory", store.dir()))?;
        let ctx = Arc::new(JobsCtx {
            store,
            slots: Slots::new(settings.max_concurrent_uploads),
            closing: AtomicBool::new(false),
        });
        let jobs = Jobs {
            ctx: ctx.clone(),
            settings: Mutex::new(settings),
            table: Mutex::new(Table::new()),
            submit: tokio::sync::Mutex::new(()),
            settings_changed: tokio::sync::Notify::new(),
            turns: Turns::default(),
        };
        let mut recovery = Recovery {
            moved_aside: scan.moved_aside,
            ..Recovery::default()
        };
        let mut stored = scan.jobs;
        // Oldest first, so that a key (unique anyway) ends up naming the newest job.
        stored.sort_by_key(|s| s.record.created_at);
        for stored in stored {
            let job = Arc::new(JobShared::from_stored(stored, ctx.clone())?);
            let message = "the daemon stopped during the job (a crash, a kill, or the end of \
                 shutdown_grace); its unverified images are deleted";
            if job.interrupt(message).is_some() {
                job.persist_blocking()
                    .map_err(io("write", &ctx.store.path_of(&job.id())))?;
                tracing::warn!(job = %job.id(), state = %job.state(), "job interrupted by the last stop");
                recovery.interrupted.push(job.id());
                recovery.images_to_delete.extend(job.unfinished_images());
            }
            jobs.lock_table().insert(job);
        }
        let now = Utc::now();
        let expired = jobs.lock_table().expired(now, settings.job_retention);
        for id in expired {
            jobs.forget_blocking(&id);
        }
        recovery.loaded = jobs.lock_table().len();
        Ok((jobs, recovery))
    }

    fn lock_table(&self) -> MutexGuard<'_, Table<R>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings in force.
    pub fn settings(&self) -> JobSettings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts new settings in force (a reload). More slots start queued jobs at
    /// once; fewer are taken away as uploads under way end (none is cut). A new
    /// `job_retention` counts for every job, the ended ones included.
    pub fn replace_settings(&self, settings: JobSettings) {
        let mut slot = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        self.ctx.slots.resize(settings.max_concurrent_uploads);
        *slot = settings;
        drop(slot);
        self.settings_changed.notify_waiters();
    }

    /// The job `key` names (running, or ended less than `job_retention` ago) when
    /// it was made by the same `request`; [`JobsError::Conflict`] when by another.
    /// A look-up before [`Jobs::submit`] (which decides again, atomically), so a
    /// retry is answered before the request's file or cloud are looked at.
    pub fn find_by_key(
        &self,
        key: &IdempotencyKey,
        request: &R,
    ) -> Result<Option<JobHandle<R>>, JobsError> {
        let Some(job) = self.lock_table().by_key(key).cloned() else {
            return Ok(None);
        };
        if job.expired(Utc::now(), self.settings().job_retention) {
            return Ok(None);
        }
        let fingerprint = Fingerprint::of(request).map_err(|source| JobsError::Request {
            job: job.id(),
            source,
        })?;
        if job.fingerprint != fingerprint {
            return Err(JobsError::Conflict {
                key: key.clone(),
                job: job.id(),
            });
        }
        Ok(Some(JobHandle { shared: job }))
    }

    /// Waits until no other request under `key` is between its look-up and its
    /// job's record: hold the turn from before the look-up ([`Jobs::find_by_key`])
    /// until [`Jobs::submit`] returned, and two identical requests arriving
    /// together get one job.
    pub async fn take_turn(&self, key: &IdempotencyKey) -> Turn {
        self.turns.take(key).await
    }

    /// [`JobsError::TooManyUploads`] when `max_queued_uploads` jobs are queued.
    /// [`Jobs::submit`] decides again; this answers a burst before any file is opened.
    pub fn check_room(&self) -> Result<(), JobsError> {
        let queued = self.counts().get(JobState::Queued);
        if queued >= self.settings().max_queued_uploads {
            return Err(JobsError::TooManyUploads {
                queued,
                retry_after: QUEUE_FULL_RETRY_AFTER,
            });
        }
        Ok(())
    }

    /// Starts a job, or, when `idempotency_key` names one (running, or ended less
    /// than `job_retention` ago) made by the same request, answers that job with
    /// no task. The same key with another request is [`JobsError::Conflict`].
    /// The new job is on disk before this returns.
    pub async fn submit(&self, new: NewJob<R>) -> Result<Submitted<R>, JobsError> {
        let id = new.id;
        let fingerprint = Fingerprint::of(&new.request)
            .map_err(|source| JobsError::Request { job: id, source })?;
        let _one_at_a_time = self.submit.lock().await;
        if let Some(key) = &new.idempotency_key {
            let existing = self.lock_table().by_key(key).cloned();
            if let Some(job) = existing {
                if job.expired(Utc::now(), self.settings().job_retention) {
                    self.forget(job.id()).await;
                } else if job.fingerprint == fingerprint {
                    return Ok(Submitted {
                        handle: JobHandle { shared: job },
                        task: None,
                    });
                } else {
                    return Err(JobsError::Conflict {
                        key: key.clone(),
                        job: job.id(),
                    });
                }
            }
        }
        if self.ctx.is_closing() {
            return Err(JobsError::ShuttingDown);
        }
        self.check_room()?;
        let now = Utc::now();
        let clouds = new.per_cloud.then(|| {
            new.clouds
                .iter()
                .map(|name| {
                    let progress = CloudProgress {
                        state: JobState::Queued,
                        bytes_sent: 0,
                        image_id: None,
                        error: None,
                        attempts: 1,
                    };
                    (name.clone(), progress)
                })
                .collect()
        });
        let record = JobRecord {
            job: id,
            state: JobState::Queued,
            bytes_sent: 0,
            bytes_total: new.bytes_total,
            image_id: None,
            error: None,
            created_at: now,
            updated_at: now,
            request: new.request,
            clouds,
        };
        let stored = StoredJob::new(record, new.idempotency_key, Vec::new());
        let job = Arc::new(JobShared::from_stored(stored, self.ctx.clone())?);
        job.persist_checked()
            .await
            .map_err(|source| JobsError::Io {
                action: "write",
                path: self.ctx.store.path_of(&id),
                source,
            })?;
        self.lock_table().insert(job.clone());
        tracing::info!(job = %id, "job queued");
        Ok(Submitted {
            handle: JobHandle {
                shared: job.clone(),
            },
            task: Some(JobTask { shared: job }),
        })
    }

    /// A job's record.
    #[cfg(test)]
    pub fn get(&self, id: &JobId) -> Option<JobRecord<R>> {
        self.handle(id).map(|h| h.record())
    }

    /// A job's handle, to wait for it.
    pub fn handle(&self, id: &JobId) -> Option<JobHandle<R>> {
        let shared = self.lock_table().get(id).cloned()?;
        Some(JobHandle { shared })
    }

    /// Every job's record, the newest first.
    #[cfg(test)]
    pub fn list(&self) -> Vec<JobRecord<R>> {
        let jobs = self.lock_table().newest_first();
        jobs.iter().map(|job| job.snapshot()).collect()
    }

    /// Every job's handle, the newest first.
    pub fn handles(&self) -> Vec<JobHandle<R>> {
        let jobs = self.lock_table().newest_first();
        jobs.into_iter()
            .map(|shared| JobHandle { shared })
            .collect()
    }

    /// How many jobs are in each state.
    pub fn counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for job in self.lock_table().all() {
            counts.0[job.state().index()] += 1;
        }
        counts
    }

    /// Forgets the jobs (records and keys) that ended more than `job_retention`
    /// before `now`. The daemon calls it periodically (see [`Jobs::run_retention`]).
    pub async fn prune_expired(&self, now: DateTime<Utc>) -> Vec<JobId> {
        let expired = self
            .lock_table()
            .expired(now, self.settings().job_retention);
        for id in &expired {
            self.forget(*id).await;
        }
        expired
    }

    /// Calls [`Jobs::prune_expired`] at once and then every tenth of
    /// `job_retention` (between a second and an hour), until the task is
    /// dropped. New settings prune at once and reschedule.
    pub async fn run_retention(self: Arc<Self>) {
        loop {
            let changed = self.settings_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let forgotten = self.prune_expired(Utc::now()).await;
            if !forgotten.is_empty() {
                tracing::info!(count = forgotten.len(), "forgot jobs past job_retention");
            }
            let every = retention_interval(self.settings().job_retention);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = changed => {}
            }
        }
    }

    /// SIGTERM: no new jobs ([`JobsError::ShuttingDown`]); jobs still waiting for a
    /// slot end `failed`/`interrupted`; jobs uploading go on.
    pub fn close(&self) {
        self.ctx.closing.store(true, Ordering::Relaxed);
        self.ctx.slots.close();
    }

    /// The end of `shutdown_grace` (after [`Jobs::close`]): records every job that
    /// has not ended `failed`/`interrupted` and returns their images to delete.
    /// Call it before the job tasks are aborted: an aborted task records its job
    /// ended, and its images would not be returned here. An image a task creates
    /// after this is not recorded (the stop's last sweep deletes it).
    pub async fn interrupt_unfinished(&self, message: &str) -> Vec<CreatedImage> {
        let jobs: Vec<_> = self.lock_table().all().cloned().collect();
        let mut images = Vec::new();
        for job in jobs {
            if job.interrupt(message).is_some() {
                job.persist().await;
                images.extend(job.unfinished_images());
            }
        }
        images
    }

    async fn forget(&self, id: JobId) {
        let removed = self.lock_table().remove(&id);
        if removed.is_some() {
            let ctx = self.ctx.clone();
            let deleted = tokio::task::spawn_blocking(move || ctx.store.remove(&id)).await;
            if let Ok(Err(err)) | Err(err) = deleted.map_err(std::io::Error::other) {
                tracing::warn!(job = %id, error = %err, "cannot delete the job's record");
            }
        }
    }

    fn forget_blocking(&self, id: &JobId) {
        if self.lock_table().remove(id).is_some() {
            if let Err(err) = self.ctx.store.remove(id) {
                tracing::warn!(job = %id, error = %err, "cannot delete the job's record");
            }
        }
    }
}
