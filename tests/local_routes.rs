//! Routes the gateway answers itself: `/ping`, `/`, `/docs`, `/metrics`, and
//! the FastAPI-style 404 and 405.

mod common;

use common::*;
use context7_lb::sim::SimConfig;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_health_and_the_pool() {
    let sims = sims(vec![SimConfig::new("a"), SimConfig::new("b").cold(true)]).await;
    let gw = gateway(&sims, config()).await;
    let r = reqwest::get(format!("{}/ping", gw.url())).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "status",
            "service",
            "timestamp",
            "vllm_configured",
            "upstreams"
        ]
    );
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "context7-mcp");
    assert_eq!(body["vllm_configured"], true);
    assert_eq!(
        body["upstreams"],
        json!({"healthy": 1, "routable": 1, "total": 2})
    );
    assert!(chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok());
    stop(gw).await;

    let gw = start(config()).await;
    let body: Value = get_json(&gw, "/ping").await;
    assert_eq!(body["vllm_configured"], false);
    assert_eq!(
        body["upstreams"],
        json!({"healthy": 0, "routable": 0, "total": 0})
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_lists_the_service_and_its_endpoints() {
    let gw = start(config()).await;
    let body: Value = get_json(&gw, "/").await;
    assert_eq!(
        body,
        json!({
            "service": "Context7 MCP Load Balancer",
            "version": env!("CARGO_PKG_VERSION"),
            "status": "running",
            "endpoints": {"health": "/ping", "research": "/v1/research", "docs": "/docs", "redoc": "/redoc", "metrics": "/metrics", "status": "/status", "ui": "/ui", "mcp": "/mcp", "openai": "/v1", "openapi": "/openapi.json"}
        })
    );
    // Every endpoint listed is served.
    for path in [
        "/ping",
        "/docs",
        "/redoc",
        "/metrics",
        "/status",
        "/ui",
        "/openapi.json",
    ] {
        let r = reqwest::get(format!("{}{path}", gw.url())).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    // /docs is Swagger UI and /redoc ReDoc, on this gateway's spec, with
    // their assets served from the binary.
    let docs = get_text(&gw, "/docs").await;
    assert!(docs.contains("/docs/swagger-ui-5.35.0/swagger-ui-bundle.js"));
    let redoc = get_text(&gw, "/redoc").await;
    assert!(redoc.contains(r#"spec-url="/openapi.json""#));
    // The vendored files name their version, so browsers may keep them;
    // our own initialiser is not cached.
    const KEEP: &str = "public, max-age=31536000, immutable";
    for (path, content_type, starts, cache) in [
        (
            "/docs/swagger-ui-5.35.0/swagger-ui-bundle.js",
            "text/javascript; charset=utf-8",
            "/*! For license information",
            KEEP,
        ),
        (
            "/docs/swagger-ui-5.35.0/swagger-ui.css",
            "text/css; charset=utf-8",
            ".swagger-ui",
            KEEP,
        ),
        (
            "/docs/redoc-2.5.4/redoc.standalone.js",
            "text/javascript; charset=utf-8",
            "/*! For license information",
            KEEP,
        ),
        (
            "/docs/swagger-ui-init.js",
            "text/javascript; charset=utf-8",
            "// Swagger UI",
            "no-store",
        ),
    ] {
        let r = reqwest::get(format!("{}{path}", gw.url())).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
        assert_eq!(r.headers()["cache-control"], cache, "{path}");
        let body = r.text().await.unwrap();
        assert!(
            body.starts_with(starts),
            "{path}: {}",
            &body[..60.min(body.len())]
        );
    }
    let r = reqwest::get(format!("{}/docs/nope.js", gw.url()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_asks_for_keys_only_when_the_gateway_has_them() {
    let gw = start(config()).await;
    let open: Value = get_json(&gw, "/openapi.json").await;
    assert!(
        open.get("servers").is_none(),
        "relative to where it is served"
    );
    assert!(open["components"].get("securitySchemes").is_none());
    for (path, operations) in open["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            assert!(op.get("security").is_none(), "{method} {path}");
            assert!(op["responses"].get("401").is_none(), "{method} {path}");
        }
    }
    stop(gw).await;

    let mut keyed = config();
    keyed.auth.keys = vec!["spec-test-key-1".into()];
    let gw = start(keyed).await;
    let spec: Value = get_json(&gw, "/openapi.json").await;
    assert_eq!(
        spec["components"]["securitySchemes"]["clientKey"]["scheme"],
        "bearer"
    );
    assert_eq!(
        spec["paths"]["/v1/research"]["post"]["security"],
        json!([{"clientKey": []}])
    );
    assert_eq!(
        spec["paths"]["/ui"]["get"]["security"],
        json!([{"clientKey": []}, {"browserKey": []}])
    );
    assert!(
        spec["paths"]["/v1/research"]["post"]["responses"]
            .get("401")
            .is_some()
    );
    assert!(spec["paths"]["/ping"]["get"].get("security").is_none());
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_get_fastapi_errors() {
    let gw = start(config()).await;
    let c = client();
    let r = c.get(format!("{}/nope", gw.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Not Found"})
    );
    // A 405 says which methods the path takes (RFC 9110).
    for (method, path, allow) in [
        ("GET", "/v1/research", "POST"),
        ("POST", "/ping", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
        ("TRACE", "/v1/models", "GET, HEAD"),
        ("PUT", "/docs/swagger-ui-init.js", "GET, HEAD"),
    ] {
        let r = c
            .request(method.parse().unwrap(), format!("{}{path}", gw.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"detail": "Method Not Allowed"})
        );
    }
    let r = c.head(format!("{}/ping", gw.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_every_family() {
    let sims = sims(vec![SimConfig::new("a").answer_tokens(5)]).await;
    let gw = gateway(&sims, config()).await;
    let (status, _, _) = research(&gw, r#"{"query":"one two three"}"#).await;
    assert_eq!(status, 200);
    research(&gw, r#"{}"#).await;
    let r = reqwest::get(format!("{}/metrics", gw.url())).await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    for line in [
        r#"context7_http_requests_total{route="/v1/research",status="200"} 1"#,
        r#"context7_http_requests_total{route="/v1/research",status="422"} 1"#,
        r#"context7_upstream_healthy{upstream="a"} 1"#,
        r#"context7_upstream_tokens_total{kind="completion",model="meta-llama/Llama-3.1-8B-Instruct",upstream="a"} 5"#,
        r#"context7_upstream_tokens_total{kind="prompt",model="meta-llama/Llama-3.1-8B-Instruct",upstream="a"} 3"#,
        r#"context7_upstream_requests_total{outcome="ok",upstream="a"} 1"#,
        r#"context7_http_request_duration_seconds_count{route="/v1/research"} 2"#,
        r#"context7_upstream_request_duration_seconds_count{upstream="a"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    assert!(text.contains("# TYPE context7_http_request_duration_seconds histogram"));
    stop(gw).await;
}
