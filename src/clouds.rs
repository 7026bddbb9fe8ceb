//! clouds.yaml (and secure.yaml) in openstacksdk's format.
//!
//! The charm already writes clouds.yaml for openstacksdk and the `openstack`
//! CLI, so the daemon reads the same file the same way: the same search path,
//! the same auth types and key names, secure.yaml merged over it, and unknown
//! keys ignored (openstacksdk's files carry many keys this daemon has no use
//! for, such as `compute_api_version`).
//!
//! The document is walked by hand rather than derived with serde so that every
//! error can name the file, the cloud and the key, and so that no error ever
//! quotes a value that might be a secret.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};
use url::Url;

use crate::secret::Secret;

/// Keystone's default domain id, used when a user or project is named without
/// a domain (as keystoneauth and the `openstack` CLI do).
pub const DEFAULT_DOMAIN_ID: &str = "default";

/// The system-wide directory at the end of openstacksdk's search path.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/openstack";

/// The suffixes openstacksdk tries for `clouds.*` and `secure.*`, in order.
const SUFFIXES: &[&str] = &["yaml", "yml", "json"];

/// Everything that can go wrong reading clouds.yaml.
///
/// Messages name the file (or "clouds.yaml document" for one received over the
/// API), the cloud and the key; they never quote a value, since the value may
/// be a password, a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum CloudsError {
    /// A file could not be read.
    #[error("{what} {}: cannot read: {cause}", path.display())]
    Read {
        /// "clouds.yaml" or "secure.yaml".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        cause: io::Error,
    },

    /// No clouds.yaml on openstacksdk's search path.
    #[error("no clouds.yaml found; looked for: {}", list_paths(searched))]
    NotFound {
        /// Every file tried, in order.
        searched: Vec<PathBuf>,
    },

    /// The document is not valid YAML (or JSON).
    #[error("{}: not valid YAML: {reason}", origin(what, path.as_deref()))]
    Syntax {
        /// "clouds.yaml" or "secure.yaml".
        what: &'static str,
        /// The file, `None` for an in-memory document.
        path: Option<PathBuf>,
        /// The parser's explanation (with line and column).
        reason: String,
    },

    /// The document's shape is wrong outside any one cloud (no `clouds:`
    /// mapping, a cloud name that is not a string, ...).
    #[error("{}: {reason}", origin("clouds.yaml", path.as_deref()))]
    Structure {
        /// The file, `None` for an in-memory document.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },

    /// A required key of a cloud is missing (or empty).
    #[error("{}: cloud '{cloud}': {key} is missing", origin("clouds.yaml", path.as_deref()))]
    Missing {
        /// The file, `None` for an in-memory document.
        path: Option<PathBuf>,
        /// The cloud's name.
        cloud: String,
        /// The key, as a path from the cloud (`auth.password`).
        key: String,
    },

    /// A key of a cloud has a value of the wrong type or form.
    #[error("{}: cloud '{cloud}': {key}: {reason}", origin("clouds.yaml", path.as_deref()))]
    Invalid {
        /// The file, `None` for an in-memory document.
        path: Option<PathBuf>,
        /// The cloud's name.
        cloud: String,
        /// The key, as a path from the cloud (`auth.auth_url`).
        key: String,
        /// What is wrong; never the value when the key can hold a secret.
        reason: String,
    },

    /// An `auth_type` this daemon does not implement.
    #[error(
        "{}: cloud '{cloud}': unsupported auth_type '{auth_type}' \
         (supported: password, v3password, v3applicationcredential, token, v3token)",
        origin("clouds.yaml", path.as_deref())
    )]
    UnsupportedAuthType {
        /// The file, `None` for an in-memory document.
        path: Option<PathBuf>,
        /// The cloud's name.
        cloud: String,
        /// The auth type as written.
        auth_type: String,
    },

    /// The file defines no cloud at all.
    #[error("{}: defines no clouds", origin("clouds.yaml", path.as_deref()))]
    NoClouds {
        /// The file, `None` for an in-memory document.
        path: Option<PathBuf>,
    },

    /// The cloud chosen by `default_cloud` or `OS_CLOUD` is not in the file.
    #[error(
        "{}: cloud '{cloud}' (named by {named_by}) is not defined; defined: {}",
        origin("clouds.yaml", path.as_deref()),
        available.join(", ")
    )]
    UnknownCloud {
        /// The file, `None` for an in-memory document.
        path: Option<PathBuf>,
        /// The cloud asked for.
        cloud: String,
        /// Who asked: "default_cloud" or "OS_CLOUD".
        named_by: &'static str,
        /// The clouds the file does define, in file order.
        available: Vec<String>,
    },
}

/// "clouds.yaml /etc/x/clouds.yaml", or "clouds.yaml document" for one with no file.
fn origin(what: &str, path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("{what} {}", path.display()),
        None => format!("{what} document"),
    }
}

/// Paths joined for a message.
fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A parsed clouds.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudsFile {
    /// Where it came from, for messages; `None` for an in-memory document
    /// (e.g. one received by `PUT /v1/clouds`).
    pub path: Option<PathBuf>,
    /// The clouds, in file order (the order decides the fallback default cloud).
    pub clouds: Vec<CloudConfig>,
}

/// One cloud's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// The cloud's key under `clouds:`, which requests use to choose it.
    pub name: String,
    /// How to get a Keystone token.
    pub auth: Auth,
    /// The region whose endpoints to take from the catalog; `None` takes the
    /// catalog's only region (or its first).
    pub region_name: Option<String>,
    /// Which catalog endpoint to use.
    pub interface: Interface,
    /// A Glance endpoint that replaces the catalog's (for clouds whose catalog
    /// is wrong or unreachable from here).
    pub image_endpoint_override: Option<Url>,
    /// How to check the servers' certificates and whether to present one.
    pub tls: TlsSettings,
}

/// TLS settings of a cloud (`verify`, `cacert`, `cert`, `key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Whether server certificates are verified; `verify: false` (or the older
    /// `insecure: true`) turns it off.
    pub verify: bool,
    /// A CA bundle to trust in addition to (or instead of) the system's; a
    /// relative path is taken as given.
    pub cacert: Option<PathBuf>,
    /// A client certificate to present.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key, when not in `cert`.
    pub key: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            verify: true,
            cacert: None,
            cert: None,
            key: None,
        }
    }
}

/// Which catalog endpoint of a service to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// The public endpoint (openstacksdk's default).
    #[default]
    Public,
    /// The internal endpoint, typical from inside the cloud.
    Internal,
    /// The admin endpoint.
    Admin,
}

impl Interface {
    /// The name the Keystone catalog uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }

