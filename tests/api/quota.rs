//! A 413 from Glance's quota (Keystone unified limits on the bed's
//! `glance-capped`: `charm-quota-project` may hold 4 MiB) stays
//! `413 image_too_large` with Glance's message and leaves nothing behind.
//!
//! No fault proxy here: Glance answers the 413 before it reads the body and
//! closes the connection, which a proxy still streaming the body would turn
//! into a 502 of its own.

use serde_json::json;

use super::helpers::{clouds_document, spawn_daemon, unique_app, write_raw_image, Bed, Direct};

#[tokio::test(flavor = "multi_thread")]
async fn over_the_quota_is_image_too_large_with_glances_message_and_nothing_left() {
    let bed = Bed::get();
    let entry = bed.cloud_entry("charm-quota");
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
    // Not retried: a 4xx never is (`retries::a_4xx_is_never_retried`). The
    // retries counter is not checked here: on a loaded bed the quota-checking
    // Glance can take longer than the API timeout to create an image, and
    // that timeout is a transient fault the daemon rightly retries.
    let direct = Direct::of("charm-quota", "glance_capped_port");
    let left = direct.images_named(&format!("jammy-{app}-x64")).await;
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}
