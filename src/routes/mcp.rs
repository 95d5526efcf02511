//! The MCP server at `/mcp` (Streamable HTTP transport, revision 2025-11-25):
//! the HTTP envelope (Origin, Accept, protocol version, sessions), JSON-RPC
//! parsing and dispatch, and the tools. The `research` tool runs through the
//! same `ResearchService` as `POST /v1/research`, so both share selection,
//! retries and metrics.
//!
//! Every request gets exactly one answer in the HTTP response; the server
//! never sends requests or notifications of its own, so it opens no
//! server-initiated stream and `GET /mcp` is 405, as the transport allows.

use super::Reply;
use super::research::{
    FieldError, MAX_TOKENS_DEFAULT, MAX_TOKENS_RANGE, QUERY_MAX_CHARS, Rejection, ResearchAnswer,
    ResearchFailure, ResearchRequest, TEMPERATURE_DEFAULT, TEMPERATURE_RANGE,
};
use crate::config::McpConfig;
use crate::pool::Pool;
use crate::proxy::AppState;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
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

// ---------------------------------------------------------------------------
// The HTTP envelope

/// The parts of an HTTP request to `/mcp` that the transport reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: http::Method,
    pub origin: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
}

impl HttpRequest {
    pub fn from_parts(method: &http::Method, headers: &http::HeaderMap) -> HttpRequest {
        // Header values that are not UTF-8 are kept lossily: they then match
        // no origin, session or version, and are refused as such.
        let all = |name: &str| {
            let values: Vec<_> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        HttpRequest {
            method: method.clone(),
            origin: all("origin"),
            accept: all("accept"),
            content_type: all("content-type"),
            session_id: all("mcp-session-id"),
            protocol_version: all("mcp-protocol-version"),
        }
    }
}

/// One entry of `mcp.allowed_origins`, or a parsed `Origin` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    host: String,
    /// `None` in an allow-list entry means any port.
    port: Option<u16>,
}

impl OriginPattern {
    /// Parses `scheme://host[:port]` (IPv6 hosts in brackets), case-insensitively.
    pub fn parse(text: &str) -> Result<OriginPattern, String> {
        let bad = |why: &str| {
            format!(
                "{text:?} {why}; write scheme://host or scheme://host:port, such as \
                 \"http://localhost\" or \"https://app.example.com:8443\""
            )
        };
        let lower = text.trim().to_ascii_lowercase();
        let (scheme, rest) = lower
            .split_once("://")
            .ok_or_else(|| bad("is not an origin"))?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return Err(bad("has no valid scheme"));
        }
        if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(bad("must not have a path, query, user or spaces"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(inner) => {
                let (address, after) = inner
                    .split_once(']')
                    .ok_or_else(|| bad("has an unclosed '['"))?;
                if address.is_empty() {
                    return Err(bad("has no host"));
                }
                let port = match after {
                    "" => None,
                    p => Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("has junk after ']'"))?,
                    ),
                };
                (format!("[{address}]"), port)
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (rest.to_string(), None),
            },
        };
        if host.is_empty() || host.contains(':') && !host.starts_with('[') {
            return Err(bad("has no valid host"));
        }
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| bad("has an invalid port")))
            .transpose()?;
        Ok(OriginPattern {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }

    fn default_port(scheme: &str) -> Option<u16> {
        match scheme {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        }
    }

    /// Whether this allow-list entry admits `origin`.
    fn admits(&self, origin: &OriginPattern) -> bool {
        self.scheme == origin.scheme
            && self.host == origin.host
            && match self.port {
                None => true,
                Some(port) => {
                    origin.port.or_else(|| Self::default_port(&origin.scheme)) == Some(port)
                }
            }
    }
}

/// Checks one `mcp.allowed_origins` entry: `"*"` or an origin.
pub fn check_allowed_origin(entry: &str) -> Result<(), String> {
    if entry.trim() == "*" {
        return Ok(());
    }
    OriginPattern::parse(entry).map(|_| ())
}

/// Which browser origins may call `/mcp`. The transport requires the check so
/// that a web page cannot drive a local server through the user's browser
/// (DNS rebinding); clients that are not browsers send no `Origin` at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<OriginPattern>,
}

impl OriginPolicy {
    /// Builds the policy from validated entries; an invalid one admits nothing.
    pub fn new(entries: &[String]) -> OriginPolicy {
        OriginPolicy {
            any: entries.iter().any(|e| e.trim() == "*"),
            allowed: entries
                .iter()
                .filter_map(|e| OriginPattern::parse(e).ok())
                .collect(),
        }
    }

