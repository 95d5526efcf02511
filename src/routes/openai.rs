//! The OpenAI-compatible front door: `/v1/chat/completions` and
//! `/v1/completions` go to the upstream the pool selects for the requested
//! model, streams pass through chunk by chunk as the upstream sends them, and
//! `/v1/models` lists what the upstreams serve.
// Errors carry OpenAI's four fields plus what the proxy needs; they are the
// cold path, so their size in a `Result` is of no concern.
#![allow(clippy::result_large_err)]

use super::Reply;
use crate::client::{Exchange, UpstreamClient, UpstreamRequest};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool::{Outcome, Pool, Stop, Upstream};
use crate::sse::SseWatcher;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

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
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let message = super::upstream_error_message(body)
            .unwrap_or_else(|| format!("upstream {} answered HTTP {status}", upstream.name));
        let message = super::scrub_key(&message, upstream.api_key());
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
            code: fields
                .as_ref()
                .and_then(|f| f.get("code").cloned())
                .unwrap_or(Value::Null),
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

/// The parts of a request body the gateway reads; the rest passes untouched.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub model: String,
    pub stream: bool,
    original: Bytes,
}

impl ParsedRequest {
    /// Reads `model` and `stream` without building the rest of the document:
    /// the other fields are only checked for well-formedness (borrowed raw
    /// values), so a long conversation costs one scan, not a tree.
    pub fn parse(body: Bytes) -> Result<ParsedRequest, OpenAiError> {
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
        drop(fields);
        Ok(ParsedRequest {
            model,
            stream,
            original: body,
        })
    }

