//! `image_stores` against the bed's multi-store Glance (`glance-stores`: file
//! stores `fast`, the default, and `slow`): one store by a direct PUT with
//! `X-Image-Meta-Store`, several by import; an unknown store is refused.

use serde_json::{json, Value};

use super::fault_proxy::FaultProxy;
use super::helpers::{
    clouds_document, md5_hex, spawn_daemon, unique_app, write_raw_image, Bed, Direct, TestDaemon,
};

const CLOUD: &str = "charm-stores";

fn name_of(app: &str) -> String {
    format!("jammy-{app}-x64")
}

/// A daemon whose one cloud is `charm-stores` with these `image_stores`, its
/// Glance behind `proxy`.
async fn daemon(stores: &[&str], proxy: &FaultProxy) -> TestDaemon {
    let mut entry = Bed::get().cloud_entry(CLOUD);
    entry["image_endpoint_override"] = proxy.url.clone().into();
    entry["image_stores"] = serde_yaml::to_value(stores).unwrap();
    spawn_daemon(&clouds_document(&[(CLOUD, entry)]), |_| {}).await
}

async fn proxy() -> FaultProxy {
    FaultProxy::start_to(&Bed::get().glance_at("glance_stores_port"), vec![]).await
}

fn direct() -> Direct {
    Direct::of(CLOUD, "glance_stores_port")
}

/// Uploads a fresh file and checks the image is active with its bytes in
/// exactly `stores`, and that the answer and the job say so.
async fn upload_into(d: &TestDaemon, stores: &[&str]) -> Value {
    let app = unique_app("stores");
    let file = write_raw_image(&d.upload_dir, "a.img", 2 << 20);
    let answer = d.upload(&app, &file, 1, json!({})).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body["stores"], json!(stores), "{:?}", answer.body);
    let id = answer.body["id"].as_str().unwrap();
    let image = direct().image(id).await.unwrap();
    assert_eq!(image["status"], "active");
    assert_eq!(image["checksum"], md5_hex(&file).as_str());
    assert_eq!(image["stores"], stores.join(","), "{image}");
    let jobs = d.get("/v1/jobs").await.body;
    let job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["image_id"] == id)
        .cloned()
        .expect("the upload's job");
    assert_eq!(job["result"]["stores"], json!(stores), "{job}");
    answer.body
}

#[tokio::test(flavor = "multi_thread")]
async fn one_store_goes_by_a_direct_put_into_that_store_only() {
    let proxy = proxy().await;
    let d = daemon(&["slow"], &proxy).await;
    upload_into(&d, &["slow"]).await;
    assert_eq!(proxy.count("PUT", "/file"), 1);
    assert_eq!(proxy.count("PUT", "/stage"), 0);
    assert_eq!(d.cloud_status(CLOUD).await["upload_method"], "direct");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_go_by_import_into_both() {
    let proxy = proxy().await;
    let d = daemon(&["fast", "slow"], &proxy).await;
    upload_into(&d, &["fast", "slow"]).await;
    assert_eq!(proxy.count("PUT", "/file"), 0);
    assert_eq!(proxy.count("PUT", "/stage"), 1);
    assert_eq!(proxy.count("POST", "/import"), 1);
    assert_eq!(d.cloud_status(CLOUD).await["upload_method"], "import");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_store_is_refused_naming_it_and_the_cloud_and_makes_no_image() {
    let proxy = proxy().await;
    let d = daemon(&["fast", "nvme"], &proxy).await;
    let app = unique_app("stores-unknown");
    let file = write_raw_image(&d.upload_dir, "a.img", 1 << 20);
    let answer = d.upload(&app, &file, 1, json!({})).await;
    answer.expect(422, "invalid_clouds_yaml");
    let message = answer.message();
    assert!(
        message.contains("'nvme'") && message.contains(CLOUD) && message.contains("image_stores"),
        "{message}"
    );
    assert!(
        message.contains("fast, slow"),
        "the stores that exist: {message}"
    );
    assert_eq!(proxy.count("POST", "/v2/images"), 0, "no image created");
    assert!(direct().images_named(&name_of(&app)).await.is_empty());
}
