//! SIGHUP (the contract's "reload"), on a daemon running as its own process: the
//! config and clouds.yaml are read again; an unchanged cloud keeps its session
//! and token, an added one authenticates, a removed one leaves `/v1/status` while
//! an upload under way on it finishes; a broken config is refused and the old
//! one stays in force. Every other key of the config takes effect too (upload
//! dirs, the name template, the upload slots, the API token, the clouds.yaml
//! path, the default cloud, the log format), all of it or none.

use std::path::Path;
use std::time::Duration;

use super::helpers::{clouds_document, unique_app, write_raw_image, Bed, Direct};
use super::served::{authenticated, base_config, cloud_via, serve, Gate, Served};

fn names(status: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = status["clouds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn sighup_adds_and_removes_clouds_while_an_upload_runs_and_keeps_the_unchanged_session() {
    let bed = Bed::get();
    // The upload goes to cloud `leaving` (charm's project) through a gate, so
    // that it is still under way when the cloud is removed.
    let gate = Gate::start(&bed.glance_url).await;
    let clouds = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("leaving", cloud_via("charm", &gate.url())),
    ]);
    let daemon = serve(&clouds, "", &[]).await;
    daemon
        .wait_status("both clouds authenticated", Duration::from_secs(30), |s| {
            authenticated(s, "charm") && authenticated(s, "leaving")
        })
        .await;
    let charm_before = daemon.cloud("charm").await.unwrap();

    let app = unique_app("reload");
    let size = 64 * 1024 * 1024;
    let file = write_raw_image(&daemon.upload_dir, "r.img", size);
    gate.slow_down(8 * 1024 * 1024);
    let client = {
        let request = daemon
            .authed(reqwest::Method::POST, "/v1/images")
            .json(&Served::upload_body(&app, &file, "leaving"));
        tokio::spawn(async move { request.send().await })
    };
    daemon.wait_uploading(Duration::from_secs(60)).await;
    gate.freeze();

    // charm unchanged, leaving removed, appcred added.
    let new_clouds = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("appcred", bed.cloud_entry("charm-appcred")),
    ]);
    std::fs::write(&daemon.clouds_path, new_clouds).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_status(
            "appcred authenticated, leaving gone",
            Duration::from_secs(30),
            |s| authenticated(s, "appcred") && names(s) == ["appcred", "charm"],
        )
        .await;
    let charm_after = daemon.cloud("charm").await.unwrap();
    assert_eq!(
        charm_after["token_requests"],
        charm_before["token_requests"]
    );
    assert_eq!(
        charm_after["token_expires_at"],
        charm_before["token_expires_at"]
    );

    // The upload on the removed cloud finishes.
    gate.thaw();
    let response = client.await.unwrap().unwrap();
    assert_eq!(response.status(), 201);
    let outcome: serde_json::Value = response.json().await.unwrap();
    assert_eq!(outcome["cloud"], "leaving");
    let image = Direct::charm()
        .image(outcome["id"].as_str().unwrap())
        .await
        .expect("the image in Glance");
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], size);
    Direct::charm()
        .delete(outcome["id"].as_str().unwrap())
        .await;

    refused_config_keeps_the_old_one(&daemon).await;
}

/// A config with an unknown key is refused as a whole (the clouds.yaml changed
/// beside it is not read), the daemon stays up; once fixed, the reload applies.
async fn refused_config_keeps_the_old_one(daemon: &Served) {
    let bed = Bed::get();
    let config = std::fs::read_to_string(&daemon.config_path).unwrap();
    std::fs::write(&daemon.config_path, format!("{config}shutdown_grce: 5s\n")).unwrap();
    let more = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("appcred", bed.cloud_entry("charm-appcred")),
        ("admin", bed.cloud_entry("admin")),
    ]);
    std::fs::write(&daemon.clouds_path, more).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log("reload refused", Duration::from_secs(10))
        .await;
    assert!(
        daemon.log().contains("unknown key 'shutdown_grce'"),
        "{}",
        daemon.log()
    );
    assert_eq!(names(&daemon.status().await), ["appcred", "charm"]);

    std::fs::write(&daemon.config_path, config).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_status("admin added", Duration::from_secs(30), |s| {
            authenticated(s, "admin")
        })
        .await;
}

