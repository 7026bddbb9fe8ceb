//! Admission of uploads: identical requests arriving together get one job, and
//! a burst past `max_queued_uploads` is refused with `429` and `Retry-After`
//! while the daemon goes on answering.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use super::helpers::{clouds_document, gated_glance, unique_app, write_raw_image, Bed};
use super::served::serve;

#[tokio::test(flavor = "multi_thread")]
async fn identical_requests_arriving_together_get_one_job_never_a_409() {
    let bed = Bed::get();
    // The data is held, so the job stays under way while the requests arrive.
    let (glance_url, _gate) = gated_glance().await;
    let mut entry = bed.cloud_entry("charm");
    entry["image_endpoint_override"] = glance_url.into();
    let d = serve(&clouds_document(&[("charm", entry)]), "", &[]).await;
    let app = unique_app("twins");
    let file = write_raw_image(&d.upload_dir, "twins.img", 1 << 20);
    let body = json!({"base": "jammy", "app_name": app, "arch": "x64", "num_revisions": 1,
                      "src_path": file, "cloud": "charm"});
    let requests = (0..20).map(|_| {
        let request = d
            .authed(reqwest::Method::POST, "/v1/images?wait=false")
            .header("idempotency-key", format!("{app}-1"))
            .header("x-request-id", format!("{app}-req"))
            .json(&body);
        d.send(request)
    });
    let answers = join_all(requests).await;
    let mut jobs: Vec<&str> = answers
        .iter()
        .map(|a| {
            assert!(matches!(a.status, 200 | 202), "{} {:?}", a.status, a.body);
            a.body["job"].as_str().unwrap()
        })
        .collect();
    jobs.dedup();
    assert_eq!(jobs.len(), 1, "one job for the twenty: {jobs:?}");
}

/// How many of the daemon's descriptors are open on `file`.
fn open_on(pid: i32, file: &std::path::Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == file)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_max_queued_uploads_is_refused_and_the_daemon_still_answers() {
    let bed = Bed::get();
    let (glance_url, _gate) = gated_glance().await;
    let mut entry = bed.cloud_entry("charm");
    entry["image_endpoint_override"] = glance_url.into();
    let d = serve(
        &clouds_document(&[("charm", entry)]),
        "max_concurrent_uploads: 1\n",
        &[],
    )
    .await;
    let file = write_raw_image(&d.upload_dir, "burst.img", 64 * 1024);
    // The one upload slot is taken first (its data held at the gate).
    let first = json!({"base": "jammy", "app_name": unique_app("burstfirst"),
                       "arch": "x64", "num_revisions": 1, "src_path": file, "cloud": "charm"});
    let answer = d
        .send(
            d.authed(reqwest::Method::POST, "/v1/images?wait=false")
                .json(&first),
        )
        .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    d.wait_uploading(Duration::from_secs(120)).await;
    let held_before = open_on(d.pid(), &file);
    let requests = (1..200).map(|i| {
        let body = json!({"base": "jammy", "app_name": unique_app(&format!("burst{i}x")),
                          "arch": "x64", "num_revisions": 1, "src_path": file, "cloud": "charm"});
        let request = d
            .authed(reqwest::Method::POST, "/v1/images?wait=false")
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    });
    let answers = join_all(requests).await;
    let accepted = answers.iter().filter(|(s, _, _)| *s == 202).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(
        accepted + refused.len(),
        199,
        "{:?}",
        answers.iter().find(|(s, _, _)| !matches!(s, 202 | 429))
    );
    // Beside the one uploading, max_queued_uploads (64) wait.
    assert_eq!(accepted, 64, "accepted {accepted}");
    for (_, retry_after, body) in &refused {
        assert_eq!(body["error"]["code"], "too_many_uploads", "{body}");
        let seconds: u64 = retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=300).contains(&seconds), "{seconds}");
    }
    // Every queued job holds its file open; a refused one holds nothing.
    let held = open_on(d.pid(), &file);
    assert!(
        (64..=64 + held_before).contains(&held),
        "{held_before} descriptors of the file before the burst, {held} after"
    );
    // The daemon answers at once. Status and health ask no one; latest waits for
    // one Glance call, which a loaded bed may take seconds to answer: it must
    // answer, not be starved.
    let status = tokio::time::timeout(Duration::from_secs(5), d.get("/v1/status"))
        .await
        .expect("status answers within 5 s");
    assert_eq!(status.status, 200, "{:?}", status.body);
    let latest = d
        .get("/v1/images/latest?base=jammy&app_name=nothing&arch=x64")
        .await;
    assert_eq!(latest.status, 200, "{:?}", latest.body);
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        d.http.get(format!("{}/v1/health", d.base)).send(),
    )
    .await
    .expect("health answers within 5 s")
    .unwrap();
    assert_eq!(health.status(), 200);
}
