//! A failed login's backoff, kept per cloud name and auth so that it outlives
//! the session that failed: a `PUT /v1/clouds` (or a reload) builds new sessions
//! of the same cloud, and a wrong password sent by every hook run must still
//! cost Keystone one attempt per backoff, not one per run (accounts get locked).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::OpenStackError;
use crate::clouds::{Auth, CloudConfig};

/// Backoff after a failed login (Keystone unreachable, 5xx) starts here...
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// ...and doubles up to this, so a Keystone that comes back is noticed quickly.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Refused credentials are retried much more slowly (Keystone may lock the
/// account, and only an operator fixes them): with equal jitter, the first
/// wait is between 10 and 20 s...
const BACKOFF_BASE_REFUSED: Duration = Duration::from_secs(20);
/// ...and it doubles up to 5 minutes (2.5 to 5 with the jitter).
const BACKOFF_CAP_REFUSED: Duration = Duration::from_secs(300);

/// The wait before retry number `failures` (1-based), with "equal jitter": half
/// fixed, half random, so that many daemons do not retry in step.
pub(crate) fn backoff(failures: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let full = exp.min(cap);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// One cloud's login backoff, shared by its sessions, their refresh loops and
/// every request.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Failed logins in a row.
    pub(crate) failures: u32,
    /// No login before this; requests meanwhile get `last` at once.
    pub(crate) until: Option<Instant>,
    /// The last login's error.
    pub(crate) last: Option<OpenStackError>,
}

impl Backoff {
    /// Records a failed login; the wait before the next.
    pub(crate) fn failed(&mut self, err: &OpenStackError) -> Duration {
        let (base, cap) = match err {
            OpenStackError::Unauthorized { .. } => (BACKOFF_BASE_REFUSED, BACKOFF_CAP_REFUSED),
            _ => (BACKOFF_BASE, BACKOFF_CAP),
        };
        self.failures = self.failures.saturating_add(1);
        let wait = backoff(self.failures, base, cap, rand::random::<f64>());
        self.until = Some(Instant::now() + wait);
        self.last = Some(err.clone());
        wait
    }

    fn running_at(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

/// The backoffs of every cloud name and auth the daemon logged in with: the
/// clouds in force, and those of `PUT /v1/clouds` documents it refused.
#[derive(Debug, Default)]
pub(crate) struct LoginBackoffs {
    entries: Mutex<Vec<Entry>>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    /// Compared whole (secrets included): another password is another login.
    auth: Auth,
    backoff: Arc<Mutex<Backoff>>,
}

impl LoginBackoffs {
    /// The backoff of `cloud`'s name and auth: the one its other sessions
    /// share, else a new one. Entries that no session holds and whose backoff
    /// is over are forgotten.
    pub(crate) fn of(&self, cloud: &CloudConfig) -> Arc<Mutex<Backoff>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| {
            Arc::strong_count(&e.backoff) > 1
                || e.backoff.lock().map(|b| b.running_at(now)).unwrap_or(false)
        });
        if let Some(entry) = entries
            .iter()
            .find(|e| e.name == cloud.name && e.auth == cloud.auth)
        {
            return entry.backoff.clone();
        }
        let backoff = Arc::<Mutex<Backoff>>::default();
        entries.push(Entry {
            name: cloud.name.clone(),
            auth: cloud.auth.clone(),
            backoff: backoff.clone(),
        });
        backoff
    }
}
