//! The file judged before a byte is sent (API.md 0.3, "The file is judged
//! before a byte is sent"): each format lands in Glance as what it is, and an
//! unsafe file is refused with `422 unsafe_image`, leaving no image and no job.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::*;

async fn charm_daemon() -> TestDaemon {
    let bed = Bed::get();
    spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |_| {},
    )
    .await
}

fn name_of(app: &str) -> String {
    format!("jammy-{app}-x64")
}

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

/// `raw` converted by qemu-img to `format` (with `-o options`) as `name`.
fn convert(dir: &Path, raw: &Path, format: &str, options: &str, name: &str) -> PathBuf {
    let raw = raw.to_str().unwrap();
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", format];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([raw, name]);
    qemu_img(dir, &args);
    dir.join(name)
}

async fn stored_bytes(glance: &Direct, id: &str) -> Vec<u8> {
    glance
        .http
        .get(format!("{}/v2/images/{id}/file", Bed::get().glance_url))
        .header("X-Auth-Token", glance.token().await)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn vmdk_vhd_and_vhdx_land_in_glance_as_detected() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let raw = write_raw_image(&d.upload_dir, "disk.raw", 1024 * 1024 + 512);
    for (format, options, name) in [
        ("vmdk", "subformat=streamOptimized", "a.vmdk"),
        ("vhdx", "", "b.vhdx"),
        ("vpc", "", "c.vhd"),
    ] {
        let file = convert(&d.upload_dir, &raw, format, options, name);
        let disk_format = if format == "vpc" { "vhd" } else { format };
        let app = unique_app("fmt");
        let a = d.upload(&app, &file, 1, json!({})).await;
        assert_eq!(a.status, 201, "{name}: {:?}", a.body);
        assert_eq!(a.body["format"], disk_format, "{name}");
        assert_eq!(a.body["disk_format"], disk_format, "{name}");
        assert_eq!(a.body["checksum"], md5_hex(&file), "{name}");

        let id = a.body["id"].as_str().unwrap();
        let image = glance.image(id).await.expect("the image is in Glance");
        assert_eq!(image["status"], "active", "{name}");
        assert_eq!(image["disk_format"], disk_format, "{name}");
        assert_eq!(image["size"], std::fs::metadata(&file).unwrap().len());
        assert!(
            stored_bytes(&glance, id).await == std::fs::read(&file).unwrap(),
            "{name}: the stored bytes differ"
        );
        glance.delete(id).await;
    }
}

/// The file's path appears in no job of the daemon.
async fn no_job_of(d: &TestDaemon, file: &Path) {
    let jobs = d.get("/v1/jobs").await;
    let listed: &Vec<Value> = jobs.body["jobs"].as_array().unwrap();
    assert!(
        !listed
            .iter()
            .any(|job| job["request"]["src_path"] == json!(file)),
        "a job exists for {}: {listed:?}",
        file.display()
    );
}

#[tokio::test]
async fn unsafe_files_are_refused_before_a_job_or_an_image_exists() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let dir = &d.upload_dir;
    let base = write_qcow2_image(dir, "base.qcow2", 1024 * 1024);
    qemu_img(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_img(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            "split.vmdk",
            "4M",
        ],
    );
    let raw = write_raw_image(dir, "raw.img", 512 * 1024);
    for (file, extra, says) in [
        (dir.join("top.qcow2"), json!({}), "backing file"),
        (dir.join("split.vmdk"), json!({}), "other files"),
        (
            raw.clone(),
            json!({"disk_format": "qcow2"}),
            "the file is raw but disk_format says qcow2",
        ),
        (
            base.clone(),
            json!({"disk_format": "raw"}),
            "the file is qcow2 but disk_format says raw",
        ),
    ] {
        let app = unique_app("unsafe");
        let a = d.upload(&app, &file, 1, extra).await;
        a.expect(422, "unsafe_image");
        assert!(
            a.message().contains(says),
            "{}: {}",
            file.display(),
            a.message()
        );
        assert!(
            glance.images_named(&name_of(&app)).await.is_empty(),
            "{}: an image was made",
            file.display()
        );
        no_job_of(&d, &file).await;
    }
}

