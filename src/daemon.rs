//! `serve`: the start-up rules of the contract, the wiring, reload (`SIGHUP`) and
//! the stop (`SIGTERM`).
//!
//! [`run`] takes an already bound [`Listener`] and a shutdown future, so tests pass
//! a port-0 listener and a oneshot and drive the real server over a socket;
//! [`serve`] is the binary's: signals, and reload from the config file.
//! Start-up's file work (`build`) runs on a blocking thread; a config that
//! is refused exits 2 (see `crate::exit`), any other failure 1.

mod reload;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::clouds::{CloudsError, CloudsFile};
use crate::config::{Config, ConfigError, Listen};
use crate::exit::{EXIT_DAEMON_ERROR, EXIT_OK};
use crate::http::passed_fds::{ConnectionFds, FdListener};
use crate::http::{router, AppState};
use crate::images::{ImageService, ImageSettings};
use crate::jobs::{JobRequest, JobSettings, Jobs, JobsError, Recovery};
use crate::openstack::registry::{CloudRegistry, RegistryError, RegistrySettings};
use crate::runtime::{prepare_runtime, RuntimeError};
use crate::secret::ApiToken;
use crate::shutdown::Shutdown;

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
    /// The start-up work on a blocking thread did not come back (the runtime
    /// is shutting down).
    #[error("start-up: {0}")]
    StartUp(String),
}

impl DaemonError {
    /// The process's exit code for this error: a config that no restart can
    /// mend is told apart (see [`crate::exit`]).
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(err) => crate::exit::of_config_error(err),
            _ => EXIT_DAEMON_ERROR,
        }
    }
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
                let target = put_target(config, &file);
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

/// Where `PUT /v1/clouds` writes when `clouds_yaml` is `null`: the file the
/// search path found.
fn put_target(config: &Config, file: &CloudsFile) -> PathBuf {
    file.path
        .clone()
        .unwrap_or_else(|| config.state_dir.join("clouds.yaml"))
}

/// Empties `state_dir/staging`: what a conversion cut short by a crash left.
fn clean_staging(config: &Config) -> Result<(), DaemonError> {
    let removed = crate::images::convert::clean_staging(&config.state_dir).map_err(|e| {
        DaemonError::StartUp(format!(
            "cannot empty {}: {e}",
            crate::images::convert::staging_dir(&config.state_dir).display()
        ))
    })?;
    if removed > 0 {
        tracing::info!(
            removed,
            "removed what conversions cut short left in the staging directory"
        );
    }
    Ok(())
}

/// The image service's settings by `config` (start-up and reload).
fn image_settings(config: &Config, daemon_id: String, upload_dirs: Vec<PathBuf>) -> ImageSettings {
    ImageSettings {
        template: config.image_name_template.clone(),
        stale_upload_age: config.stale_upload_age,
        upload_stall_timeout: config.upload_stall_timeout,
        activation_timeout: config.activation_timeout,
        daemon_id,
        upload_dirs,
        upload_attempts: u32::try_from(config.upload_attempts).unwrap_or(u32::MAX),
        upload_retry_backoff: config.upload_retry_backoff,
        import_timeout: config.import_timeout,
        state_dir: config.state_dir.clone(),
    }
}

/// The job store's settings by `config` (start-up and reload).
fn job_settings(config: &Config) -> JobSettings {
    JobSettings {
        max_concurrent_uploads: config.max_concurrent_uploads,
        job_retention: config.job_retention,
        max_queued_uploads: config.max_queued_uploads,
    }
}

/// Everything `serve` builds before it accepts connections.
pub(crate) struct App {
    pub(crate) state: AppState,
    pub(crate) reaper_interval: std::time::Duration,
    /// The stop: uploads run as its tasks.
    pub(crate) shutdown: Shutdown,
    /// What opening the job store found: the images of interrupted jobs to delete.
    pub(crate) recovery: Recovery,
}

/// Does the start-up work of the contract and wires the services together. The
/// sessions start authenticating in the background; Keystone being down is not
/// an error (status says so, and they recover by themselves).
pub(crate) fn build(config: &Config) -> Result<App, DaemonError> {
    crate::openstack::observe::install(&crate::metrics::OPENSTACK_CALLS);
    let runtime = prepare_runtime(config)?;
    clean_staging(config)?;
    let (clouds_file, target) = load_clouds(config)?;
    let os_cloud = std::env::var("OS_CLOUD").ok().filter(|s| !s.is_empty());
    let registry = RegistrySettings {
        margin: config.token_refresh_margin,
        configured_default: config.default_cloud.clone(),
        target,
    };
    let clouds = Arc::new(CloudRegistry::new(&clouds_file, registry, os_cloud)?);
    let shutdown = Shutdown::new();
    let images = ImageService::new(
        image_settings(config, runtime.daemon_id, runtime.upload_dirs),
        clouds.clone(),
        shutdown.clone(),
    );
    let (jobs, recovery) = Jobs::open(&config.state_dir, job_settings(config))?;
    if !recovery.interrupted.is_empty() || !recovery.moved_aside.is_empty() {
        tracing::warn!(
            interrupted = recovery.interrupted.len(),
            images = recovery.images_to_delete.len(),
            unreadable = recovery.moved_aside.len(),
            "jobs a stop cut off are recorded: failed (interrupted), or succeeded with their kept image; deleting their unverified images"
        );
    }
    let jobs = Arc::new(jobs);
    register_stop_hooks(&shutdown, &jobs, &images);
    Ok(App {
        state: AppState {
            images,
            clouds,
            api_token: Arc::new(ApiToken::new(runtime.api_token)),
            jobs,
        },
        reaper_interval: config.reaper_interval,
        shutdown,
        recovery,
    })
}

