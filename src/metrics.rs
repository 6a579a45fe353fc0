//! What berth counts, for Prometheus. Counters and histograms live in one
//! process-wide registry, since a scrape describes the process and the
//! places that count (the HTTP layer, the outbox, deploy records) are far
//! apart. What the metadata store already knows (storage used, uploads and
//! deliveries pending) is read from it at scrape time instead of being
//! counted twice: it stays right across restarts and replicas.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::meta::Usage;

/// Request durations span a cached manifest GET (well under a
/// millisecond) to a multi-gigabyte layer upload (minutes).
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The media type of the exposition format [`render`] writes.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    deliveries: IntCounterVec,
    deploys: IntCounterVec,
    gc_runs: IntCounterVec,
    gc_freed: IntCounterVec,
    mirror_pulls: IntCounterVec,
    mirror_upstream_bytes: IntCounterVec,
    mirror_upstream_errors: IntCounterVec,
    mirror_stale_serves: IntCounterVec,
    signature_refusals: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "berth_http_requests_total",
            "HTTP requests answered, by route, method and status.",
        ),
        &["route", "method", "status"],
    )
    .expect("valid metric");
    let durations = HistogramVec::new(
        HistogramOpts::new(
            "berth_http_request_duration_seconds",
            "Time from a request's arrival to its response headers, by route and method.",
        )
        .buckets(DURATION_BUCKETS.to_vec()),
        &["route", "method"],
    )
    .expect("valid metric");
    let received = IntCounterVec::new(
        Opts::new(
            "berth_http_received_bytes_total",
            "Request body bytes read, by route.",
        ),
        &["route"],
    )
    .expect("valid metric");
    let sent = IntCounterVec::new(
        Opts::new(
            "berth_http_sent_bytes_total",
            "Response body bytes written, by route.",
        ),
        &["route"],
    )
    .expect("valid metric");
    let deliveries = IntCounterVec::new(
        Opts::new(
            "berth_event_deliveries_total",
            "Attempts to deliver an event to a webhook or deploy rule, by sink and result \
             (delivered, retrying, gave_up).",
        ),
        &["sink", "result"],
    )
    .expect("valid metric");
    let deploys = IntCounterVec::new(
        Opts::new(
            "berth_deploys_total",
            "Deploys that reached a final state, by that state (succeeded, failed, timed_out, \
             rolled_back, skipped).",
        ),
        &["result"],
    )
    .expect("valid metric");
    let gc_runs = IntCounterVec::new(
        Opts::new(
            "berth_gc_runs_total",
            "Garbage collection runs in this process, by mode (run, dry_run) and result (ok, error).",
        ),
        &["mode", "result"],
    )
    .expect("valid metric");
    let gc_freed = IntCounterVec::new(
        Opts::new(
            "berth_gc_deleted_total",
            "What garbage collection in this process deleted, by kind (manifests, blobs, \
             uploads, files, bytes).",
        ),
        &["kind"],
    )
    .expect("valid metric");
    let mirror_pulls = IntCounterVec::new(
        Opts::new(
            "berth_mirror_pulls_total",
            "Manifest and blob pulls through a mirror, by mirror and result (hit: answered \
             from the cache, stale ones included; miss: fetched from the upstream).",
        ),
        &["mirror", "result"],
    )
    .expect("valid metric");
    let mirror_upstream_bytes = IntCounterVec::new(
        Opts::new(
            "berth_mirror_upstream_bytes_total",
            "Bytes of manifests and blobs a mirror received from its upstream.",
        ),
        &["mirror"],
    )
    .expect("valid metric");
    let mirror_upstream_errors = IntCounterVec::new(
        Opts::new(
            "berth_mirror_upstream_errors_total",
            "Upstream requests of a mirror that failed: unreachable, timed out, 5xx, 429, \
             credentials refused, or bytes not matching their digest.",
        ),
        &["mirror"],
    )
    .expect("valid metric");
    let mirror_stale_serves = IntCounterVec::new(
        Opts::new(
            "berth_mirror_stale_serves_total",
            "Cached tags a mirror served unconfirmed because its upstream failed.",
        ),
        &["mirror"],
    )
    .expect("valid metric");
    let signature_refusals = IntCounterVec::new(
        Opts::new(
            "berth_signature_refusals_total",
            "Manifest pulls refused for want of a valid signature, by the protected namespace.",
        ),
        &["namespace"],
    )
    .expect("valid metric");
    for collector in [
        &signature_refusals,
        &mirror_pulls,
        &mirror_upstream_bytes,
        &mirror_upstream_errors,
        &mirror_stale_serves,
        &requests,
        &received,
        &sent,
        &deliveries,
        &deploys,
        &gc_runs,
        &gc_freed,
    ] {
        registry
            .register(Box::new(collector.clone()))
            .expect("metric names are unique");
    }
    registry
        .register(Box::new(durations.clone()))
        .expect("metric names are unique");
    Metrics {
        registry,
        requests,
        durations,
        received,
        sent,
        deliveries,
        deploys,
        gc_runs,
        gc_freed,
        mirror_pulls,
        mirror_upstream_bytes,
        mirror_upstream_errors,
        mirror_stale_serves,
        signature_refusals,
    }
});

