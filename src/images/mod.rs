//! The revision logic: what an image is called, how a new revision is uploaded and
//! verified, which old ones are pruned, and the reaper of abandoned uploads.
//!
//! Nothing here knows about HTTP: the [`http`](crate::http) layer turns requests
//! into [`UploadRequest`]s and [`ImageError`]s into status codes.

pub(crate) mod convert;
pub(crate) mod format;
pub(crate) mod names;
pub(crate) mod progress;
pub(crate) mod prune;
pub(crate) mod request;
pub(crate) mod retry;
mod shared_calls;
pub(crate) mod source;
pub(crate) mod src_path;
mod stop;
pub(crate) mod upload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

pub(crate) use crate::api::{Latest as LatestImage, PruneFailure, UploadAnswer as UploadOutcome};
use crate::jobs::{CreatedImage, JobsError};
use crate::openstack::glance::{Image, ImageQuery};
use crate::openstack::registry::{CloudRegistry, RegistryError};
use crate::openstack::session::Session;
use crate::openstack::OpenStackError;
use names::{FieldError, ImageFamily, ImageName, NameTemplate};
use progress::{InFlight, UploadIdInUse};
pub(crate) use request::UploadRequest;
use shared_calls::SharedCalls;
use source::{HashAlgo, SourceError, SourceFile};
pub(crate) use upload::{CloudOutcome, PreparedUpload};

/// The property that marks images made by this daemon installation (its daemon id).
pub(crate) const MARKER_DAEMON: &str = "image_helper_daemon_id";
/// The property that says which upload made an image.
pub(crate) const MARKER_UPLOAD: &str = "image_helper_upload_id";

/// The daemon config's settings for images.
#[derive(Debug, Clone)]
pub(crate) struct ImageSettings {
    /// `image_name_template`.
    pub(crate) template: NameTemplate,
    /// `stale_upload_age`: an unfinished upload older than this is abandoned.
    pub(crate) stale_upload_age: Duration,
    /// `upload_stall_timeout`: no byte progress for this long aborts an upload.
    pub(crate) upload_stall_timeout: Duration,
    /// `activation_timeout`: after the last byte, how long Glance may take to
    /// answer the data upload and report the image active.
    pub(crate) activation_timeout: Duration,
    /// This installation's id, the value of [`MARKER_DAEMON`].
    pub(crate) daemon_id: String,
    /// `upload_dirs`, resolved (at start-up, or by a reload).
    pub(crate) upload_dirs: Vec<PathBuf>,
    /// `upload_attempts`: tries in all for an upload that meets transient faults.
    pub(crate) upload_attempts: u32,
    /// `upload_retry_backoff`: the wait before the second try, doubled each try.
    pub(crate) upload_retry_backoff: Duration,
    /// `import_timeout`: from the import's request to `active` (glance-direct).
    pub(crate) import_timeout: Duration,
    /// `state_dir`: conversions for a cloud's `image_format` write under its
    /// `staging` directory.
    pub(crate) state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The file's content is refused before a byte is sent (`unsafe_image`).
    #[error("'{path}' is refused: {reason}")]
    Unsafe {
        path: PathBuf,
        reason: format::UnsafeImage,
    },
    /// Converting the file to the format a cloud wants failed (`507
    /// insufficient_space`, or the file's fault: `unsafe_image`).
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
    #[error(transparent)]
    Cloud(#[from] RegistryError),
    /// Reading images failed (`get_image_failed`).
    #[error("{0}")]
    Get(OpenStackError),
    /// Creating, uploading or checking the new image failed (`upload_image_failed`).
    #[error("{0}")]
    Upload(OpenStackError),
    /// Glance stored something other than what we sent.
    #[error("cloud '{cloud}': image {image_id} failed verification and was deleted: {detail}")]
    Verification {
        cloud: String,
        image_id: String,
        detail: String,
    },
    /// No byte progress for `upload_stall_timeout`.
    #[error("cloud '{cloud}': upload of image {image_id} stalled: no progress for {}; the image was deleted", humantime::format_duration(*after))]
    Stalled {
        cloud: String,
        image_id: String,
        after: Duration,
    },
    /// After the last byte, Glance did not finish within `activation_timeout`.
    #[error("cloud '{cloud}': Glance did not finish image {image_id} within activation_timeout ({}) after the last byte: still waiting for {waiting_for}; the image was deleted", humantime::format_duration(*after))]
    NotActivated {
        cloud: String,
        image_id: String,
        after: Duration,
        waiting_for: String,
    },
    /// The file could not be read to the end as it was at the start.
    #[error("{source}; the image was deleted")]
    FileChanged { source: SourceError },
    /// An `X-Request-Id` already used by an upload under way (`409 conflict`).
    #[error(transparent)]
    UploadIdInUse(#[from] UploadIdInUse),
    /// The job could not go on (a stop, mostly: `shutting_down`).
    #[error(transparent)]
    Job(#[from] JobsError),
    /// A Glance import (glance-direct) failed or did not end within
    /// `import_timeout` (`upload_image_failed`).
    #[error(
        "cloud '{cloud}': the import of image {image_id} failed: {detail}; the image was deleted"
    )]
    Import {
        cloud: String,
        image_id: String,
        detail: String,
    },
    /// The upload task ended abnormally (a bug); the image may remain for the reaper.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImageError {
    /// Whether a fresh try of the upload may succeed: Glance's or the
    /// network's transient faults ([`OpenStackError::is_transient`]), never a
    /// 4xx, a hash mismatch, a stall or a file that changed.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ImageError::Upload(err) | ImageError::Get(err) => err.is_transient(),
            _ => false,
        }
    }
}

