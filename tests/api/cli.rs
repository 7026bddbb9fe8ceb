//! The CLI against a running daemon: exit codes, and `upload` then `latest`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::helpers::*;

/// Runs the CLI with `args`, checks that it exits with `exit` (the contract's
/// 0 ok, 1 the daemon's error, 2 usage, 3 unreachable), and returns its stdout
/// and stderr.
async fn run_cli<I, S>(args: I, exit: i32) -> (String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"));
    c.args(args);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(exit),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// `--config CONFIG SUBCOMMAND --base jammy --app-name APP --arch ARCH`.
fn about(config: &Path, subcommand: &str, app: &str, arch: &str) -> Vec<String> {
    let config = config.display().to_string();
    let words = [
        "--config",
        &config,
        subcommand,
        "--base",
        "jammy",
        "--app-name",
        app,
        "--arch",
        arch,
    ];
    words.map(str::to_string).to_vec()
}

/// `latest` of `app` (jammy, x64), through the daemon `config` names.
fn latest(config: &Path, app: &str) -> Vec<String> {
    about(config, "latest", app, "x64")
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

    let (stdout, _) = run_cli(latest(&d.config_path, &app), 0).await;
    assert_eq!(stdout, "\n", "no image yet: an empty line");

    let mut upload = about(&d.config_path, "upload", &app, "x64");
    upload.extend(["--num-revisions", "2", "--src-path"].map(str::to_string));
    upload.push(file.display().to_string());
    let (stdout, _) = run_cli(upload, 0).await;
    let uploaded = stdout.trim().to_string();
    assert_eq!(uploaded.len(), 36, "an image id: {uploaded}");

    // `--config` after the subcommand works too.
    let mut config_last = latest(&d.config_path, &app).split_off(2);
    config_last.extend(["--config".to_string(), d.config_path.display().to_string()]);
    let (stdout, _) = run_cli(config_last, 0).await;
    assert_eq!(stdout.trim(), uploaded);
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
    let config = d.config_path.display().to_string();

    // 2: a missing flag.
    run_cli(
        [
            "--config", &config, "latest", "--base", "jammy", "--arch", "x64",
        ],
        2,
    )
    .await;

    // 1: the daemon's error, its code and message on stderr.
    let sparc = about(&d.config_path, "latest", "runner", "sparc");
    let (_, stderr) = run_cli(sparc, 1).await;
    assert!(
        stderr.contains("invalid_request") && stderr.contains("sparc"),
        "{stderr}"
    );

    // `status` shows the cloud.
    let (stdout, _) = run_cli(["--config", &config, "status"], 0).await;
    assert!(stdout.contains("charm"), "{stdout}");

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
    run_cli(latest(&dead, "runner"), 3).await;
}

/// `listen: unix:/path`: the daemon serves on a unix socket and the CLI finds it there.
#[tokio::test]
async fn the_cli_reaches_a_daemon_on_a_unix_socket() {
    let bed = Bed::get();
    let d = spawn_daemon_on(
        On::Unix,
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |_| {},
    )
    .await;
    assert!(d.base.starts_with("unix:"), "{}", d.base);
    let (stdout, _) = run_cli(latest(&d.config_path, &unique_app("unix")), 0).await;
    assert_eq!(stdout, "\n");
}
