//! Answers that never leave the gateway: `/ping`, `/`, `/docs` and `/metrics`.

use super::{Reply, iso_timestamp};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::shared::SharedStore;
use serde_json::json;

/// `GET /ping`: the original service's health answer plus the pool's counts.
///
/// It follows RunPod's worker contract, so the gateway can itself run as a
/// load-balancing worker: 204 while the first round of health checks runs,
/// 200 once an upstream is routable, 503 when none is. With no upstream
/// configured it answers 200 as the original service did, and
/// `ping_always_200` restores the original's unconditional 200.
///
/// With `redis:` it says whether Redis answers (`"redis": "up"`), which never
/// changes its status: the gateway serves without Redis.
pub fn ping(pool: &Pool, always_200: bool, shared: Option<&SharedStore>) -> Reply {
    let routable = pool.routable_count();
    let (status, health) = if always_200 || pool.is_empty() {
        (200, "healthy")
    } else if pool.initializing() {
        return Reply {
            status: 204,
            content_type: "application/json",
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        };
    } else if routable > 0 {
        (200, "healthy")
    } else {
        (503, "unhealthy")
    };
    let mut body = json!({
        "status": health,
        "service": "context7-mcp",
        "timestamp": iso_timestamp(),
        "vllm_configured": !pool.is_empty(),
        "upstreams": {"healthy": pool.healthy_count(), "routable": routable, "total": pool.upstreams().len()},
    });
    if let Some(store) = shared {
        body["redis"] = json!(store.status().state);
    }
    Reply::json(status, &body)
}

/// `GET /status`: every upstream with its state, checks, errors and load.
/// Holds no key: upstreams expose only their origin and path.
pub fn status(pool: &Pool, shared: Option<&SharedStore>) -> Reply {
    let now = tokio::time::Instant::now();
    let wall = std::time::SystemTime::now();
    let at = super::iso_time;
    let upstreams: Vec<_> = pool
        .upstreams()
        .iter()
        .map(|u| {
            let ejected_until = u.ejected_until(now);
            json!({
                "name": u.name,
                "kind": u.kind.as_str(),
                "base_url": format!("{}{}", u.base.origin(), u.base.path),
                "model": u.model,
                "weight": u.weight,
                "state": u.health().as_str(),
                "routable": u.is_healthy() && ejected_until.is_none(),
                "ejected_for_ms": ejected_until.map(|t| t.duration_since(now).as_millis() as u64),
                "ejections": u.ejections(),
                "last_check": u.last_check().map(|c| json!({
                    "result": c.outcome.as_str(), "detail": c.detail, "at": at(c.at),
                })),
                "last_error": u.last_error().map(|e| json!({"message": e.message, "at": at(e.at)})),
                "latency_estimate_ms": pool.latency_estimate(u, now).as_secs_f64() * 1000.0,
                "latency_sampled": u.has_latency_sample(),
                "in_flight": u.in_flight(),
                "queue": u.queue_depth(),
            })
        })
        .collect();
    Reply::json(
        200,
        &json!({
            "timestamp": at(wall),
            "strategy": match pool.settings().strategy {
                crate::config::Strategy::PeakEwma => "peak_ewma",
                crate::config::Strategy::RoundRobin => "round_robin",
            },
            "routable": pool.routable_count(),
            "upstreams": upstreams,
            "redis": shared.map(SharedStore::status),
        }),
    )
}

/// `GET /`: service information, as the original service gave it.
pub fn root() -> Reply {
    Reply::json(
        200,
        &json!({
            "service": "Context7 MCP Load Balancer",
            "version": env!("CARGO_PKG_VERSION"),
            "status": "running",
            "endpoints": {
                "health": "/ping",
                "research": "/v1/research",
                "docs": "/docs",
                "metrics": "/metrics",
                "status": "/status",
                "mcp": "/mcp",
                "openai": "/v1",
                "openapi": "/openapi.json",
            },
        }),
    )
}

/// `GET /docs`: a short human-readable API reference.
pub fn docs() -> Reply {
    Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        headers: Vec::new(),
        body: include_str!("docs.html").into(),
    }
}

/// `GET /openapi.json`: the OpenAPI 3.1 description of every route, with
/// this build's version.
pub fn openapi() -> Reply {
    static DOCUMENT: std::sync::LazyLock<bytes::Bytes> = std::sync::LazyLock::new(|| {
        let mut spec: serde_json::Value =
            serde_json::from_str(include_str!("openapi.json")).expect("openapi.json is JSON");
        spec["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
        serde_json::to_vec(&spec).expect("JSON serializes").into()
    });
    Reply {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: DOCUMENT.clone(),
    }
}

/// `GET /metrics`: Prometheus text exposition, the pool's gauges and the
/// current Redis's state refreshed first (only the current store sets it: an
/// old one still finishing requests after a reload says nothing).
pub fn metrics(metrics: &Metrics, pool: &Pool, shared: Option<&SharedStore>) -> Reply {
    pool.export_gauges();
    metrics
        .redis_up
        .set(i64::from(shared.is_some_and(|s| s.status().state == "up")));
    Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        headers: Vec::new(),
        body: metrics.render().into(),
    }
}
