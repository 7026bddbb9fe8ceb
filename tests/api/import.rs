//! Interoperable import (glance-direct) against the bed's real Glances:
//! `glance-import` (import offered, direct upload too) and `glance-importonly`
//! (its policy refuses `PUT .../file` to members). A fault proxy in front of
//! each counts the requests, so a test sees which way the data went.

use std::time::Duration;

use serde_json::{json, Value};

use super::fault_proxy::{Fault, FaultProxy, Rule};
use super::helpers::{
    clouds_document, md5_hex, sha512_hex, spawn_daemon, unique_app, write_raw_image, Bed, Direct,
    TestDaemon,
};

fn name_of(app: &str) -> String {
    format!("jammy-{app}-x64")
}

/// A daemon whose one cloud is the bed's `cloud`, its Glance behind `proxy`,
/// with `method` as its `image_upload_method` (none: the default, `auto`).
async fn daemon(cloud: &str, proxy: &FaultProxy, method: Option<&str>) -> TestDaemon {
    let mut entry = Bed::get().cloud_entry(cloud);
    entry["image_endpoint_override"] = proxy.url.clone().into();
    if let Some(method) = method {
        entry["image_upload_method"] = method.into();
    }
    spawn_daemon(&clouds_document(&[(cloud, entry)]), |c| {
        c.import_timeout = Duration::from_secs(4);
    })
    .await
}

/// The image is active in Glance with the file's bytes.
async fn assert_landed(direct: &Direct, answer: &Value, file: &std::path::Path) {
    let id = answer["id"].as_str().unwrap();
    let image = direct.image(id).await.expect("the image is in Glance");
    assert_eq!(image["status"], "active", "{image}");
    assert_eq!(image["size"], std::fs::metadata(file).unwrap().len());
    assert_eq!(image["checksum"], md5_hex(file).as_str());
    assert_eq!(image["os_hash_value"], sha512_hex(file).as_str());
    assert_eq!(answer["checksum"], md5_hex(file).as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn image_upload_method_import_stages_then_imports_and_verifies() {
    let glance = Bed::get().glance_at("glance_import_port");
    let proxy = FaultProxy::start_to(&glance, vec![]).await;
    let d = daemon("charm-import", &proxy, Some("import")).await;
    let app = unique_app("import");
    let file = write_raw_image(&d.upload_dir, "a.img", 3 << 20);
    let answer = d
        .upload(&app, &file, 2, json!({"cloud": "charm-import"}))
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_landed(
        &Direct::of("charm-import", "glance_import_port"),
        &answer.body,
        &file,
    )
    .await;
    assert_eq!(proxy.count("PUT", "/stage"), 1);
    assert_eq!(proxy.count("POST", "/import"), 1);
    assert_eq!(proxy.count("PUT", "/file"), 0, "no direct upload");
    assert!(
        answer.body.get("stores").is_none(),
        "a single-store Glance has no stores: {:?}",
        answer.body
    );
    let status = d.cloud_status("charm-import").await;
    assert_eq!(status["upload_method"], "import");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_on_an_import_only_cloud_succeeds_first_time_and_stays_on_import() {
    let glance = Bed::get().glance_at("glance_importonly_port");
    let proxy = FaultProxy::start_to(&glance, vec![]).await;
    let d = daemon("charm-importonly", &proxy, None).await;
    assert_eq!(
        d.cloud_status("charm-importonly").await["upload_method"],
        "direct"
    );
    let app = unique_app("importonly");
    let direct = Direct::of("charm-importonly", "glance_importonly_port");

    let file = write_raw_image(&d.upload_dir, "a.img", 2 << 20);
    let first = d.upload(&app, &file, 2, json!({})).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(
        first.body["attempts"], 1,
        "a switch of method is not a retry"
    );
    assert_landed(&direct, &first.body, &file).await;
    assert_eq!(
        proxy.count("PUT", "/file"),
        1,
        "the one direct upload, refused (403)"
    );
    assert_eq!(proxy.count("GET", "/v2/info/import"), 1);
    assert_eq!(proxy.count("PUT", "/stage"), 1);
    let creates = proxy.count("POST", "/v2/images") - proxy.count("POST", "/import");
    assert_eq!(creates, 2, "a fresh image for the import");
    assert_eq!(
        d.cloud_status("charm-importonly").await["upload_method"],
        "import"
    );

    let file = write_raw_image(&d.upload_dir, "b.img", 1 << 20);
    let second = d.upload(&app, &file, 2, json!({})).await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    assert_landed(&direct, &second.body, &file).await;
    assert_eq!(
        proxy.count("PUT", "/file"),
        1,
        "no direct upload tried again"
    );
    assert_eq!(proxy.count("PUT", "/stage"), 2);
    // The refused image was deleted: only the two uploads' images remain.
    let images = direct.images_named(&name_of(&app)).await;
    let mut ids: Vec<&str> = images.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec![
        first.body["id"].as_str().unwrap(),
        second.body["id"].as_str().unwrap(),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{images:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_on_an_import_only_cloud_fails_with_glances_403_and_leaves_nothing() {
    let glance = Bed::get().glance_at("glance_importonly_port");
    let proxy = FaultProxy::start_to(&glance, vec![]).await;
    let d = daemon("charm-importonly", &proxy, Some("direct")).await;
    let app = unique_app("importonly-direct");
    let file = write_raw_image(&d.upload_dir, "a.img", 1 << 20);
    let answer = d.upload(&app, &file, 2, json!({})).await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.code(), "upload_image_failed");
    assert!(
        answer.message().contains("charm-importonly") && answer.message().contains("403"),
        "{:?}",
        answer.body
    );
    assert_eq!(proxy.count("PUT", "/file"), 1, "a 403 is never retried");
    assert_eq!(proxy.count("PUT", "/stage"), 0);
    let direct = Direct::of("charm-importonly", "glance_importonly_port");
    assert!(direct.images_named(&name_of(&app)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_that_never_ends_fails_after_import_timeout_and_is_deleted() {
    // Glance's 202 to the import is answered by the proxy: the staged image
    // never becomes active, as when Glance's import task fails silently
    // (single-store glance-import leaves it `importing`, saying nothing).
    let glance = Bed::get().glance_at("glance_import_port");
    let stuck = Rule {
        method: "POST",
        path_contains: "/import",
        fault: Fault::Status(202),
        times: usize::MAX,
    };
    let proxy = FaultProxy::start_to(&glance, vec![stuck]).await;
    let d = daemon("charm-import", &proxy, Some("import")).await;
    let app = unique_app("import-stuck");
    let file = write_raw_image(&d.upload_dir, "a.img", 1 << 20);
    let started = std::time::Instant::now();
    let answer = d.upload(&app, &file, 2, json!({})).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.code(), "upload_image_failed");
    let message = answer.message();
    assert!(
        message.contains("charm-import")
            && message.contains("import_timeout")
            && message.contains("deleted"),
        "{message}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert_eq!(proxy.count("POST", "/import"), 1, "not retried");
    let direct = Direct::of("charm-import", "glance_import_port");
    assert!(
        direct.images_named(&name_of(&app)).await.is_empty(),
        "the image was deleted"
    );
}
