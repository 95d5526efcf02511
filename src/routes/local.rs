//! Answers that never leave the gateway: `/ping`, `/`, `/docs`, `/metrics`,
//! `/status` and the operator's page `/ui`.

use super::{Reply, iso_timestamp};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::shared::SharedStore;
use serde_json::json;
use std::time::Duration;

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

/// `GET /status`: every upstream with its state, checks, errors, load,
/// traffic and cost; with `?history=1`, its last 15 minutes as well (what
/// `/ui` draws). Holds no key: upstreams expose only their origin and path.
pub fn status(pool: &Pool, shared: Option<&SharedStore>, with_history: bool) -> Reply {
    let now = tokio::time::Instant::now();
    let wall = std::time::SystemTime::now();
    let now_secs = wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let at = super::iso_time;
    let windows = [("1m", 60), ("5m", 300), ("15m", 900)];
    let recent: Vec<[u64; 3]> = pool
        .upstreams()
        .iter()
        .map(|u| windows.map(|(_, secs)| u.attempts_within(Duration::from_secs(secs), now_secs)))
        .collect();
    let all: [u64; 3] = std::array::from_fn(|w| recent.iter().map(|r| r[w]).sum());
    let mut cost_total = 0.0;
    let upstreams: Vec<_> = pool
        .upstreams()
        .iter()
        .zip(&recent)
        .map(|(u, recent)| {
            let ejected_until = u.ejected_until(now);
            let totals = u.totals();
            cost_total += totals.cost_usd;
            let share: serde_json::Map<_, _> = windows
                .iter()
                .enumerate()
                .map(|(w, (name, _))| {
                    let share = (all[w] > 0).then(|| recent[w] as f64 / all[w] as f64);
                    (name.to_string(), json!(share))
                })
                .collect();
            let mut entry = json!({
                "name": u.name,
                "kind": u.kind.as_str(),
                "base_url": format!("{}{}", u.base.origin(), u.base.path),
                "model": u.model,
                "weight": u.weight,
                "tier": u.tier,
                "spilled_selections": pool.spilled_to(u),
                "state": u.health().as_str(),
                "routable": u.is_healthy() && ejected_until.is_none(),
                "cold": u.is_cold(),
                "slow": u.is_slow(),
                "ejected_for_ms": ejected_until.map(|t| t.duration_since(now).as_millis() as u64),
                "ejections": u.ejections(),
                "last_check": u.last_check().map(|c| json!({
                    "result": c.outcome.as_str(), "detail": c.detail, "at": at(c.at),
                })),
                "last_error": u.last_error().map(|e| json!({"message": e.message, "at": at(e.at)})),
                "latency_estimate_ms": pool.latency_estimate(u, now).as_secs_f64() * 1000.0,
                "latency_sampled": u.has_latency_sample(),
                "time_to_first_token_ms": u.time_to_first_token().map(|t| t.as_secs_f64() * 1000.0),
                "in_flight": u.in_flight(),
                "max_concurrent": u.max_concurrent,
                "queue": u.queue_depth(),
                "requests": {"1m": recent[0], "5m": recent[1], "15m": recent[2]},
                "share": share,
                "totals": totals,
                "pricing": u.pricing.map(|p| json!({
                    "per_second": p.per_second,
                    "per_million_prompt_tokens": p.per_million_prompt_tokens,
                    "per_million_completion_tokens": p.per_million_completion_tokens,
                })),
            });
            if with_history {
                entry["history"] = json!(u.history());
            }
            entry
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
            "cost_usd": cost_total,
            "history_every_s": crate::pool::HISTORY_EVERY.as_secs(),
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
                "redoc": "/redoc",
                "metrics": "/metrics",
                "status": "/status",
                "ui": "/ui",
                "mcp": "/mcp",
                "openai": "/v1",
                "openapi": "/openapi.json",
            },
        }),
    )
}

/// An HTML page of the binary's own, allowed to load only what `policy` says.
fn page(body: &'static str, policy: &'static str) -> Reply {
    Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        headers: vec![("content-security-policy", policy.into())],
        body: body.into(),
    }
}

/// `GET /ui`: the operator's page, all in one file (no build step, nothing
/// fetched from elsewhere); it polls `/status?history=1` every two seconds.
pub fn ui() -> Reply {
    page(
        include_str!("ui.html"),
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    )
}

