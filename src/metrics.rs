//! The daemon's metrics, served as OpenMetrics text by `GET /metrics`.
//!
//! One process is one daemon, so the series live in one process-wide registry
//! that the rest of the code feeds with one-line hooks ([`upload_ended`],
//! [`images_pruned`], [`images_reaped`], [`upload_retried`]), and that the
//! OpenStack client feeds through the [`Observer`] it is handed
//! ([`OPENSTACK_CALLS`]). Gauges that describe the present (uploads in flight, jobs
//! by state) are not counted up and down: the scrape sets them from the daemon's
//! own view ([`Gauges`]), so they cannot drift.
//!
//! Every label value is bounded: cloud names (from the daemon's clouds.yaml),
//! operation names from a fixed list ([`Operation`]), status classes, results.
//! Never a URL, an image id, a path or anything secret.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::jobs::{JobRequest, JobState, Jobs};
use crate::openstack::observe::Observer;
use crate::openstack::{OpenStackError, Service};

closed_set! {
    /// An OpenStack call, named by what it does (the `operation` label).
    pub(crate) enum Operation {
        TokensIssue = "tokens.issue",
        ImagesList = "images.list",
        ImagesCreate = "images.create",
        ImagesGet = "images.get",
        ImagesUpdate = "images.update",
        ImagesDelete = "images.delete",
        ImagesUpload = "images.upload",
        ImagesDownload = "images.download",
        Other = "other",
    }
}

impl Operation {
    /// The operation of a Glance request written `METHOD /path` (the path may
    /// carry an endpoint prefix such as `/image`): image ids are never kept.
    pub(crate) fn of_glance(request: &str) -> Operation {
        let (method, path) = request.split_once(' ').unwrap_or(("", request));
        let path = path.split('?').next().unwrap_or("");
        let Some((_, rest)) = path.split_once("/v2/images") else {
            return Operation::Other;
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match (method, parts.as_slice()) {
            ("GET", []) => Operation::ImagesList,
            ("POST", []) => Operation::ImagesCreate,
            ("GET", [_]) => Operation::ImagesGet,
            ("PATCH", [_]) => Operation::ImagesUpdate,
            ("DELETE", [_]) => Operation::ImagesDelete,
            ("PUT", [_, "file"]) => Operation::ImagesUpload,
            ("GET", [_, "file"]) => Operation::ImagesDownload,
            _ => Operation::Other,
        }
    }
}

fn service_label(service: Service) -> &'static str {
    match service {
        Service::Keystone => "keystone",
        Service::Glance => "glance",
    }
}

/// `2xx` ... `5xx` for an answer, `error` when none came (refused, timeout, cut).
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "error",
    }
}

