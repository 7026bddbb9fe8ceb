//! The revision logic: what an image is called, how a new revision is uploaded and
//! verified, which old ones are pruned, and the reaper of abandoned uploads.
//!
//! Nothing here knows about HTTP: the [`http`](crate::http) layer turns requests
//! into [`UploadRequest`]s and [`ImageError`]s into status codes.

pub(crate) mod activation;
pub(crate) mod names;
pub(crate) mod progress;
pub(crate) mod prune;
pub(crate) mod request;
mod shared_calls;
pub(crate) mod source;
pub(crate) mod src_path;
mod stop;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;

pub(crate) use crate::api::{Latest as LatestImage, PruneFailure, UploadAnswer as UploadOutcome};
use crate::jobs::{CreatedImage, JobRequest, JobState, JobTask, JobsError};
use crate::openstack::glance::{Image, ImageQuery, NewImage};
use crate::openstack::registry::{CloudRegistry, RegistryError};
use crate::openstack::session::Session;
use crate::openstack::OpenStackError;
use activation::UploadClocks;
use names::{FieldError, ImageFamily, ImageName, NameTemplate};
use progress::{InFlight, UploadIdInUse, UploadReservation};
pub(crate) use request::UploadRequest;
use shared_calls::SharedCalls;
use source::{HashAlgo, SourceError, SourceFile};

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
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Source(#[from] SourceError),
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
    /// The upload task ended abnormally (a bug); the image may remain for the reaper.
    #[error("internal error: {0}")]
    Internal(String),
}

/// An upload whose request, file and cloud were checked (the request's errors
/// are answered before a job exists), ready to run as a job.
#[derive(Debug)]
pub(crate) struct PreparedUpload {
    request: UploadRequest,
    /// Opened where it was judged: the file read is the file judged.
    source: SourceFile,
    session: Arc<Session>,
    /// The upload id (the image's marker), held until the upload ends.
    reservation: UploadReservation,
}

impl PreparedUpload {
    /// The file's size.
    pub(crate) fn size(&self) -> u64 {
        self.source.size
    }

    /// The cloud it goes to.
    pub(crate) fn cloud(&self) -> &str {
        self.session.name()
    }

    /// The request it came from.
    pub(crate) fn request(&self) -> &UploadRequest {
        &self.request
    }
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

