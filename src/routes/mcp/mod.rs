//! The MCP server at `/mcp` (Streamable HTTP transport, revision 2025-11-25).
//! This module owns the server and its dispatch of JSON-RPC methods; the
//! HTTP envelope (Origin, Accept, refusals) is in `transport`, sessions in
//! `sessions`, the JSON-RPC messages in `jsonrpc`, and the tools in `tools`.
//! The `research` tool runs through the same `ResearchService` as
//! `POST /v1/research`, so both share the cache, selection, retries and metrics.
//!
//! Every request gets exactly one answer in the HTTP response; the server
//! never sends requests or notifications of its own, so it opens no
//! server-initiated stream and `GET /mcp` is 405, as the transport allows.

mod jsonrpc;
mod sessions;
mod tools;
mod transport;

pub use jsonrpc::*;
pub use sessions::*;
pub use tools::*;
pub use transport::*;

use super::research::{
    FieldError, MAX_TOKENS_DEFAULT, MAX_TOKENS_RANGE, QUERY_MAX_CHARS, Rejection, ResearchAnswer,
    ResearchFailure, ResearchRequest, ResearchService, TEMPERATURE_DEFAULT, TEMPERATURE_RANGE,
};
use super::{Refusal, Reply};
use crate::config::McpConfig;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::shared::SharedStore;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Protocol revisions this server speaks, newest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// The revision a request without `MCP-Protocol-Version` is taken to speak:
/// the transport says to assume 2025-03-26, which is supported, so such a
/// request is never refused for its version.
pub const VERSION_WITHOUT_HEADER: &str = "2025-03-26";
pub const SESSION_HEADER: &str = "MCP-Session-Id";
pub const VERSION_HEADER: &str = "MCP-Protocol-Version";

/// JSON-RPC 2.0 error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Server-defined codes for refusals of the HTTP transport (origin, headers,
/// size), in the bodies of 4xx answers; the official SDKs use the same two.
pub const TRANSPORT_ERROR: i64 = -32000;
pub const SESSION_NOT_FOUND: i64 = -32001;

const SERVER_NAME: &str = "context7-lb";
const INSTRUCTIONS: &str = "Research questions answered by a large language model served behind \
the context7-lb gateway. Call `research` with a self-contained `query` (1-5000 characters); \
`max_tokens` (100-4000, default 2000) bounds the answer's length and `temperature` (0.0-2.0, \
default 0.7) its randomness. `list_models` names the models the upstreams serve. When research \
fails, `upstream_status` shows which upstreams are healthy and what their last health check said.";

/// The version answered to a requested one: the same when supported,
/// otherwise the newest, as the lifecycle rules say.
pub fn negotiate_version(requested: &str) -> &'static str {
    SUPPORTED_VERSIONS
        .iter()
        .find(|v| **v == requested)
        .copied()
        .unwrap_or(SUPPORTED_VERSIONS[0])
}

/// The `initialize` result and the negotiated version.
pub fn initialize_result(
    params: Option<&Map<String, Value>>,
) -> Result<(&'static str, Value), RpcError> {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            RpcError::invalid_params(
                "initialize needs params.protocolVersion, a string such as \"2025-11-25\"",
            )
        })?;
    let version = negotiate_version(requested);
    Ok((
        version,
        json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {
                "name": SERVER_NAME,
                "title": "Context7 research gateway",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "instructions": INSTRUCTIONS,
        }),
    ))
}

// ---------------------------------------------------------------------------
// The server

/// An answer for the proxy, with the upstream that served research, if any.
#[derive(Debug)]
pub struct McpAnswer {
    pub reply: Reply,
    pub upstream: Option<String>,
    /// Tokens an upstream spent on the answer (a tool's research, uncached).
    pub tokens: Option<u64>,
}

impl From<Reply> for McpAnswer {
    fn from(reply: Reply) -> McpAnswer {
        McpAnswer {
            reply,
            upstream: None,
            tokens: None,
        }
    }
}

/// The metric label of a method: known names only.
fn method_label(method: &str) -> &'static str {
    match method {
        "initialize" => "initialize",
        "ping" => "ping",
        "tools/list" => "tools/list",
        "tools/call" => "tools/call",
        "notifications/initialized" => "notifications/initialized",
        "notifications/cancelled" => "notifications/cancelled",
        _ => "other",
    }
}

