//! The operator's view end to end, over real sockets: cost by `pricing` in
//! `/status` and the metrics (streams included), `/status`'s shares and
//! history, `/ui` behind keys, cold RunPod queues used last and their cold
//! starts timed, and RunPod's load-balancer answers (no worker: 400; cut
//! off: 524) read by what they mean.

mod common;

use common::raw::{RawUpstream, read_request};
use common::*;
use context7_lb::config::{Pricing, UpstreamConfig};
use context7_lb::sim::{SimConfig, SimUpstream};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const MODEL: &str = context7_lb::config::DEFAULT_RESEARCH_MODEL;

fn priced(name: &str, sim: &SimUpstream, pricing: Pricing) -> UpstreamConfig {
    UpstreamConfig {
        pricing: Some(pricing),
        ..upstream(name, sim, &format!("key-{name}"))
    }
}

fn status_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_is_counted_by_pricing_for_answers_and_streams_alike() {
    let sims = sims(vec![
        SimConfig::new("a")
            .ttft(Duration::from_millis(100))
            .answer_tokens(10),
    ])
    .await;
    let mut config = config();
    let pricing = Pricing {
        per_second: Some(0.01),
        per_million_prompt_tokens: None,
        per_million_completion_tokens: Some(1000.0),
    };
    config.upstreams.push(priced("a", &sims[0], pricing));
    let gw = start(config).await;

    let (status, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 200, "{body}");
    let status = get_json(&gw, "/status").await;
    let a = status_of(&status, "a");
    assert_eq!(a["totals"]["attempts"], 1);
    assert_eq!(a["totals"]["errors"], 0);
    assert_eq!(a["totals"]["completion_tokens"], 10);
    assert_eq!(
        a["pricing"],
        json!({"per_second": 0.01, "per_million_prompt_tokens": null, "per_million_completion_tokens": 1000.0})
    );
    // 10 completion tokens at $1000 a million, plus at least the 100 ms
    // before the first token at $0.01 a second.
    let cost = a["totals"]["cost_usd"].as_f64().unwrap();
    assert!((0.011..0.02).contains(&cost), "{cost}");
    assert_eq!(status["cost_usd"], a["totals"]["cost_usd"]);

    // A stream whose client did not ask for usage: the upstream is asked
    // (the tokens are priced), the client never sees the usage chunk.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"usage\":{"), "{text}");
    let requests = sims[0].requests();
    let asked = requests
        .iter()
        .rev()
        .find(|r| r.method == "POST")
        .unwrap()
        .body
        .clone();
    let asked: Value = serde_json::from_slice(&asked).unwrap();
    assert_eq!(asked["stream_options"], json!({"include_usage": true}));
    let status = get_json(&gw, "/status").await;
    let a = status_of(&status, "a");
    assert_eq!(a["totals"]["completion_tokens"], 20);
    let after = a["totals"]["cost_usd"].as_f64().unwrap();
    assert!(after - cost >= 0.011, "{cost} then {after}");
    assert!(
        a["time_to_first_token_ms"].as_f64().unwrap() >= 100.0,
        "{a}"
    );
    let metrics = get_text(&gw, "/metrics").await;
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"context7_upstream_cost_usd_total{upstream="a"} "#))
        .expect("the cost counter")
        .parse()
        .unwrap();
    assert!((counted - after).abs() < 1e-6, "{counted} against {after}");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_gives_shares_and_history_and_ui_is_behind_the_keys() {
    let sims = sims(vec![SimConfig::new("a"), SimConfig::new("b")]).await;
    let mut config = config();
    config.auth.keys = vec!["operator-key-123".into()];
    let gw = gateway(&sims, config).await;
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let r = client
            .post(format!("{}/v1/research", gw.url()))
            .bearer_auth("operator-key-123")
            .json(&json!({"query": "q"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = client
        .get(format!("{}/status?history=1", gw.url()))
        .basic_auth("ops", Some("operator-key-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["history_every_s"], 5);
    let mut shares = 0.0;
    for u in status["upstreams"].as_array().unwrap() {
        shares += u["share"]["1m"].as_f64().unwrap_or(0.0);
        assert_eq!(u["share"]["1m"], u["share"]["15m"], "{u}");
        let history = u["history"].as_array().unwrap();
        assert!(!history.is_empty() && history.len() <= 180, "{u}");
        for field in [
            "at",
            "attempts",
            "errors",
            "in_flight",
            "latency_ms",
            "routable",
            "cost_usd",
        ] {
            assert!(history[0].get(field).is_some(), "{field} missing: {u}");
        }
        assert_eq!(u["tier"], 0);
        assert_eq!(u["spilled_selections"], 0);
        assert_eq!(u["cold"], false);
    }
    assert!((shares - 1.0).abs() < 1e-9, "{status}");
    // Without `?history=1` there is none.
    let r = client
        .get(format!("{}/status", gw.url()))
        .bearer_auth("operator-key-123")
        .send()
        .await
        .unwrap();
    let plain: Value = r.json().await.unwrap();
    assert!(plain["upstreams"][0].get("history").is_none());

    // /ui: 401 with a Basic challenge, the page with the key as a Basic
    // password or a bearer key; a wrong password is refused.
    let r = client.get(format!("{}/ui", gw.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Basic realm="context7-lb", charset="UTF-8""#
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Missing API key: send Authorization: Bearer <key>"})
    );
    let r = client
        .get(format!("{}/ui", gw.url()))
        .basic_auth("ops", Some("not-the-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Invalid API key"})
    );
    for request in [
        client
            .get(format!("{}/ui", gw.url()))
            .basic_auth("ops", Some("operator-key-123")),
        client
            .get(format!("{}/ui", gw.url()))
            .bearer_auth("operator-key-123"),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert!(r.text().await.unwrap().contains("/status?history=1"));
    }
    // Basic credentials are for the pages only: research still wants a bearer key.
    let r = client
        .post(format!("{}/v1/research", gw.url()))
        .basic_auth("ops", Some("operator-key-123"))
        .json(&json!({"query": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_runpod_queue_is_used_only_when_the_warm_upstream_is_full() {
    // The RunPod endpoint is the faster one, but its queue has no worker up.
    let runpod = SimUpstream::start(SimConfig::new("rp").api_key("rp-key").cold(true))
        .await
        .unwrap();
    let boxed = SimUpstream::start(SimConfig::new("box").ttft(Duration::from_millis(600)))
        .await
        .unwrap();
    let mut config = config();
    config.runpod_api_base = runpod.origin();
    config.upstreams.push(UpstreamConfig {
        name: "rp".into(),
        runpod_endpoint_id: Some("abc123".into()),
        api_key: Some("rp-key".into()),
        ..UpstreamConfig::default()
    });
    config.upstreams.push(UpstreamConfig {
        max_concurrent: 1,
        ..upstream("box", &boxed, "key-box")
    });
    let gw = start(config).await;
    let cold = gw.state.pool.upstreams()[0].clone();
    wait_until("the queue seen cold", || cold.is_cold()).await;
    let (status, headers, _) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-upstream"], "box");
    // The box busy with one request: the next one goes to the cold queue,
    // and its cold start is timed until it answers.
    let (first, second) = tokio::join!(research(&gw, r#"{"query":"q"}"#), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        research(&gw, r#"{"query":"q"}"#).await
    });
    assert_eq!((first.0, second.0), (200, 200));
    assert_eq!(first.1["x-upstream"], "box");
    assert_eq!(second.1["x-upstream"], "rp");
    let metrics = get_text(&gw, "/metrics").await;
    assert!(
        metrics.contains(r#"context7_upstream_cold_start_seconds_count{upstream="rp"} 1"#),
        "{metrics}"
    );
    let status = get_json(&gw, "/status").await;
    assert_eq!(status_of(&status, "rp")["kind"], "runpod_queue");
    stop(gw).await;
}

/// An upstream answering every POST with `status` and `body`, `/ping` with 200.
async fn answering(status: &'static str, body: &'static str) -> RawUpstream {
    RawUpstream::start(move |mut stream| async move {
        let mut buffer = Vec::new();
        while let Some((line, _)) = read_request(&mut stream, &mut buffer).await {
            let answer = if line.starts_with("GET") {
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string()
            } else {
                format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

fn raw_upstream(name: &str, raw: &RawUpstream) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        base_url: Some(raw.base_url()),
        ..UpstreamConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runpods_no_worker_400_moves_the_request_and_its_524_is_a_timeout() {
    let no_workers = answering("400 Bad Request", r#"{"error":"no workers available"}"#).await;
    let cut_off = answering("524 A Timeout Occurred", r#"{"error":"timeout"}"#).await;
    let healthy = SimUpstream::start(SimConfig::new("ok")).await.unwrap();

    // Alone, each is what it says: no capacity (503), a timeout (504).
    for (raw, status, detail) in [
        (
            &no_workers,
            503,
            "vLLM backend rp has no worker available: no workers available",
        ),
        (
            &cut_off,
            504,
            "vLLM backend rp timed out: its load balancer cut the request off (HTTP 524)",
        ),
    ] {
        let mut alone = config();
        alone.upstreams.push(raw_upstream("rp", raw));
        let gw = start(alone).await;
        let (got, headers, body) = research(&gw, r#"{"query":"q"}"#).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body, json!({ "detail": detail }));
        assert_eq!(headers["x-upstream"], "rp");
        stop(gw).await;
    }

    // With a healthy upstream beside them, the request moves there; a vLLM
    // 400 (the request's fault) still does not.
    let mut both = config();
    both.upstreams.push(raw_upstream("no-workers", &no_workers));
    both.upstreams.push(raw_upstream("cut-off", &cut_off));
    both.upstreams.push(upstream("ok", &healthy, "key-ok"));
    // Room to try all three: both failures, then the healthy one.
    both.retries.max_attempts = 3;
    let gw = start(both).await;
    for _ in 0..10 {
        let (status, headers, body) = research(&gw, r#"{"query":"q"}"#).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-upstream"], "ok");
    }
    let metrics = get_text(&gw, "/metrics").await;
    for line in [
        r#"context7_upstream_requests_total{outcome="no_capacity",upstream="no-workers"}"#,
        r#"context7_upstream_requests_total{outcome="timeout",upstream="cut-off"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    stop(gw).await;

    let bad_request = answering(
        "400 Bad Request",
        r#"{"object":"error","message":"max_tokens is too large","type":"BadRequestError","code":400}"#,
    )
    .await;
    let mut beside = config();
    beside.upstreams.push(raw_upstream("vllm", &bad_request));
    beside.upstreams.push(upstream("ok", &healthy, "key-ok"));
    let gw = start(beside).await;
    // Until the failing one has been chosen once, P2C may pick either.
    let mut passed_on = false;
    for _ in 0..20 {
        let (status, headers, body) = research(&gw, r#"{"query":"q"}"#).await;
        if headers["x-upstream"] == "vllm" {
            assert_eq!(status, 502, "{body}");
            assert_eq!(
                body,
                json!({"detail": "vLLM backend vllm answered HTTP 400: max_tokens is too large"})
            );
            passed_on = true;
            break;
        }
    }
    assert!(passed_on, "the vLLM upstream was never chosen");
    stop(gw).await;
}
