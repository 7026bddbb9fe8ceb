//! `SIGHUP`: the daemon config and clouds.yaml read again and put in force
//! without a restart (the contract's "reload").
//!
//! - A config that cannot be read (syntax, an unknown key, a bad value) is
//!   refused as a whole, with a logged error: the config and clouds in force stay.
//! - clouds.yaml: clouds whose settings did not change keep their session and
//!   token; added ones authenticate; removed ones leave `/v1/status` (uploads under
//!   way on them hold their session and finish). A broken file is refused and the
//!   clouds in force stay.
//! - Applied at once: `reaper_interval`, `shutdown_grace`, `max_concurrent_uploads`
//!   (fewer slots are taken back as uploads end), `job_retention`. Every other key is held
//!   by something built at start-up (the listener, the state dir, the API token,
//!   the image service's settings): a change is logged as ignored until a restart.

use std::path::Path;

use super::{App, ConfigSource};
use crate::clouds::CloudsFile;
use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};

/// Reads the config again and applies what can change (see the module).
pub(super) async fn reload(
    current: &mut Config,
    source: &ConfigSource,
    app: &App,
    reaper: &mut tokio::task::JoinHandle<()>,
) {
    crate::systemd::notify_reloading();
    match read_config(source) {
        Err(err) => {
            tracing::error!(error = %err, "reload refused: the config and clouds in force stay");
        }
        Ok(new) => {
            let ignored = restart_only_changes(current, &new);
            if !ignored.is_empty() {
                tracing::warn!(keys = ?ignored, "reload: these keys take effect only at a restart: ignored");
            }
            reload_clouds(current, app).await;
            if new.reaper_interval != current.reaper_interval {
                reaper.abort();
                *reaper = tokio::spawn(app.state.images.clone().run_reaper(new.reaper_interval));
                current.reaper_interval = new.reaper_interval;
            }
            current.shutdown_grace = new.shutdown_grace;
            let jobs = crate::jobs::JobSettings {
                max_concurrent_uploads: new.max_concurrent_uploads,
                job_retention: new.job_retention,
            };
            app.state.jobs.replace_settings(jobs);
            current.max_concurrent_uploads = new.max_concurrent_uploads;
            current.job_retention = new.job_retention;
        }
    }
    let line = crate::systemd::Activity::of(&app.state, &app.shutdown).line();
    crate::systemd::notify_ready(&line);
}

/// The config file as `serve` read it at start-up.
fn read_config(source: &ConfigSource) -> Result<Config, ConfigError> {
    match &source.explicit {
        Some(path) => Config::load(path),
        None => {
            let path = Path::new(DEFAULT_CONFIG_PATH);
            if path.exists() {
                Config::load(path)
            } else {
                Ok(Config::default())
            }
        }
    }
}

/// clouds.yaml (at the path in force) put in force; a missing or broken file is
/// refused.
async fn reload_clouds(config: &Config, app: &App) {
    let file = match &config.clouds_yaml {
        Some(path) if !path.exists() => {
            tracing::error!(path = %path.display(), "reload: clouds.yaml does not exist: the clouds in force stay");
            return;
        }
        path => CloudsFile::load(path.as_deref()),
    };
    let file = match file {
        Ok(file) => file,
        Err(err) => {
            tracing::error!(error = %err, "reload: clouds.yaml refused: the clouds in force stay");
            return;
        }
    };
    match app.state.clouds.reload(&file).await {
        Ok(r) => tracing::info!(
            kept = ?r.kept, added = ?r.added, changed = ?r.changed, removed = ?r.removed,
            "reload: clouds in force"
        ),
        Err(err) => {
            tracing::error!(error = %err, "reload: clouds.yaml refused: the clouds in force stay")
        }
    }
}

/// The keys that differ between `old` and `new` and cannot change while running.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    macro_rules! differing {
        ($($key:ident),* $(,)?) => {{
            let mut keys = Vec::new();
            $( if old.$key != new.$key { keys.push(stringify!($key)); } )*
            keys
        }};
    }
    let mut keys = differing!(
        listen,
        state_dir,
        clouds_yaml,
        default_cloud,
        api_token_file,
        upload_dirs,
        image_name_template,
        token_refresh_margin,
        stale_upload_age,
        upload_stall_timeout,
        allow_non_loopback,
        log_format,
        activation_timeout,
    );
    // A key added to Config later and not listed above still gets reported.
    let applied = Config {
        reaper_interval: old.reaper_interval,
        shutdown_grace: old.shutdown_grace,
        max_concurrent_uploads: old.max_concurrent_uploads,
        job_retention: old.job_retention,
        ..new.clone()
    };
    if keys.is_empty() && applied != *old {
        keys.push("(other keys)");
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn listen_and_state_dir_need_a_restart_grace_and_reaper_do_not() {
        let old = Config::default();
        let mut new = old.clone();
        new.shutdown_grace = Duration::from_secs(5);
        new.reaper_interval = Duration::from_secs(7);
        assert!(restart_only_changes(&old, &new).is_empty());
        new.listen = "127.0.0.1:9999".parse().unwrap();
        new.state_dir = "/elsewhere".into();
        assert_eq!(restart_only_changes(&old, &new), ["listen", "state_dir"]);
    }
}