/// Records one answered request. `route` names the kind of endpoint, never
/// the path: paths carry repository names, which would make a series per
/// repository.
pub fn request_answered(route: &str, method: &str, status: &str, seconds: f64) {
    let m = &*METRICS;
    m.requests.with_label_values(&[route, method, status]).inc();
    m.durations
        .with_label_values(&[route, method])
        .observe(seconds);
}

/// Adds request body bytes read on `route`.
pub fn bytes_received(route: &str, bytes: u64) {
    METRICS.received.with_label_values(&[route]).inc_by(bytes);
}

/// The counter of response body bytes written on `route`, for a body to
/// add to as it streams.
pub fn bytes_sent(route: &str) -> IntCounter {
    METRICS.sent.with_label_values(&[route])
}

/// How a delivery attempt ended, as counted.
#[derive(Clone, Copy)]
pub enum DeliveryResult {
    Delivered,
    Retrying,
    GaveUp,
}

impl DeliveryResult {
    const ALL: [DeliveryResult; 3] = [
        DeliveryResult::Delivered,
        DeliveryResult::Retrying,
        DeliveryResult::GaveUp,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Retrying => "retrying",
            DeliveryResult::GaveUp => "gave_up",
        }
    }
}

/// Makes `sink`'s delivery counters show 0 before its first attempt, so
/// rates and alerts on them work from the start.
pub fn sink_started(sink: &str) {
    for result in DeliveryResult::ALL {
        METRICS
            .deliveries
            .with_label_values(&[sink, result.as_str()]);
    }
}

pub fn delivery_attempted(sink: &str, result: DeliveryResult) {
    METRICS
        .deliveries
        .with_label_values(&[sink, result.as_str()])
        .inc();
}

/// Counts a deploy that ended in `state`.
pub fn deploy_finished(state: &str) {
    METRICS.deploys.with_label_values(&[state]).inc();
}

/// Makes a protected namespace's refusal counter show 0 before the first.
pub fn signature_policy_started(namespace: &str) {
    METRICS.signature_refusals.with_label_values(&[namespace]);
}

/// Counts a pull refused by the signature policy of `namespace`.
pub fn signature_refusal(namespace: &str) {
    METRICS
        .signature_refusals
        .with_label_values(&[namespace])
        .inc();
}

/// Makes a mirror's counters show 0 before its first pull.
pub fn mirror_started(mirror: &str) {
    let m = &*METRICS;
    for result in ["hit", "miss"] {
        m.mirror_pulls.with_label_values(&[mirror, result]);
    }
    m.mirror_upstream_bytes.with_label_values(&[mirror]);
    m.mirror_upstream_errors.with_label_values(&[mirror]);
    m.mirror_stale_serves.with_label_values(&[mirror]);
}