    /// An absent `Origin` is allowed; `null` and anything unparsable are foreign.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.any => true,
            Some(origin) => OriginPattern::parse(origin)
                .is_ok_and(|origin| self.allowed.iter().any(|p| p.admits(&origin))),
        }
    }
}

/// How a request's answer is framed, from its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    /// One SSE `message` event, for a client that accepts only event streams.
    EventStream,
}

/// Reads `Accept`. The transport has clients list both JSON and SSE; one of
/// them, or a wildcard (curl's `*/*`), is enough here. `None`: neither (406).
pub fn framing(accept: Option<&str>) -> Option<Framing> {
    let Some(accept) = accept else {
        return Some(Framing::Json);
    };
    let ranges: Vec<String> = accept
        .split(',')
        .map(|r| {
            r.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    let has = |range: &str| ranges.iter().any(|r| r == range);
    if has("application/json") || has("application/*") || has("*/*") {
        Some(Framing::Json)
    } else if has("text/event-stream") || has("text/*") {
        Some(Framing::EventStream)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Sessions

struct SessionEntry {
    protocol_version: &'static str,
    last_used: Instant,
}

/// Live sessions, bounded in number and idle time.
///
/// Time comes from `tokio::time::Instant`, so tests can pause and advance it.
/// Ids are 128 bits from the operating system's random source: a session
/// grants nothing, but a guessable id would let anyone end another client's
/// session with `DELETE`.
pub struct SessionStore {
    sessions: Mutex<HashMap<String, SessionEntry>>,
    idle_timeout: Duration,
    max_sessions: usize,
}

impl SessionStore {
    pub fn new(idle_timeout: Duration, max_sessions: usize) -> SessionStore {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            idle_timeout,
            max_sessions: max_sessions.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session and returns its id. Expired sessions are dropped
    /// first; at the limit, the one idle the longest makes room. Both are a
    /// scan of the map, which is fine at one `initialize` per client.
    pub fn create(&self, protocol_version: &'static str) -> String {
        let now = Instant::now();
        let id = new_session_id();
        let mut sessions = self.lock();
        sessions.retain(|_, s| now.duration_since(s.last_used) < self.idle_timeout);
        while sessions.len() >= self.max_sessions {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => sessions.remove(&oldest),
                None => break,
            };
        }
        sessions.insert(
            id.clone(),
            SessionEntry {
                protocol_version,
                last_used: now,
            },
        );
        id
    }

    /// Marks a session used; its negotiated version, or `None` when the id
    /// is unknown or the session sat idle too long (it is then dropped).
    pub fn touch(&self, id: &str) -> Option<&'static str> {
        let now = Instant::now();
        let mut sessions = self.lock();
        let session = sessions.get_mut(id)?;
        if now.duration_since(session.last_used) >= self.idle_timeout {
            sessions.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.protocol_version)
    }

    /// Ends a session; `false` when there was none live with that id.
    pub fn remove(&self, id: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .remove(id)
            .is_some_and(|s| now.duration_since(s.last_used) < self.idle_timeout)
    }

    /// Sessions held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 32 hex digits, visible ASCII as the transport requires.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // Not expected on any supported system; a weaker id beats no session.
        log::warn!("no operating-system randomness for a session id ({e}); using fastrand");
        bytes = fastrand::u128(..).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// JSON-RPC

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    /// Low-cardinality outcome label for the metrics.
    fn outcome(&self) -> &'static str {
        match self.code {
            PARSE_ERROR => "parse_error",
            INVALID_REQUEST => "invalid_request",
            METHOD_NOT_FOUND => "method_not_found",
            INVALID_PARAMS => "invalid_params",
            _ => "error",
        }
    }
}

/// One JSON-RPC message from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Map<String, Value>>,
    },
    Notification {
        method: String,
    },
    /// An answer to a server request; this server sends none, so it is only acknowledged.
    Response,
}

/// A body that is not one valid JSON-RPC message: the id to answer (null when
/// none could be read) and the error.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub id: Value,
    pub error: RpcError,
}

