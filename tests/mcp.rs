//! `/mcp` end to end over real sockets: the Streamable HTTP transport's
//! statuses and headers, every JSON-RPC error code, sessions (end, expiry,
//! eviction), and the tools in front of simulated upstreams.

mod common;

use common::mcp::{SDK_HEADERS, call, initialize_message, open_session, post};
use common::*;
use context7_lb::sim::SimConfig;
use serde_json::{Value, json};
use std::time::Duration;

/// The SDK's headers with a session id and a version, each left out when empty.
fn with<'a>(session: &'a str, version: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut headers = SDK_HEADERS.to_vec();
    if !session.is_empty() {
        headers.push(("mcp-session-id", session));
    }
    if !version.is_empty() {
        headers.push(("mcp-protocol-version", version));
    }
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_initializes_lists_tools_and_researches_through_the_pool() {
    let sims = sims(vec![
        SimConfig::new("a")
            .model("served-a")
            .answer_tokens(12)
            .api_key("key-a"),
    ])
    .await;
    let gw = gateway(&sims, config()).await;

    let answer = post(&gw, None, &initialize_message("2025-11-25")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.headers["content-type"], "application/json");
    let session = answer.headers["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(session.len(), 32, "{session}");
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()));
    let result = &answer.json()["result"];
    assert_eq!(result["protocolVersion"], "2025-11-25");
    assert_eq!(
        result["capabilities"],
        json!({"tools": {"listChanged": false}})
    );
    assert_eq!(result["serverInfo"]["name"], "context7-lb");
    assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(result["instructions"].is_string());

    // The notification is acknowledged with an empty 202.
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let answer = post(&gw, Some(&session), &initialized).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.text, "");
    assert!(answer.headers.get("content-type").is_none());

    assert_eq!(
        call(&gw, &session, 1, "ping", json!({})).await["result"],
        json!({})
    );

    let tools = call(&gw, &session, 2, "tools/list", json!({})).await;
    let names: Vec<_> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["research", "list_models", "upstream_status"]);

    let message = call(
        &gw,
        &session,
        3,
        "tools/call",
        json!({"name": "research", "arguments": {"query": "What is vLLM?", "max_tokens": 150, "temperature": 0.2}}),
    )
    .await;
    let result = &message["result"];
    assert_eq!(result["isError"], false, "{message}");

    // The upstream got the very chat completion /v1/research sends.
    let chats: Vec<_> = sims[0]
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].authorization.as_deref(), Some("Bearer key-a"));
    assert_eq!(
        chats[0].json(),
        json!({
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "messages": [{"role": "user", "content": "What is vLLM?"}],
            "max_tokens": 150,
            "temperature": 0.2
        })
    );

    // And the answer is what it produced, as text and structured content.
    let text = result["content"][0]["text"].as_str().unwrap();
    assert_eq!(result["content"][0]["type"], "text");
    assert!(
        text.starts_with("[a] Simulated answer about: What is vLLM?"),
        "{text}"
    );
    assert_eq!(text.split_whitespace().count(), 12, "{text}");
    let structured = &result["structuredContent"];
    assert_eq!(structured["result"], text);
    assert_eq!(structured["model"], "served-a");
    assert_eq!(
        structured["tokens_used"],
        3 + 12,
        "3 prompt words, 12 answer tokens"
    );
    assert_eq!(structured["upstream"], "a");
    assert!(structured["latency_ms"].is_u64());

    // /v1/research answers the same question with the same text.
    let (status, _, body) = research(
        &gw,
        r#"{"query":"What is vLLM?","max_tokens":150,"temperature":0.2}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], text);

    let metrics = get_text(&gw, "/metrics").await;
    for line in [
        r#"context7_http_requests_total{route="/mcp",status="200"} 4"#,
        r#"context7_http_requests_total{route="/mcp",status="202"} 1"#,
        r#"context7_mcp_messages_total{method="initialize",outcome="ok",tool=""} 1"#,
        r#"context7_mcp_messages_total{method="notifications/initialized",outcome="accepted",tool=""} 1"#,
        r#"context7_mcp_messages_total{method="tools/call",outcome="ok",tool="research"} 1"#,
        r#"context7_upstream_requests_total{outcome="ok",upstream="a"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line}\n{metrics}");
    }
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_rpc_error_has_its_code() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let gw = gateway(&sims, config()).await;
    let session = open_session(&gw).await;
    let in_session = [
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
        ("mcp-session-id", session.as_str()),
    ];

    // -32700: not JSON. Answered 400 with a null id: no request could be read.
    let answer = send(
        &gw,
        "POST",
        "/mcp",
        &in_session,
        Some("{\"jsonrpc\": \"2.0\", "),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), -32700);
    assert_eq!(answer.json()["id"], Value::Null);

    // -32600: a batch (removed from MCP), and messages of the wrong shape.
    for (body, id) in [
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, Value::Null),
        (r#"{"jsonrpc":"1.0","id":5,"method":"ping"}"#, json!(5)),
        (r#"{"jsonrpc":"2.0","id":6,"method":["ping"]}"#, json!(6)),
        (
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            Value::Null,
        ),
        (r#""ping""#, Value::Null),
    ] {
        let answer = send(&gw, "POST", "/mcp", &in_session, Some(body)).await;
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(answer.error_code(), -32600, "{body}");
        assert_eq!(answer.json()["id"], id, "{body}");
    }

    // -32601: a method this server does not have.
    let message = call(&gw, &session, 1, "resources/list", json!({})).await;
    assert_eq!(message["error"]["code"], -32601);
    assert!(
        message["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resources/list")
    );

    // -32602: arguments that /v1/research would answer with 422, every field at once.
    let message = call(
        &gw,
        &session,
        2,
        "tools/call",
        json!({"name": "research", "arguments": {"query": "", "max_tokens": 4001, "temperature": "hot"}}),
    )
    .await;
    let error = &message["error"];
    assert_eq!(error["code"], -32602);
    assert_eq!(
        error["message"],
        "Invalid arguments for tool \"research\": query: String should have at least 1 \
         character; max_tokens: Input should be less than or equal to 4000; temperature: Input \
         should be a valid number, unable to parse string as a number"
    );
    assert_eq!(
        error["data"]["errors"][0]["loc"],
        json!(["arguments", "query"])
    );
    assert_eq!(error["data"]["errors"][1]["ctx"], json!({"le": 4000}));

    // -32602: an unknown tool.
    let message = call(
        &gw,
        &session,
        3,
        "tools/call",
        json!({"name": "nope", "arguments": {}}),
    )
    .await;
    assert_eq!(message["error"]["code"], -32602);
    assert_eq!(message["error"]["message"], "Unknown tool: \"nope\"");

    // Nothing refused reached the upstream.
    assert_eq!(sims[0].chat_requests(), 0);
    let metrics = get_text(&gw, "/metrics").await;
    for line in [
        r#"context7_mcp_messages_total{method="invalid",outcome="parse_error",tool=""} 1"#,
        r#"context7_mcp_messages_total{method="invalid",outcome="invalid_request",tool=""} 5"#,
        r#"context7_mcp_messages_total{method="other",outcome="method_not_found",tool=""} 1"#,
        r#"context7_mcp_messages_total{method="tools/call",outcome="invalid_params",tool="research"} 1"#,
        r#"context7_mcp_messages_total{method="tools/call",outcome="invalid_params",tool="other"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line}\n{metrics}");
    }
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_refuses_what_it_must() {
    let gw = start(config()).await;
    let initialize = initialize_message("2025-11-25").to_string();

    // A foreign Origin is refused before anything else; loopback on any port is fine.
    let mut headers = SDK_HEADERS.to_vec();
    headers.push(("origin", "https://evil.example"));
    let answer = send(&gw, "POST", "/mcp", &headers, Some(&initialize)).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.error_code(), -32000);
    assert!(answer.headers.get("mcp-session-id").is_none());
    headers.pop();
    headers.push(("origin", "http://localhost:6274"));
    assert_eq!(
        send(&gw, "POST", "/mcp", &headers, Some(&initialize))
            .await
            .status,
        200
    );

    // No server-initiated stream.
    let answer = send(&gw, "GET", "/mcp", &[("accept", "text/event-stream")], None).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "POST, DELETE");

    // Accept and Content-Type.
    let answer = send(
        &gw,
        "POST",
        "/mcp",
        &[
            ("accept", "text/html"),
            ("content-type", "application/json"),
        ],
        Some(&initialize),
    )
    .await;
    assert_eq!(answer.status, 406);
    let answer = send(
        &gw,
        "POST",
        "/mcp",
        &[
            ("accept", "application/json"),
            ("content-type", "text/plain"),
        ],
        Some(&initialize),
    )
    .await;
    assert_eq!(answer.status, 415);
    // A client that takes only event streams gets the answer as one SSE event.
    let answer = send(
        &gw,
        "POST",
        "/mcp",
        &[
            ("accept", "text/event-stream"),
            ("content-type", "application/json"),
        ],
        Some(&initialize),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let data = answer
        .text
        .strip_prefix("event: message\ndata: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not one SSE event: {:?}", answer.text));
    let message: Value = serde_json::from_str(data).unwrap();
    assert_eq!(message["result"]["protocolVersion"], "2025-11-25");

    // A body over limits.max_body_bytes.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    assert_eq!(
        send(&gw, "POST", "/mcp", SDK_HEADERS, Some(&huge))
            .await
            .status,
        413
    );

    let session = open_session(&gw).await;
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}).to_string();
    let session = session.as_str();

    // Without a session id: 400. An unknown one: 404.
    let answer = send(&gw, "POST", "/mcp", &with("", "2025-11-25"), Some(&ping)).await;
    assert_eq!(answer.status, 400);
    assert!(answer.text.contains("MCP-Session-Id"), "{}", answer.text);
    let answer = send(
        &gw,
        "POST",
        "/mcp",
        &with("0123456789abcdef0123456789abcdef", ""),
        Some(&ping),
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error_code(), -32001);

    // The version header: unsupported 400; supported or absent (2025-03-26) fine.
    let answer = send(
        &gw,
        "POST",
        "/mcp",
        &with(session, "1999-01-01"),
        Some(&ping),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(answer.text.contains("1999-01-01"), "{}", answer.text);
    for version in ["2025-11-25", "2025-06-18", "2025-03-26", ""] {
        let answer = send(&gw, "POST", "/mcp", &with(session, version), Some(&ping)).await;
        assert_eq!(answer.status, 200, "{version:?}: {}", answer.text);
    }

    // DELETE ends the session; using it again is 404, and so is a second DELETE.
    let answer = send(&gw, "DELETE", "/mcp", &with(session, "2025-11-25"), None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text, "");
    let answer = send(
        &gw,
        "POST",
        "/mcp",
        &with(session, "2025-11-25"),
        Some(&ping),
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        send(&gw, "DELETE", "/mcp", &with(session, ""), None)
            .await
            .status,
        404
    );
    assert_eq!(
        send(&gw, "DELETE", "/mcp", &with("", ""), None)
            .await
            .status,
        400
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_answers_the_newest_version_it_knows() {
    let gw = start(config()).await;
    for (asked, answered) in [
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2024-11-05", "2025-11-25"),
        ("2030-01-01", "2025-11-25"),
    ] {
        let answer = post(&gw, None, &initialize_message(asked)).await;
        assert_eq!(
            answer.json()["result"]["protocolVersion"],
            answered,
            "{asked}"
        );
    }
    let answer = post(
        &gw,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.error_code(), -32602);
    assert!(answer.headers.get("mcp-session-id").is_none());
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_and_responses_are_accepted_with_202() {
    let gw = start(config()).await;
    let session = open_session(&gw).await;
    for message in [
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        json!({"jsonrpc": "2.0", "method": "notifications/whatever"}),
        json!({"jsonrpc": "2.0", "id": 4, "result": {}}),
        json!({"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "no"}}),
    ] {
        let answer = post(&gw, Some(&session), &message).await;
        assert_eq!(answer.status, 202, "{message}");
        assert_eq!(answer.text, "", "{message}");
    }
    // A notification needs a session like any other message.
    let answer = post(
        &gw,
        None,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(answer.status, 400);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_when_idle_and_the_oldest_makes_room() {
    let mut config = config();
    // Margins of half a second, so a busy machine cannot make it flaky.
    config.mcp.session_idle_timeout = Duration::from_millis(1000);
    config.mcp.max_sessions = 2;
    let gw = start(config).await;
    let ping = |id| json!({"jsonrpc": "2.0", "id": id, "method": "ping"});

    let session = open_session(&gw).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(post(&gw, Some(&session), &ping(1)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        post(&gw, Some(&session), &ping(2)).await.status,
        200,
        "each use restarts the idle clock"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(post(&gw, Some(&session), &ping(3)).await.status, 404);

    let first = open_session(&gw).await;
    let second = open_session(&gw).await;
    let third = open_session(&gw).await;
    assert_eq!(
        post(&gw, Some(&first), &ping(4)).await.status,
        404,
        "evicted"
    );
    assert_eq!(post(&gw, Some(&second), &ping(5)).await.status, 200);
    assert_eq!(post(&gw, Some(&third), &ping(6)).await.status, 200);
    assert_eq!(gw.state.mcp.sessions().len(), 2);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn research_fails_as_a_tool_error_when_no_upstream_is_healthy() {
    let sims = sims(vec![
        SimConfig::new("a").cold(true),
        SimConfig::new("b").cold(true),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    let session = open_session(&gw).await;

    let message = call(
        &gw,
        &session,
        1,
        "tools/call",
        json!({"name": "research", "arguments": {"query": "anyone there?"}}),
    )
    .await;
    let result = &message["result"];
    assert_eq!(result["isError"], true, "{message}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Research failed: 503 Service Unavailable: vLLM backend unreachable: no healthy upstream"),
        "{text}"
    );
    assert_eq!(sims.iter().map(|s| s.chat_requests()).sum::<u64>(), 0);

    // The other tools say why, without a network call and without a key.
    let status = call(
        &gw,
        &session,
        2,
        "tools/call",
        json!({"name": "upstream_status"}),
    )
    .await;
    let structured = &status["result"]["structuredContent"];
    assert_eq!(structured["healthy"], 0);
    assert_eq!(structured["upstreams"][0]["name"], "a");
    assert_eq!(structured["upstreams"][0]["health"], "initializing");
    assert_eq!(
        structured["upstreams"][1]["last_check"]["outcome"],
        "initializing"
    );
    assert!(!status.to_string().contains("key-"), "{status}");
    let models = call(
        &gw,
        &session,
        3,
        "tools/call",
        json!({"name": "list_models", "arguments": {}}),
    )
    .await;
    assert_eq!(
        models["result"]["structuredContent"],
        json!({"models": [{"id": "meta-llama/Llama-3.1-8B-Instruct", "upstreams": ["a", "b"]}]})
    );

    let metrics = get_text(&gw, "/metrics").await;
    let line = r#"context7_mcp_messages_total{method="tools/call",outcome="tool_error",tool="research"} 1"#;
    assert!(metrics.contains(line), "missing {line}\n{metrics}");
    stop(gw).await;

    // With no upstream at all: the 500 of /v1/research, as a tool error.
    let gw = start(config()).await;
    let session = open_session(&gw).await;
    let message = call(
        &gw,
        &session,
        1,
        "tools/call",
        json!({"name": "research", "arguments": {"query": "q"}}),
    )
    .await;
    assert_eq!(message["result"]["isError"], true);
    assert_eq!(
        message["result"]["content"][0]["text"],
        "Research failed: 500 Internal Server Error: vLLM backend not configured"
    );
    stop(gw).await;
}
