//! Logins and credentials under fault: a wrong password costs Keystone a few
//! attempts, not one per request; no token or password follows a redirect; a
//! token without a project is refused before any Glance call. Counted at the real
//! services (`tests/openstack/failed-auths.sh`, `glance-requests.sh`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;

use crate::helpers::*;

/// Runs one of the bed's counting scripts and reads the number it prints.
pub async fn bed_count(script: &str, arg: &str) -> u64 {
    let path = format!("{}/tests/openstack/{script}", env!("CARGO_MANIFEST_DIR"));
    let arg = arg.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&path)
            .arg(&arg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{script} printed {stdout:?}"))
}

/// Password attempts Keystone refused for a user (name or id).
pub async fn failed_auths(user: &str) -> u64 {
    bed_count("failed-auths.sh", user).await
}

/// Requests that reached any Glance with `pattern` in their log line.
pub async fn glance_requests(pattern: &str) -> u64 {
    bed_count("glance-requests.sh", pattern).await
}

/// The Glance image name of `latest(app)` (the default template, jammy, x64).
pub fn image_name(app: &str) -> String {
    format!("jammy-{app}-x64")
}

#[tokio::test]
async fn a_wrong_password_costs_keystone_at_most_three_attempts() {
    let admin = KeystoneAdmin::new();
    let name = unique_app("wrongpw");
    let (user, mut entry) = admin.create_member(&name, "the-right-password").await;
    entry["auth"]["password"] = "not-the-password".into();
    let d = spawn_daemon(&clouds_document(&[("wrongpw", entry)]), |_| {}).await;

    let check = |a: &Answer| {
        a.expect(422, "openstack_unauthorized");
        assert!(a.message().contains("'wrongpw'"), "{}", a.message());
        assert!(!a.message().contains("not-the-password"));
    };
    let burst = (0..50).map(|_| d.latest("wrongpw-probe", None));
    for a in futures_util::future::join_all(burst).await {
        check(&a);
    }
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let sent = Instant::now();
        let a = d.latest("wrongpw-probe", None).await;
        slowest = slowest.max(sent.elapsed());
        check(&a);
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = d.cloud_status("wrongpw").await;
    let at_keystone = failed_auths(&user).await;
    let by_daemon = status["token_requests"].as_u64().unwrap();
    eprintln!("50 + {calls} requests: {at_keystone} password attempts at Keystone, {by_daemon} by the daemon's count; slowest answer in the loop {slowest:?}");
    assert!(
        (1..=3).contains(&at_keystone),
        "{at_keystone} password attempts reached Keystone"
    );
    // A refresh may have started between the two readings: Keystone's count
    // may be one ahead, never behind.
    assert!(
        by_daemon <= at_keystone && at_keystone <= by_daemon + 1,
        "daemon {by_daemon}, Keystone {at_keystone}"
    );
    assert!(status["last_error"]
        .as_str()
        .unwrap()
        .contains("rejected the credentials"));
    admin.delete_user(&user).await;
}

/// What reached the server a redirect pointed to.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

/// A server that records every request (method, path, whether it carried a token,
/// its body) and answers an empty image list.
async fn start_recorder() -> (u16, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let app = Router::new().fallback(
        move |method: axum::http::Method, uri: Uri, headers: HeaderMap, body: String| {
            let record = record.clone();
            async move {
                let token = headers.contains_key("x-auth-token");
                record
                    .0
                    .lock()
                    .unwrap()
                    .push(format!("{method} {uri} token={token} body={body}"));
                axum::Json(serde_json::json!({"images": []}))
            }
        },
    );
    (serve(app).await, seen)
}

/// A server that answers every request with `status` to the same path on `to`.
async fn start_redirector(status: StatusCode, to: u16) -> u16 {
    let app = Router::new().fallback(move |uri: Uri| async move {
        let location = format!("http://127.0.0.1:{to}{uri}");
        (status, [(axum::http::header::LOCATION, location)]).into_response()
    });
    serve(app).await
}