    /// Checks what can be checked before an upload becomes a job: where the file
    /// is (first: `path_not_allowed`), that it is a regular file, the cloud, and
    /// that `upload_id` (an `X-Request-Id`) is not used by an upload under way.
    pub(crate) async fn prepare(
        &self,
        request: UploadRequest,
        upload_id: &str,
    ) -> Result<PreparedUpload, ImageError> {
        let source = self.open_source(&request.src_path).await?;
        let session = self.clouds.session(request.cloud.as_deref())?;
        let reservation = self.in_flight.reserve(upload_id)?;
        Ok(PreparedUpload {
            request,
            source,
            session,
            reservation,
        })
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

    /// Runs a prepared upload as `job`: waits (`queued`) for the name's lock, then
    /// for an upload slot; uploads (`uploading`), verifies (`verifying`), prunes
    /// (`pruning`). The caller records the answer or the error in the job. A
    /// failed upload leaves no image behind (the reaper retries a failed delete).
    pub(crate) async fn run_job<R: JobRequest>(
        &self,
        prepared: PreparedUpload,
        job: &JobTask<R>,
    ) -> Result<UploadOutcome, ImageError> {
        let PreparedUpload {
            request,
            source,
            session,
            reservation,
        } = prepared;
        let cloud = session.name().to_string();
        let name = request.family.image_name(&self.settings().template);
        let disk_format = request
            .disk_format
            .unwrap_or_else(|| source.detect_disk_format());

        // The name's lock first, then a slot: both waits show as `queued`.
        let lock = self.lock_for(&cloud, &name);
        let _one_at_a_time = lock.lock().await;
        let _slot = job.acquire_slot().await?;

        let mut properties = request.properties.clone();
        properties.insert(
            "architecture".into(),
            request.family.arch.glance_architecture().into(),
        );
        properties.insert("os_distro".into(), "ubuntu".into());
        properties.insert("os_version".into(), request.family.base.version().into());
        properties.insert(MARKER_DAEMON.into(), self.settings().daemon_id.clone());
        properties.insert(MARKER_UPLOAD.into(), reservation.upload_id.clone());
        let new_image = NewImage {
            name: name.to_string(),
            disk_format,
            container_format: request.container_format,
            visibility: request.visibility,
            properties,
        };
        let glance = session.glance();
        let created = glance
            .create(&new_image)
            .await
            .map_err(ImageError::Upload)?;
        reservation.set_image(&created.id);
        tracing::info!(cloud = %cloud, image = %created.id, name = %name, size = source.size, "uploading");

        let sent = match job.image_created(&cloud, &created.id).await {
            Ok(()) => self.send_and_verify(&session, &created, source, job).await,
            Err(err) => Err(err.into()),
        };
        let verified = match sent {
            Ok(image) => image,
            Err(err) => {
                tracing::warn!(cloud = %cloud, image = %created.id, error = %err, "upload failed; deleting the image");
                if let Err(delete_err) = glance.delete(&created.id).await {
                    tracing::error!(
                        cloud = %cloud, image = %created.id, error = %delete_err,
                        "could not delete the failed upload; the reaper will retry"
                    );
                }
                return Err(err);
            }
        };

        job.advance(JobState::Pruning).await?;
        let (pruned, prune_failed) = self
            .prune_revisions(&session, &name, &verified.id, request.num_revisions)
            .await;
        tracing::info!(cloud = %cloud, image = %verified.id, name = %name, pruned = ?pruned, "upload verified");
        Ok(UploadOutcome {
            id: verified.id.clone(),
            name: name.to_string(),
            status: verified.status.to_string(),
            size: verified.size.unwrap_or_default(),
            checksum: verified.checksum.clone().unwrap_or_default(),
            os_hash_algo: verified.os_hash_algo.clone().unwrap_or_default(),
            os_hash_value: verified.os_hash_value.clone().unwrap_or_default(),
            pruned,
            prune_failed,
            cloud,
            upload_id: reservation.upload_id.clone(),
        })
    }

    /// Streams the file into the image, waits until Glance calls it active, and
    /// compares size and hashes. Any error leaves the image for the caller to delete.
    async fn send_and_verify<R: JobRequest>(
        &self,
        session: &Session,
        created: &Image,
        source: SourceFile,
        job: &JobTask<R>,
    ) -> Result<Image, ImageError> {
        let cloud = session.name().to_string();
        let algo = created
            .os_hash_algo
            .as_deref()
            .and_then(HashAlgo::parse)
            .unwrap_or_else(|| self.hash_algo(&cloud));
        let size = source.size;
        let rehash_file = source.file.try_clone().ok();
        // The job's `bytes_sent`: the bytes handed to the HTTP client.
        let sent = job.bytes_sent().atomic();
        let cancel = tokio_util::sync::CancellationToken::new();
        // Whatever ends this function early (a stall, an error, a panic) stops the
        // file reader too.
        let _stop_reader = cancel.clone().drop_guard();
        let (stream, digests) =
            source::stream_with_digests(source, algo, sent.clone(), cancel.clone());
        let glance = session.glance();
        let upload = glance.upload_data(&created.id, size, reqwest::Body::wrap_stream(stream));
        let clocks = UploadClocks {
            stall: self.settings().upload_stall_timeout,
            activation: self.settings().activation_timeout,
        };
        let last_byte = OnceLock::new();
        let result = tokio::select! {
            r = upload => r.map_err(ImageError::Upload),
            end = activation::watch_upload(&sent, size, clocks, &last_byte) => {
                Err(end.error(&cloud, &created.id, clocks))
            }
        };
        // A file that changed under us explains a failed upload better than the
        // connection error it caused, so the reader's verdict comes first.
        if result.is_err() {
            cancel.cancel();
        }
        let digests = match (result, digests.await) {
            (_, Ok(Err(source))) if !matches!(source, SourceError::Abandoned) => {
                return Err(ImageError::FileChanged { source })
            }
            (Err(err), _) => return Err(err),
            (Ok(()), Ok(Ok(digests))) => digests,
            (Ok(()), _) => {
                return Err(ImageError::Internal(
                    "the file reader ended without a result".into(),
                ))
            }
        };

        job.advance(JobState::Verifying).await?;
        let since = last_byte
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        let image =
            activation::wait_until_active(session, &created.id, since + clocks.activation, clocks)
                .await?;
        let mismatch = |detail: String| ImageError::Verification {
            cloud: cloud.clone(),
            image_id: created.id.clone(),
            detail,
        };
        if image.size != Some(digests.size) {
            return Err(mismatch(format!(
                "Glance stored {:?} bytes, we sent {}",
                image.size, digests.size
            )));
        }
        if image.checksum.as_deref() != Some(digests.md5.as_str()) {
            return Err(mismatch(format!(
                "checksum (md5) is {:?}, the file's is {}",
                image.checksum, digests.md5
            )));
        }
        if let Some(value) = &image.os_hash_value {
            let reported = image.os_hash_algo.as_deref().unwrap_or("");
            let expected = if reported == digests.algo.name() {
                digests.os_hash_value.clone()
            } else {
                // Glance uses another algorithm than we guessed: hash once more
                // with it (rare: once per cloud, then remembered).
                let other = HashAlgo::parse(reported)
                    .ok_or_else(|| mismatch(format!("unsupported os_hash_algo '{reported}'")))?;
                self.remember_hash_algo(&cloud, other);
                let file =
                    rehash_file.ok_or_else(|| mismatch("cannot re-read the file".to_string()))?;
                tokio::task::spawn_blocking(move || source::hash_file(&file, other))
                    .await
                    .map_err(|e| ImageError::Internal(e.to_string()))?
                    .map_err(|e| mismatch(format!("re-reading the file: {e}")))?
            };
            if value != &expected {
                return Err(mismatch(format!(
                    "os_hash_value ({reported}) is {value}, the file's is {expected}"
                )));
            }
        }
        Ok(image)
    }

    /// Deletes old revisions of `name` by [`prune::plan_prune`]. Failures do not fail
    /// the upload (it succeeded); they are reported and logged.
    async fn prune_revisions(
        &self,
        session: &Session,
        name: &ImageName,
        new_id: &str,
        num_revisions: u32,
    ) -> (Vec<String>, Vec<PruneFailure>) {
        let glance = session.glance();
        let query = ImageQuery {
            name: Some(name.to_string()),
            ..ImageQuery::default()
        };
        let images = match glance.list(&query).await {
            Ok(images) => images,
            Err(err) => {
                tracing::warn!(cloud = %session.name(), error = %err, "cannot list images to prune");
                return (
                    Vec::new(),
                    vec![PruneFailure {
                        id: String::new(),
                        message: format!("listing images to prune: {err}"),
                    }],
                );
            }
        };
        let plan = prune::plan_prune(
            &images,
            new_id,
            num_revisions,
            Utc::now(),
            self.settings().stale_upload_age,
        );
        let mut pruned = Vec::new();
        let mut failed = Vec::new();
        for id in plan {
            if self.in_flight.has_image(&id) {
                continue;
            }
            match glance.delete(&id).await {
                Ok(()) => pruned.push(id),
                Err(err) => {
                    tracing::warn!(cloud = %session.name(), image = %id, error = %err, "prune failed");
                    failed.push(PruneFailure {
                        id,
                        message: err.to_string(),
                    });
                }
            }
        }
        crate::metrics::images_pruned(session.name(), pruned.len());
        (pruned, failed)
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
    async fn delete_created(&self, image: &CreatedImage) {
        let deleted = match self.clouds.session(Some(&image.cloud)) {
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
        loop {
            ticker.tick().await;
            let reaped = self.reap().await;
            if !reaped.is_empty() {
                tracing::info!(count = reaped.len(), "reaper deleted abandoned uploads");
            }
        }
    }
}
