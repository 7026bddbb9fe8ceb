//! `src_fd` (0.3): over the unix socket, a caller hands the daemon an open file
//! (`SCM_RIGHTS`) instead of a path, so a file outside every upload dir (a
//! charm's own, root-only) is uploaded without a copy. Only a readable regular
//! file is taken; over TCP the field is refused.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use openstack_image_helper::config::Listen;
use serde_json::{json, Value};

use crate::helpers::*;

/// A daemon on a unix socket whose only cloud is the bed's `charm`.
async fn unix_daemon() -> TestDaemon {
    let bed = Bed::get();
    spawn_daemon_on(
        On::Unix,
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |_| {},
    )
    .await
}

fn socket_of(d: &TestDaemon) -> PathBuf {
    match &d.config.listen {
        Listen::Unix(path) => path.clone(),
        Listen::Tcp(addr) => panic!("the daemon listens on TCP {addr}"),
    }
}

/// `POST path` with `body`, the descriptors `fds` sent with the request's bytes
/// (one `sendmsg`), as the README's wire form says; the answer read to its end.
async fn post_with_fds(d: &TestDaemon, path: &str, body: &Value, fds: &[RawFd]) -> Answer {
    post_with(d, path, &[], body, fds).await
}

/// [`post_with_fds`], with more headers.
async fn post_with(
    d: &TestDaemon,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
    fds: &[RawFd],
) -> Answer {
    post_to(&socket_of(d), &d.token, path, headers, body, fds).await
}

/// `POST path` to the daemon at `socket` with `token` (see [`post_with_fds`]).
async fn post_to(
    socket: &Path,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
    fds: &[RawFd],
) -> Answer {
    let body = body.to_string();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(socket, request, fds).await
}

/// The daemon's `latest` of `app` (jammy, x64), over its unix socket.
async fn latest_id(d: &TestDaemon, app: &str) -> Value {
    let request = format!(
        "GET /v1/images/latest?base=jammy&app_name={app}&arch=x64 HTTP/1.1\r\n\
         Host: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        d.token
    );
    let a = exchange(&socket_of(d), request, &[]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["id"].clone()
}

/// Sends `request` (its first bytes with `fds`) and reads the answer.
async fn exchange(socket: &Path, request: String, fds: &[RawFd]) -> Answer {
    let socket = socket.to_path_buf();
    let fds = fds.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut stream = UnixStream::connect(&socket).unwrap();
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let bytes = request.as_bytes();
        let iov = [std::io::IoSlice::new(bytes)];
        let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .expect("sendmsg");
        stream.write_all(&bytes[sent..]).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        parse_answer(&answer)
    })
    .await
    .unwrap()
}

/// An HTTP/1.1 answer with a `Content-Length` body, as JSON.
fn parse_answer(text: &str) -> Answer {
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Answer { status, body }
}

fn upload_body(app: &str, extra: Value) -> Value {
    let mut body = json!({"base": "jammy", "app_name": app, "arch": "x64", "num_revisions": 1});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

/// A 0600 raw image in a directory of its own, outside every upload dir.
fn root_only_image(d: &TestDaemon, size: usize) -> PathBuf {
    let dir = d.dir.path().join("charm-dir");
    let path = write_raw_image(&dir, "compressed.img", size);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!path.starts_with(&d.upload_dir));
    path
}

/// The image is active in Glance and holds exactly `file`'s bytes.
async fn assert_in_glance(answer: &Answer, file: &Path) {
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body["size"], std::fs::metadata(file).unwrap().len());
    assert_eq!(answer.body["checksum"], md5_hex(file));
    let image = Direct::charm()
        .image(answer.body["id"].as_str().unwrap())
        .await
        .expect("the image is in Glance");
    assert_eq!(image["status"], "active");
    assert_eq!(image["os_hash_value"], sha512_hex(file).as_str());
}

#[tokio::test]
async fn a_root_only_file_outside_every_upload_dir_uploads_through_its_descriptor() {
    let d = unix_daemon().await;
    let file = root_only_image(&d, 3 * 1024 * 1024 + 7);
    let app = unique_app("fdpass");
    // The path itself stays refused: the allow-list holds for paths.
    let by_path = upload_body(&app, json!({"src_path": file}));
    post_with_fds(&d, "/v1/images", &by_path, &[])
        .await
        .expect(403, "path_not_allowed");

    // Handed over mid-file: the daemon reads from the start all the same.
    let mut open = File::open(&file).unwrap();
    open.read_exact(&mut [0u8; 1000]).unwrap();
    let body = upload_body(&app, json!({"src_fd": 0}));
    let a = post_with_fds(&d, "/v1/images", &body, &[open.as_raw_fd()]).await;
    assert_in_glance(&a, &file).await;
    assert_eq!(latest_id(&d, &app).await, a.body["id"]);
}

