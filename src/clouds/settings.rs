//! One clouds.yaml document (with secure.yaml merged over it) to a [`CloudsFile`]:
//! each cloud's keys read and checked, none quoted back in an error.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};
use url::Url;

use super::{CloudConfig, CloudsError, CloudsFile, Interface, TlsSettings};
use crate::image_fields::DiskFormat;

impl CloudsFile {
    /// Parses a clouds.yaml document (YAML, or JSON, which is YAML), with an
    /// optional secure.yaml document deep-merged over it: mappings are merged
    /// key by key, anything else in secure.yaml replaces what clouds.yaml had.
    /// `origin` is the file the document came from, for messages.
    pub(crate) fn parse(
        text: &str,
        secure: Option<&str>,
        origin: Option<&Path>,
    ) -> Result<CloudsFile, CloudsError> {
        from_documents((text, origin), secure.map(|text| (text, None)))
    }
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
pub(super) fn from_documents(
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
pub(super) struct CloudContext<'a> {
    /// The file, `None` for an in-memory document.
    pub(super) path: &'a Option<PathBuf>,
    /// The cloud's name.
    pub(super) name: &'a str,
}

impl CloudContext<'_> {
    pub(super) fn missing(&self, key: &str) -> CloudsError {
        CloudsError::Missing {
            path: self.path.clone(),
            cloud: self.name.to_string(),
            key: key.to_string(),
        }
    }

    pub(super) fn invalid(&self, key: &str, reason: impl Into<String>) -> CloudsError {
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
    pub(super) fn string(
        &self,
        map: &Mapping,
        key: &str,
        label: &str,
    ) -> Result<Option<String>, CloudsError> {
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
    pub(super) fn url(
        &self,
        map: &Mapping,
        key: &str,
        label: &str,
    ) -> Result<Option<Url>, CloudsError> {
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
            upload: self.upload_settings(settings)?,
            image_format: self.image_format(settings)?,
        })
    }

    /// `image_format`: one of Glance's disk formats (the upload checks that
    /// the file can be made into it).
    fn image_format(&self, settings: &Mapping) -> Result<Option<DiskFormat>, CloudsError> {
        const KEY: &str = "image_format";
        let Some(text) = self.string(settings, KEY, KEY)? else {
            return Ok(None);
        };
        let format = text.trim().to_ascii_lowercase().parse::<DiskFormat>();
        format.map(Some).map_err(|reason| self.invalid(KEY, reason))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clouds::tests::{only_cloud, parse, url};
    use crate::clouds::{Auth, UserRef};

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
    fn image_format_is_read_as_a_disk_format() {
        let with = |value: &str| {
            parse(&format!(
                "clouds:\n  c:\n    image_format: {value}\n    auth: {{auth_url: 'https://k/v3', user_id: u, password: p}}\n"
            ))
        };
        let format = |value: &str| with(value).unwrap().get("c").unwrap().image_format;
        assert_eq!(format("raw"), Some(DiskFormat::Raw));
        assert_eq!(format("'QCOW2'"), Some(DiskFormat::Qcow2));
        assert_eq!(format("''"), None);
        let none = only_cloud(
            "clouds:\n  c:\n    auth: {auth_url: 'https://k/v3', user_id: u, password: p}\n",
        );
        assert_eq!(none.image_format, None);
        for bad in ["rawr", "[raw]", "3"] {
            let err = with(bad).unwrap_err();
            assert!(
                matches!(&err, CloudsError::Invalid { key, .. } if key == "image_format"),
                "{bad}: {err}"
            );
        }
        let message = with("rawr").unwrap_err().to_string();
        assert!(message.contains("'rawr' is not one of"), "{message}");
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
}
