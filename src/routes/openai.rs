//! The OpenAI-compatible front door: `/v1/chat/completions` and
//! `/v1/completions` go to the upstream the pool selects for the requested
//! model, streams pass through chunk by chunk as the upstream sends them, and
//! `/v1/models` lists what the upstreams serve.
// Errors carry OpenAI's four fields plus what the proxy needs; they are the
// cold path, so their size in a `Result` is of no concern.
#![allow(clippy::result_large_err)]

use super::{Refusal, Reply};
use crate::config::Config;
use crate::pool::call::{
    Ask, AttemptError, CallFailure, Caller, InvalidAnswer, ModelNamedBy, Prepared, StreamEnd,
    Usage, Waiting,
};
use crate::pool::{Pool, Stop, Upstream};
use crate::sse::SseWatcher;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as Session;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which OpenAI operation a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
}

impl Endpoint {
    /// The path under the upstream's base URL.
    fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
        }
    }
}

/// An error in OpenAI's format: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiError {
    pub status: u16,
    pub message: String,
    pub kind: String,
    pub param: Option<String>,
    pub code: Value,
    pub retry_after: Option<String>,
    pub upstream: Option<String>,
}

impl OpenAiError {
    pub fn new(status: u16, kind: &str, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            status,
            message: message.into(),
            kind: kind.to_string(),
            param: None,
            code: Value::Null,
            retry_after: None,
            upstream: None,
        }
    }

    fn param(mut self, param: &str) -> OpenAiError {
        self.param = Some(param.to_string());
        self
    }

    pub(crate) fn code(mut self, code: &str) -> OpenAiError {
        self.code = json!(code);
        self
    }

    /// An upstream's error answer in either vLLM format (nested like
    /// OpenAI's, or flat with `"object":"error"`), RunPod's `{"error":"…"}`
    /// or plain text, with its status kept and any key scrubbed.
    pub fn from_upstream(
        status: u16,
        body: &[u8],
        upstream: &Upstream,
        retry_after: Option<&str>,
    ) -> OpenAiError {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let fields = parsed.as_ref().and_then(|v| match v.get("error") {
            Some(Value::Object(e)) => Some(e.clone()),
            _ if v.get("object").and_then(Value::as_str) == Some("error") => v.as_object().cloned(),
            _ => None,
        });
        // Every field passed on is scrubbed of the upstream's key, then cut.
        let key = upstream.api_key();
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => Some(super::shorten(super::scrub_key(s, key))),
            Some(Value::Null) | None => None,
            Some(other) => Some(super::shorten(super::scrub_key(&other.to_string(), key))),
        };
        let message = super::upstream_error_message(body, key)
            .unwrap_or_else(|| format!("upstream {} answered HTTP {status}", upstream.name));
        let default_kind = match status {
            400 | 404 | 413 | 422 => "invalid_request_error",
            401 | 403 => "authentication_error",
            429 => "rate_limit_error",
            _ => "upstream_error",
        };
        OpenAiError {
            status,
            message,
            kind: fields
                .as_ref()
                .and_then(|f| text(f.get("type")))
                .unwrap_or_else(|| default_kind.to_string()),
            param: fields.as_ref().and_then(|f| text(f.get("param"))),
            // A number stays a number (vLLM's `"code": 404`); anything else
            // is text, scrubbed.
            code: match fields.as_ref().and_then(|f| f.get("code")) {
                Some(Value::Number(n)) => Value::Number(n.clone()),
                Some(Value::Null) | None => Value::Null,
                other => text(other).map_or(Value::Null, Value::String),
            },
            retry_after: retry_after.map(str::to_string),
            upstream: Some(upstream.name.clone()),
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    pub fn reply(&self) -> Reply {
        let mut reply = Reply::json(self.status, &self.body());
        if let Some(retry_after) = &self.retry_after {
            reply = reply.with_header("Retry-After", retry_after.clone());
        }
        if let Some(upstream) = &self.upstream {
            reply = reply.with_header("X-Upstream", upstream.clone());
        }
        reply
    }
}

