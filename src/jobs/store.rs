//! Jobs on disk: one file per job in `<state_dir>/jobs/`, each written whole
//! through a fresh temporary file and a rename, so that `kill -9` at any moment
//! leaves either the old record or the new one, never half of one.
//!
//! Everything here is blocking file I/O; the async side calls it through
//! `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::model::{CreatedImage, IdempotencyKey, JobId, JobRecord, JobRequest};

/// The on-disk format's version, written in every record.
const FORMAT: u32 = 1;
/// The directory under `state_dir`.
const JOBS_DIR: &str = "jobs";
/// Where records that cannot be read are moved, for a human to look at.
const UNREADABLE_DIR: &str = "unreadable";
const RECORD_SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";
/// A record is a request (at most 1 MiB) and a few fields: anything far bigger is
/// not one of ours.
const MAX_RECORD_BYTES: u64 = 8 << 20;

/// What a job's file holds: the record the API shows, and what only the daemon
/// needs (the key, to answer retries after a restart; the images, to delete
/// those of a job a crash cut off).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "R: JobRequest", deny_unknown_fields)]
pub(crate) struct StoredJob<R> {
    pub format: u32,
    pub record: JobRecord<R>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub images: Vec<CreatedImage>,
    /// The answer of a job that succeeded (the upload's), for retries and
    /// `GET /v1/jobs/{id}` after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
}

impl<R: JobRequest> StoredJob<R> {
    pub fn new(
        record: JobRecord<R>,
        idempotency_key: Option<IdempotencyKey>,
        images: Vec<CreatedImage>,
    ) -> Self {
        StoredJob {
            format: FORMAT,
            record,
            idempotency_key,
            images,
            outcome: None,
        }
    }
}

/// What [`JobStore::scan`] found.
#[derive(Debug)]
pub(crate) struct Scan<R> {
    pub jobs: Vec<StoredJob<R>>,
    /// Records that could not be read, now in `jobs/unreadable/`.
    pub moved_aside: Vec<PathBuf>,
}

/// The `jobs/` directory.
#[derive(Debug)]
pub(crate) struct JobStore {
    dir: PathBuf,
    /// Records written since start-up (progress writes are throttled; tests count).
    writes: AtomicU64,
}

