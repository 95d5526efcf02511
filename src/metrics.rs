//! Every Prometheus metric the gateway exports, registered once in its own
//! registry, with low-cardinality labels only (route templates, upstream names).

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;

/// Most routes [`Metrics::route`] keeps series for (`Route` has 13).
pub const MAX_ROUTES: usize = 16;

/// The series every request of one route adds to, looked up once: a label
/// lookup hashes its values and takes the family's lock, and a request made
/// three of them for these alone. Made on first use, so that the exposition
/// shows a route only once it served a request, as before.
pub struct RouteSeries {
    /// `context7_http_requests_total{route, status="200"}`.
    pub ok: IntCounter,
    pub duration: Histogram,
    pub overhead: Histogram,
}

/// The series of one upstream that each of its answers adds to, looked up
/// once (see [`RouteSeries`]); kept by the upstream, for its lifetime.
#[derive(Default)]
pub struct UpstreamSeries {
    ok: OnceLock<IntCounter>,
    duration: OnceLock<Histogram>,
    time_to_first_token: OnceLock<Histogram>,
    /// The model the token counters are for, and prompt and completion.
    tokens: OnceLock<(String, IntCounter, IntCounter)>,
    cost: OnceLock<prometheus::Counter>,
}

/// Buckets for whole requests: LLM answers take from milliseconds to a minute.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    descs: Vec<String>,
    routes: [OnceLock<RouteSeries>; MAX_ROUTES],
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_tokens: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub upstream_routable: IntGaugeVec,
    pub upstream_in_flight: IntGaugeVec,
    pub upstream_latency_estimate: GaugeVec,
    pub upstream_selections: IntCounterVec,
    pub upstream_ejections: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    pub retry_budget_exhausted: IntCounter,
    pub upstream_queue_jobs: IntGaugeVec,
    pub upstream_workers: IntGaugeVec,
    pub mcp_messages: IntCounterVec,
    pub time_to_first_token: HistogramVec,
    pub streams_cancelled: IntCounter,
    pub streams_broken: IntCounter,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub cache_lookups: IntCounterVec,
    pub gateway_overhead: HistogramVec,
    pub internal_errors: IntCounterVec,
    pub client_write_timeouts: IntCounter,
    pub redis_errors: IntCounterVec,
    pub redis_up: prometheus::IntGauge,
    pub upstream_cost: prometheus::CounterVec,
    pub upstream_cold_starts: HistogramVec,
    /// Upstreams whose gauges the last scrape exported, so that the next one
    /// removes those a reload took away (and scrapes do not interleave).
    pub exported_upstreams: std::sync::Mutex<Vec<String>>,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter(
            "context7_http_requests_total",
            "Requests answered by the gateway, by route and status code.",
            &["route", "status"],
        );
        let request_duration = histogram(
            "context7_http_request_duration_seconds",
            "Time from the request's arrival to the end of the answer, by route.",
            REQUEST_BUCKETS,
            &["route"],
        );
        let upstream_duration = histogram(
            "context7_upstream_request_duration_seconds",
            "Time one upstream took to answer one attempt, by upstream.",
            REQUEST_BUCKETS,
            &["upstream"],
        );
        let upstream_requests = counter(
            "context7_upstream_requests_total",
            "Attempts sent to upstreams, by upstream and outcome.",
            &["upstream", "outcome"],
        );
        let client_write_timeouts = IntCounter::new(
            "context7_client_write_timeouts_total",
            "Answers cut because the client accepted no byte for limits.client_write_timeout.",
        )
        .expect("valid metric");
        let internal_errors = counter(
            "context7_internal_errors_total",
            "Panics caught in background work, by task; the work carries on.",
            &["task"],
        );
        let upstream_healthy = gauge(
            "context7_upstream_healthy",
            "1 when the upstream passed its last health checks, 0 otherwise.",
            &["upstream"],
        );
        let upstream_tokens = counter(
            "context7_upstream_tokens_total",
            "Tokens reported by upstreams, by upstream, model and kind (prompt or completion).",
            &["upstream", "model", "kind"],
        );
        let health_checks = counter(
            "context7_health_checks_total",
            "Active health checks, by upstream and result (up, initializing, down).",
            &["upstream", "result"],
        );
        let upstream_routable = gauge(
            "context7_upstream_routable",
            "1 when the upstream is healthy and not ejected, so selection may choose it.",
            &["upstream"],
        );
        let upstream_in_flight = gauge(
            "context7_upstream_in_flight",
            "Attempts being served by the upstream now.",
            &["upstream"],
        );
        let upstream_latency_estimate = GaugeVec::new(
            Opts::new(
                "context7_upstream_latency_estimate_seconds",
                "The pool's Peak-EWMA latency estimate of the upstream, decayed to now.",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_selections = counter(
            "context7_upstream_selections_total",
            "Times the pool chose the upstream, by reason (p2c, only_candidate, round_robin, unknown_health, all_ejected, spill).",
            &["upstream", "reason"],
        );
        let upstream_ejections = counter(
            "context7_upstream_ejections_total",
            "Passive ejections of the upstream after failures or a 429.",
            &["upstream"],
        );
        let upstream_retries = counter(
            "context7_upstream_retries_total",
            "Attempts that failed on the upstream and were retried on another one.",
            &["upstream"],
        );
        let retry_budget_exhausted = IntCounter::new(
            "context7_retry_budget_exhausted_total",
            "Retries refused because the retry budget was spent.",
        )
        .expect("valid metric");
        let upstream_queue_jobs = gauge(
            "context7_upstream_queue_jobs",
            "Jobs of a RunPod queue endpoint from its /health, by state (in_queue, in_progress).",
            &["upstream", "state"],
        );
        let upstream_workers = gauge(
            "context7_upstream_workers",
            "Workers of a RunPod queue endpoint from its /health, by state (idle, running).",
            &["upstream", "state"],
        );
        let mcp_messages = counter(
            "context7_mcp_messages_total",
            "JSON-RPC messages received on /mcp, by method (known names only, else \"other\"), \
                 tool (for tools/call) and outcome.",
            &["method", "tool", "outcome"],
        );
        let time_to_first_token = histogram(
            "context7_time_to_first_token_seconds",
            "Time from sending a streamed request to its first chunk, by upstream.",
            REQUEST_BUCKETS,
            &["upstream"],
        );
        let streams_cancelled = IntCounter::new(
            "context7_streams_cancelled_total",
            "Streams whose client left before the end; the upstream request was cancelled.",
        )
        .expect("valid metric");
        let streams_broken = IntCounter::new(
            "context7_streams_broken_total",
            "Streams the upstream broke off; the client got an error event and [DONE].",
        )
        .expect("valid metric");
        let auth_failures = counter(
            "context7_auth_failures_total",
            "Requests refused with 401 (missing or wrong client key), by route.",
            &["route"],
        );
        let rate_limited = counter(
            "context7_rate_limited_total",
            "Requests refused by the client limits, by route and limit (requests, tokens, \
             unavailable: Redis down with on_failure deny).",
            &["route", "limit"],
        );
        let cache_lookups = counter(
            "context7_cache_lookups_total",
            "Research cache lookups, by result (HIT, MISS, BYPASS).",
            &["result"],
        );
        let gateway_overhead = histogram(
            "context7_gateway_overhead_seconds",
            "Time a request spent in the gateway itself, upstream attempts excluded, by route.",
            &[
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                0.025, 0.1,
            ],
            &["route"],
        );
        let redis_errors = counter(
            "context7_redis_errors_total",
            "Redis operations that failed or were skipped while Redis was down, by operation.",
            &["op"],
        );
        let redis_up = prometheus::IntGauge::new(
            "context7_redis_up",
            "1 while the shared Redis answers; 0 while it does not, and without redis:.",
        )
        .expect("valid metric");
        let upstream_cost = prometheus::CounterVec::new(
            Opts::new(
                "context7_upstream_cost_usd_total",
                "What the upstream cost in US dollars, by its pricing: upstream time of every \
                 attempt at per_second, and the tokens its answers reported.",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_cold_starts = histogram(
            "context7_upstream_cold_start_seconds",
            "Cold starts of the upstream: from the first sign of a cold worker (a 204, a RunPod \
             queue with no worker up) or the first request sent to it then, to its first answer.",
            &[1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0],
            &["upstream"],
        );
        let mut descs = Vec::new();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(upstream_healthy.clone()),
            Box::new(upstream_tokens.clone()),
            Box::new(health_checks.clone()),
            Box::new(upstream_routable.clone()),
            Box::new(upstream_in_flight.clone()),
            Box::new(upstream_latency_estimate.clone()),
            Box::new(upstream_selections.clone()),
            Box::new(upstream_ejections.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(retry_budget_exhausted.clone()),
            Box::new(upstream_queue_jobs.clone()),
            Box::new(upstream_workers.clone()),
            Box::new(mcp_messages.clone()),
            Box::new(time_to_first_token.clone()),
            Box::new(streams_cancelled.clone()),
            Box::new(streams_broken.clone()),
            Box::new(auth_failures.clone()),
            Box::new(rate_limited.clone()),
            Box::new(cache_lookups.clone()),
            Box::new(gateway_overhead.clone()),
            Box::new(internal_errors.clone()),
            Box::new(client_write_timeouts.clone()),
            Box::new(redis_errors.clone()),
            Box::new(redis_up.clone()),
            Box::new(upstream_cost.clone()),
            Box::new(upstream_cold_starts.clone()),
        ] {
            descs.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            descs,
            requests,
            request_duration,
            upstream_duration,
            upstream_requests,
            upstream_healthy,
            upstream_tokens,
            health_checks,
            upstream_routable,
            upstream_in_flight,
            upstream_latency_estimate,
            upstream_selections,
            upstream_ejections,
            upstream_retries,
            retry_budget_exhausted,
            upstream_queue_jobs,
            upstream_workers,
            mcp_messages,
            time_to_first_token,
            streams_cancelled,
            streams_broken,
            auth_failures,
            rate_limited,
            cache_lookups,
            gateway_overhead,
            internal_errors,
            client_write_timeouts,
            redis_errors,
            redis_up,
            upstream_cost,
            upstream_cold_starts,
            exported_upstreams: std::sync::Mutex::new(Vec::new()),
            routes: Default::default(),
        }
    }

    /// The series of route number `index` (below [`MAX_ROUTES`]), labelled `label`.
    pub fn route(&self, index: usize, label: &'static str) -> &RouteSeries {
        self.routes[index].get_or_init(|| RouteSeries {
            ok: self.requests.with_label_values(&[label, "200"]),
            duration: self.request_duration.with_label_values(&[label]),
            overhead: self.gateway_overhead.with_label_values(&[label]),
        })
    }

    /// Counts one attempt on `upstream` that ended with `outcome`, and its duration.
    pub fn count_attempt(
        &self,
        series: &UpstreamSeries,
        upstream: &str,
        outcome: &str,
        seconds: f64,
    ) {
        if outcome == "ok" {
            series
                .ok
                .get_or_init(|| self.upstream_requests.with_label_values(&[upstream, "ok"]))
                .inc();
        } else {
            self.upstream_requests
                .with_label_values(&[upstream, outcome])
                .inc();
        }
        series
            .duration
            .get_or_init(|| self.upstream_duration.with_label_values(&[upstream]))
            .observe(seconds);
    }

    /// Adds `usd` to the cost of `upstream`.
    pub fn charge(&self, series: &UpstreamSeries, upstream: &str, usd: f64) {
        series
            .cost
            .get_or_init(|| self.upstream_cost.with_label_values(&[upstream]))
            .inc_by(usd);
    }

    /// Observes a time to first token of `upstream`.
    pub fn observe_time_to_first_token(
        &self,
        series: &UpstreamSeries,
        upstream: &str,
        seconds: f64,
    ) {
        series
            .time_to_first_token
            .get_or_init(|| self.time_to_first_token.with_label_values(&[upstream]))
            .observe(seconds);
    }

    /// Counts the prompt and completion tokens of an answer of `upstream` for `model`.
    pub fn count_tokens(
        &self,
        series: &UpstreamSeries,
        upstream: &str,
        model: &str,
        prompt: u64,
        completion: u64,
    ) {
        let counters = |model: &str| {
            (
                self.upstream_tokens
                    .with_label_values(&[upstream, model, "prompt"]),
                self.upstream_tokens
                    .with_label_values(&[upstream, model, "completion"]),
            )
        };
        let cached = series.tokens.get_or_init(|| {
            let (p, c) = counters(model);
            (model.to_string(), p, c)
        });
        if cached.0 == model {
            cached.1.inc_by(prompt);
            cached.2.inc_by(completion);
        } else {
            // Another model than the first one seen (aliases, several served).
            let (p, c) = counters(model);
            p.inc_by(prompt);
            c.inc_by(completion);
        }
    }

    /// The name of every metric family (histograms without their suffixes).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        // Families without a series yet are not gathered: ask the collectors.
        for desc in self.descs.iter() {
            if !names.contains(desc) {
                names.push(desc.clone());
            }
        }
        names.sort();
        names
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Status codes as static labels, so metrics never allocate or explode.
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        413 => "413",
        415 => "415",
        431 => "431",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 200 => "1xx",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
