//! Credentials that stop working, and come back, against the real Keystone and
//! Glance: Keystone down for longer than a token's life, a password changed and
//! changed back, an application credential deleted, a token revoked mid-upload.
//! Each uses a user of its own (KeystoneAdmin), as other tests log in as charm.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// A Keystone call with `token`; returns the status, the body and X-Subject-Token.
/// Sent again (up to 5 times) when the bed's SQLite makes Keystone fail it with a
/// 500 or a dropped connection ("database is locked": tests/openstack/README.md).
async fn keystone(
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    for _ in 0..4 {
        match keystone_once(method.clone(), path, token, body.clone()).await {
            Some(answer) if answer.0 != 500 => return answer,
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    keystone_once(method.clone(), path, token, body)
        .await
        .unwrap_or_else(|| panic!("{method} {path}: no answer from Keystone"))
}

async fn keystone_once(
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Option<(u16, Value, Option<String>)> {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = http.request(method, format!("{}{path}", Bed::get().keystone_url));
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let subject = response
        .headers()
        .get("x-subject-token")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.json().await.unwrap_or(Value::Null);
    Some((status, body, subject))
}

async fn admin_token(admin: &KeystoneAdmin) -> String {
    let auth = admin.session.authenticated().await.unwrap();
    auth.token.value.expose().to_string()
}

/// Sets a user's password as admin (Keystone revokes the user's tokens).
async fn set_password(admin: &KeystoneAdmin, user: &str, password: &str) {
    let token = admin_token(admin).await;
    let body = json!({"user": {"password": password}});
    let path = format!("/users/{user}");
    let (status, body, _) = keystone(reqwest::Method::PATCH, &path, Some(&token), Some(body)).await;
    assert_eq!(status, 200, "{body}");
}

/// A token of the user itself, scoped to charm-project.
async fn user_token(user: &str, password: &str) -> String {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"id": user, "password": password}}},
        "scope": {"project": {"name": "charm-project", "domain": {"id": "default"}}}
    }});
    let (status, body, subject) =
        keystone(reqwest::Method::POST, "/auth/tokens", None, Some(body)).await;
    assert_eq!(status, 201, "{body}");
    subject.unwrap()
}

/// A new application credential of the user: (id, clouds.yaml entry).
/// A creation that failed with "database is locked" may still have been stored
/// (then the same name is a 409): each attempt takes a new name.
async fn create_app_credential(user: &str, token: &str) -> (String, serde_yaml::Value) {
    let path = format!("/users/{user}/application_credentials");
    let mut attempts = 0;
    let body = loop {
        let body = json!({"application_credential": {"name": unique_app("cred")}});
        let answer = keystone_once(reqwest::Method::POST, &path, Some(token), Some(body)).await;
        attempts += 1;
        match answer {
            Some((201, body, _)) => break body,
            other if attempts < 5 => {
                eprintln!("creating an application credential: {other:?}; again");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => panic!("creating an application credential: {other:?}"),
        }
    };
    let id = body["application_credential"]["id"].as_str().unwrap();
    let secret = body["application_credential"]["secret"].as_str().unwrap();
    let mut entry = Bed::get().cloud_entry("charm-appcred");
    entry["auth"]["application_credential_id"] = id.into();
    entry["auth"]["application_credential_secret"] = secret.into();
    (id.to_string(), entry)
}

/// Removes the role rows of deleted application credentials from the bed's
/// Keystone database. Its SQLite does not enforce `ON DELETE CASCADE` (foreign
/// keys are off), so deleting a credential (or its user) leaves its
/// `application_credential_role` rows, and the next credential created reuses
/// the freed `internal_id` and fails with 409 "Duplicate entry" for everyone.
async fn purge_orphan_app_credential_roles() {
    let db = Bed::get()
        .clouds_yaml
        .with_file_name("keystone/keystone.db");
    let script = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1], timeout=30)\n\
        c.execute('DELETE FROM application_credential_role WHERE application_credential_id \
        NOT IN (SELECT internal_id FROM application_credential)')\n\
        c.commit()\n";
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", script])
            .arg(db)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keystone's revocations have a one-second granularity: a token issued in the
