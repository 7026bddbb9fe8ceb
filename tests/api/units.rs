//! Several charm units, each with its own daemon (own state dir, own daemon id),
//! sharing one Glance project: no unit deletes another's newer image, and
//! "latest" is never empty while they race.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

fn name_of(app: &str) -> String {
    format!("jammy-{app}-x64")
}

/// The active images of a name, newest first as Glance orders them.
async fn active_newest_first(glance: &Direct, name: &str) -> Vec<Value> {
    let mut images: Vec<Value> = glance
        .images_named(name)
        .await
        .into_iter()
        .filter(|i| i["status"] == "active")
        .collect();
    images.sort_by(|a, b| {
        let key = |i: &Value| {
            (
                i["created_at"].as_str().unwrap_or("").to_string(),
                i["id"].as_str().unwrap_or("").to_string(),
            )
        };
        key(b).cmp(&key(a))
    });
    images
}

/// The image id of the upload under way in `d` (its newest job), once created.
async fn image_of_running_upload(d: &TestDaemon) -> String {
    for _ in 0..1200 {
        let a = d.get("/v1/jobs").await;
        let job = &a.body["jobs"][0];
        if let (Some(id), "uploading") = (
            job["image_id"].as_str(),
            job["state"].as_str().unwrap_or(""),
        ) {
            return id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the upload did not create its image within 60 s");
}

#[tokio::test]
async fn a_slow_upload_that_ends_last_never_deletes_the_newer_image_of_another_unit() {
    let bed = Bed::get();
    let (glance_url, gate) = gated_glance().await;
    let mut slow_entry = bed.cloud_entry("charm");
    slow_entry["image_endpoint_override"] = glance_url.into();
    let a = spawn_daemon(&clouds_document(&[("charm", slow_entry)]), |_| {}).await;
    let b = charm_only_daemon().await;
    let glance = Direct::charm();
    let app = unique_app("units");
    let big = write_raw_image(&a.upload_dir, "big.img", 8 * 1024 * 1024);
    let small = write_raw_image(&b.upload_dir, "small.img", 1024 * 1024);

    // Unit A starts an upload whose data is held back; unit B uploads the same
    // name once A's image exists and a second has passed, so B's image is the
    // newer (Glance's created_at has whole seconds), and B ends first.
    let a_task = {
        let (base, token, body) = (a.base.clone(), a.token.clone(), upload_body(&app, &big, 1));
        tokio::spawn(async move { post(&base, &token, &body).await })
    };
    let a_image = image_of_running_upload(&a).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b_answer = b.upload(&app, &small, 1, json!({})).await;
    assert_eq!(b_answer.status, 201, "{:?}", b_answer.body);
    let b_image = b_answer.body["id"].as_str().unwrap().to_string();
    assert!(
        !a_task.is_finished(),
        "A's upload ended before its data was let through"
    );
    gate.send_replace(true);

    let a_answer = a_task.await.unwrap();
    assert_eq!(a_answer.0, 201, "{:?}", a_answer.1);
    assert_eq!(a_answer.1["id"], a_image.as_str());
    assert!(
        !a_answer.1["pruned"]
            .as_array()
            .unwrap()
            .contains(&json!(b_image)),
        "A pruned B's newer image: {:?}",
        a_answer.1
    );
    let b_in_glance = glance
        .image(&b_image)
        .await
        .expect("B's image is still in Glance");
    assert_eq!(b_in_glance["status"], "active");
    for d in [&a, &b] {
        let latest = d.latest(&app, None).await;
        assert_eq!(
            latest.body["id"],
            b_image.as_str(),
            "latest must be B's newer image"
        );
    }
    // Both survive for now (the count exceeds num_revisions until the next upload).
    let ids: Vec<Value> = active_newest_first(&glance, &name_of(&app))
        .await
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(b_image), json!(a_image)]);
}

#[tokio::test]
async fn racing_units_always_leave_the_newest_image_as_latest() {
    let (a, b) = (charm_only_daemon().await, charm_only_daemon().await);
    let glance = Direct::charm();
    let app = unique_app("race");
    let name = name_of(&app);
    for round in 0..10 {
        let sizes = [1 + rand::random::<u32>() % 8, 1 + rand::random::<u32>() % 8];
        let files = [
            write_raw_image(
                &a.upload_dir,
                &format!("a{round}.img"),
                sizes[0] as usize * 1024 * 1024,
            ),
            write_raw_image(
                &b.upload_dir,
                &format!("b{round}.img"),
                sizes[1] as usize * 1024 * 1024,
            ),
        ];
        let delays = [rand::random::<u64>() % 1500, rand::random::<u64>() % 1500];
        // While the two race, a hook asks for "latest" again and again: once there
        // is an image, the answer is never empty.
        let seen_some = Arc::new(AtomicBool::new(round > 0));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (base, token, app) = (a.base.clone(), a.token.clone(), app.clone());
            let (seen_some, stop) = (seen_some.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().no_proxy().build().unwrap();
                let url = format!("{base}/v1/images/latest?base=jammy&app_name={app}&arch=x64");
                let mut empty_after_some = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body: Value = http
                        .get(&url)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if body["id"].is_null() {
                        empty_after_some += seen_some.load(Ordering::Relaxed) as u32;
                    } else {
                        seen_some.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                empty_after_some
            })
        };
        let mut tasks = Vec::new();
        for (d, (file, delay)) in [&a, &b].into_iter().zip(files.iter().zip(delays)) {
            let (base, token, body) = (d.base.clone(), d.token.clone(), upload_body(&app, file, 1));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                post(&base, &token, &body).await
            }));
        }
        let mut succeeded = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            if status == 201 {
                succeeded += 1;
                continue;
            }
            // The older of the two may be pruned by the newer one's prune the
            // moment it is active, before its own daemon verified it: allowed,
            // and said so.
            assert_eq!(status, 502, "round {round}: {body:?}");
            let message = body["error"]["message"].as_str().unwrap_or("");
            assert!(
                message.contains("deleted before it could be verified"),
                "round {round}: {body:?}"
            );
        }
        assert!(succeeded >= 1, "round {round}: neither upload succeeded");
        stop.store(true, Ordering::Relaxed);
        let empties = watcher.await.unwrap();
        assert_eq!(empties, 0, "round {round} (delays {delays:?}): latest was empty {empties} times after an image existed");

        let active = active_newest_first(&glance, &name).await;
        assert!(!active.is_empty(), "round {round}: no active image left");
        // The newest as Glance orders them: two images of one second (Glance's
        // created_at shows whole seconds) are ordered by the bed's sqlite by
        // their hidden sub-second times, not by id.
        let newest = glance.newest_active(&name).await.expect("an active image");
        let latest = a.latest(&app, None).await;
        assert_eq!(
            latest.body["id"], newest["id"],
            "round {round}: latest is not the newest active image ({active:?})"
        );
    }
}

fn upload_body(app: &str, file: &std::path::Path, num_revisions: u32) -> Value {
    json!({"base": "jammy", "app_name": app, "arch": "x64", "num_revisions": num_revisions, "src_path": file})
}

/// A POST /v1/images outside the daemon's helper, so it can run in a task.
async fn post(base: &str, token: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/v1/images"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}