/// Reads one JSON-RPC 2.0 message as MCP uses them: ids are strings or
/// integers, never null; params, when present, are an object. Batches were
/// removed from MCP in 2025-06-18 and are refused as invalid requests.
pub fn parse_message(body: &[u8]) -> Result<Message, Box<Unreadable>> {
    let unreadable = |id: Value, code: i64, message: String| {
        Box::new(Unreadable {
            id,
            error: RpcError::new(code, message),
        })
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| unreadable(Value::Null, PARSE_ERROR, format!("Parse error: {e}")))?;
    let object = match value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Err(unreadable(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: batches are not supported (MCP removed JSON-RPC batching in \
                 2025-06-18); send one message per request"
                    .into(),
            ));
        }
        _ => {
            return Err(unreadable(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: a JSON-RPC message is an object".into(),
            ));
        }
    };
    let invalid =
        |id: Value, why: &str| unreadable(id, INVALID_REQUEST, format!("Invalid Request: {why}"));
    let id = match object.get("id") {
        None => None,
        Some(id @ Value::String(_)) => Some(id.clone()),
        Some(id @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(id.clone()),
        Some(_) => {
            return Err(invalid(
                Value::Null,
                "\"id\" must be a string or an integer",
            ));
        }
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(answer_id, "\"jsonrpc\" must be \"2.0\""));
    }
    match (object.get("method"), id) {
        (Some(Value::String(method)), id) => {
            let params = match object.get("params") {
                None | Some(Value::Null) => None,
                Some(Value::Object(params)) => Some(params.clone()),
                Some(_) => return Err(invalid(answer_id, "\"params\" must be an object")),
            };
            Ok(match id {
                Some(id) => Message::Request {
                    id,
                    method: method.clone(),
                    params,
                },
                None => Message::Notification {
                    method: method.clone(),
                },
            })
        }
        (Some(_), _) => Err(invalid(answer_id, "\"method\" must be a string")),
        (None, Some(_)) if object.contains_key("result") || object.contains_key("error") => {
            Ok(Message::Response)
        }
        (None, _) => Err(invalid(
            answer_id,
            "a message needs a \"method\" (request or notification) or an \"id\" with a \
             \"result\" or \"error\" (response)",
        )),
    }
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn rpc_error(id: &Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// A refusal of the transport: the status, and a JSON-RPC error without id.
pub fn transport_error(status: u16, code: i64, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        &rpc_error(&Value::Null, &RpcError::new(code, message)),
    )
}

/// 413, for a body over `limits.max_body_bytes`.
pub fn body_too_large(limit: usize) -> Reply {
    transport_error(
        413,
        TRANSPORT_ERROR,
        format!("Request body larger than the limit of {limit} bytes"),
    )
}

/// The answer to a request, framed as the client's `Accept` asks.
fn respond(framing: Framing, message: &Value) -> Reply {
    match framing {
        Framing::Json => Reply::json(200, message),
        Framing::EventStream => Reply {
            status: 200,
            content_type: "text/event-stream",
            headers: Vec::new(),
            body: format!("event: message\ndata: {message}\n\n").into(),
        },
    }
}

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
// Tools

