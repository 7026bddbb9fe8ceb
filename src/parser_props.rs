//! Property tests of the parsers that take input from outside: the upload request,
//! the daemon config and clouds.yaml. Whatever arrives, each gives a value or a
//! clear error, never a panic; and what they accept keeps their promises (no
//! duration that overflows the clock, no secret quoted back).
//!
//! Inputs mix near-valid values (the known keys, real bases and arches, duration
//! words with huge numbers) with arbitrary ones, so that the cases reach past the
//! first check. 256 cases each keep `cargo test --lib` fast.

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::api::UploadFields;
use crate::clouds::CloudsFile;
use crate::config::{Config, ConfigError};
use crate::images::names::ImageFamily;
use crate::images::UploadRequest;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        ".{0,40}".prop_map(Json::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for an upload field: often one that passes, else anything.
fn upload_value(key: &'static str) -> BoxedStrategy<Json> {
    let near: BoxedStrategy<Json> = match key {
        "base" => prop::sample::select(vec![
            "jammy", "22.04", "noble", "focal", "resolute", "bionic", "",
        ])
        .prop_map(Json::from)
        .boxed(),
        "arch" => prop::sample::select(vec!["x64", "arm64", "s390x", "ppc64le", "amd64"])
            .prop_map(Json::from)
            .boxed(),
        "app_name" => prop_oneof![
            3 => "[a-z][a-z0-9]{0,8}(-[a-z][a-z0-9]{0,4}){0,2}",
            1 => "[a-z0-9-]{0,70}",
        ]
        .prop_map(Json::from)
        .boxed(),
        "num_revisions" => prop_oneof![
            1 => Just(Json::from(0)),
            6 => (1u32..10).prop_map(Json::from),
            1 => any::<i64>().prop_map(Json::from),
        ]
        .boxed(),
        "src_path" => "(/[a-z.]{0,8}){0,4}".prop_map(Json::from).boxed(),
        "disk_format" => prop::sample::select(vec!["qcow2", "raw", "vmdk", "qcow3"])
            .prop_map(Json::from)
            .boxed(),
        "container_format" => prop::sample::select(vec!["bare", "ovf", "docker", "box"])
            .prop_map(Json::from)
            .boxed(),
        "visibility" => {
            prop::sample::select(vec!["private", "public", "shared", "community", "all"])
                .prop_map(Json::from)
                .boxed()
        }
        "properties" => prop::collection::btree_map(
            prop_oneof![
                1 => Just("architecture".to_string()),
                1 => Just("name".to_string()),
                1 => ".{0,300}",
                6 => "[a-z_]{1,12}",
            ],
            ".{0,20}",
            0..3,
        )
        .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k, Json::from(v))).collect()))
        .boxed(),
        "tags" => prop::collection::vec(prop_oneof![6 => "[a-z:-]{1,12}", 1 => ".{0,300}"], 0..24)
            .prop_map(Json::from)
            .boxed(),
        _ => prop_oneof![4 => "[a-z-]{1,8}", 1 => ".{0,20}"]
            .prop_map(Json::from)
            .boxed(),
    };
    prop_oneof![4 => near, 1 => any_json()].boxed()
}

const UPLOAD_KEYS: &[&str] = &[
    "base",
    "app_name",
    "arch",
    "num_revisions",
    "src_path",
    "cloud",
    "disk_format",
    "container_format",
    "visibility",
    "properties",
    "tags",
];

