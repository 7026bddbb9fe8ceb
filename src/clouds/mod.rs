//! clouds.yaml (and secure.yaml) in openstacksdk's format.
//!
//! The charm already writes clouds.yaml for openstacksdk and the `openstack`
//! CLI, so the daemon reads the same file the same way: the same search path,
//! the same auth types and key names, secure.yaml merged over it where
//! openstacksdk merges it (the search path only: a file named in the config,
//! or sent to `PUT /v1/clouds`, is read alone), and unknown
//! keys ignored (openstacksdk's files carry many keys this daemon has no use
//! for, such as `compute_api_version`).
//!
//! The document is walked by hand rather than derived with serde so that every
//! error can name the file, the cloud and the key, and so that no error ever
//! quotes a value that might be a secret.
//!
//! - [`search`]: where the files are (a path given, or openstacksdk's search path with its secure.yaml).
//! - [`settings`]: one document to [`CloudsFile`]: secure.yaml merged, each cloud's keys read.
//! - [`auth`]: the auth types and the rules that name users, projects and domains.

mod auth;
mod search;
mod settings;
mod upload_settings;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use url::Url;

use crate::image_fields::DiskFormat;

pub use auth::{AppCredential, Auth, DomainRef, ProjectRef, Scope, UserRef};
pub(crate) use upload_settings::UploadMethod;
pub use upload_settings::UploadSettings;

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
    /// `image_upload_method` and `image_stores`: how images reach this Glance.
    pub upload: UploadSettings,
    /// `image_format` (openstacksdk's key): the disk format the cloud wants
    /// (`raw` on Ceph-backed clouds); a file of another format is converted
    /// before upload. `None`: the file's own format.
    pub(crate) image_format: Option<DiskFormat>,
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
    pub(crate) fn as_str(&self) -> &'static str {
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

impl CloudsFile {
    /// The cloud with this name.
    pub fn get(&self, name: &str) -> Option<&CloudConfig> {
        self.clouds.iter().find(|cloud| cloud.name == name)
    }

    /// The clouds' names, in file order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.clouds.iter().map(|cloud| cloud.name.clone()).collect()
    }

    /// The cloud used when a request names none, and a warning to log when
    /// the choice was a guess.
    ///
    /// `configured` (the config's `default_cloud`) wins and must exist; else
    /// `os_cloud` (the `OS_CLOUD` variable) when set, which must exist too (a
    /// silent fallback would upload to the wrong cloud); else the only cloud;
    /// else the first in file order, with a warning.
    pub(crate) fn default_cloud(
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(text: &str) -> Result<CloudsFile, CloudsError> {
        CloudsFile::parse(text, None, Some(Path::new("/etc/x/clouds.yaml")))
    }

    pub(super) fn only_cloud(text: &str) -> CloudConfig {
        let file = parse(text).unwrap();
        assert_eq!(file.clouds.len(), 1);
        file.clouds[0].clone()
    }

    pub(super) fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
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
