//! Load: many hooks asking "latest" at once, through the daemon and straight to
//! Glance, and the same while uploads run. Prints p50/p99 and checks every answer
//! (a fast wrong answer is no answer). Run by `benches/compare.sh` (`make bench`),
//! which starts the daemon and the bed and passes everything in the environment:
//!
//! - `LOAD_DAEMON` (base URL), `LOAD_TOKEN` (API token), `LOAD_APP` (the app name
//!   whose latest image is `LOAD_EXPECT`);
//! - `LOAD_GLANCE` (Glance's base URL), `LOAD_GLANCE_TOKEN`, `LOAD_OWNER` (the
//!   project id), for the same query straight to Glance;
//! - `LOAD_UPLOADS`: files to upload through the daemon during the third round
//!   (space-separated paths, each under a name of its own);
//! - `LOAD_CONCURRENCY` (default 200).
//!
//! Modes (the argument): `direct`, `daemon`, `during-uploads`; one burst each, so
//! that the script can count Glance's calls around each.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run benches/compare.sh)"))
}

/// Latencies of one round, and how many answers were wrong or failed.
struct Round {
    latencies: Vec<Duration>,
    wrong: usize,
}

impl Round {
    fn print(&self, label: &str) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let pick =
            |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
        println!(
            "{label:<52} p50 {:7.1} ms   p99 {:7.1} ms   max {:7.1} ms   wrong/failed {}",
            ms(pick(0.50)),
            ms(pick(0.99)),
            ms(pick(1.0)),
            self.wrong
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends `n` requests built by `request` at once; `correct` judges each answer.
async fn burst(
    n: usize,
    request: impl Fn() -> reqwest::RequestBuilder,
    correct: impl Fn(&Value) -> bool,
) -> Round {
    let calls = (0..n).map(|_| {
        let sent = request();
        async move {
            let started = Instant::now();
            let body = match sent.send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            (started.elapsed(), body)
        }
    });
    let answers = join_all(calls).await;
    Round {
        wrong: answers
            .iter()
            .filter(|(_, b)| !b.as_ref().is_some_and(&correct))
            .count(),
        latencies: answers.into_iter().map(|(d, _)| d).collect(),
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`: the mode is the first other argument.
    // `cargo test --all-targets` runs this target too, with no mode: nothing to
    // measure without the daemon and the bed that benches/compare.sh starts.
    let Some(mode) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        println!("load: no mode given (direct, daemon, during-uploads); run benches/compare.sh");
        return;
    };
    let n: usize = std::env::var("LOAD_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (daemon, token, app, expect) = (
        env("LOAD_DAEMON"),
        env("LOAD_TOKEN"),
        env("LOAD_APP"),
        env("LOAD_EXPECT"),
    );
    let (glance, glance_token, owner) = (
        env("LOAD_GLANCE"),
        env("LOAD_GLANCE_TOKEN"),
        env("LOAD_OWNER"),
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(n)
        .build()
        .unwrap();
    let latest_url = format!("{daemon}/v1/images/latest?base=jammy&app_name={app}&arch=x64");
    let via_daemon = || http.get(&latest_url).bearer_auth(&token);
    let daemon_ok = |b: &Value| b["id"] == expect.as_str();
    let name = format!("jammy-{app}-x64");
    let direct = || {
        http.get(format!("{glance}/v2/images"))
            .query(&[
                ("name", name.as_str()),
                ("owner", owner.as_str()),
                ("status", "active"),
                ("sort", "created_at:desc,id:desc"),
                ("limit", "1"),
            ])
            .header("X-Auth-Token", &glance_token)
    };
    let glance_ok = |b: &Value| b["images"][0]["id"] == expect.as_str();

    match mode.as_str() {
        "direct" => burst(n, direct, glance_ok)
            .await
            .print(&format!("{n} at once, straight to Glance (a ready token):")),
        "daemon" => burst(n, via_daemon, daemon_ok)
            .await
            .print(&format!("{n} at once, through the daemon:")),
        "during-uploads" => {
            let files: Vec<String> = env("LOAD_UPLOADS")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let uploads = files.iter().enumerate().map(|(i, file)| {
                let body = serde_json::json!({"base": "jammy", "app_name": format!("{app}-up{i}"), "arch": "x64", "num_revisions": 1, "src_path": file});
                let sent = http.post(format!("{daemon}/v1/images")).bearer_auth(&token).json(&body);
                async move { sent.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
            });
            let started = Instant::now();
            let (statuses, round) = tokio::join!(join_all(uploads), async {
                // Let the uploads start streaming first.
                tokio::time::sleep(Duration::from_millis(300)).await;
                burst(n, via_daemon, daemon_ok).await
            });
            round.print(&format!(
                "{n} at once, through the daemon, during {} uploads:",
                files.len()
            ));
            let ok = statuses.iter().filter(|s| **s == 201).count();
            println!(
                "{:<52} {ok}/{} succeeded in {:.1} s",
                "  the uploads:",
                files.len(),
                started.elapsed().as_secs_f64()
            );
        }
        other => panic!("mode '{other}': expected direct, daemon or during-uploads"),
    }
}
