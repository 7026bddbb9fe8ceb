//! `SIGHUP`: the daemon config and clouds.yaml read again and put in force
//! without a restart (the contract's "reload").
//!
//! All or nothing: the whole new config is checked first, and only then applied.
//! The checking reads files (the config, the token, the upload dirs, clouds.yaml
//! and each new cloud's certificates) on blocking threads, never on an async
//! worker: a slow disk delays the reload, not the requests being served.
//! A config that cannot be read (syntax, an unknown key, a bad value), an upload
//! dir that cannot be made or resolved, an API token file that is missing,
//! unreadable, empty or readable by others, a clouds.yaml that is missing or
//! broken, a `default_cloud` it lacks: the reload is refused as a whole with a
//! logged error, and the config and clouds in force stay (an upload dir created
//! by the check stays too).
//!
//! Applied, every key but three:
//! - clouds.yaml (at `clouds_yaml`, which may name a new file; `PUT /v1/clouds`
//!   then writes there): clouds whose settings did not change keep their session
//!   and token; added ones authenticate; removed ones leave `/v1/status` (uploads
//!   under way on them hold their session and finish). `default_cloud` and
//!   `token_refresh_margin` change without a new login (a kept session only
//!   reschedules its next refresh).
//! - `api_token_file`: read again; the new token works and the old one stops at
//!   once (a reload creates no token file, unlike start-up).
//! - The image settings (`image_name_template`, `upload_dirs` resolved as at
//!   start-up, `stale_upload_age`, `upload_stall_timeout`, `activation_timeout`):
//!   for requests from now on; an upload under way keeps the ones it started with.
//! - `max_concurrent_uploads` (more slots start queued jobs at once, fewer are
//!   taken back as uploads end: none is cut) and `job_retention`.
//! - The 0.3 keys `max_queued_uploads`, `upload_attempts`, `upload_retry_backoff`
//!   and `import_timeout`: for jobs from now on.
//! - `reaper_interval`, `shutdown_grace`, and `log_format` (the formatting layer
//!   is swapped, see [`crate::telemetry`]).
//!
//! Restart only, logged as ignored: `listen` (the socket is bound at start-up),
//! `allow_non_loopback` (it only qualifies `listen`), and `state_dir` (it holds
//! the daemon id and the job records opened at start-up).

use std::path::PathBuf;

use super::{image_settings, job_settings, App, ConfigSource};
use crate::clouds::{CloudsError, CloudsFile};
use crate::config::{Config, ConfigError};
use crate::openstack::registry::reload::StagedClouds;
use crate::openstack::registry::{RegistryError, RegistrySettings};
use crate::runtime::{existing_api_token, resolve_upload_dirs, RuntimeError};
use crate::secret::Secret;

/// The keys a reload cannot apply (see the module).
const RESTART_ONLY: [&str; 3] = ["listen", "state_dir", "allow_non_loopback"];

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("clouds.yaml refused: {0}")]
    Clouds(#[from] CloudsError),
    #[error("clouds.yaml refused: {} does not exist", .0.display())]
    CloudsMissing(PathBuf),
    #[error("clouds.yaml refused: {0}")]
    Registry(#[from] RegistryError),
    /// The blocking thread that read the files did not come back (the runtime
    /// is shutting down).
    #[error("reading the files: {0}")]
    Interrupted(String),
}

/// A new config checked, with what it needs from disk, not yet in force.
struct Staged<'a> {
    /// The new config, the restart-only keys kept as they are.
    config: Config,
    /// The restart-only keys the new config changed.
    ignored: Vec<&'static str>,
    /// The clouds, built and waiting for their commit.
    clouds: StagedClouds<'a>,
    /// `upload_dirs`, resolved.
    upload_dirs: Vec<PathBuf>,
    /// The contents of `api_token_file`.
    api_token: Secret,
}

/// Reads the config again and applies it, or none of it (see the module).
pub(super) async fn reload(
    current: &mut Config,
    source: &ConfigSource,
    app: &App,
    reaper: &mut tokio::task::JoinHandle<()>,
) {
    crate::systemd::notify_reloading();
    match stage(current, source, app).await {
        Err(err) => {
            tracing::error!(error = %err, "reload refused: the config and clouds in force stay");
        }
        Ok(staged) => apply(staged, current, app, reaper),
    }
    let line = crate::systemd::Activity::of(&app.state, &app.shutdown).line();
    crate::systemd::notify_ready(&line);
}

