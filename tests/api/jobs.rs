//! Jobs against the real bed: progress, idempotency, the `X-Request-Id` rule,
//! `max_concurrent_uploads`, a `kill -9` mid-job, and the CLI following a job.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

async fn charm_daemon(
    tweak: impl FnOnce(&mut openstack_image_helper::config::Config),
) -> TestDaemon {
    let bed = Bed::get();
    spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        tweak,
    )
    .await
}

fn name_of(app: &str) -> String {
    format!("jammy-{app}-x64")
}

fn body(app: &str, file: &Path) -> Value {
    json!({"base": "jammy", "app_name": app, "arch": "x64", "num_revisions": 1, "src_path": file})
}

impl TestDaemon {
    /// `POST /v1/images?wait=false` with an `Idempotency-Key` (when given).
    async fn submit(&self, body: &Value, key: Option<&str>) -> Answer {
        let mut request = self
            .authed(reqwest::Method::POST, "/v1/images?wait=false")
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.send(request).await
    }

    async fn job(&self, id: &str) -> Value {
        let a = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body
    }

    /// Polls the job until it ended; returns every record seen, the last one last.
    async fn follow(&self, id: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        for _ in 0..6000 {
            let job = self.job(id).await;
            let ended = matches!(job["state"].as_str(), Some("succeeded" | "failed"));
            seen.push(job);
            if ended {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} did not end within a minute: {:?}", seen.last());
    }
}

/// The image as Glance has it: active, with the file's size and hashes.
async fn assert_verified_in_glance(glance: &Direct, id: &str, file: &Path) {
    let image = glance
        .image(id)
        .await
        .expect("the job's image is in Glance");
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], std::fs::metadata(file).unwrap().len());
    assert_eq!(image["checksum"], md5_hex(file));
    assert_eq!(image["os_hash_value"], sha512_hex(file));
}

