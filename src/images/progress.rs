//! Uploads under way, so that `/v1/status`, `/v1/uploads` and the CLI's progress bar
//! can see them, and the reaper never touches an image still being uploaded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::names::ImageName;

closed_set! {
    /// What an upload is doing.
    pub(crate) enum UploadPhase {
        /// For the lock of its name: another upload of the name runs.
        Waiting = "waiting",
        /// Creating the image record.
        Creating = "creating",
        /// Sending the data.
        Uploading = "uploading",
        /// Waiting for Glance to call it active, then comparing hashes.
        Verifying = "verifying",
        /// Deleting old revisions.
        Pruning = "pruning",
    }
}

/// One upload under way.
#[derive(Debug)]
pub(crate) struct UploadProgress {
    /// The upload's id (the caller's `X-Request-Id`, or a random one); also the
    /// value of the image's upload marker.
    pub(crate) upload_id: String,
    /// The cloud it goes to.
    pub(crate) cloud: String,
    /// The image name.
    pub(crate) name: ImageName,
    /// The file's size.
    pub(crate) total_bytes: u64,
    /// Bytes handed to the HTTP client so far.
    pub(crate) sent_bytes: Arc<AtomicU64>,
    /// When it started.
    pub(crate) started_at: DateTime<Utc>,
    /// The Glance image id, once created, and what the upload is doing.
    state: Mutex<(Option<String>, UploadPhase)>,
}

/// What `/v1/uploads` shows of an upload.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UploadSnapshot {
    pub(crate) upload_id: String,
    pub(crate) cloud: String,
    pub(crate) name: ImageName,
    pub(crate) image_id: Option<String>,
    pub(crate) phase: UploadPhase,
    pub(crate) total_bytes: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) started_at: DateTime<Utc>,
}

impl UploadProgress {
    /// The state, even after a panic elsewhere left the lock poisoned (the
    /// state is two plain values: always consistent).
    fn state(&self) -> std::sync::MutexGuard<'_, (Option<String>, UploadPhase)> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set_phase(&self, phase: UploadPhase) {
        self.state().1 = phase;
    }

    pub(crate) fn set_image(&self, id: &str) {
        self.state().0 = Some(id.to_string());
    }

    pub(crate) fn snapshot(&self) -> UploadSnapshot {
        let (image_id, phase) = self.state().clone();
        UploadSnapshot {
            upload_id: self.upload_id.clone(),
            cloud: self.cloud.clone(),
            name: self.name.clone(),
            image_id,
            phase,
            total_bytes: self.total_bytes,
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            started_at: self.started_at,
        }
    }
}

/// The uploads under way in this daemon.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    uploads: Mutex<HashMap<String, Arc<UploadProgress>>>,
}

/// Removes its upload from [`InFlight`] when dropped, however the upload ends.
pub(crate) struct InFlightGuard<'a> {
    registry: &'a InFlight,
    pub(crate) progress: Arc<UploadProgress>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        crate::metrics::upload_ended(&self.progress.snapshot());
        if let Ok(mut uploads) = self.registry.uploads.lock() {
            uploads.remove(&self.progress.upload_id);
        }
    }
}

impl InFlight {
    pub(crate) fn start(
        &self,
        upload_id: &str,
        cloud: &str,
        name: &ImageName,
        total_bytes: u64,
    ) -> InFlightGuard<'_> {
        let progress = Arc::new(UploadProgress {
            upload_id: upload_id.to_string(),
            cloud: cloud.to_string(),
            name: name.clone(),
            total_bytes,
            sent_bytes: Arc::new(AtomicU64::new(0)),
            started_at: Utc::now(),
            state: Mutex::new((None, UploadPhase::Waiting)),
        });
        if let Ok(mut uploads) = self.uploads.lock() {
            uploads.insert(upload_id.to_string(), progress.clone());
        }
        InFlightGuard {
            registry: self,
            progress,
        }
    }

    pub(crate) fn list(&self) -> Vec<UploadSnapshot> {
        let mut list: Vec<UploadSnapshot> = self
            .uploads
            .lock()
            .map(|u| u.values().map(|p| p.snapshot()).collect())
            .unwrap_or_default();
        list.sort_by_key(|u| u.started_at);
        list
    }

    pub(crate) fn count(&self) -> usize {
        self.uploads.lock().map(|u| u.len()).unwrap_or(0)
    }

    /// Whether an image is being uploaded by this daemon right now.
    pub(crate) fn has_image(&self, image_id: &str) -> bool {
        self.list()
            .iter()
            .any(|u| u.image_id.as_deref() == Some(image_id))
    }
}
