//! `POST /v1/research` end to end: the exact upstream request, the answer
//! mapping, every status code, selection around unhealthy upstreams, retries.

mod common;

use common::*;
use context7_lb::config::UpstreamConfig;
use context7_lb::sim::{SimConfig, SimUpstream};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn research_is_rewritten_into_a_chat_completion_and_mapped_back() {
    let sims = sims(vec![
        SimConfig::new("a")
            .model("served-a")
            .answer_tokens(12)
            .api_key("key-a"),
    ])
    .await;
    let mut config = config();
    config.research.system_prompt = Some("Answer as a researcher.".into());
    let gw = gateway(&sims, config).await;

    let (status, headers, body) = research(
        &gw,
        r#"{"query":"What is vLLM?","max_tokens":150,"temperature":0.2}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-upstream"], "a");

    let chats: Vec<_> = sims[0]
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(chats.len(), 1);
    let sent = &chats[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.authorization.as_deref(), Some("Bearer key-a"));
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        sent.host.as_deref(),
        Some(sims[0].address().to_string().as_str())
    );
    assert_eq!(
        sent.json(),
        json!({
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "messages": [
                {"role": "system", "content": "Answer as a researcher."},
                {"role": "user", "content": "What is vLLM?"}
            ],
            "max_tokens": 150,
            "temperature": 0.2
        })
    );

    let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["result", "model", "tokens_used", "latency_ms", "timestamp"]
    );
    assert!(
        body["result"]
            .as_str()
            .unwrap()
            .starts_with("[a] Simulated answer about: What is vLLM?"),
        "{body}"
    );
    assert_eq!(body["model"], "served-a", "the upstream's model field");
    // The simulator counts the prompt's 7 words (system + user) and 12 answer tokens.
    assert_eq!(body["tokens_used"], 19);
    assert!(body["latency_ms"].is_u64());
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "{timestamp}"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_and_per_upstream_model_are_sent() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.upstreams.push(UpstreamConfig {
        model: Some("my-served-name".into()),
        ..upstream("a", &sims[0], "k")
    });
    let gw = start(config).await;
    let (status, _, _) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 200);
    let sent = sims[0]
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .unwrap()
        .json();
    assert_eq!(sent["model"], "my-served-name");
    assert_eq!(sent["max_tokens"], 2000);
    assert_eq!(sent["temperature"], 0.7);
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "q"}]));
    stop(gw).await;
}