/// [`build`] on a blocking thread: start-up reads clouds.yaml and certificate
/// files, creates and fsyncs the token file, the daemon id and the job records,
/// none of which may hold an async worker (a slow disk would stall every
/// request, and on a single-threaded runtime, all of them).
async fn build_off_the_runtime(config: &Config) -> Result<App, DaemonError> {
    let config = config.clone();
    match tokio::task::spawn_blocking(move || build(&config)).await {
        Ok(built) => built,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(DaemonError::StartUp(err.to_string())),
    }
}

/// How the job store takes part in the stop: no new job once it begins; when
/// `shutdown_grace` ends with jobs under way, they are recorded interrupted and
/// their images deleted; once their tasks are gone, a last sweep of this
/// daemon's unfinished images.
fn register_stop_hooks<R: JobRequest>(
    shutdown: &Shutdown,
    jobs: &Arc<Jobs<R>>,
    images: &Arc<ImageService>,
) {
    shutdown.on_stop({
        let jobs = jobs.clone();
        move || jobs.close()
    });
    shutdown.on_grace_end({
        let (jobs, images) = (jobs.clone(), images.clone());
        move || async move {
            let created = jobs
                .interrupt_unfinished("the daemon stopped and shutdown_grace ended during the job")
                .await;
            images.delete_after_stop(created).await;
        }
    });
    shutdown.on_abort({
        let images = images.clone();
        move || async move { images.sweep_after_stop().await }
    });
}

/// Where a daemon's config came from, so that a reload reads it again.
#[derive(Debug, Clone)]
pub(crate) struct ConfigSource {
    /// `--config`; `None`: the default path, or every default when it is missing.
    pub(crate) explicit: Option<PathBuf>,
}

/// Serves the API on `listener` until `shutdown` resolves, then stops as the
/// contract says (see [`crate::shutdown`]): new uploads are refused, uploads
/// under way run on for up to `shutdown_grace`, the rest are aborted.
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    run_controlled(config, listener, shutdown, None).await
}

/// [`run`], and a reload each time `reloads` yields (`SIGHUP`).
async fn run_controlled(
    config: Config,
    listener: Listener,
    stop_signal: impl Future<Output = ()> + Send + 'static,
    reloads: Option<(ConfigSource, mpsc::Receiver<()>)>,
) -> Result<(), DaemonError> {
    let mut app = build_off_the_runtime(&config).await?;
    let leftovers = std::mem::take(&mut app.recovery.images_to_delete);
    app.state.images.delete_leftovers(leftovers);
    let mut reaper = tokio::spawn(app.state.images.clone().run_reaper(app.reaper_interval));
    let retention = tokio::spawn(app.state.jobs.clone().run_retention());
    let routes = router(app.state.clone());
    tracing::info!(
        listen = %listener.describe(),
        clouds = ?app.state.clouds.sessions().iter().map(|s| s.name().to_string()).collect::<Vec<_>>(),
        "serving"
    );
    let status = crate::systemd::spawn_status(app.state.clone(), app.shutdown.clone());
    crate::systemd::notify_ready(&crate::systemd::Activity::of(&app.state, &app.shutdown).line());
    // The server keeps serving through the stop (status, latest, and the answers
    // of uploads under way); it closes once the uploads are done.
    let done = tokio_util::sync::CancellationToken::new();
    let server = serve_until(listener, routes, done.clone().cancelled_owned());
    tokio::pin!(server);
    let control = control(config, &app, stop_signal, reloads, &mut reaper);
    let served = tokio::select! {
        served = &mut server => Some(served),
        () = control => None,
    };
    let served = match served {
        Some(early) => early,
        None => {
            done.cancel();
            server.await
        }
    };
    status.abort();
    retention.abort();
    reaper.abort();
    tracing::info!("stopped");
    served.map_err(DaemonError::Serve)
}

async fn serve_until(
    listener: Listener,
    routes: axum::Router,
    done: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match listener {
        Listener::Tcp(l) => axum::serve(l, routes).with_graceful_shutdown(done).await,
        // Over the unix socket, a request may come with descriptors (`src_fd`).
        Listener::Unix(l, _) => {
            let routes = routes.into_make_service_with_connect_info::<ConnectionFds>();
            axum::serve(FdListener::new(l), routes)
                .with_graceful_shutdown(done)
                .await
        }
    }
}

