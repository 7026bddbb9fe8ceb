//! The config's unit tests: defaults, every key, ranges, and the errors' words.

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
        Some(Path::new("/var/lib/openstack-image-helper/clouds.yaml"))
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
        defaults.image_name_template.to_string(),
        "{base}-{app_name}-{arch}"
    );
    assert_eq!(defaults.token_refresh_margin, Duration::from_secs(600));
    assert_eq!(defaults.stale_upload_age, Duration::from_secs(3600));
    assert_eq!(defaults.reaper_interval, Duration::from_secs(300));
    assert_eq!(defaults.upload_stall_timeout, Duration::from_secs(300));
    assert!(!defaults.allow_non_loopback);
    assert_eq!(defaults.log_format, LogFormat::Text);
    assert_eq!(defaults.max_concurrent_uploads, 4);
    assert_eq!(defaults.job_retention, Duration::from_secs(24 * 3600));
    assert_eq!(defaults.activation_timeout, Duration::from_secs(30 * 60));
    assert_eq!(defaults.shutdown_grace, Duration::from_secs(10 * 60));
    assert_eq!(defaults.max_queued_uploads, 64);
    assert_eq!(defaults.upload_attempts, 3);
    assert_eq!(defaults.upload_retry_backoff, Duration::from_secs(2));
    assert_eq!(defaults.import_timeout, Duration::from_secs(30 * 60));
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
max_concurrent_uploads: 2
job_retention: 1h
activation_timeout: 5m
shutdown_grace: 0s
max_queued_uploads: 10000
upload_attempts: 1
upload_retry_backoff: 1s
import_timeout: 1h
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
    assert_eq!(config.max_concurrent_uploads, 2);
    assert_eq!(config.job_retention, Duration::from_secs(3600));
    assert_eq!(config.activation_timeout, Duration::from_secs(300));
    assert_eq!(config.shutdown_grace, Duration::ZERO);
    assert_eq!(config.max_queued_uploads, 10000);
    assert_eq!(config.upload_attempts, 1);
    assert_eq!(config.upload_retry_backoff, Duration::from_secs(1));
    assert_eq!(config.import_timeout, Duration::from_secs(3600));
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
    // The known keys come from the struct, in the contract's order.
    assert!(
        message.contains("known keys: listen, clouds_yaml, default_cloud,"),
        "{message}"
    );
    assert!(message.contains("shutdown_grace"), "{message}");
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
fn a_bad_value_is_named_by_key_and_line_with_what_was_expected() {
    let err = parse("listen: 127.0.0.1:8427\n\nreaper_interval: 600\n").unwrap_err();
    assert!(matches!(
        err,
        ConfigError::InvalidValue {
            key: "reaper_interval",
            line: 3,
            ..
        }
    ));
    let message = err.to_string();
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("key 'reaper_interval'"), "{message}");
    assert!(message.contains("a duration such as"), "{message}");
    assert!(!message.contains("reaper_interval: "), "{message}");

    let err = parse("log_format: xml\n").unwrap_err().to_string();
    assert!(err.contains("`text`") && err.contains("`json`"), "{err}");
}

#[test]
fn durations_too_long_for_the_clock_are_an_error_not_a_panic() {
    for value in [
        "1e19s",
        "18446744073709551615s",
        "99999999999999999999999s",
        "200years",
    ] {
        for key in ["reaper_interval", "token_refresh_margin", "shutdown_grace"] {
            let err = parse(&format!("{key}: {value}\n")).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: k, .. } if *k == key),
                "{key}: {value}: {err}"
            );
        }
    }
    assert_eq!(
        parse("job_retention: 99years\n").unwrap().job_retention,
        humantime::parse_duration("99years").unwrap()
    );
}