/// Everything that can fail, with nothing changed.
async fn stage<'a>(
    current: &Config,
    source: &ConfigSource,
    app: &'a App,
) -> Result<Staged<'a>, ReloadError> {
    let read = read_off_the_runtime(current, source).await?;
    let settings = RegistrySettings {
        margin: read.config.token_refresh_margin,
        configured_default: read.config.default_cloud.clone(),
        target: read.target,
    };
    let clouds = app
        .state
        .clouds
        .prepare_reload(&read.file, settings)
        .await?;
    Ok(Staged {
        config: read.config,
        ignored: read.ignored,
        clouds,
        upload_dirs: read.upload_dirs,
        api_token: read.api_token,
    })
}

/// What a reload reads from disk, checked.
struct ReadFromDisk {
    /// The new config, the restart-only keys kept as they are.
    config: Config,
    /// The restart-only keys the new config changed.
    ignored: Vec<&'static str>,
    /// `upload_dirs`, resolved (the missing ones created).
    upload_dirs: Vec<PathBuf>,
    /// The contents of `api_token_file`.
    api_token: Secret,
    /// clouds.yaml, parsed.
    file: CloudsFile,
    /// Where `PUT /v1/clouds` writes from now on.
    target: PathBuf,
}

/// [`read_from_disk`] on a blocking thread: the config, the token and
/// clouds.yaml may sit on a slow disk (or be a FIFO no one writes yet), and
/// must not hold an async worker meanwhile.
async fn read_off_the_runtime(
    current: &Config,
    source: &ConfigSource,
) -> Result<ReadFromDisk, ReloadError> {
    let (current, source) = (current.clone(), source.clone());
    match tokio::task::spawn_blocking(move || read_from_disk(&current, &source)).await {
        Ok(read) => read,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(ReloadError::Interrupted(err.to_string())),
    }
}

/// The new config and all it names on disk (blocking file work).
fn read_from_disk(current: &Config, source: &ConfigSource) -> Result<ReadFromDisk, ReloadError> {
    let new = read_config(source)?;
    let ignored = restart_only_changes(current, &new);
    let config = Config {
        listen: current.listen.clone(),
        state_dir: current.state_dir.clone(),
        allow_non_loopback: current.allow_non_loopback,
        ..new
    };
    let upload_dirs = resolve_upload_dirs(&config.upload_dirs)?;
    let api_token = existing_api_token(&config.api_token_file)?;
    let (file, target) = read_clouds(&config)?;
    Ok(ReadFromDisk {
        config,
        ignored,
        upload_dirs,
        api_token,
        file,
        target,
    })
}

/// Puts a staged config in force; nothing here can fail.
fn apply(
    staged: Staged<'_>,
    current: &mut Config,
    app: &App,
    reaper: &mut tokio::task::JoinHandle<()>,
) {
    let Staged {
        config: new,
        ignored,
        clouds,
        upload_dirs,
        api_token,
    } = staged;
    if !ignored.is_empty() {
        tracing::warn!(keys = ?ignored, "reload: these keys take effect only at a restart: ignored");
    }
    let r = clouds.commit();
    tracing::info!(
        kept = ?r.kept, added = ?r.added, changed = ?r.changed, removed = ?r.removed,
        "reload: clouds in force"
    );
    let state = &app.state;
    let daemon_id = state.images.settings().daemon_id.clone();
    state
        .images
        .replace_settings(image_settings(&new, daemon_id, upload_dirs));
    state.jobs.replace_settings(job_settings(&new));
    if !state.api_token.matches(api_token.expose()) {
        state.api_token.replace(api_token);
        tracing::info!(path = %new.api_token_file.display(), "reload: a new API token is in force; the old one no longer works");
    }
    if new.reaper_interval != current.reaper_interval {
        reaper.abort();
        *reaper = tokio::spawn(state.images.clone().run_reaper(new.reaper_interval));
    }
    if new.log_format != current.log_format && !crate::telemetry::set_format(new.log_format) {
        tracing::warn!("reload: log_format cannot change in this process: ignored");
    }
    let applied = changed_keys(current, &new);
    *current = new;
    tracing::info!(keys = ?applied, "reload: config in force");
}

/// The config file as `serve` read it at start-up.
fn read_config(source: &ConfigSource) -> Result<Config, ConfigError> {
    match &source.explicit {
        Some(path) => Config::load(path),
        None => Config::load_default(),
    }
}

