//! Images end to end against the real Glance: upload, verify, latest, revisions,
//! failures that leave nothing behind, one-at-a-time uploads, the reaper, every
//! error code of the contract from a real trigger, and `PUT /v1/clouds`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

async fn charm_daemon() -> TestDaemon {
    let bed = Bed::get();
    spawn_daemon(
        &clouds_document(&[
            ("charm", bed.cloud_entry("charm")),
            ("charm-appcred", bed.cloud_entry("charm-appcred")),
        ]),
        |_| {},
    )
    .await
}

fn name_of(app: &str) -> String {
    format!("jammy-{app}-x64")
}

#[tokio::test]
async fn qcow2_and_raw_uploads_are_active_with_the_files_bytes_and_properties() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    for (kind, file) in [
        (
            "qcow2",
            write_qcow2_image(&d.upload_dir, "a.qcow2", 3 * 1024 * 1024 + 17),
        ),
        (
            "raw",
            write_raw_image(&d.upload_dir, "b.img", 5 * 1024 * 1024 + 3),
        ),
    ] {
        let app = unique_app("up");
        let a = d
            .upload(
                &app,
                &file,
                2,
                json!({"properties": {"hw_disk_bus": "virtio"}}),
            )
            .await;
        assert_eq!(a.status, 201, "{kind}: {:?}", a.body);
        let size = std::fs::metadata(&file).unwrap().len();
        assert_eq!(a.body["status"], "active");
        assert_eq!(a.body["name"], name_of(&app));
        assert_eq!(a.body["size"], size);
        assert_eq!(a.body["checksum"], md5_hex(&file));
        assert_eq!(a.body["os_hash_algo"], "sha512");
        assert_eq!(a.body["os_hash_value"], sha512_hex(&file));
        assert_eq!(a.body["pruned"], json!([]));

        // What Glance itself says.
        let id = a.body["id"].as_str().unwrap();
        let image = glance.image(id).await.expect("the image is in Glance");
        assert_eq!(image["status"], "active");
        assert_eq!(image["name"], name_of(&app));
        assert_eq!(image["disk_format"], kind);
        assert_eq!(image["container_format"], "bare");
        assert_eq!(image["visibility"], "private");
        assert_eq!(image["size"], size);
        assert_eq!(image["checksum"], md5_hex(&file));
        assert_eq!(image["os_hash_value"], sha512_hex(&file));
        assert_eq!(image["architecture"], "x86_64");
        assert_eq!(image["os_distro"], "ubuntu");
        assert_eq!(image["os_version"], "22.04");
        assert_eq!(image["hw_disk_bus"], "virtio");
        assert_eq!(image["image_helper_upload_id"], a.body["upload_id"]);
        assert!(image["image_helper_daemon_id"]
            .as_str()
            .is_some_and(|s| s.len() == 32));

        // The bytes Glance serves are the file's.
        let data = glance
            .http
            .get(format!("{}/v2/images/{id}/file", Bed::get().glance_url))
            .header("X-Auth-Token", glance.token().await)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            data[..] == std::fs::read(&file).unwrap()[..],
            "{kind}: the stored bytes differ"
        );
        glance.delete(id).await;
    }
}

#[tokio::test]
async fn latest_is_the_newest_active_image_never_a_queued_one() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let app = unique_app("latest");
    let none = d.latest(&app, None).await;
    assert_eq!(none.status, 200, "{:?}", none.body);
    assert_eq!(
        none.body,
        json!({"id": null, "name": name_of(&app), "created_at": null})
    );

    let file = write_raw_image(&d.upload_dir, "l.img", 1024 * 1024);
    let first = d.upload(&app, &file, 5, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Glance's created_at counts whole seconds; a tie would be broken by id.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = d.upload(&app, &file, 5, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    // A newer image that is still queued (an upload under way elsewhere).
    let queued = glance.create_queued(&name_of(&app), json!({})).await;

    for cloud in [None, Some("charm"), Some("charm-appcred")] {
        let a = d.latest(&app, cloud).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["id"], second.as_str(), "{cloud:?}");
        assert_eq!(a.body["name"], name_of(&app));
        assert!(a.body["created_at"].as_str().is_some());
    }
    for id in [first, second, queued] {
        glance.delete(&id).await;
    }
}

