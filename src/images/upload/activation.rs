//! The two clocks of an upload: while bytes remain to be sent, no progress for
//! `upload_stall_timeout` aborts it; after the last byte, Glance's answer to the
//! data PUT and the image turning `active` together get `activation_timeout`
//! (Glance hashes the data before it answers, a store or plugin may process it
//! after: a good upload may be silent for long then, and must not count as stalled).

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use super::reader::Flow;
use crate::images::ImageError;
use crate::openstack::glance::{Image, ImageStatus};
use crate::openstack::glance_import::failed_import;
use crate::openstack::session::Session;
use crate::openstack::OpenStackError;

/// The limits of one upload, from the daemon config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadClocks {
    /// `upload_stall_timeout`: no byte progress for this long, bytes remaining.
    pub(crate) stall: Duration,
    /// `activation_timeout`: from the last byte to `active`.
    pub(crate) activation: Duration,
    /// `import_timeout`: from the import's request to `active` (glance-direct).
    pub(crate) import: Duration,
}

/// What ended [`watch_upload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchEnd {
    /// No byte progress for the stall timeout while bytes remained.
    Stalled,
    /// Every byte was taken, and no answer came within the activation timeout.
    NoAnswer,
}

impl WatchEnd {
    /// The error for an upload of `image_id` to `cloud` that this ended.
    pub(crate) fn error(self, cloud: &str, image_id: &str, clocks: UploadClocks) -> ImageError {
        match self {
            WatchEnd::Stalled => ImageError::Stalled {
                cloud: cloud.to_string(),
                image_id: image_id.to_string(),
                after: clocks.stall,
            },
            WatchEnd::NoAnswer => ImageError::NotActivated {
                cloud: cloud.to_string(),
                image_id: image_id.to_string(),
                after: clocks.activation,
                waiting_for: "its answer to the data upload".to_string(),
            },
        }
    }
}

/// Watches the `flow` of an upload of `total` bytes (bytes the reader offered,
/// bytes the HTTP client took), and resolves when one of the clocks runs out.
/// The stall clock runs only while offered bytes wait to be taken: an upload
/// that took all it was offered waits for the file (or, in a fan-out, for a
/// slower cloud), not for its server. The moment the last byte was taken goes
/// into `last_byte`, where the wait for `active` starts its clock.
pub(crate) async fn watch_upload(
    flow: &Flow,
    total: u64,
    clocks: UploadClocks,
    last_byte: &OnceLock<Instant>,
) -> WatchEnd {
    let tick = (clocks.stall / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut last = flow.taken.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        if last >= total {
            let since = *last_byte.get_or_init(Instant::now);
            tokio::time::sleep_until(since + clocks.activation).await;
            return WatchEnd::NoAnswer;
        }
        tokio::time::sleep(tick).await;
        let taken = flow.taken.load(Ordering::Relaxed);
        let waiting_for_data = taken >= flow.offered.load(Ordering::Relaxed);
        if taken != last || waiting_for_data {
            last = taken;
            last_change = Instant::now();
        } else if last_change.elapsed() >= clocks.stall {
            return WatchEnd::Stalled;
        }
    }
}

