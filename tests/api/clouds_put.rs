//! `PUT /v1/clouds`: the document stands alone (no secure.yaml merged), the file is
//! written privately wherever a planted file or symlink points, and a document
//! equal to the one in force costs no Keystone call and no write.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

fn clouds_path(d: &TestDaemon) -> PathBuf {
    d.config.clouds_yaml.clone().unwrap()
}

async fn put(d: &TestDaemon, content_type: &str, document: &str) -> Answer {
    d.send(
        d.authed(reqwest::Method::PUT, "/v1/clouds")
            .header("content-type", content_type)
            .body(document.to_string()),
    )
    .await
}

/// The parsed document in the file, to compare with what was PUT.
fn file_document(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A YAML value with the keys of every mapping in reverse order.
fn keys_reversed(value: &serde_yaml::Value) -> serde_yaml::Value {
    match value {
        serde_yaml::Value::Mapping(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.reverse();
            serde_yaml::Value::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), keys_reversed(v)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// Every cloud's `token_requests` and `token_expires_at`, by name.
async fn session_marks(d: &TestDaemon) -> Vec<(String, Value, Value)> {
    let status = d.status().await;
    status["clouds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["token_requests"].clone(),
                c["token_expires_at"].clone(),
            )
        })
        .collect()
}

/// What tells a rewrite of the file: its inode (a rename gives a new one), its
/// modification time and its bytes.
fn file_marks(path: &Path) -> (u64, i64, i64, Vec<u8>) {
    let meta = std::fs::metadata(path).unwrap();
    (
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        std::fs::read(path).unwrap(),
    )
}

fn assert_private_regular_file(path: &Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(
        meta.file_type().is_file(),
        "{} is not a regular file: {:?}",
        path.display(),
        meta.file_type()
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn an_equal_document_costs_no_keystone_call_and_no_write() {
    let bed = Bed::get();
    let start = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("charm-appcred", bed.cloud_entry("charm-appcred")),
    ]);
    // default_cloud set: the clouds' order in a document does not choose the default.
    let d = spawn_daemon(&start, |c| c.default_cloud = Some("charm".into())).await;
    for cloud in ["charm", "charm-appcred"] {
        d.wait_authenticated(cloud, Duration::from_secs(30)).await;
    }
    let path = clouds_path(&d);
    let sessions = session_marks(&d).await;
    let file = file_marks(&path);
    let parsed: serde_yaml::Value = serde_yaml::from_str(&start).unwrap();

    // The start-up file's clouds as JSON, every key order reversed.
    let reversed = keys_reversed(&parsed);
    let json = serde_json::to_string_pretty(&reversed).unwrap();
    assert!(json.find("charm-appcred").unwrap() < json.find("\"charm\"").unwrap());
    let a = put(&d, "application/json", &json).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let mut names: Vec<&str> = a.body["clouds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["charm", "charm-appcred"]);
    assert_eq!(
        session_marks(&d).await,
        sessions,
        "no new token, no new session"
    );
    assert_eq!(file_marks(&path), file, "no write");

    // The same clouds as YAML, keys reversed, with a comment.
    let yaml = format!(
        "# the same clouds\n{}",
        serde_yaml::to_string(&reversed).unwrap()
    );
    let a = put(&d, "application/yaml", &yaml).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(session_marks(&d).await, sessions);
    assert_eq!(file_marks(&path), file);

    // A document that differs only in a password is judged by Keystone.
    let mut wrong = bed.cloud_entry("charm");
    wrong["auth"]["password"] = "not-the-password".into();
    let changed = clouds_document(&[
        ("charm", wrong),
        ("charm-appcred", bed.cloud_entry("charm-appcred")),
    ]);
    let a = put(&d, "application/yaml", &changed).await;
    a.expect(422, "openstack_unauthorized");
    assert!(a.message().contains("charm"), "{}", a.message());
    assert_eq!(session_marks(&d).await, sessions, "the old clouds stay");
    assert_eq!(file_marks(&path), file);

    // A changed document re-authenticates and is written.
    let smaller = clouds_document(&[("charm", bed.cloud_entry("charm"))]);
    let a = put(&d, "application/yaml", &smaller).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let now = session_marks(&d).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].1, 1, "a new session, one token request: {now:?}");
    assert_eq!(
        file_document(&path),
        serde_yaml::from_str::<serde_yaml::Value>(&smaller).unwrap()
    );
    assert_private_regular_file(&path);
}