/// same second as a revocation event counts as revoked.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn keystone_down_longer_than_a_token_life_then_back() {
    let bed = Bed::get();
    let life = bed.token_lifetime;
    assert!(
        life <= Duration::from_secs(120),
        "this test needs short tokens: start the bed with OSIH_TOKEN_LIFETIME=60 (make test does); it has {life:?}"
    );
    let keystone_addr: std::net::SocketAddr = bed
        .keystone_url
        .trim_start_matches("http://")
        .trim_end_matches("/v3")
        .parse()
        .unwrap();
    let port = free_port();
    let forwarder = start_forwarder(port, keystone_addr).await;
    let mut entry = bed.cloud_entry("charm");
    entry["auth"]["auth_url"] = format!("http://127.0.0.1:{port}/v3").into();
    let d = spawn_daemon(&clouds_document(&[("outage", entry)]), |_| {}).await;
    d.wait_authenticated("outage", Duration::from_secs(30))
        .await;
    let app = unique_app("outage");
    assert_eq!(d.latest(&app, None).await.status, 200);

    // Keystone goes away (the forwarder stops listening) for longer than the token lives.
    forwarder.abort();
    let _ = forwarder.await;
    let down_at = Instant::now();
    let mut answers = Vec::new();
    let mut refused_since: Option<Instant> = None;
    loop {
        let a = d.latest(&app, None).await;
        if a.status != 200 {
            a.expect(503, "not_ready");
            assert!(
                a.message().contains("'outage'") && a.message().contains("Keystone"),
                "{}",
                a.message()
            );
            refused_since.get_or_insert_with(Instant::now);
        }
        answers.push(a.status);
        if refused_since.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            break;
        }
        assert!(
            down_at.elapsed() < life + Duration::from_secs(30),
            "still answering with a token {:?} after Keystone went down: {answers:?}",
            down_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The token served while it lived, then every answer said not_ready.
    let first_refusal = answers.iter().position(|s| *s == 503).unwrap();
    assert!(first_refusal > 0, "{answers:?}");
    assert!(
        answers[first_refusal..].iter().all(|s| *s == 503),
        "{answers:?}"
    );
    let s = d.cloud_status("outage").await;
    assert_eq!(s["authenticated"], false, "{s}");

    // Keystone comes back: the daemon recovers by itself (backoff capped at 30 s).
    let forwarder = start_forwarder(port, keystone_addr).await;
    let s = d
        .wait_authenticated("outage", Duration::from_secs(45))
        .await;
    assert!(s["last_error"].is_null(), "{s}");
    assert_eq!(d.latest(&app, None).await.status, 200);
    forwarder.abort();
}

#[tokio::test]
async fn a_password_changed_and_changed_back() {
    let admin = KeystoneAdmin::new();
    let name = unique_app("pwchange");
    let (user, entry) = admin.create_member(&name, "first-password").await;
    let d = spawn_daemon(&clouds_document(&[("pwchange", entry)]), |_| {}).await;
    d.wait_authenticated("pwchange", Duration::from_secs(30))
        .await;
    let app = unique_app("pwchange");
    assert_eq!(d.latest(&app, None).await.status, 200);

    set_password(&admin, &user, "second-password").await;
    next_second().await;
    let a = d.latest(&app, None).await;
    a.expect(422, "openstack_unauthorized");
    assert!(
        a.message().contains("'pwchange'") && a.message().contains("rejected the credentials"),
        "{}",
        a.message()
    );
    assert!(!a.message().contains("password"), "{}", a.message());
    let s = d.cloud_status("pwchange").await;
    assert!(
        s["last_error"].as_str().unwrap().contains("'pwchange'"),
        "{s}"
    );
    assert_eq!(
        s["authenticated"], false,
        "the refused token is dropped: {s}"
    );

    set_password(&admin, &user, "first-password").await;
    next_second().await;
    // Refused credentials are retried after 5-10 s, then 10-20 s.
    let s = d
        .wait_authenticated("pwchange", Duration::from_secs(40))
        .await;
    assert!(s["last_error"].is_null(), "{s}");
    assert_eq!(d.latest(&app, None).await.status, 200);
    admin.delete_user(&user).await;
}

