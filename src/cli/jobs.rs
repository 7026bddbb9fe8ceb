//! `upload`, `job` and `jobs`: an upload is submitted as a job (`wait=false`) and
//! followed by polling `GET /v1/jobs/{id}`, so the job does not depend on this
//! process: a dropped connection or a killed CLI leaves it running, and `job ID`
//! picks it up again.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::client::{ApiClient, ClientError};
use super::UploadArgs;
use crate::api::{CloudUpload, Job, JobList, UploadFields};
use crate::config::Config;
use crate::exit::{EXIT_DAEMON_ERROR, EXIT_OK, EXIT_UNREACHABLE};
use crate::jobs::JobState;

/// How often a followed job is polled.
const POLL: Duration = Duration::from_millis(500);
/// How long the daemon may be unreachable while a job is followed (a restart).
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

pub(crate) async fn upload(config: &Config, args: UploadArgs) -> i32 {
    let client = match ApiClient::from_config(config) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    // The daemon resolves paths on its own; a relative one means the caller's cwd.
    let src_path = std::path::absolute(&args.src_path).unwrap_or(args.src_path.clone());
    // A file the daemon may not open (outside upload_dirs) is opened here and
    // passed as a descriptor, when the daemon listens on a unix socket.
    let passed = if client.is_unix()
        && super::fd_client::outside_upload_dirs(&src_path, &config.upload_dirs)
    {
        match super::fd_client::open_for_passing(&src_path) {
            Ok(file) => Some(file),
            Err(err) => {
                eprintln!(
                    "error: cannot open {} (outside upload_dirs, so the CLI passes it \
                     to the daemon open): {err}",
                    src_path.display()
                );
                return EXIT_DAEMON_ERROR;
            }
        }
    } else {
        None
    };
    let (cloud, clouds) = match args.family.targets() {
        super::CloudTargets::One(cloud) => (cloud, None),
        super::CloudTargets::Several(clouds) => (None, Some(clouds)),
    };
    let fields = UploadFields {
        base: args.family.base,
        app_name: args.family.app_name,
        arch: args.family.arch,
        num_revisions: args.num_revisions,
        src_path: passed.is_none().then_some(src_path),
        src_fd: passed.is_some().then_some(0),
        cloud,
        clouds,
        skip_unchanged: args.skip_unchanged,
        disk_format: args.disk_format,
        container_format: None,
        visibility: None,
        properties: args.properties.into_iter().collect(),
        retire: None,
        tags: Vec::new(),
    };
    // A key of our own unless the caller gave one: a POST whose answer was lost
    // is sent again and finds the job it made instead of making a second one.
    let key = args
        .idempotency_key
        .unwrap_or_else(|| format!("cli-{}", crate::secret::random_hex(16)));
    let job = match submit(&client, &fields, &key, passed.as_ref()).await {
        Ok(job) => job,
        Err(e) => return e.report(),
    };
    if args.no_wait {
        println!("{}", job.job);
        return EXIT_OK;
    }
    eprintln!(
        "job {} (follow it again with: openstack-image-helper job {})",
        job.job, job.job
    );
    finish(follow(&client, job).await)
}

/// `POST /v1/images?wait=false` (with `passed`'s descriptor, when given), sent a
/// second time (same key) when the first answer was lost on the way.
async fn submit(
    client: &ApiClient,
    fields: &UploadFields,
    key: &str,
    passed: Option<&std::fs::File>,
) -> Result<Job, ClientError> {
    let post = || async {
        let Some(file) = passed else {
            let request = client
                .request(reqwest::Method::POST, "/v1/images")
                .query(&[("wait", "false")])
                .header("idempotency-key", key)
                .timeout(Duration::from_secs(120))
                .json(fields);
            return client.send(request).await;
        };
        let body = serde_json::to_vec(fields).map_err(|e| ClientError::Daemon {
            status: 0,
            code: "invalid_request".to_string(),
            message: e.to_string(),
        })?;
        let headers = vec![("idempotency-key", key.to_string())];
        client
            .post_with_fd("/v1/images?wait=false", headers, body, file)
            .await
    };
    match post().await {
        Err(ClientError::Unreachable(first)) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            post().await.map_err(|e| match e {
                ClientError::Unreachable(_) => ClientError::Unreachable(first),
                other => other,
            })
        }
        other => other,
    }
}

