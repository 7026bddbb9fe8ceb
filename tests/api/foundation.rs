//! The API's basics: health, status, auth, body rules, start-up rules, shutdown.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn health_answers_without_a_token_and_everything_else_wants_one() {
    let d = spawn_daemon(&Bed::get().clouds_document(), |_| {}).await;
    let health = d.send(d.http.get(format!("{}/v1/health", d.base))).await;
    assert_eq!(
        (health.status, health.body.clone()),
        (
            200,
            json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "api": 1})
        )
    );
    assert_eq!(health.body["version"], "0.3.0", "this release's version");

    let no_token = d.send(d.http.get(format!("{}/v1/status", d.base))).await;
    no_token.expect(401, "unauthorized");
    let wrong = d
        .send(
            d.http
                .get(format!("{}/v1/status", d.base))
                .bearer_auth("not-the-token"),
        )
        .await;
    wrong.expect(401, "unauthorized");
    let latest = d
        .send(d.http.get(format!(
            "{}/v1/images/latest?base=jammy&app_name=a&arch=x64",
            d.base
        )))
        .await;
    assert_eq!(latest.status, 401);
}

#[tokio::test]
async fn state_dir_and_token_file_are_created_private() {
    let d = spawn_daemon(&Bed::get().clouds_document(), |_| {}).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.config.state_dir), 0o700);
    assert_eq!(mode(&d.config.api_token_file), 0o600);
    assert!(d.token.len() >= 32);
}

#[tokio::test]
async fn password_and_application_credential_clouds_authenticate() {
    let bed = Bed::get();
    let d = spawn_daemon(&bed.clouds_document(), |_| {}).await;
    for cloud in ["charm", "charm-appcred"] {
        let s = d.wait_authenticated(cloud, Duration::from_secs(30)).await;
        assert_eq!(s["last_error"], serde_json::Value::Null);
        assert_eq!(s["image_endpoint"], format!("{}/", bed.glance_url), "{s}");
        let expires: chrono::DateTime<chrono::Utc> =
            s["token_expires_at"].as_str().unwrap().parse().unwrap();
        assert!(expires > chrono::Utc::now());
    }
    let status = d.status().await;
    let names: Vec<&str> = status["clouds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["charm", "charm-appcred", "admin"],
        "exactly the configured clouds"
    );
    assert_eq!(status["uploads_in_flight"], 0);
    // No secret of the clouds.yaml and no token in the status answer.
    let text = status.to_string();
    for secret in ["osih-charm-secret", "osih-admin-secret"] {
        assert!(!text.contains(secret));
    }
    let appcred_secret = bed.cloud_entry("charm-appcred")["auth"]["application_credential_secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.contains(&appcred_secret));
}

#[tokio::test]
async fn a_wrong_password_names_the_cloud_and_never_the_secret() {
    let mut entry = Bed::get().cloud_entry("charm");
    entry["auth"]["password"] = "wrong-horse-battery".into();
    let d = spawn_daemon(&clouds_document(&[("bad-cloud", entry)]), |_| {}).await;
    // The session reports the failure in status...
    let status = d.wait_for_error("bad-cloud", Duration::from_secs(20)).await;
    assert_eq!(status["authenticated"], false);
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains("bad-cloud") && error.contains("401"),
        "{error}"
    );
    assert!(!error.contains("wrong-horse-battery"));
    // ...and a request on it gets the contract's code with the same cause.
    let a = d.latest("runner", None).await;
    a.expect(422, "openstack_unauthorized");
    assert!(a.message().contains("bad-cloud"));
    assert!(!a.body.to_string().contains("wrong-horse-battery"));
}