#[tokio::test]
async fn revisions_keep_the_newest_and_spare_protected_and_young_unfinished_images() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let app = unique_app("rev");
    let file = write_raw_image(&d.upload_dir, "r.img", 512 * 1024);
    let mut ids = Vec::new();
    let mut answers = Vec::new();
    let mut pruned_all = Vec::new();
    for _ in 0..4 {
        // Glance's created_at counts whole seconds; a tie would be broken by id.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let a = d.upload(&app, &file, 2, json!({})).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        ids.push(a.body["id"].as_str().unwrap().to_string());
        answers.push(a.body.clone());
        pruned_all.extend(
            a.body["pruned"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string()),
        );
    }
    // Exactly the two newest remain; `pruned` listed the others.
    let mut remaining: Vec<String> = glance
        .images_named(&name_of(&app))
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    remaining.sort();
    let mut newest = vec![ids[2].clone(), ids[3].clone()];
    newest.sort();
    assert_eq!(remaining, newest, "answers: {answers:?}");
    pruned_all.sort();
    let mut oldest = vec![ids[0].clone(), ids[1].clone()];
    oldest.sort();
    assert_eq!(pruned_all, oldest);

    // A protected older image is counted but never deleted; a young queued image
    // of "another unit" is never touched.
    glance.set_protected(&ids[2], true).await;
    let other_unit = glance.create_queued(&name_of(&app), json!({})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = d.upload(&app, &file, 1, json!({})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let new = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["pruned"], json!([ids[3]]));
    let left: Vec<String> = glance
        .images_named(&name_of(&app))
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    for id in [&new, &ids[2], &other_unit] {
        assert!(left.contains(id), "{id} should remain: {left:?}");
    }
    assert_eq!(left.len(), 3);
    glance.set_protected(&ids[2], false).await;
    for id in [&new, &ids[2], &other_unit] {
        glance.delete(id).await;
    }
}

