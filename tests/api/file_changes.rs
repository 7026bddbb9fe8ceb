//! A file that changes while it is uploaded, its size kept equal, against the real
//! Glance: the bytes Glance stored are neither the old file nor the new one, so
//! the upload must fail, its image be deleted, and nothing be left in Glance.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// Bytes sent so far by the upload with this request id (0 before it starts).
async fn sent_bytes(d: &TestDaemon, request_id: &str) -> u64 {
    let u = d.get("/v1/uploads").await;
    u.body["uploads"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["upload_id"] == request_id))
        .and_then(|x| x["sent_bytes"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_file_overwritten_in_place_during_the_upload_fails_it_and_leaves_nothing() {
    const SIZE: usize = 192 * 1024 * 1024;
    const AHEAD: u64 = 64 * 1024 * 1024;
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |_| {},
    )
    .await;
    let glance = Direct::charm();
    let app = unique_app("torn");
    let file = write_raw_image(&d.upload_dir, "torn.img", SIZE);
    let request_id = format!("torn-{app}");
    let upload = d.send(
        d.authed(reqwest::Method::POST, "/v1/images")
            .header("x-request-id", &request_id)
            .json(&json!({"base": "jammy", "app_name": app, "arch": "x64",
                          "num_revisions": 1, "src_path": file})),
    );
    // Once bytes flow, overwrite a block well ahead of the reader (which reads at
    // most a few MiB ahead of the network): same size, other bytes.
    let overwrite = async {
        loop {
            let sent = sent_bytes(&d, &request_id).await;
            if sent > 0 {
                let at = sent + AHEAD;
                assert!(
                    at + 1024 * 1024 < SIZE as u64,
                    "the upload ran too fast for this test ({sent} bytes sent at the first look)"
                );
                let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
                handle.write_all_at(&[0x5a; 1024 * 1024], at).unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (a, ()) = tokio::join!(upload, overwrite);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), SIZE as u64);
    a.expect(502, "upload_image_failed");
    let message = a.message();
    assert!(
        message.contains("torn.img") && message.contains("modified") && message.contains("deleted"),
        "{message}"
    );
    let left = glance.images_named(&format!("jammy-{app}-x64")).await;
    assert!(left.is_empty(), "nothing left in Glance: {left:?}");
    assert_eq!(d.status().await["uploads_in_flight"], 0);
}