    /// The body for an upstream serving the model as `served`: the client's
    /// bytes untouched when the name is the same, else with only `model` changed.
    pub fn body_for(&self, served: &str) -> Bytes {
        if served == self.model {
            return self.original.clone();
        }
        let Ok(mut object) = serde_json::from_slice::<Map<String, Value>>(&self.original) else {
            return self.original.clone();
        };
        object.insert("model".into(), Value::String(served.to_string()));
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
}

/// Sends OpenAI requests through the pool.
pub struct OpenAiService {
    pool: Arc<Pool>,
    client: UpstreamClient,
    metrics: Arc<Metrics>,
    aliases: BTreeMap<String, Vec<String>>,
    total_timeout: Duration,
    first_byte_timeout: Option<Duration>,
    max_upstream_body: usize,
    started: u64,
}

/// A failed attempt: retry it elsewhere, or answer with it.
enum Failed {
    Retry(OpenAiError),
    Answer(OpenAiError),
}

impl OpenAiService {
    pub fn new(config: &Config, pool: Arc<Pool>, metrics: Arc<Metrics>) -> OpenAiService {
        OpenAiService {
            pool,
            client: UpstreamClient::new(config.timeouts.connect),
            metrics,
            aliases: config
                .model_aliases
                .iter()
                .map(|(k, v)| (k.clone(), v.as_slice().to_vec()))
                .collect(),
            total_timeout: config.timeouts.total,
            first_byte_timeout: config.timeouts.first_byte,
            max_upstream_body: config.limits.max_upstream_body_bytes,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
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

    /// `GET /v1/models`: every model an upstream is known to serve, and every
    /// alias, in OpenAI's list format.
    pub fn models(&self) -> Reply {
        let mut names: Vec<String> = Vec::new();
        for u in self.pool.upstreams() {
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
    pub async fn serve(
        &self,
        session: &mut Session,
        endpoint: Endpoint,
        body: Bytes,
    ) -> Result<Served, OpenAiError> {
        let request = ParsedRequest::parse(body)?;
        if self.pool.is_empty() {
            return Err(OpenAiError::new(
                503,
                "service_unavailable",
                "No upstream is configured.",
            ));
        }
        let known = self
            .pool
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
        let known_somewhere = self
            .pool
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
        let started = Instant::now();
        let deadline = started + self.total_timeout;
        let mut tried = Vec::new();
        let mut last: Option<OpenAiError> = None;
        loop {
            let upstream = match self.pool.next_attempt(&mut tried, &eligible) {
                Ok(u) => u,
                Err(stop) => {
                    return Err(last.unwrap_or_else(|| match stop {
                        Stop::NoneConfigured | Stop::NoneHealthy => OpenAiError::new(
                            503,
                            "service_unavailable",
                            format!("No healthy upstream serves `{}` right now.", request.model),
                        ),
                        Stop::AllBusy => OpenAiError::new(
                            503,
                            "service_unavailable",
                            format!(
                                "Every upstream serving `{}` is at its concurrency limit.",
                                request.model
                            ),
                        ),
                        Stop::AttemptsExhausted | Stop::BudgetSpent => OpenAiError::new(
                            503,
                            "service_unavailable",
                            "No upstream could take the request.",
                        ),
                    }));
                }
            };
            let served = self
                .served_name(&upstream, &request.model)
                .unwrap_or(&request.model);
            match self
                .attempt(session, endpoint, &request, &upstream, served, deadline)
                .await
            {
                Ok(served) => return Ok(served),
                Err(Failed::Answer(e)) => return Err(e),
                Err(Failed::Retry(e)) => {
                    log::warn!("upstream {}: {}", upstream.name, e.message);
                    last = Some(e);
                }
            }
        }
    }

    async fn attempt(
        &self,
        session: &mut Session,
        endpoint: Endpoint,
        request: &ParsedRequest,
        upstream: &Arc<Upstream>,
        served: &str,
        deadline: Instant,
    ) -> Result<Served, Failed> {
        let path = format!("{}{}", upstream.base.path, endpoint.path());
        let upstream_request = UpstreamRequest {
            method: "POST",
            url: &upstream.base,
            path: &path,
            authorization: upstream.authorization(),
            body: Some(request.body_for(served)),
            max_body: self.max_upstream_body,
            // Between two reads of a stream; a whole stream may last longer.
            read_timeout: Some(self.total_timeout),
            accept: if request.stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        };
        let first_byte_deadline = match self.first_byte_timeout {
            Some(limit) => deadline.min(Instant::now() + limit),
            None => deadline,
        };
        let failure = |status: u16, kind: &str, message: String| {
            let mut e = OpenAiError::new(status, kind, message);
            e.upstream = Some(upstream.name.clone());
            e
        };
        let timed_out = |attempt_deadline: Instant| {
            if attempt_deadline < deadline {
                Failed::Retry(failure(
                    504,
                    "timeout",
                    format!(
                        "Upstream {} did not start answering in time.",
                        upstream.name
                    ),
                ))
            } else {
                Failed::Answer(failure(
                    504,
                    "timeout",
                    format!(
                        "No answer within {}.",
                        humantime::format_duration(self.total_timeout)
                    ),
                ))
            }
        };
        let attempt = self.pool.begin(upstream);
        let opened = tokio::time::timeout_at(
            first_byte_deadline,
            self.client.open(upstream, &upstream_request),
        )
        .await;
        let exchange = match opened {
            Err(_) => {
                attempt.finish(Outcome::Failure("no answer in time".into()));
                return Err(timed_out(first_byte_deadline));
            }
            Ok(Err(e)) => {
                attempt.finish(Outcome::Failure(e.to_string()));
                let status = if e.nothing_sent() { 503 } else { 502 };
                let error = failure(
                    status,
                    "upstream_error",
                    format!("Upstream {} failed: {e}", upstream.name),
                );
                return Err(if e.before_answer() {
                    Failed::Retry(error)
                } else {
                    Failed::Answer(error)
                });
            }
            Ok(Ok(exchange)) => exchange,
        };
        let status = exchange.status();
        if !(200..300).contains(&status) {
            let retry_after = exchange.header_str("retry-after").map(str::to_string);
            let body = tokio::time::timeout_at(deadline, exchange.read_all(64 * 1024))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|r| r.body)
                .unwrap_or_default();
            let error = OpenAiError::from_upstream(status, &body, upstream, retry_after.as_deref());
            attempt.finish(match status {
                429 => Outcome::RateLimited(
                    retry_after
                        .as_deref()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs),
                ),
                s if s >= 500 || matches!(s, 401 | 403 | 408) => {
                    Outcome::Failure(format!("HTTP {status}: {}", error.message))
                }
                _ => Outcome::Neutral,
            });
            return Err(if matches!(status, 502 | 503) {
                Failed::Retry(error)
            } else {
                Failed::Answer(error)
            });
        }
        if request.stream {
            // Boxed: a stream lives long enough for one allocation not to
            // matter, and the non-streamed path then carries no room for it.
            return Box::pin(self.relay_stream(
                session,
                exchange,
                upstream,
                served,
                attempt,
                first_byte_deadline,
                deadline,
            ))
            .await;
        }
        let reply = match tokio::time::timeout_at(
            deadline,
            exchange.read_all(self.max_upstream_body),
        )
        .await
        {
            Err(_) => {
                attempt.finish(Outcome::Failure("no answer in time".into()));
                return Err(timed_out(deadline));
            }
            Ok(Err(e)) => {
                attempt.finish(Outcome::Failure(e.to_string()));
                return Err(Failed::Retry(failure(
                    502,
                    "upstream_error",
                    format!("Upstream {} failed: {e}", upstream.name),
                )));
            }
            Ok(Ok(reply)) => reply,
        };
        // A 2xx answer of the OpenAI API is JSON; anything else (an HTML page
        // from a proxy in between, a body cut short under a matching
        // Content-Length) would reach the client as a broken 200. Only `usage`
        // is read: serde checks the rest without building it.
        #[derive(serde::Deserialize)]
        struct Usage {
            #[serde(default)]
            prompt_tokens: u64,
            #[serde(default)]
            completion_tokens: u64,
        }
        #[derive(serde::Deserialize)]
        struct WithUsage {
            usage: Option<Usage>,
        }
        let usage = match serde_json::from_slice::<WithUsage>(&reply.body) {
            Ok(answer) => answer.usage,
            Err(e) => {
                attempt.finish(Outcome::Failure(format!("answer is not JSON: {e}")));
                return Err(Failed::Answer(failure(
                    502,
                    "upstream_error",
                    format!(
                        "Upstream {} sent an answer that is not JSON: {e}",
                        upstream.name
                    ),
                )));
            }
        };
        let latency = attempt.elapsed();
        attempt.finish(Outcome::Success(latency));
        let mut tokens = None;
        if let Some(usage) = usage {
            self.count_tokens(
                upstream,
                served,
                usage.prompt_tokens,
                usage.completion_tokens,
            );
            tokens = Some(usage.prompt_tokens + usage.completion_tokens);
        }
        let content_type = reply.content_type.as_deref().unwrap_or("application/json");
        let mut header = response_header(200, content_type, &upstream.name)
            .map_err(|e| Failed::Answer(internal(e)))?;
        header
            .insert_header(http::header::CONTENT_LENGTH, reply.body.len().to_string())
            .map_err(|e| Failed::Answer(internal(e)))?;
        // The client may have gone; nothing more to do for it then.
        if session
            .write_response_header(Box::new(header), false)
            .await
            .is_ok()
        {
            let _ = session.write_response_body(Some(reply.body), true).await;
        }
        Ok(Served {
            upstream: upstream.name.clone(),
            tokens,
        })
    }

    /// Passes a stream through: waits for its first chunk (until then another
    /// upstream can still be tried), then relays every chunk as it comes. A
    /// client that leaves cancels the upstream request; an upstream that dies
    /// ends the client's stream with an error event and `[DONE]`.
    #[allow(clippy::too_many_arguments)]
    async fn relay_stream(
        &self,
        session: &mut Session,
        mut exchange: Exchange<'_>,
        upstream: &Arc<Upstream>,
        served: &str,
        attempt: crate::pool::Attempt<'_>,
        first_byte_deadline: Instant,
        deadline: Instant,
    ) -> Result<Served, Failed> {
        let failure = |status: u16, message: String| {
            let mut e = OpenAiError::new(status, "upstream_error", message);
            e.upstream = Some(upstream.name.clone());
            e
        };
        let first = match tokio::time::timeout_at(first_byte_deadline, exchange.next_chunk()).await
        {
            Err(_) => {
                attempt.finish(Outcome::Failure("no first token in time".into()));
                // The same type as a non-streamed request's timeout.
                let mut error = failure(
                    504,
                    format!("Upstream {} sent no token in time.", upstream.name),
                );
                error.kind = "timeout".into();
                return Err(if first_byte_deadline < deadline {
                    Failed::Retry(error)
                } else {
                    Failed::Answer(error)
                });
            }
            Ok(Err(e)) => {
                attempt.finish(Outcome::Failure(e.to_string()));
                return Err(Failed::Retry(failure(
                    502,
                    format!(
                        "Upstream {} failed before its first token: {e}",
                        upstream.name
                    ),
                )));
            }
            Ok(Ok(None)) => {
                attempt.finish(Outcome::Failure("empty stream".into()));
                return Err(Failed::Retry(failure(
                    502,
                    format!(
                        "Upstream {} ended its stream before any token.",
                        upstream.name
                    ),
                )));
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        let ttft = attempt.elapsed();
        self.metrics
            .time_to_first_token
            .with_label_values(&[&upstream.name])
            .observe(ttft.as_secs_f64());
        let content_type = exchange
            .header_str("content-type")
            .unwrap_or("text/event-stream")
            .to_string();
        let written = async {
            let mut header = response_header(200, &content_type, &upstream.name)?;
            header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            session
                .write_response_header(Box::new(header), false)
                .await?;
            session
                .write_response_body(Some(first.clone()), false)
                .await
        }
        .await;
        let mut watcher = SseWatcher::new();
        watcher.feed(&first);
        if written.is_err() {
            attempt.finish(Outcome::Success(ttft));
            self.metrics.streams_cancelled.inc();
            return Ok(Served {
                upstream: upstream.name.clone(),
                tokens: None,
            });
        }
        let ending = loop {
            tokio::select! {
                chunk = exchange.next_chunk() => match chunk {
                    Ok(Some(chunk)) => {
                        watcher.feed(&chunk);
                        if session.write_response_body(Some(chunk), false).await.is_err() {
                            break StreamEnd::ClientLeft;
                        }
                    }
                    Ok(None) if watcher.done() => break StreamEnd::Complete,
                    Ok(None) => break StreamEnd::UpstreamFailed("the stream ended without [DONE]".into()),
                    Err(e) => break StreamEnd::UpstreamFailed(e.to_string()),
                },
                gone = session.read_body_or_idle(true) => {
                    let _ = gone;
                    break StreamEnd::ClientLeft;
                }
            }
        };
        if let Some(usage) = watcher.usage() {
            self.count_tokens(
                upstream,
                served,
                usage.prompt_tokens,
                usage.completion_tokens,
            );
        }
        match ending {
            StreamEnd::Complete => {
                exchange.finish();
                attempt.finish(Outcome::Success(ttft));
                let _ = session.write_response_body(None, true).await;
            }
            StreamEnd::ClientLeft => {
                // Dropping the exchange closes the upstream connection: the
                // upstream stops generating for nobody.
                drop(exchange);
                attempt.finish(Outcome::Success(ttft));
                self.metrics.streams_cancelled.inc();
            }
            StreamEnd::UpstreamFailed(why) => {
                drop(exchange);
                attempt.finish(Outcome::Failure(format!("stream broke: {why}")));
                self.metrics.streams_broken.inc();
                let error = failure(
                    502,
                    format!("Upstream {} failed mid-stream: {why}", upstream.name),
                );
                let tail = format!("data: {}\n\ndata: [DONE]\n\n", error.body());
                let _ = session
                    .write_response_body(Some(Bytes::from(tail)), false)
                    .await;
                let _ = session.write_response_body(None, true).await;
            }
        }
        Ok(Served {
            upstream: upstream.name.clone(),
            tokens: watcher
                .usage()
                .map(|u| u.prompt_tokens + u.completion_tokens),
        })
    }

    fn count_tokens(&self, upstream: &Upstream, model: &str, prompt: u64, completion: u64) {
        // Only names the configuration or discovery vouched for become labels.
        let model =
            if upstream.knows_model(model) || self.aliases.values().flatten().any(|m| m == model) {
                model
            } else {
                "unlisted"
            };
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            self.metrics
                .upstream_tokens
                .with_label_values(&[&upstream.name, model, kind])
                .inc_by(n);
        }
    }
}

enum StreamEnd {
    Complete,
    ClientLeft,
    UpstreamFailed(String),
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