    /// Parses `public`, `internal`, `admin`, also in the old `publicURL` form.
    fn parse(text: &str) -> Option<Interface> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.strip_suffix("url").unwrap_or(&lower) {
            "public" => Some(Interface::Public),
            "internal" => Some(Interface::Internal),
            "admin" => Some(Interface::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to authenticate to Keystone (v3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `auth_type: password` (or `v3password`): a user and password.
    Password {
        /// The Keystone endpoint.
        auth_url: Url,
        /// The user.
        user: UserRef,
        /// The user's password.
        password: Secret,
        /// What the token is for.
        scope: Scope,
    },
    /// `auth_type: v3applicationcredential`; the scope is fixed by the credential.
    ApplicationCredential {
        /// The Keystone endpoint.
        auth_url: Url,
        /// The credential.
        credential: AppCredential,
    },
    /// `auth_type: token` (or `v3token`): an existing token, rescoped.
    Token {
        /// The Keystone endpoint.
        auth_url: Url,
        /// The existing token.
        token: Secret,
        /// What the new token is for.
        scope: Scope,
    },
}

impl Auth {
    /// The Keystone endpoint.
    pub fn auth_url(&self) -> &Url {
        match self {
            Auth::Password { auth_url, .. }
            | Auth::ApplicationCredential { auth_url, .. }
            | Auth::Token { auth_url, .. } => auth_url,
        }
    }

    /// The auth type's canonical name, for status and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Password { .. } => "password",
            Auth::ApplicationCredential { .. } => "v3applicationcredential",
            Auth::Token { .. } => "token",
        }
    }
}

/// A Keystone user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// By id (`user_id`), unique across domains.
    Id(String),
    /// By name (`username`), unique only within its domain.
    Name {
        /// The user's name.
        name: String,
        /// The user's domain.
        domain: DomainRef,
    },
}

/// A Keystone domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// By id (`*_domain_id`).
    Id(String),
    /// By name (`*_domain_name`).
    Name(String),
}

/// A Keystone project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    /// By id (`project_id`, or the old `tenant_id`).
    Id(String),
    /// By name (`project_name`, or the old `tenant_name`), unique only within its domain.
    Name {
        /// The project's name.
        name: String,
        /// The project's domain.
        domain: DomainRef,
    },
}

/// What a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A project: the usual case, and the one that gives an image catalog.
    Project(ProjectRef),
    /// A domain (`domain_id`/`domain_name` with no project).
    Domain(DomainRef),
    /// Neither: Keystone returns a token with no catalog.
    Unscoped,
}

/// An application credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCredential {
    /// By id (`application_credential_id`).
    ById {
        /// The credential's id.
        id: String,
        /// The credential's secret.
        secret: Secret,
    },
    /// By name (`application_credential_name`), which is unique only per user.
    ByName {
        /// The credential's name.
        name: String,
        /// The user who owns it.
        user: UserRef,
        /// The credential's secret.
        secret: Secret,
    },
}

impl CloudsFile {
    /// Loads clouds.yaml.
    ///
    /// With `path`, that file, plus `secure.yaml` (or `secure.yml`) in the same
    /// directory when present. With `None`, openstacksdk's search path, using
    /// the process's environment, `$HOME` and current directory (see
    /// [`CloudsFile::load_from_search_path`]).
    pub fn load(path: Option<&Path>) -> Result<CloudsFile, CloudsError> {
        match path {
            Some(path) => {
                let text = read_file("clouds.yaml", path)?;
                let dir = path.parent().unwrap_or(Path::new(""));
                let beside: Vec<PathBuf> = ["yaml", "yml"]
                    .iter()
                    .map(|suffix| dir.join(format!("secure.{suffix}")))
                    .collect();
                let secure = first_readable("secure.yaml", &beside)?;
                from_documents(
                    (&text, Some(path)),
                    secure
                        .as_ref()
                        .map(|(p, t)| (t.as_str(), Some(p.as_path()))),
                )
            }
            None => {
                let env = |name: &str| std::env::var(name).ok();
                let home = std::env::var_os("HOME").map(PathBuf::from);
                // Without a current directory, "./clouds.yaml" cannot exist.
                let cwd = std::env::current_dir().ok();
                search(
                    &env,
                    home.as_deref(),
                    cwd.as_deref(),
                    &[PathBuf::from(SYSTEM_CONFIG_DIR)],
                )
            }
        }
    }

    /// openstacksdk's search, with the environment, home and current directory
    /// passed in (so tests can drive it).
    ///
    /// clouds.yaml: `$OS_CLIENT_CONFIG_FILE`, then `clouds.{yaml,yml,json}` in
    /// `cwd`, `$XDG_CONFIG_HOME/openstack`, `~/.config/openstack` and
    /// `/etc/openstack`; the first that exists wins. secure.yaml is searched
    /// the same way on its own (`$OS_CLIENT_SECURE_FILE` first), as openstacksdk
    /// does, and merged over it. A file that exists but cannot be read for lack
    /// of permission is skipped, as openstacksdk does.
    pub fn load_from_search_path(
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
        cwd: &Path,
    ) -> Result<CloudsFile, CloudsError> {
        search(env, home, Some(cwd), &[PathBuf::from(SYSTEM_CONFIG_DIR)])
    }

    /// Parses a clouds.yaml document (YAML, or JSON, which is YAML), with an
    /// optional secure.yaml document deep-merged over it: mappings are merged
    /// key by key, anything else in secure.yaml replaces what clouds.yaml had.
    /// `origin` is the file the document came from, for messages.
    pub fn parse(
        text: &str,
        secure: Option<&str>,
        origin: Option<&Path>,
    ) -> Result<CloudsFile, CloudsError> {
        from_documents((text, origin), secure.map(|text| (text, None)))
    }

    /// The cloud with this name.
    pub fn get(&self, name: &str) -> Option<&CloudConfig> {
        self.clouds.iter().find(|cloud| cloud.name == name)
    }

    /// The clouds' names, in file order.
    pub fn names(&self) -> Vec<String> {
        self.clouds.iter().map(|cloud| cloud.name.clone()).collect()
    }

    /// The cloud used when a request names none, and a warning to log when
    /// the choice was a guess.
    ///
    /// `configured` (the config's `default_cloud`) wins and must exist; else
    /// `os_cloud` (the `OS_CLOUD` variable) when set, which must exist too (a
    /// silent fallback would upload to the wrong cloud); else the only cloud;
    /// else the first in file order, with a warning.
    pub fn default_cloud(
        &self,
        configured: Option<&str>,
        os_cloud: Option<&str>,
    ) -> Result<(String, Option<String>), CloudsError> {
        let Some(first) = self.clouds.first().map(|cloud| &cloud.name) else {
            return Err(CloudsError::NoClouds {
                path: self.path.clone(),
            });
        };
        let requested = configured
            .filter(|name| !name.is_empty())
            .map(|name| (name, "default_cloud"))
            .or_else(|| {
                os_cloud
                    .filter(|name| !name.is_empty())
                    .map(|name| (name, "OS_CLOUD"))
            });
        if let Some((name, named_by)) = requested {
            return match self.get(name) {
                Some(cloud) => Ok((cloud.name.clone(), None)),
                None => Err(CloudsError::UnknownCloud {
                    path: self.path.clone(),
                    cloud: name.to_string(),
                    named_by,
                    available: self.names(),
                }),
            };
        }
        if self.clouds.len() == 1 {
            return Ok((first.clone(), None));
        }
        let warning = format!(
            "{} defines several clouds ({}); using '{first}', the first; \
             set default_cloud to choose one",
            origin("clouds.yaml", self.path.as_deref()),
            self.names().join(", ")
        );
        Ok((first.clone(), Some(warning)))
    }
}