#[tokio::test]
async fn body_rules_give_the_contracts_codes() {
    let d = spawn_daemon(&Bed::get().clouds_document(), |_| {}).await;
    let post = |body: String| {
        d.authed(reqwest::Method::POST, "/v1/images")
            .header("content-type", "application/json")
            .body(body)
    };
    let big = format!("{{\"base\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let a = d.send(post(big)).await;
    a.expect(413, "request_too_large");
    let a = d.send(post("{not json".into())).await;
    a.expect(400, "invalid_request");
    let a = d
        .send(post(
            json!({"base": "jammy", "app_name": "a", "arch": "x64", "num_revisions": "two", "src_path": "/x"})
                .to_string(),
        ))
        .await;
    a.expect(400, "invalid_request");
    assert!(a.message().contains("num_revisions"), "{}", a.message());
    let a = d
        .send(post(
            json!({"base": "jammy", "app_name": "a", "arch": "x64", "num_revisions": 2, "src_path": "/x", "colour": "red"})
                .to_string(),
        ))
        .await;
    a.expect(400, "invalid_request");
    assert!(a.message().contains("colour"), "{}", a.message());
    let a = d
        .send(
            d.authed(reqwest::Method::PUT, "/v1/clouds")
                .body("x".repeat(2 * 1024 * 1024)),
        )
        .await;
    a.expect(413, "request_too_large");
}

fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"))
}

/// Runs `serve` with `config` written to DIR/config.yaml, to see how it refuses to start.
fn serve_refused(dir: &std::path::Path, config: &str) -> (Option<i32>, String) {
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let out = binary()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_token_file_readable_by_others_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api-token");
    std::fs::write(&token, "sometoken\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = serve_refused(
        dir.path(),
        &format!(
            "listen: 127.0.0.1:0\nstate_dir: {d}/state\napi_token_file: {t}\nclouds_yaml: {d}/none.yaml\nupload_dirs: [{d}/images]\n",
            d = dir.path().display(),
            t = token.display()
        ),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("api-token") && stderr.contains("600"),
        "{stderr}"
    );
    assert!(!stderr.contains("sometoken"));
}

#[test]
fn a_non_loopback_listen_must_be_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = serve_refused(
        dir.path(),
        &format!(
            "listen: 0.0.0.0:0\nstate_dir: {}/state\n",
            dir.path().display()
        ),
    );
    assert_eq!(code, Some(2), "a config no restart can mend");
    assert!(stderr.contains("allow_non_loopback"), "{stderr}");
}

#[test]
fn an_unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = serve_refused(dir.path(), "listne: 127.0.0.1:8427\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("listne"), "{stderr}");
}

#[test]
fn a_number_out_of_its_range_stops_the_start_with_exit_2_naming_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let head = format!(
        "listen: 127.0.0.1:0\nstate_dir: {d}/state\nclouds_yaml: {d}/none.yaml\n",
        d = dir.path().display()
    );
    for (line, key) in [
        ("max_concurrent_uploads: 65", "max_concurrent_uploads"),
        (
            "max_concurrent_uploads: 9999999999999999999",
            "max_concurrent_uploads",
        ),
        ("max_concurrent_uploads: 1e30", "max_concurrent_uploads"),
        ("max_queued_uploads: 10001", "max_queued_uploads"),
        ("upload_attempts: 0", "upload_attempts"),
        ("upload_retry_backoff: 0s", "upload_retry_backoff"),
        ("reaper_interval: 500ms", "reaper_interval"),
        ("import_timeout: 101y", "import_timeout"),
        ("shutdown_grace: 1e19s", "shutdown_grace"),
    ] {
        let (code, stderr) = serve_refused(dir.path(), &format!("{head}\n{line}\n"));
        assert_eq!(code, Some(2), "{line}: {stderr}");
        assert!(
            stderr.contains(&format!("line 5: key '{key}'")),
            "{line}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{line}: {stderr}");
    }
    // Nothing was started: no state dir made.
    assert!(!dir.path().join("state").exists());
    // A config file that cannot be read may be there at the next try: exit 1.
    let out = binary()
        .args(["serve", "--config"])
        .arg(dir.path().join("absent.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn sigterm_stops_the_daemon_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {d}/state\napi_token_file: {d}/state/api-token\nclouds_yaml: {d}/none.yaml\nupload_dirs: [{d}/images]\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut child = binary()
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "daemon did not listen");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_shipped_config_is_every_default() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.yaml");
    let shipped = openstack_image_helper::config::Config::load(&path).unwrap();
    assert_eq!(shipped, openstack_image_helper::config::Config::default());
}

