//! The `max_concurrent_uploads` upload slots: a semaphore whose size a reload
//! can change while uploads run.
//!
//! Growing adds permits at once (queued jobs start). Shrinking takes the free
//! permits away at once and owes the rest: an upload under way is never cut, and
//! the permit it gives back when it ends is forgotten instead of released, until
//! the debt is paid. Paying the debt in [`UploadSlot`]'s drop (rather than with a
//! task waiting on the semaphore) puts it ahead of every queued job, so no job
//! queued before the reload starts above the new size.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// The pool of upload slots.
#[derive(Debug)]
pub(crate) struct Slots {
    /// One permit per free slot; closed by a stop.
    semaphore: Arc<Semaphore>,
    /// The size and the debt, changed together.
    size: Mutex<Size>,
}

#[derive(Debug)]
struct Size {
    /// `max_concurrent_uploads` in force.
    limit: usize,
    /// Permits still to take away as uploads end (after a shrink).
    owed: usize,
}

/// One of the upload slots; dropping it frees the slot (or pays a shrink's debt).
#[derive(Debug)]
pub struct UploadSlot {
    /// `None` only once dropped.
    permit: Option<OwnedSemaphorePermit>,
    /// Where the permit goes back.
    slots: Arc<Slots>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.slots.give_back(permit);
        }
    }
}

impl Slots {
    /// `limit` slots (0 is taken as 1).
    pub(crate) fn new(limit: usize) -> Arc<Slots> {
        let limit = limit.max(1);
        Arc::new(Slots {
            semaphore: Arc::new(Semaphore::new(limit)),
            size: Mutex::new(Size { limit, owed: 0 }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Size> {
        self.size.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot; an error once [`Slots::close`]d.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<UploadSlot, AcquireError> {
        let permit = self.semaphore.clone().acquire_owned().await?;
        Ok(UploadSlot {
            permit: Some(permit),
            slots: self.clone(),
        })
    }

    /// Changes the number of slots to `limit` (0 is taken as 1); see the module.
    pub(crate) fn resize(&self, limit: usize) {
        let limit = limit.max(1);
        let mut size = self.lock();
        if limit > size.limit {
            let grow = limit - size.limit;
            let repaid = grow.min(size.owed);
            size.owed -= repaid;
            self.semaphore.add_permits(grow - repaid);
        } else {
            let shrink = size.limit - limit;
            let taken = self.semaphore.forget_permits(shrink);
            size.owed += shrink - taken;
        }
        size.limit = limit;
    }

    /// A slot's permit back: forgotten while a shrink is owed, else released.
    fn give_back(&self, permit: OwnedSemaphorePermit) {
        let mut size = self.lock();
        if size.owed > 0 {
            size.owed -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }

    /// A stop: every waiter and later [`Slots::acquire`] gets an error.
    pub(crate) fn close(&self) {
        self.semaphore.close();
    }

    /// Free slots now (tests).
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}
