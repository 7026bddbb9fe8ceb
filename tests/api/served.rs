//! A daemon as its own process (`openstack-image-helper serve`), for what a
//! daemon in the test process cannot show: signals (SIGHUP, SIGTERM), the exit
//! code, the systemd notifications, and process-wide metrics of one daemon alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::helpers::{free_port, Answer};

pub struct Served {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub upload_dir: PathBuf,
    pub config_path: PathBuf,
    pub clouds_path: PathBuf,
    pub log_path: PathBuf,
    /// The environment added to the daemon's (kept for a restart).
    env: Vec<(String, String)>,
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` with `clouds` as its clouds.yaml, `extra_config` appended to its
/// config (YAML lines) and `env` added to its environment.
pub async fn serve(clouds: &str, extra_config: &str, env: &[(&str, &str)]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let clouds_path = root.join("clouds.yaml");
    std::fs::write(&clouds_path, clouds).unwrap();
    let upload_dir = root.join("images");
    std::fs::create_dir_all(&upload_dir).unwrap();
    let port = free_port();
    let config_path = root.join("config.yaml");
    let base_config = base_config(&root, port);
    std::fs::write(&config_path, format!("{base_config}{extra_config}")).unwrap();
    let log_path = root.join("daemon.log");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let child = spawn(&config_path, &log_path, &env);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut served = Served {
        base: format!("http://127.0.0.1:{port}"),
        token: String::new(),
        http,
        upload_dir,
        config_path,
        clouds_path,
        log_path,
        env,
        dir,
        child,
    };
    served.token = served.wait_until_up(&root.join("state/api-token")).await;
    served
}

/// `serve` with `config`, its stderr appended to `log_path`.
fn spawn(config_path: &Path, log_path: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_openstack-image-helper"));
    command
        .arg("--config")
        .arg(config_path)
        .arg("serve")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("the daemon binary starts")
}

/// The config of a test daemon: its own port, state and upload dirs.
pub fn base_config(root: &Path, port: u16) -> String {
    format!(
        "listen: \"127.0.0.1:{port}\"\nstate_dir: {root}/state\napi_token_file: {root}/state/api-token\n\
         upload_dirs: [{root}/images]\nclouds_yaml: {root}/clouds.yaml\n",
        root = root.display()
    )
}

impl Served {
    async fn wait_until_up(&mut self, token_file: &Path) -> String {
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited with {status}: {}", self.log());
            }
            let up = self
                .http
                .get(format!("{}/v1/health", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let token = std::fs::read_to_string(token_file).unwrap_or_default();
            if up && !token.trim().is_empty() {
                return token.trim().to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the daemon did not come up: {}", self.log());
    }

    /// SIGKILL (a crash), then the same daemon again: same config, state dir
    /// and port; its log goes on in the same file.
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.restart().await;
    }

    /// SIGKILL, and the process reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The same daemon again after it exited or was killed: same config,
    /// state dir and port; its log goes on in the same file.
    pub async fn restart(&mut self) {
        self.child = spawn(&self.config_path, &self.log_path, &self.env);
        let token_file = self
            .dir
            .path()
            .canonicalize()
            .unwrap()
            .join("state/api-token");
        self.token = self.wait_until_up(&token_file).await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no '{needle}' in the log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the daemon did not exit within {within:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the daemon answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.authed(reqwest::Method::GET, path)).await
    }

    /// The body of an upload request for `file`.
    pub fn upload_body(app: &str, file: &Path, cloud: &str) -> Value {
        json!({
            "base": "jammy", "app_name": app, "arch": "x64", "num_revisions": 1,
            "src_path": file, "cloud": cloud,
        })
    }

    pub async fn upload(&self, app: &str, file: &Path, cloud: &str) -> Answer {
        let request = self
            .authed(reqwest::Method::POST, "/v1/images")
            .json(&Self::upload_body(app, file, cloud));
        self.send(request).await
    }

    pub async fn status(&self) -> Value {
        let answer = self.get("/v1/status").await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body
    }

    /// The clouds of `/v1/status` by name.
    pub async fn clouds(&self) -> Vec<Value> {
        self.status().await["clouds"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn cloud(&self, name: &str) -> Option<Value> {
        self.clouds().await.into_iter().find(|c| c["name"] == name)
    }

    /// Waits until `done` holds for the status, at most `within`.
    pub async fn wait_status(&self, what: &str, within: Duration, done: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.status().await;
            if done(&status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {status}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an upload under way has sent data and has its image.
    pub async fn wait_uploading(&self, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let uploads = self.get("/v1/jobs").await.body;
            let sending = uploads["jobs"].as_array().and_then(|list| {
                list.iter()
                    .find(|j| {
                        j["state"] == "uploading"
                            && j["image_id"].is_string()
                            && j["bytes_sent"].as_u64() > Some(0)
                    })
                    .cloned()
            });
            if let Some(upload) = sending {
                return upload;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no upload sending data: {uploads}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether `status` lists `name` as authenticated.
pub fn authenticated(status: &Value, name: &str) -> bool {
    status["clouds"].as_array().is_some_and(|l| {
        l.iter()
            .any(|c| c["name"] == name && c["authenticated"] == true)
    })
}

/// A TCP forwarder to `target` (Glance) whose open connections can be frozen:
/// a frozen connection forwards nothing more from the client until thawed, while
/// connections opened after the freeze flow. Makes "an upload under way" last as
/// long as a test needs, whatever the machine's speed.
pub struct Gate {
    pub port: u16,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes per second from the client, 0: no limit.
    rate: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.thaw();
        self.task.abort();
    }
}

impl Gate {
    pub async fn start(target: &str) -> Gate {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let target: std::net::SocketAddr = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let next_id = Arc::new(AtomicU64::new(1));
        let frozen_below = Arc::new(AtomicU64::new(0));
        let rate = Arc::new(AtomicU64::new(0));
        let (ids, frozen, limit) = (next_id.clone(), frozen_below.clone(), rate.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let id = ids.fetch_add(1, Ordering::SeqCst);
                let frozen = frozen.clone();
                let limit = limit.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let rate = limit.load(Ordering::SeqCst);
                        if rate > 0 {
                            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64))
                                .await;
                        }
                        while frozen.load(Ordering::SeqCst) > id {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_server).await;
                    let _ = down.await;
                });
            }
        });
        Gate {
            port,
            next_id,
            frozen_below,
            rate,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Freezes the connections open now.
    pub fn freeze(&self) {
        use std::sync::atomic::Ordering;
        let next = self.next_id.load(Ordering::SeqCst);
        self.frozen_below.store(next, Ordering::SeqCst);
    }

    /// Limits what every connection forwards from the client to `bytes_per_second`.
    pub fn slow_down(&self, bytes_per_second: u64) {
        self.rate
            .store(bytes_per_second, std::sync::atomic::Ordering::SeqCst);
    }

    /// Back to full speed, nothing frozen.
    pub fn thaw(&self) {
        self.rate.store(0, std::sync::atomic::Ordering::SeqCst);
        self.frozen_below
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The bed's cloud `name` with its image endpoint overridden to `endpoint`.
pub fn cloud_via(name: &str, endpoint: &str) -> serde_yaml::Value {
    let mut entry = super::helpers::Bed::get().cloud_entry(name);
    entry["image_endpoint_override"] = serde_yaml::Value::from(endpoint);
    entry
}
