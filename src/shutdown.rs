//! The stop (`SIGTERM`) as the contract has it: no new uploads (`503
//! shutting_down`), uploads under way run on for up to `shutdown_grace` (their
//! clients may be gone: they run in tasks of their own), then the rest are
//! aborted and their images deleted, and the daemon exits 0.
//!
//! [`Shutdown`] is the one place that knows about the stop. Work that must not be
//! cut off by it is [`Shutdown::spawn`]ed with what to do when the grace ends
//! (its abort clean-up); parts that hold state of their own register hooks:
//! [`Shutdown::on_stop`] runs when the stop begins (`Jobs::close`),
//! [`Shutdown::on_grace_end`] when the grace ends with tasks under way
//! (`Jobs::interrupt_unfinished`, then deleting the images it returns), and
//! [`Shutdown::on_abort`] after those tasks were aborted (a last sweep).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A boxed future, as the abort hooks return.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

type StopHook = Box<dyn FnOnce() + Send>;
type AbortHook = Box<dyn FnOnce() -> BoxFuture + Send>;

/// The stop has begun: no new work is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the daemon is shutting down and takes no new uploads")]
pub(crate) struct ShuttingDown;

/// What the stop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StopReport {
    /// Tasks that had not ended when `shutdown_grace` did.
    pub(crate) aborted: usize,
}

#[derive(Default)]
struct Hooks {
    /// `false` once the stop began: [`Shutdown::spawn`] refuses.
    closed: bool,
    on_stop: Vec<StopHook>,
    on_grace_end: Vec<AbortHook>,
    on_abort: Vec<AbortHook>,
}

struct Inner {
    /// Cancelled when the stop begins.
    stopping: CancellationToken,
    /// Cancelled when `shutdown_grace` ends.
    abort: CancellationToken,
    tasks: TaskTracker,
    hooks: Mutex<Hooks>,
}

