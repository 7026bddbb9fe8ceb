//! Test harness: the real Keystone + Glance test bed, and daemons spawned in-process
//! on port 0 and driven over HTTP, as a charm hook would.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use openstack_image_helper::clouds::{CloudConfig, CloudsFile};
use openstack_image_helper::config::{Config, Listen};
use openstack_image_helper::daemon::{run, Listener};
use openstack_image_helper::openstack::session::Session;
use serde_json::Value;
use tokio::sync::oneshot;

/// The running test bed (`tests/openstack/up.sh`).
pub struct Bed {
    pub clouds_yaml: PathBuf,
    pub token_lifetime: Duration,
    pub keystone_url: String,
    pub glance_url: String,
    pub glance_capped_url: Option<String>,
    /// Cloud B's own Glance (its project, database and store).
    pub glance_b_url: String,
}

impl Bed {
    pub fn get() -> &'static Bed {
        static BED: OnceLock<Bed> = OnceLock::new();
        BED.get_or_init(|| {
            let dir = std::env::var_os("OSIH_BED_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/openstack-bed"));
            let settings = std::fs::read_to_string(dir.join("settings")).unwrap_or_else(|_| {
                panic!(
                    "no OpenStack test bed at {}: start it with tests/openstack/up.sh (`make test` does)",
                    dir.display()
                )
            });
            let setting = |key: &str| {
                settings
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key}=")))
                    .map(str::to_string)
                    .unwrap_or_default()
            };
            let lifetime: u64 = setting("token_lifetime").parse().unwrap_or(3600);
            let capped = setting("glance_capped_port");
            Bed {
                clouds_yaml: dir.join("clouds.yaml"),
                token_lifetime: Duration::from_secs(lifetime),
                keystone_url: format!("http://127.0.0.1:{}/v3", setting("keystone_port")),
                glance_url: format!("http://127.0.0.1:{}", setting("glance_port")),
                glance_capped_url: (!capped.is_empty()).then(|| format!("http://127.0.0.1:{capped}")),
                glance_b_url: format!("http://127.0.0.1:{}", setting("glance_b_port")),
            }
        })
    }

    /// The clouds a plain daemon gets: cloud A's `charm`, `charm-appcred` and
    /// `admin`. The bed's clouds.yaml also has cloud B (`charm-b`) and the
    /// domain-scoped `charm-domain` that the daemon refuses: add them with
    /// `cloud_entry` where a test wants them.
    pub fn clouds_document(&self) -> String {
        clouds_document(&["charm", "charm-appcred", "admin"].map(|n| (n, self.cloud_entry(n))))
    }

    /// One cloud of the bed's clouds.yaml as a YAML mapping, to build documents from.
    pub fn cloud_entry(&self, name: &str) -> serde_yaml::Value {
        let text = std::fs::read_to_string(&self.clouds_yaml).expect("the bed's clouds.yaml");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        doc["clouds"][name].clone()
    }

    pub fn cloud(&self, name: &str) -> CloudConfig {
        CloudsFile::load(Some(&self.clouds_yaml))
            .unwrap()
            .get(name)
            .unwrap()
            .clone()
    }

    /// A value of the bed's `settings` file (ports, sizes), empty when absent.
    pub fn setting(&self, key: &str) -> String {
        let settings = std::fs::read_to_string(self.clouds_yaml.with_file_name("settings"))
            .unwrap_or_default();
        settings
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .unwrap_or_default()
    }

    /// The URL of a Glance of the bed by its port's setting (`glance_import_port`, ...).
    pub fn glance_at(&self, port_key: &str) -> String {
        let port = self.setting(port_key);
        assert!(
            !port.is_empty(),
            "the bed has no {port_key}: restart it with tests/openstack/up.sh"
        );
        format!("http://127.0.0.1:{port}")
    }

    /// A session of the bed's own, outside any daemon, to set up and check Glance.
    pub fn session(&self, name: &str) -> std::sync::Arc<Session> {
        Session::new(self.cloud(name), Duration::from_secs(600)).unwrap()
    }
}

