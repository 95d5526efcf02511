//! The OpenAI-compatible front door end to end: passthrough, unbuffered
//! streaming, mid-stream failure, client disconnect, model routing and
//! aliases, discovery, accounting, and every error in OpenAI's format.

mod common;

use common::*;
use context7_lb::config::{OneOrMany, UpstreamConfig};
use context7_lb::sim::{SimConfig, SimUpstream};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// POSTs `body` as JSON with a key of the client's own, which must never
/// reach an upstream.
async fn post(
    gw: &RunningGateway,
    path: &str,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer the-clients-own-key"),
    ];
    send(gw, "POST", path, &headers, Some(body)).await.parts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_passes_through_with_the_upstreams_key() {
    let sims = sims(vec![SimConfig::new("a").answer_tokens(4)]).await;
    let gw = gateway(&sims, config()).await;
    // Unusual spacing and an unknown field: the body must reach the upstream byte for byte.
    let body = format!(
        r#"{{ "model" : "{MODEL}", "messages":[{{"role":"user","content":"hi"}}], "max_tokens": 4, "x_custom": [1,2] }}"#
    );
    let (status, headers, text) = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["x-upstream"], "a");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"], "[a] Simulated answer about:",
        "four tokens, as max_tokens asked"
    );
    let sent = sims[0]
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.authorization.as_deref(), Some("Bearer key-a"));
    assert_eq!(sent.body, body.as_bytes());
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completions_go_to_the_completions_path() {
    let sims = sims(vec![SimConfig::new("a").answer_tokens(3)]).await;
    let gw = gateway(&sims, config()).await;
    let (status, _, text) = post(
        &gw,
        "/v1/completions",
        &format!(r#"{{"model":"{MODEL}","prompt":"Once upon a time"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "[a] Simulated answer");
    assert_eq!(sims[0].requests().last().unwrap().path, "/v1/completions");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_arrive_chunk_by_chunk_as_the_upstream_sends_them() {
    let sims = sims(vec![
        SimConfig::new("a")
            .ttft(Duration::from_millis(50))
            .tokens_per_second(10.0)
            .answer_tokens(5),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    let started = Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "stream": true, "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let (text, arrivals) = read_stream(r, started).await;
    let events = events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // Five tokens 100 ms apart: had the gateway buffered, everything would
    // arrive at once at the end.
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(350), "{arrivals:?}");
    let distinct = arrivals
        .windows(2)
        .filter(|w| w[1] - w[0] >= Duration::from_millis(60))
        .count();
    assert!(distinct >= 4, "{arrivals:?}");
    // Accounting from the final usage chunk, and the first-token histogram.
    let metrics = get_text(&gw, "/metrics").await;
    assert!(metrics.contains(&format!(
        r#"context7_upstream_tokens_total{{kind="completion",model="{MODEL}",upstream="a"}} 5"#
    )));
    assert!(metrics.contains(r#"context7_time_to_first_token_seconds_count{upstream="a"} 1"#));
    assert!(
        metrics.contains(
            r#"context7_http_requests_total{route="/v1/chat/completions",status="200"} 1"#
        )
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_mid_stream_ends_with_an_error_event_and_done() {
    let sims = sims(vec![
        SimConfig::new("a")
            .tokens_per_second(100.0)
            .answer_tokens(10),
    ])
    .await;
    sims[0].update(|c| c.cut_stream_after = Some(3));
    let gw = gateway(&sims, config()).await;
    let started = Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (text, _) = read_stream(r, started).await;
    assert!(started.elapsed() < Duration::from_secs(3), "no hang");
    let events = events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["type"], "upstream_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Upstream a failed mid-stream: "),
        "{error}"
    );
    // The three tokens sent before the crash reached the client.
    let tokens = events
        .iter()
        .filter(|e| e.contains("\"delta\":{\"content\""))
        .count();
    assert_eq!(tokens, 3, "{text}");
    let up = &gw.state.pool.upstreams()[0];
    assert_eq!(up.in_flight(), 0);
    assert!(up.last_error().unwrap().message.starts_with("stream broke"));
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_cancels_the_upstream_request() {
    let sims = sims(vec![
        SimConfig::new("a")
            .tokens_per_second(20.0)
            .answer_tokens(200),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": true}))
        .send()
        .await
        .unwrap();
    r.chunk().await.unwrap();
    r.chunk().await.unwrap();
    drop(r);
    let sim = &sims[0];
    wait_until("the upstream stream was cancelled", || {
        sim.cancelled_streams() == 1
    })
    .await;
    let state = gw.state.clone();
    wait_until("in-flight back to zero", || {
        state.pool.upstreams()[0].in_flight() == 0
    })
    .await;
    let metrics = get_text(&gw, "/metrics").await;
    assert!(metrics.contains("context7_streams_cancelled_total 1"));
    stop(gw).await;
}

fn strict(name: &str, model: &str) -> SimConfig {
    let mut c = SimConfig::new(name).model(model);
    c.strict_model = true;
    c
}

async fn routed_gateway(sims: &[SimUpstream]) -> RunningGateway {
    let mut config = config();
    config.health_check.discover_models = false;
    // Rotation, so that an alias's two upstreams both get requests to check.
    config.pool.strategy = context7_lb::config::Strategy::RoundRobin;
    for sim in sims {
        let c = sim.config();
        config.upstreams.push(UpstreamConfig {
            models: vec![c.model.clone()],
            ..upstream(&c.name, sim, &format!("key-{}", c.name))
        });
    }
    config.model_aliases.insert(
        "llama".into(),
        OneOrMany::Many(vec!["alpha-model".into(), "beta-model".into()]),
    );
    config
        .model_aliases
        .insert("alpha".into(), OneOrMany::One("alpha-model".into()));
    start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_only_to_upstreams_serving_their_model() {
    let sims = sims(vec![strict("a", "alpha-model"), strict("b", "beta-model")]).await;
    let gw = routed_gateway(&sims).await;
    for _ in 0..5 {
        for (model, upstream) in [("alpha-model", "a"), ("beta-model", "b"), ("alpha", "a")] {
            let (status, headers, text) = post(
                &gw,
                "/v1/chat/completions",
                &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"q"}}]}}"#),
            )
            .await;
            assert_eq!(status, 200, "{model}: {text}");
            assert_eq!(headers["x-upstream"], upstream, "{model}");
        }
    }
    // An alias with two targets reaches both, each under the name it serves.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (status, headers, text) = post(
            &gw,
            "/v1/chat/completions",
            r#"{"model":"llama","messages":[{"role":"user","content":"q"}]}"#,
        )
        .await;
        assert_eq!(status, 200, "{text}");
        seen.insert(headers["x-upstream"].to_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let sent_to_b = sims[1]
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .unwrap();
    assert_eq!(sent_to_b.json()["model"], "beta-model");

    let (status, _, text) = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"gpt-17","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        json_body(&text),
        json!({"error": {"message": "The model `gpt-17` does not exist.", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
    );

    let models: Value = get_json(&gw, "/v1/models").await;
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha-model", "beta-model", "alpha", "llama"]);
    assert_eq!(models["data"][0]["object"], "model");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_discovered_but_never_through_the_runpod_queue() {
    let vllm = SimUpstream::start(SimConfig::new("box").model("found-model"))
        .await
        .unwrap();
    let runpod = SimUpstream::start(SimConfig::new("rp").api_key("rp-key"))
        .await
        .unwrap();
    let mut config = config();
    config.runpod_api_base = runpod.origin();
    config.upstreams.push(upstream("box", &vllm, "k"));
    config.upstreams.push(UpstreamConfig {
        name: "rp".into(),
        runpod_endpoint_id: Some("ep".into()),
        api_key: Some("rp-key".into()),
        ..UpstreamConfig::default()
    });
    let gw = start(config).await;
    let state = gw.state.clone();
    wait_until("discovery", || {
        state.pool.upstreams()[0].served_models() == ["found-model"]
    })
    .await;
    let models: Value = get_json(&gw, "/v1/models").await;
    assert_eq!(models["data"][0]["id"], "found-model");
    let (status, headers, _) = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"found-model","messages":[{"role":"user","content":"q"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-upstream"], "box");
    // The RunPod endpoint's models are unknown, yet it gets nothing for a
    // model another upstream is known to serve.
    for _ in 0..10 {
        let (_, headers, _) = post(
            &gw,
            "/v1/chat/completions",
            r#"{"model":"found-model","messages":[{"role":"user","content":"q"}]}"#,
        )
        .await;
        assert_eq!(headers["x-upstream"], "box");
    }
    assert!(
        runpod
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/models")),
        "/models through RunPod's queue is a billed job"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_in_either_vllm_format_are_passed_on_normalised() {
    let sims = sims(vec![strict("a", "alpha-model")]).await;
    let mut config = config();
    config.health_check.discover_models = false;
    config.upstreams.push(upstream("a", &sims[0], "k"));
    let gw = start(config).await;
    // The upstream serves anything as far as the gateway knows; its flat 404 comes back.
    let (status, headers, text) = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"other","messages":[{"role":"user","content":"q"}]}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-upstream"], "a");
    assert_eq!(
        json_body(&text),
        json!({"error": {"message": "The model `other` does not exist.", "type": "NotFoundError", "param": null, "code": 404}})
    );
    // Nested form, and a 429 with its Retry-After.
    sims[0].update(|c| {
        c.error_rate = 1.0;
        c.error_status = 429;
    });
    let (status, headers, text) = post(
        &gw,
        "/v1/chat/completions",
        r#"{"model":"alpha-model","messages":[{"role":"user","content":"q"}]}"#,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        json_body(&text)["error"]["message"],
        "simulated failure from a"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_on_another_upstream() {
    let sims = sims(vec![
        SimConfig::new("down").errors(1.0, 503),
        SimConfig::new("up"),
    ])
    .await;
    let mut config = config();
    config.pool.strategy = context7_lb::config::Strategy::RoundRobin;
    let gw = gateway(&sims, config).await;
    let mut tried_down = Vec::new();
    for stream in [false, true, false, true] {
        let (status, headers, text) = post(
            &gw,
            "/v1/chat/completions",
            &format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"q"}}],"stream":{stream}}}"#),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(headers["x-upstream"], "up");
        tried_down.push(sims[0].chat_requests());
    }
    // Round robin puts every request first on "down" (plain and streamed
    // alike) until its third failure in a row ejects it.
    assert_eq!(tried_down, [1, 2, 3, 3]);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_and_never_reach_an_upstream() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.limits.max_body_bytes = 512;
    let gw = gateway(&sims, config).await;
    let cases: Vec<(&str, String, u16, Value)> = vec![
        (
            "application/json",
            r#"{"model":"#.into(),
            400,
            json!({"error": {"message": "We could not parse the JSON body of your request: EOF while parsing a value at line 1 column 9", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
        (
            "application/json",
            r#"{"messages":[]}"#.into(),
            400,
            json!({"error": {"message": "You must provide a model parameter.", "type": "invalid_request_error", "param": "model", "code": null}}),
        ),
        (
            "application/json",
            r#"{"model":7}"#.into(),
            400,
            json!({"error": {"message": "`model` must be a non-empty string.", "type": "invalid_request_error", "param": "model", "code": null}}),
        ),
        (
            "application/json",
            format!(r#"{{"model":"{MODEL}","stream":"yes"}}"#),
            400,
            json!({"error": {"message": "`stream` must be a boolean.", "type": "invalid_request_error", "param": "stream", "code": null}}),
        ),
        (
            "application/json",
            "[1]".into(),
            400,
            json!({"error": {"message": "The request body must be a JSON object.", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
        (
            "text/plain",
            format!(r#"{{"model":"{MODEL}"}}"#),
            415,
            json!({"error": {"message": "Unsupported media type \"text/plain\": send application/json.", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
        (
            "application/json",
            format!(r#"{{"model":"{MODEL}","prompt":"{}"}}"#, "x".repeat(600)),
            413,
            json!({"error": {"message": "The request body is larger than the limit of 512 bytes.", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
    ];
    for (content_type, body, want_status, want) in cases {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want_status, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap(), want, "{body}");
    }
    assert_eq!(sims[0].chat_requests(), 0);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_no_health_and_timeouts_are_openai_errors() {
    let gw = start(config()).await;
    let chat = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"q"}}]}}"#);
    let (status, _, text) = post(&gw, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 503);
    assert_eq!(
        json_body(&text),
        json!({"error": {"message": "No upstream is configured.", "type": "service_unavailable", "param": null, "code": null}})
    );
    stop(gw).await;

    let sims = sims(vec![SimConfig::new("cold").cold(true)]).await;
    let gw = gateway(&sims, config()).await;
    let (status, _, text) = post(&gw, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 503);
    assert_eq!(
        json_body(&text)["error"]["message"],
        format!("No healthy upstream serves `{MODEL}` right now.")
    );
    stop(gw).await;

    let slow = SimUpstream::start(SimConfig::new("slow").ttft(Duration::from_secs(3)))
        .await
        .unwrap();
    let mut config = config();
    config.timeouts.total = Duration::from_millis(300);
    let gw = gateway(std::slice::from_ref(&slow), config).await;
    let (status, _, text) = post(&gw, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 504);
    assert_eq!(
        json_body(&text),
        json!({"error": {"message": "No answer within 300ms.", "type": "timeout", "param": null, "code": null}})
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_and_prompts_are_refused_before_any_upstream_call() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let gw = gateway(&sims, config()).await;
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": MODEL}),
            "messages",
            "You must provide `messages`.",
        ),
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": []}),
            "messages",
            "`messages` must not be empty.",
        ),
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [[null, null]]}),
            "messages",
            "`messages` must be an array of message objects.",
        ),
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": "hi"}),
            "messages",
            "`messages` must be an array of message objects.",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL}),
            "prompt",
            "You must provide a `prompt`.",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": null}),
            "prompt",
            "`prompt` must be a string, or a non-empty array of strings, of token ids or of arrays of token ids.",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": []}),
            "prompt",
            "`prompt` must be a string, or a non-empty array of strings, of token ids or of arrays of token ids.",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": [1, "a"]}),
            "prompt",
            "`prompt` must be a string, or a non-empty array of strings, of token ids or of arrays of token ids.",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": [-1]}),
            "prompt",
            "`prompt` must be a string, or a non-empty array of strings, of token ids or of arrays of token ids.",
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": [[]]}),
            "prompt",
            "`prompt` must be a string, or a non-empty array of strings, of token ids or of arrays of token ids.",
        ),
    ];
    for (path, body, param, message) in cases {
        let r = client()
            .post(format!("{}{path}", gw.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}}),
            "{body}"
        );
    }
    assert_eq!(sims[0].chat_requests(), 0, "nothing reached the upstream");
    // What vLLM takes passes: texts, token ids, lists of them (5.0 is a whole number).
    for prompt in [
        json!("vLLM is"),
        json!(["a", "b"]),
        json!([1, 2.0]),
        json!([[1, 2], [3]]),
    ] {
        let r = client()
            .post(format!("{}/v1/completions", gw.url()))
            .json(&json!({"model": MODEL, "prompt": prompt, "max_tokens": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{prompt}");
    }
    stop(gw).await;
}