/// The daemon's own log, at debug level, while a cloud's credentials are refused
/// and another cloud authenticates and serves a query: it names the cloud and the
/// cause, and holds no password, secret or token.
#[tokio::test]
async fn no_secret_reaches_the_log() {
    let bed = Bed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut bad = bed.cloud_entry("charm");
    bad["auth"]["password"] = "pw-that-must-not-leak".into();
    std::fs::write(
        root.join("clouds.yaml"),
        clouds_document(&[("good", bed.cloud_entry("charm")), ("bad-creds", bad)]),
    )
    .unwrap();
    let port = free_port();
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {d}/state\napi_token_file: {d}/state/api-token\nclouds_yaml: {d}/clouds.yaml\nupload_dirs: [{d}/images]\ndefault_cloud: good\n",
            d = root.display()
        ),
    )
    .unwrap();
    let child = binary()
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut answered = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(token) = std::fs::read_to_string(root.join("state/api-token")) else {
            continue;
        };
        let Ok(r) = http
            .get(format!(
                "{base}/v1/images/latest?base=jammy&app_name=leak-probe&arch=x64"
            ))
            .bearer_auth(token.trim())
            .send()
            .await
        else {
            continue;
        };
        assert_eq!(r.status(), 200);
        answered = true;
        break;
    }
    assert!(answered, "the daemon did not answer");
    // Let the bad cloud's failure reach the log.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api_token = std::fs::read_to_string(root.join("state/api-token")).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("bad-creds") && log.contains("401"), "{log}");
    assert!(
        log.contains("authenticated") && log.contains("good"),
        "{log}"
    );
    for secret in [
        "pw-that-must-not-leak",
        "osih-charm-secret",
        api_token.trim(),
        "gAAAAA",
    ] {
        assert!(!log.contains(secret), "the log holds a secret ({secret})");
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = serve_refused(
        dir.path(),
        &format!(
            "log_format: json\nlisten: 0.0.0.0:0\nstate_dir: {}/state\n",
            dir.path().display()
        ),
    );
    assert_eq!(code, Some(2));
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let error = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .expect("an error line");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("allow_non_loopback"),
        "{error}"
    );
}

#[tokio::test]
async fn every_answer_is_json_and_the_bearer_scheme_is_case_insensitive() {
    let d = spawn_daemon(&Bed::get().clouds_document(), |_| {}).await;
    let url = |path: &str| format!("{}{path}", d.base);
    // A method the endpoint does not take, with and without a token.
    for request in [
        d.http
            .delete(url("/v1/images/latest"))
            .bearer_auth(&d.token),
        d.http.put(url("/v1/health")),
        d.http.get(url("/v1/images")).bearer_auth(&d.token),
    ] {
        let a = d.send(request).await;
        assert!(a.status == 405 || a.status == 401, "{a:?}");
        assert!(
            a.body["error"]["code"].is_string(),
            "not the contract's JSON: {a:?}"
        );
    }
    let a = d
        .send(
            d.http
                .delete(url("/v1/images/latest"))
                .bearer_auth(&d.token),
        )
        .await;
    a.expect(405, "method_not_allowed");
    let a = d
        .send(d.http.get(url("/v2/nothing")).bearer_auth(&d.token))
        .await;
    a.expect(404, "not_found");

    for scheme in ["bearer", "BEARER", "Bearer"] {
        let a = d
            .send(
                d.http
                    .get(url("/v1/status"))
                    .header("Authorization", format!("{scheme} {}", d.token)),
            )
            .await;
        assert_eq!(a.status, 200, "{scheme}: {a:?}");
    }
}

