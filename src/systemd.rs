//! systemd integration: `Type=notify` readiness and the watchdog. Outside systemd
//! (no `NOTIFY_SOCKET`) every call is a no-op.

use sd_notify::NotifyState;

pub(crate) fn notify_ready() {
    if let Err(err) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::debug!(error = %err, "sd_notify READY failed");
    }
}

pub(crate) fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its interval when systemd asked for one
/// (`WatchdogSec=`). The ping comes from the runtime, so a wedged runtime is caught.
pub(crate) fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }))
}