#[tokio::test]
async fn every_image_carries_the_daemons_tags_and_the_requests() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let file = write_raw_image(&d.upload_dir, "tagged.img", 64 * 1024);
    let app = unique_app("tags");
    let a = d
        .upload(
            &app,
            &file,
            1,
            json!({"tags": ["team:ci", "arch:x64"], "properties": {"hw_disk_bus": "virtio"}}),
        )
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["id"].as_str().unwrap();
    let image = glance.image(id).await.expect("the image is in Glance");
    let mut tags: Vec<&str> = image["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort_unstable();
    let app_tag = format!("app:{app}");
    let mut expected = vec![
        "arch:x64",
        "base:jammy",
        app_tag.as_str(),
        "managed-by:openstack-image-helper",
        "team:ci",
    ];
    expected.sort_unstable();
    assert_eq!(tags, expected);
    assert_eq!(image["hw_disk_bus"], "virtio");
    glance.delete(id).await;
}

#[tokio::test]
async fn bad_tags_and_properties_are_refused_naming_the_field() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let file = write_raw_image(&d.upload_dir, "bad.img", 4096);
    let long_key = "k".repeat(256);
    let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    for (extra, says) in [
        (json!({"tags": many}), "at most 20"),
        (json!({"tags": [""]}), "tags"),
        (json!({"tags": ["t".repeat(256)]}), "256 characters"),
        (
            json!({"properties": {"os_hash_value": "x"}}),
            "'os_hash_value'",
        ),
        (json!({"properties": {"min_disk": "1"}}), "'min_disk'"),
        (json!({"properties": {long_key: "x"}}), "keys are 1 to 255"),
        (
            json!({"properties": {"hw_note": "v".repeat(65536)}}),
            "'hw_note'",
        ),
    ] {
        let app = unique_app("bad");
        let a = d.upload(&app, &file, 1, extra.clone()).await;
        a.expect(400, "invalid_request");
        assert!(a.message().contains(says), "{extra}: {}", a.message());
        assert!(glance.images_named(&name_of(&app)).await.is_empty());
    }
    no_job_of(&d, &file).await;
}

/// A minimal ISO 9660 of 20 blocks: 16 empty sectors, a primary volume
/// descriptor, a terminator, two empty blocks (no Debian base tool makes one).
fn write_iso(dir: &Path, name: &str) -> PathBuf {
    let mut bytes = vec![0u8; 20 * 2048];
    let pvd = &mut bytes[16 * 2048..17 * 2048];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[80..84].copy_from_slice(&20u32.to_le_bytes());
    pvd[84..88].copy_from_slice(&20u32.to_be_bytes());
    pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
    pvd[130..132].copy_from_slice(&2048u16.to_be_bytes());
    let end = &mut bytes[17 * 2048..18 * 2048];
    end[0] = 255;
    end[1..6].copy_from_slice(b"CD001");
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    path
}

#[tokio::test]
async fn an_iso_lands_as_iso_or_as_the_raw_it_is_declared() {
    let d = charm_daemon().await;
    let glance = Direct::charm();
    let file = write_iso(&d.upload_dir, "a.iso");
    for (extra, disk_format) in [(json!({}), "iso"), (json!({"disk_format": "raw"}), "raw")] {
        let app = unique_app("iso");
        let a = d.upload(&app, &file, 1, extra).await;
        assert_eq!(a.status, 201, "{disk_format}: {:?}", a.body);
        assert_eq!(a.body["format"], "iso");
        assert_eq!(a.body["disk_format"], disk_format);
        let id = a.body["id"].as_str().unwrap();
        let image = glance.image(id).await.expect("the image is in Glance");
        assert_eq!(image["status"], "active");
        assert_eq!(image["disk_format"], disk_format);
        glance.delete(id).await;
    }
}