/// The search behind [`CloudsFile::load`] and [`CloudsFile::load_from_search_path`];
/// `system_dirs` is a parameter so tests need not depend on /etc.
fn search(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
    cwd: Option<&Path>,
    system_dirs: &[PathBuf],
) -> Result<CloudsFile, CloudsError> {
    let dirs = search_dirs(env, home, cwd, system_dirs);
    let clouds_candidates = candidates(env("OS_CLIENT_CONFIG_FILE"), &dirs, "clouds");
    let Some((clouds_path, clouds_text)) = first_readable("clouds.yaml", &clouds_candidates)?
    else {
        return Err(CloudsError::NotFound {
            searched: clouds_candidates,
        });
    };
    let secure_candidates = candidates(env("OS_CLIENT_SECURE_FILE"), &dirs, "secure");
    let secure = first_readable("secure.yaml", &secure_candidates)?;
    from_documents(
        (&clouds_text, Some(&clouds_path)),
        secure
            .as_ref()
            .map(|(p, t)| (t.as_str(), Some(p.as_path()))),
    )
}

/// openstacksdk's directories, in order, without duplicates.
fn search_dirs(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
    cwd: Option<&Path>,
    system_dirs: &[PathBuf],
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(cwd.map(Path::to_path_buf));
    // platformdirs' user config dir: $XDG_CONFIG_HOME when set (and absolute).
    dirs.extend(
        env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|p| p.join("openstack")),
    );
    dirs.extend(home.map(|home| home.join(".config").join("openstack")));
    dirs.extend(system_dirs.iter().cloned());
    let mut unique: Vec<PathBuf> = Vec::with_capacity(dirs.len());
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

/// `override_file` (when set and not empty), then `STEM.{yaml,yml,json}` in each dir.
fn candidates(override_file: Option<String>, dirs: &[PathBuf], stem: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = override_file
        .filter(|file| !file.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for dir in dirs {
        for suffix in SUFFIXES {
            files.push(dir.join(format!("{stem}.{suffix}")));
        }
    }
    files
}

/// The first of `files` that exists and can be read, with its text.
///
/// Missing files are skipped; so are unreadable ones (openstacksdk does the
/// same), with a warning since that is rarely what the operator meant.
fn first_readable(
    what: &'static str,
    files: &[PathBuf],
) -> Result<Option<(PathBuf, String)>, CloudsError> {
    for file in files {
        match fs::read_to_string(file) {
            Ok(text) => return Ok(Some((file.clone(), text))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                tracing::warn!(path = %file.display(), "skipping {what} that cannot be read: {err}");
                continue;
            }
            Err(cause) => {
                return Err(CloudsError::Read {
                    what,
                    path: file.clone(),
                    cause,
                })
            }
        }
    }
    Ok(None)
}

/// Reads a file named explicitly (no skipping: the operator asked for it).
fn read_file(what: &'static str, path: &Path) -> Result<String, CloudsError> {
    fs::read_to_string(path).map_err(|cause| CloudsError::Read {
        what,
        path: path.to_path_buf(),
        cause,
    })
}

/// Parses one document to a YAML value, with `<<:` merge keys applied (PyYAML,
/// which openstacksdk uses, applies them too).
fn parse_document(
    what: &'static str,
    text: &str,
    path: Option<&Path>,
) -> Result<Value, CloudsError> {
    let syntax = |err: serde_yaml::Error| CloudsError::Syntax {
        what,
        path: path.map(Path::to_path_buf),
        reason: err.to_string(),
    };
    let mut value: Value = serde_yaml::from_str(text).map_err(syntax)?;
    value.apply_merge().map_err(syntax)?;
    Ok(value)
}

/// Merges `over` into `base`: mappings key by key, anything else replaced.
fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Parses clouds.yaml (and secure.yaml over it), each given with its file for messages.
fn from_documents(
    (text, path): (&str, Option<&Path>),
    secure: Option<(&str, Option<&Path>)>,
) -> Result<CloudsFile, CloudsError> {
    let mut document = parse_document("clouds.yaml", text, path)?;
    if let Some((secure_text, secure_path)) = secure {
        let secure_document = parse_document("secure.yaml", secure_text, secure_path)?;
        // An empty secure.yaml adds nothing (and must not replace the whole file).
        if !secure_document.is_null() {
            deep_merge(&mut document, secure_document);
        }
    }
    let path = path.map(Path::to_path_buf);
    let structure = |reason: &str| CloudsError::Structure {
        path: path.clone(),
        reason: reason.to_string(),
    };
    let clouds = match document.get("clouds") {
        None | Some(Value::Null) => {
            return Err(structure("no 'clouds' key at the top level"));
        }
        Some(Value::Mapping(clouds)) => clouds,
        Some(_) => {
            return Err(structure(
                "'clouds' must be a mapping of cloud names to their settings",
            ))
        }
    };
    let mut parsed = Vec::with_capacity(clouds.len());
    for (name, settings) in clouds {
        let Some(name) = name.as_str() else {
            return Err(structure("cloud names under 'clouds' must be strings"));
        };
        let cloud = CloudContext { path: &path, name };
        parsed.push(cloud.parse(settings)?);
    }
    Ok(CloudsFile {
        path,
        clouds: parsed,
    })
}

/// The cloud being parsed, for error messages.
struct CloudContext<'a> {
    /// The file, `None` for an in-memory document.
    path: &'a Option<PathBuf>,
    /// The cloud's name.
    name: &'a str,
}

