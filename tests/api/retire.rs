//! What happens to old revisions: hidden instead of deleted (`retire: hide`),
//! and kept when Glance says they are in use (409), against the real Glance.
//!
//! The cloud is `charm-import` (its own user and project, on the legacy
//! single-store file Glance, by direct upload): other tests revoke `charm`'s
//! tokens, and a 401 to a data upload fails it, which several uploads in a row
//! would meet on a busy bed.

use serde_json::{json, Value};

use super::fault_proxy::{Fault, FaultProxy, Rule};
use super::helpers::{
    clouds_document, spawn_daemon, unique_app, write_raw_image, Bed, Direct, TestDaemon,
};

const CLOUD: &str = "charm-import";

/// A daemon whose one cloud is `charm-import` by direct upload, at `endpoint`
/// (none: its Glance, through the catalog).
async fn daemon(endpoint: Option<&str>) -> TestDaemon {
    let mut entry = Bed::get().cloud_entry(CLOUD);
    entry["image_upload_method"] = "direct".into();
    if let Some(url) = endpoint {
        entry["image_endpoint_override"] = url.into();
    }
    spawn_daemon(&clouds_document(&[(CLOUD, entry)]), |_| {}).await
}

fn glance() -> Direct {
    Direct::of(CLOUD, "glance_import_port")
}

fn name_of(app: &str) -> String {
    format!("jammy-{app}-x64")
}

async fn upload(d: &TestDaemon, app: &str, n: usize, extra: Value) -> Value {
    let file = write_raw_image(&d.upload_dir, &format!("{n}.img"), 256 << 10);
    let answer = d.upload(app, &file, 1, extra).await;
    assert_eq!(answer.status, 201, "upload {n}: {:?}", answer.body);
    answer.body
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn retire_hide_hides_the_previous_revision_and_deletes_past_as_many_hidden() {
    let d = daemon(None).await;
    let app = unique_app("retire-hide");
    let hide = json!({"retire": "hide"});
    let mut answers = Vec::new();
    for n in 0..4 {
        answers.push(upload(&d, &app, n, hide.clone()).await);
    }
    let id = |n: usize| answers[n]["id"].as_str().unwrap();
    assert!(answers[0].get("hidden").is_none(), "{}", answers[0]);
    assert_eq!(ids(&answers[1]["hidden"]), vec![id(0)]);
    assert_eq!(ids(&answers[1]["pruned"]), Vec::<&str>::new());
    assert_eq!(ids(&answers[2]["hidden"]), vec![id(1)]);
    assert_eq!(ids(&answers[2]["pruned"]), vec![id(0)]);
    assert_eq!(ids(&answers[3]["hidden"]), vec![id(2)]);
    assert_eq!(ids(&answers[3]["pruned"]), vec![id(1)]);

    let glance = glance();
    let newest = glance.image(id(3)).await.unwrap();
    assert_eq!(
        (newest["status"].as_str(), newest["os_hidden"].as_bool()),
        (Some("active"), Some(false))
    );
    let hidden = glance
        .image(id(2))
        .await
        .expect("the hidden revision stays, bootable by id");
    assert_eq!(
        (hidden["status"].as_str(), hidden["os_hidden"].as_bool()),
        (Some("active"), Some(true))
    );
    assert!(glance.image(id(1)).await.is_none(), "deleted");
    assert!(glance.image(id(0)).await.is_none(), "deleted");
    // A listing shows only the newest: Glance leaves hidden images out.
    let listed = glance.images_named(&name_of(&app)).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id(3));

    let latest = d.latest(&app, None).await;
    assert_eq!(latest.body["id"], id(3), "{:?}", latest.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_never_returns_a_hidden_image() {
    let d = daemon(None).await;
    let app = unique_app("retire-latest");
    let only = upload(&d, &app, 0, json!({})).await;
    let id = only["id"].as_str().unwrap();
    assert_eq!(d.latest(&app, None).await.body["id"], id);
    glance().set_hidden(id, true).await;
    let latest = d.latest(&app, None).await;
    assert_eq!(latest.status, 200);
    assert!(latest.body["id"].is_null(), "{:?}", latest.body);
    glance().delete(id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_in_use_409_is_kept_reported_and_pruned_by_the_next_upload() {
    // The bed has no Ceph: a proxy answers the first prune's DELETE with 409.
    let in_use = Rule {
        method: "DELETE",
        path_contains: "/v2/images/",
        fault: Fault::Status(409),
        times: 1,
    };
    let proxy =
        FaultProxy::start_to(&Bed::get().glance_at("glance_import_port"), vec![in_use]).await;
    let d = daemon(Some(&proxy.url)).await;
    let app = unique_app("in-use");
    let first = upload(&d, &app, 0, json!({})).await;
    let first_id = first["id"].as_str().unwrap();

    let second = upload(&d, &app, 1, json!({})).await;
    assert_eq!(ids(&second["pruned"]), Vec::<&str>::new());
    let failed = second["prune_failed"].as_array().expect("prune_failed");
    assert_eq!(failed.len(), 1, "{second}");
    assert_eq!(failed[0]["id"], first_id);
    assert_eq!(failed[0]["code"], "in_use");
    assert!(
        failed[0]["message"].as_str().unwrap().contains("409"),
        "{second}"
    );
    let kept = glance().image(first_id).await.expect("kept");
    assert_eq!(kept["status"], "active");

    let third = upload(&d, &app, 2, json!({})).await;
    let mut pruned = ids(&third["pruned"]);
    pruned.sort_unstable();
    let mut expected = vec![first_id, second["id"].as_str().unwrap()];
    expected.sort_unstable();
    assert_eq!(pruned, expected, "tried again at the next prune: {third}");
    assert!(third.get("prune_failed").is_none(), "{third}");
    assert!(glance().image(first_id).await.is_none());
}