/// What a prune did: old revisions deleted, hidden, or left after a failure.
#[derive(Debug, Default)]
pub(crate) struct Pruned {
    pub(crate) deleted: Vec<String>,
    /// Hidden (`retire: hide`).
    pub(crate) hidden: Vec<String>,
    pub(crate) failed: Vec<PruneFailure>,
}

/// Held while an upload of one name to one cloud runs.
type NameLock = Arc<tokio::sync::Mutex<()>>;

/// The image operations, shared by every request.
#[derive(Debug)]
pub(crate) struct ImageService {
    /// Replaced as a whole by a reload; an upload under way keeps the settings
    /// it started with.
    settings: std::sync::RwLock<Arc<ImageSettings>>,
    /// The daemon's stop: uploads run as its tasks (see `stop.rs`).
    shutdown: crate::shutdown::Shutdown,
    clouds: Arc<CloudRegistry>,
    /// One lock per (cloud, image name): uploads of a name run one at a time.
    locks: Mutex<HashMap<(String, ImageName), NameLock>>,
    /// Uploads under way.
    in_flight: InFlight,
    /// Per cloud, the upload method learnt (`auto`) and the stores checked.
    glance_ways: upload::GlanceWays,
    /// The `os_hash_algo` each cloud was last seen to use.
    hash_algos: Mutex<HashMap<String, HashAlgo>>,
    /// Concurrent identical "latest" queries share Glance calls, keyed by the
    /// session (its address: a replaced cloud is another key) and the name.
    latest_calls: SharedCalls<(usize, ImageName), Result<Option<Image>, OpenStackError>>,
}

impl ImageService {
    pub(crate) fn new(
        settings: ImageSettings,
        clouds: Arc<CloudRegistry>,
        shutdown: crate::shutdown::Shutdown,
    ) -> Arc<ImageService> {
        Arc::new(ImageService {
            settings: std::sync::RwLock::new(Arc::new(settings)),
            shutdown,
            clouds,
            locks: Mutex::new(HashMap::new()),
            in_flight: InFlight::default(),
            glance_ways: upload::GlanceWays::default(),
            hash_algos: Mutex::new(HashMap::new()),
            latest_calls: SharedCalls::new(),
        })
    }

    /// The settings in force.
    pub(crate) fn settings(&self) -> Arc<ImageSettings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts new settings in force (a reload): uploads under way finish with the
    /// ones they started with. The daemon id cannot change.
    pub(crate) fn replace_settings(&self, mut settings: ImageSettings) {
        let mut slot = self.settings.write().unwrap_or_else(|p| p.into_inner());
        settings.daemon_id = slot.daemon_id.clone();
        *slot = Arc::new(settings);
    }

    /// The image name of a family, by the configured template.
    pub(crate) fn image_name(&self, family: &ImageFamily) -> ImageName {
        family.image_name(&self.settings().template)
    }

    /// The newest active image of a family: one server-side Glance query.
    pub(crate) async fn latest(
        &self,
        cloud: Option<&str>,
        family: &ImageFamily,
    ) -> Result<LatestImage, ImageError> {
        let session = self.clouds.session(cloud)?;
        let name = family.image_name(&self.settings().template);
        let key = (Arc::as_ptr(&session) as usize, name.clone());
        let image = self
            .latest_calls
            .run(key, || async {
                session.glance().latest_active(name.as_str()).await
            })
            .await
            .map_err(ImageError::Get)?;
        Ok(LatestImage {
            id: image.as_ref().map(|i| i.id.clone()),
            created_at: image.map(|i| i.created_at),
            name: name.to_string(),
        })
    }

    /// The newest active image of a family in every cloud, queried side by side;
    /// each cloud answers or fails on its own.
    pub(crate) async fn latest_everywhere(
        &self,
        family: &ImageFamily,
    ) -> Result<Vec<(String, Result<LatestImage, ImageError>)>, ImageError> {
        let sessions = self.every_session()?;
        let answers = futures_util::future::join_all(
            sessions.iter().map(|s| self.latest(Some(s.name()), family)),
        )
        .await;
        Ok(sessions
            .iter()
            .map(|s| s.name().to_string())
            .zip(answers)
            .collect())
    }

