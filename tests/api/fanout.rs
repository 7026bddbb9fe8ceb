//! Several clouds from one read (`clouds`), `skip_unchanged` and
//! `latest?cloud=*`, against the bed's two clouds: A (`charm`, Glance on 9292)
//! and B (`charm-b`: its own project, Glance, database and store).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::served;

/// A clouds.yaml with the bed's two clouds, and `extra` entries.
fn two_clouds(extra: &[(&str, serde_yaml::Value)]) -> String {
    let bed = Bed::get();
    let mut entries = vec![
        ("charm", bed.cloud_entry("charm")),
        ("charm-b", bed.cloud_entry("charm-b")),
    ];
    entries.extend(extra.iter().cloned());
    clouds_document(&entries)
}

/// Asserts that image `id` is active in `glance` and holds `file`'s bytes.
async fn assert_holds(glance: &Direct, id: &str, file: &Path) {
    let image = glance.image(id).await.expect("the image exists");
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(
        image["size"],
        std::fs::metadata(file).unwrap().len(),
        "{image}"
    );
    assert_eq!(image["checksum"], md5_hex(file), "{image}");
    assert_eq!(image["os_hash_value"], sha512_hex(file), "{image}");
}

/// Bytes the process read through read(2)-like calls (`rchar`), file and socket.
fn rchar(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/PID/io")
}