/// An upload request body: most known keys, sometimes an unknown one.
fn upload_body() -> impl Strategy<Value = Json> {
    let fields: Vec<_> = UPLOAD_KEYS
        .iter()
        .map(|key| {
            let required = ["base", "app_name", "arch", "num_revisions", "src_path"];
            let weight = if required.contains(key) { 0.95 } else { 0.4 };
            prop::option::weighted(weight, upload_value(key)).prop_map(move |v| (*key, v))
        })
        .collect();
    (
        fields,
        prop::option::weighted(0.1, ("[a-z_]{1,10}", any_json())),
    )
        .prop_map(|(fields, extra)| {
            let mut body = serde_json::Map::new();
            for (key, value) in fields {
                if let Some(value) = value {
                    body.insert(key.to_string(), value);
                }
            }
            if let Some((key, value)) = extra {
                body.insert(key, value);
            }
            Json::Object(body)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_upload_request_is_a_value_or_a_field_error(body in upload_body()) {
        let Ok(fields) = serde_json::from_value::<UploadFields>(body) else {
            return Ok(());
        };
        if let Ok(request) = UploadRequest::parse(fields) {
            prop_assert!(request.num_revisions >= 1);
            prop_assert!(!request.properties.contains_key("architecture"));
        }
    }

    #[test]
    fn an_upload_body_of_any_text_never_panics(text in ".{0,200}") {
        if let Ok(fields) = serde_json::from_str::<UploadFields>(&text) {
            let _ = UploadRequest::parse(fields);
        }
    }

    #[test]
    fn any_image_family_words_are_a_family_or_a_field_error(
        base in ".{0,12}", app in ".{0,70}", arch in ".{0,10}",
    ) {
        let _ = ImageFamily::parse(&base, &app, &arch);
    }
}

/// The config's keys (`Config`'s fields) and a few that are not.
const CONFIG_KEYS: &[&str] = &[
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
    "max_concurrent_uploads",
    "job_retention",
    "activation_timeout",
    "shutdown_grace",
    "max_queued_uploads",
    "upload_attempts",
    "upload_retry_backoff",
    "import_timeout",
    "listen_address",
    "timeout",
];

/// A value for a config key: often of the key's kind, else anything.
fn config_value(key: &'static str) -> BoxedStrategy<Yaml> {
    let path = || "(/[a-z]{1,6}){1,3}".prop_map(Yaml::from);
    let near: BoxedStrategy<Yaml> = match key {
        "listen" => prop::sample::select(vec![
            "127.0.0.1:8427",
            "[::1]:1",
            "localhost:99999",
            "unix:/run/x.sock",
            "0.0.0.0:1",
            "unix:",
        ])
        .prop_map(Yaml::from)
        .boxed(),
        "clouds_yaml" | "state_dir" | "api_token_file" => path().boxed(),
        "default_cloud" => prop_oneof![Just(Yaml::Null), "[a-z]{0,6}".prop_map(Yaml::from)].boxed(),
        "upload_dirs" => prop::collection::vec(path(), 0..3)
            .prop_map(Yaml::Sequence)
            .boxed(),
        "image_name_template" => prop::sample::select(vec![
            "{base}-{app_name}-{arch}",
            "{base}-{arch}",
            "{nope}",
            "x{",
        ])
        .prop_map(Yaml::from)
        .boxed(),
        "allow_non_loopback" => any::<bool>().prop_map(Yaml::from).boxed(),
        "log_format" => prop::sample::select(vec!["text", "json", "xml"])
            .prop_map(Yaml::from)
            .boxed(),
        "max_concurrent_uploads" | "max_queued_uploads" | "upload_attempts" => {
            any::<i64>().prop_map(Yaml::from).boxed()
        }
        _ => duration_word().prop_map(Yaml::from).boxed(),
    };
    prop_oneof![6 => near, 1 => any_yaml()].boxed()
}

/// A duration word: plain ones, and numbers near and past what the clock holds
/// (`1e19s`, 2^63 s and more, which `Instant + Duration` cannot take).
fn duration_word() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        3 => (0u64..1000).prop_map(|n| n.to_string()),
        2 => (1u64 << 62..=u64::MAX).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec!["1e19", "18446744073709551616", "-5", "0.5", ""])
            .prop_map(str::to_string),
    ];
    let unit = prop::sample::select(vec![
        "s", "s", "s", "m", "h", "d", "w", "M", "y", "ms", "us", "ns", "", "x",
    ]);
    (number, unit, prop::bool::weighted(0.1)).prop_map(|(n, u, twice)| {
        if twice {
            format!("{n}{u} {n}{u}")
        } else {
            format!("{n}{u}")
        }
    })
}

