//! `serve`: the start-up rules of the contract, the wiring, and graceful shutdown.
//!
//! [`run`] takes an already bound [`Listener`] and a shutdown future, so tests pass
//! a port-0 listener and a oneshot and drive the real server over a socket.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::clouds::{CloudsError, CloudsFile};
use crate::config::{Config, ConfigError, Listen};
use crate::http::{router, AppState};
use crate::images::{ImageService, ImageSettings};
use crate::jobs::{JobSettings, Jobs, JobsError, Recovery};
use crate::openstack::registry::{CloudRegistry, RegistryError};
use crate::runtime::{prepare_runtime, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Clouds(#[from] CloudsError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error("cannot listen on {listen}: {cause}")]
    Bind {
        listen: String,
        cause: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// A bound socket the API is served on.
#[derive(Debug)]
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Binds `listen`, after the loopback rule. A stale unix socket file is
    /// replaced; the new one is made 0660 (the token still guards every call).
    pub async fn bind(config: &Config) -> Result<Listener, DaemonError> {
        config.validate_listen()?;
        let bind_err = |cause| DaemonError::Bind {
            listen: config.listen.to_string(),
            cause,
        };
        match &config.listen {
            Listen::Tcp(addr) => Ok(Listener::Tcp(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_err)?,
            )),
            Listen::Unix(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(bind_err)?;
                }
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(bind_err(e)),
                }
                let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                    .map_err(bind_err)?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// Where it listens, for logs and tests.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".to_string()),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// The clouds at start-up, and the file a `PUT /v1/clouds` writes. A missing
/// clouds.yaml is not fatal: a charm may install the daemon first and PUT the
/// credentials later. A broken one is: an operator must see it at once.
fn load_clouds(config: &Config) -> Result<(CloudsFile, PathBuf), DaemonError> {
    let empty = |path: PathBuf| CloudsFile {
        path: Some(path.clone()),
        clouds: Vec::new(),
    };
    match &config.clouds_yaml {
        Some(path) if !path.exists() => {
            tracing::warn!(path = %path.display(), "clouds.yaml does not exist yet: no clouds until it is PUT to /v1/clouds");
            Ok((empty(path.clone()), path.clone()))
        }
        Some(path) => Ok((CloudsFile::load(Some(path))?, path.clone())),
        None => match CloudsFile::load(None) {
            Ok(file) => {
                let target = file
                    .path
                    .clone()
                    .unwrap_or_else(|| config.state_dir.join("clouds.yaml"));
                Ok((file, target))
            }
            Err(CloudsError::NotFound { .. }) => {
                let target = std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".config/openstack/clouds.yaml"))
                    .unwrap_or_else(|| PathBuf::from("/etc/openstack/clouds.yaml"));
                tracing::warn!(target = %target.display(), "no clouds.yaml on the search path: no clouds until one is PUT to /v1/clouds");
                Ok((empty(target.clone()), target))
            }
            Err(other) => Err(other.into()),
        },
    }
}

/// Everything `serve` builds before it accepts connections.
pub(crate) struct App {
    pub(crate) state: AppState,
    pub(crate) reaper_interval: std::time::Duration,
    /// What opening the job store found: the images of interrupted jobs to delete.
    pub(crate) recovery: Recovery,
}

/// Does the start-up work of the contract and wires the services together. The
/// sessions start authenticating in the background; Keystone being down is not
/// an error (status says so, and they recover by themselves).
pub(crate) fn build(config: &Config) -> Result<App, DaemonError> {
    let runtime = prepare_runtime(config)?;
    let (clouds_file, target) = load_clouds(config)?;
    let os_cloud = std::env::var("OS_CLOUD").ok().filter(|s| !s.is_empty());
    let clouds = Arc::new(CloudRegistry::new(
        &clouds_file,
        config.token_refresh_margin,
        config.default_cloud.clone(),
        os_cloud,
        target,
    )?);
    let images = ImageService::new(
        ImageSettings {
            template: config.image_name_template.clone(),
            stale_upload_age: config.stale_upload_age,
            upload_stall_timeout: config.upload_stall_timeout,
            daemon_id: runtime.daemon_id.clone(),
            upload_dirs: runtime.upload_dirs.clone(),
        },
        clouds.clone(),
    );
    let (jobs, recovery) = Jobs::open(
        &config.state_dir,
        JobSettings {
            max_concurrent_uploads: config.max_concurrent_uploads,
            job_retention: config.job_retention,
        },
    )?;
    if !recovery.interrupted.is_empty() || !recovery.moved_aside.is_empty() {
        tracing::warn!(
            interrupted = recovery.interrupted.len(),
            images = recovery.images_to_delete.len(),
            unreadable = recovery.moved_aside.len(),
            "jobs a stop cut off are recorded failed (interrupted); deleting their images"
        );
    }
    Ok(App {
        state: AppState {
            images,
            clouds,
            api_token: Arc::new(runtime.api_token),
            jobs: Arc::new(jobs),
        },
        reaper_interval: config.reaper_interval,
        recovery,
    })
}

/// Serves the API on `listener` until `shutdown` resolves, then lets requests
/// under way finish (uploads included).
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let mut app = build(&config)?;
    let leftovers = std::mem::take(&mut app.recovery.images_to_delete);
    app.state.images.delete_leftovers(leftovers);
    let reaper = tokio::spawn(app.state.images.clone().run_reaper(app.reaper_interval));
    let jobs = app.state.jobs.clone();
    let retention = tokio::spawn(jobs.clone().run_retention(retention_interval(&config)));
    // From the signal on, no new job starts (503 shutting_down) and jobs still
    // waiting for a slot end interrupted; uploads under way go on.
    let shutdown = {
        let jobs = jobs.clone();
        async move {
            shutdown.await;
            jobs.close();
        }
    };
    let routes = router(app.state.clone());
    tracing::info!(
        listen = %listener.describe(),
        clouds = ?app.state.clouds.sessions().iter().map(|s| s.name().to_string()).collect::<Vec<_>>(),
        "serving"
    );
    crate::systemd::notify_ready();
    let watchdog = crate::systemd::spawn_watchdog();
    let served = match listener {
        Listener::Tcp(l) => {
            axum::serve(l, routes)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Listener::Unix(l, _) => {
            axum::serve(l, routes)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    crate::systemd::notify_stopping();
    // Jobs whose client is gone (wait=false) run on like the requests above did.
    if jobs.running_tasks() > 0 {
        tracing::info!(
            jobs = jobs.running_tasks(),
            "waiting for the uploads under way"
        );
    }
    jobs.wait_tasks().await;
    retention.abort();
    reaper.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("stopped");
    served.map_err(DaemonError::Serve)
}

/// How often jobs past `job_retention` are forgotten: a tenth of it, between a
/// second and an hour.
fn retention_interval(config: &Config) -> std::time::Duration {
    (config.job_retention / 10).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    )
}

/// A future that resolves on SIGTERM (systemd's stop) or SIGINT (Ctrl-C). The
/// handlers are installed here, at once, so a signal that arrives during start-up
/// is not lost (the default action would kill the process mid-way).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