/// What the API explorers' pages may load: their own scripts, styles and the
/// spec, from this gateway only. ReDoc renders in a worker it makes from a
/// `blob:` and draws images from `data:`.
const EXPLORER_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /docs`: Swagger UI on `/openapi.json`, with "Try it out" against
/// this gateway (assets in `vendor/`, embedded).
pub fn docs() -> Reply {
    page(include_str!("docs.html"), EXPLORER_POLICY)
}

/// `GET /redoc`: ReDoc on `/openapi.json`.
pub fn redoc() -> Reply {
    page(include_str!("redoc.html"), EXPLORER_POLICY)
}

/// One of the explorers' scripts or styles.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// Whether its path names its version, so that a browser may keep it
    /// for good (the vendored files; not our own initialiser).
    pub versioned: bool,
}

/// The explorers' assets by path.
pub fn docs_asset(path: &str) -> Option<Asset> {
    const JS: &str = "text/javascript; charset=utf-8";
    let vendored = |content_type, body| Asset {
        content_type,
        body,
        versioned: true,
    };
    Some(match path {
        "/docs/swagger-ui-5.35.0/swagger-ui-bundle.js" => vendored(
            JS,
            include_bytes!("vendor/swagger-ui-5.35.0/swagger-ui-bundle.js"),
        ),
        "/docs/swagger-ui-5.35.0/swagger-ui.css" => vendored(
            "text/css; charset=utf-8",
            include_bytes!("vendor/swagger-ui-5.35.0/swagger-ui.css"),
        ),
        "/docs/redoc-2.5.4/redoc.standalone.js" => {
            vendored(JS, include_bytes!("vendor/redoc-2.5.4/redoc.standalone.js"))
        }
        "/docs/swagger-ui-init.js" => Asset {
            content_type: JS,
            body: include_bytes!("swagger-ui-init.js"),
            versioned: false,
        },
        _ => return None,
    })
}

/// An explorer asset (see [`docs_asset`]); the route is taken only for a
/// path the table has, so the 404 is for a table and router that disagree.
pub fn docs_asset_reply(path: &str) -> Reply {
    let Some(asset) = docs_asset(path) else {
        return Reply::detail(404, "Not Found");
    };
    Reply {
        status: 200,
        content_type: asset.content_type,
        headers: if asset.versioned {
            vec![(
                "cache-control",
                "public, max-age=31536000, immutable".into(),
            )]
        } else {
            Vec::new()
        },
        body: bytes::Bytes::from_static(asset.body),
    }
}

/// `GET /openapi.json`: the OpenAPI 3.1 description of every route, with
/// this build's version, as this gateway runs: with client keys its routes
/// say which need one (and answer 401); without, neither appears. No
/// `servers`: the spec is relative to wherever it was fetched from, so that
/// Swagger UI's "Try it out" calls this gateway.
pub fn openapi(keys: bool) -> Reply {
    static WITH_KEYS: std::sync::LazyLock<bytes::Bytes> =
        std::sync::LazyLock::new(|| openapi_document(true));
    static WITHOUT_KEYS: std::sync::LazyLock<bytes::Bytes> =
        std::sync::LazyLock::new(|| openapi_document(false));
    Reply {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: if keys { &*WITH_KEYS } else { &*WITHOUT_KEYS }.clone(),
    }
}

fn openapi_document(keys: bool) -> bytes::Bytes {
    let mut spec: serde_json::Value =
        serde_json::from_str(include_str!("openapi.json")).expect("openapi.json is JSON");
    spec["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    if let Some(object) = spec.as_object_mut() {
        object.remove("servers");
    }
    if !keys {
        if let Some(components) = spec["components"].as_object_mut() {
            components.remove("securitySchemes");
        }
        if let Some(paths) = spec["paths"].as_object_mut() {
            for operation in paths.values_mut().filter_map(|p| p.as_object_mut()) {
                for op in operation.values_mut().filter_map(|o| o.as_object_mut()) {
                    op.remove("security");
                    if let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut())
                    {
                        responses.remove("401");
                    }
                }
            }
        }
    }
    serde_json::to_vec(&spec).expect("JSON serializes").into()
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
