//! The format the cloud wants (API.md 0.3, clouds.yaml `image_format`,
//! "Conversion", `507 insufficient_space`), against the bed's `charm-raw`
//! (the charm cloud, RegionOne's Glance, with `image_format: raw`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::*;

/// The conversion count is one process-wide metric: the tests that read it
/// run one at a time.
static METRIC_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn qemu_img(dir: &Path, args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A qcow2 of a `size`-byte disk whose first half is random data and whose
/// second half was never written.
fn half_empty_qcow2(dir: &Path, name: &str, size: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let raw = dir.join(format!("{name}.src"));
    let mut data = vec![0u8; size];
    rand::fill(&mut data[..size / 2]);
    std::fs::write(&raw, &data).unwrap();
    qemu_img(
        dir,
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            name,
        ],
    );
    std::fs::remove_file(raw).unwrap();
    dir.join(name)
}

/// `qemu-img convert -O raw` of `image`, done here, away from the daemon.
fn expected_raw(image: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("expected.raw");
    qemu_img(
        dir.path(),
        &[
            "convert",
            "-q",
            "-O",
            "raw",
            image.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    (dir, raw)
}

/// `entry` of the bed's clouds.yaml with `image_format` set.
fn wanting(cloud: &str, format: &str) -> serde_yaml::Value {
    let mut entry = Bed::get().cloud_entry(cloud);
    entry["image_format"] = format.into();
    entry
}

fn staging_entries(d: &TestDaemon) -> Vec<PathBuf> {
    match std::fs::read_dir(d.config.state_dir.join("staging")) {
        Ok(list) => list.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// `openstack_image_helper_image_conversions_total{from="qcow2",to="raw"}`.
async fn conversions(d: &TestDaemon) -> u64 {
    let text = d
        .http
        .get(format!("{}/metrics", d.base))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("openstack_image_helper_image_conversions_total")
                && l.contains(r#"from="qcow2""#)
                && l.contains(r#"to="raw""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Asserts that `answer` (one cloud's) is an active image holding `file`'s bytes.
fn assert_answer_holds(answer: &Value, file: &Path, format: &str, disk_format: &str) {
    assert_eq!(answer["status"], "active", "{answer}");
    assert_eq!(answer["format"], format, "{answer}");
    assert_eq!(answer["disk_format"], disk_format, "{answer}");
    assert_eq!(
        answer["size"],
        std::fs::metadata(file).unwrap().len(),
        "{answer}"
    );
    assert_eq!(answer["checksum"], md5_hex(file), "{answer}");
    assert_eq!(answer["os_hash_value"], sha512_hex(file), "{answer}");
}

#[tokio::test]
async fn a_qcow2_lands_as_raw_in_a_cloud_that_wants_raw() {
    let _one = METRIC_LOCK.lock().await;
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[("charm-raw", bed.cloud_entry("charm-raw"))]),
        |_| {},
    )
    .await;
    let file = half_empty_qcow2(&d.upload_dir, "disk.qcow2", 24 << 20);
    let (_keep, raw) = expected_raw(&file);
    let before = conversions(&d).await;
    let app = unique_app("convert");
    let a = d.upload(&app, &file, 2, json!({})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_answer_holds(&a.body, &raw, "qcow2", "raw");
    assert_eq!(conversions(&d).await, before + 1);

    // What Glance holds: active, raw, the converted bytes.
    let image = Direct::charm()
        .image(a.body["id"].as_str().unwrap())
        .await
        .expect("the image exists");
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["disk_format"], "raw", "{image}");
    assert_eq!(image["checksum"], md5_hex(&raw), "{image}");
    assert_eq!(image["os_hash_value"], sha512_hex(&raw), "{image}");
    assert_eq!(image["size"], 24 << 20, "{image}");
    assert!(staging_entries(&d).is_empty(), "{:?}", staging_entries(&d));

    // A file already raw is sent as it is, and nothing is converted.
    let plain = write_raw_image(&d.upload_dir, "plain.img", 3 << 20);
    let before = conversions(&d).await;
    let a = d.upload(&app, &plain, 2, json!({})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_answer_holds(&a.body, &plain, "raw", "raw");
    assert_eq!(conversions(&d).await, before);
}

#[tokio::test]
async fn a_fan_out_converts_once_and_each_cloud_gets_its_format() {
    let _one = METRIC_LOCK.lock().await;
    let bed = Bed::get();
    // Two clouds of their own projects want raw; charm-b takes the file as is.
    let clouds = clouds_document(&[
        ("charm-raw", bed.cloud_entry("charm-raw")),
        ("charm-b", bed.cloud_entry("charm-b")),
        ("charm-import-raw", wanting("charm-import", "raw")),
    ]);
    let d = spawn_daemon(&clouds, |_| {}).await;
    let file = half_empty_qcow2(&d.upload_dir, "disk.qcow2", 16 << 20);
    let (_keep, raw) = expected_raw(&file);
    let before = conversions(&d).await;
    let app = unique_app("convfan");
    let a = d
        .upload(
            &app,
            &file,
            2,
            json!({"clouds": ["charm-raw", "charm-b", "charm-import-raw"]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        conversions(&d).await,
        before + 1,
        "one conversion for two clouds"
    );
    let results = &a.body["results"];
    assert_answer_holds(&results["charm-raw"], &raw, "qcow2", "raw");
    assert_answer_holds(&results["charm-import-raw"], &raw, "qcow2", "raw");
    assert_answer_holds(&results["charm-b"], &file, "qcow2", "qcow2");
    let in_b = Direct::cloud_b()
        .image(results["charm-b"]["id"].as_str().unwrap())
        .await
        .expect("the image exists in cloud B");
    assert_eq!(in_b["disk_format"], "qcow2", "{in_b}");
    assert_eq!(in_b["checksum"], md5_hex(&file), "{in_b}");
    assert!(staging_entries(&d).is_empty(), "{:?}", staging_entries(&d));

    // The job: each cloud done; the bytes read are the file's and the raw disk's.
    let jobs = d.get("/v1/jobs").await.body;
    let job = &jobs["jobs"][0];
    assert_eq!(job["state"], "succeeded", "{job}");
    let total = std::fs::metadata(&file).unwrap().len() + (16 << 20);
    assert_eq!(job["bytes_total"], total, "{job}");
    assert_eq!(job["bytes_sent"], total, "{job}");
}

#[tokio::test]
async fn not_enough_staging_space_is_insufficient_space_and_leaves_nothing() {
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[("charm-raw", bed.cloud_entry("charm-raw"))]),
        |_| {},
    )
    .await;
    // A 100 TiB disk in a file of a few hundred KiB.
    std::fs::create_dir_all(&d.upload_dir).unwrap();
    qemu_img(
        &d.upload_dir,
        &["create", "-q", "-f", "qcow2", "huge.qcow2", "100T"],
    );
    let file = d.upload_dir.join("huge.qcow2");
    let app = unique_app("nospace");
    let a = d.upload(&app, &file, 2, json!({})).await;
    a.expect(507, "insufficient_space");
    let message = a.message();
    let staging = d.config.state_dir.join("staging");
    assert!(
        message.contains(&staging.display().to_string()),
        "{message}"
    );
    assert!(message.contains(&(100u64 << 40).to_string()), "{message}");
    assert!(message.contains("are free"), "{message}");
    assert!(staging_entries(&d).is_empty(), "{:?}", staging_entries(&d));
    assert!(Direct::charm()
        .images_named(&format!("jammy-{app}-x64"))
        .await
        .is_empty());

    // In a fan-out, the raw cloud fails alone; the other gets the file.
    let clouds = clouds_document(&[
        ("charm-raw", bed.cloud_entry("charm-raw")),
        ("charm-b", bed.cloud_entry("charm-b")),
    ]);
    let d = spawn_daemon(&clouds, |_| {}).await;
    std::fs::create_dir_all(&d.upload_dir).unwrap();
    std::fs::copy(&file, d.upload_dir.join("huge.qcow2")).unwrap();
    let file = d.upload_dir.join("huge.qcow2");
    let a = d
        .upload(&app, &file, 2, json!({"clouds": ["charm-raw", "charm-b"]}))
        .await;
    let results = &a.body["results"];
    assert_eq!(results["charm-b"]["disk_format"], "qcow2", "{}", a.body);
    assert_eq!(results["charm-b"]["status"], "active", "{}", a.body);
    assert_eq!(
        results["charm-raw"]["error"]["code"], "insufficient_space",
        "{}",
        a.body
    );
    assert!(staging_entries(&d).is_empty(), "{:?}", staging_entries(&d));
    Direct::cloud_b()
        .delete(results["charm-b"]["id"].as_str().unwrap())
        .await;
}

#[tokio::test]
async fn a_failed_upload_of_a_conversion_leaves_no_staging_file() {
    let _one = METRIC_LOCK.lock().await;
    let bed = Bed::get();
    // Glance unreachable: every try fails after the conversion, the second
    // one with the staged file read again.
    let mut entry = bed.cloud_entry("charm-raw");
    entry["image_endpoint_override"] = format!("http://127.0.0.1:{}", free_port()).into();
    let d = spawn_daemon(&clouds_document(&[("charm-raw", entry)]), |config| {
        config.upload_attempts = 2;
        config.upload_retry_backoff = std::time::Duration::from_secs(1);
    })
    .await;
    let file = half_empty_qcow2(&d.upload_dir, "disk.qcow2", 8 << 20);
    let before = conversions(&d).await;
    let app = unique_app("convfail");
    let a = d.upload(&app, &file, 2, json!({})).await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(
        conversions(&d).await,
        before + 1,
        "one conversion for both tries"
    );
    assert!(staging_entries(&d).is_empty(), "{:?}", staging_entries(&d));
    let jobs = d.get("/v1/jobs").await.body;
    assert_eq!(jobs["jobs"][0]["state"], "failed", "{jobs}");
}

#[tokio::test]
async fn the_staging_directory_is_emptied_at_start() {
    let bed = Bed::get();
    let left = std::sync::Mutex::new(None);
    let d = spawn_daemon(
        &clouds_document(&[("charm-raw", bed.cloud_entry("charm-raw"))]),
        |config| {
            let staging = config.state_dir.join("staging");
            std::fs::create_dir_all(&staging).unwrap();
            let file = staging.join("0123456789abcdef.raw");
            std::fs::write(&file, b"a conversion a crash cut short").unwrap();
            *left.lock().unwrap() = Some(file);
        },
    )
    .await;
    let file = left.lock().unwrap().take().unwrap();
    assert!(!file.exists(), "{} is still there", file.display());
    assert!(staging_entries(&d).is_empty());
}

#[tokio::test]
async fn a_format_the_file_cannot_become_is_a_clear_error() {
    let d = spawn_daemon(
        &clouds_document(&[("charm-qcow2", wanting("charm", "qcow2"))]),
        |_| {},
    )
    .await;
    let file = write_raw_image(&d.upload_dir, "plain.img", 1 << 20);
    let app = unique_app("noconv");
    let a = d.upload(&app, &file, 2, json!({})).await;
    a.expect(422, "unsafe_image");
    let message = a.message();
    for part in ["charm-qcow2", "qcow2", "raw", "image_format"] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(Direct::charm()
        .images_named(&format!("jammy-{app}-x64"))
        .await
        .is_empty());
    assert!(d.get("/v1/jobs").await.body["jobs"]
        .as_array()
        .unwrap()
        .is_empty());

    // A qcow2 for that cloud is sent as it is.
    let qcow2 = write_qcow2_image(&d.upload_dir, "q.qcow2", 1 << 20);
    let a = d.upload(&app, &qcow2, 2, json!({})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_answer_holds(&a.body, &qcow2, "qcow2", "qcow2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_a_transient_fault_sends_the_same_conversion_again() {
    use super::fault_proxy::{Fault, FaultProxy, Rule};
    let _one = METRIC_LOCK.lock().await;
    let proxy = FaultProxy::start(vec![Rule {
        method: "PUT",
        path_contains: "/file",
        fault: Fault::Status(500),
        times: 1,
    }])
    .await;
    let mut entry = Bed::get().cloud_entry("charm-raw");
    entry["image_endpoint_override"] = proxy.url.clone().into();
    let d = spawn_daemon(&clouds_document(&[("charm-raw", entry)]), |config| {
        config.upload_retry_backoff = std::time::Duration::from_secs(1);
    })
    .await;
    let file = half_empty_qcow2(&d.upload_dir, "disk.qcow2", 8 << 20);
    let (_keep, raw) = expected_raw(&file);
    let before = conversions(&d).await;
    let app = unique_app("convretry");
    let a = d.upload(&app, &file, 2, json!({})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["attempts"], 2, "{}", a.body);
    assert_eq!(proxy.count("PUT", "/file"), 2);
    assert_answer_holds(&a.body, &raw, "qcow2", "raw");
    assert_eq!(
        conversions(&d).await,
        before + 1,
        "one conversion for both tries"
    );
    assert!(staging_entries(&d).is_empty(), "{:?}", staging_entries(&d));
    let images = Direct::charm()
        .images_named(&format!("jammy-{app}-x64"))
        .await;
    assert_eq!(
        images.len(),
        1,
        "the failed try's image is gone: {images:?}"
    );
    assert_eq!(images[0]["disk_format"], "raw");
    assert_eq!(images[0]["checksum"], md5_hex(&raw).as_str());
}
