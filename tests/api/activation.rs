//! After the last byte, Glance may take its time to answer the data PUT and to call
//! the image active (it hashes the data, a store or plugin processes it): that wait
//! is bounded by `activation_timeout`, not by `upload_stall_timeout`. A real Glance
//! cannot be made slow on demand, so the image endpoint here is an in-process fake
//! that takes every byte, then answers late (or never); Keystone is the real one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use md5::Digest;
use serde_json::{json, Value};

use crate::helpers::*;

/// How the fake finalises an upload once it has every byte.
#[derive(Clone, Copy)]
enum Finalise {
    /// Answers the data PUT after `answer`, then reports `saving` for `saving` more.
    Slow { answer: Duration, saving: Duration },
    /// Never answers the data PUT.
    Never,
}

/// What the fake knows of an image.
#[derive(Clone)]
struct FakeImage {
    name: Value,
    /// Size, md5 and sha512 of the data, once the PUT was answered; and when
    /// the image turns active.
    stored: Option<(usize, String, String, Instant)>,
}

#[derive(Clone)]
struct SlowGlance {
    finalise: Finalise,
    images: Arc<Mutex<HashMap<String, FakeImage>>>,
    deleted: Arc<Mutex<Vec<String>>>,
}

impl SlowGlance {
    fn view(&self, id: &str) -> Option<Value> {
        let images = self.images.lock().unwrap();
        let image = images.get(id)?;
        let mut view = json!({"id": id, "name": image.name, "status": "queued",
            "protected": false, "created_at": chrono::Utc::now().to_rfc3339(),
            "os_hash_algo": "sha512"});
        match &image.stored {
            Some((size, md5, sha, active_at)) => {
                view["status"] = if Instant::now() >= *active_at {
                    "active".into()
                } else {
                    "saving".into()
                };
                view["size"] = (*size).into();
                view["checksum"] = md5.clone().into();
                view["os_hash_value"] = sha.clone().into();
            }
            None => view["status"] = "saving".into(),
        }
        Some(view)
    }
}

async fn create(State(fake): State<SlowGlance>, Json(req): Json<Value>) -> impl IntoResponse {
    let id = format!("slow-{}", unique_app("img"));
    fake.images.lock().unwrap().insert(
        id.clone(),
        FakeImage {
            name: req["name"].clone(),
            stored: None,
        },
    );
    let mut view = fake.view(&id).unwrap();
    view["status"] = "queued".into();
    (StatusCode::CREATED, Json(view))
}

async fn upload(State(fake): State<SlowGlance>, Path(id): Path<String>, body: Body) -> StatusCode {
    let mut stream = body.into_data_stream();
    let (mut size, mut md5) = (0usize, md5::Md5::new());
    let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA512);
    while let Some(Ok(chunk)) = stream.next().await {
        size += chunk.len();
        md5.update(&chunk);
        sha.update(&chunk);
    }
    let (answer, saving) = match fake.finalise {
        Finalise::Slow { answer, saving } => (answer, saving),
        Finalise::Never => (Duration::from_secs(3600), Duration::ZERO),
    };
    // Every byte is in; "hashing" now, as Glance does before it answers.
    tokio::time::sleep(answer).await;
    if let Some(image) = fake.images.lock().unwrap().get_mut(&id) {
        image.stored = Some((
            size,
            hex::encode(md5.finalize()),
            hex::encode(sha.finish().as_ref()),
            Instant::now() + saving,
        ));
    }
    StatusCode::NO_CONTENT
}

async fn show(State(fake): State<SlowGlance>, Path(id): Path<String>) -> axum::response::Response {
    match fake.view(&id) {
        Some(view) => Json(view).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn delete(State(fake): State<SlowGlance>, Path(id): Path<String>) -> StatusCode {
    fake.images.lock().unwrap().remove(&id);
    fake.deleted.lock().unwrap().push(id);
    StatusCode::NO_CONTENT
}

async fn start_slow_glance(finalise: Finalise) -> (String, SlowGlance) {
    let fake = SlowGlance {
        finalise,
        images: Arc::default(),
        deleted: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/v2/images",
            post(create).get(|| async { Json(json!({"images": []})) }),
        )
        .route("/v2/images/{id}/file", put(upload))
        .route("/v2/images/{id}", get(show).delete(delete))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

async fn daemon_on(url: &str, stall: Duration, activation: Duration) -> TestDaemon {
    let mut entry = Bed::get().cloud_entry("charm");
    entry["image_endpoint_override"] = url.into();
    spawn_daemon(&clouds_document(&[("slow", entry)]), |c| {
        c.upload_stall_timeout = stall;
        c.activation_timeout = activation;
    })
    .await
}

#[tokio::test]
async fn a_finalise_slower_than_the_stall_timeout_still_succeeds() {
    let (url, fake) = start_slow_glance(Finalise::Slow {
        answer: Duration::from_secs(4),
        saving: Duration::from_secs(3),
    })
    .await;
    let d = daemon_on(&url, Duration::from_secs(2), Duration::from_secs(30)).await;
    let file = write_raw_image(&d.upload_dir, "slow.img", 4 * 1024 * 1024);
    let a = d.upload("slow", &file, 1, json!({})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["status"], "active");
    assert_eq!(a.body["checksum"], md5_hex(&file));
    assert_eq!(a.body["os_hash_value"], sha512_hex(&file));
    assert!(fake.deleted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_finalise_that_never_ends_fails_after_the_activation_timeout() {
    let (url, fake) = start_slow_glance(Finalise::Never).await;
    let activation = Duration::from_secs(4);
    let d = daemon_on(&url, Duration::from_secs(1), activation).await;
    let file = write_raw_image(&d.upload_dir, "never.img", 4 * 1024 * 1024);
    let started = Instant::now();
    let a = d.upload("never", &file, 1, json!({})).await;
    let took = started.elapsed();
    a.expect(502, "upload_image_failed");
    let message = a.message();
    assert!(
        message.contains("slow") && message.contains("activation_timeout"),
        "{message}"
    );
    assert!(!message.contains("stalled"), "{message}");
    assert!(took >= activation, "{took:?}");
    assert_eq!(
        fake.deleted.lock().unwrap().len(),
        1,
        "the image was deleted"
    );
    assert_eq!(d.status().await["uploads_in_flight"], 0);
}

#[tokio::test]
async fn an_image_that_stays_saving_fails_after_the_activation_timeout() {
    let (url, fake) = start_slow_glance(Finalise::Slow {
        answer: Duration::ZERO,
        saving: Duration::from_secs(3600),
    })
    .await;
    let activation = Duration::from_secs(3);
    let d = daemon_on(&url, Duration::from_secs(1), activation).await;
    let file = write_raw_image(&d.upload_dir, "saving.img", 1024 * 1024);
    let started = Instant::now();
    let a = d.upload("saving", &file, 1, json!({})).await;
    a.expect(502, "upload_image_failed");
    assert!(
        a.message().contains("activation_timeout") && a.message().contains("saving"),
        "{}",
        a.message()
    );
    assert!(started.elapsed() >= activation);
    assert_eq!(fake.deleted.lock().unwrap().len(), 1);
}
