//! The configured clouds and their sessions, replaced as a whole by `PUT /v1/clouds`.

mod reload;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::session::Session;
use super::OpenStackError;
use crate::clouds::{CloudsError, CloudsFile};

/// A set of clouds in force: the parsed file, a session per cloud, the default.
#[derive(Debug)]
pub(crate) struct CloudSet {
    /// Sessions in the file's order.
    pub(crate) sessions: Vec<Arc<Session>>,
    /// The cloud used when a request names none (`None` when there are no clouds).
    pub(crate) default: Option<String>,
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

/// The clouds in force, and how to replace them.
#[derive(Debug)]
pub(crate) struct CloudRegistry {
    /// The set in force; a request takes a snapshot (an `Arc`) and keeps it.
    current: RwLock<Arc<CloudSet>>,
    /// `token_refresh_margin`, for new sessions.
    margin: Duration,
    /// The daemon config's `default_cloud`, which a new document must contain.
    configured_default: Option<String>,
    /// `OS_CLOUD` at start-up.
    os_cloud: Option<String>,
    /// Where `PUT /v1/clouds` writes the document.
    target: PathBuf,
    /// One replacement at a time.
    replacing: tokio::sync::Mutex<()>,
}

impl CloudRegistry {
    /// Builds sessions for `file` and starts their refresh loops; `target` is the
    /// file a later `PUT /v1/clouds` replaces.
    pub(crate) fn new(
        file: &CloudsFile,
        margin: Duration,
        configured_default: Option<String>,
        os_cloud: Option<String>,
        target: PathBuf,
    ) -> Result<CloudRegistry, RegistryError> {
        let set = build_set(
            file,
            margin,
            configured_default.as_deref(),
            os_cloud.as_deref(),
        )?;
        for session in &set.sessions {
            session.start_refresher();
        }
        Ok(CloudRegistry {
            current: RwLock::new(Arc::new(set)),
            margin,
            configured_default,
            os_cloud,
            target,
            replacing: tokio::sync::Mutex::new(()),
        })
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
            None => return Err(RegistryError::NoClouds(self.target.display().to_string())),
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
    pub(crate) async fn replace(&self, document: &str) -> Result<Vec<String>, RegistryError> {
        let _one_at_a_time = self.replacing.lock().await;
        let secure = secure_beside(&self.target);
        let file = CloudsFile::parse(document, secure.as_deref(), Some(&self.target))?;
        if file.clouds.is_empty() {
            return Err(RegistryError::InvalidDocument(
                "the document has no clouds".to_string(),
            ));
        }
        let set = build_set(
            &file,
            self.margin,
            self.configured_default.as_deref(),
            self.os_cloud.as_deref(),
        )?;
        let attempts = set.sessions.iter().map(|s| s.renew(None));
        for result in futures_util::future::join_all(attempts).await {
            result?;
        }
        write_atomically(&self.target, document.as_bytes()).map_err(|e| RegistryError::Write {
            path: self.target.clone(),
            reason: e.to_string(),
        })?;
        for session in &set.sessions {
            session.start_refresher();
        }
        let names = set.sessions.iter().map(|s| s.name().to_string()).collect();
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(set);
        }
        tracing::info!(path = %self.target.display(), clouds = ?names, "clouds replaced");
        Ok(names)
    }
}

fn build_set(
    file: &CloudsFile,
    margin: Duration,
    configured_default: Option<&str>,
    os_cloud: Option<&str>,
) -> Result<CloudSet, RegistryError> {
    let default = if file.clouds.is_empty() {
        None
    } else {
        let (name, warning) = file.default_cloud(configured_default, os_cloud)?;
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        Some(name)
    };
    let sessions = file
        .clouds
        .iter()
        .map(|cloud| Session::new(cloud.clone(), margin))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CloudSet { sessions, default })
}

/// The secure.yaml beside a clouds.yaml, if any: its secrets merge over a new
/// document just as they do over the file at start-up.
fn secure_beside(target: &Path) -> Option<String> {
    let dir = target.parent()?;
    ["secure.yaml", "secure.yml"]
        .iter()
        .find_map(|name| std::fs::read_to_string(dir.join(name)).ok())
}

/// Writes `data` to `path` through a temporary file in the same directory and a
/// rename, so that a reader sees the old file or the new one, never half of it.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "clouds.yaml".to_string());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
}
