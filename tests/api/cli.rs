//! The CLI against a running daemon: exit codes, and `upload` then `latest`.

use std::process::Command;

use crate::helpers::*;

fn cli(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"));
    c.arg("--config").arg(config);
    c
}

async fn output(mut c: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn upload_then_latest_print_the_same_id() {
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |_| {},
    )
    .await;
    let app = unique_app("cli");
    let file = write_raw_image(&d.upload_dir, "cli.img", 2 * 1024 * 1024);

    let mut c = cli(&d.config_path);
    c.args([
        "latest",
        "--base",
        "jammy",
        "--app-name",
        &app,
        "--arch",
        "x64",
    ]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\n",
        "no image yet: an empty line"
    );

    let mut c = cli(&d.config_path);
    c.args([
        "upload",
        "--base",
        "jammy",
        "--app-name",
        &app,
        "--arch",
        "x64",
        "--num-revisions",
        "2",
        "--src-path",
    ])
    .arg(&file);
    let out = output(c).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uploaded = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(uploaded.len(), 36, "an image id: {uploaded}");

    // `--config` after the subcommand works too.
    let mut c = Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"));
    c.args([
        "latest",
        "--base",
        "jammy",
        "--app-name",
        &app,
        "--arch",
        "x64",
        "--config",
    ])
    .arg(&d.config_path);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), uploaded);
    Direct::charm().delete(&uploaded).await;
}

#[tokio::test]
async fn exit_codes_say_who_failed() {
    let bed = Bed::get();
    let d = spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |_| {},
    )
    .await;

    // 2: a missing flag.
    let mut c = cli(&d.config_path);
    c.args(["latest", "--base", "jammy", "--arch", "x64"]);
    assert_eq!(output(c).await.status.code(), Some(2));

    // 1: the daemon's error, its code and message on stderr.
    let mut c = cli(&d.config_path);
    c.args([
        "latest",
        "--base",
        "jammy",
        "--app-name",
        "runner",
        "--arch",
        "sparc",
    ]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid_request") && stderr.contains("sparc"),
        "{stderr}"
    );

    // `status` shows the cloud.
    let mut c = cli(&d.config_path);
    c.arg("status");
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("charm"));

    // 3: nothing listens there.
    let dead = d.dir.path().join("dead.yaml");
    std::fs::write(
        &dead,
        format!(
            "listen: 127.0.0.1:{}\napi_token_file: {}\n",
            free_port(),
            d.config.api_token_file.display()
        ),
    )
    .unwrap();
    let mut c = cli(&dead);
    c.args([
        "latest",
        "--base",
        "jammy",
        "--app-name",
        "runner",
        "--arch",
        "x64",
    ]);
    let out = output(c).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `listen: unix:/path`: the daemon serves on a unix socket and the CLI finds it there.
#[tokio::test]
async fn the_cli_reaches_a_daemon_on_a_unix_socket() {
    use openstack_image_helper::config::{Config, Listen};
    use openstack_image_helper::daemon::{run, Listener};

    let bed = Bed::get();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(
        root.join("clouds.yaml"),
        clouds_document(&[("charm", bed.cloud_entry("charm"))]),
    )
    .unwrap();
    let socket = root.join("run/helper.sock");
    let config = Config {
        listen: Listen::Unix(socket.clone()),
        clouds_yaml: Some(root.join("clouds.yaml")),
        state_dir: root.join("state"),
        api_token_file: root.join("state/api-token"),
        upload_dirs: vec![root.join("images")],
        ..Config::default()
    };
    let config_path = root.join("config.yaml");
    std::fs::write(
        &config_path,
        format!(
            "listen: \"unix:{}\"\napi_token_file: {}\n",
            socket.display(),
            root.join("state/api-token").display()
        ),
    )
    .unwrap();
    let listener = Listener::bind(&config).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(config, listener, async move {
        let _ = rx.await;
    }));
    let mut c = cli(&config_path);
    c.args([
        "latest",
        "--base",
        "noble",
        "--app-name",
        "unix-probe",
        "--arch",
        "arm64",
    ]);
    let out = output(c).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\n");
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