#[tokio::test]
async fn a_failed_upload_leaves_no_image_and_keeps_the_older_revisions() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let app = unique_app("fail");
    let good = write_raw_image(&d.upload_dir, "good.img", 256 * 1024);
    let kept = d.upload(&app, &good, 1, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A raw file declared qcow2: refused before Glance sees it (0.3; Glance's
    // inspector would answer 4xx).
    let a = d
        .upload(&app, &good, 1, json!({"disk_format": "qcow2"}))
        .await;
    a.expect(422, "unsafe_image");
    assert!(
        a.message().contains("disk_format says qcow2"),
        "{}",
        a.message()
    );

    // The file shrinks while it is being sent.
    let big = write_raw_image(&d.upload_dir, "shrinking.img", 96 * 1024 * 1024);
    let upload = {
        let path = big.clone();
        let body = json!({"base": "jammy", "app_name": app, "arch": "x64", "num_revisions": 1, "src_path": path});
        d.send(
            d.authed(reqwest::Method::POST, "/v1/images")
                .header("x-request-id", "shrink-test")
                .json(&body),
        )
    };
    let shrink = async {
        loop {
            // The newest job is this upload.
            let jobs = d.get("/v1/jobs").await;
            let job = &jobs.body["jobs"][0];
            let sent = match job["request"]["src_path"].as_str() {
                Some(p) if p == big.to_str().unwrap() => job["bytes_sent"].as_u64().unwrap_or(0),
                _ => 0,
            };
            if sent > 0 {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&big)
                    .unwrap()
                    .set_len(1024 * 1024)
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (a, ()) = tokio::join!(upload, shrink);
    a.expect(502, "upload_image_failed");
    assert!(a.message().contains("shrank"), "{}", a.message());

    // Nothing left behind but the older revision, intact.
    let left: Vec<Value> = glance.images_named(&name_of(&app)).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], kept.as_str());
    assert_eq!(left[0]["status"], "active");
    assert_eq!(d.latest(&app, None).await.body["id"], kept.as_str());
    glance.delete(&kept).await;
}

#[tokio::test]
async fn an_image_over_glances_size_cap_is_image_too_large_and_leaves_nothing() {
    let bed = Bed::get();
    let capped = bed
        .glance_capped_url
        .clone()
        .expect("the bed runs a second Glance API with a small image_size_cap (up.sh)");
    let mut entry = bed.cloud_entry("charm");
    entry["image_endpoint_override"] = capped.into();
    let d = spawn_daemon(&clouds_document(&[("capped", entry)]), |_| {}).await;
    let glance = Direct::charm();
    let app = unique_app("cap");
    let small = write_raw_image(&d.upload_dir, "small.img", 64 * 1024);
    let kept = d.upload(&app, &small, 1, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let big = write_raw_image(&d.upload_dir, "big.img", 24 * 1024 * 1024);
    let a = d.upload(&app, &big, 1, json!({})).await;
    a.expect(413, "image_too_large");
    assert!(
        a.message().contains("capped") && a.message().contains("413"),
        "{}",
        a.message()
    );
    let left = glance.images_named(&name_of(&app)).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["id"], kept.as_str());
    glance.delete(&kept).await;
}

#[tokio::test]
async fn concurrent_uploads_of_one_name_run_one_after_the_other() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let app = unique_app("conc");
    let f1 = write_raw_image(&d.upload_dir, "c1.img", 48 * 1024 * 1024);
    let f2 = write_raw_image(&d.upload_dir, "c2.img", 48 * 1024 * 1024);
    let (a, b) = tokio::join!(d.upload(&app, &f1, 1, json!({})), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        d.upload(&app, &f2, 1, json!({})).await
    });
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(b.status, 201, "{:?}", b.body);
    // One after the other: the later one pruned the earlier, which was complete.
    let (first, second) = if b.body["pruned"] == json!([a.body["id"]]) {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(
        second.body["pruned"],
        json!([first.body["id"]]),
        "{:?} / {:?}",
        first.body,
        second.body
    );
    assert_eq!(first.body["pruned"], json!([]));
    let left = glance.images_named(&name_of(&app)).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], second.body["id"]);
    glance.delete(second.body["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn the_reaper_deletes_only_this_daemons_abandoned_uploads() {
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |c| {
            c.stale_upload_age = Duration::from_secs(6);
            c.reaper_interval = Duration::from_secs(1);
        },
    )
    .await;
    let daemon_id = std::fs::read_to_string(d.config.state_dir.join("daemon-id"))
        .unwrap()
        .trim()
        .to_string();
    let glance = Direct::charm();
    let app = unique_app("reap");
    let created = std::time::Instant::now();
    let ours = glance
        .create_queued(
            &name_of(&app),
            json!({"image_helper_daemon_id": daemon_id, "image_helper_upload_id": "crashed"}),
        )
        .await;
    let foreign = glance
        .create_queued(
            &name_of(&app),
            json!({"image_helper_daemon_id": "another-daemon"}),
        )
        .await;
    let unmarked = glance.create_queued(&name_of(&app), json!({})).await;
    // Young: still there after a reaper round (Glance's created_at counts whole
    // seconds, so "young" is judged well inside the 6 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let exists = glance.image(&ours).await.is_some();
    if created.elapsed() < Duration::from_secs(4) {
        assert!(exists, "a young upload was reaped");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while glance.image(&ours).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned upload was not reaped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        glance.image(&foreign).await.is_some(),
        "an image of another daemon was reaped"
    );
    assert!(
        glance.image(&unmarked).await.is_some(),
        "an image without the marker was reaped"
    );
    glance.delete(&foreign).await;
    glance.delete(&unmarked).await;
}

