//! The command line: `serve` runs the daemon; `latest`, `upload`, `job`, `jobs`
//! and `status` are clients of a running daemon, which they find (address and API
//! token) from the same config file ([`client`]). Answers are read into the API's
//! wire types ([`api`](crate::api)), the same the daemon writes.
//!
//! Exit codes (the contract, in `crate::exit`): 0 ok, 1 the daemon answered
//! with an error, 2 usage error (for `serve`: a config it refuses), 3 daemon
//! unreachable. Results go to stdout, progress and errors to stderr.

mod client;
mod fd_client;
mod jobs;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::api::{CloudLatest, Latest, LatestResults, Status};
use crate::config::{Config, ConfigError};
use crate::exit::{EXIT_DAEMON_ERROR, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
use client::ApiClient;

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
    /// Print the id of the newest active image (an empty line when there is none);
    /// for several clouds, a line `CLOUD ID` per cloud.
    Latest(FamilyArgs),
    /// Upload an image file as a new revision (a job, followed to its end) and
    /// print its id; to several clouds (one read of the file), a line
    /// `CLOUD ID` per cloud.
    Upload(UploadArgs),
    /// Follow a job to its end and print its image id (exit 1 with its error
    /// when it failed).
    Job {
        /// The job id (`upload` prints it on stderr; `upload --no-wait` on stdout).
        id: String,
        /// Print the job's record as it is now, without following it.
        #[arg(long)]
        json: bool,
    },
    /// List the daemon's jobs, the newest first.
    Jobs {
        /// Print the daemon's JSON answer as it is.
        #[arg(long)]
        json: bool,
    },
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
    /// The cloud (default: the daemon's default cloud); give it more than once
    /// for several clouds.
    #[arg(long = "cloud")]
    pub(crate) clouds: Vec<String>,
    /// Every configured cloud.
    #[arg(long, conflicts_with = "clouds")]
    pub(crate) all_clouds: bool,
}

impl FamilyArgs {
    /// The clouds as the API names them: `None` for the default cloud, one
    /// name, or several (`*` for every cloud).
    pub(crate) fn targets(&self) -> CloudTargets {
        match (self.all_clouds, self.clouds.as_slice()) {
            (true, _) => CloudTargets::Several(vec!["*".to_string()]),
            (false, []) => CloudTargets::One(None),
            (false, [one]) => CloudTargets::One(Some(one.clone())),
            (false, several) => CloudTargets::Several(several.to_vec()),
        }
    }
}

/// Which clouds a command names (see [`FamilyArgs::targets`]).
pub(crate) enum CloudTargets {
    One(Option<String>),
    Several(Vec<String>),
}

#[derive(Args, Debug)]
pub(crate) struct UploadArgs {
    #[command(flatten)]
    pub(crate) family: FamilyArgs,
    /// How many active revisions to keep, the new one included.
    #[arg(long)]
    pub(crate) num_revisions: u32,
    /// The image file: inside one of the daemon's upload_dirs, or, when the
    /// daemon listens on a unix socket, any file you can read (passed open).
    #[arg(long)]
    pub(crate) src_path: PathBuf,
    /// qcow2, raw, ... (default: detected).
    #[arg(long)]
    pub(crate) disk_format: Option<String>,
    /// Extra image property KEY=VALUE (repeatable).
    #[arg(long = "property", value_parser = parse_property)]
    pub(crate) properties: Vec<(String, String)>,
    /// Hash the file first and upload only to the clouds whose newest image of
    /// the name holds other bytes.
    #[arg(long)]
    pub(crate) skip_unchanged: bool,
    /// Print the job id and exit at once; `job ID` follows it.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// The request's Idempotency-Key: an upload sent again with the same key and
    /// arguments (a re-run hook) gets the same job instead of a second upload.
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
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
        Err(err) => {
            eprintln!("error: {err}");
            return match cli.command {
                Command::Serve => crate::exit::of_config_error(&err),
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
        Command::Upload(args) => runtime.block_on(jobs::upload(&config, args)),
        Command::Job { id, json } => runtime.block_on(jobs::job(&config, &id, json)),
        Command::Jobs { json } => runtime.block_on(jobs::jobs(&config, json)),
        Command::Status { json } => runtime.block_on(status(&config, json)),
    }
}

/// The config file; the default path may be missing (every key has a default),
/// a path given explicitly may not.
fn load_config(explicit: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match explicit {
        Some(path) => Config::load(path),
        None => Config::load_default(),
    }
}

async fn latest(config: &Config, args: FamilyArgs) -> i32 {
    let client = match ApiClient::from_config(config) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let query = |cloud: Option<&'static str>| {
        let mut query = vec![
            ("base", args.base.as_str()),
            ("app_name", args.app_name.as_str()),
            ("arch", args.arch.as_str()),
        ];
        query.extend(cloud.map(|c| ("cloud", c)));
        query
    };
    let wanted = match args.targets() {
        CloudTargets::One(cloud) => {
            let mut one = query(None);
            one.extend(cloud.as_deref().map(|c| ("cloud", c)));
            return match client.get::<Latest>("/v1/images/latest", &one).await {
                Ok(latest) => {
                    println!("{}", latest.id.unwrap_or_default());
                    EXIT_OK
                }
                Err(e) => e.report(),
            };
        }
        CloudTargets::Several(clouds) => clouds,
    };
    // One query for every cloud; the clouds asked for are picked from it.
    let all: LatestResults = match client.get("/v1/images/latest", &query(Some("*"))).await {
        Ok(all) => all,
        Err(e) => return e.report(),
    };
    let mut code = EXIT_OK;
    let names: Vec<String> = if wanted == ["*"] {
        all.results.keys().cloned().collect()
    } else {
        wanted
    };
    for name in names {
        match all.results.get(&name) {
            Some(CloudLatest::Ok(latest)) => {
                println!("{name} {}", latest.id.as_deref().unwrap_or(""))
            }
            Some(CloudLatest::Err(body)) => {
                code = EXIT_DAEMON_ERROR;
                eprintln!("{name}: error: {}: {}", body.error.code, body.error.message);
            }
            None => {
                code = EXIT_DAEMON_ERROR;
                eprintln!("{name}: error: unknown_cloud: no cloud named '{name}' is configured");
            }
        }
    }
    code
}

async fn status(config: &Config, json: bool) -> i32 {
    let client = match ApiClient::from_config(config) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let status: Status = match client.get("/v1/status", &[]).await {
        Ok(b) => b,
        Err(e) => return e.report(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        return EXIT_OK;
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    for cloud in status.clouds {
        println!(
            "{}: {} (token expires {}), image endpoint {}, last error: {}",
            cloud.name,
            if cloud.authenticated {
                "authenticated"
            } else {
                "NOT authenticated"
            },
            or_dash(cloud.token_expires_at.map(|t| t.to_rfc3339())),
            or_dash(cloud.image_endpoint),
            or_dash(cloud.last_error),
        );
    }
    println!("uploads in flight: {}", status.uploads_in_flight);
    let j = status.jobs;
    println!(
        "jobs: {} queued, {} uploading, {} verifying, {} pruning, {} succeeded, {} failed",
        j.queued, j.uploading, j.verifying, j.pruning, j.succeeded, j.failed
    );
    EXIT_OK
}