async fn serve(app: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test]
async fn keystone_redirects_are_not_followed_with_the_password() {
    let (elsewhere, seen) = start_recorder().await;
    let redirector = start_redirector(StatusCode::TEMPORARY_REDIRECT, elsewhere).await;
    let password = format!("pw-{}", unique_app("redirect"));
    let mut entry = Bed::get().cloud_entry("charm");
    entry["auth"]["auth_url"] = format!("http://127.0.0.1:{redirector}/v3").into();
    entry["auth"]["password"] = password.clone().into();
    let d = spawn_daemon(&clouds_document(&[("redirected", entry)]), |_| {}).await;

    let s = d
        .wait_for_error("redirected", Duration::from_secs(10))
        .await;
    let error = s["last_error"].as_str().unwrap();
    let location = format!("http://127.0.0.1:{elsewhere}/v3/auth/tokens");
    assert!(
        error.contains("'redirected'") && error.contains("307") && error.contains(&location),
        "{error}"
    );
    d.latest("redirect-probe", None)
        .await
        .expect(503, "not_ready");
    let seen = seen.0.lock().unwrap().clone();
    assert!(seen.is_empty(), "the redirect was followed: {seen:?}");
}

#[tokio::test]
async fn glance_redirects_are_not_followed_with_the_token() {
    let (elsewhere, seen) = start_recorder().await;
    let redirector = start_redirector(StatusCode::PERMANENT_REDIRECT, elsewhere).await;
    let mut entry = Bed::get().cloud_entry("charm");
    entry["image_endpoint_override"] = format!("http://127.0.0.1:{redirector}").into();
    let d = spawn_daemon(&clouds_document(&[("redirected", entry)]), |_| {}).await;
    d.wait_authenticated("redirected", Duration::from_secs(30))
        .await;

    let a = d.latest("redirect-probe", None).await;
    a.expect(502, "get_image_failed");
    let location = format!("http://127.0.0.1:{elsewhere}/v2/images");
    assert!(
        a.message().contains("'redirected'")
            && a.message().contains("308")
            && a.message().contains(&location),
        "{}",
        a.message()
    );
    let seen = seen.0.lock().unwrap().clone();
    assert!(seen.is_empty(), "the redirect was followed: {seen:?}");
}

#[tokio::test]
async fn a_domain_scoped_token_is_refused_before_any_glance_call() {
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[
            ("charm", bed.cloud_entry("charm")),
            ("charm-domain", bed.cloud_entry("charm-domain")),
        ]),
        |_| {},
    )
    .await;
    let s = d
        .wait_for_error("charm-domain", Duration::from_secs(30))
        .await;
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("'charm-domain'") && error.contains("not project-scoped"),
        "{error}"
    );
    assert_eq!(s["authenticated"], false, "{s}");

    let app = unique_app("scope");
    let a = d.latest(&app, Some("charm-domain")).await;
    a.expect(422, "openstack_unauthorized");
    assert!(
        a.message().contains("'charm-domain'") && a.message().contains("not project-scoped"),
        "{}",
        a.message()
    );
    let pattern = format!("name={}", image_name(&app));
    assert_eq!(glance_requests(&pattern).await, 0, "Glance was called");
    // The count does see this query when it comes from a project-scoped cloud.
    assert_eq!(d.latest(&app, Some("charm")).await.status, 200);
    assert_eq!(glance_requests(&pattern).await, 1);
}