/// Every bound just inside and just outside, and every malformed body: the
/// exact status and body, and nothing rejected ever reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_matches_the_original_service() {
    let sims = sims(vec![SimConfig::new("a").answer_tokens(2)]).await;
    let gw = gateway(&sims, config()).await;
    let q5000 = "x".repeat(5000);
    let q5001 = "x".repeat(5001);
    let ok = |body: String| (body, 200, Value::Null);
    let field = |field: &str, kind: &str, msg: &str, ctx: Option<Value>| {
        let mut e = json!({"type": kind, "loc": ["body", field], "msg": msg});
        if let Some(ctx) = ctx {
            e["ctx"] = ctx;
        }
        json!({ "detail": [e] })
    };
    let cases: Vec<(String, u16, Value)> = vec![
        ok(r#"{"query":"q"}"#.into()),
        ok(json!({ "query": q5000 }).to_string()),
        ok(r#"{"query":"q","max_tokens":100}"#.into()),
        ok(r#"{"query":"q","max_tokens":4000}"#.into()),
        ok(r#"{"query":"q","temperature":0.0}"#.into()),
        ok(r#"{"query":"q","temperature":2.0}"#.into()),
        (
            r#"{"query":""}"#.into(),
            422,
            field(
                "query",
                "string_too_short",
                "String should have at least 1 character",
                Some(json!({"min_length": 1})),
            ),
        ),
        (
            json!({ "query": q5001 }).to_string(),
            422,
            field(
                "query",
                "string_too_long",
                "String should have at most 5000 characters",
                Some(json!({"max_length": 5000})),
            ),
        ),
        (
            r#"{"query":"q","max_tokens":99}"#.into(),
            422,
            field(
                "max_tokens",
                "greater_than_equal",
                "Input should be greater than or equal to 100",
                Some(json!({"ge": 100})),
            ),
        ),
        (
            r#"{"query":"q","max_tokens":4001}"#.into(),
            422,
            field(
                "max_tokens",
                "less_than_equal",
                "Input should be less than or equal to 4000",
                Some(json!({"le": 4000})),
            ),
        ),
        (
            r#"{"query":"q","temperature":-0.01}"#.into(),
            422,
            field(
                "temperature",
                "greater_than_equal",
                "Input should be greater than or equal to 0.0",
                Some(json!({"ge": 0.0})),
            ),
        ),
        (
            r#"{"query":"q","temperature":2.01}"#.into(),
            422,
            field(
                "temperature",
                "less_than_equal",
                "Input should be less than or equal to 2.0",
                Some(json!({"le": 2.0})),
            ),
        ),
        (
            r#"{}"#.into(),
            422,
            field("query", "missing", "Field required", None),
        ),
        (
            r#"{"query":42}"#.into(),
            422,
            field(
                "query",
                "string_type",
                "Input should be a valid string",
                None,
            ),
        ),
        (
            r#"{"query":"q","max_tokens":null}"#.into(),
            422,
            field(
                "max_tokens",
                "int_type",
                "Input should be a valid integer",
                None,
            ),
        ),
        (
            r#"{"query":"q","temperature":"hot"}"#.into(),
            422,
            field(
                "temperature",
                "float_parsing",
                "Input should be a valid number, unable to parse string as a number",
                None,
            ),
        ),
        (
            r#"["query"]"#.into(),
            422,
            json!({"detail": [{"type": "model_attributes_type", "loc": ["body"], "msg": "Input should be a valid dictionary or object to extract fields from"}]}),
        ),
        (
            r#"{"query":"q""#.into(),
            400,
            json!({"detail": "Malformed JSON in request body: EOF while parsing an object at line 1 column 12"}),
        ),
        (
            "".into(),
            400,
            json!({"detail": "Malformed JSON in request body: EOF while parsing a value at line 1 column 0"}),
        ),
    ];
    let mut accepted = 0;
    for (body, want_status, want_body) in &cases {
        let (status, _, got) = research(&gw, body).await;
        let shown: String = body.chars().take(60).collect();
        assert_eq!(status, *want_status, "{shown}: {got}");
        if *want_status == 200 {
            accepted += 1;
        } else {
            assert_eq!(&got, want_body, "{shown}");
        }
    }
    assert_eq!(
        sims[0].chat_requests(),
        accepted,
        "rejected requests never reach the upstream"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_and_body_size_are_enforced() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.limits.max_body_bytes = 2048;
    let gw = gateway(&sims, config).await;
    let url = format!("{}/v1/research", gw.url());

    let r = client()
        .post(&url)
        .header("content-type", "text/plain")
        .body(r#"{"query":"q"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Unsupported media type \"text/plain\": send application/json"})
    );

    // A charset parameter and a +json type are JSON too; a missing type is read as JSON.
    for ct in [
        Some("application/json; charset=utf-8"),
        Some("application/vnd.api+json"),
        None,
    ] {
        let mut req = client().post(&url).body(r#"{"query":"q"}"#);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 200, "{ct:?}");
    }

    // Declared too large: refused from the header alone.
    let big = json!({ "query": "x".repeat(3000) }).to_string();
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Request body larger than the limit of 2048 bytes"})
    );

    // Chunked, with no length declared: refused once it grows past the limit.
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok(big[..1500].to_string()), Ok(big[1500..].to_string())];
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(sims[0].chat_requests(), 3);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_configured_is_500() {
    let gw = start(config()).await;
    let (status, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 500);
    assert_eq!(body, json!({"detail": "vLLM backend not configured"}));
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_upstream_is_503() {
    let sims = sims(vec![
        SimConfig::new("a").cold(true),
        SimConfig::new("b").cold(true),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    let (status, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"detail": "vLLM backend unreachable: no healthy upstream (0 of 2 passed their health checks)"})
    );
    assert_eq!(sims[0].chat_requests() + sims[1].chat_requests(), 0);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_timeout_is_504() {
    let sims = sims(vec![SimConfig::new("a").ttft(Duration::from_secs(3))]).await;
    let mut config = config();
    config.timeouts.total = Duration::from_millis(300);
    let gw = gateway(&sims, config).await;
    let started = std::time::Instant::now();
    let (status, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 504);
    assert_eq!(
        body,
        json!({"detail": "vLLM backend did not answer within 300ms"})
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_become_502_and_429_passes_through() {
    let sims = sims(vec![SimConfig::new("a").errors(1.0, 500)]).await;
    let gw = gateway(&sims, config()).await;
    let (status, headers, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 502);
    assert_eq!(
        body,
        json!({"detail": "vLLM backend a answered HTTP 500: simulated failure from a"})
    );
    assert_eq!(headers["x-upstream"], "a");

    sims[0].update(|c| c.error_status = 429);
    let (status, headers, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        body,
        json!({"detail": "vLLM backend a is rate limited: simulated failure from a"})
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_chat_completions_are_502() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let gw = gateway(&sims, config()).await;
    for (raw, why) in [
        (
            r#"{"object":"list","data":[]}"#,
            "no choices[0].message.content",
        ),
        (
            r#"{"choices":[{"message":{"content":null}}]}"#,
            "choices[0].message.content is not a string",
        ),
        (
            "<html>oops</html>",
            "not JSON (expected value at line 1 column 1)",
        ),
        (
            r#"{"choices":[{"mess"#,
            "not JSON (EOF while parsing a string at line 1 column 18)",
        ),
    ] {
        sims[0].update(|c| c.raw_answer = Some(raw.into()));
        let (status, _, body) = research(&gw, r#"{"query":"q"}"#).await;
        assert_eq!(status, 502, "{raw}");
        assert_eq!(
            body,
            json!({ "detail": format!("vLLM backend a sent an invalid chat completion: {why}") }),
            "{raw}"
        );
    }
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_echoed_by_an_upstream_never_reaches_the_client() {
    let secret = "sk-live-0123456789abcdef";
    let sims = sims(vec![SimConfig::new("a").errors(1.0, 401)]).await;
    sims[0].update(|c| c.error_message = Some(format!("invalid key Bearer {secret}")));
    let mut config = config();
    config.upstreams.push(upstream("a", &sims[0], secret));
    let gw = start(config).await;
    let (status, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 502);
    assert_eq!(
        body,
        json!({"detail": "vLLM backend a answered HTTP 401: invalid key Bearer [redacted]"})
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_upstreams_are_never_chosen() {
    let sims = sims(vec![
        SimConfig::new("up"),
        SimConfig::new("cold").cold(true),
        SimConfig::new("failing"),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    // An upstream that answers its probe with 503 is unhealthy too.
    sims[2].update(|c| c.cold = true);
    let state = gw.state.clone();
    wait_until("failing upstream marked down", || {
        !state.pool.upstreams()[2].is_healthy()
    })
    .await;
    for _ in 0..20 {
        let (status, headers, _) = research(&gw, r#"{"query":"q"}"#).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-upstream"], "up");
    }
    assert_eq!(sims[0].chat_requests(), 20);
    assert_eq!(sims[1].chat_requests() + sims[2].chat_requests(), 0);

    // Once it passes its checks again it takes its share.
    sims[1].update(|c| c.cold = false);
    wait_until("cold upstream recovers", || {
        state.pool.upstreams()[1].is_healthy()
    })
    .await;
    for _ in 0..10 {
        research(&gw, r#"{"query":"q"}"#).await;
    }
    assert!(sims[1].chat_requests() > 0);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_retried_on_another_upstream() {
    let mut sims = sims(vec![SimConfig::new("dies"), SimConfig::new("lives")]).await;
    let mut config = config();
    // Slow checks: the dead upstream stays "healthy" long enough to be chosen.
    config.health_check.interval = Duration::from_secs(3600);
    let gw = gateway(&sims, config).await;
    assert_eq!(gw.state.pool.healthy_count(), 2);
    sims[0].stop();
    for _ in 0..10 {
        let (status, headers, body) = research(&gw, r#"{"query":"q"}"#).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-upstream"], "lives");
    }
    let metrics = get_text(&gw, "/metrics").await;
    let connect_errors: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"context7_upstream_requests_total{outcome="connect_error",upstream="dies"} "#,
            )
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(connect_errors >= 1, "{metrics}");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_upstreams_unreachable_is_503_naming_the_last_error() {
    let mut sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.health_check.interval = Duration::from_secs(3600);
    let gw = gateway(&sims, config).await;
    sims[0].stop();
    let (status, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 503);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("vLLM backend unreachable: upstream a: connection failed: "),
        "{detail}"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runpod_endpoints_go_through_the_runpod_api_base() {
    let sim = SimUpstream::start(SimConfig::new("runpod").api_key("rp-key"))
        .await
        .unwrap();
    let mut config = config();
    config.runpod_api_base = sim.origin();
    config.upstreams.push(UpstreamConfig {
        name: "rp".into(),
        runpod_endpoint_id: Some("abc123".into()),
        api_key: Some("rp-key".into()),
        ..UpstreamConfig::default()
    });
    let gw = start(config).await;
    assert!(gw.state.pool.upstreams()[0].is_healthy());
    let (status, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 200, "{body}");
    let requests = sim.requests();
    let probe = requests.iter().find(|r| r.method == "GET").unwrap();
    assert_eq!(probe.path, "/v2/abc123/health");
    assert_eq!(probe.authorization.as_deref(), Some("Bearer rp-key"));
    let chat = requests.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(chat.path, "/v2/abc123/openai/v1/chat/completions");
    assert_eq!(chat.authorization.as_deref(), Some("Bearer rp-key"));
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_runpod_key_marks_the_endpoint_unhealthy_with_a_reason() {
    let sim = SimUpstream::start(SimConfig::new("runpod").api_key("right"))
        .await
        .unwrap();
    let mut config = config();
    config.runpod_api_base = sim.origin();
    config.upstreams.push(UpstreamConfig {
        name: "rp".into(),
        runpod_endpoint_id: Some("abc123".into()),
        api_key: Some("wrong".into()),
        ..UpstreamConfig::default()
    });
    let gw = start(config).await;
    let up = &gw.state.pool.upstreams()[0];
    assert!(!up.is_healthy());
    assert_eq!(
        up.last_check().unwrap().detail,
        "401: the endpoint refused the API key for endpoint abc123"
    );
    stop(gw).await;
}