/// A number as a config file may hold one: small, at the edges of the
/// ranges, past what 64 bits hold, negative, fractional, in exponent form,
/// infinite, and YAML's other spellings.
fn any_number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..=12_000).prop_map(|n| n.to_string()),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        2 => any::<f64>().prop_map(|n| format!("{n:e}")),
        1 => any::<f64>().prop_map(|n| n.to_string()),
        1 => "[1-9][0-9]{19,45}",
        1 => prop::sample::select(vec![
            "1e30", "-1e30", ".inf", "-.inf", ".nan", "0x40", "0o17", "+5", "1_000", "64.0",
            "3155760000", "3155760001", "-0",
        ])
        .prop_map(str::to_string),
    ]
}

/// Whether every number of `config` is within the range the README documents.
fn in_documented_ranges(config: &Config) -> bool {
    use std::time::Duration;
    let second = Duration::from_secs(1);
    let century = Duration::from_secs(100 * 31_557_600);
    let from_one_second = [
        config.stale_upload_age,
        config.reaper_interval,
        config.upload_stall_timeout,
        config.job_retention,
        config.activation_timeout,
        config.upload_retry_backoff,
        config.import_timeout,
    ];
    from_one_second
        .iter()
        .all(|d| (second..=century).contains(d))
        && [config.token_refresh_margin, config.shutdown_grace]
            .iter()
            .all(|d| *d <= century)
        && (1..=64).contains(&config.max_concurrent_uploads)
        && (1..=10_000).contains(&config.max_queued_uploads)
        && (1..=10).contains(&config.upload_attempts)
}

/// Any YAML value, a few levels deep, with duration words among the strings.
fn any_yaml() -> impl Strategy<Value = Yaml> {
    let leaf = prop_oneof![
        Just(Yaml::Null),
        any::<bool>().prop_map(Yaml::from),
        any::<i64>().prop_map(Yaml::from),
        any::<u64>().prop_map(Yaml::from),
        any::<f64>().prop_map(Yaml::from),
        duration_word().prop_map(Yaml::from),
        prop::sample::select(vec![
            "127.0.0.1:8427",
            "unix:/run/x.sock",
            "0.0.0.0:1",
            "unix:",
            "json",
            "text",
            "{base}-{arch}"
        ])
        .prop_map(Yaml::from),
        ".{0,30}".prop_map(Yaml::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Yaml::Sequence),
            prop::collection::vec((".{0,10}".prop_map(Yaml::from), inner), 0..4)
                .prop_map(|pairs| Yaml::Mapping(pairs.into_iter().collect())),
        ]
    })
}

