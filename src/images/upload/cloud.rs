//! The stages' work in each cloud: every stage runs its clouds side by side and
//! moves each [`CloudRun`] on, or fails it (its image deleted, its error kept).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, OnceLock};

use futures_util::future::join_all;
use tokio::time::Instant;

use super::activation;
use super::import::Way;
use super::reader::{self, Digests, Flow, SinkBody};
use super::verify::{self, Mismatch};
use super::{CloudRun, Stage, Upload};
use crate::images::names::FieldError;
use crate::images::progress::UploadReservation;
use crate::images::source::{HashAlgo, SourceError, SourceFile};
use crate::images::{
    ImageError, PruneFailure, Pruned, UploadOutcome, MARKER_DAEMON, MARKER_UPLOAD,
};
use crate::jobs::{JobRequest, JobState, JobsError};
use crate::openstack::glance::{Image, ImageQuery, NewImage};
use crate::openstack::glance_import::image_stores;
use crate::openstack::session::Session;

/// Several clouds of one request, each authenticated: two that reach the same
/// Glance project (image endpoint and project id) are refused, naming both, as
/// they would prune each other's new image. A cloud that cannot authenticate
/// now keeps its error (it fails alone; it uploads nothing, so it prunes nothing).
pub(super) async fn distinct_projects(
    sessions: Vec<Arc<Session>>,
) -> Result<Vec<(Arc<Session>, Option<ImageError>)>, ImageError> {
    let auths = join_all(sessions.iter().map(|s| s.authenticated())).await;
    let mut seen: HashMap<(String, String), &str> = HashMap::new();
    let mut clouds = Vec::with_capacity(sessions.len());
    for (session, auth) in sessions.iter().zip(auths) {
        match auth {
            Ok(auth) => {
                let endpoint = auth
                    .image_endpoint
                    .as_str()
                    .trim_end_matches('/')
                    .to_string();
                let key = (endpoint, auth.owner.clone());
                if let Some(other) = seen.insert(key.clone(), session.name()) {
                    return Err(ImageError::Invalid(FieldError::new(
                        "clouds",
                        format!(
                            "clouds '{other}' and '{}' reach the same Glance project ({} at {}): \
                             they would prune each other's new image",
                            session.name(),
                            key.1,
                            key.0
                        ),
                    )));
                }
                clouds.push((session.clone(), None));
            }
            Err(err) => clouds.push((session.clone(), Some(ImageError::Upload(err)))),
        }
    }
    Ok(clouds)
}

