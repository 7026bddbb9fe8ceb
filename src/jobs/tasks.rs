//! The tasks that run jobs, so that a stop can wait for them or abort them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

use super::model::JobId;

/// Every job task spawned by this daemon and not yet ended.
#[derive(Debug, Default)]
pub(crate) struct JobTasks {
    /// To wait for them all.
    tracker: TaskTracker,
    /// To abort them all (each removes itself when it ends).
    running: Arc<Mutex<HashMap<JobId, AbortHandle>>>,
}

fn lock(
    running: &Mutex<HashMap<JobId, AbortHandle>>,
) -> MutexGuard<'_, HashMap<JobId, AbortHandle>> {
    running.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a task from `running` when the task ends, aborted or not.
struct Deregister {
    id: JobId,
    running: Arc<Mutex<HashMap<JobId, AbortHandle>>>,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        lock(&self.running).remove(&self.id);
    }
}

impl JobTasks {
    pub(crate) fn spawn(&self, id: JobId, work: impl Future<Output = ()> + Send + 'static) {
        let deregister = Deregister {
            id,
            running: self.running.clone(),
        };
        let handle = self.tracker.spawn(async move {
            let _deregister = deregister;
            work.await
        });
        let mut running = lock(&self.running);
        running.insert(id, handle.abort_handle());
        // A task that ended before it was registered removed nothing: remove it now.
        if handle.is_finished() {
            running.remove(&id);
        }
    }

    /// How many tasks have not ended.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every task spawned so far has ended.
    pub(crate) async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    /// Aborts every task; each records its job `failed` as its `JobTask` drops.
    #[allow(
        dead_code,
        reason = "the stop after shutdown_grace (the operator issue) calls it"
    )]
    pub(crate) fn abort_all(&self) {
        for handle in lock(&self.running).values() {
            handle.abort();
        }
    }
}