/// Reloads on request until the stop signal, then runs the stop.
async fn control(
    mut config: Config,
    app: &App,
    stop_signal: impl Future<Output = ()>,
    mut reloads: Option<(ConfigSource, mpsc::Receiver<()>)>,
    reaper: &mut tokio::task::JoinHandle<()>,
) {
    tokio::pin!(stop_signal);
    loop {
        let next_reload = async {
            match reloads.as_mut() {
                Some((_, rx)) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stop_signal => break,
            Some(()) = next_reload => {
                if let Some((source, _)) = &reloads {
                    reload::reload(&mut config, source, app, reaper).await;
                }
            }
        }
    }
    app.shutdown.begin();
    let activity = crate::systemd::Activity::of(&app.state, &app.shutdown);
    crate::systemd::notify_stopping(&activity.line());
    tracing::info!(
        uploads = activity.running + activity.queued,
        shutdown_grace = %humantime::format_duration(config.shutdown_grace),
        "stopping: new uploads are refused; uploads under way run on for up to shutdown_grace"
    );
    let report = app.shutdown.stop(config.shutdown_grace).await;
    if report.aborted > 0 {
        tracing::warn!(
            aborted = report.aborted,
            "uploads aborted at the end of shutdown_grace"
        );
    }
}

/// `serve`, as the binary runs it: logs, signals, the listener, the daemon.
/// Returns the exit code (see [`crate::exit`]).
pub(crate) async fn serve(config: Config, explicit_config: Option<PathBuf>) -> i32 {
    // SIGHUP's default action kills the process: take it over first.
    let reloads = match reload_signal() {
        Ok(rx) => rx,
        Err(err) => {
            eprintln!("error: cannot install the SIGHUP handler: {err}");
            return EXIT_DAEMON_ERROR;
        }
    };
    crate::telemetry::init(config.log_format);
    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(err) => {
            tracing::error!("cannot install signal handlers: {err}");
            return EXIT_DAEMON_ERROR;
        }
    };
    let listener = match Listener::bind(&config).await {
        Ok(l) => l,
        Err(err) => {
            tracing::error!("{err}");
            return err.exit_code();
        }
    };
    let source = ConfigSource {
        explicit: explicit_config,
    };
    match run_controlled(config, listener, shutdown, Some((source, reloads))).await {
        Ok(()) => EXIT_OK,
        Err(err) => {
            tracing::error!("{err}");
            err.exit_code()
        }
    }
}

/// A message per `SIGHUP` (several before one is handled count as one).
fn reload_signal() -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config and clouds.yaml");
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    /// A clouds.yaml of one cloud whose Keystone is nowhere (nothing is asked of it).
    pub(super) const ONE_CLOUD: &str =
        "clouds:\n  c:\n    auth: {auth_url: 'http://127.0.0.1:9/v3', user_id: u, password: p}\n";

    /// A FIFO at `path`: reading it blocks until someone writes.
    pub(super) fn make_fifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid, NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    }

    /// A task on the test's runtime that counts every 5 ms it gets to run.
    pub(super) fn ticker() -> Arc<AtomicU64> {
        let ticks = Arc::new(AtomicU64::new(0));
        let counter = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        ticks
    }

    /// Once a reader opened the FIFO at `path`, holds it waiting for 300 ms,
    /// then writes `text`. Returns how often `ticks` advanced meanwhile: with
    /// the read on an async thread of a single-threaded runtime, not at all.
    pub(super) fn feed_fifo_slowly(
        path: &Path,
        text: &'static str,
        ticks: Arc<AtomicU64>,
    ) -> std::thread::JoinHandle<u64> {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut fifo = loop {
                // Non-blocking: fails (ENXIO) until a reader has it open.
                let opened = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path);
                match opened {
                    Ok(fifo) => break fifo,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(err) => panic!("no reader opened {}: {err}", path.display()),
                }
            };
            let before = ticks.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(300));
            let after = ticks.load(Ordering::Relaxed);
            fifo.write_all(text.as_bytes()).unwrap();
            after - before
        })
    }

    /// A config under `root` whose clouds.yaml is `clouds`.
    pub(super) fn config_in(root: &Path, clouds: &Path) -> Config {
        Config {
            clouds_yaml: Some(clouds.to_path_buf()),
            state_dir: root.join("state"),
            api_token_file: root.join("state/api-token"),
            upload_dirs: vec![root.join("images")],
            ..Config::default()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn start_up_reads_and_writes_its_files_off_the_async_thread() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("clouds.yaml");
        make_fifo(&fifo);
        let config = config_in(dir.path(), &fifo);
        let listener = Listener::Tcp(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let ticks = ticker();
        let writer = feed_fifo_slowly(&fifo, ONE_CLOUD, ticks);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(config, listener, async move {
            let _ = stopped.await;
        }));
        let ticked = tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
        assert!(
            ticked >= 10,
            "the runtime stood still while start-up read clouds.yaml ({ticked} ticks in 300 ms)"
        );
        let _ = stop.send(());
        daemon.await.unwrap().unwrap();
    }
}
