//! The one upstream call, seen from outside: every front door's traffic is
//! in the upstream metrics, counted once with the same labels, and MCP's
//! `research` tool and `POST /v1/research` share one cache.

mod common;

use common::mcp::{open_session, research_tool};
use common::*;
use context7_lb::app::RunningGateway;
use context7_lb::sim::SimConfig;
use serde_json::{Value, json};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// `context7_upstream_requests_total` (outcome `ok`) and the duration
/// histogram's count, for upstream `a`.
async fn upstream_counts(gw: &RunningGateway) -> (f64, f64) {
    (
        metric(
            gw,
            r#"context7_upstream_requests_total{outcome="ok",upstream="a"}"#,
        )
        .await,
        metric(
            gw,
            r#"context7_upstream_request_duration_seconds_count{upstream="a"}"#,
        )
        .await,
    )
}

/// POSTs a JSON body; asserts a 200 and returns the answer's text.
async fn post_ok(gw: &RunningGateway, path: &str, body: &Value) -> String {
    let (status, _, text) = post_json(gw, path, &body.to_string()).await;
    assert_eq!(status, 200, "{path}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_door_counts_its_upstream_traffic_once() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let gw = gateway(&sims, config()).await;
    let session = open_session(&gw).await;
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let front_doors: [(&str, &str, Value); 4] = [
        ("/v1/research", "research", json!({"query": "q"})),
        ("/v1/chat/completions", "chat", chat),
        ("/v1/chat/completions", "stream", streamed),
        (
            "/v1/completions",
            "text completion",
            json!({"model": MODEL, "prompt": "hi"}),
        ),
    ];
    let mut expected = upstream_counts(&gw).await;
    assert_eq!(expected, (0.0, 0.0), "no traffic yet");
    for (path, what, body) in front_doors {
        let text = post_ok(&gw, path, &body).await;
        if what == "stream" {
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        }
        expected = (expected.0 + 1.0, expected.1 + 1.0);
        assert_eq!(upstream_counts(&gw).await, expected, "after the {what}");
    }
    research_tool(&gw, &session, json!({"query": "q2"})).await;
    expected = (expected.0 + 1.0, expected.1 + 1.0);
    assert_eq!(upstream_counts(&gw).await, expected, "after MCP research");
    // Five answers, five chat or completion requests at the upstream.
    assert_eq!(sims[0].chat_requests(), 5);
    // Tokens of every front door under the upstream's model.
    let prompt = metric(
        &gw,
        &format!(r#"context7_upstream_tokens_total{{kind="prompt",model="{MODEL}",upstream="a"}}"#),
    )
    .await;
    assert!(prompt > 0.0, "prompt tokens counted: {prompt}");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_research_and_v1_research_share_one_cache() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.cache.enabled = true;
    let gw = gateway(&sims, config).await;
    let session = open_session(&gw).await;
    let research = |query: &str| json!({"query": query, "max_tokens": 200, "temperature": 0});

    // `/v1/research` makes the entry; MCP is answered from it.
    let made = client()
        .post(format!("{}/v1/research", gw.url()))
        .json(&research("what is  vLLM?"))
        .send()
        .await
        .unwrap();
    assert_eq!(made.headers()["x-cache"], "MISS");
    let made: Value = made.json().await.unwrap();
    assert_eq!(sims[0].chat_requests(), 1);
    let from_cache = research_tool(&gw, &session, research("what is vLLM?")).await;
    assert_eq!(sims[0].chat_requests(), 1, "MCP asked no upstream");
    assert_eq!(from_cache["result"], made["result"]);

    // And the other way round: MCP makes it, `/v1/research` hits it.
    let made = research_tool(&gw, &session, research("what is Pingora?")).await;
    assert_eq!(sims[0].chat_requests(), 2);
    let hit = client()
        .post(format!("{}/v1/research", gw.url()))
        .json(&research("what is Pingora?"))
        .send()
        .await
        .unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    let hit: Value = hit.json().await.unwrap();
    assert_eq!(hit["result"], made["result"]);
    assert_eq!(sims[0].chat_requests(), 2, "/v1/research asked no upstream");
    assert_eq!(
        metric(&gw, r#"context7_cache_lookups_total{result="HIT"}"#).await,
        2.0
    );
    stop(gw).await;
}