/// A refusal in OpenAI's format.
pub fn refusal(refusal: &Refusal) -> Reply {
    let (status, message) = match refusal {
        Refusal::Admission(a) => {
            return OpenAiError::new(a.status, a.kind, a.message.clone())
                .code(a.code)
                .reply()
                .with_header(a.header.0, a.header.1.clone());
        }
        Refusal::BodyTimedOut(limit) => (
            408,
            format!(
                "The request body was not received within {}.",
                humantime::format_duration(*limit)
            ),
        ),
        Refusal::MediaType(content_type) => (
            415,
            format!("Unsupported media type {content_type:?}: send application/json."),
        ),
        Refusal::BodyTooLarge(limit) => (
            413,
            format!("The request body is larger than the limit of {limit} bytes."),
        ),
    };
    OpenAiError::new(status, "invalid_request_error", message).reply()
}

/// The parts of a request body the gateway reads; the rest passes untouched.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage` is `true`: the client wants the
    /// usage chunk at the end of its stream.
    pub asks_usage: bool,
    original: Bytes,
}

impl ParsedRequest {
    /// Reads `model` and `stream` without building the rest of the document:
    /// the other fields are only checked for well-formedness (borrowed raw
    /// values), so a long conversation costs one scan, not a tree.
    pub fn parse(body: Bytes, endpoint: Endpoint) -> Result<ParsedRequest, OpenAiError> {
        use serde_json::value::RawValue;
        use std::borrow::Cow;
        let fields: std::collections::HashMap<Cow<'_, str>, &RawValue> =
            serde_json::from_slice(&body).map_err(|e| {
                if e.classify() == serde_json::error::Category::Data {
                    OpenAiError::new(
                        400,
                        "invalid_request_error",
                        "The request body must be a JSON object.",
                    )
                } else {
                    OpenAiError::new(
                        400,
                        "invalid_request_error",
                        format!("We could not parse the JSON body of your request: {e}"),
                    )
                }
            })?;
        let model = match fields.get("model") {
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                Ok(m) if !m.is_empty() => m,
                _ => {
                    return Err(OpenAiError::new(
                        400,
                        "invalid_request_error",
                        "`model` must be a non-empty string.",
                    )
                    .param("model"));
                }
            },
            None => {
                return Err(OpenAiError::new(
                    400,
                    "invalid_request_error",
                    "You must provide a model parameter.",
                )
                .param("model"));
            }
        };
        let stream = match fields.get("stream").map(|raw| raw.get()) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(OpenAiError::new(
                    400,
                    "invalid_request_error",
                    "`stream` must be a boolean.",
                )
                .param("stream"));
            }
        };
        // What the upstream could only refuse is refused here, in the same
        // words, without spending an upstream call (and the served spec says
        // exactly this).
        match endpoint {
            Endpoint::ChatCompletions => check_messages(fields.get("messages").copied())?,
            Endpoint::Completions => check_prompt(fields.get("prompt").copied())?,
        }
        #[derive(serde::Deserialize)]
        struct StreamOptions {
            include_usage: Option<bool>,
        }
        let asks_usage = fields
            .get("stream_options")
            .and_then(|raw| serde_json::from_str::<StreamOptions>(raw.get()).ok())
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        drop(fields);
        Ok(ParsedRequest {
            model,
            stream,
            asks_usage,
            original: body,
        })
    }

    /// The body for an upstream serving the model as `served`: the client's
    /// bytes untouched when the name is the same, else with only `model`
    /// changed; with `ask_usage`, also `stream_options.include_usage` set
    /// (its other options kept).
    pub fn body_for(&self, served: &str, ask_usage: bool) -> Bytes {
        if served == self.model && !ask_usage {
            return self.original.clone();
        }
        let Ok(mut object) = serde_json::from_slice::<Map<String, Value>>(&self.original) else {
            return self.original.clone();
        };
        object.insert("model".into(), Value::String(served.to_string()));
        if ask_usage {
            let options = object
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if !options.is_object() {
                *options = Value::Object(Map::new());
            }
            options["include_usage"] = Value::Bool(true);
        }
        serde_json::to_vec(&Value::Object(object))
            .map(Bytes::from)
            .unwrap_or_else(|_| self.original.clone())
    }
}

/// How a proxied request ended (always with a 200: anything else is an
/// `OpenAiError`), for the access log and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub upstream: String,
    /// Prompt plus completion tokens, when the upstream reported them.
    pub tokens: Option<u64>,
    /// Tokens to charge to a client with a token budget: `tokens`, or for a
    /// stream that ended without usage (the client left early, the upstream
    /// broke off) an estimate: a token per 4 bytes of the request and one
    /// per chunk relayed.
    pub charge: Option<u64>,
}

