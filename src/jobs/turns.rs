//! One request at a time per `Idempotency-Key`: two identical requests that
//! arrive together take turns from "is there a job under this key?" to "the job
//! is recorded", so the second finds the first's job instead of racing it (and
//! getting a `409` for the `X-Request-Id` the first just took).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::model::IdempotencyKey;

/// Held by a request from its key's look-up until its job is recorded.
pub type Turn = tokio::sync::OwnedMutexGuard<()>;

/// A lock per key in use; a key's lock goes once no request holds or waits for it.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    locks: Mutex<HashMap<IdempotencyKey, Weak<tokio::sync::Mutex<()>>>>,
}

impl Turns {
    /// Waits for `key`'s turn.
    pub(crate) async fn take(&self, key: &IdempotencyKey) -> Turn {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.retain(|_, lock| lock.strong_count() > 0);
            match locks.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.clone(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_key_takes_turns_and_other_keys_do_not_wait() {
        let turns = Arc::new(Turns::default());
        let a: IdempotencyKey = "a".parse().unwrap();
        let b: IdempotencyKey = "b".parse().unwrap();
        let first = turns.take(&a).await;
        let waiting = {
            let (turns, a) = (turns.clone(), a.clone());
            tokio::spawn(async move { turns.take(&a).await })
        };
        let _other = turns.take(&b).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "the same key waits");
        drop(first);
        let second = waiting.await.unwrap();
        drop(second);
        drop(_other);
        let _again = turns.take(&a).await;
        assert_eq!(
            turns.locks.lock().unwrap().len(),
            1,
            "unused keys are forgotten"
        );
    }
}