fn upload_body(app: &str, file: &Path, extra: Value) -> Value {
    let mut body = json!({
        "base": "jammy", "app_name": app, "arch": "x64",
        "num_revisions": 2, "src_path": file,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn fan_out_reads_the_file_once_and_each_cloud_gets_its_own_verified_image() {
    let d = served::serve(&two_clouds(&[]), "", &[]).await;
    let app = unique_app("fanout");
    let size = 24 * 1024 * 1024;
    let file = write_raw_image(&d.upload_dir, "one.img", size);
    let body = upload_body(&app, &file, json!({"clouds": ["charm", "charm-b"]}));

    let before = rchar(d.pid());
    let a = d
        .send(d.authed(reqwest::Method::POST, "/v1/images").json(&body))
        .await;
    let read = rchar(d.pid()) - before;
    assert_eq!(a.status, 201, "{}", a.body);
    // One read of the file (and a few KiB of HTTP answers), not two.
    assert!(
        read >= size as u64 && read < size as u64 * 3 / 2,
        "the daemon read {read} bytes to send a file of {size} bytes to two clouds"
    );
    let results = &a.body["results"];
    let (id_a, id_b) = (
        results["charm"]["id"].as_str().unwrap(),
        results["charm-b"]["id"].as_str().unwrap(),
    );
    for (cloud, glance, id) in [
        ("charm", Direct::charm(), id_a),
        ("charm-b", Direct::cloud_b(), id_b),
    ] {
        assert_holds(&glance, id, &file).await;
        assert_eq!(results[cloud]["cloud"], cloud);
        assert_eq!(results[cloud]["os_hash_value"], sha512_hex(&file));
        assert_eq!(results[cloud]["unchanged"], false);
    }
    // Each cloud's image lives in its own Glance only.
    assert!(Direct::charm().image(id_b).await.is_none());
    assert!(Direct::cloud_b().image(id_a).await.is_none());

    // The job shows each cloud's end, and its bytes.
    let jobs = d.get("/v1/jobs").await.body;
    let job = &jobs["jobs"][0];
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["bytes_sent"], size as u64);
    for (cloud, id) in [("charm", id_a), ("charm-b", id_b)] {
        let c = &job["clouds"][cloud];
        assert_eq!(
            (c["state"].as_str(), c["image_id"].as_str()),
            (Some("succeeded"), Some(id))
        );
        assert_eq!(c["bytes_sent"], size as u64);
        assert_eq!(job["results"][cloud]["id"], id);
    }
}

/// What a [`put_switch`] does with a connection whose first request is a `PUT`
/// (the image data: the upload client has connections of its own).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Puts {
    Pass,
    /// Closed at once: Glance "stopped" for uploads.
    Refuse,
    /// Held until the mode changes.
    Hold,
}

/// A forwarder to the Glance at `target`; its `PUT`s follow the switch.
async fn put_switch(target: &str) -> (String, tokio::sync::watch::Sender<Puts>) {
    let target: std::net::SocketAddr = target.trim_start_matches("http://").parse().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (switch, mode) = tokio::sync::watch::channel(Puts::Pass);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut mode = mode.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; 64 * 1024];
                let Ok(n) = inbound.read(&mut first).await else {
                    return;
                };
                if first[..n].starts_with(b"PUT ") {
                    let Ok(now) = mode.wait_for(|m| *m != Puts::Hold).await.map(|m| *m) else {
                        return;
                    };
                    if now == Puts::Refuse {
                        return;
                    }
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                if outbound.write_all(&first[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (url, switch)
}

#[tokio::test]
async fn a_failing_cloud_fails_alone_and_a_retry_with_skip_unchanged_uploads_only_there() {
    let bed = Bed::get();
    let (b_url, b_puts) = put_switch(&bed.glance_b_url).await;
    let mut b_entry = bed.cloud_entry("charm-b");
    b_entry["image_endpoint_override"] = b_url.into();
    let clouds = clouds_document(&[("charm", bed.cloud_entry("charm")), ("charm-b", b_entry)]);
    let d = spawn_daemon(&clouds, |_| {}).await;
    let app = unique_app("fanfail");
    let name = format!("jammy-{app}-x64");
    let file = write_raw_image(&d.upload_dir, "img", 3 * 1024 * 1024);
    let (a_glance, b_glance) = (Direct::charm(), Direct::cloud_b());

    // Cloud B's Glance takes no image data.
    b_puts.send_replace(Puts::Refuse);
    let body = upload_body(&app, &file, json!({"clouds": ["charm", "charm-b"]}));
    let failed = d.post_json("/v1/images", &body).await;
    failed.expect(502, "upload_image_failed");
    assert!(failed.message().contains("charm-b"), "{}", failed.body);
    let results = &failed.body["results"];
    let id_a = results["charm"]["id"]
        .as_str()
        .expect("cloud A succeeded")
        .to_string();
    assert_holds(&a_glance, &id_a, &file).await;
    let b_error = &results["charm-b"]["error"];
    assert!(b_error["code"].is_string(), "{}", failed.body);
    assert!(
        b_error["message"].as_str().unwrap().contains("charm-b"),
        "{b_error}"
    );
    assert!(
        b_glance.images_named(&name).await.is_empty(),
        "B's failed image is deleted"
    );

    // The retry uploads to B only: A's image is the same, and A holds one image.
    b_puts.send_replace(Puts::Pass);
    let body = upload_body(
        &app,
        &file,
        json!({"clouds": ["charm", "charm-b"], "skip_unchanged": true}),
    );
    let retried = d.post_json("/v1/images", &body).await;
    assert_eq!(retried.status, 201, "{}", retried.body);
    let results = &retried.body["results"];
    assert_eq!(results["charm"]["id"], id_a.as_str());
    assert_eq!(results["charm"]["unchanged"], true);
    assert_eq!(results["charm"]["pruned"], json!([]));
    assert_eq!(results["charm-b"]["unchanged"], false);
    assert_holds(&b_glance, results["charm-b"]["id"].as_str().unwrap(), &file).await;
    assert_eq!(a_glance.images_named(&name).await.len(), 1);
    assert_eq!(b_glance.images_named(&name).await.len(), 1);
}

#[tokio::test]
async fn skip_unchanged_uploads_nothing_for_the_same_bytes_and_uploads_other_bytes() {
    let d = charm_only_daemon().await;
    let app = unique_app("skip");
    let name = format!("jammy-{app}-x64");
    let glance = Direct::charm();
    let file = write_raw_image(&d.upload_dir, "img", 1024 * 1024);
    let first = d.upload(&app, &file, 1, json!({})).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first_id = first.body["id"].as_str().unwrap().to_string();

    let same = d
        .upload(&app, &file, 1, json!({"skip_unchanged": true}))
        .await;
    assert_eq!(same.status, 201, "{}", same.body);
    assert_eq!(same.body["id"], first_id.as_str());
    assert_eq!(same.body["unchanged"], true);
    assert_eq!(same.body["pruned"], json!([]));
    let images = glance.images_named(&name).await;
    assert_eq!(images.len(), 1, "no new image: {images:?}");

    // Other bytes under the same path: a normal upload, the old one pruned.
    let file = write_raw_image(&d.upload_dir, "img", 1024 * 1024);
    let other = d
        .upload(&app, &file, 1, json!({"skip_unchanged": true}))
        .await;
    assert_eq!(other.status, 201, "{}", other.body);
    assert_eq!(other.body["unchanged"], false);
    let new_id = other.body["id"].as_str().unwrap();
    assert_ne!(new_id, first_id);
    assert_holds(&glance, new_id, &file).await;
    assert_eq!(other.body["pruned"], json!([first_id]));
}

#[tokio::test]
async fn latest_of_every_cloud_answers_each_and_a_cloud_down_only_for_itself() {
    let bed = Bed::get();
    let mut down = bed.cloud_entry("charm-b");
    down["image_endpoint_override"] = format!("http://127.0.0.1:{}", free_port()).into();
    let d = spawn_daemon(&two_clouds(&[("down", down)]), |_| {}).await;
    let app = unique_app("latestall");
    let file = write_raw_image(&d.upload_dir, "img", 64 * 1024);
    let up = d.upload(&app, &file, 1, json!({"cloud": "charm"})).await;
    assert_eq!(up.status, 201, "{}", up.body);

    let all = d.latest(&app, Some("*")).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let results = &all.body["results"];
    assert_eq!(results.as_object().unwrap().len(), 3, "{}", all.body);
    assert_eq!(results["charm"]["id"], up.body["id"]);
    assert_eq!(results["charm"]["name"], format!("jammy-{app}-x64"));
    assert_eq!(results["charm-b"]["id"], Value::Null);
    assert_eq!(
        results["down"]["error"]["code"], "openstack_connection_failed",
        "{}",
        all.body
    );
    assert!(results["down"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("down"));
}

#[tokio::test]
async fn clouds_that_reach_one_project_or_are_unknown_are_refused_before_any_upload() {
    let bed = Bed::get();
    let d = spawn_daemon(
        &two_clouds(&[("charm-appcred", bed.cloud_entry("charm-appcred"))]),
        |_| {},
    )
    .await;
    let app = unique_app("refuse");
    let file = write_raw_image(&d.upload_dir, "img", 64 * 1024);
    for clouds in [json!(["charm", "charm-appcred"]), json!(["*"])] {
        let a = d
            .post_json(
                "/v1/images",
                &upload_body(&app, &file, json!({"clouds": clouds})),
            )
            .await;
        a.expect(400, "invalid_request");
        assert!(
            a.message().contains("'charm'") && a.message().contains("'charm-appcred'"),
            "names both: {}",
            a.message()
        );
    }
    let a = d
        .post_json(
            "/v1/images",
            &upload_body(&app, &file, json!({"clouds": ["charm", "nope"]})),
        )
        .await;
    a.expect(404, "unknown_cloud");
    let a = d
        .post_json(
            "/v1/images",
            &upload_body(
                &app,
                &file,
                json!({"cloud": "charm", "clouds": ["charm-b"]}),
            ),
        )
        .await;
    a.expect(400, "invalid_request");
    assert!(Direct::charm()
        .images_named(&format!("jammy-{app}-x64"))
        .await
        .is_empty());
    assert!(d.get("/v1/jobs").await.body["jobs"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// Polls job `id` until `done` holds for it.
async fn wait_job(d: &TestDaemon, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = d.get(&format!("/v1/jobs/{id}")).await.body;
        if done(&job) {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_fan_out_and_a_single_upload_of_one_name_take_turns_in_the_cloud_they_share() {
    let bed = Bed::get();
    let (b_url, b_puts) = put_switch(&bed.glance_b_url).await;
    let mut b_entry = bed.cloud_entry("charm-b");
    b_entry["image_endpoint_override"] = b_url.into();
    let clouds = clouds_document(&[("charm", bed.cloud_entry("charm")), ("charm-b", b_entry)]);
    let d = spawn_daemon(&clouds, |c| c.max_concurrent_uploads = 4).await;
    let app = unique_app("turns");
    let file = write_raw_image(&d.upload_dir, "img", 512 * 1024);

    // The fan-out is held in cloud B's upload, with its job showing each cloud.
    b_puts.send_replace(Puts::Hold);
    let body = upload_body(
        &app,
        &file,
        json!({"clouds": ["charm", "charm-b"], "num_revisions": 1}),
    );
    let fan = d.post_json("/v1/images?wait=false", &body).await;
    assert_eq!(fan.status, 202, "{}", fan.body);
    let fan_id = fan.body["job"].as_str().unwrap().to_string();
    let held = wait_job(&d, &fan_id, "the fan-out uploads to both", |j| {
        j["clouds"]["charm-b"]["state"] == "uploading"
            && j["clouds"]["charm"]["image_id"].is_string()
    })
    .await;
    assert_eq!(held["state"], "uploading");

    // The same name to cloud B alone waits; another name to B does not.
    let mut single = upload_body(&app, &file, json!({"cloud": "charm-b"}));
    single["num_revisions"] = 1.into();
    let same = d.post_json("/v1/images?wait=false", &single).await;
    let same_id = same.body["job"].as_str().unwrap().to_string();
    let other_app = unique_app("turnsother");
    let other = d
        .post_json(
            "/v1/images?wait=false",
            &upload_body(&other_app, &file, json!({"cloud": "charm"})),
        )
        .await;
    let other_id = other.body["job"].as_str().unwrap().to_string();
    wait_job(&d, &other_id, "another name uploads meanwhile", |j| {
        j["state"] == "succeeded"
    })
    .await;
    let waiting = d.get(&format!("/v1/jobs/{same_id}")).await.body;
    assert_eq!(
        (waiting["state"].as_str(), waiting["bytes_sent"].as_u64()),
        (Some("queued"), Some(0)),
        "{waiting}"
    );

    // Glance's created_at has whole seconds: the single upload's image must be
    // created in a later second than the fan-out's, to be the newer one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b_puts.send_replace(Puts::Pass);
    let fan = wait_job(&d, &fan_id, "the fan-out ends", |j| {
        j["state"] == "succeeded"
    })
    .await;
    let same = wait_job(&d, &same_id, "the single upload ends", |j| {
        j["state"] == "succeeded"
    })
    .await;
    let fan_b = fan["clouds"]["charm-b"]["image_id"].as_str().unwrap();
    assert_eq!(
        same["result"]["pruned"],
        json!([fan_b]),
        "it ran after: {same}"
    );
    let b_images = Direct::cloud_b()
        .images_named(&format!("jammy-{app}-x64"))
        .await;
    assert_eq!(b_images.len(), 1);
    assert_eq!(b_images[0]["id"], same["image_id"]);
}

/// Runs the CLI with `args`; its exit code, stdout and stderr.
async fn cli(args: Vec<String>) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"));
    command.args(args);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn the_cli_uploads_to_several_clouds_and_prints_a_line_per_cloud() {
    let d = spawn_daemon(&two_clouds(&[]), |_| {}).await;
    let app = unique_app("fancli");
    let file = write_raw_image(&d.upload_dir, "img", 256 * 1024);
    let args = |words: &[&str]| {
        let mut all = vec!["--config".to_string(), d.config_path.display().to_string()];
        all.extend(words.iter().map(|w| w.to_string()));
        all.extend(["--base", "jammy", "--app-name", &app, "--arch", "x64"].map(String::from));
        all
    };
    let src = file.display().to_string();
    let upload = [
        "upload",
        "--num-revisions",
        "1",
        "--src-path",
        &src,
        "--cloud",
        "charm",
        "--cloud",
        "charm-b",
    ];
    let (code, out, err) = cli(args(&upload)).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let id_of = |cloud: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{cloud} ")))
            .unwrap_or_else(|| panic!("no line for {cloud}: {out}"))
            .to_string()
    };
    let (id_a, id_b) = (id_of("charm"), id_of("charm-b"));
    assert_holds(&Direct::charm(), &id_a, &file).await;
    assert_holds(&Direct::cloud_b(), &id_b, &file).await;

    for latest in [
        vec!["latest", "--all-clouds"],
        vec!["latest", "--cloud", "charm", "--cloud", "charm-b"],
    ] {
        let (code, out, err) = cli(args(&latest)).await;
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out, format!("charm {id_a}\ncharm-b {id_b}\n"));
    }
    let mut again = upload.to_vec();
    again.push("--skip-unchanged");
    let (code, out, err) = cli(args(&again)).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("charm {id_a}\ncharm-b {id_b}\n"));
    assert!(
        err.contains("charm: unchanged") && err.contains("charm-b: unchanged"),
        "{err}"
    );
    let (code, _, err) = cli(args(&["latest", "--cloud", "charm", "--cloud", "nope"])).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("nope: error: unknown_cloud"), "{err}");
}