/// A request and the answer wanted: method, path, content type and body, and
/// the status and code (`None`: any JSON error).
type Case = (
    reqwest::Method,
    &'static str,
    Option<(&'static str, reqwest::Body)>,
    Option<(u16, &'static str)>,
);

/// Each route with a malformed path, query or body: every error answer is the
/// contract's JSON (`{"error": {"code", "message"}}`, `application/json`), and a
/// rejection of the request's own form is `400 invalid_request`.
#[tokio::test]
async fn every_route_answers_a_malformed_path_query_or_body_in_json() {
    let d = spawn_daemon(&Bed::get().clouds_document(), |_| {}).await;
    let url = |path: &str| format!("{}{path}", d.base);
    let json_body = |body: &'static [u8]| ("application/json", reqwest::Body::from(body.to_vec()));
    let upload = br#"{"base": "jammy", "app_name": "a", "arch": "x64", "num_revisions": 1, "src_path": "/x"}"#;
    let not_utf8: &'static [u8] = b"\xff\xfe{\"clouds\": {}}";
    let cases: Vec<Case> = vec![
        (
            reqwest::Method::GET,
            "/v1/jobs/%FF",
            None,
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::GET,
            "/v1/jobs/%C3%28",
            None,
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::GET,
            "/v1/jobs/%FF?x=%FF",
            None,
            Some((400, "invalid_request")),
        ),
        (reqwest::Method::GET, "/v1/jobs/not-a-job", None, None),
        (
            reqwest::Method::GET,
            "/v1/jobs%FF",
            None,
            Some((404, "not_found")),
        ),
        (
            reqwest::Method::GET,
            "/v1/images/latest?base=%FF&app_name=a&arch=x64",
            None,
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::GET,
            "/v1/images/latest?base=jammy&base=noble&app_name=a&arch=x64",
            None,
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::GET,
            "/v1/images/latest?base",
            None,
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::GET,
            "/v1/images/latest%FF?base=jammy",
            None,
            Some((404, "not_found")),
        ),
        (
            reqwest::Method::POST,
            "/v1/images?wait=maybe",
            Some(json_body(upload)),
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::POST,
            "/v1/images?wait=%FF",
            Some(json_body(upload)),
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::POST,
            "/v1/images",
            Some(json_body(b"\xff\xfe")),
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::POST,
            "/v1/images",
            Some(("text/plain", reqwest::Body::from(upload.to_vec()))),
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::POST,
            "/v1/images",
            None,
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::POST,
            "/v1/images/%FF",
            Some(json_body(upload)),
            Some((404, "not_found")),
        ),
        (
            reqwest::Method::PUT,
            "/v1/clouds",
            Some(("application/yaml", reqwest::Body::from(not_utf8))),
            Some((400, "invalid_request")),
        ),
        (
            reqwest::Method::PUT,
            "/v1/clouds?x=%FF",
            Some(("application/yaml", reqwest::Body::from("clouds: [\n"))),
            None,
        ),
        (
            reqwest::Method::PUT,
            "/v1/clouds/%FF",
            None,
            Some((404, "not_found")),
        ),
        (
            reqwest::Method::GET,
            "/v1/status/%FF",
            None,
            Some((404, "not_found")),
        ),
        (
            reqwest::Method::GET,
            "/v1/health/%FF",
            None,
            Some((404, "not_found")),
        ),
        (
            reqwest::Method::GET,
            "/v1/openapi.json/%FF",
            None,
            Some((404, "not_found")),
        ),
        (
            reqwest::Method::GET,
            "/metrics/%FF",
            None,
            Some((404, "not_found")),
        ),
        (
            reqwest::Method::DELETE,
            "/v1/jobs/%FF",
            None,
            Some((405, "method_not_allowed")),
        ),
    ];
    for (method, path, body, wanted) in cases {
        let mut request = d
            .http
            .request(method.clone(), url(path))
            .bearer_auth(&d.token);
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.unwrap();
        let what = format!("{method} {path}: {status} {content_type} {text}");
        assert!(status >= 400, "{what}");
        assert!(content_type.starts_with("application/json"), "{what}");
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {what}"));
        assert!(body["error"]["code"].is_string(), "{what}");
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{what}"
        );
        if let Some((want_status, want_code)) = wanted {
            assert_eq!(
                (status, body["error"]["code"].as_str().unwrap()),
                (want_status, want_code),
                "{what}"
            );
        }
    }
    // The same malformed path without a token: the token is asked for first.
    let a = d.send(d.http.get(url("/v1/jobs/%FF"))).await;
    a.expect(401, "unauthorized");
}
