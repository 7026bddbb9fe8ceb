//! Transient faults are retried, bounded: a fault proxy in front of the real
//! Glance answers 500 or 503, or drops the connection part-way through the
//! image data. Each retry is a fresh image (the failed one deleted first); a 4xx
//! is never retried.

use std::time::Duration;

use serde_json::{json, Value};

use super::fault_proxy::{Fault, FaultProxy, Rule};
use super::helpers::{clouds_document, md5_hex, unique_app, write_raw_image, Bed, Direct};
use super::served::{serve, Served};

fn on_file(fault: Fault, times: usize) -> Rule {
    Rule {
        method: "PUT",
        path_contains: "/file",
        fault,
        times,
    }
}

/// A daemon with cloud `charm` behind `proxy` (and `charm-b` straight to its Glance).
async fn behind(proxy: &FaultProxy) -> Served {
    let bed = Bed::get();
    let mut entry = bed.cloud_entry("charm");
    entry["image_endpoint_override"] = proxy.url.clone().into();
    let clouds = clouds_document(&[("charm", entry), ("charm-b", bed.cloud_entry("charm-b"))]);
    serve(&clouds, "", &[]).await
}

fn name_of(app: &str) -> String {
    format!("jammy-{app}-x64")
}

/// The images of `app` in cloud A's Glance, whatever their status.
async fn images_of(app: &str) -> Vec<Value> {
    Direct::charm().images_named(&name_of(app)).await
}