fn error_status_class(err: &OpenStackError) -> &'static str {
    match err {
        OpenStackError::Unauthorized { status, .. } | OpenStackError::Api { status, .. } => {
            status_class(*status)
        }
        // The service answered 2xx, with something unreadable.
        OpenStackError::InvalidResponse { .. } => "2xx",
        _ => "error",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    cloud: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    operation: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    service: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudLabels {
    cloud: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UploadLabels {
    cloud: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConversionLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    token_requests: Family<TokenLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<LatencyLabels>,
    uploaded_bytes: Family<CloudLabels, Counter>,
    upload_duration: Histograms<UploadLabels>,
    uploads_in_flight: Gauge,
    jobs: Family<StateLabels, Gauge>,
    pruned: Family<CloudLabels, Counter>,
    reaped: Family<CloudLabels, Counter>,
    retries: Family<CloudLabels, Counter>,
    conversions: Family<ConversionLabels, Counter>,
}

fn request_buckets() -> Histogram {
    // 5 ms .. about 19 s.
    Histogram::new(exponential_buckets(0.005, 2.5, 10))
}

fn upload_buckets() -> Histogram {
    // 1 s .. about 1.8 h.
    Histogram::new(exponential_buckets(1.0, 3.0, 9))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("openstack_image_helper");
    let metrics = Metrics {
        registry: Registry::default(),
        token_requests: Family::default(),
        requests: Family::default(),
        latency: Family::new_with_constructor(request_buckets),
        uploaded_bytes: Family::default(),
        upload_duration: Family::new_with_constructor(upload_buckets),
        uploads_in_flight: Gauge::default(),
        jobs: Family::default(),
        pruned: Family::default(),
        reaped: Family::default(),
        retries: Family::default(),
        conversions: Family::default(),
    };
    registry.register(
        "token_requests",
        "Keystone token requests (POST /v3/auth/tokens) by cloud and result",
        metrics.token_requests.clone(),
    );
    registry.register(
        "openstack_requests",
        "Requests sent to OpenStack by service, operation and status class (error: no answer)",
        metrics.requests.clone(),
    );
    registry.register(
        "openstack_request_duration_seconds",
        "Time from sending an OpenStack request to its answer (an upload's: its whole data)",
        metrics.latency.clone(),
    );
    registry.register(
        "uploaded_bytes",
        "Image bytes sent to Glance (failed uploads included)",
        metrics.uploaded_bytes.clone(),
    );
    registry.register(
        "upload_duration_seconds",
        "Uploads from their start (waiting for the name's lock included) to their end, by result",
        metrics.upload_duration.clone(),
    );
    registry.register(
        "uploads_in_flight",
        "Uploads under way now (waiting ones included)",
        metrics.uploads_in_flight.clone(),
    );
    registry.register("jobs", "Upload jobs by state", metrics.jobs.clone());
    registry.register(
        "images_pruned",
        "Old revisions deleted after a verified upload",
        metrics.pruned.clone(),
    );
    registry.register(
        "images_reaped",
        "Abandoned uploads of this daemon deleted by the reaper",
        metrics.reaped.clone(),
    );
    registry.register(
        "upload_retries",
        "Uploads tried again after a transient fault (a 5xx, a dropped or refused connection)",
        metrics.retries.clone(),
    );
    registry.register(
        "image_conversions",
        "Image files converted for a cloud's image_format (once per upload and format, whatever the number of clouds)",
        metrics.conversions.clone(),
    );
    registry.register(
        "build",
        "The daemon's version",
        Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        }),
    );
    Metrics {
        registry,
        ..metrics
    }
});

/// The OpenStack client's calls, counted: installed at start-up as the
/// client's [`Observer`], so that the client does not reach up here.
pub(crate) struct OpenStackCalls;

/// The one sink of the OpenStack client's calls.
pub(crate) static OPENSTACK_CALLS: OpenStackCalls = OpenStackCalls;

impl Observer for OpenStackCalls {
    /// Counts a request with its latency.
    fn request(&self, service: Service, operation: &str, status: Option<u16>, seconds: f64) {
        let op = match service {
            Service::Glance => Operation::of_glance(operation),
            Service::Keystone => Operation::TokensIssue,
        };
        let status = status.map_or("error", status_class);
        record_request(service, op, status, seconds);
    }

    /// Counts a token request by cloud and result (`success`, `unauthorized`:
    /// the credentials were refused, `failed`: anything else), and as an
    /// OpenStack request `tokens.issue`.
    fn token(&self, cloud: &str, error: Option<&OpenStackError>, seconds: f64) {
        let (result, status) = match error {
            None => ("success", "2xx"),
            Some(err @ OpenStackError::Unauthorized { .. }) => {
                ("unauthorized", error_status_class(err))
            }
            Some(err) => ("failed", error_status_class(err)),
        };
        METRICS
            .token_requests
            .get_or_create(&TokenLabels {
                cloud: cloud.to_string(),
                result,
            })
            .inc();
        record_request(Service::Keystone, Operation::TokensIssue, status, seconds);
    }
}

fn record_request(service: Service, op: Operation, status: &'static str, seconds: f64) {
    let m = &*METRICS;
    let (service, operation) = (service_label(service), op.as_str());
    m.requests
        .get_or_create(&RequestLabels {
            service,
            operation,
            status,
        })
        .inc();
    m.latency
        .get_or_create(&LatencyLabels { service, operation })
        .observe(seconds);
}

/// `bytes` of image data were taken by the HTTP client of an upload to `cloud`.
/// Hook: each block of the upload's body, so the counter grows while it streams.
pub(crate) fn bytes_uploaded(cloud: &str, bytes: u64) {
    METRICS
        .uploaded_bytes
        .get_or_create(&CloudLabels {
            cloud: cloud.to_string(),
        })
        .inc_by(bytes);
}

