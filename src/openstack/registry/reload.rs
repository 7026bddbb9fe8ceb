//! `SIGHUP`: the clouds.yaml read again, put in force without dropping what did
//! not change. A cloud whose settings are the same keeps its session (and its
//! token: no new login); a new or changed cloud gets a new session that
//! authenticates in the background; a removed cloud leaves the set (an upload
//! under way on it holds its session and finishes).

use std::sync::Arc;

use super::{CloudRegistry, CloudSet, RegistryError};
use crate::clouds::CloudsFile;
use crate::openstack::session::Session;

/// What a reload changed, by cloud name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CloudsReloaded {
    /// Same settings: the session (and its token) kept.
    pub(crate) kept: Vec<String>,
    /// New names.
    pub(crate) added: Vec<String>,
    /// Same name, new settings: a new session.
    pub(crate) changed: Vec<String>,
    /// No longer in the file.
    pub(crate) removed: Vec<String>,
}

impl CloudRegistry {
    /// Puts `file`'s clouds in force (see the module). On an error (a default
    /// cloud the file lacks, TLS settings that cannot be used) nothing changes.
    pub(crate) async fn reload(&self, file: &CloudsFile) -> Result<CloudsReloaded, RegistryError> {
        let _one_at_a_time = self.replacing.lock().await;
        let old = self.snapshot();
        let default = if file.clouds.is_empty() {
            None
        } else {
            let (name, warning) =
                file.default_cloud(self.configured_default.as_deref(), self.os_cloud.as_deref())?;
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            Some(name)
        };
        let mut report = CloudsReloaded::default();
        let mut sessions = Vec::with_capacity(file.clouds.len());
        let mut fresh = Vec::new();
        for cloud in &file.clouds {
            let same_name = old.sessions.iter().find(|s| s.name() == cloud.name);
            match same_name {
                Some(session) if session.cloud() == cloud => {
                    report.kept.push(cloud.name.clone());
                    sessions.push(session.clone());
                }
                _ => {
                    let list = if same_name.is_some() {
                        &mut report.changed
                    } else {
                        &mut report.added
                    };
                    list.push(cloud.name.clone());
                    let session = Session::new(cloud.clone(), self.margin)?;
                    fresh.push(session.clone());
                    sessions.push(session);
                }
            }
        }
        report.removed = old
            .sessions
            .iter()
            .map(|s| s.name().to_string())
            .filter(|name| !file.clouds.iter().any(|c| &c.name == name))
            .collect();
        for session in &fresh {
            session.start_refresher();
        }
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(CloudSet {
                sessions,
                default,
                clouds: file.clouds.clone(),
            });
        }
        Ok(report)
    }
}
