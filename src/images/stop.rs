//! What the daemon's stop ([`Shutdown`](crate::shutdown::Shutdown)) asks of the
//! images: when `shutdown_grace` ends with uploads still under way, the images
//! of the jobs it cut off are deleted (the jobs record them, see
//! `Jobs::interrupt_unfinished`), and once their tasks are gone, a last sweep
//! deletes any unfinished image of this daemon left (a create cut off in
//! flight, which Glance may still commit): nothing is left `queued` or
//! `saving` by a stop.

use std::sync::Arc;
use std::time::Duration;

use super::ImageService;
use crate::jobs::CreatedImage;
use crate::shutdown::Shutdown;

/// A create request cut off by the abort may still be committed by Glance: the
/// sweep waits this long first.
const CREATE_SETTLE: Duration = Duration::from_secs(2);

impl ImageService {
    /// The daemon's stop, under which job tasks run.
    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Deletes the images of jobs a stop cut off, and waits for it; an image that
    /// cannot be deleted now is left to the reaper (it carries our marker).
    pub(crate) async fn delete_after_stop(self: &Arc<Self>, images: Vec<CreatedImage>) {
        for image in images {
            self.delete_created(&image).await;
        }
    }

    /// After the aborted tasks are gone: every unfinished image of this daemon,
    /// whatever its age, in every cloud (no upload of ours is under way now).
    pub(crate) async fn sweep_after_stop(self: &Arc<Self>) {
        tokio::time::sleep(CREATE_SETTLE).await;
        for session in self.clouds.sessions() {
            if let Err(err) = self.reap_cloud(&session, Duration::ZERO).await {
                tracing::warn!(cloud = %session.name(), error = %err, "stop: cannot list this daemon's images; the reaper will delete what is left");
            }
        }
    }
}