#[tokio::test]
async fn every_request_error_code_comes_from_a_real_trigger() {
    let bed = Bed::get();
    let mut bad_password = bed.cloud_entry("charm");
    bad_password["auth"]["password"] = "nope".into();
    let mut no_glance = bed.cloud_entry("charm");
    no_glance["image_endpoint_override"] = format!("http://127.0.0.1:{}", free_port()).into();
    let mut not_glance = bed.cloud_entry("charm");
    // Keystone at the image endpoint: it answers 404 to /v2/images.
    not_glance["image_endpoint_override"] = bed.keystone_url.trim_end_matches("/v3").into();
    let mut no_keystone = bed.cloud_entry("charm");
    no_keystone["auth"]["auth_url"] = format!("http://127.0.0.1:{}/v3", free_port()).into();
    let d = spawn_daemon(
        &clouds_document(&[
            ("charm", bed.cloud_entry("charm")),
            ("bad-password", bad_password),
            ("no-glance", no_glance),
            ("not-glance", not_glance),
            ("no-keystone", no_keystone),
        ]),
        |_| {},
    )
    .await;
    let file = write_raw_image(&d.upload_dir, "e.img", 1024);
    std::fs::create_dir_all(d.upload_dir.join("adir")).unwrap();
    let outside = d.dir.path().join("outside.img");
    std::fs::write(&outside, b"x").unwrap();
    std::os::unix::fs::symlink(&outside, d.upload_dir.join("escape.img")).unwrap();
    let check = |a: Answer, status: u16, code: &str| {
        a.expect(status, code);
        assert!(!a.message().is_empty());
        a
    };

    check(
        d.upload("runner", &file, 0, json!({})).await,
        400,
        "invalid_request",
    );
    check(
        d.upload("Runner", &file, 1, json!({})).await,
        400,
        "invalid_request",
    );
    check(
        d.upload("runner-1", &file, 1, json!({})).await,
        400,
        "invalid_request",
    );
    let a = d
        .post_json("/v1/images", &json!({"base": "bionic", "app_name": "r", "arch": "x64", "num_revisions": 1, "src_path": file}))
        .await;
    check(a, 400, "invalid_request");
    let a = d
        .post_json("/v1/images", &json!({"base": "jammy", "app_name": "r", "arch": "amd64", "num_revisions": 1, "src_path": file}))
        .await;
    check(a, 400, "invalid_request");
    check(
        d.upload(
            "runner",
            &file,
            1,
            json!({"properties": {"os_distro": "debian"}}),
        )
        .await,
        400,
        "invalid_request",
    );
    check(
        d.get("/v1/images/latest?base=jammy&arch=x64").await,
        400,
        "invalid_request",
    );
    check(
        d.get("/v1/images/latest?base=jammy&app_name=r&arch=sparc")
            .await,
        400,
        "invalid_request",
    );

    check(
        d.upload("runner", &d.upload_dir.join("missing.img"), 1, json!({}))
            .await,
        400,
        "file_not_found",
    );
    check(
        d.upload("runner", &d.upload_dir.join("adir"), 1, json!({}))
            .await,
        400,
        "file_not_found",
    );
    // A FIFO would block a plain open(): it must be refused, not waited on.
    let fifo = d.upload_dir.join("fifo.img");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let a = check(
        d.upload("runner", &fifo, 1, json!({})).await,
        400,
        "file_not_found",
    );
    assert!(a.message().contains("FIFO"), "{}", a.message());
    check(
        d.upload("runner", std::path::Path::new("/etc/passwd"), 1, json!({}))
            .await,
        403,
        "path_not_allowed",
    );
    check(
        d.upload(
            "runner",
            std::path::Path::new("/nonexistent/x.img"),
            1,
            json!({}),
        )
        .await,
        403,
        "path_not_allowed",
    );
    let a = check(
        d.upload("runner", &d.upload_dir.join("escape.img"), 1, json!({}))
            .await,
        403,
        "path_not_allowed",
    );
    assert!(a.message().contains("outside"));

    check(
        d.latest("runner", Some("nowhere")).await,
        404,
        "unknown_cloud",
    );
    check(
        d.upload("runner", &file, 1, json!({"cloud": "nowhere"}))
            .await,
        404,
        "unknown_cloud",
    );

    let a = check(
        d.latest("runner", Some("bad-password")).await,
        422,
        "openstack_unauthorized",
    );
    assert!(a.message().contains("bad-password"));

    let a = check(
        d.latest("runner", Some("no-glance")).await,
        502,
        "openstack_connection_failed",
    );
    assert!(
        a.message().contains("no-glance") && a.message().contains("Glance"),
        "{}",
        a.message()
    );
    let a = check(
        d.latest("runner", Some("not-glance")).await,
        502,
        "get_image_failed",
    );
    assert!(a.message().contains("404"), "{}", a.message());
    let a = check(
        d.upload("runner", &file, 1, json!({"cloud": "not-glance"}))
            .await,
        502,
        "upload_image_failed",
    );
    assert!(a.message().contains("404"), "{}", a.message());

    let a = check(
        d.latest("runner", Some("no-keystone")).await,
        503,
        "not_ready",
    );
    assert!(a.message().contains("no-keystone"));
}