/// Counts a pull through `mirror`: fetched from the upstream, or not.
pub fn mirror_pull(mirror: &str, miss: bool) {
    let result = if miss { "miss" } else { "hit" };
    METRICS
        .mirror_pulls
        .with_label_values(&[mirror, result])
        .inc();
}

/// The counter of bytes `mirror` received from its upstream.
pub fn mirror_upstream_bytes(mirror: &str) -> IntCounter {
    METRICS.mirror_upstream_bytes.with_label_values(&[mirror])
}

pub fn mirror_upstream_error(mirror: &str) {
    METRICS
        .mirror_upstream_errors
        .with_label_values(&[mirror])
        .inc();
}

pub fn mirror_stale_serve(mirror: &str) {
    METRICS
        .mirror_stale_serves
        .with_label_values(&[mirror])
        .inc();
}

/// Orders state changes and scrapes: a change that is both written to
/// the metadata (a delivery's outcome, a deploy's end, a GC report) and
/// counted holds a [`counting`] guard from before its write until it is
/// counted, and a scrape holds [`settled`] while it reads. So whoever saw
/// the change through the API or the database and then scrapes finds it
/// counted, and a scrape never sees a count whose state is not written.
static SETTLING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held while a counted change is written and counted (many at once).
pub async fn counting() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SETTLING.read().await
}

/// Held by a scrape: no counted change is half done meanwhile.
pub async fn settled() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SETTLING.write().await
}

/// Counts a garbage collection run and, unless it was a dry run, what it
/// deleted.
pub fn gc_finished(report: Option<&crate::core::gc::GcReport>, dry_run: bool) {
    let mode = if dry_run { "dry_run" } else { "run" };
    let result = if report.is_some() { "ok" } else { "error" };
    METRICS.gc_runs.with_label_values(&[mode, result]).inc();
    if let (Some(r), false) = (report, dry_run) {
        for (kind, n) in [
            ("manifests", r.manifests_deleted),
            ("blobs", r.blobs_deleted),
            ("uploads", r.uploads_purged),
            ("files", r.orphan_files_deleted),
            ("bytes", r.bytes_freed),
        ] {
            METRICS.gc_freed.with_label_values(&[kind]).inc_by(n);
        }
    }
}

/// The exposition: everything counted so far, plus `usage` as gauges.
pub fn render(usage: &Usage) -> String {
    // The gauges get a registry of their own per scrape, so a sink with
    // nothing pending any more shows no stale value.
    let now = Registry::new();
    let gauge = |name: &str, help: &str, value: u64| {
        let g = IntGauge::new(name, help).expect("valid metric");
        g.set(value as i64);
        now.register(Box::new(g)).expect("metric names are unique");
    };
    gauge(
        "berth_storage_blobs",
        "Blobs stored (each digest once, however many repositories link it).",
        usage.blobs,
    );
    gauge(
        "berth_storage_blob_bytes",
        "Bytes of the blobs stored, as recorded in the metadata store.",
        usage.blob_bytes,
    );
    gauge(
        "berth_uploads_in_progress",
        "Blob uploads started and not yet finished or cancelled.",
        usage.uploads_in_progress,
    );
    gauge(
        "berth_events_pending",
        "Events written to the outbox and not yet handed to their sinks.",
        usage.events_pending,
    );
    let pending = IntGaugeVec::new(
        Opts::new(
            "berth_event_deliveries_pending",
            "Deliveries waiting for their first or next attempt, by sink.",
        ),
        &["sink"],
    )
    .expect("valid metric");
    for (sink, count) in &usage.deliveries_pending {
        pending.with_label_values(&[sink]).set(*count as i64);
    }
    now.register(Box::new(pending))
        .expect("metric names are unique");

    let mut families = METRICS.registry.gather();
    families.extend(now.gather());
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut text)
        .expect("text encoding of valid metrics");
    String::from_utf8(text).expect("the text format is UTF-8")
}
