//! A verified image is never deleted by a stop or a crash (issue: a job cut off
//! in its prune deleted its own new image, and "latest" answered null). The
//! prune's DELETE of the old revision is held by a fault proxy in front of the
//! real Glance; the daemon is then killed, or its `shutdown_grace` ends.

use std::time::Duration;

use serde_json::{json, Value};

use super::fault_proxy::{Fault, FaultProxy, Rule};
use super::helpers::{clouds_document, unique_app, write_raw_image, Bed, Direct};
use super::served::{serve, Served};

/// A daemon whose cloud `charm` reaches Glance through `proxy`.
async fn behind(proxy: &FaultProxy, extra_config: &str) -> Served {
    let mut entry = Bed::get().cloud_entry("charm");
    entry["image_endpoint_override"] = proxy.url.clone().into();
    serve(&clouds_document(&[("charm", entry)]), extra_config, &[]).await
}

/// Uploads a first revision, then submits a second whose prune is held on its
/// DELETE of the first; returns (first id, the second's job id) once that
/// DELETE reached the proxy.
async fn second_revision_held_in_its_prune(
    d: &Served,
    proxy: &FaultProxy,
    app: &str,
) -> (String, String) {
    let first = write_raw_image(&d.upload_dir, "first.img", 1 << 20);
    let answer = d.upload(app, &first, "charm").await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let old = answer.body["id"].as_str().unwrap().to_string();
    let held = Rule {
        method: "DELETE",
        path_contains: Box::leak(old.clone().into_boxed_str()),
        fault: Fault::Hold,
        times: 1,
    };
    proxy.add_rule(held);
    let second = write_raw_image(&d.upload_dir, "second.img", (1 << 20) + 4096);
    let request = d
        .authed(reqwest::Method::POST, "/v1/images?wait=false")
        .json(&Served::upload_body(app, &second, "charm"));
    let answer = d.send(request).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let job = answer.body["job"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while proxy.count("DELETE", &old) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no prune: {}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (old, job)
}

/// What a user checks: the new image active in Glance, and "latest".
async fn assert_kept(d: &Served, app: &str, new_id: &str) {
    let image = Direct::charm().image(new_id).await;
    assert_eq!(
        image.as_ref().map(|i| i["status"].clone()),
        Some(json!("active")),
        "the verified image must survive: {image:?}\n{}",
        d.log()
    );
    let latest = d
        .get(&format!(
            "/v1/images/latest?base=jammy&app_name={app}&arch=x64&cloud=charm"
        ))
        .await;
    assert_eq!(latest.status, 200, "{:?}", latest.body);
    assert_eq!(latest.body["id"], new_id, "{:?}", latest.body);
}

/// Waits until the restarted daemon's start-up work reached Glance (its
/// leftovers deleted, the reaper's first listing), then a moment for the rest.
async fn settled_after_restart(proxy: &FaultProxy, lists_before: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while proxy.count("GET", "/v2/images") <= lists_before {
        assert!(tokio::time::Instant::now() < deadline, "no reaper pass");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_the_prune_keeps_the_new_image_and_the_job_succeeds() {
    let proxy = FaultProxy::start(Vec::new()).await;
    let mut d = behind(&proxy, "").await;
    let app = unique_app("kept-kill");
    let (old, job) = second_revision_held_in_its_prune(&d, &proxy, &app).await;

    let lists = proxy.count("GET", "/v2/images");
    d.kill_and_restart().await;
    settled_after_restart(&proxy, lists).await;

    let record = d.get(&format!("/v1/jobs/{job}")).await.body;
    assert_eq!(record["state"], "succeeded", "{record}\n{}", d.log());
    assert_eq!(record["error"], Value::Null);
    let new_id = record["image_id"]
        .as_str()
        .expect("the job names its image")
        .to_string();
    assert_ne!(new_id, old);
    assert_eq!(record["result"]["id"], new_id.as_str(), "{record}");
    assert_eq!(record["result"]["prune_incomplete"], true, "{record}");
    assert_eq!(
        proxy.count("DELETE", &new_id),
        0,
        "nothing asked to delete it"
    );
    assert_kept(&d, &app, &new_id).await;

    // The next upload of the name prunes what the cut-off prune left.
    let third = write_raw_image(&d.upload_dir, "third.img", (1 << 20) + 8192);
    let answer = d.upload(&app, &third, "charm").await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert!(
        Direct::charm().image(&old).await.is_none(),
        "the old revision is pruned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_end_of_shutdown_grace_during_the_prune_keeps_the_new_image() {
    let proxy = FaultProxy::start(Vec::new()).await;
    let mut d = behind(&proxy, "shutdown_grace: 2s\n").await;
    let app = unique_app("kept-grace");
    // A hook waiting for the answer: it gets the kept image, not an error.
    let first = write_raw_image(&d.upload_dir, "first.img", 1 << 20);
    assert_eq!(d.upload(&app, &first, "charm").await.status, 201);
    let old = Direct::charm().newest_active(&d_name(&app)).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    proxy.add_rule(Rule {
        method: "DELETE",
        path_contains: Box::leak(old.clone().into_boxed_str()),
        fault: Fault::Hold,
        times: 1,
    });
    let second = write_raw_image(&d.upload_dir, "second.img", (1 << 20) + 4096);
    let waiting = {
        let request = d
            .authed(reqwest::Method::POST, "/v1/images")
            .json(&Served::upload_body(&app, &second, "charm"));
        tokio::spawn(async move {
            let r = request.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while proxy.count("DELETE", &old) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no prune: {}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}: {}", d.log());
    let (code, body) = waiting.await.unwrap();
    assert_eq!(code, 201, "{body}\n{}", d.log());
    assert_eq!(body["prune_incomplete"], true, "{body}");
    let new_id = body["id"].as_str().unwrap().to_string();

    let lists = proxy.count("GET", "/v2/images");
    d.kill_and_restart().await;
    settled_after_restart(&proxy, lists).await;
    let jobs = d.get("/v1/jobs").await.body;
    let job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["image_id"] == new_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no job of {new_id}: {jobs}"));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["prune_incomplete"], true, "{job}");
    assert_kept(&d, &app, &new_id).await;
}

fn d_name(app: &str) -> String {
    format!("jammy-{app}-x64")
}
