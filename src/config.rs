//! The daemon's own config file (`config.yaml`): its keys, their defaults and checks.
//!
//! Parsing is pure (no file system access beyond reading the file), so the CLI
//! can load the same file to find the daemon without creating anything; what
//! start-up creates and checks on disk is [`runtime`](crate::runtime)'s.
//!
//! Every key has a default and an unknown key is an error: a typo such as
//! `allow_non_loopbak: true` must stop the daemon, not be ignored silently.
//! A key is one field of [`Config`] (with its default in `Default` and, when
//! its value needs checking, a deserializer from [`values`]); serde does the rest.
//!
//! Every number has a range, written on its field (and in the README's config
//! table): durations from 1 s to 100 years unless the key allows zero, counts
//! each in their own. A value outside it, or of another kind (`1e30` for a
//! count), is an [`ConfigError::InvalidValue`] naming the key and the line,
//! never a value that could panic later (tokio's semaphore, the clock).

mod dropins;
mod values;

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use crate::images::names::NameTemplate;

/// Where `serve` and the client subcommands look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/openstack-image-helper/config.yaml";

/// The default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/openstack-image-helper";

/// The default `clouds_yaml`: a file of the daemon's own (so that a user's
/// `~/.config/openstack/clouds.yaml` never leaks into a system service), under
/// the state dir, the one place the hardened unit may write (`PUT /v1/clouds`).
pub const DEFAULT_CLOUDS_YAML: &str = "/var/lib/openstack-image-helper/clouds.yaml";

/// The default `api_token_file`.
pub const DEFAULT_API_TOKEN_FILE: &str = "/var/lib/openstack-image-helper/api-token";

/// The default single entry of `upload_dirs`.
pub const DEFAULT_UPLOAD_DIR: &str = "/var/lib/openstack-image-helper/images";

/// The port of the default `listen` address.
pub const DEFAULT_PORT: u16 = 8427;

/// Everything that can go wrong with the config file.
///
/// Each message names the file (and the key and line, where there are some),
/// because the reader is an operator looking at `journalctl`, not at the code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file {}: cannot read: {cause}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why reading failed.
        cause: io::Error,
    },

    /// The config file is not valid YAML, or not a mapping at the top.
    #[error("config file {}: not a valid config document: {reason}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The parser's explanation (with line and column when it has them).
        reason: String,
    },

    /// A key the daemon does not know: most likely a typo.
    #[error(
        "config file {}: unknown key '{key}' (known keys: {})",
        path.display(),
        values::known_keys::<Config>().join(", ")
    )]
    UnknownKey {
        /// The config file.
        path: PathBuf,
        /// The key as written.
        key: String,
    },

    /// A known key with a value of the wrong type or out of range.
    #[error("config file {}, line {line}: key '{key}': {reason}", path.display())]
    InvalidValue {
        /// The config file.
        path: PathBuf,
        /// The line of the value (1-based; 0 when the parser did not say).
        line: usize,
        /// The key whose value is wrong.
        key: &'static str,
        /// What is wrong with it, and what was expected.
        reason: String,
    },

    /// `listen` reaches beyond this host and that was not asked for.
    #[error(
        "listen address {listen} is not a loopback address; \
         set allow_non_loopback: true to listen on it"
    )]
    NonLoopbackListen {
        /// The configured address.
        listen: Listen,
    },
}