impl<R: JobRequest> Upload<'_, R> {
    /// `skip_unchanged`: the newest active image of the name in each cloud, the
    /// file hashed once with every algorithm they use; a cloud whose image holds
    /// the same bytes is done (`unchanged`), with nothing uploaded or pruned.
    pub(super) async fn skip_unchanged(
        &self,
        runs: &mut [CloudRun],
        source: SourceFile,
    ) -> Result<SourceFile, ImageError> {
        let name = self.name.as_str();
        let newest = join_all(runs.iter().map(|run| async move {
            if !run.is_live() {
                return None;
            }
            Some(run.session.glance().latest_active(name).await)
        }))
        .await;
        let mut algos: Vec<HashAlgo> = runs
            .iter()
            .map(|r| self.service.hash_algo(r.cloud()))
            .collect();
        algos.extend(
            newest
                .iter()
                .flatten()
                .flatten()
                .flatten()
                .filter_map(|image| image.os_hash_algo.as_deref().and_then(HashAlgo::parse)),
        );
        let (source, digests) = tokio::task::spawn_blocking(move || {
            let mut source = source;
            let digests = reader::hash_source(&mut source, &algos);
            (source, digests)
        })
        .await
        .map_err(|e| ImageError::Internal(format!("hashing the file: {e}")))?;
        let digests = digests.map_err(|source| ImageError::FileChanged { source })?;
        for (run, newest) in runs.iter_mut().zip(newest) {
            let Some(newest) = newest else { continue };
            match newest {
                Err(err) => self.fail(run, ImageError::Get(err)).await,
                Ok(Some(image)) if verify::unchanged(&image, &digests) == Ok(true) => {
                    tracing::info!(cloud = %run.cloud(), image = %image.id, "unchanged: nothing to upload");
                    self.report.cloud_succeeded(run.cloud(), &image.id).await?;
                    run.stage = Stage::Done(self.answer(run, &image, Vec::new(), Vec::new(), true));
                }
                Ok(_) => {}
            }
        }
        Ok(source)
    }

    /// Creates the image in each cloud still waiting.
    pub(super) async fn create(
        &self,
        runs: &mut [CloudRun],
        reservation: &UploadReservation,
    ) -> Result<(), ImageError> {
        let new_image = self.new_image(reservation);
        let created = join_all(runs.iter().map(|run| async {
            if !matches!(run.stage, Stage::Waiting) {
                return None;
            }
            // The format Glance gets: the file's, or the one made for the cloud.
            let new_image = NewImage {
                disk_format: run.disk_format,
                ..new_image.clone()
            };
            Some(run.session.glance().create(&new_image).await)
        }))
        .await;
        for (run, created) in runs.iter_mut().zip(created) {
            match created {
                None => {}
                Some(Err(err)) => {
                    if err.is_transient() {
                        self.delete_unanswered_creates(run, &reservation.upload_id)
                            .await;
                    }
                    self.fail_or_retry(run, ImageError::Upload(err)).await
                }
                Some(Ok(image)) => {
                    reservation.add_image(&image.id, &run.session);
                    run.way = self.service.upload_way(&run.session);
                    tracing::info!(cloud = %run.cloud(), image = %image.id, name = %self.name, way = run.way.as_str(), "uploading");
                    let id = image.id.clone();
                    run.stage = Stage::Created(image);
                    // Recorded at once: after a crash, the restarted daemon deletes it.
                    self.report.image_created(run.cloud(), &id).await?;
                    self.report
                        .cloud_stage(run.cloud(), JobState::Uploading)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// A create answered with a fault may still have made its image: Glance
    /// commits the image before its tags, and sqlite's "database is locked" on
    /// the tags answers 500 for an image that exists. Every image this upload
    /// made in the cloud (its marker) is one no try holds now, and is deleted;
    /// one the look-up misses is unfinished and old at the next prune.
    async fn delete_unanswered_creates(&self, run: &CloudRun, upload_id: &str) {
        let query = ImageQuery {
            name: Some(self.name.to_string()),
            properties: vec![(MARKER_UPLOAD.into(), upload_id.into())],
            ..ImageQuery::default()
        };
        let glance = run.session.glance();
        let found = match glance.list(&query).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(cloud = %run.cloud(), error = %err, "could not look for an image a failed create made");
                return;
            }
        };
        for image in found {
            tracing::warn!(cloud = %run.cloud(), image = %image.id, "deleting the image of a create Glance answered with a fault");
            if let Err(err) = glance.delete(&image.id).await {
                tracing::error!(cloud = %run.cloud(), image = %image.id, error = %err, "could not delete it; the next prune will");
            }
        }
    }

    fn new_image(&self, reservation: &UploadReservation) -> NewImage {
        let request = self.request;
        let mut properties = request.properties.clone();
        let family = &request.family;
        properties.insert(
            "architecture".into(),
            family.arch.glance_architecture().into(),
        );
        properties.insert("os_distro".into(), "ubuntu".into());
        properties.insert("os_version".into(), family.base.version().into());
        properties.insert(MARKER_DAEMON.into(), self.settings.daemon_id.clone());
        properties.insert(MARKER_UPLOAD.into(), reservation.upload_id.clone());
        NewImage {
            name: self.name.to_string(),
            disk_format: request.disk_format.unwrap_or(self.detected_format),
            container_format: request.container_format,
            visibility: request.visibility,
            tags: request.image_tags(),
            properties,
        }
    }

    /// Reads the file once into every created image. Returns the digests of
    /// what was read (`None` when no cloud was left to send to) and a handle to
    /// hash the file again with an algorithm a cloud turns out to use.
    pub(super) async fn stream(
        &self,
        runs: &mut [CloudRun],
        source: SourceFile,
        first_read: bool,
    ) -> Result<Option<(Digests, Option<File>)>, ImageError> {
        let mut live: Vec<&mut CloudRun> = runs
            .iter_mut()
            .filter(|r| matches!(r.stage, Stage::Created(_)))
            .collect();
        if live.is_empty() {
            return Ok(None);
        }
        let size = source.size;
        let rehash = source.file.try_clone().ok();
        let mut algos = Vec::new();
        let mut sinks = Vec::new();
        let mut bodies = Vec::new();
        for run in &live {
            let Stage::Created(image) = &run.stage else {
                continue;
            };
            algos.push(
                image
                    .os_hash_algo
                    .as_deref()
                    .and_then(HashAlgo::parse)
                    .unwrap_or_else(|| self.service.hash_algo(run.cloud())),
            );
            let flow = self.report.flow(run.cloud());
            let (sink, body) = reader::sink(run.cloud(), &flow);
            sinks.push(sink);
            bodies.push((body, flow));
        }
        let digests =
            reader::spawn_reader(source, algos, sinks, self.report.read_counter(first_read));
        let sent = join_all(
            live.iter()
                .zip(bodies)
                .map(|(run, (body, flow))| async move {
                    match &run.stage {
                        Stage::Created(image) => {
                            self.send(&run.session, image, run.way, (size, body), flow)
                                .await
                        }
                        _ => Err(ImageError::Internal(
                            "streaming to a cloud without an image".into(),
                        )),
                    }
                }),
        )
        .await;
        let digests = digests.await;
        for (run, sent) in live.iter_mut().zip(sent) {
            let run: &mut CloudRun = run;
            match (&digests, sent) {
                // A file that changed under us explains a failed upload better
                // than the connection error it caused: the reader's verdict first.
                (Ok(Err(source)), _) if !matches!(source, SourceError::Abandoned) => {
                    let err = ImageError::FileChanged {
                        source: source.clone(),
                    };
                    self.fail(run, err).await
                }
                (_, Err(err)) => self.fail_or_retry(run, err).await,
                (Ok(Ok(_)), Ok(last_byte)) => {
                    if let Stage::Created(image) = std::mem::replace(&mut run.stage, Stage::Waiting)
                    {
                        run.stage = Stage::Sent { image, last_byte };
                    }
                }
                (_, Ok(_)) => {
                    let err = ImageError::Internal("the file reader ended without a result".into());
                    self.fail(run, err).await
                }
            }
        }
        Ok(digests.ok().and_then(Result::ok).map(|d| (d, rehash)))
    }

    /// Streams one body into one image, under the two clocks of
    /// [`activation::watch_upload`]: `PUT .../file` (into the one store of
    /// `image_stores`, if so), or by import `PUT .../stage` then `POST
    /// .../import` (into every store of `image_stores`). The moment of the
    /// last byte (of the import's request) on success.
    async fn send(
        &self,
        session: &Session,
        image: &Image,
        way: Way,
        (size, body): (u64, SinkBody),
        flow: Flow,
    ) -> Result<Instant, ImageError> {
        let give_up = body.canceller();
        let glance = session.glance();
        let stores = &session.cloud().upload.stores;
        let data = reqwest::Body::wrap_stream(body.into_stream());
        let upload = async {
            match way {
                Way::Direct => {
                    let store = stores.first().map(String::as_str);
                    glance.upload_data(&image.id, size, data, store).await
                }
                Way::Import => glance.stage_data(&image.id, size, data).await,
            }
        };
        let last_byte = OnceLock::new();
        let result = tokio::select! {
            r = upload => r.map_err(ImageError::Upload),
            end = activation::watch_upload(&flow, size, self.clocks, &last_byte) => {
                Err(end.error(session.name(), &image.id, self.clocks))
            }
        };
        if result.is_err() {
            // The reader drops this cloud, even if the HTTP client keeps the body.
            give_up.cancel();
        }
        result?;
        if way == Way::Import {
            glance
                .import_staged(&image.id, stores)
                .await
                .map_err(ImageError::Upload)?;
            // The import's own clock (`import_timeout`) starts now.
            return Ok(Instant::now());
        }
        Ok(last_byte.get().copied().unwrap_or_else(Instant::now))
    }

    /// Waits until each sent image is active and checks it holds the file's bytes.
    pub(super) async fn verify(
        &self,
        runs: &mut [CloudRun],
        digests: &Digests,
        rehash: Option<&File>,
    ) -> Result<(), ImageError> {
        let checked = join_all(runs.iter().map(|run| async move {
            let Stage::Sent { image, last_byte } = &run.stage else {
                return Ok(None);
            };
            self.report
                .cloud_stage(run.cloud(), JobState::Verifying)
                .await?;
            let verified =
                self.verify_one(&run.session, image, (*last_byte, run.way), digests, rehash);
            Ok::<_, JobsError>(Some(verified.await))
        }))
        .await;
        for (run, checked) in runs.iter_mut().zip(checked) {
            match checked? {
                None => {}
                Some(Ok(image)) => run.stage = Stage::Verified(image),
                Some(Err(err)) => self.fail_or_retry(run, err).await,
            }
        }
        Ok(())
    }

    async fn verify_one(
        &self,
        session: &Session,
        sent: &Image,
        (last_byte, way): (Instant, Way),
        digests: &Digests,
        rehash: Option<&File>,
    ) -> Result<Image, ImageError> {
        let by_import = way == Way::Import;
        let deadline = last_byte
            + if by_import {
                self.clocks.import
            } else {
                self.clocks.activation
            };
        let image =
            activation::wait_until_active(session, &sent.id, deadline, self.clocks, by_import)
                .await?;
        let mismatch = |detail: String| ImageError::Verification {
            cloud: session.name().to_string(),
            image_id: sent.id.clone(),
            detail,
        };
        let mut digests = std::borrow::Cow::Borrowed(digests);
        loop {
            match verify::verify(&image, &digests) {
                Ok(()) => return Ok(image),
                Err(Mismatch::NotComputed(algo)) => {
                    // Glance uses another algorithm than we guessed: hash once
                    // more with it (rare: once per cloud, then remembered).
                    self.service.remember_hash_algo(session.name(), algo);
                    let file = rehash
                        .and_then(|f| f.try_clone().ok())
                        .ok_or_else(|| mismatch("cannot re-read the file".to_string()))?;
                    let value = tokio::task::spawn_blocking(move || reader::hash_file(&file, algo))
                        .await
                        .map_err(|e| ImageError::Internal(e.to_string()))?
                        .map_err(|e| mismatch(format!("re-reading the file: {e}")))?;
                    digests.to_mut().add_os_hash(algo, value);
                }
                Err(other) => return Err(mismatch(other.to_string())),
            }
        }
    }

    /// Prunes the old revisions in each verified cloud; the cloud is then done.
    /// Each new image is recorded kept first (a stop or a crash from then on
    /// leaves it, and the job succeeds with `prune_incomplete`); a cloud whose
    /// record cannot be written prunes nothing.
    pub(super) async fn prune(&self, runs: &mut [CloudRun]) -> Result<(), ImageError> {
        let pruned = join_all(runs.iter_mut().map(|run| self.keep_and_prune(run))).await;
        for (run, pruned) in runs.iter_mut().zip(pruned) {
            let Some(pruned) = pruned? else {
                continue;
            };
            let Stage::Kept(image) = std::mem::replace(&mut run.stage, Stage::Waiting) else {
                continue;
            };
            tracing::info!(cloud = %run.cloud(), image = %image.id, name = %self.name, pruned = ?pruned.deleted, hidden = ?pruned.hidden, "upload verified");
            let mut answer = self.answer(run, &image, pruned.deleted, pruned.failed, false);
            answer.hidden = pruned.hidden;
            self.report.image_kept(run.cloud(), &answer).await?;
            self.report.cloud_succeeded(run.cloud(), &image.id).await?;
            run.stage = Stage::Done(answer);
        }
        Ok(())
    }

    /// One verified cloud: recorded kept, then its old revisions pruned. `None`
    /// for a cloud that was not verified.
    async fn keep_and_prune(&self, run: &mut CloudRun) -> Result<Option<Pruned>, ImageError> {
        if !matches!(run.stage, Stage::Verified(_)) {
            return Ok(None);
        }
        let Stage::Verified(image) = std::mem::replace(&mut run.stage, Stage::Waiting) else {
            return Ok(None);
        };
        let mut kept = self.answer(run, &image, Vec::new(), Vec::new(), false);
        kept.prune_incomplete = true;
        let recorded = self.report.image_kept(run.cloud(), &kept).await;
        run.stage = Stage::Kept(image);
        if let Err(err) = recorded {
            // Pruning now could leave a crash nothing to keep: leave the old
            // revisions to the next upload of the name.
            tracing::error!(cloud = %run.cloud(), error = %err, "cannot record the new image as kept; not pruning");
            let failure = PruneFailure::new(String::new(), "not_recorded", err.to_string());
            return Ok(Some(Pruned {
                failed: vec![failure],
                ..Pruned::default()
            }));
        }
        self.report
            .cloud_stage(run.cloud(), JobState::Pruning)
            .await?;
        let Stage::Kept(image) = &run.stage else {
            return Ok(None);
        };
        let num_revisions = self.request.num_revisions;
        let pruned = self
            .service
            .prune_revisions(
                &run.session,
                &self.name,
                &image.id,
                num_revisions,
                self.request.retire,
            )
            .await;
        Ok(Some(pruned))
    }

    pub(super) fn answer(
        &self,
        run: &CloudRun,
        image: &Image,
        pruned: Vec<String>,
        prune_failed: Vec<PruneFailure>,
        unchanged: bool,
    ) -> UploadOutcome {
        UploadOutcome {
            id: image.id.clone(),
            name: self.name.to_string(),
            status: image.status.to_string(),
            size: image.size.unwrap_or_default(),
            checksum: image.checksum.clone().unwrap_or_default(),
            os_hash_algo: image.os_hash_algo.clone().unwrap_or_default(),
            os_hash_value: image.os_hash_value.clone().unwrap_or_default(),
            pruned,
            hidden: Vec::new(),
            stores: image_stores(image),
            prune_failed,
            cloud: run.cloud().to_string(),
            upload_id: self.upload_id.to_string(),
            unchanged,
            prune_incomplete: false,
            attempts: run.attempts,
            format: self.detected_format.to_string(),
            disk_format: image
                .property("disk_format")
                .unwrap_or_default()
                .to_string(),
        }
    }
}