#[tokio::test]
async fn a_retry_with_another_descriptor_of_the_same_file_gets_the_same_job() {
    let d = unix_daemon().await;
    let file = root_only_image(&d, 64 * 1024);
    let body = upload_body(&unique_app("fdretry"), json!({"src_fd": 0}));
    let key = format!("fd-{}", unique_app("k"));
    let post = |fd: RawFd| {
        let headers = [("Idempotency-Key", key.as_str())];
        let body = body.clone();
        let d = &d;
        async move { post_with(d, "/v1/images?wait=false", &headers, &body, &[fd]).await }
    };
    let first_fd = File::open(&file).unwrap();
    let first = post(first_fd.as_raw_fd()).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let second_fd = File::open(&file).unwrap();
    let again = post(second_fd.as_raw_fd()).await;
    assert!(matches!(again.status, 200 | 202), "{:?}", again.body);
    assert_eq!(again.body["job"], first.body["job"]);
    assert_eq!(again.body["request"]["src_fd"], 0);

    // The same key with the file changed is another request: a conflict.
    std::fs::write(&file, b"RAW! other bytes").unwrap();
    let third_fd = File::open(&file).unwrap();
    post(third_fd.as_raw_fd()).await.expect(409, "conflict");
}

#[tokio::test]
async fn a_directory_a_socket_and_a_write_only_descriptor_are_refused_clearly() {
    let d = unix_daemon().await;
    let app = unique_app("fdbad");
    let body = upload_body(&app, json!({"src_fd": 0}));

    let dir = File::open(d.dir.path()).unwrap();
    let a = post_with_fds(&d, "/v1/images", &body, &[dir.as_raw_fd()]).await;
    a.expect(400, "file_not_found");
    assert!(
        a.message()
            .contains("not a regular file: it is a directory"),
        "{}",
        a.message()
    );

    let (sock, _peer) = UnixStream::pair().unwrap();
    let a = post_with_fds(&d, "/v1/images", &body, &[sock.as_raw_fd()]).await;
    a.expect(400, "file_not_found");
    assert!(a.message().contains("it is a socket"), "{}", a.message());

    let file = root_only_image(&d, 4096);
    let write_only = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    let a = post_with_fds(&d, "/v1/images", &body, &[write_only.as_raw_fd()]).await;
    a.expect(400, "invalid_request");
    assert!(a.message().contains("write-only"), "{}", a.message());

    // An index the request did not come with, and a request with none.
    let readable = File::open(&file).unwrap();
    let one = upload_body(&app, json!({"src_fd": 1}));
    let a = post_with_fds(&d, "/v1/images", &one, &[readable.as_raw_fd()]).await;
    a.expect(400, "invalid_request");
    assert!(
        a.message().contains("came with 1 descriptor"),
        "{}",
        a.message()
    );
    let a = post_with_fds(&d, "/v1/images", &body, &[]).await;
    a.expect(400, "invalid_request");
    assert!(
        a.message().contains("came with 0 descriptor"),
        "{}",
        a.message()
    );

    // Both a path and a descriptor.
    let both = upload_body(&app, json!({"src_fd": 0, "src_path": file}));
    let a = post_with_fds(&d, "/v1/images", &both, &[readable.as_raw_fd()]).await;
    a.expect(400, "invalid_request");
    assert!(a.message().contains("not both"), "{}", a.message());

    // Nothing was made of any of them.
    assert_eq!(latest_id(&d, &app).await, Value::Null);
}

#[tokio::test]
async fn src_fd_over_tcp_is_refused() {
    let d = charm_only_daemon().await;
    let body = upload_body(&unique_app("fdtcp"), json!({"src_fd": 0}));
    let a = d.post_json("/v1/images", &body).await;
    a.expect(400, "invalid_request");
    assert!(a.message().contains("unix socket"), "{}", a.message());
}

