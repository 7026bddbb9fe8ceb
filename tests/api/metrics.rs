//! `GET /metrics`: Prometheus text that the Python `prometheus_client` parser
//! reads, whose counters move with a `latest` and an upload (bytes uploaded grows
//! by the file's size), and that holds no secret, image id or path. The daemon
//! runs as its own process, so that its counters are its own.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use super::helpers::{clouds_document, unique_app, write_raw_image, Bed, Direct};
use super::served::{serve, Served};

/// Samples by `name{labels as sorted JSON}`.
type Samples = HashMap<String, f64>;

/// Parses the text with `tests/openstack/parse-metrics.py` (prometheus_client).
fn parse(text: &str, dir: &Path) -> Samples {
    let file = dir.join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openstack/parse-metrics.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.split('\t');
            let (name, labels, value) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            (format!("{name}{labels}"), value.parse().unwrap())
        })
        .collect()
}

async fn scrape(daemon: &Served) -> (String, Samples) {
    let response = daemon
        .authed(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let samples = parse(&text, daemon.dir.path());
    (text, samples)
}

fn get(samples: &Samples, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

const P: &str = "openstack_image_helper_";

fn glance(operation: &str, status: &str) -> String {
    format!(
        r#"{P}openstack_requests_total{{"operation": "{operation}", "service": "glance", "status": "{status}"}}"#
    )
}

#[tokio::test]
async fn metrics_parse_move_with_latest_and_upload_and_hold_no_secret() {
    let bed = Bed::get();
    let clouds = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("charm-appcred", bed.cloud_entry("charm-appcred")),
    ]);
    let daemon = serve(&clouds, "", &[]).await;
    daemon
        .wait_status(
            "both clouds authenticated",
            std::time::Duration::from_secs(30),
            |s| {
                super::served::authenticated(s, "charm")
                    && super::served::authenticated(s, "charm-appcred")
            },
        )
        .await;

    let anonymous = daemon
        .http
        .get(format!("{}/metrics", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let (_, before) = scrape(&daemon).await;
    let tokens = format!(r#"{P}token_requests_total{{"cloud": "charm", "result": "success"}}"#);
    assert!(get(&before, &tokens) >= 1.0, "{before:?}");
    let version = format!(
        r#"{P}build_info{{"version": "{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(get(&before, &version), 1.0);

    let app = unique_app("metrics");
    let latest = daemon
        .get(&format!(
            "/v1/images/latest?base=jammy&app_name={app}&arch=x64&cloud=charm"
        ))
        .await;
    assert_eq!(latest.status, 200, "{:?}", latest.body);
    let size = 3 * 1024 * 1024 + 17;
    let file = write_raw_image(&daemon.upload_dir, "m.img", size);
    let uploaded = daemon.upload(&app, &file, "charm").await;
    assert_eq!(uploaded.status, 201, "{:?}", uploaded.body);
    let image_id = uploaded.body["id"].as_str().unwrap().to_string();

    let (text, after) = scrape(&daemon).await;
    let moved = |key: &str| get(&after, key) - get(&before, key);
    // latest: one list; the upload: create, upload, get (verify), list (prune).
    assert!(moved(&glance("images.list", "2xx")) >= 2.0, "{text}");
    assert_eq!(moved(&glance("images.create", "2xx")), 1.0, "{text}");
    assert_eq!(moved(&glance("images.upload", "2xx")), 1.0, "{text}");
    assert!(moved(&glance("images.get", "2xx")) >= 1.0, "{text}");
    let latency_count = format!(
        r#"{P}openstack_request_duration_seconds_count{{"operation": "images.upload", "service": "glance"}}"#
    );
    assert_eq!(moved(&latency_count), 1.0, "{text}");
    let bytes = format!(r#"{P}uploaded_bytes_total{{"cloud": "charm"}}"#);
    assert_eq!(moved(&bytes), size as f64, "{text}");
    let durations =
        format!(r#"{P}upload_duration_seconds_count{{"cloud": "charm", "result": "succeeded"}}"#);
    assert_eq!(moved(&durations), 1.0, "{text}");
    assert_eq!(get(&after, &format!("{P}uploads_in_flight")), 0.0);
    for state in ["queued", "uploading", "verifying", "pruning"] {
        let key = format!(r#"{P}jobs{{"state": "{state}"}}"#);
        assert_eq!(get(&after, &key), 0.0, "{key}: {text}");
    }
    // Nothing but bounded label values: no secret, no image id, no path.
    let mut secrets = vec![daemon.token.clone(), Direct::charm().token().await];
    for cloud in ["charm", "charm-appcred"] {
        let auth = &bed.cloud_entry(cloud)["auth"];
        for key in ["password", "application_credential_secret"] {
            if let Some(secret) = auth[key].as_str() {
                secrets.push(secret.to_string());
            }
        }
    }
    assert!(secrets.len() >= 4, "the bed's secrets were not found");
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret in the metrics");
    }
    assert!(!text.contains(&image_id), "an image id in the metrics");
    assert!(
        !text.contains(file.to_str().unwrap()),
        "a path in the metrics"
    );
    assert!(!text.contains("/v2/images"), "a URL path in the metrics");
    Direct::charm().delete(&image_id).await;
}