impl CloudContext<'_> {
    fn missing(&self, key: &str) -> CloudsError {
        CloudsError::Missing {
            path: self.path.clone(),
            cloud: self.name.to_string(),
            key: key.to_string(),
        }
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> CloudsError {
        CloudsError::Invalid {
            path: self.path.clone(),
            cloud: self.name.to_string(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// A string under `key`; null, absent and empty are all `None` (generated
    /// files often write `project_domain_name: ''` for "not set"). The error
    /// for a non-string never quotes the value: it may be a password.
    fn string(&self, map: &Mapping, key: &str, label: &str) -> Result<Option<String>, CloudsError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(self.invalid(label, "must be a string (quote it in YAML)")),
        }
    }

    /// A boolean under `key`, also in the `yes`/`no` forms PyYAML reads as booleans.
    fn boolean(&self, map: &Mapping, key: &str) -> Result<Option<bool>, CloudsError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Ok(Some(true)),
                "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(self.invalid(key, "must be true or false")),
            },
            Some(_) => Err(self.invalid(key, "must be true or false")),
        }
    }

    /// An http(s) URL under `key`. Anything else is refused: `Url` would take
    /// `keystone.example.com:5000` as a URL with the scheme `keystone.example.com`.
    fn url(&self, map: &Mapping, key: &str, label: &str) -> Result<Option<Url>, CloudsError> {
        let Some(text) = self.string(map, key, label)? else {
            return Ok(None);
        };
        let url = Url::parse(text.trim())
            .map_err(|err| self.invalid(label, format!("not a valid URL: {err}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.invalid(label, "must be an http:// or https:// URL"));
        }
        Ok(Some(url))
    }

    fn path(&self, map: &Mapping, key: &str) -> Result<Option<PathBuf>, CloudsError> {
        Ok(self.string(map, key, key)?.map(PathBuf::from))
    }

    /// One cloud's settings.
    fn parse(&self, settings: &Value) -> Result<CloudConfig, CloudsError> {
        let empty = Mapping::new();
        let settings = match settings {
            Value::Mapping(map) => map,
            // `clouds: {charm: }` is a cloud with nothing set: report what is missing.
            Value::Null => &empty,
            _ => {
                return Err(CloudsError::Structure {
                    path: self.path.clone(),
                    reason: format!("cloud '{}' must be a mapping of settings", self.name),
                })
            }
        };

        self.check_identity_api_version(settings)?;

        let interface = match self.string(settings, "interface", "interface")? {
            None => Interface::default(),
            Some(text) => Interface::parse(&text).ok_or_else(|| {
                self.invalid(
                    "interface",
                    format!("'{text}' is not one of public, internal, admin"),
                )
            })?,
        };

        let verify = match self.boolean(settings, "verify")? {
            Some(verify) => verify,
            // The older spelling, still honoured by openstacksdk.
            None => !self.boolean(settings, "insecure")?.unwrap_or(false),
        };

        Ok(CloudConfig {
            name: self.name.to_string(),
            auth: self.auth(settings)?,
            region_name: self.string(settings, "region_name", "region_name")?,
            interface,
            image_endpoint_override: self.url(
                settings,
                "image_endpoint_override",
                "image_endpoint_override",
            )?,
            tls: TlsSettings {
                verify,
                cacert: self.path(settings, "cacert")?,
                cert: self.path(settings, "cert")?,
                key: self.path(settings, "key")?,
            },
        })
    }

    /// Only Identity v3 exists today; v2.0 was removed from Keystone in Queens.
    fn check_identity_api_version(&self, settings: &Mapping) -> Result<(), CloudsError> {
        const KEY: &str = "identity_api_version";
        let ok = match settings.get(KEY) {
            None | Some(Value::Null) => true,
            Some(Value::Number(number)) => number.as_f64() == Some(3.0),
            Some(Value::String(text)) => matches!(text.trim(), "3" | "3.0"),
            Some(_) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(self.invalid(KEY, "only Identity API version 3 is supported"))
        }
    }

    /// The `auth_type` and `auth:` mapping.
    fn auth(&self, settings: &Mapping) -> Result<Auth, CloudsError> {
        let empty = Mapping::new();
        let auth = match settings.get("auth") {
            None | Some(Value::Null) => &empty,
            Some(Value::Mapping(auth)) => auth,
            Some(_) => return Err(self.invalid("auth", "must be a mapping")),
        };
        let auth_type = self
            .string(settings, "auth_type", "auth_type")?
            .unwrap_or_else(|| "password".to_string());
        let auth_type = auth_type.trim();
        // Decide the type before reading fields, so an unsupported type is
        // reported as such rather than as a missing password.
        if !matches!(
            auth_type,
            "password" | "v3password" | "v3applicationcredential" | "token" | "v3token"
        ) {
            return Err(CloudsError::UnsupportedAuthType {
                path: self.path.clone(),
                cloud: self.name.to_string(),
                auth_type: auth_type.to_string(),
            });
        }
        let fields = AuthFields::read(self, auth)?;
        let auth_url = fields
            .auth_url
            .clone()
            .ok_or_else(|| self.missing("auth.auth_url"))?;

        match auth_type {
            "v3applicationcredential" => {
                let secret = fields
                    .application_credential_secret
                    .clone()
                    .ok_or_else(|| self.missing("auth.application_credential_secret"))?;
                let credential = if let Some(id) = fields.application_credential_id.clone() {
                    AppCredential::ById { id, secret }
                } else if let Some(name) = fields.application_credential_name.clone() {
                    let user = fields
                        .user()
                        .ok_or_else(|| self.missing("auth.username (or auth.user_id)"))?;
                    AppCredential::ByName { name, user, secret }
                } else {
                    return Err(self.missing(
                        "auth.application_credential_id (or auth.application_credential_name)",
                    ));
                };
                Ok(Auth::ApplicationCredential {
                    auth_url,
                    credential,
                })
            }
            "token" | "v3token" => {
                let token = fields
                    .token
                    .clone()
                    .ok_or_else(|| self.missing("auth.token"))?;
                Ok(Auth::Token {
                    auth_url,
                    token,
                    scope: fields.scope(),
                })
            }
            _ => {
                let user = fields
                    .user()
                    .ok_or_else(|| self.missing("auth.username (or auth.user_id)"))?;
                let password = fields
                    .password
                    .clone()
                    .ok_or_else(|| self.missing("auth.password"))?;
                Ok(Auth::Password {
                    auth_url,
                    user,
                    password,
                    scope: fields.scope(),
                })
            }
        }
    }
}

/// The `auth:` keys, read and type-checked, before they are combined.
struct AuthFields {
    /// `auth_url`.
    auth_url: Option<Url>,
    /// `user_id`.
    user_id: Option<String>,
    /// `username`.
    username: Option<String>,
    /// `password`.
    password: Option<Secret>,
    /// `user_domain_id` / `user_domain_name`.
    user_domain: Option<DomainRef>,
    /// `project_id` (or `tenant_id`).
    project_id: Option<String>,
    /// `project_name` (or `tenant_name`).
    project_name: Option<String>,
    /// `project_domain_id` / `project_domain_name`.
    project_domain: Option<DomainRef>,
    /// `domain_id` / `domain_name`.
    domain: Option<DomainRef>,
    /// `default_domain` (an id, as in the `openstack` CLI), `default_domain_id`
    /// or `default_domain_name` (keystoneauth's names).
    default_domain: Option<DomainRef>,
    /// `application_credential_id`.
    application_credential_id: Option<String>,
    /// `application_credential_name`.
    application_credential_name: Option<String>,
    /// `application_credential_secret`.
    application_credential_secret: Option<Secret>,
    /// `token`.
    token: Option<Secret>,
}

impl AuthFields {
    fn read(cloud: &CloudContext<'_>, auth: &Mapping) -> Result<AuthFields, CloudsError> {
        let get = |key: &str| cloud.string(auth, key, &format!("auth.{key}"));
        let domain = |id_key: &str, name_key: &str| -> Result<Option<DomainRef>, CloudsError> {
            Ok(match get(id_key)? {
                Some(id) => Some(DomainRef::Id(id)),
                None => get(name_key)?.map(DomainRef::Name),
            })
        };
        let default_domain = match get("default_domain")? {
            Some(id) => Some(DomainRef::Id(id)),
            None => domain("default_domain_id", "default_domain_name")?,
        };
        Ok(AuthFields {
            auth_url: cloud.url(auth, "auth_url", "auth.auth_url")?,
            user_id: get("user_id")?,
            username: get("username")?,
            password: get("password")?.map(Secret::new),
            user_domain: domain("user_domain_id", "user_domain_name")?,
            project_id: get("project_id")?.or(get("tenant_id")?),
            project_name: get("project_name")?.or(get("tenant_name")?),
            project_domain: domain("project_domain_id", "project_domain_name")?,
            domain: domain("domain_id", "domain_name")?,
            default_domain,
            application_credential_id: get("application_credential_id")?,
            application_credential_name: get("application_credential_name")?,
            application_credential_secret: get("application_credential_secret")?.map(Secret::new),
            token: get("token")?.map(Secret::new),
        })
    }

    /// Whether a project is named, which turns `domain_*` into the users' and
    /// projects' domain instead of a domain scope (openstacksdk's rule).
    fn project_scoped(&self) -> bool {
        self.project_id.is_some() || self.project_name.is_some()
    }

    /// `domain_*` when it stands for "the domain of everything" (project-scoped).
    fn shared_domain(&self) -> Option<DomainRef> {
        self.domain.clone().filter(|_| self.project_scoped())
    }

    /// The domain of a user or project named without an id: its own, the
    /// shared `domain_*`, `default_domain`, the other entity's, then Keystone's
    /// default domain.
    fn domain_for(&self, own: &Option<DomainRef>, other: &Option<DomainRef>) -> DomainRef {
        own.clone()
            .or_else(|| self.shared_domain())
            .or_else(|| self.default_domain.clone())
            .or_else(|| other.clone())
            .unwrap_or_else(|| DomainRef::Id(DEFAULT_DOMAIN_ID.to_string()))
    }

    fn user(&self) -> Option<UserRef> {
        if let Some(id) = &self.user_id {
            return Some(UserRef::Id(id.clone()));
        }
        self.username.as_ref().map(|name| UserRef::Name {
            name: name.clone(),
            domain: self.domain_for(&self.user_domain, &self.project_domain),
        })
    }

    fn scope(&self) -> Scope {
        if let Some(id) = &self.project_id {
            Scope::Project(ProjectRef::Id(id.clone()))
        } else if let Some(name) = &self.project_name {
            Scope::Project(ProjectRef::Name {
                name: name.clone(),
                domain: self.domain_for(&self.project_domain, &self.user_domain),
            })
        } else if let Some(domain) = &self.domain {
            Scope::Domain(domain.clone())
        } else {
            Scope::Unscoped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(text: &str) -> Result<CloudsFile, CloudsError> {
        CloudsFile::parse(text, None, Some(Path::new("/etc/x/clouds.yaml")))
    }

    fn only_cloud(text: &str) -> CloudConfig {
        let file = parse(text).unwrap();
        assert_eq!(file.clouds.len(), 1);
        file.clouds[0].clone()
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn id(text: &str) -> DomainRef {
        DomainRef::Id(text.to_string())
    }

    fn name(text: &str) -> DomainRef {
        DomainRef::Name(text.to_string())
    }

    fn missing_key(err: &CloudsError) -> &str {
        match err {
            CloudsError::Missing { key, .. } => key,
            other => panic!("expected Missing, got {other}"),
        }
    }

    #[test]
    fn password_auth_by_name_with_domains() {
        let cloud = only_cloud(
            r#"
clouds:
  charm:
    auth:
      auth_url: https://keystone.example.com:5000/v3
      username: alice
      password: s3cret
      user_domain_name: users
      project_name: images
      project_domain_id: abc123
    region_name: RegionTwo
"#,
        );
        assert_eq!(cloud.name, "charm");
        assert_eq!(cloud.region_name.as_deref(), Some("RegionTwo"));
        assert_eq!(cloud.interface, Interface::Public);
        assert_eq!(cloud.tls, TlsSettings::default());
        assert_eq!(cloud.image_endpoint_override, None);
        assert_eq!(cloud.auth.kind(), "password");
        assert_eq!(
            cloud.auth,
            Auth::Password {
                auth_url: url("https://keystone.example.com:5000/v3"),
                user: UserRef::Name {
                    name: "alice".into(),
                    domain: name("users"),
                },
                password: Secret::new("s3cret"),
                scope: Scope::Project(ProjectRef::Name {
                    name: "images".into(),
                    domain: id("abc123"),
                }),
            }
        );
    }

    #[test]
    fn password_auth_by_ids() {
        let cloud = only_cloud(
            r#"
clouds:
  c:
    auth_type: password
    auth:
      auth_url: http://10.0.0.1:5000
      user_id: u1
      password: pw
      project_id: p1
"#,
        );
        assert_eq!(
            cloud.auth,
            Auth::Password {
                auth_url: url("http://10.0.0.1:5000"),
                user: UserRef::Id("u1".into()),
                password: Secret::new("pw"),
                scope: Scope::Project(ProjectRef::Id("p1".into())),
            }
        );
        assert_eq!(cloud.auth.auth_url().as_str(), "http://10.0.0.1:5000/");
    }

    #[test]
    fn v3password_is_an_alias_of_password() {
        let cloud = only_cloud(
            "clouds:\n  c:\n    auth_type: v3password\n    auth:\n      auth_url: https://k/v3\n      username: a\n      password: p\n      tenant_name: legacy\n",
        );
        let Auth::Password { scope, user, .. } = &cloud.auth else {
            panic!("not password: {:?}", cloud.auth);
        };
        assert_eq!(
            *scope,
            Scope::Project(ProjectRef::Name {
                name: "legacy".into(),
                domain: id("default"),
            })
        );
        assert_eq!(
            *user,
            UserRef::Name {
                name: "a".into(),
                domain: id("default"),
            }
        );
    }

    #[test]
    fn names_without_domain_fall_back_to_default_domain_then_the_other_entity() {
        let base = "clouds:\n  c:\n    auth:\n      auth_url: https://k/v3\n      username: a\n      password: p\n      project_name: proj\n";
        let scoped = |extra: &str| {
            let cloud = only_cloud(&format!("{base}{extra}"));
            let Auth::Password { user, scope, .. } = cloud.auth else {
                panic!("not password");
            };
            let UserRef::Name {
                domain: user_domain,
                ..
            } = user
            else {
                panic!("user by id");
            };
            let Scope::Project(ProjectRef::Name {
                domain: project_domain,
                ..
            }) = scope
            else {
                panic!("not project by name");
            };
            (user_domain, project_domain)
        };
        assert_eq!(scoped(""), (id("default"), id("default")));
        assert_eq!(
            scoped("      default_domain: dflt\n      user_domain_name: U\n"),
            (name("U"), id("dflt"))
        );
        assert_eq!(
            scoped("      project_domain_name: P\n"),
            (name("P"), name("P"))
        );
        assert_eq!(scoped("      domain_name: D\n"), (name("D"), name("D")));
        assert_eq!(
            scoped("      default_domain_name: Dn\n"),
            (name("Dn"), name("Dn"))
        );
    }

    #[test]
    fn domain_without_project_is_a_domain_scope() {
        let cloud = only_cloud(
            "clouds:\n  c:\n    auth:\n      auth_url: https://k/v3\n      user_id: u\n      password: p\n      domain_id: d1\n",
        );
        let Auth::Password { scope, .. } = cloud.auth else {
            panic!("not password");
        };
        assert_eq!(scope, Scope::Domain(id("d1")));

        let cloud = only_cloud(
            "clouds:\n  c:\n    auth:\n      auth_url: https://k/v3\n      user_id: u\n      password: p\n",
        );
        let Auth::Password { scope, .. } = cloud.auth else {
            panic!("not password");
        };
        assert_eq!(scope, Scope::Unscoped);
    }

    #[test]
    fn application_credential_by_id() {
        let cloud = only_cloud(
            r#"
clouds:
  c:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://k:5000/v3
      application_credential_id: ac1
      application_credential_secret: shh
"#,
        );
        assert_eq!(cloud.auth.kind(), "v3applicationcredential");
        assert_eq!(
            cloud.auth,
            Auth::ApplicationCredential {
                auth_url: url("https://k:5000/v3"),
                credential: AppCredential::ById {
                    id: "ac1".into(),
                    secret: Secret::new("shh"),
                },
            }
        );
    }

    #[test]
    fn application_credential_by_name_with_user() {
        let cloud = only_cloud(
            r#"
clouds:
  c:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://k:5000/v3
      application_credential_name: charm-cred
      application_credential_secret: shh
      username: bob
      user_domain_name: Users
"#,
        );
        assert_eq!(
            cloud.auth,
            Auth::ApplicationCredential {
                auth_url: url("https://k:5000/v3"),
                credential: AppCredential::ByName {
                    name: "charm-cred".into(),
                    user: UserRef::Name {
                        name: "bob".into(),
                        domain: name("Users"),
                    },
                    secret: Secret::new("shh"),
                },
            }
        );
    }

    #[test]
    fn application_credential_by_name_needs_a_user() {
        let err = parse(
            "clouds:\n  c:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: https://k/v3\n      application_credential_name: n\n      application_credential_secret: s\n",
        )
        .unwrap_err();
        assert!(missing_key(&err).starts_with("auth.username"), "{err}");
    }

    #[test]
    fn token_and_v3token_auth() {
        for auth_type in ["token", "v3token"] {
            let cloud = only_cloud(&format!(
                "clouds:\n  c:\n    auth_type: {auth_type}\n    auth:\n      auth_url: https://k/v3\n      token: gAAAA-tok\n      project_id: p\n"
            ));
            assert_eq!(cloud.auth.kind(), "token");
            assert_eq!(
                cloud.auth,
                Auth::Token {
                    auth_url: url("https://k/v3"),
                    token: Secret::new("gAAAA-tok"),
                    scope: Scope::Project(ProjectRef::Id("p".into())),
                }
            );
        }
    }

    #[test]
    fn missing_clouds_key_is_an_error_naming_the_file() {
        let err = parse("other: {}\n").unwrap_err();
        assert!(matches!(err, CloudsError::Structure { .. }));
        let message = err.to_string();
        assert!(message.contains("/etc/x/clouds.yaml"), "{message}");
        assert!(message.contains("'clouds'"), "{message}");
        assert!(matches!(
            parse("").unwrap_err(),
            CloudsError::Structure { .. }
        ));
        assert!(matches!(
            parse("clouds: [a]\n").unwrap_err(),
            CloudsError::Structure { .. }
        ));
    }

    #[test]
    fn invalid_yaml_is_a_syntax_error_naming_the_file() {
        let err = parse("clouds: {\n").unwrap_err();
        assert!(matches!(
            err,
            CloudsError::Syntax {
                what: "clouds.yaml",
                ..
            }
        ));
        assert!(err.to_string().contains("/etc/x/clouds.yaml"));

        let err = CloudsFile::parse("clouds: {}\n", Some("clouds: ["), None).unwrap_err();
        assert!(matches!(
            err,
            CloudsError::Syntax {
                what: "secure.yaml",
                ..
            }
        ));
    }

    #[test]
    fn unknown_auth_type_is_an_error_naming_cloud_and_type() {
        let err = parse(
            "clouds:\n  charm:\n    auth_type: v3oidcpassword\n    auth:\n      auth_url: https://k/v3\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CloudsError::UnsupportedAuthType { auth_type, .. } if auth_type == "v3oidcpassword")
        );
        let message = err.to_string();
        assert!(message.contains("cloud 'charm'"), "{message}");
        assert!(message.contains("v3oidcpassword"), "{message}");
    }

    #[test]
    fn missing_auth_url_is_an_error() {
        let err = parse("clouds:\n  charm:\n    auth:\n      username: a\n      password: p\n")
            .unwrap_err();
        assert_eq!(missing_key(&err), "auth.auth_url");
        assert_eq!(
            err.to_string(),
            "clouds.yaml /etc/x/clouds.yaml: cloud 'charm': auth.auth_url is missing"
        );
        let err = parse("clouds:\n  charm:\n").unwrap_err();
        assert_eq!(missing_key(&err), "auth.auth_url");
    }

    #[test]
    fn bad_auth_url_is_an_error() {
        for bad in ["not a url", "keystone.example.com:5000/v3", "ftp://k/v3"] {
            let err = parse(&format!(
                "clouds:\n  charm:\n    auth:\n      auth_url: '{bad}'\n      username: a\n      password: p\n"
            ))
            .unwrap_err();
            assert!(
                matches!(&err, CloudsError::Invalid { key, cloud, .. } if key == "auth.auth_url" && cloud == "charm"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn missing_password_is_an_error_naming_cloud_and_key() {
        let err = parse(
            "clouds:\n  charm:\n    auth:\n      auth_url: https://k/v3\n      username: a\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "clouds.yaml /etc/x/clouds.yaml: cloud 'charm': auth.password is missing"
        );
        let err = parse(
            "clouds:\n  charm:\n    auth:\n      auth_url: https://k/v3\n      password: p\n",
        )
        .unwrap_err();
        assert!(missing_key(&err).starts_with("auth.username"), "{err}");
    }

    #[test]
    fn missing_application_credential_secret_is_an_error() {
        let err = parse(
            "clouds:\n  charm:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: https://k/v3\n      application_credential_id: ac\n",
        )
        .unwrap_err();
        assert_eq!(missing_key(&err), "auth.application_credential_secret");
        let err = parse(
            "clouds:\n  charm:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: https://k/v3\n      application_credential_secret: s\n",
        )
        .unwrap_err();
        assert!(
            missing_key(&err).starts_with("auth.application_credential_id"),
            "{err}"
        );
        let err = parse(
            "clouds:\n  charm:\n    auth_type: token\n    auth:\n      auth_url: https://k/v3\n",
        )
        .unwrap_err();
        assert_eq!(missing_key(&err), "auth.token");
    }

    #[test]
    fn identity_api_version_other_than_3_is_an_error() {
        let cloud = |version: &str| {
            parse(&format!(
                "clouds:\n  c:\n    identity_api_version: {version}\n    auth:\n      auth_url: https://k/v3\n      user_id: u\n      password: p\n"
            ))
        };
        for ok in ["3", "'3'", "3.0", "'3.0'"] {
            cloud(ok).unwrap();
        }
        for bad in ["2", "'2.0'", "v3", "[3]"] {
            let err = cloud(bad).unwrap_err();
            assert!(
                matches!(&err, CloudsError::Invalid { key, .. } if key == "identity_api_version"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn non_string_secret_is_rejected_without_quoting_it() {
        let err = parse(
            "clouds:\n  c:\n    auth:\n      auth_url: https://k/v3\n      user_id: u\n      password: 98765432\n",
        )
        .unwrap_err();
        assert!(matches!(&err, CloudsError::Invalid { key, .. } if key == "auth.password"));
        assert!(!err.to_string().contains("98765432"), "{err}");
    }

    #[test]
    fn interface_accepts_short_and_url_forms() {
        let with = |value: &str| {
            only_cloud(&format!(
                "clouds:\n  c:\n    interface: {value}\n    auth:\n      auth_url: https://k/v3\n      user_id: u\n      password: p\n"
            ))
            .interface
        };
        assert_eq!(with("public"), Interface::Public);
        assert_eq!(with("publicURL"), Interface::Public);
        assert_eq!(with("internal"), Interface::Internal);
        assert_eq!(with("internalURL"), Interface::Internal);
        assert_eq!(with("admin"), Interface::Admin);
        assert_eq!(with("adminURL"), Interface::Admin);
        assert_eq!(Interface::Internal.to_string(), "internal");
        let err = parse(
            "clouds:\n  c:\n    interface: private\n    auth:\n      auth_url: https://k/v3\n      user_id: u\n      password: p\n",
        )
        .unwrap_err();
        assert!(matches!(&err, CloudsError::Invalid { key, .. } if key == "interface"));
    }

    #[test]
    fn tls_settings_are_read() {
        let cloud = only_cloud(
            r#"
clouds:
  c:
    verify: false
    cacert: certs/ca.pem
    cert: /etc/ssl/client.pem
    key: /etc/ssl/client.key
    auth: {auth_url: "https://k/v3", user_id: u, password: p}
"#,
        );
        assert_eq!(
            cloud.tls,
            TlsSettings {
                verify: false,
                cacert: Some(PathBuf::from("certs/ca.pem")),
                cert: Some(PathBuf::from("/etc/ssl/client.pem")),
                key: Some(PathBuf::from("/etc/ssl/client.key")),
            }
        );
        let insecure = only_cloud(
            "clouds:\n  c:\n    insecure: true\n    auth: {auth_url: 'https://k/v3', user_id: u, password: p}\n",
        );
        assert!(!insecure.tls.verify);
        let err = parse(
            "clouds:\n  c:\n    verify: maybe\n    auth: {auth_url: 'https://k/v3', user_id: u, password: p}\n",
        )
        .unwrap_err();
        assert!(matches!(&err, CloudsError::Invalid { key, .. } if key == "verify"));
    }

    #[test]
    fn image_endpoint_override_is_read_and_checked() {
        let cloud = only_cloud(
            "clouds:\n  c:\n    image_endpoint_override: https://glance.example.com:9292\n    auth: {auth_url: 'https://k/v3', user_id: u, password: p}\n",
        );
        assert_eq!(
            cloud.image_endpoint_override,
            Some(url("https://glance.example.com:9292"))
        );
        let err = parse(
            "clouds:\n  c:\n    image_endpoint_override: glance:9292\n    auth: {auth_url: 'https://k/v3', user_id: u, password: p}\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CloudsError::Invalid { key, .. } if key == "image_endpoint_override")
        );
    }

    #[test]
    fn unknown_cloud_keys_are_ignored() {
        let cloud = only_cloud(
            "clouds:\n  c:\n    identity_interface: internal\n    api_timeout: 30\n    compute_api_version: 2\n    auth: {auth_url: 'https://k/v3', user_id: u, password: p, unknown_auth_key: x}\n",
        );
        assert_eq!(cloud.name, "c");
    }

    #[test]
    fn json_documents_are_accepted() {
        let file = parse(
            r#"{"clouds": {"j": {"auth": {"auth_url": "https://k/v3", "user_id": "u", "password": "p"}}}}"#,
        )
        .unwrap();
        assert_eq!(file.names(), vec!["j".to_string()]);
    }

    #[test]
    fn secure_yaml_is_merged_over_clouds_yaml() {
        let clouds = "clouds:\n  a:\n    region_name: R1\n    auth:\n      auth_url: https://k/v3\n      username: alice\n      project_name: p\n  b:\n    auth:\n      auth_url: https://k/v3\n      user_id: u\n      password: old\n";
        let secure = "clouds:\n  a:\n    auth:\n      password: from-secure\n  b:\n    auth:\n      password: replaced\n";
        let file = CloudsFile::parse(clouds, Some(secure), None).unwrap();
        assert_eq!(file.names(), vec!["a".to_string(), "b".to_string()]);
        let a = file.get("a").unwrap();
        assert_eq!(a.region_name.as_deref(), Some("R1"));
        let Auth::Password { password, user, .. } = &a.auth else {
            panic!("not password");
        };
        assert_eq!(password.expose(), "from-secure");
        assert!(matches!(user, UserRef::Name { name, .. } if name == "alice"));
        let Auth::Password { password, .. } = &file.get("b").unwrap().auth else {
            panic!("not password");
        };
        assert_eq!(password.expose(), "replaced");

        // An empty secure.yaml changes nothing.
        let file = CloudsFile::parse(clouds, Some(""), None);
        assert!(matches!(file.unwrap_err(), CloudsError::Missing { .. }));
    }

    #[test]
    fn load_with_a_path_reads_secure_yaml_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        fs::write(
            &path,
            "clouds:\n  c:\n    auth: {auth_url: 'https://k/v3', user_id: u}\n",
        )
        .unwrap();
        let err = CloudsFile::load(Some(&path)).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        fs::write(
            dir.path().join("secure.yaml"),
            "clouds:\n  c:\n    auth: {password: pw}\n",
        )
        .unwrap();
        let file = CloudsFile::load(Some(&path)).unwrap();
        assert_eq!(file.path.as_deref(), Some(path.as_path()));
        let Auth::Password { password, .. } = &file.clouds[0].auth else {
            panic!("not password");
        };
        assert_eq!(password.expose(), "pw");

        let err = CloudsFile::load(Some(&dir.path().join("absent.yaml"))).unwrap_err();
        assert!(matches!(err, CloudsError::Read { .. }));
    }

    /// A clouds.yaml whose only cloud is named `name`.
    fn write_clouds(path: &Path, name: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            path,
            format!("clouds:\n  {name}:\n    auth: {{auth_url: 'https://k/v3', user_id: u, password: p}}\n"),
        )
        .unwrap();
    }

    fn search_in(
        vars: &HashMap<&str, String>,
        home: &Path,
        cwd: &Path,
    ) -> Result<CloudsFile, CloudsError> {
        let env = |name: &str| vars.get(name).cloned();
        search(&env, Some(home), Some(cwd), &[])
    }

    #[test]
    fn search_path_order_is_env_then_cwd_then_home() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let cwd = root.path().join("cwd");
        fs::create_dir_all(&cwd).unwrap();
        let explicit = root.path().join("elsewhere/my-clouds.yaml");
        let mut vars = HashMap::new();

        let err = search_in(&vars, &home, &cwd).unwrap_err();
        assert!(matches!(&err, CloudsError::NotFound { searched } if searched.len() == 6));

        write_clouds(&home.join(".config/openstack/clouds.yaml"), "home");
        assert_eq!(search_in(&vars, &home, &cwd).unwrap().names(), ["home"]);

        write_clouds(&cwd.join("clouds.yml"), "cwd");
        let found = search_in(&vars, &home, &cwd).unwrap();
        assert_eq!(found.names(), ["cwd"]);
        assert_eq!(found.path, Some(cwd.join("clouds.yml")));

        // A set but missing OS_CLIENT_CONFIG_FILE falls through, as in openstacksdk.
        vars.insert("OS_CLIENT_CONFIG_FILE", explicit.display().to_string());
        assert_eq!(search_in(&vars, &home, &cwd).unwrap().names(), ["cwd"]);

        write_clouds(&explicit, "explicit");
        assert_eq!(search_in(&vars, &home, &cwd).unwrap().names(), ["explicit"]);
    }

    #[test]
    fn search_path_honours_xdg_config_home_before_dot_config() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let cwd = root.path().join("cwd");
        fs::create_dir_all(&cwd).unwrap();
        let xdg = root.path().join("xdg");
        write_clouds(&home.join(".config/openstack/clouds.yaml"), "home");
        write_clouds(&xdg.join("openstack/clouds.yaml"), "xdg");
        let vars = HashMap::from([("XDG_CONFIG_HOME", xdg.display().to_string())]);
        assert_eq!(search_in(&vars, &home, &cwd).unwrap().names(), ["xdg"]);
    }

    #[test]
    fn search_path_merges_secure_yaml_from_its_own_search() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let cwd = root.path().join("cwd");
        fs::create_dir_all(&cwd).unwrap();
        fs::create_dir_all(home.join(".config/openstack")).unwrap();
        fs::write(
            home.join(".config/openstack/clouds.yaml"),
            "clouds:\n  c:\n    auth: {auth_url: 'https://k/v3', user_id: u}\n",
        )
        .unwrap();
        let secure_file = root.path().join("s.yaml");
        fs::write(
            &secure_file,
            "clouds:\n  c:\n    auth: {password: from-env-file}\n",
        )
        .unwrap();
        fs::write(
            home.join(".config/openstack/secure.yaml"),
            "clouds:\n  c:\n    auth: {password: from-home}\n",
        )
        .unwrap();

        let mut vars = HashMap::new();
        let password = |file: CloudsFile| match &file.clouds[0].auth {
            Auth::Password { password, .. } => password.expose().to_string(),
            other => panic!("not password: {other:?}"),
        };
        assert_eq!(
            password(search_in(&vars, &home, &cwd).unwrap()),
            "from-home"
        );
        vars.insert("OS_CLIENT_SECURE_FILE", secure_file.display().to_string());
        assert_eq!(
            password(search_in(&vars, &home, &cwd).unwrap()),
            "from-env-file"
        );
    }

    fn three_clouds() -> CloudsFile {
        parse(
            "clouds:\n  zeta: {auth: {auth_url: 'https://k/v3', user_id: u, password: p}}\n  alpha: {auth: {auth_url: 'https://k/v3', user_id: u, password: p}}\n  mid: {auth: {auth_url: 'https://k/v3', user_id: u, password: p}}\n",
        )
        .unwrap()
    }

    #[test]
    fn default_cloud_prefers_the_configured_one() {
        let file = three_clouds();
        assert_eq!(
            file.default_cloud(Some("mid"), Some("alpha")).unwrap(),
            ("mid".to_string(), None)
        );
        let err = file.default_cloud(Some("nope"), Some("alpha")).unwrap_err();
        assert!(matches!(
            &err,
            CloudsError::UnknownCloud {
                named_by: "default_cloud",
                ..
            }
        ));
        let message = err.to_string();
        assert!(
            message.contains("'nope'") && message.contains("zeta, alpha, mid"),
            "{message}"
        );
    }

    #[test]
    fn default_cloud_uses_os_cloud_when_not_configured() {
        let file = three_clouds();
        assert_eq!(
            file.default_cloud(None, Some("alpha")).unwrap(),
            ("alpha".to_string(), None)
        );
        let err = file.default_cloud(None, Some("gone")).unwrap_err();
        assert!(matches!(
            err,
            CloudsError::UnknownCloud {
                named_by: "OS_CLOUD",
                ..
            }
        ));
    }

    #[test]
    fn default_cloud_is_the_only_cloud() {
        let file = only_cloud_file();
        assert_eq!(
            file.default_cloud(None, None).unwrap(),
            ("solo".to_string(), None)
        );
        assert_eq!(
            file.default_cloud(None, Some("")).unwrap(),
            ("solo".to_string(), None)
        );
    }

    fn only_cloud_file() -> CloudsFile {
        parse("clouds:\n  solo: {auth: {auth_url: 'https://k/v3', user_id: u, password: p}}\n")
            .unwrap()
    }

    #[test]
    fn default_cloud_is_the_first_of_several_with_a_warning() {
        let (name, warning) = three_clouds().default_cloud(None, None).unwrap();
        assert_eq!(name, "zeta");
        let warning = warning.unwrap();
        assert!(warning.contains("several clouds"), "{warning}");
        assert!(warning.contains("'zeta'"), "{warning}");
        assert!(warning.contains("default_cloud"), "{warning}");
    }

    #[test]
    fn default_cloud_of_an_empty_file_is_an_error() {
        let file = parse("clouds: {}\n").unwrap();
        assert!(matches!(
            file.default_cloud(None, None).unwrap_err(),
            CloudsError::NoClouds { .. }
        ));
        assert!(matches!(
            file.default_cloud(Some("x"), None).unwrap_err(),
            CloudsError::NoClouds { .. }
        ));
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let file = CloudsFile::parse(
            r#"
clouds:
  pw:
    auth: {auth_url: "https://k/v3", username: a, password: PASSWORD-VALUE-1, project_name: p}
  ac:
    auth_type: v3applicationcredential
    auth: {auth_url: "https://k/v3", application_credential_id: i, application_credential_secret: SECRET-VALUE-2}
  tok:
    auth_type: token
    auth: {auth_url: "https://k/v3", token: TOKEN-VALUE-3}
"#,
            None,
            None,
        )
        .unwrap();
        let debug = format!("{file:?} {file:#?}");
        for secret in ["PASSWORD-VALUE-1", "SECRET-VALUE-2", "TOKEN-VALUE-3"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("***"));
    }
}