    /// Every configured cloud's session; none is the registry's own "no
    /// clouds" error, with its advice.
    fn every_session(&self) -> Result<Vec<Arc<Session>>, ImageError> {
        let sessions = self.clouds.sessions();
        if sessions.is_empty() {
            self.clouds.session(None)?;
        }
        Ok(sessions)
    }

    fn lock_for(&self, cloud: &str, name: &ImageName) -> NameLock {
        let mut locks = match self.locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Forget locks nobody holds or waits for, so the map does not grow forever.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks
            .entry((cloud.to_string(), name.clone()))
            .or_default()
            .clone()
    }

    fn hash_algo(&self, cloud: &str) -> HashAlgo {
        self.hash_algos
            .lock()
            .ok()
            .and_then(|m| m.get(cloud).copied())
            .unwrap_or(HashAlgo::Sha512)
    }

    fn remember_hash_algo(&self, cloud: &str, algo: HashAlgo) {
        if let Ok(mut m) = self.hash_algos.lock() {
            m.insert(cloud.to_string(), algo);
        }
    }

    /// Judges and opens `src_path` as one step, off the async worker threads.
    async fn open_source(&self, src_path: &std::path::Path) -> Result<SourceFile, ImageError> {
        let path = src_path.to_path_buf();
        let dirs = self.settings().upload_dirs.clone();
        tokio::task::spawn_blocking(move || src_path::open_within(&path, &dirs))
            .await
            .map_err(|e| ImageError::Internal(format!("opening src_path: {e}")))?
            .map_err(ImageError::from)
    }

    /// The file of a `src_fd` request: the descriptor `index` the client passed,
    /// checked to be a readable, regular file (on a blocking thread: `fstat`).
    pub(crate) async fn open_passed(
        &self,
        fd: std::os::fd::OwnedFd,
        index: u32,
    ) -> Result<SourceFile, ImageError> {
        tokio::task::spawn_blocking(move || SourceFile::from_descriptor(fd, index))
            .await
            .map_err(|e| ImageError::Internal(format!("checking src_fd: {e}")))?
            .map_err(ImageError::from)
    }

    /// Retires old revisions of `name` by [`prune::plan_prune`]: deletes them,
    /// or hides them with `retire: hide`. Failures do not fail the upload (it
    /// succeeded); they are reported and logged (a 409, an image in use, is
    /// `in_use`: kept, and tried again at the next prune of the name).
    async fn prune_revisions(
        &self,
        session: &Session,
        name: &ImageName,
        new_id: &str,
        num_revisions: u32,
        retire: prune::Retire,
    ) -> Pruned {
        let glance = session.glance();
        let mut pruned = Pruned::default();
        let images = match self.images_to_prune(session, name, retire).await {
            Ok(images) => images,
            Err(err) => {
                tracing::warn!(cloud = %session.name(), error = %err, "cannot list images to prune");
                let message = format!("listing images to prune: {err}");
                let failure = PruneFailure::new(String::new(), prune_code(&err), message);
                pruned.failed.push(failure);
                return pruned;
            }
        };
        let plan = prune::plan_prune(
            &images,
            new_id,
            num_revisions,
            retire,
            Utc::now(),
            self.settings().stale_upload_age,
            &self.settings().daemon_id,
        );
        let (tries, first) = (
            self.settings().upload_attempts,
            self.settings().upload_retry_backoff,
        );
        for id in plan.hide {
            match retry::while_transient(tries, first, || glance.hide(&id)).await {
                Ok(()) => pruned.hidden.push(id),
                Err(err) => {
                    tracing::warn!(cloud = %session.name(), image = %id, error = %err, "hiding an old revision failed");
                    pruned
                        .failed
                        .push(PruneFailure::new(id, prune_code(&err), err.to_string()));
                }
            }
        }
        for id in plan.delete {
            if self.in_flight.has_image(&id) {
                continue;
            }
            match retry::while_transient(tries, first, || glance.delete(&id)).await {
                Ok(()) => pruned.deleted.push(id),
                Err(err) => {
                    tracing::warn!(cloud = %session.name(), image = %id, error = %err, "prune failed");
                    pruned
                        .failed
                        .push(PruneFailure::new(id, prune_code(&err), err.to_string()));
                }
            }
        }
        crate::metrics::images_pruned(session.name(), pruned.deleted.len());
        pruned
    }

