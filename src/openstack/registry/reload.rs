//! `SIGHUP`: the clouds.yaml and the registry's settings read again, put in
//! force without dropping what did not change. A cloud whose settings are the
//! same keeps its session (and its token: no new login; a new
//! `token_refresh_margin` only reschedules its next refresh); a new or changed
//! cloud gets a new session that authenticates in the background; a removed
//! cloud leaves the set (an upload under way on it holds its session and
//! finishes).
//!
//! In two steps, so that the daemon's reload is all or nothing:
//! [`CloudRegistry::prepare_reload`] does everything that can fail and changes
//! nothing; [`StagedClouds::commit`] cannot fail. Between the two, the registry
//! is locked against `PUT /v1/clouds`.

use std::sync::Arc;

use super::{CloudRegistry, CloudSet, RegistryError, RegistrySettings};
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

/// A reload checked and built, not yet in force.
#[must_use = "nothing is in force until it is committed"]
pub(crate) struct StagedClouds<'a> {
    registry: &'a CloudRegistry,
    /// Held until the commit: no `PUT /v1/clouds` in between.
    _one_at_a_time: tokio::sync::MutexGuard<'a, ()>,
    set: CloudSet,
    /// The new sessions, whose refresh loops start at the commit.
    fresh: Vec<Arc<Session>>,
    settings: RegistrySettings,
    report: CloudsReloaded,
}

impl CloudRegistry {
    /// Checks and builds `file`'s clouds under `settings` (see the module),
    /// changing nothing. An error (a default cloud the file lacks, TLS settings
    /// that cannot be used) leaves everything as it was.
    pub(crate) async fn prepare_reload(
        &self,
        file: &CloudsFile,
        settings: RegistrySettings,
    ) -> Result<StagedClouds<'_>, RegistryError> {
        let one_at_a_time = self.replacing.lock().await;
        let old = self.snapshot();
        let default = if file.clouds.is_empty() {
            None
        } else {
            let (name, warning) = file.default_cloud(
                settings.configured_default.as_deref(),
                self.os_cloud.as_deref(),
            )?;
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            Some(name)
        };
        let mut report = CloudsReloaded::default();
        // Kept sessions by position; the others are built below, all at once.
        let mut kept: Vec<Option<Arc<Session>>> = Vec::with_capacity(file.clouds.len());
        let mut to_build = Vec::new();
        for cloud in &file.clouds {
            let same_name = old.sessions.iter().find(|s| s.name() == cloud.name);
            match same_name {
                Some(session) if session.cloud() == cloud => {
                    report.kept.push(cloud.name.clone());
                    kept.push(Some(session.clone()));
                }
                _ => {
                    let list = if same_name.is_some() {
                        &mut report.changed
                    } else {
                        &mut report.added
                    };
                    list.push(cloud.name.clone());
                    kept.push(None);
                    to_build.push(cloud.clone());
                }
            }
        }
        // Building a session reads its certificate files: off the async workers.
        let margin = settings.margin;
        let backoffs = self.backoffs.clone();
        let fresh = super::blocking("building the sessions", &settings.target, move || {
            to_build
                .into_iter()
                .map(|cloud| Session::sharing_backoff(cloud, margin, &backoffs))
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
        let mut built = fresh.iter().cloned();
        let sessions = kept
            .into_iter()
            .filter_map(|session| session.or_else(|| built.next()))
            .collect();
        report.removed = old
            .sessions
            .iter()
            .map(|s| s.name().to_string())
            .filter(|name| !file.clouds.iter().any(|c| &c.name == name))
            .collect();
        Ok(StagedClouds {
            registry: self,
            _one_at_a_time: one_at_a_time,
            set: CloudSet {
                sessions,
                default,
                clouds: file.clouds.clone(),
            },
            fresh,
            settings,
            report,
        })
    }
}

impl StagedClouds<'_> {
    /// Puts the staged clouds and settings in force.
    pub(crate) fn commit(self) -> CloudsReloaded {
        let registry = self.registry;
        let margin = self.settings.margin;
        let margin_changed = registry.settings().margin != margin;
        *registry.settings() = self.settings;
        for session in &self.set.sessions {
            if self.fresh.iter().any(|f| Arc::ptr_eq(f, session)) {
                session.start_refresher();
            } else if margin_changed {
                session.set_margin(margin);
            }
        }
        if let Ok(mut current) = registry.current.write() {
            *current = Arc::new(self.set);
        }
        self.report
    }
}
