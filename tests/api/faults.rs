//! Faults a real Glance cannot be made to produce on demand: an upload that
//! stalls, a connection cut mid-upload, a burst of 5xx answers. Keystone stays the
//! real one; only the image endpoint (`image_endpoint_override`) is an in-process
//! fake that misbehaves in the one way each test needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Takes the first bytes of an upload, then reads no more.
    Stall,
    /// Takes the first bytes of an upload, then drops the connection.
    Cut,
    /// Answers the first `n` image lists with 503.
    Unavailable(usize),
}

#[derive(Clone)]
struct FakeGlance {
    fault: Fault,
    deleted: Arc<Mutex<Vec<String>>>,
    lists: Arc<AtomicUsize>,
}

async fn create(Json(req): Json<Value>) -> impl IntoResponse {
    let id = format!("fake-{}", unique_app("img"));
    (
        StatusCode::CREATED,
        Json(
            json!({"id": id, "name": req["name"], "status": "queued", "protected": false,
                    "created_at": chrono::Utc::now().to_rfc3339(), "os_hash_algo": null}),
        ),
    )
}

async fn upload(State(fake): State<FakeGlance>, body: Body) -> StatusCode {
    let mut stream = body.into_data_stream();
    let mut got = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        got += chunk.len();
        if got > 1024 * 1024 {
            break;
        }
    }
    match fake.fault {
        Fault::Stall => {
            // Hold the connection open and read nothing more.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::NO_CONTENT
        }
        // Ends this connection's task without an answer: the socket is dropped.
        // (resume_unwind skips the panic hook: no noise in the test output.)
        _ => std::panic::resume_unwind(Box::new("cut")),
    }
}

async fn delete(State(fake): State<FakeGlance>, Path(id): Path<String>) -> StatusCode {
    fake.deleted.lock().unwrap().push(id);
    StatusCode::NO_CONTENT
}

async fn list(
    State(fake): State<FakeGlance>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    // Count the "latest" queries only, not the reaper's.
    if !query.unwrap_or_default().contains("name=") {
        return Json(json!({"images": []})).into_response();
    }
    let n = fake.lists.fetch_add(1, Ordering::SeqCst);
    match fake.fault {
        Fault::Unavailable(bad) if n < bad => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"message": "The server is currently unavailable.", "code": "503 Service Unavailable"})),
        )
            .into_response(),
        _ => Json(json!({"images": []})).into_response(),
    }
}

async fn start_fake(fault: Fault) -> (String, FakeGlance) {
    let fake = FakeGlance {
        fault,
        deleted: Arc::default(),
        lists: Arc::default(),
    };
    let app = Router::new()
        .route("/v2/images", post(create).get(list))
        .route("/v2/images/{id}/file", put(upload))
        .route(
            "/v2/images/{id}",
            get(|| async { StatusCode::NOT_FOUND }).delete(delete),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

async fn daemon_on(
    url: &str,
    tweak: impl FnOnce(&mut openstack_image_helper::config::Config),
) -> TestDaemon {
    let mut entry = Bed::get().cloud_entry("charm");
    entry["image_endpoint_override"] = url.into();
    spawn_daemon(&clouds_document(&[("faulty", entry)]), tweak).await
}

#[tokio::test]
async fn a_stalled_upload_is_aborted_after_the_stall_timeout_and_its_image_deleted() {
    let (url, fake) = start_fake(Fault::Stall).await;
    let d = daemon_on(&url, |c| c.upload_stall_timeout = Duration::from_secs(2)).await;
    let file = write_raw_image(&d.upload_dir, "stall.img", 32 * 1024 * 1024);
    let started = std::time::Instant::now();
    let a = d.upload("stall", &file, 1, json!({})).await;
    let took = started.elapsed();
    a.expect(502, "upload_image_failed");
    assert!(
        a.message().contains("stalled") && a.message().contains("faulty"),
        "{}",
        a.message()
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let deleted = fake.deleted.lock().unwrap().clone();
    assert_eq!(
        deleted.len(),
        1,
        "the stalled image was deleted: {deleted:?}"
    );
}

#[tokio::test]
async fn a_connection_cut_mid_upload_fails_the_upload_and_deletes_the_image() {
    let (url, fake) = start_fake(Fault::Cut).await;
    let d = daemon_on(&url, |c| c.upload_retry_backoff = Duration::from_secs(1)).await;
    let file = write_raw_image(&d.upload_dir, "cut.img", 32 * 1024 * 1024);
    let a = d.upload("cut", &file, 1, json!({})).await;
    a.expect(502, "upload_image_failed");
    assert!(a.message().contains("faulty"), "{}", a.message());
    // A cut connection is a transient fault: each of the 3 tries' images is deleted.
    assert_eq!(fake.deleted.lock().unwrap().len(), 3);
    assert_eq!(d.status().await["uploads_in_flight"], 0);
}

#[tokio::test]
async fn a_short_burst_of_503s_is_retried_and_a_long_one_reported() {
    let (url, fake) = start_fake(Fault::Unavailable(2)).await;
    let d = daemon_on(&url, |_| {}).await;
    let a = d.latest("burst", None).await;
    assert_eq!(a.status, 200, "two 503s, then an answer: {:?}", a.body);
    assert_eq!(fake.lists.load(Ordering::SeqCst), 3);

    let (url, _) = start_fake(Fault::Unavailable(usize::MAX)).await;
    let d = daemon_on(&url, |_| {}).await;
    let a = d.latest("burst", None).await;
    a.expect(502, "get_image_failed");
    assert!(
        a.message().contains("503") && a.message().contains("unavailable"),
        "{}",
        a.message()
    );
}
