//! Chaos: the daemon is killed (SIGKILL) at random points of uploads, single
//! cloud and fan-out, with idempotency keys, and restarted each time. After each
//! restart, once the reaper's first pass is done:
//! - no image of this daemon is `queued`, `saving` or `importing`;
//! - `latest` is never null for a name that had an active image;
//! - no name holds more active images than `num_revisions` plus the uploads cut
//!   off (or left with a failed prune) since its last complete prune;
//! - a retry under the same key gets the same job.
//!
//! `CHAOS_ROUNDS` (default 30, about 1 minute here: 2 s a round) sets the number of uploads.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

use super::helpers::{clouds_document, unique_app, write_raw_image, Bed, Direct};
use super::served::{serve, Served};

const NUM_REVISIONS: usize = 2;

/// Where in the job the kill comes: a random point of each stage.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// At once: queued, or creating its images.
    Start,
    /// Once some of the data was sent.
    Sending,
    /// Verifying (Glance finishing, hashes compared).
    Verifying,
    /// Pruning the old revisions (the image is kept by then).
    Pruning,
    /// After the job ended.
    Ended,
}

impl KillAt {
    const ALL: [KillAt; 5] = [
        KillAt::Start,
        KillAt::Sending,
        KillAt::Verifying,
        KillAt::Pruning,
        KillAt::Ended,
    ];

