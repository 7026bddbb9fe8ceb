//! The daemon's own config file (`config.yaml`): its keys, their defaults and checks.
//!
//! Parsing is pure (no file system access beyond reading the file), so the CLI
//! can load the same file to find the daemon without creating anything; what
//! start-up creates and checks on disk is [`runtime`](crate::runtime)'s.
//!
//! Every key has a default and an unknown key is an error: a typo such as
//! `allow_non_loopbak: true` must stop the daemon, not be ignored silently.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_yaml::Value;

use crate::images::names::{NameTemplate, TemplateError};

/// Where `serve` and the client subcommands look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/openstack-image-helper/config.yaml";

/// The default `clouds_yaml`: a file of the daemon's own, so that a user's
/// `~/.config/openstack/clouds.yaml` never leaks into a system service.
pub const DEFAULT_CLOUDS_YAML: &str = "/etc/openstack-image-helper/clouds.yaml";

/// The default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/openstack-image-helper";

/// The default `api_token_file`.
pub const DEFAULT_API_TOKEN_FILE: &str = "/var/lib/openstack-image-helper/api-token";

/// The default single entry of `upload_dirs`.
pub const DEFAULT_UPLOAD_DIR: &str = "/var/lib/openstack-image-helper/images";

/// The port of the default `listen` address.
pub const DEFAULT_PORT: u16 = 8427;

/// The keys a config file may hold, in the contract's order (also used to list
/// them when a key is unknown).
const KNOWN_KEYS: &[&str] = &[
    "listen",
    "clouds_yaml",
    "default_cloud",
    "state_dir",
    "api_token_file",
    "upload_dirs",
    "image_name_template",
    "token_refresh_margin",
    "stale_upload_age",
    "reaper_interval",
    "upload_stall_timeout",
    "allow_non_loopback",
    "log_format",
];

