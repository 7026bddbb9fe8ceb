//! The command line: `serve` runs the daemon; `latest`, `upload` and `status` are
//! clients of a running daemon, which they find (address and API token) from the
//! same config file.
//!
//! Exit codes (the contract): 0 ok, 1 the daemon answered with an error, 2 usage
//! error, 3 daemon unreachable. Results go to stdout, progress and errors to stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::{Config, Listen, DEFAULT_CONFIG_PATH};
use crate::images::UploadFields;
use crate::runtime::client_api_token;
use crate::secret::Secret;

pub(crate) const EXIT_OK: i32 = 0;
pub(crate) const EXIT_DAEMON_ERROR: i32 = 1;
pub(crate) const EXIT_USAGE: i32 = 2;
pub(crate) const EXIT_UNREACHABLE: i32 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "openstack-image-helper",
    version,
    about = "Keeps a charm's OpenStack images: upload, verify, prune, latest."
)]
pub(crate) struct Cli {
    /// The daemon's config file (clients read the address and API token from it).
    #[arg(long, global = true, env = "OPENSTACK_IMAGE_HELPER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the daemon in the foreground (systemd runs it).
    Serve,
    /// Print the id of the newest active image (an empty line when there is none).
    Latest(FamilyArgs),
    /// Upload an image file as a new revision and print its id.
    Upload(UploadArgs),
    /// Print the daemon's view of each cloud.
    Status {
        /// Print the daemon's JSON answer as it is.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct FamilyArgs {
    /// Ubuntu base: focal, jammy, noble, resolute (or 20.04, ...).
    #[arg(long)]
    pub(crate) base: String,
    /// The Juju application name.
    #[arg(long)]
    pub(crate) app_name: String,
    /// Architecture: x64, arm64, s390x, ppc64le.
    #[arg(long)]
    pub(crate) arch: String,
    /// The cloud (default: the daemon's default cloud).
    #[arg(long)]
    pub(crate) cloud: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct UploadArgs {
    #[command(flatten)]
    pub(crate) family: FamilyArgs,
    /// How many active revisions to keep, the new one included.
    #[arg(long)]
    pub(crate) num_revisions: u32,
    /// The image file (inside one of the daemon's upload_dirs).
    #[arg(long)]
    pub(crate) src_path: PathBuf,
    /// qcow2, raw, ... (default: detected).
    #[arg(long)]
    pub(crate) disk_format: Option<String>,
    /// Extra image property KEY=VALUE (repeatable).
    #[arg(long = "property", value_parser = parse_property)]
    pub(crate) properties: Vec<(String, String)>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))
}

/// Entry point of the binary; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_USAGE,
            };
        }
    };
    let config = match load_config(cli.config.as_ref()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return match cli.command {
                Command::Serve => EXIT_DAEMON_ERROR,
                _ => EXIT_UNREACHABLE,
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return EXIT_DAEMON_ERROR;
        }
    };
    match cli.command {
        Command::Serve => runtime.block_on(crate::daemon::serve(config, cli.config.clone())),
        Command::Latest(args) => runtime.block_on(latest(&config, args)),
        Command::Upload(args) => runtime.block_on(upload(&config, args)),
        Command::Status { json } => runtime.block_on(status(&config, json)),
    }
}

/// The config file; the default path may be missing (every key has a default),
/// a path given explicitly may not.
fn load_config(explicit: Option<&PathBuf>) -> Result<Config, String> {
    match explicit {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => {
            let path = PathBuf::from(DEFAULT_CONFIG_PATH);
            if path.exists() {
                Config::load(&path).map_err(|e| e.to_string())
            } else {
                Ok(Config::default())
            }
        }
    }
}

/// A client of the daemon's API.
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

/// A failed client call, already sorted by exit code.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The daemon answered with an error (exit 1).
    Daemon {
        status: u16,
        code: String,
        message: String,
    },
    /// The daemon could not be reached, or its token read (exit 3).
    Unreachable(String),
}

impl ClientError {
    fn report(&self) -> i32 {
        match self {
            ClientError::Daemon {
                status,
                code,
                message,
            } => {
                eprintln!("error: {code}: {message} (HTTP {status})");
                EXIT_DAEMON_ERROR
            }
            ClientError::Unreachable(message) => {
                eprintln!("error: daemon unreachable: {message}");
                EXIT_UNREACHABLE
            }
        }
    }
}

