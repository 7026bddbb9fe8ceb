//! systemd integration (`Type=notify`): readiness, the `STATUS=` line that
//! `systemctl status` shows, the watchdog, reloading and stopping. Outside systemd
//! (no `NOTIFY_SOCKET`) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::http::AppState;
use crate::jobs::JobState;
use crate::shutdown::Shutdown;

/// How often the status line is recomputed (and sent when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

fn notify(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "sd_notify failed");
    }
}

pub(crate) fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (with the clock systemd wants beside it); [`notify_ready`] ends it.
pub(crate) fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub(crate) fn notify_stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// What an operator wants to see at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Activity {
    pub(crate) clouds: usize,
    pub(crate) authenticated: usize,
    /// Uploads sending, verifying or pruning.
    pub(crate) running: usize,
    /// Uploads waiting (for a slot, or for the name's lock).
    pub(crate) queued: usize,
    pub(crate) stopping: bool,
}

impl Activity {
    pub(crate) fn of(state: &AppState, stop: &Shutdown) -> Activity {
        let sessions = state.clouds.sessions();
        let jobs = crate::metrics::jobs_by_state(&state.images);
        let count = |wanted: &[JobState]| {
            jobs.iter()
                .filter(|(s, _)| wanted.contains(s))
                .map(|(_, n)| n)
                .sum()
        };
        Activity {
            clouds: sessions.len(),
            authenticated: sessions.iter().filter(|s| s.status().authenticated).count(),
            running: count(&[JobState::Uploading, JobState::Verifying, JobState::Pruning]),
            queued: count(&[JobState::Queued]),
            stopping: stop.is_stopping(),
        }
    }

    /// "2/2 clouds authenticated, 1 upload running, 3 queued".
    pub(crate) fn line(&self) -> String {
        let uploads = format!(
            "{} upload{} running, {} queued",
            self.running,
            if self.running == 1 { "" } else { "s" },
            self.queued
        );
        if self.stopping {
            return format!("stopping: {uploads} (new uploads refused)");
        }
        if self.clouds == 0 {
            return format!(
                "no clouds configured (PUT /v1/clouds or write clouds.yaml), {uploads}"
            );
        }
        format!(
            "{}/{} clouds authenticated, {uploads}",
            self.authenticated, self.clouds
        )
    }
}

/// Sends the status line when it changes (checked every second) and pings the
/// watchdog at half its interval when systemd asked for one (`WatchdogSec=`).
/// Both come from this one task of the async runtime, after it read the clouds
/// and the uploads: a wedged runtime, or a lock that is never released, stops
/// the pings and systemd restarts the daemon.
pub(crate) fn spawn_status(state: AppState, stop: Shutdown) -> tokio::task::JoinHandle<()> {
    let watchdog = sd_notify::watchdog_enabled().map(|interval| interval / 2);
    let tick = watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_line = String::new();
        let mut last_ping = tokio::time::Instant::now();
        loop {
            ticker.tick().await;
            let line = Activity::of(&state, &stop).line();
            let mut states = Vec::new();
            if line != last_line {
                states.push(NotifyState::Status(&line));
            }
            if watchdog.is_some_and(|every| last_ping.elapsed() + tick / 2 >= every) {
                states.push(NotifyState::Watchdog);
                last_ping = tokio::time::Instant::now();
            }
            if !states.is_empty() {
                notify(&states);
            }
            last_line = line;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_what_an_operator_wants() {
        let mut a = Activity {
            clouds: 2,
            authenticated: 2,
            running: 1,
            queued: 3,
            stopping: false,
        };
        assert_eq!(
            a.line(),
            "2/2 clouds authenticated, 1 upload running, 3 queued"
        );
        a.running = 0;
        a.authenticated = 1;
        assert_eq!(
            a.line(),
            "1/2 clouds authenticated, 0 uploads running, 3 queued"
        );
        a.stopping = true;
        assert_eq!(
            a.line(),
            "stopping: 0 uploads running, 3 queued (new uploads refused)"
        );
        let none = Activity::default();
        assert!(
            none.line().starts_with("no clouds configured"),
            "{}",
            none.line()
        );
    }
}
