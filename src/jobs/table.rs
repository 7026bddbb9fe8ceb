//! The jobs in memory, by id and by `Idempotency-Key`. Plain data under the
//! owner's lock; [`Jobs`](super::Jobs) makes "look up or create" atomic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::job::JobShared;
use super::model::{IdempotencyKey, JobId, JobRequest};

#[derive(Debug)]
pub(crate) struct Table<R> {
    jobs: HashMap<JobId, Arc<JobShared<R>>>,
    /// A key names its job while the job runs and for `job_retention` after.
    keys: HashMap<IdempotencyKey, JobId>,
}

impl<R: JobRequest> Table<R> {
    pub fn new() -> Self {
        Table {
            jobs: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// Adds a job; its key (if any) now names it.
    pub fn insert(&mut self, job: Arc<JobShared<R>>) {
        if let Some(key) = &job.key {
            self.keys.insert(key.clone(), job.id());
        }
        self.jobs.insert(job.id(), job);
    }

    pub fn get(&self, id: &JobId) -> Option<&Arc<JobShared<R>>> {
        self.jobs.get(id)
    }

    pub fn by_key(&self, key: &IdempotencyKey) -> Option<&Arc<JobShared<R>>> {
        self.keys.get(key).and_then(|id| self.jobs.get(id))
    }

    /// Forgets a job and its key.
    pub fn remove(&mut self, id: &JobId) -> Option<Arc<JobShared<R>>> {
        let job = self.jobs.remove(id)?;
        if let Some(key) = &job.key {
            if self.keys.get(key) == Some(id) {
                self.keys.remove(key);
            }
        }
        Some(job)
    }

    /// The jobs that ended more than `retention` before `now`.
    pub fn expired(&self, now: DateTime<Utc>, retention: Duration) -> Vec<JobId> {
        self.jobs
            .values()
            .filter(|job| job.expired(now, retention))
            .map(|job| job.id())
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<JobShared<R>>> {
        self.jobs.values()
    }

    /// Every job, the newest first (by `created_at`, then id).
    pub fn newest_first(&self) -> Vec<Arc<JobShared<R>>> {
        let mut jobs: Vec<_> = self
            .jobs
            .values()
            .map(|job| (job.created_at(), job.clone()))
            .collect();
        jobs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.id().cmp(&a.1.id())));
        jobs.into_iter().map(|(_, job)| job).collect()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }
}
