//! Uploads under the daemon's stop ([`Shutdown`](crate::shutdown::Shutdown)):
//! each runs in a task of its own (a client that hangs up does not cancel it),
//! in a span naming the upload, the cloud and the image; a stop refuses new ones;
//! one still running at the end of `shutdown_grace` is aborted and its image
//! deleted.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::progress::{UploadPhase, UploadSnapshot};
use super::{ImageError, ImageService, UploadOutcome, UploadRequest, MARKER_DAEMON, MARKER_UPLOAD};
use crate::openstack::glance::ImageQuery;

/// A create request cut off by the abort may still be committed by Glance after
/// the first look: look once more after this.
const CREATE_SETTLE: Duration = Duration::from_secs(2);

impl ImageService {
    /// Runs [`run_upload`](ImageService::run_upload) as a task under the stop.
    pub(crate) async fn run_upload_task(
        self: &Arc<Self>,
        request: UploadRequest,
    ) -> Result<UploadOutcome, ImageError> {
        let name = request.family.image_name(&self.settings.template);
        // The cloud as the upload will resolve it (the default when none is named).
        let cloud = match self.clouds.session(request.cloud.as_deref()) {
            Ok(session) => session.name().to_string(),
            Err(_) => request.cloud.clone().unwrap_or_default(),
        };
        let span = tracing::info_span!(
            "upload",
            upload_id = %request.upload_id,
            %cloud,
            image = %name,
        );
        let upload_id = request.upload_id.clone();
        let service = self.clone();
        let work = async move { service.run_upload(request).await }.instrument(span.clone());
        let cleaner = self.clone();
        let on_abort = move || {
            // The upload still exists here: what had it done?
            let seen = cleaner
                .in_flight
                .list()
                .into_iter()
                .find(|u| u.upload_id == upload_id);
            async move { Err(cleaner.clean_up_aborted(seen).await) }.instrument(span)
        };
        self.settings
            .shutdown
            .spawn(work, on_abort)
            .map_err(|_| ImageError::ShuttingDown)?
            .await
            .map_err(|e| ImageError::Internal(format!("upload task: {e}")))?
    }

    /// Deletes what an upload aborted by the stop made, unless it was verified
    /// (pruning old revisions is all it had left): every image that carries its
    /// upload marker, found in Glance (the create may have been under way).
    async fn clean_up_aborted(&self, seen: Option<UploadSnapshot>) -> ImageError {
        let Some(upload) = seen else {
            // It had not begun (the file was being opened): nothing was made.
            return ImageError::Interrupted {
                detail: "before it began".to_string(),
            };
        };
        if upload.phase == UploadPhase::Pruning {
            tracing::warn!(image = ?upload.image_id, "aborted while pruning: the new image stays (it was verified)");
            return ImageError::Interrupted {
                detail: "after the image was verified, while pruning old revisions".to_string(),
            };
        }
        let mut deleted = 0;
        if upload.phase != UploadPhase::Waiting {
            deleted += self.delete_marked(&upload).await;
        }
        if upload.phase == UploadPhase::Creating {
            tokio::time::sleep(CREATE_SETTLE).await;
            deleted += self.delete_marked(&upload).await;
        }
        ImageError::Interrupted {
            detail: format!(
                "while {}; {deleted} image(s) deleted in cloud '{}'",
                upload.phase, upload.cloud
            ),
        }
    }

    /// Deletes the images of `upload` (by its markers); returns how many.
    async fn delete_marked(&self, upload: &UploadSnapshot) -> usize {
        let session = match self.clouds.session(Some(&upload.cloud)) {
            Ok(session) => session,
            Err(err) => {
                tracing::error!(error = %err, "cannot delete the aborted upload's image; the reaper will");
                return 0;
            }
        };
        let glance = session.glance();
        let query = ImageQuery {
            properties: vec![
                (MARKER_DAEMON.to_string(), self.settings.daemon_id.clone()),
                (MARKER_UPLOAD.to_string(), upload.upload_id.clone()),
            ],
            ..ImageQuery::default()
        };
        let images = match glance.list(&query).await {
            Ok(images) => images,
            Err(err) => {
                tracing::error!(error = %err, "cannot list the aborted upload's images; the reaper will delete them");
                return 0;
            }
        };
        let mut deleted = 0;
        for image in images {
            match glance.delete(&image.id).await {
                Ok(()) => {
                    tracing::info!(image = %image.id, status = %image.status, "deleted the image of an upload aborted by the stop");
                    deleted += 1;
                }
                Err(err) => {
                    tracing::error!(image = %image.id, error = %err, "cannot delete the aborted upload's image; the reaper will")
                }
            }
        }
        deleted
    }
}