#[tokio::test]
async fn a_job_reports_its_progress_and_a_retry_under_its_key_gets_the_same_job() {
    let d = charm_daemon(|_| {}).await;
    let glance = Direct::charm();
    let app = unique_app("job");
    let file = write_raw_image(&d.upload_dir, "job.img", 96 * 1024 * 1024);
    let key = format!("hook-{app}:install.1");

    let a = d.submit(&body(&app, &file), Some(&key)).await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let id = a.body["job"].as_str().unwrap().to_string();
    assert_eq!(a.body["bytes_total"], 96 * 1024 * 1024);
    assert_eq!(a.body["request"]["app_name"], app.as_str());

    // The same key and body while the job runs: the same job, no second upload.
    let again = d.submit(&body(&app, &file), Some(&key)).await;
    assert!(matches!(again.status, 200 | 202), "{:?}", again.body);
    assert_eq!(again.body["job"], id.as_str());
    // The same key with another body: 409, while it runs and after.
    let mut other = body(&app, &file);
    other["num_revisions"] = json!(3);
    d.submit(&other, Some(&key)).await.expect(409, "conflict");

    let seen = d.follow(&id).await;
    let sent: Vec<u64> = seen
        .iter()
        .map(|j| j["bytes_sent"].as_u64().unwrap())
        .collect();
    assert!(
        sent.windows(2).all(|w| w[0] <= w[1]),
        "bytes_sent went back: {sent:?}"
    );
    let total = 96 * 1024 * 1024;
    assert!(
        sent.iter().any(|&s| s > 0 && s < total),
        "no progress seen between 0 and the total: {sent:?}"
    );
    let last = seen.last().unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["bytes_sent"], total);
    assert!(last["error"].is_null());
    let image_id = last["image_id"].as_str().unwrap().to_string();
    assert_eq!(last["result"]["id"], image_id.as_str());
    assert_verified_in_glance(&glance, &image_id, &file).await;

    // After the job: wait=false answers 200 with the same job; the waiting form
    // answers as the upload did (201, the same image); the other body is still 409.
    let after = d.submit(&body(&app, &file), Some(&key)).await;
    assert_eq!(
        (after.status, after.body["job"].as_str()),
        (200, Some(id.as_str()))
    );
    let waited = d
        .send(
            d.authed(reqwest::Method::POST, "/v1/images")
                .header("idempotency-key", &key)
                .json(&body(&app, &file)),
        )
        .await;
    assert_eq!(waited.status, 201, "{:?}", waited.body);
    assert_eq!(waited.body["id"], image_id.as_str());
    d.submit(&other, Some(&key)).await.expect(409, "conflict");
    let images = glance.images_named(&name_of(&app)).await;
    assert_eq!(images.len(), 1, "one upload, one image: {images:?}");

    // The job is listed, the newest first.
    let newer = d.submit(&body(&app, &file), None).await;
    assert_eq!(newer.status, 202, "{:?}", newer.body);
    let newer_id = newer.body["job"].as_str().unwrap().to_string();
    let list = d.get("/v1/jobs").await.body;
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [newer_id.as_str(), id.as_str()]);
    let newest = d.follow(&newer_id).await.pop().unwrap();
    assert_eq!(newest["state"], "succeeded", "{newest}");
    glance.delete(newest["image_id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn job_ids_keys_and_request_ids_get_the_contracts_errors() {
    let d = charm_daemon(|_| {}).await;
    let glance = Direct::charm();
    d.get("/v1/jobs/0123456789abcdef0123456789abcdef")
        .await
        .expect(404, "not_found");
    d.get("/v1/jobs/not-a-job").await.expect(404, "not_found");
    let app = unique_app("reqid");
    let file = write_raw_image(&d.upload_dir, "reqid.img", 64 * 1024 * 1024);
    d.submit(&body(&app, &file), Some("a key with spaces"))
        .await
        .expect(400, "invalid_request");
    d.submit(&body(&app, &file), Some(&"k".repeat(129)))
        .await
        .expect(400, "invalid_request");

    // An X-Request-Id used by an upload under way is 409, never a second entry.
    let with_id = |b: &Value| {
        d.authed(reqwest::Method::POST, "/v1/images?wait=false")
            .header("x-request-id", format!("req-{app}"))
            .json(b)
    };
    let first = d.send(with_id(&body(&app, &file))).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let second = d.send(with_id(&body(&app, &file))).await;
    second.expect(409, "conflict");
    assert!(
        second.message().contains(&format!("req-{app}")),
        "{}",
        second.message()
    );
    let first_id = first.body["job"].as_str().unwrap();
    let done = d.follow(first_id).await.pop().unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    let image_id = done["image_id"].as_str().unwrap();
    let image = glance.image(image_id).await.unwrap();
    assert_eq!(image["image_helper_upload_id"], format!("req-{app}"));
    // Once that upload ended, the id may be used again.
    let reused = d.send(with_id(&body(&app, &file))).await;
    assert_eq!(reused.status, 202, "{:?}", reused.body);
    let last = d
        .follow(reused.body["job"].as_str().unwrap())
        .await
        .pop()
        .unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    for image in glance.images_named(&name_of(&app)).await {
        glance.delete(image["id"].as_str().unwrap()).await;
    }
}

#[tokio::test]
async fn at_most_max_concurrent_uploads_jobs_upload_at_once() {
    let d = charm_daemon(|c| c.max_concurrent_uploads = 2).await;
    let glance = Direct::charm();
    let apps: Vec<String> = (0..5).map(|_| unique_app("slots")).collect();
    let mut ids = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let file = write_raw_image(&d.upload_dir, &format!("slot{i}.img"), 24 * 1024 * 1024);
        let a = d.submit(&body(app, &file), None).await;
        assert_eq!(a.status, 202, "{:?}", a.body);
        ids.push(a.body["job"].as_str().unwrap().to_string());
    }
    let mut most_at_once = 0;
    let mut saw_queued_while_full = false;
    for _ in 0..12000 {
        let list = d.get("/v1/jobs").await.body;
        let states: Vec<String> = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["state"].as_str().unwrap().to_string())
            .collect();
        let count = |wanted: &[&str]| {
            states
                .iter()
                .filter(|s| wanted.contains(&s.as_str()))
                .count()
        };
        let holding = count(&["uploading", "verifying", "pruning"]);
        assert!(
            holding <= 2,
            "more than two jobs upload at once: {states:?}"
        );
        most_at_once = most_at_once.max(holding);
        saw_queued_while_full |= holding == 2 && count(&["queued"]) > 0;
        let in_flight = d.status().await["uploads_in_flight"].as_u64().unwrap();
        assert!(in_flight <= 2, "uploads_in_flight {in_flight}");
        if count(&["succeeded", "failed"]) == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(most_at_once, 2);
    assert!(saw_queued_while_full, "no job was seen waiting for a slot");
    for (id, app) in ids.iter().zip(&apps) {
        let job = d.job(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let image = glance
            .image(job["image_id"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(image["status"], "active");
        assert_eq!(image["name"], name_of(app).as_str());
        glance.delete(job["image_id"].as_str().unwrap()).await;
    }
    let status = d.status().await;
    assert_eq!(status["jobs"]["succeeded"], 5, "{status}");
    assert_eq!(status["uploads_in_flight"], 0);
}

/// The daemon binary as a process of its own (`serve --config`), to kill -9.
fn serve(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(base: &str) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..500 {
        if http
            .get(format!("{base}/v1/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the daemon at {base} did not come up");
}

#[tokio::test]
async fn a_job_cut_off_by_kill_9_reads_interrupted_and_leaves_no_image() {
    let bed = Bed::get();
    // Glance behind a gate that holds the image data: the job stays `uploading`
    // with its image created for as long as the test wants.
    let (glance_url, _gate) = gated_glance().await;
    let mut entry = bed.cloud_entry("charm");
    entry["image_endpoint_override"] = glance_url.into();
    // The in-process daemon only lays out the directory and the config file.
    let d = spawn_daemon(&clouds_document(&[("charm", entry)]), |c| {
        c.stale_upload_age = Duration::from_secs(5);
        c.reaper_interval = Duration::from_secs(1);
    })
    .await;
    let root = d.dir.path().canonicalize().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = root.join("killed.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nclouds_yaml: {}\nstate_dir: {}\napi_token_file: {}\n\
             upload_dirs: [{}]\nstale_upload_age: 5s\nreaper_interval: 1s\n",
            root.join("clouds.yaml").display(),
            root.join("killed-state").display(),
            d.config.api_token_file.display(),
            d.upload_dir.display(),
        ),
    )
    .unwrap();
    let app = unique_app("killed");
    let file = write_raw_image(&d.upload_dir, "killed.img", 32 * 1024 * 1024);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get_job = |id: String| {
        let (http, base, token) = (http.clone(), base.clone(), d.token.clone());
        async move {
            let r = http
                .get(format!("{base}/v1/jobs/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };

    let mut daemon = serve(&config);
    wait_healthy(&base).await;
    let r = http
        .post(format!("{base}/v1/images?wait=false"))
        .bearer_auth(&d.token)
        .json(&body(&app, &file))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job"]
        .as_str()
        .unwrap()
        .to_string();
    let mut image_id = None;
    for _ in 0..1000 {
        let job = get_job(id.clone()).await;
        if let (Some(image), "uploading") =
            (job["image_id"].as_str(), job["state"].as_str().unwrap())
        {
            image_id = Some(image.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let image_id = image_id.expect("the job created its image and uploads");
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();

    let mut daemon = serve(&config);
    wait_healthy(&base).await;
    let job = get_job(id.clone()).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "interrupted", "{job}");
    // Its image is deleted (at start, the cloud being reachable; else the reaper).
    let glance = Direct::charm();
    let mut gone = false;
    for _ in 0..300 {
        let left = glance.image(&image_id).await;
        if left.is_none() || left.is_some_and(|i| i["status"] == "deleted") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(
        gone,
        "the interrupted job's image {image_id} is still in Glance"
    );
    assert!(glance.images_named(&name_of(&app)).await.is_empty());
}

/// Runs the CLI with `args` to its end: (exit code, stdout, stderr).
async fn cli(args: Vec<String>) -> (Option<i32>, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn upload_args(config: &Path, app: &str, file: &Path) -> Vec<String> {
    let words = [
        "--config",
        &config.display().to_string(),
        "upload",
        "--base",
        "jammy",
        "--app-name",
        app,
        "--arch",
        "x64",
        "--num-revisions",
        "1",
        "--src-path",
        &file.display().to_string(),
    ];
    words.map(str::to_string).to_vec()
}

#[tokio::test]
async fn the_cli_submits_follows_and_lets_a_job_outlive_it() {
    let bed = Bed::get();
    let (glance_url, gate) = gated_glance().await;
    let mut entry = bed.cloud_entry("charm");
    entry["image_endpoint_override"] = glance_url.into();
    let d = spawn_daemon(&clouds_document(&[("charm", entry)]), |_| {}).await;
    let glance = Direct::charm();
    let config = d.config_path.display().to_string();

    // `upload --no-wait` prints the job id; `job ID` follows it to its image id.
    gate.send_replace(true);
    let app = unique_app("clijob");
    let file = write_raw_image(&d.upload_dir, "clijob.img", 8 * 1024 * 1024);
    let mut args = upload_args(&d.config_path, &app, &file);
    args.push("--no-wait".into());
    let (code, stdout, stderr) = cli(args).await;
    assert_eq!(code, Some(0), "{stderr}");
    let id = stdout.trim().to_string();
    assert_eq!(id.len(), 32, "a job id: {stdout}");
    let (code, stdout, stderr) = cli(vec![
        "--config".into(),
        config.clone(),
        "job".into(),
        id.clone(),
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let image_id = stdout.trim().to_string();
    assert_eq!(d.job(&id).await["image_id"], image_id.as_str());
    assert_verified_in_glance(&glance, &image_id, &file).await;
    let (code, stdout, _) = cli(vec!["--config".into(), config.clone(), "jobs".into()]).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with(&id) && stdout.contains("succeeded") && stdout.contains(&image_id),
        "{stdout}"
    );
    let (code, _, stderr) = cli(vec![
        "--config".into(),
        config.clone(),
        "job".into(),
        "0".repeat(32),
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not_found"), "{stderr}");
    glance.delete(&image_id).await;

    // `upload` killed while it follows: the job goes on to its image.
    gate.send_replace(false);
    let app = unique_app("clikill");
    let file = write_raw_image(&d.upload_dir, "clikill.img", 8 * 1024 * 1024);
    let mut child = Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"))
        .args(upload_args(&d.config_path, &app, &file))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stderr)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    let id = first_line
        .strip_prefix("job ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the job id first on stderr: {first_line}"))
        .to_string();
    // The CLI is following an upload that cannot end yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the CLI ended before the job did"
    );
    assert!(!matches!(
        d.job(&id).await["state"].as_str(),
        Some("succeeded" | "failed")
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    gate.send_replace(true);
    let done = d.follow(&id).await.pop().unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    let image_id = done["image_id"].as_str().unwrap();
    assert_verified_in_glance(&glance, image_id, &file).await;
    glance.delete(image_id).await;
}
