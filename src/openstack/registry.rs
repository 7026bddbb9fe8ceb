//! The configured clouds and their sessions, replaced as a whole by `PUT /v1/clouds`.
//!
//! A replacement stands alone: no `secure.yaml` is merged into the document (the
//! contract), so what is written is exactly what was sent and judged. A document
//! equal to the one in force once parsed (the same clouds with the same settings,
//! whatever its formatting, key order or YAML-vs-JSON) keeps the sessions in force
//! untouched: charm hooks send the same clouds on every run, and each run must not
//! cost a Keystone login nor a write.

pub(crate) mod reload;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use super::login_backoff::LoginBackoffs;
use super::session::Session;
use super::OpenStackError;
use crate::clouds::{CloudConfig, CloudsError, CloudsFile};
use crate::secret::random_hex;

/// A set of clouds in force: the parsed settings, a session per cloud, the default.
#[derive(Debug)]
pub(crate) struct CloudSet {
    /// Sessions in the file's order.
    pub(crate) sessions: Vec<Arc<Session>>,
    /// The cloud used when a request names none (`None` when there are no clouds).
    pub(crate) default: Option<String>,
    /// The settings the sessions were built from, to tell an equal document.
    clouds: Vec<CloudConfig>,
}

impl CloudSet {
    /// Whether `clouds` with `default` is what this set already holds: the same
    /// clouds by name with equal settings, in any order, and the same default.
    fn holds(&self, clouds: &[CloudConfig], default: Option<&str>) -> bool {
        self.clouds.len() == clouds.len()
            && self.default.as_deref() == default
            && clouds
                .iter()
                .all(|new| self.clouds.iter().any(|old| old == new))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no cloud named '{0}' is configured")]
    UnknownCloud(String),
    #[error("no clouds are configured: PUT a clouds.yaml to /v1/clouds or write {0}")]
    NoClouds(String),
    #[error(transparent)]
    InvalidClouds(#[from] CloudsError),
    #[error("{0}")]
    InvalidDocument(String),
    #[error(transparent)]
    OpenStack(#[from] OpenStackError),
    #[error("writing {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// The daemon config's settings for the clouds (a reload replaces them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistrySettings {
    /// `token_refresh_margin`, for every session.
    pub(crate) margin: Duration,
    /// The daemon config's `default_cloud`, which a new document must contain.
    pub(crate) configured_default: Option<String>,
    /// Where `PUT /v1/clouds` writes the document.
    pub(crate) target: PathBuf,
}

/// The clouds in force, and how to replace them.
#[derive(Debug)]
pub(crate) struct CloudRegistry {
    /// The set in force; a request takes a snapshot (an `Arc`) and keeps it.
    current: RwLock<Arc<CloudSet>>,
    /// The settings in force.
    settings: Mutex<RegistrySettings>,
    /// `OS_CLOUD` at start-up.
    os_cloud: Option<String>,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
    /// Every login backoff by cloud name and auth, shared by the sessions in
    /// force and those a `PUT /v1/clouds` or a reload builds.
    backoffs: Arc<LoginBackoffs>,
}

impl CloudRegistry {
    /// Builds sessions for `file` and starts their refresh loops; `target` is the
    /// file a later `PUT /v1/clouds` replaces.
    pub(crate) fn new(
        file: &CloudsFile,
        settings: RegistrySettings,
        os_cloud: Option<String>,
    ) -> Result<CloudRegistry, RegistryError> {
        let (default, warning) = default_of(
            file,
            settings.configured_default.as_deref(),
            os_cloud.as_deref(),
        )?;
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let backoffs = Arc::new(LoginBackoffs::default());
        let set = build_set(file, settings.margin, default, &backoffs)?;
        for session in &set.sessions {
            session.start_refresher();
        }
        Ok(CloudRegistry {
            current: RwLock::new(Arc::new(set)),
            settings: Mutex::new(settings),
            os_cloud,
            replacing: tokio::sync::Mutex::new(()),
            backoffs,
        })
    }

    fn settings(&self) -> MutexGuard<'_, RegistrySettings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn snapshot(&self) -> Arc<CloudSet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The session of `name`, or of the default cloud when `name` is `None`.
    pub(crate) fn session(&self, name: Option<&str>) -> Result<Arc<Session>, RegistryError> {
        let set = self.snapshot();
        let wanted = match name.or(set.default.as_deref()) {
            Some(n) => n.to_string(),
            None => {
                let target = self.settings().target.display().to_string();
                return Err(RegistryError::NoClouds(target));
            }
        };
        set.sessions
            .iter()
            .find(|s| s.name() == wanted)
            .cloned()
            .ok_or(RegistryError::UnknownCloud(wanted))
    }

    pub(crate) fn sessions(&self) -> Vec<Arc<Session>> {
        self.snapshot().sessions.clone()
    }

    /// Replaces the clouds with a new clouds.yaml document (YAML or JSON): every
    /// cloud in it must authenticate; only then is the file written (atomically,
    /// 0600) and the new set put in force. On any failure the old set stays.
    ///
    /// A document equal to the one in force changes nothing: its sessions are
    /// kept (their tokens and counters too) and nothing is written. It is still
    /// answered truthfully: a cloud of it without a valid token gets one through
    /// its own session (which shares one login among all who wait), so a
    /// document whose credentials Keystone refuses is never a blind `200`.
    pub(crate) async fn replace(&self, document: &str) -> Result<Vec<String>, RegistryError> {
        let _one_at_a_time = self.replacing.lock().await;
        let settings = self.settings().clone();
        let target = settings.target;
        let file = CloudsFile::parse(document, None, Some(&target))?;
        if file.clouds.is_empty() {
            return Err(RegistryError::InvalidDocument(
                "the document has no clouds".to_string(),
            ));
        }
        let (default, warning) = default_of(
            &file,
            settings.configured_default.as_deref(),
            self.os_cloud.as_deref(),
        )?;
        let current = self.snapshot();
        if current.holds(&file.clouds, default.as_deref()) {
            return confirm(&current).await;
        }
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        // Building a session reads its certificate files: off the async workers.
        let margin = settings.margin;
        let backoffs = self.backoffs.clone();
        let set = blocking("building the sessions", &target, move || {
            build_set(&file, margin, default, &backoffs)
        })
        .await??;
        let attempts = set.sessions.iter().map(|s| s.renew(None));
        for result in futures_util::future::join_all(attempts).await {
            result?;
        }
        let (path, data) = (target.clone(), document.as_bytes().to_vec());
        blocking("writing", &target, move || write_atomically(&path, &data))
            .await?
            .map_err(|e| RegistryError::Write {
                path: target.clone(),
                reason: e.to_string(),
            })?;
        for session in &set.sessions {
            session.start_refresher();
        }
        let names = set.sessions.iter().map(|s| s.name().to_string()).collect();
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(set);
        }
        tracing::info!(path = %target.display(), clouds = ?names, "clouds replaced");
        Ok(names)
    }
}

/// The answer to a document equal to `set`: its clouds' names once each has a
/// valid token (at once when all have one, the common case).
async fn confirm(set: &CloudSet) -> Result<Vec<String>, RegistryError> {
    let checks = set.sessions.iter().map(|s| s.authenticated());
    for result in futures_util::future::join_all(checks).await {
        result?;
    }
    tracing::debug!("PUT /v1/clouds: the clouds in force, unchanged");
    Ok(set.sessions.iter().map(|s| s.name().to_string()).collect())
}

/// Runs blocking file work on tokio's blocking threads; a panic there goes on
/// in the caller, as if the work had run inline.
async fn blocking<T: Send + 'static>(
    what: &str,
    path: &Path,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RegistryError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(RegistryError::Write {
            path: path.to_path_buf(),
            reason: format!("{what}: {err}"),
        }),
    }
}

