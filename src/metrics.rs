//! Every Prometheus metric the gateway exports, registered once in its own
//! registry, with low-cardinality labels only (route templates, upstream names).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for whole requests: LLM answers take from milliseconds to a minute.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_tokens: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub mcp_messages: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "context7_http_requests_total",
                "Requests answered by the gateway, by route and status code.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "context7_http_request_duration_seconds",
                "Time from the request's arrival to the end of the answer, by route.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "context7_upstream_request_duration_seconds",
                "Time one upstream took to answer one attempt, by upstream.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "context7_upstream_requests_total",
                "Attempts sent to upstreams, by upstream and outcome.",
            ),
            &["upstream", "outcome"],
        )
        .expect("valid metric");
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "context7_upstream_healthy",
                "1 when the upstream passed its last health checks, 0 otherwise.",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_tokens = IntCounterVec::new(
            Opts::new(
                "context7_upstream_tokens_total",
                "Tokens reported by upstreams, by upstream and kind (prompt or completion).",
            ),
            &["upstream", "kind"],
        )
        .expect("valid metric");
        let health_checks = IntCounterVec::new(
            Opts::new(
                "context7_health_checks_total",
                "Active health checks, by upstream and result (up, initializing, down).",
            ),
            &["upstream", "result"],
        )
        .expect("valid metric");
        let mcp_messages = IntCounterVec::new(
            Opts::new(
                "context7_mcp_messages_total",
                "JSON-RPC messages received on /mcp, by method (known names only, else \"other\"), \
                 tool (for tools/call) and outcome.",
            ),
            &["method", "tool", "outcome"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(upstream_healthy.clone()),
            Box::new(upstream_tokens.clone()),
            Box::new(health_checks.clone()),
            Box::new(mcp_messages.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_requests,
            upstream_healthy,
            upstream_tokens,
            health_checks,
            mcp_messages,
        }
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