    /// Every image of `name`: the visible ones (said explicitly), and with
    /// `retire: hide` the hidden ones too (Glance lists those only when asked).
    async fn images_to_prune(
        &self,
        session: &Session,
        name: &ImageName,
        retire: prune::Retire,
    ) -> Result<Vec<Image>, OpenStackError> {
        let glance = session.glance();
        let query = |hidden| ImageQuery {
            name: Some(name.to_string()),
            hidden: Some(hidden),
            ..ImageQuery::default()
        };
        let mut images = glance.list(&query(false)).await?;
        if retire == prune::Retire::Hide {
            images.extend(glance.list(&query(true)).await?);
        }
        Ok(images)
    }

    /// Deletes this daemon's abandoned uploads (non-active, older than
    /// `stale_upload_age`, carrying our marker) in every cloud. Never an image
    /// without our marker, never one this process is uploading now.
    pub(crate) async fn reap(&self) -> Vec<String> {
        let mut reaped = Vec::new();
        for session in self.clouds.sessions() {
            match self
                .reap_cloud(&session, self.settings().stale_upload_age)
                .await
            {
                Ok(ids) => reaped.extend(ids),
                Err(err) => {
                    tracing::warn!(cloud = %session.name(), error = %err, "reaper: cannot list images")
                }
            }
        }
        reaped
    }

    async fn reap_cloud(
        &self,
        session: &Session,
        stale_age: Duration,
    ) -> Result<Vec<String>, OpenStackError> {
        let glance = session.glance();
        let query = ImageQuery {
            properties: vec![(MARKER_DAEMON.to_string(), self.settings().daemon_id.clone())],
            ..ImageQuery::default()
        };
        let now = Utc::now();
        let mut reaped = Vec::new();
        for image in glance.list(&query).await? {
            let ours = image.property(MARKER_DAEMON) == Some(self.settings().daemon_id.as_str());
            if !ours
                || image.protected
                || !prune::is_stale(&image, now, stale_age)
                || self.in_flight.has_image(&image.id)
            {
                continue;
            }
            match glance.delete(&image.id).await {
                Ok(()) => {
                    tracing::info!(cloud = %session.name(), image = %image.id, status = %image.status, "reaped an abandoned upload");
                    reaped.push(image.id);
                }
                Err(err) => {
                    tracing::warn!(cloud = %session.name(), image = %image.id, error = %err, "reaper: delete failed")
                }
            }
        }
        crate::metrics::images_reaped(session.name(), reaped.len());
        Ok(reaped)
    }

    /// Deletes the images of jobs a stop cut off (found at start-up), in the
    /// background; an image whose cloud is gone or unreachable is left to the
    /// reaper (it carries our marker).
    pub(crate) fn delete_leftovers(self: &Arc<Self>, images: Vec<CreatedImage>) {
        for image in images {
            let service = self.clone();
            tokio::spawn(async move { service.delete_created(&image).await });
        }
    }

    /// Deletes an image an interrupted job created; one that cannot be deleted
    /// now is left to the reaper (it carries our marker).
    /// The session that created it while its upload is under way (a stop), else
    /// the cloud of that name in force (a restart).
    async fn delete_created(&self, image: &CreatedImage) {
        let session = match self.in_flight.session_of(&image.image_id) {
            Some(session) => Ok(session),
            None => self.clouds.session(Some(&image.cloud)),
        };
        let deleted = match session {
            Ok(session) => session
                .glance()
                .delete(&image.image_id)
                .await
                .map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match deleted {
            Ok(()) => {
                tracing::info!(cloud = %image.cloud, image = %image.image_id, "deleted the image of an interrupted job")
            }
            Err(error) => {
                tracing::warn!(cloud = %image.cloud, image = %image.image_id, %error, "cannot delete the image of an interrupted job now; the reaper will")
            }
        }
    }

    /// Runs the reaper now and then every `interval`, until the task is dropped.
    pub(crate) async fn run_reaper(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            ticker.tick().await;
            let reaped = self.reap().await;
            if !reaped.is_empty() {
                tracing::info!(count = reaped.len(), "reaper deleted abandoned uploads");
            }
            crate::heap::release_free_pages();
            tracing::debug!("reaper: pass done");
            if std::mem::take(&mut first) {
                tracing::info!("reaper: first pass done");
            }
        }
    }
}

/// The code of a prune's failure: `in_use` for Glance's 409 (an image servers
/// were cloned from, on Ceph), else the contract's code for the error.
fn prune_code(err: &OpenStackError) -> &'static str {
    match err {
        OpenStackError::Api { status: 409, .. } => "in_use",
        OpenStackError::Unauthorized { .. } => "openstack_unauthorized",
        OpenStackError::NotReady { .. } => "not_ready",
        OpenStackError::Connection { .. }
        | OpenStackError::Interrupted { .. }
        | OpenStackError::Tls { .. }
        | OpenStackError::NoEndpoint { .. } => "openstack_connection_failed",
        OpenStackError::Api { .. } | OpenStackError::InvalidResponse { .. } => {
            "upload_image_failed"
        }
    }
}