/// The `tools/list` result. The research schema is written from the same
/// constants that validate `/v1/research`.
pub fn tools_list() -> Value {
    let (min_tokens, max_tokens) = MAX_TOKENS_RANGE;
    let (min_temperature, max_temperature) = TEMPERATURE_RANGE;
    let no_arguments = json!({"type": "object", "properties": {}});
    json!({"tools": [
        {
            "name": "research",
            "title": "Research",
            "description": "Answer a research question with the large language model behind the \
                gateway. The query should be self-contained: the model sees nothing else. Returns \
                the answer as text, and the model, tokens used and latency as structured content.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": QUERY_MAX_CHARS,
                        "description": "The question or research task.",
                    },
                    "max_tokens": {
                        "type": "integer",
                        "minimum": min_tokens,
                        "maximum": max_tokens,
                        "default": MAX_TOKENS_DEFAULT,
                        "description": "Most tokens in the answer.",
                    },
                    "temperature": {
                        "type": "number",
                        "minimum": min_temperature,
                        "maximum": max_temperature,
                        "default": TEMPERATURE_DEFAULT,
                        "description": "Sampling temperature: 0 for the most likely answer, higher for more varied ones.",
                    },
                },
                "required": ["query"],
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "result": {"type": "string", "description": "The answer."},
                    "model": {"type": "string", "description": "The model that answered."},
                    "tokens_used": {"type": "integer", "minimum": 0, "description": "Prompt and answer tokens."},
                    "latency_ms": {"type": "integer", "minimum": 0, "description": "Time the gateway took, retries included."},
                    "timestamp": {"type": "string", "description": "When the answer was ready, ISO 8601."},
                    "upstream": {"type": "string", "description": "The upstream that answered."},
                },
                "required": ["result", "model", "tokens_used", "latency_ms", "timestamp", "upstream"],
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": true},
        },
        {
            "name": "list_models",
            "title": "List models",
            "description": "The models the gateway's upstreams serve, each with the upstreams that \
                serve it. Read from the configuration: no upstream is asked.",
            "inputSchema": no_arguments,
            "outputSchema": {
                "type": "object",
                "properties": {"models": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "upstreams": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["id", "upstreams"],
                }}},
                "required": ["models"],
            },
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false},
        },
        {
            "name": "upstream_status",
            "title": "Upstream status",
            "description": "Each upstream's health as the gateway's active checks see it \
                (healthy, unhealthy, initializing or unknown) and its last check's time, outcome \
                and detail. Useful when research fails.",
            "inputSchema": no_arguments,
            "outputSchema": {
                "type": "object",
                "properties": {
                    "healthy": {"type": "integer", "minimum": 0},
                    "total": {"type": "integer", "minimum": 0},
                    "upstreams": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "kind": {"type": "string", "enum": ["openai", "runpod_queue", "runpod_load_balancer"]},
                            "model": {"type": "string"},
                            "health": {"type": "string", "enum": ["unknown", "healthy", "initializing", "unhealthy"]},
                            "last_check": {
                                "type": ["object", "null"],
                                "properties": {
                                    "at": {"type": "string"},
                                    "outcome": {"type": "string", "enum": ["up", "initializing", "down"]},
                                    "detail": {"type": "string"},
                                },
                                "required": ["at", "outcome", "detail"],
                            },
                        },
                        "required": ["name", "kind", "model", "health", "last_check"],
                    }},
                },
                "required": ["healthy", "total", "upstreams"],
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false},
        },
    ]})
}

/// A validated `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCall {
    Research(ResearchRequest),
    ListModels,
    UpstreamStatus,
}

/// The metric label of a tool name: known tools only.
fn tool_label(name: &str) -> &'static str {
    match name {
        "research" => "research",
        "list_models" => "list_models",
        "upstream_status" => "upstream_status",
        _ => "other",
    }
}

/// Reads `tools/call` params. Unknown tools and arguments that fail the
/// tool's validation are -32602 (invalid params), with the field errors of
/// `/v1/research` in `data`.
pub fn parse_tool_call(params: Option<&Map<String, Value>>) -> Result<ToolCall, RpcError> {
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("tools/call needs params.name, a tool name"))?;
    let arguments = match params.and_then(|p| p.get("arguments")) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(arguments)) => arguments.clone(),
        Some(_) => {
            return Err(RpcError::invalid_params(format!(
                "arguments of tool {name:?} must be an object"
            )));
        }
    };
    match name {
        "research" => {
            // The very validation of /v1/research, on the same bytes it would read.
            let body = serde_json::to_vec(&Value::Object(arguments)).unwrap_or_default();
            match ResearchRequest::parse(&body) {
                Ok(request) => Ok(ToolCall::Research(request)),
                Err(Rejection::Invalid(errors)) => Err(invalid_arguments(name, errors)),
                Err(Rejection::MalformedJson(why)) => Err(RpcError::new(
                    INTERNAL_ERROR,
                    format!("arguments could not be re-read: {why}"),
                )),
            }
        }
        "list_models" => Ok(ToolCall::ListModels),
        "upstream_status" => Ok(ToolCall::UpstreamStatus),
        _ => Err(RpcError {
            data: Some(json!({"tools": ["research", "list_models", "upstream_status"]})),
            ..RpcError::invalid_params(format!("Unknown tool: {name:?}"))
        }),
    }
}

/// -32602 with every field error: the messages joined in `message`, the
/// pydantic-style errors (located under `arguments`) in `data`.
fn invalid_arguments(tool: &str, mut errors: Vec<FieldError>) -> RpcError {
    for error in &mut errors {
        if error.loc.first().is_some_and(|l| l == "body") {
            error.loc[0] = "arguments".into();
        }
    }
    let messages = errors
        .iter()
        .map(|e| match e.loc.get(1) {
            Some(field) => format!("{field}: {}", e.msg),
            None => e.msg.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    RpcError {
        data: Some(json!({"tool": tool, "errors": errors})),
        ..RpcError::invalid_params(format!("Invalid arguments for tool {tool:?}: {messages}"))
    }
}

/// A successful tool result whose text is the structured content as JSON,
/// as the tools specification recommends for older clients.
fn structured_result(structured: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": false,
    })
}