#[tokio::test]
async fn sighup_logs_listen_and_state_dir_as_ignored_and_refuses_a_broken_clouds_yaml() {
    let bed = Bed::get();
    let clouds = clouds_document(&[("charm", bed.cloud_entry("charm"))]);
    let daemon = serve(&clouds, "", &[]).await;
    let root = daemon.dir.path().canonicalize().unwrap();
    let moved = base_config(&root, 1).replace(
        &format!("state_dir: {}/state", root.display()),
        "state_dir: /nowhere/else",
    );
    std::fs::write(&daemon.config_path, format!("{moved}shutdown_grace: 3s\n")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log("reload: config in force", Duration::from_secs(10))
        .await;
    let log = daemon.log();
    assert!(log.contains("take effect only at a restart"), "{log}");
    assert!(log.contains("listen") && log.contains("state_dir"), "{log}");
    assert!(
        log.contains("shutdown_grace"),
        "the applied key is named: {log}"
    );
    // Still serving on the old address, with the old cloud.
    assert_eq!(names(&daemon.status().await), ["charm"]);

    std::fs::write(&daemon.clouds_path, "clouds: [not, a, mapping\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log("clouds.yaml refused", Duration::from_secs(10))
        .await;
    assert!(daemon.log().contains("reload refused"), "{}", daemon.log());
    assert_eq!(names(&daemon.status().await), ["charm"]);
}

/// The config of a test daemon on `port` under `root`, with `lines` after it.
fn config_with(root: &Path, port: u16, api_token_file: &Path, lines: &str) -> String {
    let base = base_config(root, port).replace(
        &format!("api_token_file: {}/state/api-token", root.display()),
        &format!("api_token_file: {}", api_token_file.display()),
    );
    format!("{base}{lines}")
}

/// A token file as an operator makes one: 0600, in the private state dir.
fn write_token_file(path: &Path, token: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn port_of(daemon: &Served) -> u16 {
    daemon.base.rsplit(':').next().unwrap().parse().unwrap()
}

async fn status_with(daemon: &Served, token: &str) -> u16 {
    let response = daemon
        .http
        .get(format!("{}/v1/status", daemon.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

async fn job_state(daemon: &Served, id: &str) -> String {
    let job = daemon.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job.status, 200, "{:?}", job.body);
    job.body["state"].as_str().unwrap().to_string()
}

/// Waits until the job ended; returns its record.
async fn finished_job(daemon: &Served, id: &str) -> serde_json::Value {
    for _ in 0..600 {
        let job = daemon.get(&format!("/v1/jobs/{id}")).await.body;
        if job["state"] == "succeeded" || job["state"] == "failed" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} did not end: {}", daemon.log());
}

#[tokio::test]
async fn sighup_applies_upload_dirs_template_slots_token_clouds_and_log_format() {
    let bed = Bed::get();
    // Uploads go through a gate, so that one can be held `uploading` while the
    // reload widens the slots.
    let gate = Gate::start(&bed.glance_url).await;
    let charm = cloud_via("charm", &gate.url());
    let clouds = clouds_document(&[("charm", charm.clone())]);
    let mut daemon = serve(&clouds, "max_concurrent_uploads: 1\n", &[]).await;
    daemon
        .wait_status("charm authenticated", Duration::from_secs(30), |s| {
            authenticated(s, "charm")
        })
        .await;
    let root = daemon.dir.path().canonicalize().unwrap();
    let old_dir = daemon.upload_dir.clone();

    // One slot: the first upload holds it (frozen mid-body), the second waits.
    let (app_a, app_b) = (unique_app("reload-a"), unique_app("reload-b"));
    let file_a = write_raw_image(&old_dir, "a.img", 8 * 1024 * 1024);
    let file_b = write_raw_image(&old_dir, "b.img", 1024 * 1024);
    gate.slow_down(2 * 1024 * 1024);
    let submit = |app: &str, file: &Path| {
        daemon
            .authed(reqwest::Method::POST, "/v1/images?wait=false")
            .json(&Served::upload_body(app, file, "charm"))
    };
    let a = daemon.send(submit(&app_a, &file_a)).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let job_a = a.body["job"].as_str().unwrap().to_string();
    daemon.wait_uploading(Duration::from_secs(60)).await;
    gate.freeze();
    gate.slow_down(0);
    let b = daemon.send(submit(&app_b, &file_b)).await;
    assert_eq!(b.status, 202, "{:?}", b.body);
    let job_b = b.body["job"].as_str().unwrap().to_string();
    assert_eq!(job_state(&daemon, &job_b).await, "queued");

    // The new config: another upload dir, template, slot count, token file,
    // clouds.yaml (one cloud more, the default) and log format.
    let new_dir = root.join("new-images");
    let new_clouds = root.join("clouds-new.yaml");
    std::fs::write(
        &new_clouds,
        clouds_document(&[
            ("charm", charm),
            ("appcred", bed.cloud_entry("charm-appcred")),
        ]),
    )
    .unwrap();
    let new_token_file = root.join("state/new-token");
    let new_token = format!("reloaded-{}", unique_app("token"));
    write_token_file(&new_token_file, &new_token);
    let config = config_with(
        &root,
        port_of(&daemon),
        &new_token_file,
        "image_name_template: \"reload-{base}-{app_name}-{arch}\"\n\
         max_concurrent_uploads: 2\nlog_format: json\ndefault_cloud: appcred\n",
    )
    .replace(
        &format!("upload_dirs: [{}]", old_dir.display()),
        &format!("upload_dirs: [{}]", new_dir.display()),
    )
    .replace(
        &format!("clouds_yaml: {}", daemon.clouds_path.display()),
        &format!("clouds_yaml: {}", new_clouds.display()),
    );
    std::fs::write(&daemon.config_path, config).unwrap();
    let old_token = daemon.token.clone();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log("reload: config in force", Duration::from_secs(10))
        .await;

    // The token: the new one works, the old one no longer does.
    assert_eq!(status_with(&daemon, &old_token).await, 401);
    assert_eq!(status_with(&daemon, &new_token).await, 200);
    daemon.token = new_token;

    // Two slots: the queued job starts while the first still holds its slot.
    for _ in 0..300 {
        if job_state(&daemon, &job_b).await != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(
        job_state(&daemon, &job_b).await,
        "queued",
        "{}",
        daemon.log()
    );
    assert_eq!(job_state(&daemon, &job_a).await, "uploading");
    gate.thaw();
    for id in [&job_a, &job_b] {
        let job = finished_job(&daemon, id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        Direct::charm()
            .delete(job["image_id"].as_str().unwrap())
            .await;
    }

    // The clouds.yaml at its new path, and the new default.
    daemon
        .wait_status("appcred authenticated", Duration::from_secs(30), |s| {
            authenticated(s, "appcred") && s["default_cloud"] == "appcred"
        })
        .await;

    // The upload dirs: a file in the new one uploads (the reload made the dir),
    // one in the old one is refused.
    assert!(new_dir.is_dir());
    let app = unique_app("reload-new");
    let file = write_raw_image(&new_dir, "n.img", 1024 * 1024);
    let uploaded = daemon.upload(&app, &file, "charm").await;
    assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
    let id = uploaded.body["id"].as_str().unwrap();
    let image = Direct::charm()
        .image(id)
        .await
        .expect("the image in Glance");
    let new_name = format!("reload-jammy-{app}-x64");
    assert_eq!(image["name"], new_name.as_str());
    assert_eq!(image["status"], "active");
    let latest = daemon
        .get(&format!(
            "/v1/images/latest?base=jammy&app_name={app}&arch=x64&cloud=charm"
        ))
        .await;
    assert_eq!(latest.status, 200, "{:?}", latest.body);
    assert_eq!(latest.body["name"], new_name.as_str());
    assert_eq!(latest.body["id"], id);
    Direct::charm().delete(id).await;
    let refused = daemon
        .upload(&unique_app("reload-old"), &file_b, "charm")
        .await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "path_not_allowed");

    // The log format: the reload's last line is already JSON.
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains(r#""message":"reload: config in force""#)),
        "{log}"
    );
}

#[tokio::test]
async fn sighup_refuses_a_bad_upload_dir_a_missing_token_or_an_unknown_key_and_keeps_all_of_the_old(
) {
    let bed = Bed::get();
    let clouds = clouds_document(&[("charm", bed.cloud_entry("charm"))]);
    let daemon = serve(&clouds, "", &[]).await;
    let root = daemon.dir.path().canonicalize().unwrap();
    let port = port_of(&daemon);
    let new_token_file = root.join("state/new-token");
    write_token_file(&new_token_file, "the-new-token");
    let not_a_dir = root.join("not-a-dir");
    std::fs::write(&not_a_dir, "x").unwrap();
    // Each config changes the template and the token too: none of it may apply.
    let changes = "image_name_template: \"refused-{base}-{app_name}-{arch}\"\n";
    let bad_dir = config_with(&root, port, &new_token_file, changes).replace(
        &format!("upload_dirs: [{}]", daemon.upload_dir.display()),
        &format!("upload_dirs: [{}]", not_a_dir.display()),
    );
    let missing_token = config_with(&root, port, &root.join("state/no-such-token"), changes);
    let unknown_key = config_with(
        &root,
        port,
        &new_token_file,
        &format!("{changes}max_concurent_uploads: 2\n"),
    );
    let refusals = [
        (bad_dir, "exists and is not a directory"),
        (missing_token, "no-such-token"),
        (unknown_key, "unknown key 'max_concurent_uploads'"),
    ];
    for (n, (config, why)) in refusals.into_iter().enumerate() {
        std::fs::write(&daemon.config_path, config).unwrap();
        daemon.signal(libc::SIGHUP);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while daemon.log().matches("reload refused").count() <= n {
            assert!(tokio::time::Instant::now() < deadline, "{}", daemon.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = daemon.log();
        let refusal = log
            .lines()
            .filter(|l| l.contains("reload refused"))
            .nth(n)
            .unwrap();
        assert!(refusal.contains(why), "refusal {n}: {refusal}");
    }
    assert!(
        !daemon.log().contains("config in force"),
        "{}",
        daemon.log()
    );

    // Everything old is in force: the token, the upload dir, the template.
    assert_eq!(status_with(&daemon, "the-new-token").await, 401);
    let app = unique_app("refused");
    let file = write_raw_image(&daemon.upload_dir, "o.img", 1024 * 1024);
    let uploaded = daemon.upload(&app, &file, "charm").await;
    assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
    let id = uploaded.body["id"].as_str().unwrap();
    let image = Direct::charm()
        .image(id)
        .await
        .expect("the image in Glance");
    assert_eq!(image["name"], format!("jammy-{app}-x64").as_str());
    Direct::charm().delete(id).await;
}

/// The name `latest` gives the family `jammy`/`app`/`x64` now (the template in force).
async fn latest_name(daemon: &Served, app: &str) -> String {
    let latest = daemon
        .get(&format!(
            "/v1/images/latest?base=jammy&app_name={app}&arch=x64&cloud=charm"
        ))
        .await;
    assert_eq!(latest.status, 200, "{:?}", latest.body);
    latest.body["name"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn sighup_refuses_a_number_out_of_its_range_naming_key_and_line_and_keeps_the_old_config() {
    let bed = Bed::get();
    let clouds = clouds_document(&[("charm", bed.cloud_entry("charm"))]);
    let daemon = serve(&clouds, "max_concurrent_uploads: 2\n", &[]).await;
    let root = daemon.dir.path().canonicalize().unwrap();
    let app = unique_app("range");
    assert_eq!(latest_name(&daemon, &app).await, format!("jammy-{app}-x64"));
    // Each config changes the template too: none of it may apply. The base
    // config is 5 lines; the template is line 6, the bad value line 7.
    let template = "image_name_template: \"refused-{base}-{app_name}-{arch}\"\n";
    let bad_values = [
        // Past tokio's semaphore: 0.2 panicked here, mid-upload.
        (
            "max_concurrent_uploads: 9999999999999999999\n",
            "max_concurrent_uploads",
        ),
        ("max_concurrent_uploads: 65\n", "max_concurrent_uploads"),
        ("max_queued_uploads: 1e30\n", "max_queued_uploads"),
        ("upload_attempts: 0\n", "upload_attempts"),
        ("reaper_interval: 500ms\n", "reaper_interval"),
        ("import_timeout: 101y\n", "import_timeout"),
    ];
    for (n, (line, key)) in bad_values.into_iter().enumerate() {
        let config = format!("{}{template}{line}", base_config(&root, port_of(&daemon)));
        std::fs::write(&daemon.config_path, config).unwrap();
        daemon.signal(libc::SIGHUP);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while daemon.log().matches("reload refused").count() <= n {
            assert!(tokio::time::Instant::now() < deadline, "{}", daemon.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = daemon.log();
        let refusal = log
            .lines()
            .filter(|l| l.contains("reload refused"))
            .nth(n)
            .unwrap();
        assert!(
            refusal.contains(&format!("line 7: key '{key}'")),
            "{line}: {refusal}"
        );
        // Still serving.
        let health = daemon.get("/v1/health").await;
        assert_eq!(health.status, 200, "{}", daemon.log());
    }
    assert!(
        !daemon.log().contains("config in force"),
        "{}",
        daemon.log()
    );
    // With the old template (one Glance query: the bed may be slow).
    assert_eq!(latest_name(&daemon, &app).await, format!("jammy-{app}-x64"));
}

/// A second `serve` of the same config, after the first stopped; killed on drop.
struct Restarted {
    child: std::process::Child,
    log_path: std::path::PathBuf,
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Restarted {
    /// Starts `serve` again on `daemon`'s config and waits until it answers.
    async fn start(daemon: &Served) -> Restarted {
        let log_path = daemon.dir.path().join("restarted.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"))
            .arg("--config")
            .arg(&daemon.config_path)
            .arg("serve")
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let mut restarted = Restarted { child, log_path };
        for _ in 0..300 {
            if let Ok(Some(status)) = restarted.child.try_wait() {
                panic!(
                    "the restarted daemon exited with {status}: {}",
                    restarted.log()
                );
            }
            let up = daemon
                .http
                .get(format!("{}/v1/status", daemon.base))
                .bearer_auth(&daemon.token)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return restarted;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the restarted daemon did not come up: {}", restarted.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

#[tokio::test]
async fn a_secure_yaml_beside_a_put_written_file_is_read_neither_by_sighup_nor_at_restart() {
    let bed = Bed::get();
    let start = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("dropped", bed.cloud_entry("charm-appcred")),
    ]);
    let mut daemon = serve(&start, "", &[]).await;
    // The charm PUTs its clouds: `dropped` goes.
    let put = daemon
        .send(
            daemon
                .authed(reqwest::Method::PUT, "/v1/clouds")
                .header("content-type", "application/yaml")
                .body(clouds_document(&[("charm", bed.cloud_entry("charm"))])),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    daemon
        .wait_status("charm authenticated", Duration::from_secs(30), |s| {
            authenticated(s, "charm") && names(s) == ["charm"]
        })
        .await;
    let before = daemon.cloud("charm").await.unwrap();

    // An old secure.yaml beside the file, with another password for charm.
    let secure = daemon.clouds_path.with_file_name("secure.yaml");
    std::fs::write(
        &secure,
        "clouds:\n  charm:\n    auth: {password: an-old-password}\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log("reload: config in force", Duration::from_secs(10))
        .await;
    assert!(!daemon.log().contains("reload refused"), "{}", daemon.log());
    let after = daemon.cloud("charm").await.unwrap();
    assert_eq!(after["authenticated"], true, "{after}");
    assert_eq!(
        after["token_requests"], before["token_requests"],
        "the PUT's settings are unchanged: the session is kept"
    );

    // The cloud the PUT dropped, in secure.yaml with only a password, and a
    // restart: the daemon starts, with the PUT's clouds and credentials alone.
    std::fs::write(
        &secure,
        "clouds:\n  charm:\n    auth: {password: an-old-password}\n  dropped:\n    auth: {password: x}\n",
    )
    .unwrap();
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    let restarted = Restarted::start(&daemon).await;
    daemon
        .wait_status("charm authenticated again", Duration::from_secs(30), |s| {
            authenticated(s, "charm")
        })
        .await;
    assert_eq!(
        names(&daemon.status().await),
        ["charm"],
        "{}",
        restarted.log()
    );
    let charm = daemon.cloud("charm").await.unwrap();
    assert_eq!(charm["last_error"], serde_json::Value::Null, "{charm}");
}
