//! A 413 from Glance's quota (Keystone unified limits on the bed's
//! `glance-capped`: `charm-quota-project` may hold 4 MiB) stays
//! `413 image_too_large` with Glance's message, is not retried, and leaves
//! nothing behind.

use serde_json::json;

use super::fault_proxy::FaultProxy;
use super::helpers::{clouds_document, spawn_daemon, unique_app, write_raw_image, Bed, Direct};

#[tokio::test(flavor = "multi_thread")]
async fn over_the_quota_is_image_too_large_with_glances_message_and_nothing_left() {
    let bed = Bed::get();
    let proxy = FaultProxy::start_to(&bed.glance_at("glance_capped_port"), vec![]).await;
    let mut entry = bed.cloud_entry("charm-quota");
    entry["image_endpoint_override"] = proxy.url.clone().into();
    let d = spawn_daemon(&clouds_document(&[("charm-quota", entry)]), |_| {}).await;
    let app = unique_app("quota");
    let file = write_raw_image(&d.upload_dir, "a.img", 5 << 20);
    let answer = d.upload(&app, &file, 1, json!({})).await;
    answer.expect(413, "image_too_large");
    let message = answer.message();
    assert!(message.contains("charm-quota"), "{message}");
    assert!(
        message.contains("image_size_total"),
        "Glance's message says which limit: {message}"
    );
    assert_eq!(proxy.count("PUT", "/file"), 1, "a 413 is never retried");
    let direct = Direct::of("charm-quota", "glance_capped_port");
    let left = direct.images_named(&format!("jammy-{app}-x64")).await;
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}
