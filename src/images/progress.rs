//! Uploads under way in this daemon, by upload id (the image's upload marker):
//! an `X-Request-Id` names at most one of them (a second is `409 conflict`), and
//! neither prune nor the reaper touches an image still being uploaded. Their
//! progress is their job's (`GET /v1/jobs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::openstack::session::Session;

/// An image an upload created, and the session that created it: a stop
/// deletes it with that session, even when a `PUT /v1/clouds` or a reload
/// removed its cloud (or moved it to another project) meanwhile.
type Created = (String, Arc<Session>);

/// Upload id → the Glance images it created (one per cloud).
type Uploads = Arc<Mutex<HashMap<String, Vec<Created>>>>;

fn lock(uploads: &Uploads) -> MutexGuard<'_, HashMap<String, Vec<Created>>> {
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
    /// The upload created an image (in one of its clouds) with `session`.
    pub(crate) fn add_image(&self, image_id: &str, session: &Arc<Session>) {
        if let Some(images) = lock(&self.uploads).get_mut(&self.upload_id) {
            images.push((image_id.to_string(), session.clone()));
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
        self.session_of(image_id).is_some()
    }

    /// The session that created an image being uploaded now.
    pub(crate) fn session_of(&self, image_id: &str) -> Option<Arc<Session>> {
        lock(&self.uploads)
            .values()
            .flatten()
            .find(|(id, _)| id == image_id)
            .map(|(_, session)| session.clone())
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
        let bed = crate::clouds::CloudsFile::parse(
            "clouds:\n  c:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n      username: u\n      password: p\n      project_name: p\n",
            None,
            None,
        )
        .unwrap();
        let session =
            Session::new(bed.clouds[0].clone(), std::time::Duration::from_secs(60)).unwrap();
        first.add_image("img-1", &session);
        first.add_image("img-2", &session);
        assert!(in_flight.has_image("img-1") && in_flight.has_image("img-2"));
        assert!(Arc::ptr_eq(
            &in_flight.session_of("img-2").unwrap(),
            &session
        ));
        let other = in_flight.reserve("hook-2").unwrap();
        drop(first);
        assert!(!in_flight.has_image("img-1"));
        assert!(in_flight.reserve("hook-1").is_ok());
        drop(other);
    }
}