/// `upload --src-path` of a file outside upload_dirs: the CLI opens it and
/// passes the descriptor (the daemon could not take the path).
#[tokio::test]
async fn the_cli_passes_a_file_outside_upload_dirs_by_itself() {
    let d = unix_daemon().await;
    let file = root_only_image(&d, 1024 * 1024 + 3);
    let app = unique_app("fdcli");
    let config = d.config_path.display().to_string();
    let src = file.display().to_string();
    let args = [
        "--config",
        &config,
        "upload",
        "--base",
        "jammy",
        "--app-name",
        &app,
        "--arch",
        "x64",
        "--num-revisions",
        "1",
        "--src-path",
        &src,
    ];
    let mut command = Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"));
    command.args(args);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let latest = latest_id(&d, &app).await;
    let id = latest.as_str().expect("an image").to_string();
    let image = Direct::charm().image(&id).await.unwrap();
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], std::fs::metadata(&file).unwrap().len());
    assert_eq!(image["os_hash_value"], sha512_hex(&file).as_str());
}

/// The daemon binary run as `nobody` (by `setpriv`), killed when dropped.
struct AsNobody(std::process::Child);

impl Drop for AsNobody {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `path` and everything under it owned by `nobody`.
fn give_to_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            give_to_nobody(&entry.unwrap().path());
        }
    }
}

/// The files a daemon run as `nobody` needs, in a directory it owns: config
/// (unix socket), the bed's `charm` cloud, state and upload dirs.
fn nobody_daemon_dir() -> (tempfile::TempDir, PathBuf) {
    let bed = Bed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(
        root.join("clouds.yaml"),
        clouds_document(&[("charm", bed.cloud_entry("charm"))]),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::write(
        root.join("config.yaml"),
        format!(
            "listen: \"unix:{r}/run/helper.sock\"\nstate_dir: {r}/state\n\
             api_token_file: {r}/state/api-token\nupload_dirs: [{r}/images]\n\
             clouds_yaml: {r}/clouds.yaml\n",
            r = root.display()
        ),
    )
    .unwrap();
    give_to_nobody(&root);
    (dir, root)
}

/// The proof the issue asks for: a daemon running as another user (`nobody`)
/// cannot open root's 0600 file by its path, even inside its upload dir, and
/// uploads it when root hands it over open.
#[tokio::test]
async fn a_daemon_running_as_nobody_reads_a_root_only_file_only_through_its_descriptor() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test starts the daemon as nobody: run it as root"
    );
    let (_dir, root) = nobody_daemon_dir();
    let log = File::create(root.join("daemon.log")).unwrap();
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_openstack-image-helper"))
        .arg("--config")
        .arg(root.join("config.yaml"))
        .arg("serve")
        .env_remove("NOTIFY_SOCKET")
        .env("HOME", "/nonexistent")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("setpriv runs the daemon");
    let mut daemon = AsNobody(child);
    let token_file = root.join("state/api-token");
    let socket = root.join("run/helper.sock");
    for _ in 0..300 {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            let log = std::fs::read_to_string(root.join("daemon.log")).unwrap_or_default();
            panic!("the daemon exited with {status}: {log}");
        }
        let token = std::fs::read_to_string(&token_file).unwrap_or_default();
        if !token.trim().is_empty() && UnixStream::connect(&socket).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.0.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|uid| uid == "65534"),
        "the daemon runs as nobody: {uid_line}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let post = |body: Value, fds: Vec<RawFd>| {
        let (socket, token) = (socket.clone(), token.trim().to_string());
        async move { post_to(&socket, &token, "/v1/images", &[], &body, &fds).await }
    };

    // Root's own file, 0600, even inside the upload dir: by path, nobody
    // cannot open it.
    let file = write_raw_image(&root.join("images"), "root-only.img", 2 * 1024 * 1024 + 1);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let app = unique_app("fdnobody");
    let by_path = upload_body(&app, json!({"src_path": file}));
    let a = post(by_path, vec![]).await;
    a.expect(400, "file_not_found");
    assert!(a.message().contains("ermission denied"), "{}", a.message());

    // Three sent, the first used: the two others close with the request.
    let open = File::open(&file).unwrap();
    let by_fd = upload_body(&app, json!({"src_fd": 0}));
    let fd = open.as_raw_fd();
    let a = post(by_fd, vec![fd, fd, fd]).await;
    assert_in_glance(&a, &file).await;

    // Descriptors sent with a request that uses none (health) close with it,
    // and the upload's own closed with its job: the daemon holds none.
    let health =
        "GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_string();
    assert_eq!(
        exchange(&socket, health, &[fd, fd, fd, fd]).await.status,
        200
    );
    let held = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .filter(|target| target == &file)
            .count()
    };
    let pid = daemon.0.id();
    for _ in 0..100 {
        if held(pid) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        held(pid),
        0,
        "the daemon still holds descriptors of the file"
    );
}
