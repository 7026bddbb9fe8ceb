//! Uploads under way in this daemon, by upload id (the image's upload marker):
//! an `X-Request-Id` names at most one of them (a second is `409 conflict`), and
//! neither prune nor the reaper touches an image still being uploaded. Their
//! progress is their job's (`GET /v1/jobs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Upload id → the Glance images it created (one per cloud).
type Uploads = Arc<Mutex<HashMap<String, Vec<String>>>>;

fn lock(uploads: &Uploads) -> MutexGuard<'_, HashMap<String, Vec<String>>> {
    uploads.lock().unwrap_or_else(|p| p.into_inner())
}

/// The uploads under way.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    uploads: Uploads,
}

/// An upload id already used by an upload under way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("X-Request-Id '{0}' is already in use by an upload under way")]
pub(crate) struct UploadIdInUse(pub(crate) String);

/// Holds an upload id from submission until the upload ended, however it ends.
#[derive(Debug)]
pub(crate) struct UploadReservation {
    uploads: Uploads,
    pub(crate) upload_id: String,
}

impl UploadReservation {
    /// The upload created an image (in one of its clouds).
    pub(crate) fn add_image(&self, image_id: &str) {
        if let Some(images) = lock(&self.uploads).get_mut(&self.upload_id) {
            images.push(image_id.to_string());
        }
    }
}

impl Drop for UploadReservation {
    fn drop(&mut self) {
        lock(&self.uploads).remove(&self.upload_id);
    }
}

impl InFlight {
    /// Reserves `upload_id` for a new upload.
    pub(crate) fn reserve(&self, upload_id: &str) -> Result<UploadReservation, UploadIdInUse> {
        let mut uploads = lock(&self.uploads);
        if uploads.contains_key(upload_id) {
            return Err(UploadIdInUse(upload_id.to_string()));
        }
        uploads.insert(upload_id.to_string(), Vec::new());
        Ok(UploadReservation {
            uploads: self.uploads.clone(),
            upload_id: upload_id.to_string(),
        })
    }

    /// Whether an image is being uploaded by this daemon right now.
    pub(crate) fn has_image(&self, image_id: &str) -> bool {
        lock(&self.uploads)
            .values()
            .any(|images| images.iter().any(|id| id == image_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_id_is_held_until_its_upload_ends() {
        let in_flight = InFlight::default();
        let first = in_flight.reserve("hook-1").unwrap();
        assert_eq!(
            in_flight.reserve("hook-1").unwrap_err(),
            UploadIdInUse("hook-1".into())
        );
        first.add_image("img-1");
        first.add_image("img-2");
        assert!(in_flight.has_image("img-1") && in_flight.has_image("img-2"));
        let other = in_flight.reserve("hook-2").unwrap();
        drop(first);
        assert!(!in_flight.has_image("img-1"));
        assert!(in_flight.reserve("hook-1").is_ok());
        drop(other);
    }
}
