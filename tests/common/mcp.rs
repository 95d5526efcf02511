//! An MCP client over plain HTTP, as the official SDK speaks to `/mcp`:
//! its headers, initialize, a session, requests in it, tool calls.

use super::http::{Answer, At, send};
use serde_json::{Value, json};

/// The headers the official SDK sends with every POST.
pub const SDK_HEADERS: &[(&str, &str)] = &[
    ("accept", "application/json, text/event-stream"),
    ("content-type", "application/json"),
];

/// POSTs one message with the SDK's headers, plus the session and version.
pub async fn post(gw: &impl At, session: Option<&str>, message: &Value) -> Answer {
    let mut headers = SDK_HEADERS.to_vec();
    if let Some(session) = session {
        headers.push(("mcp-session-id", session));
        headers.push(("mcp-protocol-version", "2025-11-25"));
    }
    send(gw, "POST", "/mcp", &headers, Some(&message.to_string())).await
}

pub fn initialize_message(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "tests", "version": "1"}
    }})
}

/// Initializes and sends `notifications/initialized`; returns the session id.
pub async fn open_session(gw: &impl At) -> String {
    let answer = post(gw, None, &initialize_message("2025-11-25")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let session = answer.headers["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post(gw, Some(&session), &initialized).await.status, 202);
    session
}

/// A request in a session; asserts HTTP 200 and returns the JSON-RPC answer.
pub async fn call(gw: &impl At, session: &str, id: u64, method: &str, params: Value) -> Value {
    let answer = post(
        gw,
        Some(session),
        &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.headers["content-type"], "application/json");
    let message = answer.json();
    assert_eq!(message["jsonrpc"], "2.0");
    assert_eq!(message["id"], id);
    message
}

/// MCP's `research` tool in `session`; asserts it succeeded and returns its
/// structured result.
pub async fn research_tool(gw: &impl At, session: &str, arguments: Value) -> Value {
    let params = json!({"name": "research", "arguments": arguments});
    let answer = call(gw, session, 1, "tools/call", params).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    answer["result"]["structuredContent"].clone()
}