/// A `serve` child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The hardened unit without `ca-certificates`: the system has no CA certificates
/// (here: SSL_CERT_FILE and SSL_CERT_DIR point at empty ones, which the platform
/// verifier honours). A cloud over http:// works; an https:// one without its own
/// `cacert` fails when it connects, naming the cloud and the missing certificates.
#[tokio::test]
async fn no_system_ca_certificates_fail_only_the_https_clouds() {
    let bed = Bed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("empty.pem"), "").unwrap();
    std::fs::create_dir(root.join("no-certs")).unwrap();
    let mut https = bed.cloud_entry("charm");
    https["auth"]["auth_url"] = format!("https://127.0.0.1:{}/v3", free_port()).into();
    let clouds = clouds_document(&[("charm", bed.cloud_entry("charm")), ("secure", https)]);
    std::fs::write(root.join("clouds.yaml"), clouds).unwrap();
    let port = free_port();
    let config = format!(
        "listen: 127.0.0.1:{port}\nstate_dir: {d}/state\napi_token_file: {d}/state/api-token\nclouds_yaml: {d}/clouds.yaml\nupload_dirs: [{d}/images]\n",
        d = root.display()
    );
    std::fs::write(root.join("config.yaml"), config).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"))
        .args(["serve", "--config"])
        .arg(root.join("config.yaml"))
        .env("SSL_CERT_FILE", root.join("empty.pem"))
        .env("SSL_CERT_DIR", root.join("no-certs"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(root.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| {
        let token = std::fs::read_to_string(root.join("state/api-token")).unwrap_or_default();
        http.get(format!("{base}{path}"))
            .bearer_auth(token.trim())
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let clouds = loop {
        if let Ok(Some(exit)) = child.0.try_wait() {
            let log = std::fs::read_to_string(root.join("daemon.log")).unwrap();
            panic!("the daemon exited ({exit}): {log}");
        }
        if let Ok(r) = get("/v1/status").await {
            let status: serde_json::Value = r.json().await.unwrap_or_default();
            let clouds = status["clouds"].as_array().cloned().unwrap_or_default();
            let done = clouds.iter().any(|c| c["authenticated"] == true)
                && clouds.iter().any(|c| !c["last_error"].is_null());
            if done {
                break clouds;
            }
        }
        assert!(Instant::now() < deadline, "the clouds did not settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cloud = |name: &str| clouds.iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(cloud("charm")["authenticated"], true, "{clouds:?}");
    let error = cloud("secure")["last_error"].as_str().unwrap().to_string();
    assert!(
        error.contains("'secure'") && error.contains("no CA certificates were found"),
        "{error}"
    );

    let a = get("/v1/images/latest?base=jammy&app_name=nocerts&arch=x64&cloud=charm")
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    let a = get("/v1/images/latest?base=jammy&app_name=nocerts&arch=x64&cloud=secure")
        .await
        .unwrap();
    assert_eq!(a.status(), 503);
    let body: serde_json::Value = a.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("no CA certificates"), "{message}");
}

#[tokio::test]
async fn put_clouds_with_a_wrong_password_shares_the_login_backoff() {
    let admin = KeystoneAdmin::new();
    let name = unique_app("putwrongpw");
    let (user, mut entry) = admin.create_member(&name, "the-right-password").await;
    entry["auth"]["password"] = "not-the-password".into();
    let document = clouds_document(&[("putwrongpw", entry)]);
    let d = charm_only_daemon().await;
    // A hook that sends the same wrong document on every run: 20 runs in 10 s.
    let started = Instant::now();
    for run in 0..20 {
        let answer = d
            .send(
                d.authed(reqwest::Method::PUT, "/v1/clouds")
                    .header("content-type", "application/yaml")
                    .body(document.clone()),
            )
            .await;
        answer.expect(422, "openstack_unauthorized");
        assert!(answer.message().contains("putwrongpw"), "{:?}", answer.body);
        if run == 0 {
            // The first PUT asked Keystone; the next ones within the backoff do not.
            assert_eq!(failed_auths(&user).await, 1);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    let at_keystone = failed_auths(&user).await;
    assert!(
        (1..=2).contains(&at_keystone),
        "{at_keystone} password attempts reached Keystone for 20 PUTs"
    );
    // The clouds in force are untouched.
    assert_eq!(d.status().await["clouds"][0]["name"], "charm");
    admin.delete_user(&user).await;
}