#[tokio::test]
async fn an_equal_document_whose_login_fails_is_not_a_blind_200() {
    let mut wrong = Bed::get().cloud_entry("charm");
    wrong["auth"]["password"] = "not-the-password".into();
    let start = clouds_document(&[("locked-out", wrong)]);
    let d = spawn_daemon(&start, |_| {}).await;
    d.wait_for_error("locked-out", Duration::from_secs(30))
        .await;
    let a = put(&d, "application/yaml", &start).await;
    a.expect(422, "openstack_unauthorized");
    assert!(a.message().contains("locked-out"), "{}", a.message());
}

#[tokio::test]
async fn a_planted_symlink_or_temporary_file_does_not_redirect_the_write() {
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |_| {},
    )
    .await;
    let path = clouds_path(&d);
    let dir = path.parent().unwrap();
    // Old releases wrote through `.clouds.yaml.<pid>.tmp`: the name anybody could
    // predict for this (in-process) daemon.
    let predictable = dir.join(format!(".clouds.yaml.{}.tmp", std::process::id()));
    let victim = d.dir.path().join("victim.txt");
    std::fs::write(&victim, "not yours\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&victim, &predictable).unwrap();

    let two = clouds_document(&[
        ("charm", bed.cloud_entry("charm")),
        ("charm-appcred", bed.cloud_entry("charm-appcred")),
    ]);
    let a = put(&d, "application/yaml", &two).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_private_regular_file(&path);
    assert_eq!(
        file_document(&path),
        serde_yaml::from_str::<serde_yaml::Value>(&two).unwrap()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not yours\n");

    // A readable leftover at that name must not lend its mode to the new file.
    std::fs::remove_file(&predictable).unwrap();
    std::fs::write(&predictable, "leftover").unwrap();
    std::fs::set_permissions(&predictable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let one = clouds_document(&[("charm-appcred", bed.cloud_entry("charm-appcred"))]);
    let a = put(&d, "application/yaml", &one).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_private_regular_file(&path);
    assert_eq!(
        file_document(&path),
        serde_yaml::from_str::<serde_yaml::Value>(&one).unwrap()
    );
    // No temporary file of ours is left beside it.
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".clouds.yaml"))
        .collect();
    left.sort();
    assert_eq!(left, [format!(".clouds.yaml.{}.tmp", std::process::id())]);
}

#[tokio::test]
async fn secure_yaml_beside_the_file_is_not_merged_into_a_put_document() {
    let bed = Bed::get();
    let d = spawn_daemon("clouds: {}\n", |_| {}).await;
    let path = clouds_path(&d);
    let full = bed.cloud_entry("charm");
    let mut secure = serde_yaml::Mapping::new();
    secure.insert("password".into(), full["auth"]["password"].clone());
    std::fs::write(
        path.with_file_name("secure.yaml"),
        format!(
            "clouds:\n  charm:\n    auth: {}\n",
            serde_json::to_string(&secure).unwrap()
        ),
    )
    .unwrap();
    let mut without = full.clone();
    without["auth"].as_mapping_mut().unwrap().remove("password");
    let a = put(
        &d,
        "application/yaml",
        &clouds_document(&[("charm", without)]),
    )
    .await;
    a.expect(422, "invalid_clouds_yaml");
    assert!(
        a.message().contains("charm") && a.message().contains("password"),
        "{}",
        a.message()
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "clouds: {}\n");
}