/// The MCP server: origin policy and sessions. Built once per gateway.
pub struct McpServer {
    origins: OriginPolicy,
    sessions: SessionStore,
}

impl McpServer {
    /// The server for `config`, its sessions in `shared` when it is set.
    pub fn new(config: &McpConfig, shared: Option<Arc<SharedStore>>) -> McpServer {
        McpServer {
            origins: OriginPolicy::new(&config.allowed_origins),
            sessions: SessionStore::new(config.session_idle_timeout, config.max_sessions, shared),
        }
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// The refusals decided on headers alone, before any body is read:
    /// 403 foreign `Origin`, 405 a method other than POST and DELETE,
    /// 406 an `Accept` without JSON or SSE, 415 a body that is not JSON.
    pub fn refuse_before_body(&self, request: &HttpRequest) -> Option<Reply> {
        if !self.origins.allows(request.origin.as_deref()) {
            return Some(transport_error(
                403,
                TRANSPORT_ERROR,
                format!(
                    "Forbidden: origin {:?} is not in mcp.allowed_origins",
                    request.origin.as_deref().unwrap_or("")
                ),
            ));
        }
        match request.method {
            http::Method::POST => {}
            http::Method::DELETE => return None,
            _ => {
                return Some(
                    transport_error(
                        405,
                        TRANSPORT_ERROR,
                        "Method Not Allowed: POST JSON-RPC messages, DELETE to end a session; \
                         this server opens no server-initiated stream",
                    )
                    // The methods the router lists for /mcp, so that the
                    // two never disagree.
                    .with_header(
                        "Allow",
                        super::Route::allowed_methods("/mcp")
                            .unwrap_or_default()
                            .join(", "),
                    ),
                );
            }
        }
        if framing(request.accept.as_deref()).is_none() {
            return Some(transport_error(
                406,
                TRANSPORT_ERROR,
                "Not Acceptable: accept application/json or text/event-stream",
            ));
        }
        if let Some(content_type) = request
            .content_type
            .as_deref()
            .filter(|ct| !super::is_json(ct))
        {
            return Some(unsupported_media_type(content_type));
        }
        None
    }

    /// Answers a request to `/mcp` whose body (empty for DELETE) was read,
    /// after [`Self::refuse_before_body`] let it through (the caller runs it
    /// before reading the body, so it is not run again here).
    pub async fn answer(&self, tools: &Tools<'_>, request: &HttpRequest, body: &[u8]) -> McpAnswer {
        if request.method == http::Method::DELETE {
            return self.end_session(request).await.into();
        }
        let count = |method: &str, tool: &str, outcome: &str| {
            tools
                .metrics
                .mcp_messages
                .with_label_values(&[method, tool, outcome])
                .inc();
        };
        let framing = framing(request.accept.as_deref()).unwrap_or(Framing::Json);
        let message = match parse_message(body) {
            Ok(message) => message,
            Err(unreadable) => {
                count("invalid", "", unreadable.error.outcome());
                return Reply::json(400, &rpc_error(&unreadable.id, &unreadable.error)).into();
            }
        };
        let (id, method, params) = match message {
            Message::Request { id, method, params } => (id, method, params),
            Message::Notification { method } => {
                if let Err(refusal) = self.check_session(request).await {
                    count(method_label(&method), "", "refused");
                    return refusal.into();
                }
                count(method_label(&method), "", "accepted");
                return Reply::empty(202).into();
            }
            Message::Response => {
                if let Err(refusal) = self.check_session(request).await {
                    count("response", "", "refused");
                    return refusal.into();
                }
                count("response", "", "accepted");
                return Reply::empty(202).into();
            }
        };
        if method == "initialize" {
            // A new session, whatever session header came with it.
            return match initialize_result(params.as_ref()) {
                Ok((version, result)) => {
                    let session = self.sessions.create(version).await;
                    count("initialize", "", "ok");
                    respond(framing, &rpc_result(&id, result))
                        .with_header(SESSION_HEADER, session)
                        .into()
                }
                Err(error) => {
                    count("initialize", "", error.outcome());
                    respond(framing, &rpc_error(&id, &error)).into()
                }
            };
        }
        if let Err(refusal) = self.check_session(request).await {
            count(method_label(&method), "", "refused");
            return refusal.into();
        }
        let mut upstream = None;
        let mut tokens = None;
        let mut tool = "";
        let outcome = match method.as_str() {
            "ping" => Ok(json!({})),
            "tools/list" => Ok(tools_list()),
            "tools/call" => {
                tool = params
                    .as_ref()
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .map_or("other", tool_label);
                match parse_tool_call(params.as_ref()) {
                    Ok(call) => {
                        let (result, served_by, spent) = run_tool(tools, call).await;
                        upstream = served_by;
                        tokens = spent;
                        Ok(result)
                    }
                    Err(error) => Err(error),
                }
            }
            _ => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("Method not found: {method:?}"),
            )),
        };
        let message = match outcome {
            Ok(result) => {
                let failed = result.get("isError") == Some(&Value::Bool(true));
                count(
                    method_label(&method),
                    tool,
                    if failed { "tool_error" } else { "ok" },
                );
                rpc_result(&id, result)
            }
            Err(error) => {
                count(method_label(&method), tool, error.outcome());
                rpc_error(&id, &error)
            }
        };
        McpAnswer {
            reply: respond(framing, &message),
            upstream,
            tokens,
        }
    }

    /// Every message but `initialize` needs a supported version (when it says
    /// one) and a live session: 400 without a session id, 404 for an unknown
    /// or expired one, so that the client starts over.
    async fn check_session(&self, request: &HttpRequest) -> Result<(), Reply> {
        let session = Self::session_named(request)?;
        match self.sessions.touch(session).await {
            Some(_) => Ok(()),
            None => Err(session_not_found()),
        }
    }

    /// The session id of a message that may carry a session: 400 for an
    /// unsupported version or a missing id.
    fn session_named(request: &HttpRequest) -> Result<&str, Reply> {
        if let Some(version) = request.protocol_version.as_deref()
            && !SUPPORTED_VERSIONS.contains(&version)
        {
            return Err(transport_error(
                400,
                TRANSPORT_ERROR,
                format!(
                    "Bad Request: unsupported {VERSION_HEADER} {version:?}; supported: {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let Some(session) = request.session_id.as_deref() else {
            return Err(transport_error(
                400,
                TRANSPORT_ERROR,
                format!(
                    "Bad Request: no {SESSION_HEADER} header; send initialize first, then its \
                     session id with every message"
                ),
            ));
        };
        Ok(session)
    }

    /// `DELETE /mcp`: ends the session named in the header (one lookup:
    /// ending a session that is not live is the 404 a touch would give).
    async fn end_session(&self, request: &HttpRequest) -> Reply {
        match Self::session_named(request) {
            Ok(session) if self.sessions.remove(session).await => Reply::empty(200),
            Ok(_) => session_not_found(),
            Err(refusal) => refusal,
        }
    }
}

fn session_not_found() -> Reply {
    transport_error(
        404,
        SESSION_NOT_FOUND,
        "Session not found: it expired, was ended, or never existed; send initialize to start a new one",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_negotiated_down_to_the_newest_known() {
        assert_eq!(negotiate_version("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate_version("2025-03-26"), "2025-03-26");
        assert_eq!(negotiate_version("2024-11-05"), "2025-11-25");
        assert_eq!(negotiate_version("2099-01-01"), "2025-11-25");
        let params = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
        let (version, result) = initialize_result(params.as_object()).unwrap();
        assert_eq!(version, "2025-06-18");
        assert_eq!(result["protocolVersion"], "2025-06-18");
        assert_eq!(
            result["capabilities"],
            json!({"tools": {"listChanged": false}})
        );
        assert_eq!(result["serverInfo"]["name"], "context7-lb");
        assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(
            result["instructions"]
                .as_str()
                .unwrap()
                .contains("research")
        );
        assert_eq!(
            initialize_result(None).unwrap_err().code,
            INVALID_PARAMS,
            "no protocolVersion"
        );
        assert!(SUPPORTED_VERSIONS.contains(&VERSION_WITHOUT_HEADER));
    }
}
