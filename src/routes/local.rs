//! Answers that never leave the gateway: `/ping`, `/`, `/docs` and `/metrics`.

use super::{Reply, iso_timestamp};
use crate::metrics::Metrics;
use crate::pool::Pool;
use serde_json::json;

/// `GET /ping`: the original service's health answer plus the pool's counts.
pub fn ping(pool: &Pool) -> Reply {
    Reply::json(
        200,
        &json!({
            "status": "healthy",
            "service": "context7-mcp",
            "timestamp": iso_timestamp(),
            "vllm_configured": !pool.is_empty(),
            "upstreams": {"healthy": pool.healthy_count(), "total": pool.upstreams().len()},
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
                "mcp": "/mcp",
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

/// `GET /metrics`: Prometheus text exposition.
pub fn metrics(metrics: &Metrics) -> Reply {
    Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        headers: Vec::new(),
        body: metrics.render().into(),
    }
}