/// Everything that can go wrong with the config file or the files it names.
///
/// Each message names the file (and the key, where there is one), because the
/// reader is an operator looking at `journalctl`, not at the code.
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
        KNOWN_KEYS.join(", ")
    )]
    UnknownKey {
        /// The config file.
        path: PathBuf,
        /// The key as written.
        key: String,
    },

    /// A known key with a value of the wrong type or out of range.
    #[error("config file {}: key '{key}': {reason}", path.display())]
    InvalidValue {
        /// The config file.
        path: PathBuf,
        /// The key whose value is wrong.
        key: &'static str,
        /// What is wrong with it.
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

/// A value in the config file that did not parse; the caller adds the file and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

/// The daemon's config, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the HTTP API listens: a TCP address or a unix socket.
    pub listen: Listen,
    /// The clouds.yaml to use; `None` means openstacksdk's search path
    /// (`OS_CLIENT_CONFIG_FILE`, `./`, `~/.config/openstack/`, `/etc/openstack/`).
    pub clouds_yaml: Option<PathBuf>,
    /// The cloud used when a request names none; `None` means `OS_CLOUD`, else
    /// the only (or first) cloud of the file.
    pub default_cloud: Option<String>,
    /// Where the daemon keeps its own files (the daemon id); created 0700.
    pub state_dir: PathBuf,
    /// The bearer token clients must present; created 0600 with a random token when missing.
    pub api_token_file: PathBuf,
    /// The directories `src_path` must resolve into, as written in the file;
    /// [`prepare_runtime`] resolves them at start-up.
    pub upload_dirs: Vec<PathBuf>,
    /// How an image's name is made from base, app name and arch.
    pub image_name_template: NameTemplate,
    /// How long before expiry a Keystone token is refreshed.
    pub token_refresh_margin: Duration,
    /// How old a non-active image must be before it counts as abandoned.
    pub stale_upload_age: Duration,
    /// How often abandoned uploads of this daemon are looked for.
    pub reaper_interval: Duration,
    /// How long an upload may go without byte progress before it is aborted.
    pub upload_stall_timeout: Duration,
    /// Whether a non-loopback `listen` address is allowed: listening beyond
    /// this host must be asked for explicitly.
    pub allow_non_loopback: bool,
    /// How log lines are written.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
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
            token_refresh_margin: Duration::from_secs(10 * 60),
            stale_upload_age: Duration::from_secs(60 * 60),
            reaper_interval: Duration::from_secs(5 * 60),
            upload_stall_timeout: Duration::from_secs(5 * 60),
            allow_non_loopback: false,
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Config::from_yaml(&text, path)
    }

    /// Parses a config document; `origin` is the file it came from, for messages.
    ///
    /// The document is walked key by key (rather than derived with serde) so that
    /// every error names the key, and so that `clouds_yaml: null` (use the search
    /// path) can be told apart from a missing `clouds_yaml` (use the default file).
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let document: Value = serde_yaml::from_str(text).map_err(|err| ConfigError::Syntax {
            path: origin.to_path_buf(),
            reason: err.to_string(),
        })?;
        let mut config = Config::default();
        let mapping = match document {
            // An empty file (or one holding only comments) means "all defaults".
            Value::Null => return Ok(config),
            Value::Mapping(mapping) => mapping,
            _ => {
                return Err(ConfigError::Syntax {
                    path: origin.to_path_buf(),
                    reason: "the top level must be a mapping of keys to values".to_string(),
                })
            }
        };

        for (key, value) in mapping {
            let Some(name) = key.as_str() else {
                return Err(ConfigError::UnknownKey {
                    path: origin.to_path_buf(),
                    key: format!("{key:?}"),
                });
            };
            let Some(known) = KNOWN_KEYS.iter().copied().find(|known| *known == name) else {
                return Err(ConfigError::UnknownKey {
                    path: origin.to_path_buf(),
                    key: name.to_string(),
                });
            };
            config
                .set(known, value)
                .map_err(|InvalidValue(reason)| ConfigError::InvalidValue {
                    path: origin.to_path_buf(),
                    key: known,
                    reason,
                })?;
        }
        Ok(config)
    }

    /// Stores one key's value, parsed.
    fn set(&mut self, key: &'static str, value: Value) -> Result<(), InvalidValue> {
        match key {
            "listen" => self.listen = string(&value)?.parse()?,
            "clouds_yaml" => {
                self.clouds_yaml = match value {
                    Value::Null => None,
                    other => Some(path(&other)?),
                }
            }
            "default_cloud" => {
                self.default_cloud = match value {
                    Value::Null => None,
                    other => Some(non_empty(string(&other)?)?.to_string()),
                }
            }
            "state_dir" => self.state_dir = path(&value)?,
            "api_token_file" => self.api_token_file = path(&value)?,
            "upload_dirs" => {
                let Value::Sequence(entries) = value else {
                    return Err(InvalidValue(
                        "expected a list of directories, e.g. [/srv/images]".to_string(),
                    ));
                };
                self.upload_dirs = entries.iter().map(path).collect::<Result<_, _>>()?;
            }
            "image_name_template" => {
                self.image_name_template = string(&value)?
                    .parse()
                    .map_err(|err: TemplateError| InvalidValue(err.to_string()))?
            }
            "token_refresh_margin" => self.token_refresh_margin = duration(&value, false)?,
            // Zero would make every upload in progress (this unit's or another's)
            // look abandoned, and get it deleted.
            "stale_upload_age" => self.stale_upload_age = duration(&value, true)?,
            // Zero would be a busy loop.
            "reaper_interval" => self.reaper_interval = duration(&value, true)?,
            // Zero would abort every upload before its first byte.
            "upload_stall_timeout" => self.upload_stall_timeout = duration(&value, true)?,
            "allow_non_loopback" => {
                self.allow_non_loopback = value
                    .as_bool()
                    .ok_or_else(|| InvalidValue("expected true or false".to_string()))?
            }
            "log_format" => self.log_format = string(&value)?.parse()?,
            // `from_yaml` only passes keys from KNOWN_KEYS; this arm keeps the match total.
            other => return Err(InvalidValue(format!("no handler for key '{other}'"))),
        }
        Ok(())
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

/// A YAML scalar that must be a string.
fn string(value: &Value) -> Result<&str, InvalidValue> {
    value
        .as_str()
        .ok_or_else(|| InvalidValue(format!("expected a string, found {}", kind(value))))
}

/// Rejects an empty string where one would be meaningless.
fn non_empty(text: &str) -> Result<&str, InvalidValue> {
    if text.trim().is_empty() {
        Err(InvalidValue("must not be empty".to_string()))
    } else {
        Ok(text)
    }
}

/// A YAML string naming a path.
fn path(value: &Value) -> Result<PathBuf, InvalidValue> {
    Ok(PathBuf::from(non_empty(string(value)?)?))
}

/// A humantime duration (`90s`, `10m`, `1h`); `nonzero` rejects `0s`.
fn duration(value: &Value, nonzero: bool) -> Result<Duration, InvalidValue> {
    let text = value.as_str().ok_or_else(|| {
        InvalidValue(format!(
            "expected a duration such as \"90s\", \"10m\" or \"1h\", found {}",
            kind(value)
        ))
    })?;
    let parsed = humantime::parse_duration(text.trim()).map_err(|err| {
        InvalidValue(format!(
            "'{text}' is not a duration such as \"90s\", \"10m\" or \"1h\": {err}"
        ))
    })?;
    if nonzero && parsed.is_zero() {
        return Err(InvalidValue("must be longer than zero".to_string()));
    }
    Ok(parsed)
}

/// What kind of YAML value this is, for messages (never the value itself).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Where the HTTP API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl FromStr for Listen {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some(socket) = text.strip_prefix("unix:") {
            if socket.is_empty() {
                return Err(InvalidValue(
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
        Err(InvalidValue(format!(
            "'{text}' is not an address: expected IP:PORT (127.0.0.1:8427, [::1]:8427), \
             localhost:PORT or unix:/path/to/socket"
        )))
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal or the journal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(InvalidValue(format!(
                "'{other}' is not a log format: expected text or json"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/test/config.yaml"))
    }

    #[test]
    fn empty_file_gives_all_defaults() {
        let defaults = Config::default();
        assert_eq!(parse("").unwrap(), defaults);
        assert_eq!(parse("# only a comment\n").unwrap(), defaults);
        assert_eq!(defaults.listen.to_string(), "127.0.0.1:8427");
        assert_eq!(
            defaults.clouds_yaml.as_deref(),
            Some(Path::new("/etc/openstack-image-helper/clouds.yaml"))
        );
        assert_eq!(defaults.default_cloud, None);
        assert_eq!(
            defaults.state_dir,
            Path::new("/var/lib/openstack-image-helper")
        );
        assert_eq!(
            defaults.api_token_file,
            Path::new("/var/lib/openstack-image-helper/api-token")
        );
        assert_eq!(
            defaults.upload_dirs,
            vec![PathBuf::from("/var/lib/openstack-image-helper/images")]
        );
        assert_eq!(
            defaults.image_name_template.as_str(),
            "{base}-{app_name}-{arch}"
        );
        assert_eq!(defaults.token_refresh_margin, Duration::from_secs(600));
        assert_eq!(defaults.stale_upload_age, Duration::from_secs(3600));
        assert_eq!(defaults.reaper_interval, Duration::from_secs(300));
        assert_eq!(defaults.upload_stall_timeout, Duration::from_secs(300));
        assert!(!defaults.allow_non_loopback);
        assert_eq!(defaults.log_format, LogFormat::Text);
    }

    #[test]
    fn every_key_is_parsed() {
        let config = parse(
            r#"
listen: unix:/run/oih.sock
clouds_yaml: /srv/clouds.yaml
default_cloud: charm
state_dir: /srv/state
api_token_file: /srv/token
upload_dirs: [/srv/a, /srv/b]
image_name_template: "img-{arch}-{base}-{app_name}"
token_refresh_margin: 90s
stale_upload_age: 2h
reaper_interval: 1m
upload_stall_timeout: 30s
allow_non_loopback: true
log_format: json
"#,
        )
        .unwrap();
        assert_eq!(config.listen, Listen::Unix(PathBuf::from("/run/oih.sock")));
        assert_eq!(config.clouds_yaml, Some(PathBuf::from("/srv/clouds.yaml")));
        assert_eq!(config.default_cloud.as_deref(), Some("charm"));
        assert_eq!(config.state_dir, Path::new("/srv/state"));
        assert_eq!(config.api_token_file, Path::new("/srv/token"));
        assert_eq!(
            config.upload_dirs,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(
            config.image_name_template.render("noble", "app", "x64"),
            "img-x64-noble-app"
        );
        assert_eq!(config.token_refresh_margin, Duration::from_secs(90));
        assert_eq!(config.stale_upload_age, Duration::from_secs(7200));
        assert_eq!(config.reaper_interval, Duration::from_secs(60));
        assert_eq!(config.upload_stall_timeout, Duration::from_secs(30));
        assert!(config.allow_non_loopback);
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn explicit_null_clouds_yaml_means_search_path() {
        let config = parse("clouds_yaml: null\n").unwrap();
        assert_eq!(config.clouds_yaml, None);
        let config = parse("clouds_yaml:\n").unwrap();
        assert_eq!(config.clouds_yaml, None);
    }

    #[test]
    fn unknown_key_is_rejected_naming_file_and_key() {
        let err = parse("allow_non_loopbak: true\n").unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "allow_non_loopbak"));
        let message = err.to_string();
        assert!(message.contains("/etc/test/config.yaml"), "{message}");
        assert!(message.contains("'allow_non_loopbak'"), "{message}");
    }

    #[test]
    fn bad_duration_is_rejected_naming_the_key() {
        let err = parse("reaper_interval: soon\n").unwrap_err();
        assert!(matches!(
            err,
            ConfigError::InvalidValue {
                key: "reaper_interval",
                ..
            }
        ));
        let message = err.to_string();
        assert!(message.contains("/etc/test/config.yaml"), "{message}");
        assert!(message.contains("reaper_interval"), "{message}");
        assert!(message.contains("soon"), "{message}");

        let err = parse("token_refresh_margin: 600\n").unwrap_err();
        assert!(matches!(
            err,
            ConfigError::InvalidValue {
                key: "token_refresh_margin",
                ..
            }
        ));
    }

    #[test]
    fn zero_durations_are_rejected_where_they_make_no_sense() {
        for key in [
            "reaper_interval",
            "upload_stall_timeout",
            "stale_upload_age",
        ] {
            let err = parse(&format!("{key}: 0s\n")).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: k, .. } if *k == key),
                "{key}: {err}"
            );
        }
        assert_eq!(
            parse("token_refresh_margin: 0s\n")
                .unwrap()
                .token_refresh_margin,
            Duration::ZERO
        );
    }

    #[test]
    fn wrongly_typed_values_are_rejected_naming_the_key() {
        for (text, key) in [
            ("allow_non_loopback: yes please\n", "allow_non_loopback"),
            ("upload_dirs: /srv/a\n", "upload_dirs"),
            ("log_format: xml\n", "log_format"),
            ("state_dir: ''\n", "state_dir"),
            ("listen: 8427\n", "listen"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: k, .. } if *k == key),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn yaml_that_is_not_a_mapping_is_rejected_naming_the_file() {
        let err = parse("- a\n- b\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
        assert!(err.to_string().contains("/etc/test/config.yaml"));
        let err = parse("listen: [\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = Config::load(Path::new("/nonexistent/config.yaml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/config.yaml"));
    }

    #[test]
    fn listen_accepts_ipv4_ipv6_unix_and_localhost() {
        let v4: Listen = "127.0.0.1:8427".parse().unwrap();
        assert_eq!(v4, Listen::Tcp("127.0.0.1:8427".parse().unwrap()));
        let v6: Listen = "[::1]:9000".parse().unwrap();
        assert_eq!(v6, Listen::Tcp("[::1]:9000".parse().unwrap()));
        let unix: Listen = "unix:/run/x.sock".parse().unwrap();
        assert_eq!(unix, Listen::Unix(PathBuf::from("/run/x.sock")));
        let localhost: Listen = "localhost:8427".parse().unwrap();
        assert_eq!(localhost, Listen::Tcp("127.0.0.1:8427".parse().unwrap()));

        assert!("unix:".parse::<Listen>().is_err());
        assert!("example.com:8427".parse::<Listen>().is_err());
        assert!("127.0.0.1".parse::<Listen>().is_err());
        assert!("localhost:99999".parse::<Listen>().is_err());
    }

    #[test]
    fn listen_display_round_trips() {
        for text in [
            "127.0.0.1:8427",
            "[::1]:8427",
            "0.0.0.0:80",
            "unix:/run/x.sock",
        ] {
            let listen: Listen = text.parse().unwrap();
            assert_eq!(listen.to_string(), text);
            assert_eq!(listen.to_string().parse::<Listen>().unwrap(), listen);
        }
    }

    #[test]
    fn non_loopback_listen_needs_allow_non_loopback() {
        let mut config = parse("listen: 0.0.0.0:8427\n").unwrap();
        let err = config.validate_listen().unwrap_err();
        assert!(err.to_string().contains("allow_non_loopback"), "{err}");
        config.allow_non_loopback = true;
        config.validate_listen().unwrap();

        for ok in [
            "127.0.0.1:1",
            "127.1.2.3:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
            "localhost:1",
            "unix:/run/x.sock",
        ] {
            let config = Config {
                listen: ok.parse().unwrap(),
                ..Config::default()
            };
            config.validate_listen().unwrap();
        }
        for refused in [
            "10.0.0.1:1",
            "[::]:1",
            "[2001:db8::1]:1",
            "[::ffff:10.0.0.1]:1",
        ] {
            let config = Config {
                listen: refused.parse().unwrap(),
                ..Config::default()
            };
            assert!(config.validate_listen().is_err(), "{refused}");
        }
    }

    #[test]
    fn a_bad_template_is_rejected_naming_the_key() {
        let err = parse("image_name_template: \"{base}-{arch}\"\n").unwrap_err();
        assert!(matches!(
            err,
            ConfigError::InvalidValue {
                key: "image_name_template",
                ..
            }
        ));
        assert!(err.to_string().contains("{app_name}"), "{err}");
    }
}
