//! `src_path` is judged and opened as one step: dangling symlinks and hard links
//! to files outside the upload dirs are `path_not_allowed`; a hard link that stays
//! inside uploads the right bytes.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_path_through_a_dangling_symlink_is_not_allowed() {
    let d = charm_only_daemon().await;
    std::os::unix::fs::symlink(d.dir.path().join("gone"), d.upload_dir.join("dangling")).unwrap();
    let a = d
        .upload("runner", &d.upload_dir.join("dangling/x.img"), 1, json!({}))
        .await;
    a.expect(403, "path_not_allowed");
    assert!(a.message().contains("dangling"), "{}", a.message());
}

#[tokio::test]
async fn a_hard_link_to_a_file_outside_is_not_allowed_and_one_inside_uploads() {
    let d = charm_only_daemon().await;
    let outside = write_raw_image(&d.dir.path().join("outside"), "secret.img", 4096);
    std::fs::hard_link(&outside, d.upload_dir.join("linked.img")).unwrap();
    let a = d
        .upload("runner", &d.upload_dir.join("linked.img"), 1, json!({}))
        .await;
    a.expect(403, "path_not_allowed");
    assert!(a.message().contains("hard links"), "{}", a.message());

    let inside = write_raw_image(&d.upload_dir, "real.img", 2 * 1024 * 1024 + 5);
    std::fs::hard_link(&inside, d.upload_dir.join("second-name.img")).unwrap();
    let app = unique_app("hardlink");
    let a = d
        .upload(&app, &d.upload_dir.join("second-name.img"), 1, json!({}))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.body["size"], std::fs::metadata(&inside).unwrap().len());
    assert_eq!(a.body["checksum"], md5_hex(&inside));
    let glance = Direct::charm();
    let image = glance.image(a.body["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(image["status"], "active");
    assert_eq!(image["os_hash_value"], sha512_hex(&inside).as_str());
}
