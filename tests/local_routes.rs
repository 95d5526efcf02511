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
            "endpoints": {"health": "/ping", "research": "/v1/research", "docs": "/docs", "metrics": "/metrics", "status": "/status", "ui": "/ui", "mcp": "/mcp", "openai": "/v1", "openapi": "/openapi.json"}
        })
    );
    // Every endpoint listed is served.
    for path in ["/ping", "/docs", "/metrics", "/status", "/openapi.json"] {
        let r = reqwest::get(format!("{}{path}", gw.url())).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let docs = get_text(&gw, "/docs").await;
    assert!(docs.contains("POST /v1/research"));
    assert!(docs.contains("POST /mcp"));
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
    for (method, path) in [("GET", "/v1/research"), ("POST", "/ping"), ("DELETE", "/")] {
        let r = c
            .request(method.parse().unwrap(), format!("{}{path}", gw.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
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