/// A clouds.yaml document from `(name, entry)` pairs.
pub fn clouds_document(entries: &[(&str, serde_yaml::Value)]) -> String {
    let mut clouds = serde_yaml::Mapping::new();
    for (name, entry) in entries {
        clouds.insert(serde_yaml::Value::from(*name), entry.clone());
    }
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("clouds".into(), serde_yaml::Value::Mapping(clouds));
    serde_yaml::to_string(&serde_yaml::Value::Mapping(doc)).unwrap()
}

/// A daemon running in this test process, on its own port, state dir and upload dir.
pub struct TestDaemon {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub upload_dir: PathBuf,
    pub config: Config,
    pub config_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Where a test daemon listens.
pub enum On {
    /// A TCP port of its own on loopback.
    Tcp,
    /// A unix socket in its directory (`run/helper.sock`); reach it with the CLI.
    Unix,
}

/// A daemon whose only cloud is the bed's `charm` (the default), with default settings.
pub async fn charm_only_daemon() -> TestDaemon {
    let bed = Bed::get();
    spawn_daemon(
        &clouds_document(&[("charm", bed.cloud_entry("charm"))]),
        |_| {},
    )
    .await
}

/// Starts a daemon on a TCP port with `clouds` as its clouds.yaml and the config
/// adjusted by `tweak`.
pub async fn spawn_daemon(clouds: &str, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
    spawn_daemon_on(On::Tcp, clouds, tweak).await
}

/// Starts a daemon listening `on` TCP or a unix socket.
pub async fn spawn_daemon_on(on: On, clouds: &str, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
    // Quiet unless asked: RUST_LOG=debug cargo test -- --nocapture shows the daemon's log.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let clouds_path = root.join("clouds.yaml");
    std::fs::write(&clouds_path, clouds).unwrap();
    let upload_dir = root.join("images");
    let tcp = match on {
        On::Tcp => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        On::Unix => None,
    };
    let listen = match &tcp {
        Some(listener) => Listen::Tcp(listener.local_addr().unwrap()),
        None => Listen::Unix(root.join("run/helper.sock")),
    };
    let mut config = Config {
        listen,
        clouds_yaml: Some(clouds_path),
        state_dir: root.join("state"),
        api_token_file: root.join("state/api-token"),
        upload_dirs: vec![upload_dir.clone()],
        ..Config::default()
    };
    tweak(&mut config);
    let config_path = root.join("config.yaml");
    std::fs::write(&config_path, config_yaml(&config)).unwrap();
    let listener = match tcp {
        Some(listener) => Listener::Tcp(listener),
        None => Listener::bind(&config).await.unwrap(),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let cfg = config.clone();
    let handle = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        if let Err(err) = run(cfg, listener, shutdown).await {
            panic!("daemon failed: {err}");
        }
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = match &config.listen {
        Listen::Tcp(addr) => format!("http://{addr}"),
        unix => unix.to_string(),
    };
    let token = wait_until_up(&config, &http, &base).await;
    TestDaemon {
        base,
        token,
        http,
        upload_dir,
        config,
        config_path,
        dir,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// Waits until the daemon answers (its health over TCP, a connection to its
/// unix socket) and returns the API token it made.
async fn wait_until_up(config: &Config, http: &reqwest::Client, base: &str) -> String {
    for _ in 0..200 {
        let up = match &config.listen {
            Listen::Tcp(_) => http
                .get(format!("{base}/v1/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Listen::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
        };
        if up {
            let token = std::fs::read_to_string(&config.api_token_file).unwrap_or_default();
            if !token.trim().is_empty() {
                return token.trim().to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the daemon did not come up on {}", config.listen);
}

/// The daemon config as a YAML file, for the CLI.
fn config_yaml(config: &Config) -> String {
    let mut s = format!(
        "listen: \"{}\"\nstate_dir: {}\napi_token_file: {}\nupload_dirs: [{}]\n",
        config.listen,
        config.state_dir.display(),
        config.api_token_file.display(),
        config
            .upload_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    if let Some(c) = &config.clouds_yaml {
        s.push_str(&format!("clouds_yaml: {}\n", c.display()));
    }
    s
}

/// A response as a test reads it: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// Asserts the contract's answer: this HTTP status and this error code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "{:?}",
            self.body
        );
        self
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl TestDaemon {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the daemon answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    pub fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.authed(reqwest::Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(self.authed(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn status(&self) -> Value {
        let a = self.get("/v1/status").await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        a.body
    }

    pub async fn cloud_status(&self, name: &str) -> Value {
        let status = self.status().await;
        status["clouds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no cloud {name} in {status}"))
    }

    /// Waits until the cloud's status satisfies `done`, and returns that status.
    pub async fn wait_for_cloud(
        &self,
        name: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.cloud_status(name).await;
            if done(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not as expected in time: {s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the cloud's session is authenticated.
    pub async fn wait_authenticated(&self, name: &str, within: Duration) -> Value {
        self.wait_for_cloud(name, within, |s| s["authenticated"] == true)
            .await
    }

    /// Waits until the cloud's session reports an error.
    pub async fn wait_for_error(&self, name: &str, within: Duration) -> Value {
        self.wait_for_cloud(name, within, |s| !s["last_error"].is_null())
            .await
    }

    pub async fn latest(&self, app: &str, cloud: Option<&str>) -> Answer {
        let mut path = format!("/v1/images/latest?base=jammy&app_name={app}&arch=x64");
        if let Some(c) = cloud {
            path.push_str(&format!("&cloud={c}"));
        }
        self.get(&path).await
    }

    pub async fn upload(&self, app: &str, file: &Path, num_revisions: u32, extra: Value) -> Answer {
        let mut body = serde_json::json!({
            "base": "jammy", "app_name": app, "arch": "x64",
            "num_revisions": num_revisions, "src_path": file,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.post_json("/v1/images", &body).await
    }
}

/// An application name no other test uses (letters only, so it is a valid Juju name).
pub fn unique_app(prefix: &str) -> String {
    let suffix: String = (0..8)
        .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
        .collect();
    format!("{prefix}-{suffix}")
}

/// A raw image of `size` random bytes.
pub fn write_raw_image(dir: &Path, name: &str, size: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let mut data = vec![0u8; size];
    rand::fill(&mut data[..]);
    // Not by accident a qcow2 (or another format Glance's inspector knows).
    data[..4].copy_from_slice(b"RAW!");
    std::fs::write(&path, &data).unwrap();
    path
}

/// A real qcow2 image (qemu-img) holding `size` random bytes.
pub fn write_qcow2_image(dir: &Path, name: &str, size: usize) -> PathBuf {
    let raw = write_raw_image(dir, &format!("{name}.raw"), size);
    let path = dir.join(name);
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&path)
        .output()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(raw).unwrap();
    path
}

pub fn md5_hex(path: &Path) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(std::fs::read(path).unwrap()))
}

pub fn sha512_hex(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, &data).as_ref())
}

/// A token of `session`, to call OpenStack directly.
async fn token_of(session: &Session) -> String {
    session
        .authenticated()
        .await
        .unwrap()
        .token
        .value
        .expose()
        .to_string()
}

/// Raw Glance calls for set-up and checks, outside the daemon.
pub struct Direct {
    pub session: std::sync::Arc<Session>,
    pub http: reqwest::Client,
    glance_url: String,
}

impl Direct {
    /// Cloud A's project, as the bed's `charm` user.
    pub fn charm() -> Direct {
        Direct {
            session: Bed::get().session("charm"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            glance_url: Bed::get().glance_url.clone(),
        }
    }

    /// Cloud B's project and Glance, as the bed's `charm-b` user.
    pub fn cloud_b() -> Direct {
        Direct {
            session: Bed::get().session("charm-b"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            glance_url: Bed::get().glance_b_url.clone(),
        }
    }

    /// One of the bed's clouds as its own user, at the Glance of `port_key`
    /// (`glance_import_port`, `glance_stores_port`, `glance_importonly_port`,
    /// `glance_capped_port`).
    pub fn of(cloud: &str, port_key: &str) -> Direct {
        Direct {
            session: Bed::get().session(cloud),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            glance_url: Bed::get().glance_at(port_key),
        }
    }

    pub async fn token(&self) -> String {
        token_of(&self.session).await
    }

    /// A request to Glance's `path` with the charm's token.
    async fn call(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.glance_url))
            .header("X-Auth-Token", self.token().await)
    }

    /// An idempotent request (GET, PATCH, DELETE), sent again on a 500: the
    /// bed's Glance runs on sqlite, which answers "database is locked" while
    /// other tests write; the test's own look is not what is under test.
    async fn idempotent(
        &self,
        method: reqwest::Method,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> reqwest::Response {
        for _ in 0..5 {
            let r = build(self.call(method.clone(), path).await)
                .send()
                .await
                .unwrap();
            if r.status() != 500 {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        build(self.call(method, path).await).send().await.unwrap()
    }

    pub async fn image(&self, id: &str) -> Option<Value> {
        let r = self
            .idempotent(reqwest::Method::GET, &format!("/v2/images/{id}"), |r| r)
            .await;
        if r.status() == 404 {
            return None;
        }
        assert!(r.status().is_success(), "GET image {id}: {}", r.status());
        Some(r.json().await.unwrap())
    }

    /// Every image of that name in the project, any status.
    pub async fn images_named(&self, name: &str) -> Vec<Value> {
        let r = self
            .idempotent(reqwest::Method::GET, "/v2/images", |r| {
                r.query(&[("name", name), ("limit", "100")])
            })
            .await;
        assert!(r.status().is_success(), "GET images {name}: {}", r.status());
        let body: Value = r.json().await.unwrap();
        body["images"].as_array().cloned().unwrap_or_default()
    }

    /// The newest active image of that name (the names tests use are their own) as Glance itself
    /// orders them (`created_at`, then id; a database that keeps sub-second
    /// times, like the bed's sqlite, orders one second's images by time).
    pub async fn newest_active(&self, name: &str) -> Option<Value> {
        let r = self
            .idempotent(reqwest::Method::GET, "/v2/images", |r| {
                r.query(&[
                    ("name", name),
                    ("status", "active"),
                    ("sort", "created_at:desc,id:desc"),
                    ("limit", "1"),
                ])
            })
            .await;
        let body: Value = r.json().await.unwrap();
        body["images"].as_array().and_then(|l| l.first()).cloned()
    }

    /// Creates an image and leaves it `queued`, as an upload under way elsewhere would.
    pub async fn create_queued(&self, name: &str, properties: Value) -> String {
        let mut body =
            serde_json::json!({"name": name, "disk_format": "raw", "container_format": "bare"});
        if let (Some(b), Some(p)) = (body.as_object_mut(), properties.as_object()) {
            for (k, v) in p {
                b.insert(k.clone(), v.clone());
            }
        }
        let r = self
            .call(reqwest::Method::POST, "/v2/images")
            .await
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn set_protected(&self, id: &str, protected: bool) {
        let patch =
            serde_json::json!([{"op": "replace", "path": "/protected", "value": protected}]);
        let r = self.patch(id, &patch).await;
        assert!(
            r.status().is_success(),
            "protect {id}: {}",
            r.text().await.unwrap()
        );
    }

    /// Hides or shows an image (`os_hidden`), as an operator would.
    pub async fn set_hidden(&self, id: &str, hidden: bool) {
        let patch = serde_json::json!([{"op": "replace", "path": "/os_hidden", "value": hidden}]);
        let r = self.patch(id, &patch).await;
        assert!(
            r.status().is_success(),
            "hide {id}: {}",
            r.text().await.unwrap()
        );
    }

    async fn patch(&self, id: &str, patch: &Value) -> reqwest::Response {
        self.idempotent(reqwest::Method::PATCH, &format!("/v2/images/{id}"), |r| {
            r.header(
                "Content-Type",
                "application/openstack-images-v2.1-json-patch",
            )
            .body(patch.to_string())
        })
        .await
    }

    pub async fn delete(&self, id: &str) {
        let path = format!("/v2/images/{id}");
        self.idempotent(reqwest::Method::DELETE, &path, |r| r).await;
    }
}

/// A TCP forwarder on `port` to `target`, standing in front of the real Keystone
/// so a test can make "Keystone" unreachable and reachable again without
/// disturbing the other tests that share the bed.
pub async fn start_forwarder(
    port: u16,
    target: std::net::SocketAddr,
) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Keystone admin calls for tests that need users and role assignments.
pub struct KeystoneAdmin {
    pub session: std::sync::Arc<Session>,
    pub http: reqwest::Client,
}

impl KeystoneAdmin {
    pub fn new() -> KeystoneAdmin {
        KeystoneAdmin {
            session: Bed::get().session("admin"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let token = token_of(&self.session).await;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", Bed::get().keystone_url))
            .header("X-Auth-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn id_of(&self, collection: &str, name: &str) -> String {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/{collection}?name={name}"),
                None,
            )
            .await;
        v[collection][0]["id"].as_str().unwrap().to_string()
    }

    /// A new user with the member role on charm-project; returns (user id, clouds.yaml entry).
    pub async fn create_member(&self, name: &str, password: &str) -> (String, serde_yaml::Value) {
        let project = self.id_of("projects", "charm-project").await;
        let v = self
            .call(
                reqwest::Method::POST,
                "/users",
                Some(serde_json::json!({"user": {"name": name, "password": password, "domain_id": "default"}})),
            )
            .await;
        let user = v["user"]["id"].as_str().unwrap().to_string();
        self.grant_member(&user).await;
        let mut entry = Bed::get().cloud_entry("charm");
        entry["auth"]["username"] = name.into();
        entry["auth"]["password"] = password.into();
        let _ = project;
        (user, entry)
    }

    pub async fn grant_member(&self, user: &str) {
        let project = self.id_of("projects", "charm-project").await;
        let role = self.id_of("roles", "member").await;
        self.call(
            reqwest::Method::PUT,
            &format!("/projects/{project}/users/{user}/roles/{role}"),
            None,
        )
        .await;
    }

    /// Disabling a user revokes every token Keystone issued to it.
    pub async fn set_enabled(&self, user: &str, enabled: bool) {
        self.call(
            reqwest::Method::PATCH,
            &format!("/users/{user}"),
            Some(serde_json::json!({"user": {"enabled": enabled}})),
        )
        .await;
    }

    pub async fn delete_user(&self, user: &str) {
        self.call(reqwest::Method::DELETE, &format!("/users/{user}"), None)
            .await;
    }
}

/// A forwarder to the real Glance that holds every connection starting with a
/// `PUT ` (the image data: the daemon's upload client has connections of its
/// own) until the gate opens: a unit whose upload is slow, on demand.
pub async fn gated_glance() -> (String, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target: std::net::SocketAddr = Bed::get()
        .glance_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (gate, opened) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut opened = opened.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; 64 * 1024];
                let Ok(n) = inbound.read(&mut first).await else {
                    return;
                };
                if first[..n].starts_with(b"PUT ") {
                    let _ = opened.wait_for(|open| *open).await;
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                if outbound.write_all(&first[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (url, gate)
}