#[tokio::test]
async fn an_application_credential_deleted_then_replaced() {
    let admin = KeystoneAdmin::new();
    let name = unique_app("appcred");
    let (user, _) = admin.create_member(&name, "appcred-password").await;
    let token = user_token(&user, "appcred-password").await;
    let (credential, entry) = create_app_credential(&user, &token).await;
    let d = spawn_daemon(&clouds_document(&[("appcred", entry)]), |_| {}).await;
    d.wait_authenticated("appcred", Duration::from_secs(30))
        .await;
    let app = unique_app("appcred");
    assert_eq!(d.latest(&app, None).await.status, 200);

    let path = format!("/users/{user}/application_credentials/{credential}");
    let (status, body, _) = keystone(reqwest::Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(status, 204, "{body}");
    purge_orphan_app_credential_roles().await;
    next_second().await;
    let a = d.latest(&app, None).await;
    a.expect(422, "openstack_unauthorized");
    assert!(
        a.message().contains("'appcred'") && a.message().contains("rejected the credentials"),
        "{}",
        a.message()
    );

    // Valid again: a new credential, given to the daemon with PUT /v1/clouds.
    let (_, entry) = create_app_credential(&user, &token).await;
    let put = d
        .authed(reqwest::Method::PUT, "/v1/clouds")
        .body(clouds_document(&[("appcred", entry)]));
    let a = d.send(put).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(d.latest(&app, None).await.status, 200);
    admin.delete_user(&user).await;
    purge_orphan_app_credential_roles().await;
}

/// The token revoked at Keystone while a large upload runs. Glance checks the
/// token when the `PUT .../file` starts, so the data keeps flowing; the calls
/// after it (waiting for `active`) get a 401 with the revoked token: the daemon
/// re-authenticates once and finishes the upload, and the next request works.
#[tokio::test]
async fn a_token_revoked_during_an_upload() {
    let admin = KeystoneAdmin::new();
    let name = unique_app("midupload");
    let (user, entry) = admin.create_member(&name, "midupload-password").await;
    let d = spawn_daemon(&clouds_document(&[("midupload", entry)]), |_| {}).await;
    d.wait_authenticated("midupload", Duration::from_secs(30))
        .await;
    let app = unique_app("midupload");
    let file = write_raw_image(&d.upload_dir, "big.img", 384 * 1024 * 1024);
    let upload = {
        let (base, token, file, app) = (d.base.clone(), d.token.clone(), file.clone(), app.clone());
        tokio::spawn(async move {
            let body = json!({"base": "jammy", "app_name": app, "arch": "x64",
                              "num_revisions": 1, "src_path": file});
            let r = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(format!("{base}/v1/images"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let direct = Direct::charm();
    let image_name = format!("jammy-{app}-x64");
    // Mid-upload: the daemon has sent some of the data, not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let uploads = d.get("/v1/jobs").await.body;
        let sent = uploads["jobs"][0]["bytes_sent"].as_u64().unwrap_or(0);
        if sent > 32 * 1024 * 1024 {
            assert!(sent < 384 * 1024 * 1024, "{uploads}");
            break;
        }
        if upload.is_finished() {
            panic!(
                "the upload ended before it was under way: {:?}",
                upload.await
            );
        }
        assert!(Instant::now() < deadline, "no upload under way: {uploads}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.set_enabled(&user, false).await;
    admin.set_enabled(&user, true).await;
    let (status, body) = upload.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["checksum"], md5_hex(&file), "{body}");
    assert_eq!(body["size"], 384 * 1024 * 1024, "{body}");
    let s = d.cloud_status("midupload").await;
    assert!(
        s["unauthorized_responses"].as_u64().unwrap() >= 1,
        "the revoked token was refused: {s}"
    );
    assert_eq!(s["token_requests"], 2, "one re-authentication: {s}");
    let images = direct.images_named(&image_name).await;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["status"], "active");
    let a = d.latest(&app, None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["id"], body["id"]);
    direct.delete(body["id"].as_str().unwrap()).await;
    admin.delete_user(&user).await;
}

/// A proxy in front of the real Glance that, once it has taken the first 8 MiB of
/// an image's data, revokes the token the upload carries (at the real Keystone)
/// and passes the request on: the real Glance answers 401 to the upload itself.
/// (Revoking at Keystone alone cannot do that: Glance checks the token when the
/// request starts.)
async fn start_revoking_proxy(admin_token: String) -> String {
    use axum::body::{Body, Bytes};
    use futures_util::StreamExt;
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let admin_token = admin_token.clone();
        async move {
            let (parts, body) = request.into_parts();
            let glance = Bed::get().glance_url.clone();
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let path = parts.uri.path_and_query().unwrap().as_str().to_string();
            let mut forward = http.request(parts.method.clone(), format!("{glance}{path}"));
            for (name, value) in &parts.headers {
                if name != "host" && name != "content-length" {
                    forward = forward.header(name, value);
                }
            }
            let body = if parts.method == "PUT" && path.ends_with("/file") {
                let mut stream = body.into_data_stream();
                let mut taken = 0;
                while let Some(Ok(chunk)) = stream.next().await {
                    taken += chunk.len();
                    if taken >= 8 * 1024 * 1024 {
                        break;
                    }
                }
                let token = parts.headers["x-auth-token"].to_str().unwrap().to_string();
                let revoke = http
                    .delete(format!("{}/auth/tokens", Bed::get().keystone_url))
                    .header("X-Auth-Token", &admin_token)
                    .header("X-Subject-Token", token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(revoke.status(), 204);
                Bytes::new()
            } else {
                axum::body::to_bytes(body, usize::MAX).await.unwrap()
            };
            let answer = forward.body(body).send().await.unwrap();
            let mut response = axum::response::Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    response = response.header(name.as_str(), value.as_bytes());
                }
            }
            response
                .body(Body::from(answer.bytes().await.unwrap()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Glance answers 401 to the upload itself (its token revoked while the data
/// flows, through the proxy above): the upload fails with the cause, its image
/// is deleted (with a new token), and the next request works.
#[tokio::test]
async fn a_401_to_the_upload_itself_fails_it_cleanly() {
    let admin = KeystoneAdmin::new();
    let proxy = start_revoking_proxy(admin_token(&admin).await).await;
    let mut entry = Bed::get().cloud_entry("charm");
    entry["image_endpoint_override"] = proxy.into();
    let d = spawn_daemon(&clouds_document(&[("revoked", entry)]), |_| {}).await;
    d.wait_authenticated("revoked", Duration::from_secs(30))
        .await;
    let app = unique_app("put401");
    let file = write_raw_image(&d.upload_dir, "put401.img", 64 * 1024 * 1024);
    let a = d.upload(&app, &file, 1, json!({})).await;
    a.expect(502, "upload_image_failed");
    assert!(
        a.message().contains("'revoked'")
            && a.message().contains("401")
            && a.message().contains("/file"),
        "{}",
        a.message()
    );
    let images = Direct::charm()
        .images_named(&format!("jammy-{app}-x64"))
        .await;
    assert!(
        images.is_empty(),
        "the failed upload's image is left: {images:?}"
    );
    let s = d.cloud_status("revoked").await;
    // A call of the daemon's own (a reaper pass) may have met the revoked token
    // too: it shares the one re-authentication.
    assert!(s["unauthorized_responses"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["token_requests"], 2, "one re-authentication: {s}");
    let a = d.latest(&app, None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.body["id"].is_null(), "{:?}", a.body);
}
