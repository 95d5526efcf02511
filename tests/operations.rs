//! Operations in process: client keys, rate limits, the research cache,
//! request ids, per-upstream concurrency, extra listeners, and reloads.

mod common;

use common::*;
use context7_lb::config::{Config, UpstreamConfig};
use context7_lb::sim::SimConfig;
use serde_json::{Value, json};
use std::time::Duration;

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const KEY: &str = "client-key-0123456789";

/// `method path` with the bearer `key` and a JSON `body`, each if given.
async fn call(
    gw: &RunningGateway,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let bearer = key.map(|key| format!("Bearer {key}"));
    let mut headers = Vec::new();
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    send(gw, method, path, &headers, body).await.parts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_guard_every_route_but_ping_root_and_docs() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.auth.keys = vec![KEY.into(), "second-client-key".into()];
    let gw = gateway(&sims, config).await;
    let chat = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"q"}}]}}"#);
    let mcp_init = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let guarded: Vec<(&str, &str, Option<&str>)> = vec![
        ("POST", "/v1/research", Some(r#"{"query":"q"}"#)),
        ("POST", "/v1/chat/completions", Some(&chat)),
        ("GET", "/v1/models", None),
        ("POST", "/mcp", Some(mcp_init)),
        ("GET", "/metrics", None),
        ("GET", "/status", None),
    ];
    for (method, path, body) in &guarded {
        let (status, headers, text) = call(&gw, method, path, None, *body).await;
        assert_eq!(status, 401, "{path} without a key: {text}");
        assert_eq!(
            headers["www-authenticate"], r#"Bearer realm="context7-lb""#,
            "{path}"
        );
        let (status, headers, _) = call(&gw, method, path, Some("wrong-key-12345"), *body).await;
        assert_eq!(status, 401, "{path} with a wrong key");
        assert_eq!(
            headers["www-authenticate"],
            r#"Bearer realm="context7-lb", error="invalid_token""#
        );
        let (status, _, text) = call(&gw, method, path, Some("second-client-key"), *body).await;
        assert_ne!(status, 401, "{path} with a right key: {text}");
        assert!(status < 500, "{path}: {status} {text}");
    }
    for path in ["/ping", "/", "/docs"] {
        assert_eq!(call(&gw, "GET", path, None, None).await.0, 200, "{path}");
    }
    // Each route refuses in its own format.
    let (_, _, text) = call(&gw, "POST", "/v1/research", None, Some(r#"{"query":"q"}"#)).await;
    assert_eq!(
        json_body(&text),
        json!({"detail": "Missing API key: send Authorization: Bearer <key>"})
    );
    let (_, _, text) = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        Some("wrong-key-12345"),
        Some(&chat),
    )
    .await;
    assert_eq!(
        json_body(&text),
        json!({"error": {"message": "Invalid API key", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
    );
    let (_, _, text) = call(&gw, "POST", "/mcp", None, Some(mcp_init)).await;
    assert_eq!(json_body(&text)["error"]["code"], -32001);
    // Nothing refused reached the upstream; the accepted research and chat did.
    assert_eq!(sims[0].chat_requests(), 2);
    let (_, _, metrics) = call(&gw, "GET", "/metrics", Some(KEY), None).await;
    assert!(
        metrics.contains(r#"context7_auth_failures_total{route="/v1/research"} 3"#),
        "{metrics}"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_client_with_retry_after() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.auth.keys = vec![KEY.into(), "second-client-key".into()];
    config.rate_limit.requests_per_second = 0.5;
    config.rate_limit.burst = 3;
    let gw = gateway(&sims, config).await;
    let body = Some(r#"{"query":"q"}"#);
    for _ in 0..3 {
        assert_eq!(
            call(&gw, "POST", "/v1/research", Some(KEY), body).await.0,
            200
        );
    }
    let (status, headers, text) = call(&gw, "POST", "/v1/research", Some(KEY), body).await;
    assert_eq!(status, 429);
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        json_body(&text),
        json!({"detail": format!("Rate limit exceeded: retry after {wait} s")})
    );
    // Another client has its own bucket; health and root are never limited.
    assert_eq!(
        call(&gw, "POST", "/v1/research", Some("second-client-key"), body)
            .await
            .0,
        200
    );
    for _ in 0..10 {
        assert_eq!(call(&gw, "GET", "/ping", None, None).await.0, 200);
    }
    assert_eq!(sims[0].chat_requests(), 4);
    stop(gw).await;
}

/// Without Redis, token budgets are kept in process: research and MCP's
/// research tool spend the same budget, a key may carry its own, and a
/// cached answer costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_budgets_in_process_are_per_key_and_spent_by_every_route() {
    let sims = sims(vec![SimConfig::new("a").answer_tokens(30)]).await;
    let mut config = config();
    config.auth.keys = vec![
        KEY.into(),
        context7_lb::config::KeyEntry {
            name: Some("batch".into()),
            tokens_per_minute: Some(0),
            ..context7_lb::config::KeyEntry::plain("batch-client-key-1")
        },
    ];
    config.rate_limit.tokens_per_minute = 50;
    config.cache.enabled = true;
    let gw = gateway(&sims, config).await;
    let body = Some(r#"{"query":"What is vLLM?","temperature":0}"#);
    let (status, _, text) = call(&gw, "POST", "/v1/research", Some(KEY), body).await;
    assert_eq!(
        (status, json_body(&text)["tokens_used"].as_u64()),
        (200, Some(33))
    );
    // A cached answer spends nothing: two more hits leave 17 tokens.
    for _ in 0..2 {
        let (status, headers, _) = call(&gw, "POST", "/v1/research", Some(KEY), body).await;
        assert_eq!(
            (status, &headers["x-cache"]),
            (200, &"HIT".parse::<reqwest::header::HeaderValue>().unwrap())
        );
    }
    let session = common::mcp::open_session(&WithKey(&gw, KEY)).await;
    let spent = common::mcp::research_tool(
        &WithKey(&gw, KEY),
        &session,
        json!({"query": "What is vLLM?", "temperature": 0.5}),
    )
    .await;
    assert_eq!(spent["tokens_used"], 33, "MCP spends the same budget");
    let (status, headers, text) = call(
        &gw,
        "POST",
        "/v1/research",
        Some(KEY),
        Some(r#"{"query":"q"}"#),
    )
    .await;
    assert_eq!(status, 429, "{text}");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // 66 of 50 spent: 16 tokens of debt plus one, at 1.2 s a token.
    assert!((20..=21).contains(&wait), "{wait}");
    assert_eq!(
        json_body(&text)["detail"],
        format!(
            "Token limit exceeded: this key's tokens per minute are spent; retry after {wait} s"
        )
    );
    let (status, _, _) = call(
        &gw,
        "POST",
        "/v1/research",
        Some("batch-client-key-1"),
        Some(r#"{"query":"q"}"#),
    )
    .await;
    assert_eq!(status, 200, "the batch key has no token limit");
    assert_eq!(
        metric(
            &WithKey(&gw, KEY),
            "context7_rate_limited_total{limit=\"tokens\",route=\"/v1/research\"}"
        )
        .await,
        1.0
    );
    stop(gw).await;
}

/// A stream whose client did not ask for usage is charged all the same: the
/// gateway asks the upstream for it and takes the usage chunk out of what
/// the client receives; a client that asked gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_spend_the_token_budget_whether_or_not_they_ask_for_usage() {
    let sims = sims(vec![SimConfig::new("a").answer_tokens(20)]).await;
    let mut config = config();
    config.rate_limit.tokens_per_minute = 30;
    let gw = gateway(&sims, config).await;
    let stream = |usage: bool| {
        let mut body = json!({"model": MODEL, "stream": true,
                              "messages": [{"role": "user", "content": "one two three"}]});
        if usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&body)
            .send()
    };
    let (text, _) = read_stream(stream(false).await.unwrap(), std::time::Instant::now()).await;
    let chunks = data_events(&text);
    assert_eq!(chunks.last(), Some(&"[DONE]"), "{text}");
    assert!(
        !text.contains("\"usage\""),
        "the client did not ask for usage: {text}"
    );
    for chunk in &chunks[..chunks.len() - 1] {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        assert!(
            !chunk["choices"].as_array().unwrap().is_empty(),
            "no usage-only chunk: {chunk}"
        );
    }
    let upstream_body: Value =
        serde_json::from_slice(&sims[0].requests().last().unwrap().body).unwrap();
    assert_eq!(upstream_body["stream_options"]["include_usage"], true);
    // 23 of 30 spent; the next stream is allowed and overspends.
    let (text, _) = read_stream(stream(true).await.unwrap(), std::time::Instant::now()).await;
    assert!(
        text.contains("\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":20"),
        "{text}"
    );
    let refused = stream(false).await.unwrap();
    assert_eq!(refused.status(), 429);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "tokens_per_minute_exceeded");
    stop(gw).await;
}

/// A client that leaves a stream before its usage chunk still spends its
/// budget: a token per 4 bytes of its request and one per chunk relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_left_early_is_charged_an_estimate() {
    let sims = sims(vec![
        SimConfig::new("a")
            .answer_tokens(400)
            .tokens_per_second(200.0),
    ])
    .await;
    let mut config = config();
    config.rate_limit.tokens_per_minute = 60;
    let gw = gateway(&sims, config).await;
    let body = json!({"model": MODEL, "stream": true,
                      "messages": [{"role": "user", "content": "tell me everything"}]});
    let mut response = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = std::time::Instant::now();
    let mut received = 0;
    while started.elapsed() < Duration::from_millis(500) {
        received += response.chunk().await.unwrap().map_or(0, |c| c.len());
    }
    assert!(received > 0);
    drop(response);
    // Refused once the gateway noticed the client left and charged it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "q"}]}))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            let error: Value = r.json().await.unwrap();
            assert_eq!(error["error"]["code"], "tokens_per_minute_exceeded");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never charged: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_rate_limit_is_per_address() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.rate_limit.requests_per_second = 0.5;
    config.rate_limit.burst = 2;
    let gw = gateway(&sims, config).await;
    let chat = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"q"}}]}}"#);
    assert_eq!(
        call(&gw, "POST", "/v1/chat/completions", None, Some(&chat))
            .await
            .0,
        200
    );
    assert_eq!(call(&gw, "GET", "/v1/models", None, None).await.0, 200);
    let (status, headers, text) =
        call(&gw, "POST", "/v1/chat/completions", None, Some(&chat)).await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(json_body(&text)["error"]["code"], "rate_limit_exceeded");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_hits_misses_bypasses_and_coalesces() {
    let sims = sims(vec![SimConfig::new("a").ttft(Duration::from_millis(300))]).await;
    let mut config = config();
    config.cache.enabled = true;
    let gw = gateway(&sims, config).await;
    let research = |body: &'static str, no_cache: bool| {
        let mut req = client()
            .post(format!("{}/v1/research", gw.url()))
            .header("content-type", "application/json")
            .body(body);
        if no_cache {
            req = req.header("cache-control", "no-cache");
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let cache = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (status, cache, r.json::<Value>().await.unwrap())
        }
    };
    // Five identical requests at once: one upstream call.
    let q = r#"{"query":"What is  vLLM?","temperature":0}"#;
    let answers = futures::future::join_all((0..5).map(|_| research(q, false))).await;
    assert_eq!(sims[0].chat_requests(), 1, "concurrent misses coalesced");
    let mut outcomes: Vec<_> = answers.iter().map(|a| a.1.clone().unwrap()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["HIT", "HIT", "HIT", "HIT", "MISS"]);
    assert!(
        answers
            .iter()
            .all(|a| a.0 == 200 && a.2["result"] == answers[0].2["result"])
    );
    // The same query, normalised (spacing, 0 vs 0.0): a hit, fast.
    let (status, cache, body) =
        research(r#"{"query":" What is vLLM? ","temperature":0.0}"#, false).await;
    assert_eq!((status, cache.as_deref()), (200, Some("HIT")));
    assert!(body["latency_ms"].as_u64().unwrap() < 100);
    assert_eq!(sims[0].chat_requests(), 1);
    // no-cache goes upstream (and refreshes the entry).
    let (status, cache, _) = research(q, true).await;
    assert_eq!((status, cache.as_deref()), (200, Some("BYPASS")));
    assert_eq!(sims[0].chat_requests(), 2);
    // Above the temperature ceiling nothing is cached.
    for _ in 0..2 {
        let (status, cache, _) =
            research(r#"{"query":"What is vLLM?","temperature":0.7}"#, false).await;
        assert_eq!((status, cache), (200, None));
    }
    assert_eq!(sims[0].chat_requests(), 4);
    // Failures are not cached.
    sims[0].update(|c| c.error_rate = 1.0);
    let (status, cache, _) = research(r#"{"query":"fails","temperature":0}"#, false).await;
    assert_eq!((status, cache.as_deref()), (502, Some("MISS")));
    sims[0].update(|c| c.error_rate = 0.0);
    let (status, cache, _) = research(r#"{"query":"fails","temperature":0}"#, false).await;
    assert_eq!((status, cache.as_deref()), (200, Some("MISS")));
    let metrics = get_text(&gw, "/metrics").await;
    assert!(
        metrics.contains(r#"context7_cache_lookups_total{result="HIT"} 5"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"context7_cache_lookups_total{result="BYPASS"} 1"#));
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_and_sent_upstream() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let gw = gateway(&sims, config()).await;
    let r = client()
        .post(format!("{}/v1/research", gw.url()))
        .header("content-type", "application/json")
        .header("x-request-id", "trace-42")
        .body(r#"{"query":"q"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let sent = sims[0]
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .unwrap();
    assert_eq!(sent.request_id.as_deref(), Some("trace-42"));
    // A missing or unsafe id is replaced by a fresh one.
    for given in [None, Some("bad id with spaces\t")] {
        let mut req = client().get(format!("{}/ping", gw.url()));
        if let Some(given) = given {
            req = req.header("x-request-id", given);
        }
        let r = req.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    // Streams carry it too.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-request-id", "stream-7")
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "q"}], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "stream-7");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_upstream_sends_traffic_elsewhere_or_503() {
    let sims = sims(vec![
        SimConfig::new("small").ttft(Duration::from_millis(400)),
        SimConfig::new("spare").ttft(Duration::from_millis(400)),
    ])
    .await;
    let mut config = config();
    for sim in &sims {
        let name = sim.config().name;
        config.upstreams.push(UpstreamConfig {
            max_concurrent: 1,
            ..upstream(&name, sim, "k")
        });
    }
    let gw = start(config).await;
    let answers = futures::future::join_all(
        (0..3).map(|_| call(&gw, "POST", "/v1/research", None, Some(r#"{"query":"q"}"#))),
    )
    .await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503]);
    let busy = answers.iter().find(|a| a.0 == 503).unwrap();
    assert_eq!(
        json_body(&busy.2),
        json!({"detail": "vLLM backend busy: every upstream is at its max_concurrent limit"})
    );
    assert_eq!(sims[0].chat_requests(), 1);
    assert_eq!(sims[1].chat_requests(), 1);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_listeners_serve_only_their_routes() {
    // Reserved until the gateway listens there too.
    let (metrics_port, health_port) = (reserve(), reserve());
    let (metrics_at, health_at) = (metrics_port.address(), health_port.address());
    let mut config = config();
    config.auth.keys = vec![KEY.into()];
    config.metrics_listen = Some(metrics_at.to_string());
    config.health_listen = Some(health_at.to_string());
    let gw = start(config).await;
    drop((metrics_port, health_port));
    let get = |url: String| async move { reqwest::get(url).await.unwrap().status().as_u16() };
    assert_eq!(
        get(format!("http://{metrics_at}/metrics")).await,
        200,
        "no key needed there"
    );
    assert_eq!(get(format!("http://{metrics_at}/status")).await, 200);
    assert_eq!(get(format!("http://{metrics_at}/ping")).await, 404);
    assert_eq!(get(format!("http://{health_at}/ping")).await, 200);
    assert_eq!(get(format!("http://{health_at}/metrics")).await, 404);
    assert_eq!(get(format!("http://{health_at}/")).await, 404);
    assert_eq!(
        get(format!("{}/metrics", gw.url())).await,
        404,
        "moved off the main listener"
    );
    assert_eq!(get(format!("{}/ping", gw.url())).await, 200);
    stop(gw).await;
}

fn write_config(path: &std::path::Path, config: &str) {
    std::fs::write(path, config).unwrap();
}

fn yaml_for(sims: &[(&str, String, f64)]) -> String {
    let mut yaml = String::from(
        "listen: \"127.0.0.1:0\"\nthreads: 1\nhealth_check:\n  interval: 200ms\n  timeout: 500ms\nupstreams:\n",
    );
    for (name, url, weight) in sims {
        yaml.push_str(&format!(
            "  - name: {name}\n    base_url: \"{url}\"\n    weight: {weight}\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_no_request_and_keeps_upstream_state() {
    let sims = sims(vec![
        SimConfig::new("a").ttft(Duration::from_millis(5)),
        SimConfig::new("b").ttft(Duration::from_millis(5)),
        SimConfig::new("c").ttft(Duration::from_millis(5)),
    ])
    .await;
    let dir = TempDir::new("reload");
    let file = dir.join("gateway.yaml");
    write_config(
        &file,
        &yaml_for(&[
            ("a", sims[0].base_url(), 1.0),
            ("b", sims[1].base_url(), 1.0),
        ]),
    );
    let config = Config::load_file(&file).unwrap();
    let gw = start(config).await;
    let reloader = gw.reloader(file.clone());
    let before = gw.current();
    // A mark only `a`'s live state can carry through the reloads.
    let a_before = before.pool.upstreams()[0].clone();
    before
        .pool
        .begin(&a_before)
        .finish(context7_lb::pool::Outcome::Failure("state marker".into()));

    let reloads = async {
        for round in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            // Alternately add c (and reweigh a), and remove b.
            let yaml = if round % 2 == 0 {
                yaml_for(&[
                    ("a", sims[0].base_url(), 2.0),
                    ("b", sims[1].base_url(), 1.0),
                    ("c", sims[2].base_url(), 1.0),
                ])
            } else {
                yaml_for(&[
                    ("a", sims[0].base_url(), 1.0),
                    ("c", sims[2].base_url(), 1.0),
                ])
            };
            write_config(&file, &yaml);
            reloader.reload().expect("valid reload");
        }
    };
    let (answers, ()) = tokio::join!(load(&gw, 6, Duration::from_millis(1200), 5000), reloads);
    let failed: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(answers.len() > 50, "{}", answers.len());
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );

    let after = gw.current();
    let names: Vec<_> = after
        .pool
        .upstreams()
        .iter()
        .map(|u| u.name.clone())
        .collect();
    assert_eq!(names, ["a", "c"]);
    // `a` stayed the same endpoint throughout: its checks and estimate carried on.
    let a_after = &after.pool.upstreams()[0];
    assert!(a_after.is_healthy() && a_after.has_latency_sample());
    assert_eq!(a_after.last_error().unwrap().message, "state marker");
    assert_eq!(a_after.in_flight(), 0);
    assert!(after.pool.upstreams()[1].last_error().is_none());
    assert!(
        sims[2].chat_requests() > 0,
        "the added upstream got traffic"
    );

    // A broken file is refused, naming the problem, and the running state stays.
    write_config(
        &file,
        "upstreams:\n  - name: a\n    base_url: \"ftp://nowhere\"\n",
    );
    let Err(error) = reloader.reload() else {
        panic!("a broken file was accepted");
    };
    assert_eq!(
        error.problems[0].to_string(),
        "upstreams[0].base_url: \"ftp://nowhere\" must start with http:// or https://"
    );
    assert!(std::sync::Arc::ptr_eq(&gw.current(), &after));
    stop(gw).await;
}

/// Keys fail closed: a `keys_file` emptied (or left with comments only) is
/// refused at start and on reload, the running keys stay in force, and the
/// same key twice is refused rather than given another key's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_keys_file_keeps_the_running_keys() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let dir = TempDir::new("keys");
    let keys = dir.join("keys");
    let file = dir.join("gateway.yaml");
    std::fs::write(&keys, format!("# client keys\n{KEY}\n")).unwrap();
    let yaml = format!(
        "{}auth:\n  keys_file: \"{}\"\n",
        yaml_for(&[("a", sims[0].base_url(), 1.0)]),
        keys.display()
    );
    write_config(&file, &yaml);
    let gw = start(Config::load_file(&file).unwrap()).await;
    let reloader = gw.reloader(file.clone());
    let running = gw.current();
    let file_name = keys.display().to_string();
    for emptied in ["", "# rotated, keys to follow\n\n"] {
        std::fs::write(&keys, emptied).unwrap();
        let Err(error) = reloader.reload() else {
            panic!("an empty keys file was accepted: {emptied:?}");
        };
        assert_eq!(
            error.problems[0].to_string(),
            format!(
                "auth.keys_file: {file_name}: holds no key (one per line; `#` starts a \
                 comment); without keys every route would open, so remove keys_file to turn \
                 authentication off"
            )
        );
        assert!(std::sync::Arc::ptr_eq(&gw.current(), &running));
        for path in ["/status", "/metrics", "/v1/models"] {
            let (status, _, _) = call(&gw, "GET", path, None, None).await;
            assert_eq!(status, 401, "{path} opened after {emptied:?}");
            let (status, _, _) = call(&gw, "GET", path, Some(KEY), None).await;
            assert_eq!(status, 200, "{path} with the running key");
        }
    }
    // And at start: `--check` and `load_file` refuse it the same way.
    assert!(Config::load_file(&file).is_err());

    // One key twice, in `keys` and in the file: refused, never a shared identity.
    std::fs::write(&keys, format!("{KEY}\n")).unwrap();
    write_config(&file, &format!("{yaml}  keys: [\"{KEY}\"]\n"));
    let Err(error) = reloader.reload() else {
        panic!("a key given twice was accepted");
    };
    assert_eq!(
        error.problems[0].to_string(),
        "auth: key 2 is the same as key 1 (counting auth.keys, then keys_file): each key \
         must be given once"
    );
    stop(gw).await;
}

/// An upstream's key goes only to its own origin: a `health_url` elsewhere is
/// probed without it, unless `send_key_to_health_url` says otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_url_elsewhere_gets_no_key_unless_asked() {
    let sims = sims(vec![
        SimConfig::new("api"),
        SimConfig::new("probe-without"),
        SimConfig::new("probe-with"),
    ])
    .await;
    let mut config = config();
    for (name, probe, opt_in) in [("plain", &sims[1], false), ("opted", &sims[2], true)] {
        let mut up = upstream(name, &sims[0], "upstream-secret-key");
        up.health_url = Some(format!("{}/ping", probe.origin()));
        up.send_key_to_health_url = opt_in;
        config.upstreams.push(up);
    }
    let gw = start(config).await;
    let probes = |sim: &context7_lb::sim::SimUpstream| {
        sim.requests()
            .into_iter()
            .filter(|r| r.path == "/ping")
            .map(|r| r.authorization)
            .collect::<Vec<_>>()
    };
    let without = probes(&sims[1]);
    assert!(!without.is_empty());
    assert!(without.iter().all(Option::is_none), "{without:?}");
    let with = probes(&sims[2]);
    assert!(!with.is_empty());
    assert!(
        with.iter()
            .all(|a| a.as_deref() == Some("Bearer upstream-secret-key")),
        "{with:?}"
    );
    stop(gw).await;
}

/// A reload applies what it accepts: an upstream it removes leaves no gauge
/// behind (a stale `routable 1` would hide the "no routable upstream" alert),
/// and new client limits hold for the connections accepted after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_removes_gauges_and_applies_client_limits() {
    let sims = sims(vec![SimConfig::new("a"), SimConfig::new("b")]).await;
    let dir = TempDir::new("reload-applies");
    let file = dir.join("gateway.yaml");
    let both = yaml_for(&[
        ("a", sims[0].base_url(), 1.0),
        ("b", sims[1].base_url(), 1.0),
    ]);
    write_config(&file, &both);
    let gw = start(Config::load_file(&file).unwrap()).await;
    let routable_b = r#"context7_upstream_routable{upstream="b"}"#;
    assert!(get_text(&gw, "/metrics").await.contains(routable_b));

    let only_a = format!(
        "{}limits:\n  client_header_timeout: 1s\n",
        yaml_for(&[("a", sims[0].base_url(), 1.0)])
    );
    write_config(&file, &only_a);
    gw.reloader(file.clone()).reload().expect("valid reload");
    let text = get_text(&gw, "/metrics").await;
    for gauge in [
        "context7_upstream_routable",
        "context7_upstream_healthy",
        "context7_upstream_in_flight",
        "context7_upstream_latency_estimate_seconds",
    ] {
        assert!(
            !text.contains(&format!("{gauge}{{upstream=\"b\"}}")),
            "{gauge} of the removed upstream is still exported"
        );
        assert!(
            text.contains(&format!("{gauge}{{upstream=\"a\"}}")),
            "{gauge}"
        );
    }
    // The new head deadline (10 s before) holds on a new connection: only the
    // connection guard can enforce it, since the head never completes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(gw.address).await.unwrap();
    slow.write_all(b"GET /ping HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the guard kept the old 10 s deadline");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("not received within 1s"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
    stop(gw).await;
}