/// The daemon's stop, shared (cheap to clone) by everything that must take part.
#[derive(Clone)]
pub(crate) struct Shutdown {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("stopping", &self.is_stopping())
            .field("tasks", &self.tasks())
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                stopping: CancellationToken::new(),
                abort: CancellationToken::new(),
                tasks: TaskTracker::new(),
                hooks: Mutex::new(Hooks::default()),
            }),
        }
    }

    fn hooks(&self) -> MutexGuard<'_, Hooks> {
        self.inner.hooks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the stop has begun.
    pub(crate) fn is_stopping(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }

    /// Tasks under way (spawned here and not ended).
    pub(crate) fn tasks(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Runs `work` in a task of its own that a client hanging up does not cancel.
    /// When `shutdown_grace` ends first, `work` is dropped (no further step of it
    /// runs; what it leaves is the stop's `on_abort` hooks' to clean up) and the
    /// task's value is `None`. Refused once the stop has begun.
    pub(crate) fn spawn<T, W>(&self, work: W) -> Result<JoinHandle<Option<T>>, ShuttingDown>
    where
        T: Send + 'static,
        W: Future<Output = T> + Send + 'static,
    {
        let hooks = self.hooks();
        if hooks.closed {
            return Err(ShuttingDown);
        }
        let abort = self.inner.abort.clone();
        // Spawned while the hooks are locked, so a stop that begins now waits for it.
        let handle = self.inner.tasks.spawn(async move {
            let mut work = Box::pin(work);
            tokio::select! {
                biased;
                value = &mut work => Some(value),
                _ = abort.cancelled() => None,
            }
        });
        drop(hooks);
        Ok(handle)
    }

    /// `hook` runs when the stop begins (at once if it has): `Jobs::close`.
    pub(crate) fn on_stop(&self, hook: impl FnOnce() + Send + 'static) {
        let mut hooks = self.hooks();
        if hooks.closed {
            drop(hooks);
            hook();
        } else {
            hooks.on_stop.push(Box::new(hook));
        }
    }

    /// `hook` runs when `shutdown_grace` ends with tasks still under way, before
    /// they are aborted (they still exist: `Jobs::interrupt_unfinished` records
    /// their jobs interrupted and says which images to delete). Not run when
    /// every task ended in time.
    pub(crate) fn on_grace_end<F>(&self, hook: impl FnOnce() -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.hooks()
            .on_grace_end
            .push(Box::new(move || Box::pin(hook()) as BoxFuture));
    }

    /// `hook` runs after the tasks still under way at the end of `shutdown_grace`
    /// were aborted (and their own clean-ups ended): the last sweep of images.
    /// Not run when every task ended in time.
    pub(crate) fn on_abort<F>(&self, hook: impl FnOnce() -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.hooks()
            .on_abort
            .push(Box::new(move || Box::pin(hook()) as BoxFuture));
    }

    /// Begins the stop: no new work, the stop hooks run.
    pub(crate) fn begin(&self) {
        let on_stop = {
            let mut hooks = self.hooks();
            if hooks.closed {
                return;
            }
            hooks.closed = true;
            self.inner.tasks.close();
            std::mem::take(&mut hooks.on_stop)
        };
        self.inner.stopping.cancel();
        for hook in on_stop {
            hook();
        }
    }

    /// The whole stop: [`begin`](Self::begin), wait up to `grace` for the tasks,
    /// then abort the rest, wait for their clean-ups, run the abort hooks.
    pub(crate) async fn stop(&self, grace: Duration) -> StopReport {
        self.begin();
        let tasks = &self.inner.tasks;
        if tokio::time::timeout(grace, tasks.wait()).await.is_ok() {
            return StopReport { aborted: 0 };
        }
        let aborted = tasks.len();
        tracing::warn!(
            tasks = aborted,
            grace = %humantime::format_duration(grace),
            "shutdown_grace is over: aborting the uploads still under way and deleting their images"
        );
        let on_grace_end = std::mem::take(&mut self.hooks().on_grace_end);
        for hook in on_grace_end {
            hook().await;
        }
        self.inner.abort.cancel();
        tasks.wait().await;
        let on_abort = std::mem::take(&mut self.hooks().on_abort);
        for hook in on_abort {
            hook().await;
        }
        StopReport { aborted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn work_that_ends_within_the_grace_ends_normally() {
        let stop = Shutdown::new();
        let task = stop
            .spawn(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "done"
            })
            .unwrap();
        let report = stop.stop(Duration::from_secs(60)).await;
        assert_eq!(report, StopReport { aborted: 0 });
        assert_eq!(task.await.unwrap(), Some("done"));
    }

    #[tokio::test(start_paused = true)]
    async fn work_still_running_at_the_end_of_the_grace_is_aborted_and_cleaned_up() {
        let stop = Shutdown::new();
        let aborted_hooks = Arc::new(AtomicUsize::new(0));
        let counter = aborted_hooks.clone();
        stop.on_abort(move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let task = stop
            .spawn(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "done"
            })
            .unwrap();
        let started = tokio::time::Instant::now();
        let report = stop.stop(Duration::from_secs(10)).await;
        assert_eq!(report, StopReport { aborted: 1 });
        assert!(started.elapsed() < Duration::from_secs(11));
        assert_eq!(task.await.unwrap(), None, "the work was dropped");
        assert_eq!(aborted_hooks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_new_work_once_the_stop_began_and_stop_hooks_run_once() {
        let stop = Shutdown::new();
        let closed = Arc::new(AtomicUsize::new(0));
        let counter = closed.clone();
        stop.on_stop(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!stop.is_stopping());
        stop.begin();
        stop.begin();
        assert!(stop.is_stopping());
        assert_eq!(closed.load(Ordering::SeqCst), 1);
        let refused = stop.spawn(async {});
        assert_eq!(refused.err(), Some(ShuttingDown));
        // A hook registered late runs at once.
        let counter = closed.clone();
        stop.on_stop(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(closed.load(Ordering::SeqCst), 2);
    }
}