/// An upload to one cloud ended: whether it was verified, how long it took
/// (from its submission). Hook: the end of the job's task.
pub(crate) fn upload_ended(cloud: &str, succeeded: bool, seconds: f64) {
    let m = &*METRICS;
    let result = if succeeded { "succeeded" } else { "failed" };
    m.upload_duration
        .get_or_create(&UploadLabels {
            cloud: cloud.to_string(),
            result,
        })
        .observe(seconds);
}

/// `count` old revisions were pruned in `cloud`.
pub(crate) fn images_pruned(cloud: &str, count: usize) {
    METRICS
        .pruned
        .get_or_create(&CloudLabels {
            cloud: cloud.to_string(),
        })
        .inc_by(count as u64);
}

/// An upload to `cloud` is tried again after a transient fault.
pub(crate) fn upload_retried(cloud: &str) {
    METRICS
        .retries
        .get_or_create(&CloudLabels {
            cloud: cloud.to_string(),
        })
        .inc();
}

/// An image file was converted from `from` to `to` for an upload.
pub(crate) fn image_converted(from: &'static str, to: &'static str) {
    METRICS
        .conversions
        .get_or_create(&ConversionLabels { from, to })
        .inc();
}

/// `count` abandoned uploads were reaped in `cloud`.
pub(crate) fn images_reaped(cloud: &str, count: usize) {
    METRICS
        .reaped
        .get_or_create(&CloudLabels {
            cloud: cloud.to_string(),
        })
        .inc_by(count as u64);
}

/// The present, as the scraping daemon sees it.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    pub(crate) uploads_in_flight: usize,
    /// Jobs by state name (every state, zeros included, so a series never vanishes).
    pub(crate) jobs: Vec<(&'static str, usize)>,
}

impl Gauges {
    /// The gauges of a daemon: uploads holding a slot, and its jobs by state.
    pub(crate) fn of<R: JobRequest>(jobs: &Jobs<R>) -> Gauges {
        let counts = jobs.counts();
        Gauges {
            uploads_in_flight: UPLOADING.iter().map(|s| counts.get(*s)).sum(),
            jobs: counts
                .iter()
                .map(|(state, n)| (state.as_str(), n))
                .collect(),
        }
    }
}

/// The states of a job that holds an upload slot.
pub(crate) const UPLOADING: [JobState; 3] =
    [JobState::Uploading, JobState::Verifying, JobState::Pruning];

/// The OpenMetrics text of every series, with the gauges set from `gauges`.
pub(crate) fn render(gauges: &Gauges) -> String {
    let m = &*METRICS;
    m.uploads_in_flight.set(gauges.uploads_in_flight as i64);
    for (state, n) in &gauges.jobs {
        m.jobs.get_or_create(&StateLabels { state }).set(*n as i64);
    }
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        tracing::error!(error = %err, "cannot encode the metrics");
    }
    text
}

/// The content type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_operations_are_named_without_ids() {
        let cases = [
            ("GET /v2/images", Operation::ImagesList),
            ("POST /v2/images", Operation::ImagesCreate),
            ("GET /image/v2/images/0b1c", Operation::ImagesGet),
            ("DELETE /v2/images/0b1c", Operation::ImagesDelete),
            ("PATCH /v2/images/0b1c", Operation::ImagesUpdate),
            ("PUT /v2/images/0b1c/file", Operation::ImagesUpload),
            ("GET /v2/images/0b1c/file", Operation::ImagesDownload),
            ("GET /v2/schemas/image", Operation::Other),
            ("PUT /v2/images/0b1c/tags/x", Operation::Other),
        ];
        for (request, expected) in cases {
            assert_eq!(Operation::of_glance(request), expected, "{request}");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(201), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(0), "error");
    }

    #[test]
    fn the_text_has_every_family_and_the_build_info() {
        images_pruned("unit-test-cloud", 2);
        record_request(Service::Glance, Operation::ImagesList, "2xx", 0.01);
        let text = render(&Gauges {
            uploads_in_flight: 3,
            jobs: vec![("queued", 1)],
        });
        for needle in [
            "# TYPE openstack_image_helper_openstack_request_duration_seconds histogram",
            "openstack_image_helper_uploads_in_flight 3",
            "openstack_image_helper_jobs{state=\"queued\"} 1",
            "openstack_image_helper_images_pruned_total{cloud=\"unit-test-cloud\"}",
            &format!(
                "openstack_image_helper_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