impl ApiClient {
    pub(crate) fn from_config(config: &Config) -> Result<ApiClient, ClientError> {
        let token =
            client_api_token(config).map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy();
        let (builder, base) = match &config.listen {
            Listen::Tcp(addr) => {
                // A wildcard listen address is reached on loopback.
                let mut addr = *addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr {
                        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                (builder, format!("http://{addr}"))
            }
            Listen::Unix(path) => (
                builder.unix_socket(path.clone()),
                "http://localhost".to_string(),
            ),
        };
        let http = builder
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(ApiClient { http, base, token })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(self.token.expose())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = request.send().await.map_err(|e| {
            ClientError::Unreachable(format!(
                "{}: {}",
                self.base,
                crate::openstack::error_chain(&e)
            ))
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let field = |name: &str| {
            body.pointer(&format!("/error/{name}"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Err(ClientError::Daemon {
            status: status.as_u16(),
            code: field("code").unwrap_or_else(|| "http_error".to_string()),
            message: field("message").unwrap_or(text),
        })
    }

    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, path)
                .query(query)
                .timeout(Duration::from_secs(120)),
        )
        .await
    }
}

async fn latest(config: &Config, args: FamilyArgs) -> i32 {
    let client = match ApiClient::from_config(config) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let mut query = vec![
        ("base", args.base.as_str()),
        ("app_name", args.app_name.as_str()),
        ("arch", args.arch.as_str()),
    ];
    if let Some(cloud) = &args.cloud {
        query.push(("cloud", cloud));
    }
    match client.get("/v1/images/latest", &query).await {
        Ok(body) => {
            println!("{}", body.get("id").and_then(|v| v.as_str()).unwrap_or(""));
            EXIT_OK
        }
        Err(e) => e.report(),
    }
}

async fn status(config: &Config, json: bool) -> i32 {
    let client = match ApiClient::from_config(config) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let body = match client.get("/v1/status", &[]).await {
        Ok(b) => b,
        Err(e) => return e.report(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        return EXIT_OK;
    }
    let text = |v: &Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    for cloud in body
        .get("clouds")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let auth = cloud
            .get("authenticated")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        println!(
            "{}: {} (token expires {}), image endpoint {}, last error: {}",
            text(cloud, "name"),
            if auth {
                "authenticated"
            } else {
                "NOT authenticated"
            },
            text(cloud, "token_expires_at"),
            text(cloud, "image_endpoint"),
            text(cloud, "last_error"),
        );
    }
    println!(
        "uploads in flight: {}",
        body.get("uploads_in_flight")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    );
    EXIT_OK
}

async fn upload(config: &Config, args: UploadArgs) -> i32 {
    let client = match ApiClient::from_config(config) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    // The daemon resolves paths on its own; a relative one means the caller's cwd.
    let src_path = std::path::absolute(&args.src_path).unwrap_or(args.src_path.clone());
    let fields = UploadFields {
        base: args.family.base,
        app_name: args.family.app_name,
        arch: args.family.arch,
        num_revisions: args.num_revisions,
        src_path,
        cloud: args.family.cloud,
        disk_format: args.disk_format,
        container_format: None,
        visibility: None,
        properties: args.properties.into_iter().collect(),
    };
    let upload_id = crate::secret::random_hex(16);
    let request = client
        .request(reqwest::Method::POST, "/v1/images")
        .header("x-request-id", &upload_id)
        .json(&fields);
    let call = client.send(request);
    tokio::pin!(call);
    let mut bar = ProgressReport::new(std::io::stderr().is_terminal());
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            _ = ticker.tick() => {
                if let Ok(body) = client.get("/v1/uploads", &[]).await {
                    let mine = body.get("uploads").and_then(|u| u.as_array()).and_then(|list| {
                        list.iter().find(|u| u.get("upload_id").and_then(|v| v.as_str()) == Some(upload_id.as_str())).cloned()
                    });
                    if let Some(upload) = mine {
                        bar.show(&upload);
                    }
                }
            }
        }
    };
    bar.finish(result.is_ok());
    match result {
        Ok(body) => {
            println!("{}", body.get("id").and_then(|v| v.as_str()).unwrap_or(""));
            if let Some(pruned) = body.get("pruned").and_then(|p| p.as_array()) {
                if !pruned.is_empty() {
                    let ids: Vec<&str> = pruned.iter().filter_map(|v| v.as_str()).collect();
                    eprintln!("pruned: {}", ids.join(" "));
                }
            }
            EXIT_OK
        }
        Err(e) => e.report(),
    }
}

/// Progress on stderr: a redrawn bar on a terminal, a line per 10 % otherwise.
struct ProgressReport {
    terminal: bool,
    total: u64,
    last_decile: Option<u64>,
    last_phase: String,
    drew: bool,
}

impl ProgressReport {
    fn new(terminal: bool) -> Self {
        ProgressReport {
            terminal,
            total: 0,
            last_decile: None,
            last_phase: String::new(),
            drew: false,
        }
    }

    fn show(&mut self, upload: &Value) {
        let sent = upload
            .get("sent_bytes")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let total = upload
            .get("total_bytes")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
            .max(1);
        self.total = total;
        let phase = upload
            .get("phase")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let percent = sent.saturating_mul(100) / total;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut err = std::io::stderr();
        if self.terminal {
            let width = 30u64;
            let filled = (percent.min(100) * width / 100) as usize;
            let _ = write!(
                err,
                "\r[{}{}] {:>3}% {:.0}/{:.0} MiB {:<10}",
                "#".repeat(filled),
                " ".repeat(width as usize - filled),
                percent,
                mib(sent),
                mib(total),
                phase
            );
            let _ = err.flush();
            self.drew = true;
        } else {
            let decile = percent / 10;
            if self.last_decile != Some(decile) || self.last_phase != phase {
                let _ = writeln!(
                    err,
                    "{phase}: {percent}% ({:.0}/{:.0} MiB)",
                    mib(sent),
                    mib(total)
                );
                self.last_decile = Some(decile);
                self.last_phase = phase;
            }
        }
    }

    /// Ends the bar: full when the upload succeeded, left where it stopped otherwise.
    fn finish(&self, succeeded: bool) {
        if self.terminal && self.drew {
            if succeeded {
                let mib = self.total as f64 / (1024.0 * 1024.0);
                eprint!(
                    "\r[{}] 100% {mib:.0}/{mib:.0} MiB done      ",
                    "#".repeat(30)
                );
            }
            eprintln!();
        }
    }
}