/// Sends OpenAI requests through the pool.
pub struct OpenAiService {
    caller: Arc<Caller>,
    aliases: BTreeMap<String, Vec<String>>,
    started: u64,
}

impl OpenAiService {
    pub fn new(config: &Config, caller: Arc<Caller>) -> OpenAiService {
        OpenAiService {
            caller,
            aliases: config
                .model_aliases
                .iter()
                .map(|(k, v)| (k.clone(), v.as_slice().to_vec()))
                .collect(),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn pool(&self) -> &Pool {
        self.caller.pool()
    }

    /// The name under which `upstream` serves the requested model, if it does:
    /// the name itself, or the alias target it serves.
    /// Borrowed: it runs for every candidate of every selection.
    fn served_name<'a>(&'a self, upstream: &Upstream, requested: &'a str) -> Option<&'a str> {
        if let Some(targets) = self.aliases.get(requested) {
            if let Some(t) = targets.iter().find(|t| upstream.knows_model(t)) {
                return Some(t);
            }
            if upstream.serves_anything() {
                return targets.first().map(String::as_str);
            }
        }
        upstream.serves(requested).then_some(requested)
    }

    /// Whether `upstream` is known (configured or discovered) to serve the
    /// requested model or one of its alias targets.
    fn known_to_serve(&self, upstream: &Upstream, requested: &str) -> bool {
        upstream.knows_model(requested)
            || self
                .aliases
                .get(requested)
                .is_some_and(|targets| targets.iter().any(|t| upstream.knows_model(t)))
    }

    /// The label tokens are counted under: only names the configuration or
    /// discovery vouched for become labels.
    fn token_model(&self, upstream: &Upstream, served: &str) -> String {
        if upstream.knows_model(served) || self.aliases.values().flatten().any(|m| m == served) {
            served.to_string()
        } else {
            "unlisted".to_string()
        }
    }

    /// `GET /v1/models`: every model an upstream is known to serve, and every
    /// alias, in OpenAI's list format.
    pub fn models(&self) -> Reply {
        let mut names: Vec<String> = Vec::new();
        for u in self.pool().upstreams() {
            for m in u.served_models() {
                if !names.contains(&m) {
                    names.push(m);
                }
            }
        }
        for alias in self.aliases.keys() {
            if !names.contains(alias) {
                names.push(alias.clone());
            }
        }
        let data: Vec<Value> = names
            .into_iter()
            .map(|id| {
                json!({"id": id, "object": "model", "created": self.started, "owned_by": "context7-lb"})
            })
            .collect();
        Reply::json(200, &json!({"object": "list", "data": data}))
    }

    /// Proxies one request. `Err` means nothing was written yet and the error
    /// is to be answered; `Ok` means the answer was written (or the client left).
    /// `count_tokens` (the client has a token budget), or an upstream with
    /// token prices: a stream whose client did not ask for usage asks for it
    /// upstream, and the usage chunk is taken out of what the client
    /// receives, so streams are charged and priced too.
    pub async fn serve(
        &self,
        session: &mut Session,
        endpoint: Endpoint,
        body: Bytes,
        count_tokens: bool,
    ) -> Result<Served, OpenAiError> {
        let request = ParsedRequest::parse(body, endpoint)?;
        let pool = self.pool();
        // Usage is also what prices tokens: with token `pricing`, streams
        // ask for it whatever the client asked (and see it only if they did).
        let ask_usage =
            (count_tokens || pool.prices_tokens()) && request.stream && !request.asks_usage;
        if pool.is_empty() {
            return Err(OpenAiError::new(
                503,
                "service_unavailable",
                "No upstream is configured.",
            ));
        }
        let known = pool
            .upstreams()
            .iter()
            .any(|u| self.served_name(u, &request.model).is_some());
        if !known {
            return Err(OpenAiError::new(
                404,
                "invalid_request_error",
                format!("The model `{}` does not exist.", request.model),
            )
            .param("model")
            .code("model_not_found"));
        }
        // Upstreams known to serve the model come first; those whose models
        // are unknown take it only when none is known to.
        let known_somewhere = pool
            .upstreams()
            .iter()
            .any(|u| self.known_to_serve(u, &request.model));
        let eligible = |u: &Upstream| {
            if known_somewhere {
                self.known_to_serve(u, &request.model)
            } else {
                self.served_name(u, &request.model).is_some()
            }
        };
        let prepare = |u: &Upstream| {
            let served = self
                .served_name(u, &request.model)
                .unwrap_or(&request.model);
            Prepared {
                body: request.body_for(served, ask_usage),
                token_model: self.token_model(u, served),
            }
        };
        let ask = Ask {
            endpoint: endpoint.path(),
            model_named_by: ModelNamedBy::Client,
            eligible: &eligible,
            prepare: &prepare,
        };
        if request.stream {
            // Inline, not boxed: a stream holds its future for as long as it
            // lasts, and one allocation for both takes less memory per open
            // stream than two (the non-streamed path carries the room).
            let estimate = count_tokens.then(|| request.original.len() as u64 / 4);
            return self
                .relay_stream(session, &ask, &request.model, ask_usage, estimate)
                .await;
        }
        // A 2xx answer of the OpenAI API is JSON; anything else (an HTML page
        // from a proxy in between, a body cut short under a matching
        // Content-Length) would reach the client as a broken 200. Only `usage`
        // is read: serde checks the rest without building it.
        let parse = |body: &[u8]| {
            #[derive(serde::Deserialize)]
            struct WithUsage {
                usage: Option<Usage>,
            }
            let answer: WithUsage =
                serde_json::from_slice(body).map_err(|e| InvalidAnswer(e.to_string()))?;
            Ok(((), answer.usage))
        };
        let answered = match self.caller.call(&ask, &parse).await {
            Ok(answered) => answered,
            Err(failure) => return Err(self.failure(failure, &request.model, false)),
        };
        let upstream = &answered.upstream.name;
        let content_type = answered
            .content_type
            .as_deref()
            .unwrap_or("application/json");
        let mut header = response_header(200, content_type, upstream).map_err(internal)?;
        header
            .insert_header(
                http::header::CONTENT_LENGTH,
                answered.body.len().to_string(),
            )
            .map_err(internal)?;
        // The client may have gone; nothing more to do for it then.
        if session
            .write_response_header(Box::new(header))
            .await
            .is_ok()
        {
            let _ = session.write_response_body(answered.body, true).await;
        }
        let tokens = answered.usage.map(|u| u.total());
        Ok(Served {
            upstream: upstream.clone(),
            tokens,
            charge: tokens,
        })
    }

    /// Passes a stream through: the call waits for its first chunk (until
    /// then another upstream can still be tried), then every chunk is relayed
    /// as it comes. A client that leaves cancels the upstream request; an
    /// upstream that dies ends the client's stream with an error event and
    /// `[DONE]`.
    async fn relay_stream(
        &self,
        session: &mut Session,
        ask: &Ask<'_>,
        model: &str,
        hide_usage: bool,
        prompt_estimate: Option<u64>,
    ) -> Result<Served, OpenAiError> {
        let mut stream = match self.caller.open_stream(ask).await {
            Ok(stream) => stream,
            Err(failure) => return Err(self.failure(failure, model, true)),
        };
        let upstream = stream.upstream.name.clone();
        let mut watcher = if hide_usage {
            SseWatcher::hiding_usage()
        } else {
            SseWatcher::new()
        };
        let first = watcher.pass(stream.first.clone());
        let written = async {
            let mut header = response_header(200, &stream.content_type, &upstream)?;
            header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            session.write_response_header(Box::new(header)).await?;
            // Hiding usage can hold the first chunk's only event back whole.
            if first.is_empty() {
                return Ok(());
            }
            session.write_response_body(first, false).await
        }
        .await;
        // A stream already started cannot move: when the checks take its
        // upstream out (hung mid-stream), it ends with an error event.
        let serving = stream.upstream.clone();
        let taken_out = serving.taken_out();
        tokio::pin!(taken_out);
        taken_out.as_mut().enable();
        let ending = if written.is_err() {
            client_gone(session)
        } else {
            loop {
                tokio::select! {
                    // Biased: a chunk that is there is relayed without first
                    // polling the other branches (nor drawing a random order);
                    // a client that left is seen by the next write or, while
                    // the upstream is quiet, by the idle read.
                    biased;
                    chunk = stream.next_chunk() => match chunk {
                        Ok(Some(chunk)) => {
                            // What the upstream sent behind it goes in the same write.
                            let (chunk, after) = stream.gather(chunk, GATHER_BYTES);
                            let chunk = watcher.pass(chunk);
                            if !chunk.is_empty()
                                && session.write_response_body(chunk, false).await.is_err()
                            {
                                break client_gone(session);
                            }
                            match after {
                                None => {}
                                Some(Ok(())) => break ended(&watcher),
                                Some(Err(e)) => break StreamEnd::UpstreamFailed(e.to_string()),
                            }
                        }
                        Ok(None) => break ended(&watcher),
                        Err(e) => break StreamEnd::UpstreamFailed(e.to_string()),
                    },
                    () = &mut taken_out => {
                        break StreamEnd::UpstreamFailed("taken out by its health checks".into());
                    }
                    gone = session.read_body_or_idle(true) => {
                        let _ = gone;
                        break StreamEnd::ClientLeft;
                    }
                }
            }
        };
        let usage = watcher.usage();
        stream.finish(&ending, usage);
        if let (Some(held), StreamEnd::Complete | StreamEnd::UpstreamFailed(_)) =
            (watcher.held_back(), &ending)
        {
            let _ = session.write_response_body(held, false).await;
        }
        match ending {
            StreamEnd::Complete => {
                let _ = session.write_response_body(Bytes::new(), true).await;
            }
            StreamEnd::ClientLeft | StreamEnd::ClientStalled => {
                // The answer is cut: its connection cannot carry another.
                session.set_keepalive(None);
            }
            StreamEnd::UpstreamFailed(why) => {
                let mut error = OpenAiError::new(
                    502,
                    "upstream_error",
                    format!("Upstream {upstream} failed mid-stream: {why}"),
                );
                error.upstream = Some(upstream.clone());
                let tail = format!("data: {}\n\ndata: [DONE]\n\n", error.body());
                let _ = session.write_response_body(Bytes::from(tail), false).await;
                let _ = session.write_response_body(Bytes::new(), true).await;
            }
        }
        let tokens = usage.map(|u| u.total());
        // `[DONE]` is no token; every other chunk counts as one.
        let relayed = watcher.events().saturating_sub(u64::from(watcher.done()));
        Ok(Served {
            upstream,
            tokens,
            charge: tokens.or(prompt_estimate.map(|prompt| prompt + relayed)),
        })
    }

    /// A failed call as OpenAI's error, for `model` (streamed or not).
    fn failure(&self, failure: CallFailure, model: &str, streamed: bool) -> OpenAiError {
        let (error, upstream) = match failure {
            CallFailure::NoUpstream { stop, .. } => {
                let message = match stop {
                    Stop::NoneConfigured | Stop::NoneHealthy => {
                        format!("No healthy upstream serves `{model}` right now.")
                    }
                    Stop::AllBusy => {
                        format!("Every upstream serving `{model}` is at its concurrency limit.")
                    }
                    Stop::AttemptsExhausted | Stop::BudgetSpent => {
                        "No upstream could take the request.".to_string()
                    }
                };
                return OpenAiError::new(503, "service_unavailable", message);
            }
            CallFailure::Attempt { error, upstream } => (error, upstream),
        };
        let name = &upstream.name;
        let (status, kind, message) = match error {
            AttemptError::Status {
                status,
                body,
                retry_after,
            } => {
                return OpenAiError::from_upstream(
                    status,
                    &body,
                    &upstream,
                    retry_after.as_deref(),
                );
            }
            AttemptError::Connect(why) => (
                503,
                "upstream_error",
                format!("Upstream {name} failed: {why}"),
            ),
            e @ AttemptError::TakenOut => (
                502,
                "upstream_error",
                format!("Upstream {name} failed: {e}"),
            ),
            AttemptError::Reset(why) | AttemptError::Stale(why) => (
                502,
                "upstream_error",
                format!("Upstream {name} failed: {why}"),
            ),
            AttemptError::Broken(why) if streamed => (
                502,
                "upstream_error",
                format!("Upstream {name} failed before its first token: {why}"),
            ),
            AttemptError::Broken(why) => (
                502,
                "upstream_error",
                format!("Upstream {name} failed: {why}"),
            ),
            e @ AttemptError::TooLarge(_) => (
                502,
                "upstream_error",
                format!("Upstream {name} failed: {e}"),
            ),
            AttemptError::Timeout {
                waiting: Waiting::FirstChunk,
                ..
            } => (
                504,
                "timeout",
                format!("Upstream {name} sent no token in time."),
            ),
            AttemptError::Timeout {
                retryable: true, ..
            } => (
                504,
                "timeout",
                format!("Upstream {name} did not start answering in time."),
            ),
            AttemptError::Timeout { limit, .. } => (
                504,
                "timeout",
                format!("No answer within {}.", humantime::format_duration(limit)),
            ),
            AttemptError::Invalid(_) if streamed => (
                502,
                "upstream_error",
                format!("Upstream {name} ended its stream before any token."),
            ),
            AttemptError::Invalid(why) => (
                502,
                "upstream_error",
                format!("Upstream {name} sent an answer that is not JSON: {why}"),
            ),
            e @ AttemptError::CutOff { .. } => {
                (504, "timeout", format!("Upstream {name} timed out: {e}."))
            }
            AttemptError::NoCapacity(why) => (
                503,
                "service_unavailable",
                format!("Upstream {name} has no worker available: {why}"),
            ),
        };
        let mut error = OpenAiError::new(status, kind, message);
        error.upstream = Some(name.clone());
        error
    }
}

/// How a failed write to the client ended its stream.
/// How a stream ended whose upstream body came to its end: complete only
/// with `[DONE]`.
fn ended(watcher: &SseWatcher) -> StreamEnd {
    if watcher.done() {
        StreamEnd::Complete
    } else {
        StreamEnd::UpstreamFailed("the stream ended without [DONE]".into())
    }
}

/// Most bytes of a stream gathered into one write to the client.
const GATHER_BYTES: usize = 16 * 1024;

/// How a stream ended whose write to the client failed.
fn client_gone(session: &Session) -> StreamEnd {
    if crate::guard::write_timed_out(session) {
        StreamEnd::ClientStalled
    } else {
        StreamEnd::ClientLeft
    }
}

fn response_header(
    status: u16,
    content_type: &str,
    upstream: &str,
) -> pingora::Result<ResponseHeader> {
    let mut header = ResponseHeader::build_no_case(status, Some(6))?;
    header.insert_header(http::header::CONTENT_TYPE, content_type)?;
    header.insert_header(http::header::CACHE_CONTROL, "no-cache")?;
    header.insert_header("X-Upstream", upstream)?;
    if let Some(id) = crate::scope::request_id() {
        header.insert_header("X-Request-Id", &*id)?;
    }
    Ok(header)
}

fn internal(e: Box<pingora::Error>) -> OpenAiError {
    OpenAiError::new(
        500,
        "internal_error",
        format!("could not build the answer: {e}"),
    )
}

/// `messages`: a non-empty array of message objects.
fn check_messages(raw: Option<&serde_json::value::RawValue>) -> Result<(), OpenAiError> {
    let refuse = |message: &str| {
        Err(OpenAiError::new(400, "invalid_request_error", message).param("messages"))
    };
    let Some(raw) = raw else {
        return refuse("You must provide `messages`.");
    };
    match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(raw.get()) {
        Ok(items) if items.is_empty() => refuse("`messages` must not be empty."),
        Ok(items) if items.iter().all(|m| m.get().starts_with('{')) => Ok(()),
        _ => refuse("`messages` must be an array of message objects."),
    }
}

/// `prompt`: a text, or a non-empty array of texts, of token ids, or of
/// non-empty arrays of token ids (what vLLM takes).
fn check_prompt(raw: Option<&serde_json::value::RawValue>) -> Result<(), OpenAiError> {
    use serde_json::value::RawValue;
    let refuse = |message: &str| {
        Err(OpenAiError::new(400, "invalid_request_error", message).param("prompt"))
    };
    let Some(raw) = raw else {
        return refuse("You must provide a `prompt`.");
    };
    let text = raw.get();
    if text.starts_with('"') {
        return Ok(());
    }
    let shape = "`prompt` must be a string, or a non-empty array of strings, of token ids or of \
                 arrays of token ids.";
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) else {
        return refuse(shape);
    };
    // A token id is a whole number from 0; JSON Schema counts `5.0` as one too.
    let id = |n: f64| n >= 0.0 && n.fract() == 0.0;
    let all = |ok: &dyn Fn(&str) -> bool| items.iter().all(|i| ok(i.get()));
    let well_formed = !items.is_empty()
        && (all(&|i| i.starts_with('"'))
            || all(&|i| serde_json::from_str::<f64>(i).is_ok_and(id))
            || all(&|i| {
                serde_json::from_str::<Vec<f64>>(i)
                    .is_ok_and(|ids| !ids.is_empty() && ids.into_iter().all(id))
            }));
    if well_formed { Ok(()) } else { refuse(shape) }
}