impl JobStore {
    /// Creates `<state_dir>/jobs` (0700) when missing.
    pub fn open(state_dir: &Path) -> io::Result<JobStore> {
        let dir = state_dir.join(JOBS_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(JobStore {
            dir,
            writes: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[cfg(test)]
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn path_of(&self, id: &JobId) -> PathBuf {
        self.dir.join(format!("{id}{RECORD_SUFFIX}"))
    }

    /// Writes a job's record: a new temporary file (O_EXCL, O_NOFOLLOW, 0600),
    /// fsync, rename over the record, fsync of the directory.
    pub fn write<R: JobRequest>(&self, job: &StoredJob<R>) -> io::Result<()> {
        let data = serde_json::to_vec(job).map_err(io::Error::other)?;
        let id = job.record.job;
        let tmp = self.dir.join(format!(
            ".{id}.{}{TEMP_SUFFIX}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            file.write_all(&data)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, self.path_of(&id))?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Forgets a job (its retention ended).
    pub fn remove(&self, id: &JobId) -> io::Result<()> {
        match fs::remove_file(self.path_of(id)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => File::open(&self.dir)?.sync_all(),
        }
    }

    /// Reads every record. Temporary files (a write cut off by a crash) are removed;
    /// a record that cannot be read is logged and moved to `jobs/unreadable/`, never
    /// a reason not to start.
    pub fn scan<R: JobRequest>(&self) -> io::Result<Scan<R>> {
        let mut scan = Scan {
            jobs: Vec::new(),
            moved_aside: Vec::new(),
        };
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name == UNREADABLE_DIR {
                continue;
            }
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                tracing::info!(path = %path.display(), "removing a job record's unfinished write");
                if let Err(err) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %err, "cannot remove a temporary file");
                }
                continue;
            }
            match read_record::<R>(&path, &name) {
                Ok(job) => scan.jobs.push(job),
                Err(reason) => {
                    tracing::error!(path = %path.display(), %reason, "unreadable job record; moving it aside");
                    match self.move_aside(&path, &name) {
                        Ok(moved) => scan.moved_aside.push(moved),
                        Err(err) => {
                            tracing::error!(path = %path.display(), error = %err, "cannot move the unreadable job record aside")
                        }
                    }
                }
            }
        }
        Ok(scan)
    }

    fn move_aside(&self, path: &Path, name: &str) -> io::Result<PathBuf> {
        let aside = self.dir.join(UNREADABLE_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&aside)?;
        let mut target = aside.join(name);
        if fs::symlink_metadata(&target).is_ok() {
            target = aside.join(format!("{name}.{}", hex::encode(rand::random::<[u8; 4]>())));
        }
        fs::rename(path, &target)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(target)
    }
}

/// One record file, checked: a regular file (not a symlink) named `<id>.json`
/// holding a record of that id in this format.
fn read_record<R: JobRequest>(path: &Path, name: &str) -> Result<StoredJob<R>, String> {
    let id: JobId = name
        .strip_suffix(RECORD_SUFFIX)
        .ok_or_else(|| "not named <job id>.json".to_string())?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_RECORD_BYTES {
        return Err(format!("{} bytes is too big for a job record", meta.len()));
    }
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| format!("read: {e}"))?;
    let job: StoredJob<R> = serde_json::from_slice(&data).map_err(|e| format!("parse: {e}"))?;
    if job.format != FORMAT {
        return Err(format!(
            "format {} (this daemon reads {FORMAT})",
            job.format
        ));
    }
    if job.record.job != id {
        return Err(format!("it holds job {}", job.record.job));
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::model::JobState;
    use chrono::Utc;
    use std::os::unix::fs::PermissionsExt;

    fn job(id: JobId) -> StoredJob<serde_json::Value> {
        let now = Utc::now();
        StoredJob::new(
            JobRecord {
                job: id,
                state: JobState::Uploading,
                bytes_sent: 10,
                bytes_total: 100,
                image_id: Some("img".into()),
                error: None,
                created_at: now,
                updated_at: now,
                request: serde_json::json!({"base": "jammy"}),
                clouds: None,
            },
            Some("k1".parse().unwrap()),
            vec![CreatedImage {
                cloud: "a".into(),
                image_id: "img".into(),
                kept: None,
            }],
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_record_is_written_private_whole_and_without_a_temporary() {
        let state = tempfile::tempdir().unwrap();
        let store = JobStore::open(state.path()).unwrap();
        let id = JobId::random();
        let mut stored = job(id);
        store.write(&stored).unwrap();
        stored.record.bytes_sent = 50;
        store.write(&stored).unwrap();
        assert_eq!(names(store.dir()), [format!("{id}.json")]);
        let mode = fs::metadata(store.path_of(&id))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let scan = store.scan::<serde_json::Value>().unwrap();
        assert_eq!(scan.jobs.len(), 1);
        assert_eq!(scan.jobs[0].record.bytes_sent, 50);
        assert_eq!(
            scan.jobs[0].idempotency_key.as_ref().unwrap().as_str(),
            "k1"
        );
        assert_eq!(store.writes(), 2);
    }

    #[test]
    fn a_crash_during_a_write_leaves_the_previous_record_and_the_leftovers_are_removed() {
        let state = tempfile::tempdir().unwrap();
        let store = JobStore::open(state.path()).unwrap();
        let id = JobId::random();
        store.write(&job(id)).unwrap();
        // What kill -9 leaves: a temporary file cut off mid-write, and an empty one.
        let full = serde_json::to_vec(&job(id)).unwrap();
        fs::write(
            store.dir().join(format!(".{id}.0011223344556677.tmp")),
            &full[..full.len() / 2],
        )
        .unwrap();
        fs::write(store.dir().join(format!(".{id}.8899aabbccddeeff.tmp")), b"").unwrap();
        let scan = store.scan::<serde_json::Value>().unwrap();
        assert_eq!(scan.jobs.len(), 1);
        assert_eq!(scan.jobs[0].record.bytes_sent, 10);
        assert!(scan.moved_aside.is_empty());
        assert_eq!(names(store.dir()), [format!("{id}.json")]);
    }

    #[test]
    fn an_unreadable_record_is_moved_aside_and_the_others_still_load() {
        let state = tempfile::tempdir().unwrap();
        let store = JobStore::open(state.path()).unwrap();
        let good = JobId::random();
        store.write(&job(good)).unwrap();
        let torn = JobId::random();
        fs::write(store.path_of(&torn), b"{\"format\": 1, \"rec").unwrap();
        let misnamed = JobId::random();
        fs::copy(store.path_of(&good), store.path_of(&misnamed)).unwrap();
        fs::write(store.dir().join("notes.txt"), b"hello").unwrap();
        let linked = JobId::random();
        std::os::unix::fs::symlink(store.path_of(&good), store.path_of(&linked)).unwrap();

        let scan = store.scan::<serde_json::Value>().unwrap();
        assert_eq!(scan.jobs.len(), 1);
        assert_eq!(scan.jobs[0].record.job, good);
        assert_eq!(scan.moved_aside.len(), 4, "{:?}", scan.moved_aside);
        assert_eq!(
            names(store.dir()),
            [format!("{good}.json"), "unreadable".into()]
        );
        let aside = names(&store.dir().join("unreadable"));
        assert!(aside.contains(&format!("{torn}.json")), "{aside:?}");
        // Scanning again finds the same one job and moves nothing more.
        let again = store.scan::<serde_json::Value>().unwrap();
        assert_eq!((again.jobs.len(), again.moved_aside.len()), (1, 0));
    }

    #[test]
    fn removing_a_job_deletes_its_file_and_tolerates_a_missing_one() {
        let state = tempfile::tempdir().unwrap();
        let store = JobStore::open(state.path()).unwrap();
        let id = JobId::random();
        store.write(&job(id)).unwrap();
        store.remove(&id).unwrap();
        store.remove(&id).unwrap();
        assert!(names(store.dir()).is_empty());
    }
}