#[tokio::test]
async fn put_clouds_switches_only_when_every_cloud_authenticates() {
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |c| {
            c.default_cloud = Some("charm".into());
        },
    )
    .await;
    let clouds_path = d.config.clouds_yaml.clone().unwrap();
    let put = |doc: String| {
        d.send(
            d.authed(reqwest::Method::PUT, "/v1/clouds")
                .header("content-type", "application/yaml")
                .body(doc),
        )
    };

    // Bad credentials in one cloud: refused, naming it; the old file and set stay.
    let mut bad = bed.cloud_entry("charm");
    bad["auth"]["password"] = "wrong-one".into();
    let a = put(clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("second", bad),
    ]))
    .await;
    a.expect(422, "openstack_unauthorized");
    assert!(a.message().contains("second") && !a.message().contains("wrong-one"));
    assert_eq!(
        std::fs::read_to_string(&clouds_path).unwrap(),
        clouds_document(&[("charm", bed.cloud_entry("charm"))])
    );

    let a = put("clouds: [not, a, mapping".into()).await;
    a.expect(422, "invalid_clouds_yaml");
    let a = put(clouds_document(&[("other", bed.cloud_entry("charm"))])).await;
    a.expect(422, "invalid_clouds_yaml");

    // A good document (as JSON this time): written 0600 and in force.
    let doc = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("appcred", bed.cloud_entry("charm-appcred")),
    ]);
    let as_json: Value = serde_yaml::from_str(&doc).unwrap();
    let a = d
        .send(d.authed(reqwest::Method::PUT, "/v1/clouds").json(&as_json))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // (JSON objects have no order: serde_json sorted the keys.)
    assert_eq!(a.body, json!({"clouds": ["appcred", "charm"]}));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&clouds_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let names: Vec<Value> = d.status().await["clouds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, [json!("appcred"), json!("charm")]);
    assert_eq!(d.latest("runner", Some("appcred")).await.status, 200);
}

/// The charm's install flow: the daemon starts before any credentials exist, says
/// so, and takes its first clouds.yaml over the API.
#[tokio::test]
async fn a_daemon_without_clouds_starts_and_takes_its_first_clouds_yaml() {
    let bed = Bed::get();
    let d = spawn_daemon("unused", |c| {
        c.clouds_yaml = Some(c.state_dir.with_file_name("later/clouds.yaml"));
    })
    .await;
    let target = d.config.clouds_yaml.clone().unwrap();
    assert!(!target.exists());
    assert_eq!(d.status().await["clouds"], json!([]));
    let a = d.latest("runner", None).await;
    a.expect(503, "not_ready");
    assert!(a.message().contains("PUT"), "{}", a.message());

    let doc = clouds_document(&[("charm", bed.cloud_entry("charm"))]);
    let a = d
        .send(
            d.authed(reqwest::Method::PUT, "/v1/clouds")
                .header("content-type", "application/yaml")
                .body(doc.clone()),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), doc);
    assert_eq!(d.latest("runner", None).await.status, 200);
}