/// The daemon's config, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the HTTP API listens: a TCP address or a unix socket.
    pub listen: Listen,
    /// The clouds.yaml to use; `None` (written `null`) means openstacksdk's search
    /// path (`OS_CLIENT_CONFIG_FILE`, `./`, `~/.config/openstack/`, `/etc/openstack/`).
    #[serde(deserialize_with = "values::optional_path")]
    pub clouds_yaml: Option<PathBuf>,
    /// The cloud used when a request names none; `None` means `OS_CLOUD`, else
    /// the only (or first) cloud of the file.
    #[serde(deserialize_with = "values::optional_name")]
    pub default_cloud: Option<String>,
    /// Where the daemon keeps its own files (the daemon id); created 0700.
    #[serde(deserialize_with = "values::path")]
    pub state_dir: PathBuf,
    /// The bearer token clients must present; created 0600 with a random token when missing.
    #[serde(deserialize_with = "values::path")]
    pub api_token_file: PathBuf,
    /// The directories `src_path` must resolve into, as written in the file;
    /// [`prepare_runtime`](crate::runtime::prepare_runtime) resolves them at start-up.
    #[serde(deserialize_with = "values::paths")]
    pub upload_dirs: Vec<PathBuf>,
    /// How an image's name is made from base, app name and arch.
    pub image_name_template: NameTemplate,
    /// How long before expiry a Keystone token is refreshed (0 s ..= 100 years:
    /// zero leaves only the floor of 10 % of the token's life).
    #[serde(deserialize_with = "values::duration::<0, _>")]
    pub token_refresh_margin: Duration,
    /// How old a non-active image must be before it counts as abandoned (1 s
    /// ..= 100 years). Zero would make every upload in progress look abandoned,
    /// and get it deleted.
    #[serde(deserialize_with = "values::duration::<1, _>")]
    pub stale_upload_age: Duration,
    /// How often abandoned uploads of this daemon are looked for (1 s ..= 100
    /// years; zero would be a busy loop).
    #[serde(deserialize_with = "values::duration::<1, _>")]
    pub reaper_interval: Duration,
    /// How long an upload may go without byte progress before it is aborted
    /// (1 s ..= 100 years; zero would abort every upload before its first byte).
    #[serde(deserialize_with = "values::duration::<1, _>")]
    pub upload_stall_timeout: Duration,
    /// Whether a non-loopback `listen` address is allowed: listening beyond
    /// this host must be asked for explicitly.
    pub allow_non_loopback: bool,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// How many uploads run at once; more wait as queued jobs (0.2). 1 ..= 64:
    /// more would only crowd Glance, and a huge value would overflow the slots.
    #[serde(deserialize_with = "values::count::<1, 64, _>")]
    pub max_concurrent_uploads: usize,
    /// How long finished jobs (and their Idempotency-Keys) are kept (0.2; 1 s
    /// ..= 100 years); zero would forget a job before its client could retry.
    #[serde(deserialize_with = "values::duration::<1, _>")]
    pub job_retention: Duration,
    /// After the last byte, how long Glance may take to report the image
    /// active (0.2; 1 s ..= 100 years); zero would fail every upload.
    #[serde(deserialize_with = "values::duration::<1, _>")]
    pub activation_timeout: Duration,
    /// On SIGTERM, how long uploads under way may run on (0.2; 0 s ..= 100
    /// years); zero aborts them at once.
    #[serde(deserialize_with = "values::duration::<0, _>")]
    pub shutdown_grace: Duration,
    /// How many jobs may wait `queued` at once (0.3; 1 ..= 10000); past it a new
    /// upload is answered `429 too_many_uploads`. Each queued job holds its file
    /// open: the bound keeps a burst from exhausting file descriptors.
    #[serde(deserialize_with = "values::count::<1, 10000, _>")]
    pub max_queued_uploads: usize,
    /// How many tries an upload to one cloud gets in all, for transient faults
    /// only (0.3; 1 ..= 10; 1: no retry).
    #[serde(deserialize_with = "values::count::<1, 10, _>")]
    pub upload_attempts: usize,
    /// The backoff before the first retry, doubled for each further one, with
    /// jitter (0.3; 1 s ..= 100 years).
    #[serde(deserialize_with = "values::duration::<1, _>")]
    pub upload_retry_backoff: Duration,
    /// How long a Glance import (glance-direct) may take to reach active (0.3;
    /// 1 s ..= 100 years); past it the upload fails and its image is deleted.
    #[serde(deserialize_with = "values::duration::<1, _>")]
    pub import_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        const MINUTE: Duration = Duration::from_secs(60);
        Config {
            listen: Listen::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                DEFAULT_PORT,
            )),
            clouds_yaml: Some(PathBuf::from(DEFAULT_CLOUDS_YAML)),
            default_cloud: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            api_token_file: PathBuf::from(DEFAULT_API_TOKEN_FILE),
            upload_dirs: vec![PathBuf::from(DEFAULT_UPLOAD_DIR)],
            image_name_template: NameTemplate::default(),
            token_refresh_margin: 10 * MINUTE,
            stale_upload_age: 60 * MINUTE,
            reaper_interval: 5 * MINUTE,
            upload_stall_timeout: 5 * MINUTE,
            allow_non_loopback: false,
            log_format: LogFormat::Text,
            max_concurrent_uploads: 4,
            max_queued_uploads: 64,
            upload_attempts: 3,
            upload_retry_backoff: Duration::from_secs(2),
            import_timeout: 30 * MINUTE,
            job_retention: 24 * 60 * MINUTE,
            activation_timeout: 30 * MINUTE,
            shutdown_grace: 10 * MINUTE,
        }
    }
}

