//! The simulated vLLM upstream behaves like vLLM: OpenAI answers, SSE streams
//! paced token by token and ending in `[DONE]`, models, health, cold mode.

mod common;

use common::*;
use context7_lb::sim::{SimConfig, SimUpstream};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_paced_and_end_with_done() {
    let sim = SimUpstream::start(
        SimConfig::new("s")
            .ttft(Duration::from_millis(100))
            .tokens_per_second(50.0)
            .answer_tokens(6),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                      "stream": true, "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (text, arrivals) = read_stream(response, started).await;
    let events = data_events(&text);
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content.split_whitespace().count(), 6);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    // First byte after the time to first token; the rest spread over ~5 gaps of 20 ms.
    assert!(arrivals[0] >= Duration::from_millis(100), "{arrivals:?}");
    assert!(
        *arrivals.last().unwrap() - arrivals[0] >= Duration::from_millis(80),
        "{arrivals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_cold_mode_and_keys() {
    let sim = SimUpstream::start(SimConfig::new("s").model("served").api_key("k"))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let ping = |path: &'static str| c.get(format!("{}{path}", sim.origin())).send();
    assert_eq!(ping("/ping").await.unwrap().status().as_u16(), 200);
    assert_eq!(ping("/health").await.unwrap().status().as_u16(), 200);
    sim.update(|c| c.cold = true);
    assert_eq!(ping("/ping").await.unwrap().status().as_u16(), 204);
    assert_eq!(ping("/health").await.unwrap().status().as_u16(), 503);

    let r = c
        .get(format!("{}/models", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let models = fetch_json(&format!("{}/models", sim.base_url()), Some("k")).await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "served");

    let health = fetch_json(&format!("{}/v2/ep/health", sim.origin()), Some("k")).await;
    assert_eq!(health["workers"]["running"], 0);
    assert!(health["jobs"]["inQueue"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_spread_evenly_at_the_configured_rate() {
    let sim = SimUpstream::start(SimConfig::new("s").errors(0.25, 503))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let mut failed = 0;
    for _ in 0..40 {
        let r = c
            .post(format!("{}/chat/completions", sim.base_url()))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 503 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["message"], "simulated failure from s");
            failed += 1;
        }
    }
    assert_eq!(failed, 10);
}
