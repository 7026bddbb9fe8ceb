//! The auth types of clouds.yaml and openstacksdk's rules for which domain a user
//! or project named without one belongs to.

use serde_yaml::{Mapping, Value};
use url::Url;

use super::settings::CloudContext;
use super::CloudsError;
use crate::secret::Secret;

/// Keystone's default domain id, used when a user or project is named without
/// a domain (as keystoneauth and the `openstack` CLI do).
pub(crate) const DEFAULT_DOMAIN_ID: &str = "default";

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
    pub(crate) fn auth_url(&self) -> &Url {
        match self {
            Auth::Password { auth_url, .. }
            | Auth::ApplicationCredential { auth_url, .. }
            | Auth::Token { auth_url, .. } => auth_url,
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

impl CloudContext<'_> {
    /// The `auth_type` and `auth:` mapping.
    pub(super) fn auth(&self, settings: &Mapping) -> Result<Auth, CloudsError> {
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
    use crate::clouds::tests::{only_cloud, parse, url};
    use crate::clouds::{Interface, TlsSettings};

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
        assert!(matches!(cloud.auth, Auth::Password { .. }));
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
        assert!(matches!(cloud.auth, Auth::ApplicationCredential { .. }));
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
            assert!(matches!(cloud.auth, Auth::Token { .. }));
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
}