impl Config {
    /// Reads and parses the config file at `path`, then its drop-ins
    /// (`config.d/*.yaml` beside it, see [`dropins`] for the merge rules).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let dropins = dropins::list(path)?;
        if dropins.is_empty() {
            return Config::from_yaml(&text, path);
        }
        dropins::layered(Some((path, &text)), &dropins)
    }

    /// The config at [`DEFAULT_CONFIG_PATH`] and its drop-ins; either may be
    /// missing (every key has a default).
    pub fn load_default() -> Result<Config, ConfigError> {
        let path = Path::new(DEFAULT_CONFIG_PATH);
        if path.exists() {
            return Config::load(path);
        }
        dropins::layered(None, &dropins::list(path)?)
    }

    /// Parses a config document; `origin` is the file it came from, for messages.
    ///
    /// The document's shape and keys are checked on a YAML value first (so an
    /// unknown key is named as such, and an empty file means "all defaults");
    /// then serde reads it from the text, which keeps the line of a bad value.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let syntax = |reason: String| ConfigError::Syntax {
            path: origin.to_path_buf(),
            reason,
        };
        let document: Value = match serde_yaml::from_str(text) {
            Ok(document) => document,
            // A number past 64 bits fits no YAML value, so a well-formed
            // document fails here before any key is looked at: the typed read
            // judges it (and names the key and the line of a bad value).
            Err(_) if serde_yaml::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                return Config::typed(text, origin);
            }
            Err(err) => return Err(syntax(err.to_string())),
        };
        let mapping = match document {
            // An empty file (or one holding only comments) means "all defaults".
            Value::Null => return Ok(Config::default()),
            Value::Mapping(mapping) => mapping,
            _ => {
                return Err(syntax(
                    "the top level must be a mapping of keys to values".to_string(),
                ))
            }
        };
        let known = Config::keys();
        if let Some(key) = mapping
            .keys()
            .find(|key| key.as_str().is_none_or(|name| !known.contains(&name)))
        {
            return Err(ConfigError::UnknownKey {
                path: origin.to_path_buf(),
                key: key
                    .as_str()
                    .map_or_else(|| format!("{key:?}"), str::to_string),
            });
        }
        Config::typed(text, origin)
    }

    /// The document read into [`Config`] by serde, each value checked by its
    /// deserializer; an error names the key and the line of the value.
    fn typed(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let syntax = |reason: String| ConfigError::Syntax {
            path: origin.to_path_buf(),
            reason,
        };
        let known = Config::keys();
        let deserializer = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = match err.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => {
                    known.iter().copied().find(|known| known == key)
                }
                _ => None,
            };
            let inner = err.into_inner();
            match key {
                Some(key) => ConfigError::InvalidValue {
                    path: origin.to_path_buf(),
                    line: inner.location().map_or(0, |l| l.line()),
                    key,
                    reason: values::reason(&inner, key),
                },
                None => syntax(inner.to_string()),
            }
        })
    }

    /// The config's keys, in the order of the contract (the struct's fields).
    pub(crate) fn keys() -> &'static [&'static str] {
        values::known_keys::<Config>()
    }

    /// Refuses a `listen` address beyond loopback unless `allow_non_loopback` is set.
    ///
    /// The API can make the daemon upload any file under `upload_dirs` with the
    /// charm's credentials; opening it to the network must be a deliberate choice.
    pub fn validate_listen(&self) -> Result<(), ConfigError> {
        if self.allow_non_loopback || self.listen.is_loopback() {
            Ok(())
        } else {
            Err(ConfigError::NonLoopbackListen {
                listen: self.listen.clone(),
            })
        }
    }
}

/// Where the HTTP API listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Listen {
    /// A TCP address, e.g. `127.0.0.1:8427` or `[::1]:8427`.
    Tcp(SocketAddr),
    /// A unix socket, written `unix:/run/openstack-image-helper.sock`.
    Unix(PathBuf),
}

impl Listen {
    /// Whether only this host can connect: a loopback IP (including an
    /// IPv4-mapped one such as `[::ffff:127.0.0.1]`), or a unix socket, which
    /// is local by nature and guarded by file permissions.
    pub fn is_loopback(&self) -> bool {
        match self {
            Listen::Unix(_) => true,
            Listen::Tcp(addr) => match addr.ip() {
                IpAddr::V4(ip) => ip.is_loopback(),
                IpAddr::V6(ip) => {
                    ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
            },
        }
    }
}

/// A `listen` value that is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidListen(String);

impl FromStr for Listen {
    type Err = InvalidListen;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some(socket) = text.strip_prefix("unix:") {
            if socket.is_empty() {
                return Err(InvalidListen(
                    "'unix:' needs a socket path, e.g. unix:/run/openstack-image-helper.sock"
                        .to_string(),
                ));
            }
            return Ok(Listen::Unix(PathBuf::from(socket)));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Listen::Tcp(addr));
        }
        // `localhost` is the one host name accepted: resolving names here would
        // make the bound address depend on /etc/hosts and DNS at start-up.
        if let Some(port) = text.strip_prefix("localhost:") {
            if let Ok(port) = port.parse::<u16>() {
                return Ok(Listen::Tcp(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    port,
                )));
            }
        }
        Err(InvalidListen(format!(
            "'{text}' is not an address: expected IP:PORT (127.0.0.1:8427, [::1]:8427), \
             localhost:PORT or unix:/path/to/socket"
        )))
    }
}

impl TryFrom<String> for Listen {
    type Error = InvalidListen;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for Listen {
    /// Writes the address in the form the config file accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal or the journal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[cfg(test)]
mod tests;
