//! Identical calls that arrive together share one call (the contract's "many hooks
//! asking at once"): a request that arrives while a call for its key is in flight
//! waits for the *next* call, which starts when the current one ends, so no answer
//! is older than its request, and a burst of identical requests costs at most two
//! calls.
//!
//! Per key: a counter of calls started, and a turn (an async mutex, fair) that
//! holds the last finished call's number and result. A request notes the counter
//! when it arrives; when its turn comes, a finished call numbered above that
//! started after it arrived, and its result is the request's; otherwise the
//! request makes the call itself.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Calls shared by key; `T` is the call's result (errors included).
pub(crate) struct SharedCalls<K, T> {
    /// The keys with a call in flight or requests waiting; forgotten when idle.
    entries: Mutex<HashMap<K, Arc<Entry<T>>>>,
}

impl<K, T> std::fmt::Debug for SharedCalls<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("SharedCalls").field("keys", &keys).finish()
    }
}

struct Entry<T> {
    /// How many calls have started for this key.
    started: AtomicU64,
    /// The last finished call: its number (1-based) and result.
    turn: tokio::sync::Mutex<Option<(u64, T)>>,
}

impl<K: Hash + Eq + Clone, T: Clone> SharedCalls<K, T> {
    pub(crate) fn new() -> Self {
        SharedCalls {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The result of `call` for `key`, or of an identical call that started after
    /// this request arrived.
    pub(crate) async fn run<F, Fut>(&self, key: K, call: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let entry = self.entry(&key);
        let arrived_after = entry.started.load(Ordering::SeqCst);
        let result = {
            let mut last = entry.turn.lock().await;
            match &*last {
                Some((number, result)) if *number > arrived_after => result.clone(),
                _ => {
                    let number = entry.started.fetch_add(1, Ordering::SeqCst) + 1;
                    let result = call().await;
                    *last = Some((number, result.clone()));
                    result
                }
            }
        };
        self.forget_if_idle(&key, entry);
        result
    }

    fn entry(&self, key: &K) -> Arc<Entry<T>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    started: AtomicU64::new(0),
                    turn: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    /// Drops the key's entry when nobody else holds it, so the map does not grow
    /// with every name ever asked for (and holds no old result).
    fn forget_if_idle(&self, key: &K, entry: Arc<Entry<T>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody waits.
        if Arc::strong_count(&entry) == 2 {
            entries.remove(key);
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    /// A "Glance" whose answer is the state at the time the call *starts*; each
    /// call takes 10 ms and is counted.
    struct Fake {
        calls: AtomicU32,
        state: AtomicU32,
    }

    impl Fake {
        async fn call(&self) -> u32 {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let seen = self.state.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen
        }
    }

    fn fake() -> Arc<Fake> {
        Arc::new(Fake {
            calls: AtomicU32::new(0),
            state: AtomicU32::new(0),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_identical_requests_costs_at_most_two_calls() {
        let shared = Arc::new(SharedCalls::<&str, u32>::new());
        let glance = fake();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (shared, glance) = (shared.clone(), glance.clone());
                tokio::spawn(async move { shared.run("name", || glance.call()).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 0);
        }
        assert!(glance.calls.load(Ordering::SeqCst) <= 2);
        assert_eq!(shared.keys(), 0, "idle keys are forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_never_gets_an_answer_older_than_itself() {
        let shared = Arc::new(SharedCalls::<&str, u32>::new());
        let glance = fake();
        let first = {
            let (shared, glance) = (shared.clone(), glance.clone());
            tokio::spawn(async move { shared.run("name", || glance.call()).await })
        };
        tokio::time::sleep(Duration::from_millis(3)).await;
        // The state changes while the first call is in flight (an upload ended),
        // then a request arrives: it must see the new state, not share the first.
        glance.state.store(7, Ordering::SeqCst);
        let second = shared.run("name", || glance.call()).await;
        assert_eq!(first.await.unwrap(), 0);
        assert_eq!(second, 7);
        assert_eq!(glance.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_one_after_another_each_make_a_call_and_keys_do_not_mix() {
        let shared = SharedCalls::<&str, u32>::new();
        let glance = fake();
        for expected in 1..=3 {
            shared.run("a", || glance.call()).await;
            assert_eq!(glance.calls.load(Ordering::SeqCst), expected);
        }
        glance.state.store(5, Ordering::SeqCst);
        assert_eq!(shared.run("b", || glance.call()).await, 5);
    }
}