/// The `research` result: the answer as text, the rest as structured content;
/// a failure is a tool error (`isError`) whose text gives the HTTP status
/// `/v1/research` would have answered and why.
pub fn research_result(outcome: &Result<ResearchAnswer, ResearchFailure>) -> Value {
    match outcome {
        Ok(answer) => json!({
            "content": [{"type": "text", "text": answer.result}],
            "structuredContent": {
                "result": answer.result,
                "model": answer.model,
                "tokens_used": answer.tokens_used,
                "latency_ms": answer.latency_ms,
                "timestamp": answer.timestamp,
                "upstream": answer.upstream,
            },
            "isError": false,
        }),
        Err(failure) => {
            let reason = http::StatusCode::from_u16(failure.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let mut text = format!(
                "Research failed: {} {reason}: {}",
                failure.status, failure.detail
            );
            if let Some(retry_after) = &failure.retry_after {
                text.push_str(&format!(" (retry after {retry_after} s)"));
            }
            json!({"content": [{"type": "text", "text": text}], "isError": true})
        }
    }
}

/// The `list_models` result: each distinct model, in configuration order,
/// with the upstreams that serve it.
pub fn list_models_result(pool: &Pool) -> Value {
    let mut models: Vec<(&str, Vec<&str>)> = Vec::new();
    for upstream in pool.upstreams() {
        match models.iter_mut().find(|(m, _)| *m == upstream.model) {
            Some((_, names)) => names.push(&upstream.name),
            None => models.push((&upstream.model, vec![&upstream.name])),
        }
    }
    let models: Vec<Value> = models
        .into_iter()
        .map(|(id, upstreams)| json!({"id": id, "upstreams": upstreams}))
        .collect();
    structured_result(json!({ "models": models }))
}

/// The `upstream_status` result. Names, models and health only: no URL, no key.
pub fn upstream_status_result(pool: &Pool) -> Value {
    let upstreams: Vec<Value> = pool
        .upstreams()
        .iter()
        .map(|u| {
            let last_check = u.last_check().map(|check| {
                // Check details never hold a key; scrub anyway, as error texts are.
                let detail = crate::routes::scrub_key(&check.detail, u.api_key());
                json!({
                    "at": crate::routes::iso_time(check.at),
                    "outcome": check.outcome.as_str(),
                    "detail": detail,
                })
            });
            json!({
                "name": u.name,
                "kind": u.kind.as_str(),
                "model": u.model,
                "health": u.health().as_str(),
                "last_check": last_check,
            })
        })
        .collect();
    structured_result(json!({
        "healthy": pool.healthy_count(),
        "total": pool.upstreams().len(),
        "upstreams": upstreams,
    }))
}

// ---------------------------------------------------------------------------
// The server

/// An answer for the proxy, with the upstream that served research, if any.
#[derive(Debug)]
pub struct McpAnswer {
    pub reply: Reply,
    pub upstream: Option<String>,
}

impl From<Reply> for McpAnswer {
    fn from(reply: Reply) -> McpAnswer {
        McpAnswer {
            reply,
            upstream: None,
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
    pub fn new(config: &McpConfig) -> McpServer {
        McpServer {
            origins: OriginPolicy::new(&config.allowed_origins),
            sessions: SessionStore::new(config.session_idle_timeout, config.max_sessions),
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
                    .with_header("Allow", "POST, DELETE"),
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
            .filter(|ct| !crate::proxy::is_json(ct))
        {
            return Some(transport_error(
                415,
                TRANSPORT_ERROR,
                format!("Unsupported Media Type {content_type:?}: send application/json"),
            ));
        }
        None
    }

    /// Answers a request to `/mcp` whose body (empty for DELETE) was read,
    /// after [`Self::refuse_before_body`] let it through (the caller runs it
    /// before reading the body, so it is not run again here).
    pub async fn answer(&self, state: &AppState, request: &HttpRequest, body: &[u8]) -> McpAnswer {
        if request.method == http::Method::DELETE {
            return self.end_session(request).into();
        }
        let count = |method: &str, tool: &str, outcome: &str| {
            state
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
                if let Err(refusal) = self.check_session(request) {
                    count(method_label(&method), "", "refused");
                    return refusal.into();
                }
                count(method_label(&method), "", "accepted");
                return Reply::empty(202).into();
            }
            Message::Response => {
                if let Err(refusal) = self.check_session(request) {
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
                    let session = self.sessions.create(version);
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
        if let Err(refusal) = self.check_session(request) {
            count(method_label(&method), "", "refused");
            return refusal.into();
        }
        let mut upstream = None;
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
                        let (result, served_by) = run_tool(state, call).await;
                        upstream = served_by;
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
        }
    }

    /// Every message but `initialize` needs a supported version (when it says
    /// one) and a live session: 400 without a session id, 404 for an unknown
    /// or expired one, so that the client starts over.
    fn check_session(&self, request: &HttpRequest) -> Result<(), Reply> {
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
        match self.sessions.touch(session) {
            Some(_) => Ok(()),
            None => Err(session_not_found()),
        }
    }

    /// `DELETE /mcp`: ends the session named in the header.
    fn end_session(&self, request: &HttpRequest) -> Reply {
        if let Err(refusal) = self.check_session(request) {
            return refusal;
        }
        match request.session_id.as_deref() {
            Some(session) if self.sessions.remove(session) => Reply::empty(200),
            _ => session_not_found(),
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

/// Runs a validated tool call; research goes through the shared service.
async fn run_tool(state: &AppState, call: ToolCall) -> (Value, Option<String>) {
    match call {
        ToolCall::Research(request) => {
            let outcome = state.research.answer(&request).await;
            let upstream = match &outcome {
                Ok(answer) => Some(answer.upstream.clone()),
                Err(failure) => failure.upstream.clone(),
            };
            (research_result(&outcome), upstream)
        }
        ToolCall::ListModels => (list_models_result(&state.pool), None),
        ToolCall::UpstreamStatus => (upstream_status_result(&state.pool), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, UpstreamConfig};
    use crate::pool::CheckOutcome;

    fn request(body: &str) -> Message {
        parse_message(body.as_bytes()).unwrap()
    }

    fn refused(body: &str) -> (Value, i64) {
        let e = parse_message(body.as_bytes()).unwrap_err();
        (e.id, e.error.code)
    }

    #[test]
    fn messages_are_classified() {
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Message::Request {
                id: json!(1),
                method: "ping".into(),
                params: None
            }
        );
        assert!(matches!(
            request(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#),
            Message::Request {
                params: Some(_),
                ..
            }
        ));
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Message::Notification {
                method: "notifications/initialized".into()
            }
        );
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#),
            Message::Response
        );
    }

    #[test]
    fn broken_messages_get_the_json_rpc_codes() {
        assert_eq!(refused("{"), (Value::Null, PARSE_ERROR));
        assert_eq!(refused(""), (Value::Null, PARSE_ERROR));
        assert_eq!(
            refused(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            (Value::Null, INVALID_REQUEST)
        );
        assert_eq!(refused("42"), (Value::Null, INVALID_REQUEST));
        assert_eq!(
            refused(r#"{"id":1,"method":"ping"}"#),
            (json!(1), INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            (Value::Null, INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#),
            (Value::Null, INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":"x","method":3}"#),
            (json!("x"), INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":2,"method":"ping","params":[1]}"#),
            (json!(2), INVALID_REQUEST)
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":3}"#),
            (json!(3), INVALID_REQUEST)
        );
    }

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

    #[test]
    fn origins_default_to_loopback_on_any_port() {
        let policy = OriginPolicy::new(&McpConfig::default().allowed_origins);
        for allowed in [
            None,
            Some("http://localhost"),
            Some("http://localhost:6274"),
            Some("HTTP://LOCALHOST:3000"),
            Some("https://127.0.0.1:8443"),
            Some("http://[::1]:8080"),
        ] {
            assert!(policy.allows(allowed), "{allowed:?}");
        }
        for foreign in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.2",
            "null",
            "file://",
            "",
        ] {
            assert!(!policy.allows(Some(foreign)), "{foreign:?}");
        }
    }

    #[test]
    fn origin_entries_with_ports_and_wildcards() {
        let policy = OriginPolicy::new(&["https://app.example.com:8443".into()]);
        assert!(policy.allows(Some("https://app.example.com:8443")));
        assert!(!policy.allows(Some("https://app.example.com")));
        let policy = OriginPolicy::new(&["https://app.example.com:443".into()]);
        assert!(
            policy.allows(Some("https://app.example.com")),
            "default port"
        );
        let policy = OriginPolicy::new(&["*".into()]);
        assert!(policy.allows(Some("https://anywhere.example")));
        assert!(policy.allows(Some("null")));
        assert!(check_allowed_origin("*").is_ok());
        assert!(check_allowed_origin("vscode-webview://abc").is_ok());
        for bad in [
            "localhost",
            "http://",
            "http://localhost/",
            "http://localhost:99999",
            "http://user@host",
            "http://[::1",
            "1http://x",
        ] {
            assert!(check_allowed_origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accept_decides_the_framing() {
        assert_eq!(framing(None), Some(Framing::Json));
        assert_eq!(
            framing(Some("application/json, text/event-stream")),
            Some(Framing::Json)
        );
        assert_eq!(framing(Some("*/*")), Some(Framing::Json));
        assert_eq!(
            framing(Some("text/event-stream;q=1")),
            Some(Framing::EventStream)
        );
        assert_eq!(framing(Some("text/html, image/png")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_after_the_idle_timeout_exactly() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let id = store.create("2025-11-25");
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(
            store.touch(&id),
            Some("2025-11-25"),
            "use restarts the clock"
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.touch(&id).is_some());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(store.touch(&id), None, "idle for the whole timeout");
        assert!(store.is_empty(), "an expired session is dropped");
        assert_eq!(store.touch("nope"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_idle_longest_makes_room() {
        let store = SessionStore::new(Duration::from_secs(600), 2);
        let first = store.create("2025-11-25");
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = store.create("2025-11-25");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(store.touch(&first).is_some());
        let third = store.create("2025-06-18");
        assert_eq!(store.len(), 2);
        assert!(store.touch(&second).is_none(), "idle the longest");
        assert!(store.touch(&first).is_some());
        assert_eq!(store.touch(&third), Some("2025-06-18"));
        assert!(store.remove(&third));
        assert!(!store.remove(&third));
        assert_ne!(first, third);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_sessions_are_swept_when_a_new_one_starts() {
        let store = SessionStore::new(Duration::from_secs(10), 100);
        for _ in 0..5 {
            store.create("2025-11-25");
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        store.create("2025-11-25");
        assert_eq!(store.len(), 1);
    }

    fn call(params: Value) -> Result<ToolCall, RpcError> {
        parse_tool_call(params.as_object())
    }

    #[test]
    fn research_arguments_are_validated_like_v1_research() {
        assert_eq!(
            call(json!({"name": "research", "arguments": {"query": "q"}})).unwrap(),
            ToolCall::Research(ResearchRequest {
                query: "q".into(),
                max_tokens: 2000,
                temperature: 0.7
            })
        );
        let error =
            call(json!({"name": "research", "arguments": {"max_tokens": 50, "temperature": 3}}))
                .unwrap_err();
        assert_eq!(error.code, INVALID_PARAMS);
        assert_eq!(
            error.message,
            "Invalid arguments for tool \"research\": query: Field required; max_tokens: Input \
             should be greater than or equal to 100; temperature: Input should be less than or \
             equal to 2.0"
        );
        let data = error.data.unwrap();
        assert_eq!(data["tool"], "research");
        assert_eq!(data["errors"][0]["loc"], json!(["arguments", "query"]));
        assert_eq!(data["errors"][1]["type"], "greater_than_equal");
        assert_eq!(
            call(json!({"name": "research"})).unwrap_err().code,
            INVALID_PARAMS,
            "no arguments: query missing"
        );
        assert_eq!(
            call(json!({"name": "research", "arguments": "q"}))
                .unwrap_err()
                .code,
            INVALID_PARAMS
        );
    }

    #[test]
    fn unknown_tools_and_missing_names_are_invalid_params() {
        let error = call(json!({"name": "nope"})).unwrap_err();
        assert_eq!(error.code, INVALID_PARAMS);
        assert_eq!(error.message, "Unknown tool: \"nope\"");
        assert_eq!(call(json!({})).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(parse_tool_call(None).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(
            call(json!({"name": "list_models", "arguments": {}})).unwrap(),
            ToolCall::ListModels
        );
        assert_eq!(
            call(json!({"name": "upstream_status"})).unwrap(),
            ToolCall::UpstreamStatus
        );
    }

    #[test]
    fn every_tool_has_object_schemas_and_research_uses_the_route_constants() {
        let list = tools_list();
        let tools = list["tools"].as_array().unwrap();
        let names: Vec<_> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["research", "list_models", "upstream_status"]);
        for tool in tools {
            assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
            assert_eq!(tool["outputSchema"]["type"], "object", "{tool}");
            assert!(tool["description"].as_str().unwrap().len() > 20);
        }
        let properties = &tools[0]["inputSchema"]["properties"];
        assert_eq!(properties["query"]["maxLength"], 5000);
        assert_eq!(properties["max_tokens"]["minimum"], 100);
        assert_eq!(properties["max_tokens"]["maximum"], 4000);
        assert_eq!(properties["max_tokens"]["default"], 2000);
        assert_eq!(properties["temperature"]["maximum"], 2.0);
        assert_eq!(properties["temperature"]["default"], 0.7);
    }

    #[test]
    fn research_failures_are_tool_errors_with_the_status() {
        let failure = ResearchFailure {
            status: 429,
            detail: "vLLM backend a is rate limited: slow down".into(),
            retry_after: Some("3".into()),
            upstream: Some("a".into()),
        };
        let result = research_result(&Err(failure));
        assert_eq!(result["isError"], true);
        assert_eq!(
            result["content"][0]["text"],
            "Research failed: 429 Too Many Requests: vLLM backend a is rate limited: slow down \
             (retry after 3 s)"
        );
        let answer = ResearchAnswer {
            result: "the answer".into(),
            model: "m".into(),
            tokens_used: 12,
            latency_ms: 34,
            timestamp: "2026-01-01T00:00:00.000000+00:00".into(),
            upstream: "a".into(),
        };
        let result = research_result(&Ok(answer));
        assert_eq!(result["isError"], false);
        assert_eq!(result["content"][0]["text"], "the answer");
        assert_eq!(result["structuredContent"]["tokens_used"], 12);
        assert_eq!(result["structuredContent"]["upstream"], "a");
    }

    fn pool() -> Pool {
        let upstream = |name: &str, model: Option<&str>| UpstreamConfig {
            name: name.into(),
            base_url: Some("http://127.0.0.1:9/v1".into()),
            api_key: Some(format!("sk-secret-{name}")),
            model: model.map(str::to_string),
            ..UpstreamConfig::default()
        };
        let config = Config {
            upstreams: vec![
                upstream("a", None),
                upstream("b", Some("other")),
                upstream("c", None),
            ],
            ..Config::default()
        };
        Pool::from_config(&config, std::sync::Arc::new(crate::metrics::Metrics::new())).unwrap()
    }

    #[test]
    fn models_are_deduplicated_with_their_upstreams() {
        let result = list_models_result(&pool());
        assert_eq!(
            result["structuredContent"],
            json!({"models": [
                {"id": "meta-llama/Llama-3.1-8B-Instruct", "upstreams": ["a", "c"]},
                {"id": "other", "upstreams": ["b"]},
            ]})
        );
        let text: Value =
            serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, result["structuredContent"]);
    }

    #[test]
    fn upstream_status_shows_health_and_never_a_key() {
        let pool = pool();
        pool.upstreams()[0].observe_check(
            CheckOutcome::Down,
            "HTTP 401 for key sk-secret-a".into(),
            1,
            1,
        );
        pool.upstreams()[1].observe_check(CheckOutcome::Up, "HTTP 200".into(), 1, 1);
        let result = upstream_status_result(&pool);
        let status = &result["structuredContent"];
        assert_eq!(
            (status["healthy"].clone(), status["total"].clone()),
            (json!(1), json!(3))
        );
        assert_eq!(status["upstreams"][0]["health"], "unhealthy");
        assert_eq!(status["upstreams"][0]["last_check"]["outcome"], "down");
        assert_eq!(
            status["upstreams"][0]["last_check"]["detail"],
            "HTTP 401 for key [redacted]"
        );
        assert_eq!(status["upstreams"][1]["health"], "healthy");
        assert_eq!(status["upstreams"][2]["health"], "unknown");
        assert_eq!(status["upstreams"][2]["last_check"], Value::Null);
        assert!(!result.to_string().contains("sk-secret"));
    }
}