#[test]
fn zero_durations_are_rejected_where_they_make_no_sense() {
    for key in [
        "reaper_interval",
        "upload_stall_timeout",
        "stale_upload_age",
        "job_retention",
        "activation_timeout",
        "upload_retry_backoff",
        "import_timeout",
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
        ("listen: example.com:80\n", "listen"),
        ("default_cloud: ''\n", "default_cloud"),
        ("upload_dirs: [/srv/a, '']\n", "upload_dirs"),
        ("max_concurrent_uploads: 0\n", "max_concurrent_uploads"),
        ("max_concurrent_uploads: -1\n", "max_concurrent_uploads"),
        ("max_concurrent_uploads: many\n", "max_concurrent_uploads"),
        ("max_concurrent_uploads: 1e30\n", "max_concurrent_uploads"),
        ("max_queued_uploads: 2.5\n", "max_queued_uploads"),
        ("upload_attempts: [3]\n", "upload_attempts"),
        ("upload_attempts: true\n", "upload_attempts"),
        ("import_timeout: 30\n", "import_timeout"),
    ] {
        let err = parse(text).unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key: k, .. } if *k == key),
            "{text}: {err}"
        );
    }
}

/// The value of `key` refused: its key, its line and the reason's text.
fn refused(text: &str) -> (&'static str, usize, String) {
    match parse(text) {
        Err(err @ ConfigError::InvalidValue { key, line, .. }) => (key, line, err.to_string()),
        other => panic!("{text:?} was not refused as a value: {other:?}"),
    }
}

#[test]
fn counts_outside_their_range_are_refused_naming_the_key_the_line_and_the_range() {
    for (key, min, max) in [
        ("max_concurrent_uploads", 1, 64),
        ("max_queued_uploads", 1, 10000),
        ("upload_attempts", 1, 10),
    ] {
        for ok in [min, max] {
            let config = parse(&format!("{key}: {ok}\n")).unwrap();
            let got = match key {
                "max_concurrent_uploads" => config.max_concurrent_uploads,
                "max_queued_uploads" => config.max_queued_uploads,
                _ => config.upload_attempts,
            };
            assert_eq!(got, ok, "{key}");
        }
        for bad in [
            (max + 1).to_string(),
            "0".to_string(),
            "-1".to_string(),
            "1e30".to_string(),
            "4.0".to_string(),
            "18446744073709551616".to_string(),
            "9223372036854775807".to_string(),
            "-9223372036854775808".to_string(),
            "99999999999999999999999999999999999999999".to_string(),
            "many".to_string(),
        ] {
            let text = format!("log_format: text\n\n{key}: {bad}\n");
            let (k, line, message) = refused(&text);
            assert_eq!((k, line), (key, 3), "{text}: {message}");
            assert!(
                message.contains(&format!("from {min} to {max}")),
                "{text}: {message}"
            );
        }
    }
}

#[test]
fn durations_are_from_one_second_to_100_years_unless_the_key_allows_zero() {
    let durations = [
        ("token_refresh_margin", true),
        ("stale_upload_age", false),
        ("reaper_interval", false),
        ("upload_stall_timeout", false),
        ("job_retention", false),
        ("activation_timeout", false),
        ("shutdown_grace", true),
        ("upload_retry_backoff", false),
        ("import_timeout", false),
    ];
    for (key, zero_allowed) in durations {
        parse(&format!("{key}: 1s\n")).unwrap();
        parse(&format!("{key}: 100years\n")).unwrap();
        for below in ["0s", "500ms", "999ms"] {
            let text = format!("{key}: {below}\n");
            match parse(&text) {
                Ok(_) => assert!(zero_allowed, "{text} was taken"),
                Err(ConfigError::InvalidValue {
                    key: k, line: 1, ..
                }) => {
                    assert!(!zero_allowed, "{text} was refused");
                    assert_eq!(k, key);
                }
                Err(other) => panic!("{text}: {other}"),
            }
        }
        let (k, line, message) = refused(&format!("{key}: 101years\n"));
        assert_eq!((k, line), (key, 1), "{message}");
        assert!(message.contains("100 years"), "{message}");
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