/// Polls the image until it is active (at once with the file store; later with
/// stores or plugins that process the data, or an import), until `deadline`.
/// An import (`by_import`) that Glance reports failed (`os_glance_failed_import`)
/// or that is not active by then is an [`ImageError::Import`].
pub(crate) async fn wait_until_active(
    session: &Session,
    id: &str,
    deadline: Instant,
    clocks: UploadClocks,
    by_import: bool,
) -> Result<Image, ImageError> {
    let import_error = |detail: String| ImageError::Import {
        cloud: session.name().to_string(),
        image_id: id.to_string(),
        detail,
    };
    let mut delay = Duration::from_millis(100);
    loop {
        let image = match session.glance().get(id).await {
            Ok(image) => image,
            // Another unit's newer upload of the same name may prune this one
            // as an old revision the moment it is active: say so.
            Err(OpenStackError::Api { status: 404, .. }) => {
                return Err(ImageError::Verification {
                    cloud: session.name().to_string(),
                    image_id: id.to_string(),
                    detail: "the image was deleted before it could be verified (a newer \
                             upload of the same name, e.g. by another unit, prunes older \
                             revisions)"
                        .to_string(),
                })
            }
            Err(err) => return Err(ImageError::Upload(err)),
        };
        if let Some(stores) = failed_import(&image).filter(|_| by_import) {
            return Err(import_error(format!(
                "Glance reports it failed (os_glance_failed_import: '{stores}')"
            )));
        }
        match image.status {
            ImageStatus::Active => return Ok(image),
            status if status.is_processing() => {
                let now = Instant::now();
                if now >= deadline && by_import {
                    return Err(import_error(format!(
                        "not active within import_timeout ({}): it is still '{status}'",
                        humantime::format_duration(clocks.import)
                    )));
                }
                if now >= deadline {
                    return Err(ImageError::NotActivated {
                        cloud: session.name().to_string(),
                        image_id: id.to_string(),
                        after: clocks.activation,
                        waiting_for: format!("it to be 'active' (it is '{status}')"),
                    });
                }
                tokio::time::sleep(delay.min(deadline - now)).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => {
                return Err(ImageError::Verification {
                    cloud: session.name().to_string(),
                    image_id: id.to_string(),
                    detail: format!("the image is '{other}' after the upload, not 'active'"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// A flow whose reader offered all `total` bytes at once.
    fn all_offered(total: u64) -> Flow {
        Flow {
            offered: Arc::new(AtomicU64::new(total)),
            taken: Arc::new(AtomicU64::new(0)),
            progress: None,
        }
    }

    fn clocks(stall: u64, activation: u64) -> UploadClocks {
        UploadClocks {
            stall: Duration::from_secs(stall),
            activation: Duration::from_secs(activation),
            import: Duration::from_secs(activation),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_noticed_only_after_no_progress_for_the_timeout() {
        let flow = all_offered(100);
        let sent = flow.taken.clone();
        let feeder = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let started = Instant::now();
        let end = watch_upload(&flow, 100, clocks(5, 60), &OnceLock::new()).await;
        assert_eq!(end, WatchEnd::Stalled);
        // Progress every second for 20 s, then silence: stall declared at ~25 s.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(24) && waited <= Duration::from_secs(27),
            "{waited:?}"
        );
        feeder.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_last_byte_only_the_activation_timeout_counts() {
        let flow = all_offered(100);
        let sent = flow.taken.clone();
        let feeder = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    sent.fetch_add(10, Ordering::Relaxed);
                }
            })
        };
        let started = Instant::now();
        let last_byte = OnceLock::new();
        let end = watch_upload(&flow, 100, clocks(2, 60), &last_byte).await;
        assert_eq!(end, WatchEnd::NoAnswer);
        // The last byte at ~10 s, then silent far past the stall timeout.
        let at = last_byte.get().unwrap().duration_since(started);
        assert!(
            at >= Duration::from_secs(10) && at <= Duration::from_secs(11),
            "{at:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(70) && waited <= Duration::from_secs(71),
            "{waited:?}"
        );
        feeder.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_file_starts_the_activation_clock_at_once() {
        let started = Instant::now();
        let end = watch_upload(&all_offered(0), 0, clocks(1, 30), &OnceLock::new()).await;
        assert_eq!(end, WatchEnd::NoAnswer);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_reader_is_not_a_stall_but_not_taking_what_is_offered_is() {
        // A fan-out: this cloud took every byte offered, and the reader waits
        // 30 s for a slower cloud (far past the 5 s stall timeout); then it
        // offers 10 more bytes that this cloud never takes.
        let flow = Flow::default();
        flow.offered.store(40, Ordering::Relaxed);
        flow.taken.store(40, Ordering::Relaxed);
        let offered = flow.offered.clone();
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            offered.fetch_add(10, Ordering::Relaxed);
        });
        let started = Instant::now();
        let end = watch_upload(&flow, 100, clocks(5, 60), &OnceLock::new()).await;
        assert_eq!(end, WatchEnd::Stalled);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(35) && waited <= Duration::from_secs(37),
            "{waited:?}"
        );
        feeder.await.unwrap();
    }
}
