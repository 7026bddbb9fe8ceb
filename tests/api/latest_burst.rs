//! Many hooks asking "latest" at once share Glance calls (counted at Glance, from
//! the bed's request log), and no answer is older than its request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// How many requests for that image name reached the bed's first Glance so far.
async fn glance_calls_for(name: &str) -> u64 {
    let dir = Bed::get().clouds_yaml.parent().unwrap().to_path_buf();
    let needle = format!("name={name}");
    tokio::task::spawn_blocking(move || {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/openstack/glance-requests.sh"
        );
        let out = std::process::Command::new(script)
            .args(["--svc", "glance", &needle])
            .env("OSIH_BED_DIR", dir)
            .output()
            .expect("tests/openstack/glance-requests.sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn two_hundred_identical_latest_queries_share_a_handful_of_glance_calls() {
    let d = charm_only_daemon().await;
    let app = unique_app("burst");
    let file = write_raw_image(&d.upload_dir, "b.img", 1024 * 1024);
    let id = d
        .upload(&app, &file, 1, json!({}))
        .await
        .expect(201, "")
        .body["id"]
        .clone();
    let name = format!("jammy-{app}-x64");
    let before = glance_calls_for(&name).await;

    let queries = (0..200).map(|_| d.latest(&app, None));
    let answers = futures_util::future::join_all(queries).await;
    for a in &answers {
        assert_eq!((a.status, &a.body["id"]), (200, &id), "{:?}", a.body);
    }
    let calls = glance_calls_for(&name).await - before;
    assert!(calls >= 1, "the queries must have asked Glance");
    assert!(
        calls <= 4,
        "200 identical queries made {calls} Glance calls"
    );
}

#[tokio::test]
async fn an_image_uploaded_during_a_burst_is_seen_by_every_query_that_started_after_it() {
    let d = Arc::new(charm_only_daemon().await);
    let app = unique_app("fresh");
    let first = write_raw_image(&d.upload_dir, "1.img", 1024 * 1024);
    d.upload(&app, &first, 2, json!({})).await.expect(201, "");

    // Twenty hooks ask again and again; each answer is kept with when it was asked.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
    let pollers: Vec<_> = (0..20)
        .map(|_| {
            let (d, app, stop, seen) = (d.clone(), app.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let a = d.latest(&app, None).await;
                    assert_eq!(a.status, 200, "{:?}", a.body);
                    seen.lock().unwrap().push((asked, a.body["id"].clone()));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = write_raw_image(&d.upload_dir, "2.img", 2 * 1024 * 1024);
    let new_id = d
        .upload(&app, &second, 2, json!({}))
        .await
        .expect(201, "")
        .body["id"]
        .clone();
    let uploaded = Instant::now();
    // Until a few queries started after the upload were answered (a loaded bed
    // answers in seconds, not milliseconds), at most a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at > uploaded)
            .count()
            < 5
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        p.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    let after: Vec<&Value> = seen
        .iter()
        .filter(|(at, _)| *at > uploaded)
        .map(|(_, id)| id)
        .collect();
    assert!(
        !after.is_empty(),
        "no query started after the upload ({} in all)",
        seen.len()
    );
    assert!(
        after.iter().all(|id| **id == new_id),
        "a query that started after the upload got an older image"
    );
}