/// The default cloud of `file` (`None` when it has no clouds), and a warning to
/// log when it was a guess.
fn default_of(
    file: &CloudsFile,
    configured_default: Option<&str>,
    os_cloud: Option<&str>,
) -> Result<(Option<String>, Option<String>), RegistryError> {
    if file.clouds.is_empty() {
        return Ok((None, None));
    }
    let (name, warning) = file.default_cloud(configured_default, os_cloud)?;
    Ok((Some(name), warning))
}

fn build_set(
    file: &CloudsFile,
    margin: Duration,
    default: Option<String>,
    backoffs: &LoginBackoffs,
) -> Result<CloudSet, RegistryError> {
    let sessions = file
        .clouds
        .iter()
        .map(|cloud| Session::sharing_backoff(cloud.clone(), margin, backoffs))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CloudSet {
        sessions,
        default,
        clouds: file.clouds.clone(),
    })
}

/// Writes `data` to `path` through a temporary file in the same directory and a
/// rename, so that a reader sees the old file or the new one, never half of it.
///
/// The temporary file gets a random name and is created with `O_EXCL|O_NOFOLLOW`
/// and mode 0600: a file or symlink planted beside `path` (at any name) can
/// neither redirect the write elsewhere nor lend its mode to the result. The file
/// is fsynced before the rename and the directory after it.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "clouds.yaml".to_string());
    let (tmp, mut file) = create_private(dir, &name)?;
    let result = (|| {
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file `.<name>.<random>.tmp` in `dir`, 0600, that did not exist before.
fn create_private(dir: &Path, name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    for _ in 0..16 {
        let tmp = dir.join(format!(".{name}.{}.tmp", random_hex(8)));
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp);
        match opened {
            Ok(file) => {
                // The umask may only have taken bits away; make it exactly 0600.
                if let Err(err) = file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(err);
                }
                return Ok((tmp, file));
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("no free temporary name for {name} in {}", dir.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_a_private_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_replaces_a_symlink_at_the_target_not_what_it_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "untouched").unwrap();
        let path = dir.path().join("clouds.yaml");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn temporary_names_are_random_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = create_private(dir.path(), "clouds.yaml").unwrap();
        let (b, _) = create_private(dir.path(), "clouds.yaml").unwrap();
        assert_ne!(a, b);
        for tmp in [&a, &b] {
            let meta = std::fs::symlink_metadata(tmp).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
    }

    fn clouds(text: &str) -> Vec<CloudConfig> {
        CloudsFile::parse(text, None, None).unwrap().clouds
    }

    #[test]
    fn a_set_holds_the_same_clouds_in_any_order_with_the_same_default() {
        let set = CloudSet {
            sessions: Vec::new(),
            default: Some("a".into()),
            clouds: clouds(
                "clouds:\n  a: {auth: {auth_url: 'https://k/v3', user_id: u, password: p}}\n  b: {region_name: R, auth: {auth_url: 'https://k/v3', user_id: u, password: q}}\n",
            ),
        };
        let reordered = clouds(
            r#"{"clouds": {"b": {"auth": {"password": "q", "user_id": "u", "auth_url": "https://k/v3"}, "region_name": "R"}, "a": {"auth": {"password": "p", "auth_url": "https://k/v3", "user_id": "u"}}}}"#,
        );
        assert!(set.holds(&reordered, Some("a")));
        assert!(!set.holds(&reordered, Some("b")), "another default");
        let other_password = clouds(
            "clouds:\n  a: {auth: {auth_url: 'https://k/v3', user_id: u, password: x}}\n  b: {region_name: R, auth: {auth_url: 'https://k/v3', user_id: u, password: q}}\n",
        );
        assert!(!set.holds(&other_password, Some("a")));
        let fewer =
            clouds("clouds:\n  a: {auth: {auth_url: 'https://k/v3', user_id: u, password: p}}\n");
        assert!(!set.holds(&fewer, Some("a")));
    }
}
