//! SIGHUP (the contract's "reload"), on a daemon running as its own process: the
//! config and clouds.yaml are read again; an unchanged cloud keeps its session
//! and token, an added one authenticates, a removed one leaves `/v1/status` while
//! an upload under way on it finishes; a broken config is refused and the old
//! one stays in force.

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
    std::fs::write(&daemon.config_path, moved).unwrap();
    std::fs::write(&daemon.clouds_path, "clouds: [not, a, mapping\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_log("clouds.yaml refused", Duration::from_secs(10))
        .await;
    let log = daemon.log();
    assert!(log.contains("take effect only at a restart"), "{log}");
    assert!(log.contains("listen") && log.contains("state_dir"), "{log}");
    // Still serving on the old address, with the old cloud.
    assert_eq!(names(&daemon.status().await), ["charm"]);
}