/// clouds.yaml at `config`'s path, and where `PUT /v1/clouds` writes. Unlike at
/// start-up, a missing file is refused: it is more likely a mistake than a wish
/// to drop every cloud.
fn read_clouds(config: &Config) -> Result<(CloudsFile, PathBuf), ReloadError> {
    match &config.clouds_yaml {
        Some(path) if !path.exists() => Err(ReloadError::CloudsMissing(path.clone())),
        Some(path) => Ok((CloudsFile::load(Some(path))?, path.clone())),
        None => {
            let file = CloudsFile::load(None)?;
            let target = super::put_target(config, &file);
            Ok((file, target))
        }
    }
}

/// The keys whose values differ between `old` and `new`.
fn changed_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    // Each key named once: destructured (without `..`, so a key added to Config
    // and not listed here does not build), then compared.
    macro_rules! changed {
        ($($key:ident),* $(,)?) => {{
            let Config { $($key),* } = old;
            let mut keys = Vec::new();
            $( if *$key != new.$key { keys.push(stringify!($key)); } )*
            keys
        }};
    }
    changed!(
        listen,
        clouds_yaml,
        default_cloud,
        state_dir,
        api_token_file,
        upload_dirs,
        image_name_template,
        token_refresh_margin,
        stale_upload_age,
        reaper_interval,
        upload_stall_timeout,
        allow_non_loopback,
        log_format,
        max_concurrent_uploads,
        job_retention,
        activation_timeout,
        shutdown_grace,
        max_queued_uploads,
        upload_attempts,
        upload_retry_backoff,
        import_timeout,
    )
}

/// The keys that differ between `old` and `new` and cannot change while running.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    changed_keys(old, new)
        .into_iter()
        .filter(|key| RESTART_ONLY.contains(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_listen_state_dir_and_allow_non_loopback_need_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.shutdown_grace = Duration::from_secs(5);
        new.reaper_interval = Duration::from_secs(7);
        new.clouds_yaml = Some("/elsewhere/clouds.yaml".into());
        new.default_cloud = Some("other".into());
        new.api_token_file = "/elsewhere/token".into();
        new.upload_dirs = vec!["/elsewhere/images".into()];
        new.image_name_template = "{app_name}-{base}-{arch}".parse().unwrap();
        new.token_refresh_margin = Duration::from_secs(1);
        new.stale_upload_age = Duration::from_secs(2);
        new.upload_stall_timeout = Duration::from_secs(3);
        new.log_format = crate::config::LogFormat::Json;
        new.max_concurrent_uploads = 9;
        new.job_retention = Duration::from_secs(4);
        new.activation_timeout = Duration::from_secs(6);
        new.max_queued_uploads = 8;
        new.upload_attempts = 1;
        new.upload_retry_backoff = Duration::from_secs(8);
        new.import_timeout = Duration::from_secs(9);
        assert!(restart_only_changes(&old, &new).is_empty());
        assert_eq!(changed_keys(&old, &new).len(), 18);

        new.listen = "127.0.0.1:9999".parse().unwrap();
        new.state_dir = "/elsewhere".into();
        new.allow_non_loopback = true;
        assert_eq!(
            restart_only_changes(&old, &new),
            ["listen", "state_dir", "allow_non_loopback"]
        );
        assert_eq!(changed_keys(&old, &new).len(), 21);
    }
}

#[cfg(test)]
mod blocking_tests {
    use super::super::tests::{config_in, feed_fifo_slowly, make_fifo, ticker, ONE_CLOUD};
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_reads_its_files_off_the_async_thread() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let config = config_in(root, &root.join("none.yaml"));
        let app = super::super::build(&config).unwrap();
        let fifo = root.join("clouds.fifo");
        make_fifo(&fifo);
        let config_path = root.join("config.yaml");
        std::fs::write(
            &config_path,
            format!(
                "state_dir: {r}/state\napi_token_file: {r}/state/api-token\n\
                 upload_dirs: [{r}/images]\nclouds_yaml: {f}\n",
                r = root.display(),
                f = fifo.display()
            ),
        )
        .unwrap();
        let source = ConfigSource {
            explicit: Some(config_path),
        };
        let ticks = ticker();
        let writer = feed_fifo_slowly(&fifo, ONE_CLOUD, ticks);
        let mut reaper = tokio::spawn(async {});
        let mut current = config.clone();
        reload(&mut current, &source, &app, &mut reaper).await;
        let ticked = tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
        assert!(
            ticked >= 10,
            "the runtime stood still while the reload read clouds.yaml ({ticked} ticks in 300 ms)"
        );
        assert_eq!(current.clouds_yaml, Some(fifo), "the reload applied");
        let names: Vec<String> = app
            .state
            .clouds
            .sessions()
            .iter()
            .map(|s| s.name().to_string())
            .collect();
        assert_eq!(names, ["c"]);
    }
}
