//! SIGTERM (the contract's "shutdown", issue #7 item 4): new uploads get `503
//! shutting_down`; an upload under way, its client gone, runs on for up to
//! `shutdown_grace`, then is aborted and its image deleted; the exit code is 0;
//! nothing is left `queued` or `saving`.
//!
//! The daemon runs as its own process and reaches Glance through a [`Gate`], so
//! the upload is still under way when the test needs it to be, on any machine.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::helpers::{clouds_document, unique_app, write_raw_image, Direct};
use super::served::{cloud_via, serve, Gate, Served};

const MIB: usize = 1024 * 1024;
/// The daemon's log line when the stop begins.
const STOP_BEGAN: &str = "stopping: new uploads are refused";

/// A daemon with cloud `charm` reaching Glance through `gate`, and a 300 MiB
/// upload under way whose client has hung up; returns it with the image's id.
async fn upload_with_client_gone(gate: &Gate, grace: &str) -> (Served, String, String) {
    let clouds = clouds_document(&[("charm", cloud_via("charm", &gate.url()))]);
    let daemon = serve(&clouds, &format!("shutdown_grace: {grace}\n"), &[]).await;
    let app = unique_app("stop");
    let file = write_raw_image(&daemon.upload_dir, "big.img", 300 * MIB);
    gate.slow_down(8 * 1024 * 1024);
    let client = {
        let request = daemon
            .authed(reqwest::Method::POST, "/v1/images")
            .json(&Served::upload_body(&app, &file, "charm"));
        tokio::spawn(async move { request.send().await })
    };
    let upload = daemon.wait_uploading(Duration::from_secs(60)).await;
    gate.freeze();
    client.abort();
    let _ = client.await;
    let image_id = upload["image_id"].as_str().unwrap().to_string();
    // The client is gone; the upload is not.
    let jobs = daemon.get("/v1/jobs").await.body;
    let running = jobs["jobs"].as_array().map(|list| {
        list.iter()
            .filter(|j| j["state"] != "succeeded" && j["state"] != "failed")
            .count()
    });
    assert_eq!(running, Some(1), "{jobs}");
    (daemon, image_id, format!("jammy-{app}-x64"))
}

/// During the stop: a new upload is refused with 503 shutting_down, the rest answers.
async fn new_uploads_are_refused(daemon: &Served) {
    let file = write_raw_image(&daemon.upload_dir, "late.img", 1024);
    let refused = daemon.upload(&unique_app("late"), &file, "charm").await;
    refused.expect(503, "shutting_down");
    assert_eq!(daemon.get("/v1/status").await.status, 200);
}

/// Glance has not got all the data yet (it says `saving` once the data begins
/// to arrive; a loaded machine may not be there yet).
fn assert_unfinished(image: &Option<Value>) {
    let status = status_of(image);
    assert!(status == "queued" || status == "saving", "{status}");
}

fn status_of(image: &Option<Value>) -> String {
    image.as_ref().map_or("deleted".to_string(), |i| {
        i["status"].as_str().unwrap_or("").to_string()
    })
}

#[tokio::test]
async fn sigterm_lets_an_upload_whose_client_hung_up_finish_then_exits_0() {
    let gate = Gate::start(&super::helpers::Bed::get().glance_url).await;
    let (mut daemon, image_id, name) = upload_with_client_gone(&gate, "10m").await;
    daemon.signal(libc::SIGTERM);
    daemon.wait_log(STOP_BEGAN, Duration::from_secs(10)).await;
    new_uploads_are_refused(&daemon).await;
    let direct = Direct::charm();
    assert_unfinished(&direct.image(&image_id).await);
    gate.thaw();
    let exit = daemon.wait_exit(Duration::from_secs(180)).await;
    assert_eq!(exit.code(), Some(0), "{}", daemon.log());
    let image = direct.image(&image_id).await;
    assert_eq!(status_of(&image), "active", "{}", daemon.log());
    assert_eq!(image.unwrap()["size"], 300 * MIB);
    let left: Vec<String> = direct
        .images_named(&name)
        .await
        .iter()
        .map(|i| format!("{}:{}", i["id"], i["status"]))
        .filter(|s| !s.ends_with(":\"active\""))
        .collect();
    assert!(left.is_empty(), "unfinished images: {left:?}");
    direct.delete(&image_id).await;
}

#[tokio::test]
async fn sigterm_with_a_grace_shorter_than_the_upload_deletes_its_image_and_exits_0() {
    let gate = Gate::start(&super::helpers::Bed::get().glance_url).await;
    let (mut daemon, image_id, name) = upload_with_client_gone(&gate, "2s").await;
    let direct = Direct::charm();
    assert_unfinished(&direct.image(&image_id).await);
    let signalled = Instant::now();
    daemon.signal(libc::SIGTERM);
    daemon.wait_log(STOP_BEGAN, Duration::from_secs(10)).await;
    new_uploads_are_refused(&daemon).await;
    // The gate stays frozen: the upload cannot finish within the grace.
    let exit = daemon.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(exit.code(), Some(0), "{}", daemon.log());
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited before shutdown_grace ended"
    );
    assert_eq!(
        status_of(&direct.image(&image_id).await),
        "deleted",
        "{}",
        daemon.log()
    );
    assert!(
        direct.images_named(&name).await.is_empty(),
        "{}",
        daemon.log()
    );
    assert!(daemon
        .log()
        .contains("deleted the image of an interrupted job"));
}

#[tokio::test]
async fn sigterm_with_nothing_under_way_exits_0_at_once() {
    let clouds = clouds_document(&[("charm", super::helpers::Bed::get().cloud_entry("charm"))]);
    let mut daemon = serve(&clouds, "", &[]).await;
    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{}", daemon.log());
}

#[tokio::test]
async fn a_stop_deletes_the_image_with_the_session_that_made_it_after_its_cloud_was_removed() {
    let gate = Gate::start(&super::helpers::Bed::get().glance_url).await;
    let (mut daemon, image_id, name) = upload_with_client_gone(&gate, "2s").await;
    // A hook replaces the clouds meanwhile: `charm` is gone from the registry.
    let bed = super::helpers::Bed::get();
    let others = clouds_document(&[("charm-b", bed.cloud_entry("charm-b"))]);
    let answer = daemon
        .send(
            daemon
                .authed(reqwest::Method::PUT, "/v1/clouds")
                .header("content-type", "application/yaml")
                .body(others),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(exit.code(), Some(0), "{}", daemon.log());
    let direct = Direct::charm();
    assert_eq!(
        status_of(&direct.image(&image_id).await),
        "deleted",
        "{}",
        daemon.log()
    );
    assert!(
        direct.images_named(&name).await.is_empty(),
        "{}",
        daemon.log()
    );
}