    /// Waits until the job got there (or ended, or 60 s passed).
    async fn reached(self, d: &Served, job: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let record = job_of(d, job).await;
            let state = record["state"].as_str().unwrap_or_default().to_string();
            let ended = state == "succeeded" || state == "failed";
            let there = match self {
                KillAt::Start => true,
                KillAt::Sending => record["bytes_sent"].as_u64() > Some(0),
                KillAt::Verifying => state == "verifying",
                KillAt::Pruning => state == "pruning",
                KillAt::Ended => false,
            };
            if there || ended || tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the test knows of one name in one cloud.
#[derive(Default)]
struct Name {
    /// It had an active image once: `latest` must never be null again.
    had_active: bool,
    /// Uploads cut off, or whose prune was incomplete, since the last complete one.
    cut_since_complete: usize,
}

fn rounds() -> usize {
    std::env::var("CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

fn image_name(app: &str) -> String {
    format!("jammy-{app}-x64")
}

async fn job_of(d: &Served, job: &str) -> Value {
    d.get(&format!("/v1/jobs/{job}")).await.body
}

/// Waits until the job ended (a restarted daemon records a cut-off job at once).
async fn ended(d: &Served, job: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let record = job_of(d, job).await;
        if record["state"] == "succeeded" || record["state"] == "failed" {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{record}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reaper's passes so far (every start and every `reaper_interval`).
fn reaper_passes(d: &Served) -> usize {
    d.log().matches("reaper: pass done").count()
}

/// Waits for the `n`-th reaper pass in the log.
async fn reaper_passed(d: &Served, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while reaper_passes(d) < n {
        assert!(tokio::time::Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the job (or its cloud, in a fan-out) ended with a complete prune.
fn complete_in(record: &Value, cloud: &str) -> bool {
    let result = match record.get("results").filter(|r| r.is_object()) {
        Some(results) => &results[cloud],
        None => &record["result"],
    };
    result["id"].is_string() && result["prune_incomplete"] != true
}

/// Each cloud's Glance as the test sees it: one session each per round (a login
/// per name and cloud cost more than the round).
struct Glances {
    charm: Direct,
    cloud_b: Direct,
}

impl Glances {
    fn of(&self, cloud: &str) -> &Direct {
        match cloud {
            "charm" => &self.charm,
            _ => &self.cloud_b,
        }
    }
}

/// Checks the names `which` picks (a round's own names: no other name had an
/// upload since its last check; every name at the end).
async fn check_invariants(
    d: &Served,
    glances: &Glances,
    names: &mut HashMap<(String, String), Name>,
    which: impl Fn(&str, &str) -> bool,
    round: usize,
) {
    for ((cloud, app), known) in names.iter_mut() {
        if !which(cloud, app) {
            continue;
        }
        let images = glances.of(cloud).images_named(&image_name(app)).await;
        let unfinished: Vec<&Value> = images
            .iter()
            .filter(|i| {
                matches!(
                    i["status"].as_str(),
                    Some("queued" | "saving" | "importing")
                )
            })
            .collect();
        assert!(
            unfinished.is_empty(),
            "round {round}, {cloud}/{app}: {unfinished:?}\n{}",
            d.log()
        );
        let active = images.iter().filter(|i| i["status"] == "active").count();
        let bound = NUM_REVISIONS + known.cut_since_complete;
        assert!(
            active <= bound,
            "round {round}, {cloud}/{app}: {active} active images, at most {bound}"
        );
        let latest = d
            .get(&format!(
                "/v1/images/latest?base=jammy&app_name={app}&arch=x64&cloud={cloud}"
            ))
            .await;
        assert_eq!(latest.status, 200, "{:?}", latest.body);
        if known.had_active {
            assert!(
                latest.body["id"].is_string(),
                "round {round}, {cloud}/{app}: latest is null"
            );
        }
        known.had_active |= active > 0;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_kills_never_lose_an_image_nor_leave_one_unfinished() {
    let bed = Bed::get();
    let clouds = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("charm-b", bed.cloud_entry("charm-b")),
    ]);
    // An image whose creation a kill cut off is recorded nowhere: it is the
    // reaper's, once older than stale_upload_age. With both at 1 s, the second
    // pass after a restart has every such image.
    let mut d = serve(
        &clouds,
        "stale_upload_age: 1s\nreaper_interval: 1s\n",
        &[("RUST_LOG", "info,openstack_image_helper::images=debug")],
    )
    .await;
    let apps: Vec<String> = (0..3).map(|_| unique_app("chaos")).collect();
    let mut names: HashMap<(String, String), Name> = HashMap::new();
    for app in &apps {
        for cloud in ["charm", "charm-b"] {
            names.insert((cloud.to_string(), app.clone()), Name::default());
        }
    }
    let mut starts = 1;
    reaper_passed(&d, 1).await;
    let total = rounds();
    let began = std::time::Instant::now();
    for round in 0..total {
        let (app, fan_out, size, kill_at) = {
            let mut rng = rand::rng();
            (
                apps[rng.random_range(0..apps.len())].clone(),
                rng.random_bool(0.5),
                rng.random_range(256 * 1024..6 * 1024 * 1024),
                KillAt::ALL[rng.random_range(0..KillAt::ALL.len())],
            )
        };
        let file = write_raw_image(&d.upload_dir, &format!("round-{round}.img"), size);
        let targets: Vec<&str> = if fan_out {
            vec!["charm", "charm-b"]
        } else {
            vec!["charm"]
        };
        let mut body = json!({"base": "jammy", "app_name": app, "arch": "x64",
                              "num_revisions": NUM_REVISIONS, "src_path": file});
        if fan_out {
            body["clouds"] = json!(targets);
        } else {
            body["cloud"] = json!("charm");
        }
        let key = format!("chaos-{app}-{round}");
        let submit = |d: &Served| {
            d.authed(reqwest::Method::POST, "/v1/images?wait=false")
                .header("idempotency-key", key.clone())
                .json(&body)
        };
        let answer = d.send(submit(&d)).await;
        assert_eq!(answer.status, 202, "round {round}: {:?}", answer.body);
        let job = answer.body["job"].as_str().unwrap().to_string();
        kill_at.reached(&d, &job).await;
        d.kill();
        let passes = reaper_passes(&d);
        d.restart().await;
        starts += 1;
        let record = ended(&d, &job).await;
        reaper_passed(&d, passes + 2).await;
        for cloud in &targets {
            let known = names.get_mut(&(cloud.to_string(), app.clone())).unwrap();
            if complete_in(&record, cloud) {
                known.cut_since_complete = 0;
            } else {
                known.cut_since_complete += 1;
            }
        }
        // Fresh sessions each round: another test may revoke charm's tokens.
        let glances = Glances {
            charm: Direct::charm(),
            cloud_b: Direct::cloud_b(),
        };
        let touched = |cloud: &str, a: &str| a == app && targets.contains(&cloud);
        check_invariants(&d, &glances, &mut names, touched, round).await;
        // The hook runs again with its key: the same job, whatever became of it.
        let again = d.send(submit(&d)).await;
        assert!(matches!(again.status, 200 | 202), "{:?}", again.body);
        assert_eq!(again.body["job"], job.as_str(), "round {round}");
        let _ = std::fs::remove_file(&file);
    }
    let glances = Glances {
        charm: Direct::charm(),
        cloud_b: Direct::cloud_b(),
    };
    check_invariants(&d, &glances, &mut names, |_, _| true, total).await;
    eprintln!(
        "chaos: {total} rounds, {starts} starts, {:.1} s a round",
        began.elapsed().as_secs_f64() / total.max(1) as f64
    );
}