/// `upload_retries_total` for `cloud` in the daemon's metrics.
async fn retries_counted(d: &Served, cloud: &str) -> u64 {
    let text = d.get("/metrics").await.body;
    let text = text.as_str().unwrap_or_default().to_string();
    let prefix = format!("openstack_image_helper_upload_retries_total{{cloud=\"{cloud}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// The upload succeeded on its second try: one active image with the file's bytes.
async fn assert_second_try_landed(d: &Served, answer: &Value, app: &str, file: &std::path::Path) {
    assert_eq!(answer["attempts"], 2, "{answer}\n{}", d.log());
    assert_eq!(answer["checksum"], md5_hex(file).as_str());
    let images = images_of(app).await;
    assert_eq!(
        images.len(),
        1,
        "the failed try's image is gone: {images:?}"
    );
    assert_eq!(images[0]["id"], answer["id"]);
    assert_eq!(images[0]["status"], "active");
    assert_eq!(images[0]["checksum"], md5_hex(file).as_str());
    assert_eq!(retries_counted(d, "charm").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_on_the_first_data_upload_is_retried_with_a_fresh_image() {
    let proxy = FaultProxy::start(vec![on_file(Fault::Status(500), 1)]).await;
    let d = behind(&proxy).await;
    let app = unique_app("retry-status");
    let file = write_raw_image(&d.upload_dir, "a.img", 3 << 20);
    let answer = d.upload(&app, &file, "charm").await;
    assert_eq!(answer.status, 201, "{:?}\n{}", answer.body, d.log());
    assert_eq!(proxy.count("PUT", "/file"), 2);
    assert_eq!(
        proxy.count("POST", "/v2/images"),
        2,
        "a fresh image for the retry"
    );
    assert_second_try_landed(&d, &answer.body, &app, &file).await;
}

/// A create whose image Glance made but answered 500 for (its image row
/// committed, its tags then "database is locked" on sqlite): the image the
/// daemon never heard of is deleted, the retry lands, one image is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_500_to_a_create_glance_carried_out_leaves_no_second_image() {
    let create = Rule {
        method: "POST",
        path_contains: "/v2/images",
        fault: Fault::AfterForward(500),
        times: 1,
    };
    let proxy = FaultProxy::start(vec![create]).await;
    let d = behind(&proxy).await;
    let app = unique_app("retry-create");
    let file = write_raw_image(&d.upload_dir, "a.img", 1 << 20);
    let answer = d.upload(&app, &file, "charm").await;
    assert_eq!(answer.status, 201, "{:?}\n{}", answer.body, d.log());
    assert_eq!(proxy.count("POST", "/v2/images"), 2);
    assert_eq!(proxy.count("PUT", "/file"), 1);
    assert_second_try_landed(&d, &answer.body, &app, &file).await;
    Direct::charm()
        .delete(answer.body["id"].as_str().unwrap())
        .await;
}

/// Every create carried out but answered 503: the upload fails after its
/// tries, and none of the images Glance made is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_503_to_every_create_glance_carried_out_fails_and_leaves_nothing() {
    let create = Rule {
        method: "POST",
        path_contains: "/v2/images",
        fault: Fault::AfterForward(503),
        times: usize::MAX,
    };
    let proxy = FaultProxy::start(vec![create]).await;
    let d = behind(&proxy).await;
    let app = unique_app("retry-creates");
    let file = write_raw_image(&d.upload_dir, "a.img", 1 << 20);
    let answer = d.upload(&app, &file, "charm").await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert!(answer.message().contains("503"), "{:?}", answer.body);
    assert_eq!(proxy.count("POST", "/v2/images"), 3);
    assert!(
        images_of(&app).await.is_empty(),
        "{:?}",
        images_of(&app).await
    );
}

/// The prune's DELETE of the old revision answered 500 once (Glance on sqlite:
/// "database is locked" on the image's locations after the data went): it is
/// sent again, and the answer lists it pruned, with nothing incomplete.
#[tokio::test(flavor = "multi_thread")]
async fn a_500_to_a_prune_delete_is_retried() {
    let proxy = FaultProxy::start(Vec::new()).await;
    let d = behind(&proxy).await;
    let app = unique_app("retry-prune");
    let file = write_raw_image(&d.upload_dir, "a.img", 1 << 20);
    let first = d.upload(&app, &file, "charm").await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    proxy.add_rule(Rule {
        method: "DELETE",
        path_contains: "/v2/images/",
        fault: Fault::Status(500),
        times: 1,
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = d.upload(&app, &file, "charm").await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    assert_eq!(
        second.body["pruned"],
        json!([first.body["id"]]),
        "{:?}",
        second.body
    );
    assert_ne!(second.body["prune_incomplete"], true, "{:?}", second.body);
    assert_eq!(proxy.count("DELETE", "/v2/images/"), 2);
    let images = images_of(&app).await;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["id"], second.body["id"]);
    Direct::charm()
        .delete(second.body["id"].as_str().unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_after_1_mib_is_retried() {
    let proxy = FaultProxy::start(vec![on_file(Fault::DropAfter(1 << 20), 1)]).await;
    let d = behind(&proxy).await;
    let app = unique_app("retry-drop");
    let file = write_raw_image(&d.upload_dir, "a.img", 4 << 20);
    let answer = d.upload(&app, &file, "charm").await;
    assert_eq!(answer.status, 201, "{:?}\n{}", answer.body, d.log());
    assert_second_try_landed(&d, &answer.body, &app, &file).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_on_every_try_fails_after_three_tries_and_leaves_nothing() {
    let proxy = FaultProxy::start(vec![on_file(Fault::Status(503), usize::MAX)]).await;
    let d = behind(&proxy).await;
    let app = unique_app("retry-unavailable");
    let file = write_raw_image(&d.upload_dir, "a.img", 1 << 20);
    let answer = d.upload(&app, &file, "charm").await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.code(), "upload_image_failed");
    assert!(answer.message().contains("503"), "{:?}", answer.body);
    assert_eq!(
        proxy.count("PUT", "/file"),
        3,
        "upload_attempts (3) tries in all"
    );
    assert!(images_of(&app).await.is_empty(), "nothing left in Glance");
    assert_eq!(retries_counted(&d, "charm").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4xx_is_never_retried() {
    let proxy = FaultProxy::start(vec![on_file(Fault::Status(400), usize::MAX)]).await;
    let d = behind(&proxy).await;
    let app = unique_app("retry-refused");
    let file = write_raw_image(&d.upload_dir, "a.img", 1 << 20);
    let answer = d.upload(&app, &file, "charm").await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(proxy.count("PUT", "/file"), 1);
    assert!(images_of(&app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_fan_out_only_the_failed_cloud_tries_again() {
    let proxy = FaultProxy::start(vec![on_file(Fault::Status(500), 1)]).await;
    let d = behind(&proxy).await;
    let app = unique_app("retry-fan");
    let file = write_raw_image(&d.upload_dir, "a.img", 2 << 20);
    let body = json!({
        "base": "jammy", "app_name": app, "arch": "x64", "num_revisions": 1,
        "src_path": file, "clouds": ["charm", "charm-b"],
    });
    let request = d
        .authed(reqwest::Method::POST, "/v1/images?wait=false")
        .json(&body);
    let answer = d.send(request).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let job = answer.body["job"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let record = loop {
        let record = d.get(&format!("/v1/jobs/{job}")).await.body;
        if record["state"] == "succeeded" || record["state"] == "failed" {
            break record;
        }
        assert!(tokio::time::Instant::now() < deadline, "{record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["state"], "succeeded", "{record}\n{}", d.log());
    assert_eq!(record["clouds"]["charm"]["attempts"], 2, "{record}");
    assert_eq!(record["clouds"]["charm-b"]["attempts"], 1, "{record}");
    assert_eq!(record["results"]["charm"]["attempts"], 2, "{record}");
    assert_eq!(record["results"]["charm-b"]["attempts"], 1, "{record}");
    assert_eq!(
        record["bytes_sent"], record["bytes_total"],
        "the job's bytes_sent counts the file once"
    );
    let b = Direct::cloud_b()
        .image(record["results"]["charm-b"]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(b["status"], "active");
    assert_eq!(images_of(&app).await.len(), 1);
    assert_eq!(retries_counted(&d, "charm").await, 1);
    assert_eq!(retries_counted(&d, "charm-b").await, 0);
}