/// `job ID`: follows the job to its end (`--json`: prints its record now).
pub(crate) async fn job(config: &Config, id: &str, json: bool) -> i32 {
    let client = match ApiClient::from_config(config) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let job: Job = match client.get(&format!("/v1/jobs/{id}"), &[]).await {
        Ok(job) => job,
        Err(e) => return e.report(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
        return EXIT_OK;
    }
    finish(follow(&client, job).await)
}

/// `jobs`: one line per job, the newest first (`--json`: the daemon's answer).
pub(crate) async fn jobs(config: &Config, json: bool) -> i32 {
    let client = match ApiClient::from_config(config) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let list: JobList = match client.get("/v1/jobs", &[]).await {
        Ok(list) => list,
        Err(e) => return e.report(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return EXIT_OK;
    }
    for job in &list.jobs {
        let outcome = match (&job.error, &job.image_id) {
            (Some(error), _) => format!("{}: {}", error.code, error.message),
            (None, Some(image)) => image.clone(),
            (None, None) => "-".to_string(),
        };
        println!(
            "{} {:<9} {}/{} bytes {}-{}-{} created {} {}",
            job.job,
            job.state.as_str(),
            job.bytes_sent,
            job.bytes_total,
            job.request.base,
            job.request.app_name,
            job.request.arch,
            job.created_at.to_rfc3339(),
            outcome
        );
    }
    EXIT_OK
}

/// Polls the job until it ended, with progress on stderr. The daemon may be
/// unreachable for a while (a restart) before this gives up.
async fn follow(client: &ApiClient, mut job: Job) -> Result<Job, ClientError> {
    let mut report = ProgressReport::new(std::io::stderr().is_terminal());
    let path = format!("/v1/jobs/{}", job.job);
    let mut unreachable_since = None;
    loop {
        report.show(&job);
        if job.state.is_terminal() {
            report.finish(job.state == JobState::Succeeded);
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
        match client.get::<Job>(&path, &[]).await {
            Ok(next) => {
                job = next;
                unreachable_since = None;
            }
            Err(ClientError::Unreachable(message)) => {
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > UNREACHABLE_FOR {
                    report.finish(false);
                    return Err(ClientError::Unreachable(format!(
                        "{message} (job {} may still run: openstack-image-helper job {})",
                        job.job, job.job
                    )));
                }
            }
            Err(other) => {
                report.finish(false);
                return Err(other);
            }
        }
    }
}

/// The end of `upload` and `job`: the image id on stdout, or the job's error.
fn finish(followed: Result<Job, ClientError>) -> i32 {
    let job = match followed {
        Ok(job) => job,
        Err(e) => return e.report(),
    };
    if let Some(results) = &job.results {
        return print_results(&job, results);
    }
    match (job.state, &job.error) {
        (JobState::Succeeded, _) => {
            println!("{}", job.image_id.as_deref().unwrap_or(""));
            if let Some(pruned) = job.result.as_ref().map(|r| &r.pruned) {
                if !pruned.is_empty() {
                    eprintln!("pruned: {}", pruned.join(" "));
                }
            }
            EXIT_OK
        }
        (_, Some(error)) => {
            eprintln!("error: {}: {} (job {})", error.code, error.message, job.job);
            EXIT_DAEMON_ERROR
        }
        _ => {
            eprintln!(
                "error: job {} ended {} without an error",
                job.job, job.state
            );
            EXIT_UNREACHABLE
        }
    }
}

/// The end of a job of several clouds: a line `CLOUD ID` per cloud that
/// succeeded (stdout), the error of each that failed (stderr).
fn print_results(job: &Job, results: &std::collections::BTreeMap<String, CloudUpload>) -> i32 {
    for (cloud, result) in results {
        match result {
            CloudUpload::Ok(answer) => {
                println!("{cloud} {}", answer.id);
                if answer.unchanged {
                    eprintln!("{cloud}: unchanged (the newest image already holds this file)");
                } else if !answer.pruned.is_empty() {
                    eprintln!("{cloud}: pruned: {}", answer.pruned.join(" "));
                }
            }
            CloudUpload::Err(body) => eprintln!(
                "{cloud}: error: {}: {} (job {})",
                body.error.code, body.error.message, job.job
            ),
        }
    }
    if job.state == JobState::Succeeded {
        EXIT_OK
    } else {
        EXIT_DAEMON_ERROR
    }
}

/// Progress on stderr: a redrawn bar on a terminal, a line per 10 % (or state
/// change) otherwise.
struct ProgressReport {
    terminal: bool,
    total: u64,
    last: Option<(JobState, u64)>,
    drew: bool,
}

impl ProgressReport {
    fn new(terminal: bool) -> Self {
        ProgressReport {
            terminal,
            total: 0,
            last: None,
            drew: false,
        }
    }

    fn show(&mut self, job: &Job) {
        let sent = job.bytes_sent;
        let total = job.bytes_total.max(1);
        self.total = total;
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
                job.state.as_str()
            );
            let _ = err.flush();
            self.drew = true;
        } else if self.last != Some((job.state, percent / 10)) {
            let _ = writeln!(
                err,
                "{}: {percent}% ({:.0}/{:.0} MiB)",
                job.state,
                mib(sent),
                mib(total)
            );
            self.last = Some((job.state, percent / 10));
        }
    }

    /// Ends the bar: full when the job succeeded, left where it stopped otherwise.
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