/// A config document of a few keys (so that many parse), each with a value of
/// its kind or anything.
fn config_document() -> impl Strategy<Value = String> {
    prop::sample::subsequence(CONFIG_KEYS.to_vec(), 0..5)
        .prop_flat_map(|keys| {
            keys.into_iter()
                .map(|key| config_value(key).prop_map(move |v| (key, v)))
                .collect::<Vec<_>>()
        })
        .prop_map(|entries| {
            let mapping: serde_yaml::Mapping = entries
                .into_iter()
                .map(|(k, v)| (Yaml::from(k), v))
                .collect();
            serde_yaml::to_string(&Yaml::Mapping(mapping)).unwrap_or_default()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_config_is_a_value_or_an_error_and_its_durations_fit_the_clock(text in config_document()) {
        if let Ok(config) = Config::from_yaml(&text, Path::new("/etc/test/config.yaml")) {
            let now = std::time::Instant::now();
            for d in [
                config.token_refresh_margin, config.stale_upload_age, config.reaper_interval,
                config.upload_stall_timeout, config.job_retention, config.activation_timeout,
                config.shutdown_grace, config.upload_retry_backoff, config.import_timeout,
            ] {
                prop_assert!(now.checked_add(d).is_some(), "{d:?} overflows the clock");
                prop_assert!(tokio::time::Instant::now().checked_add(d).is_some());
            }
            prop_assert!(!config.upload_stall_timeout.is_zero());
            prop_assert!(in_documented_ranges(&config), "{config:?}");
        }
    }

    #[test]
    fn any_number_for_any_key_is_a_value_in_range_or_an_error_naming_key_and_line(
        key in prop::sample::select(Config::keys().to_vec()),
        number in any_number(),
        unit in prop::sample::select(vec!["", "", "s", "ms", "m", "h", "y", "x"]),
        line in 1usize..4,
    ) {
        let text = format!("{}{key}: {number}{unit}\n", "\n".repeat(line - 1));
        match Config::from_yaml(&text, Path::new("/etc/test/config.yaml")) {
            Ok(config) => prop_assert!(in_documented_ranges(&config), "{text}: {config:?}"),
            Err(ConfigError::InvalidValue { key: refused, line: at, .. }) => {
                prop_assert_eq!(refused, key, "{}", text);
                prop_assert_eq!(at, line, "{}", text);
            }
            Err(other) => prop_assert!(false, "{text}: not a value error: {other}"),
        }
    }

    #[test]
    fn a_config_of_any_text_never_panics(text in ".{0,200}") {
        let _ = Config::from_yaml(&text, Path::new("/etc/test/config.yaml"));
    }
}

/// The secret keys of clouds.yaml get values with this prefix: no error and no
/// `Debug` output may quote them.
const SECRET: &str = "S3CRET-";

/// A value for a key of a cloud's `auth`: a marked secret for the secret keys.
fn auth_entry() -> impl Strategy<Value = (Yaml, Yaml)> {
    let secret = (
        prop::sample::select(vec!["password", "application_credential_secret", "token"]),
        "[a-zA-Z0-9]{8}",
    )
        .prop_map(|(k, v)| (Yaml::from(k), Yaml::from(format!("{SECRET}{v}"))));
    let other = (
        prop::sample::select(vec![
            "auth_url", "username", "user_id", "user_domain_name", "user_domain_id",
            "project_name", "project_id", "project_domain_name", "project_domain_id",
            "domain_name", "domain_id", "application_credential_id",
            "application_credential_name", "system_scope", "tenant_name",
        ]),
        prop_oneof![
            3 => prop::sample::select(vec!["http://127.0.0.1:5000/v3", "https://k/v3", "not a url", "p", "default"])
                .prop_map(Yaml::from),
            1 => any_yaml(),
        ],
    )
        .prop_map(|(k, v)| (Yaml::from(k), v));
    prop_oneof![secret, other]
}

/// A valid `auth` of one of the auth types (with its `auth_type`), its
/// entries then dropped or overridden at random.
fn auth_and_type() -> impl Strategy<Value = (Yaml, &'static str)> {
    let secret = || "[a-zA-Z0-9]{8}".prop_map(|v| Yaml::from(format!("{SECRET}{v}")));
    let url = Yaml::from("http://127.0.0.1:5000/v3");
    let password = secret().prop_map(move |pw| {
        let mut auth = serde_yaml::Mapping::new();
        auth.insert("auth_url".into(), url.clone());
        auth.insert("username".into(), "charm".into());
        auth.insert("password".into(), pw);
        auth.insert("user_domain_name".into(), "Default".into());
        auth.insert("project_name".into(), "p".into());
        auth.insert("project_domain_name".into(), "Default".into());
        (auth, "password")
    });
    let url = Yaml::from("https://k/v3");
    let appcred = secret().prop_map(move |s| {
        let mut auth = serde_yaml::Mapping::new();
        auth.insert("auth_url".into(), url.clone());
        auth.insert("application_credential_id".into(), "abc".into());
        auth.insert("application_credential_secret".into(), s);
        (auth, "v3applicationcredential")
    });
    let token = secret().prop_map(|t| {
        let mut auth = serde_yaml::Mapping::new();
        auth.insert("auth_url".into(), "https://k:5000/v3".into());
        auth.insert("token".into(), t);
        auth.insert("project_id".into(), "p".into());
        (auth, "token")
    });
    (
        prop_oneof![password, appcred, token],
        prop::collection::vec(prop::bool::weighted(0.9), 6),
        prop::collection::vec(auth_entry(), 0..3),
    )
        .prop_map(|((auth, kind), keep, extra)| {
            let mut kept: serde_yaml::Mapping = auth
                .into_iter()
                .zip(keep.into_iter().chain(std::iter::repeat(true)))
                .filter_map(|(entry, keep)| keep.then_some(entry))
                .collect();
            for (k, v) in extra {
                kept.insert(k, v);
            }
            (Yaml::Mapping(kept), kind)
        })
}

/// A cloud's settings: keys openstacksdk knows, values near-valid or anything.
fn cloud_settings() -> impl Strategy<Value = Yaml> {
    let setting = (
        prop::sample::select(vec![
            "auth_type",
            "region_name",
            "interface",
            "image_endpoint_override",
            "cacert",
            "verify",
            "insecure",
            "cert",
            "key",
            "identity_api_version",
            "compute_api_version",
        ]),
        prop_oneof![
            3 => prop::sample::select(vec![
                "password", "v3password", "v3applicationcredential", "token", "v3token",
                "v2password", "public", "internalURL", "admin", "http://g:9292",
                "/tmp/x.pem", "3",
            ])
            .prop_map(Yaml::from),
            1 => any_yaml(),
        ],
    )
        .prop_map(|(k, v)| (Yaml::from(k), v));
    (
        prop::option::weighted(0.95, auth_and_type()),
        prop::bool::weighted(0.8),
        prop::collection::vec(setting, 0..3),
    )
        .prop_map(|(auth, typed, settings)| {
            let mut cloud = serde_yaml::Mapping::new();
            if let Some((auth, kind)) = auth {
                cloud.insert("auth".into(), auth);
                if typed {
                    cloud.insert("auth_type".into(), kind.into());
                }
            }
            for (k, v) in settings {
                cloud.insert(k, v);
            }
            Yaml::Mapping(cloud)
        })
}

/// A clouds.yaml document: mostly clouds.yaml-shaped, sometimes anything.
fn clouds_document() -> impl Strategy<Value = String> {
    let clouds = prop::collection::vec(
        (
            prop_oneof![3 => "[a-z-]{1,8}".prop_map(Yaml::from), 1 => any_yaml()],
            cloud_settings(),
        ),
        0..4,
    )
    .prop_map(|pairs| {
        let mut doc = serde_yaml::Mapping::new();
        doc.insert("clouds".into(), Yaml::Mapping(pairs.into_iter().collect()));
        Yaml::Mapping(doc)
    });
    prop_oneof![6 => clouds, 1 => any_yaml()]
        .prop_map(|doc| serde_yaml::to_string(&doc).unwrap_or_default())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_clouds_document_is_a_value_or_an_error_that_quotes_no_secret(
        text in clouds_document(),
        secure in prop::option::weighted(0.2, clouds_document()),
    ) {
        let seen = match CloudsFile::parse(&text, secure.as_deref(), None) {
            Ok(file) => format!("{file:?}"),
            Err(err) => format!("{err} {err:?}"),
        };
        prop_assert!(!seen.contains(SECRET), "a secret was quoted: {seen}");
    }

    #[test]
    fn a_clouds_document_of_any_text_never_panics(text in ".{0,200}") {
        let _ = CloudsFile::parse(&text, None, None);
    }
}
