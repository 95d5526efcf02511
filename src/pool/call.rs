//! The one upstream call. Every front door that needs an upstream
//! (`/v1/research`, `/v1/chat/completions`, `/v1/completions`, streamed or
//! not, and MCP's `research` tool) asks [`Caller`], which owns: selection,
//! attempts on distinct upstreams, the total and first-byte deadlines, the
//! classification of every outcome ([`AttemptError::verdict`]: retry
//! elsewhere or pass on, and what the pool learns), `Retry-After`, resends
//! after a stale pooled connection, attempts moved off an upstream the checks
//! take out, the pool's in-flight accounting, the upstream metrics and token
//! counting. The routes
//! keep only what is theirs: the body sent, the parsing of the answer and the
//! rendering of errors in their own format. The table is in
//! `docs/reliability.md`, "How each attempt outcome is handled".

use super::{Attempt, Outcome, Pool, Stop, Upstream};
use crate::client::{CallError, Exchange, UpstreamClient, UpstreamRequest};
use crate::metrics::Metrics;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Largest error body read from an upstream: enough for any error message.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub use crate::sse::Usage;

/// Who named the model the upstream is asked for: it decides what a 404 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelNamedBy {
    /// The gateway's configuration (research): a 404 means the upstream is
    /// misconfigured (wrong base URL or model), which is the upstream's fault.
    Gateway,
    /// The client (OpenAI routes): a 404 says this upstream does not serve the
    /// model the client asked for, which says nothing about its health.
    Client,
}

/// What an attempt sends to one upstream, built by the front door for it.
pub struct Prepared {
    pub body: Bytes,
    /// The model label its tokens are counted under (a name the configuration
    /// or discovery vouched for, so that clients cannot grow the label set).
    pub token_model: String,
}

/// What a front door asks of the call.
pub struct Ask<'a> {
    /// The path under the upstream's base URL, such as `/chat/completions`.
    pub endpoint: &'static str,
    pub model_named_by: ModelNamedBy,
    /// The upstreams that may take it (those serving a model, say).
    pub eligible: &'a (dyn Fn(&Upstream) -> bool + Sync),
    /// The body for one upstream (its own served model name, say).
    pub prepare: &'a (dyn Fn(&Upstream) -> Prepared + Sync),
}

/// Why an attempt on one upstream failed. The variant gives the
/// `outcome` label of `context7_upstream_requests_total`.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptError {
    /// No connection: refused, unreachable, TLS failed, no address. Nothing
    /// was sent.
    Connect(String),
    /// The connection broke after the request was sent, before an answer head.
    Reset(String),
    /// A pooled connection the upstream had closed failed on first use, with
    /// nothing of an answer back: resent on a new connection to the same
    /// upstream, as an attempt of its own.
    Stale(String),
    /// The connection broke while the answer's body was read (before
    /// anything reached the client).
    Broken(String),
    /// Nothing arrived in time: `retryable` when the limit was the first-byte
    /// deadline and time is left for another upstream.
    Timeout {
        waiting: Waiting,
        limit: Duration,
        retryable: bool,
    },
    /// The answer's body was larger than `limits.max_upstream_body_bytes`.
    TooLarge(usize),
    /// A status other than 2xx, with the start of its body and `Retry-After`.
    Status {
        status: u16,
        body: Bytes,
        retry_after: Option<String>,
    },
    /// A 2xx answer that is not what was asked for (not JSON, not a chat
    /// completion, a stream that ended before its first chunk).
    Invalid(String),
    /// The active checks took the upstream out while the attempt waited on it
    /// (a hung or frozen server): moved to another upstream at once.
    TakenOut,
    /// The upstream's load balancer cut the request as too long (RunPod's
    /// 524, after about 5.5 minutes): a timeout, `retryable` while the total
    /// deadline leaves time.
    CutOff { retryable: bool },
    /// RunPod's load balancer found no worker for the request within its
    /// wait (its 400 `{"error":"no workers available"}`): no capacity there,
    /// so another upstream is tried; the message is RunPod's.
    NoCapacity(String),
}

/// What a timed-out attempt was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The answer's head, or a whole non-streamed answer.
    Answer,
    /// The first chunk of a stream.
    FirstChunk,
}

/// What the call does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing reached the client and another upstream may do better.
    RetryElsewhere,
    /// The same upstream again, on a new connection.
    ResendHere,
    /// This failure is the answer.
    PassOn,
}

/// What the pool learns from a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Counts towards ejection and adds a latency penalty.
    Upstream,
    /// 429: ejected for its `Retry-After` (capped), or the base cooldown.
    RateLimited,
    /// The request's fault, or no sign either way: no sample, no failure.
    Nobody,
}

impl AttemptError {
    /// The `outcome` label.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) => "connect_error",
            AttemptError::Reset(_) | AttemptError::Broken(_) => "error",
            AttemptError::Stale(_) => "stale_connection",
            AttemptError::Timeout { .. } | AttemptError::CutOff { .. } => "timeout",
            AttemptError::TooLarge(_) => "too_large",
            AttemptError::Status { status, .. } => match status / 100 {
                1 => "http_1xx",
                3 => "http_3xx",
                4 => "http_4xx",
                _ => "http_5xx",
            },
            AttemptError::Invalid(_) => "invalid_answer",
            AttemptError::TakenOut => "taken_out",
            AttemptError::NoCapacity(_) => "no_capacity",
        }
    }

    /// The classification table: what the call does next, and what the pool
    /// learns. `docs/reliability.md` gives the reason for each row.
    pub fn verdict(&self, named_by: ModelNamedBy) -> (Next, Blame) {
        use AttemptError as E;
        use Blame::*;
        use Next::*;
        match self {
            E::Connect(_) | E::Reset(_) | E::Broken(_) | E::Invalid(_) | E::NoCapacity(_) => {
                (RetryElsewhere, Upstream)
            }
            E::Stale(_) => (ResendHere, Nobody),
            // Already unhealthy: the checks said so, nothing more to learn.
            E::TakenOut => (RetryElsewhere, Nobody),
            E::Timeout { retryable, .. } | E::CutOff { retryable } => {
                (if *retryable { RetryElsewhere } else { PassOn }, Upstream)
            }
            E::TooLarge(_) => (PassOn, Upstream),
            E::Status { status, .. } => match status {
                502 | 503 => (RetryElsewhere, Upstream),
                429 => (PassOn, RateLimited),
                404 if named_by == ModelNamedBy::Client => (PassOn, Nobody),
                401 | 403 | 404 | 408 => (PassOn, Upstream),
                s if *s >= 500 || *s < 400 => (PassOn, Upstream),
                _ => (PassOn, Nobody),
            },
        }
    }

    /// The pool's record of it, scrubbed of the upstream's `key`.
    fn outcome(&self, blame: Blame, key: Option<&str>) -> Outcome {
        match blame {
            Blame::Nobody => Outcome::Neutral,
            Blame::RateLimited => Outcome::RateLimited(match self {
                AttemptError::Status { retry_after, .. } => {
                    retry_after.as_deref().and_then(retry_after_wait)
                }
                _ => None,
            }),
            Blame::Upstream => Outcome::Failure(match self {
                AttemptError::Status { status, body, .. } => {
                    format!("HTTP {status}: {}", upstream_error_text(body, key))
                }
                other => other.to_string(),
            }),
        }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Connect(why)
            | AttemptError::Reset(why)
            | AttemptError::Broken(why)
            | AttemptError::Stale(why) => f.write_str(why),
            AttemptError::Timeout { waiting, limit, .. } => write!(
                f,
                "no {} within {}",
                match waiting {
                    Waiting::Answer => "answer",
                    Waiting::FirstChunk => "first token",
                },
                humantime::format_duration(*limit)
            ),
            AttemptError::TooLarge(limit) => write!(f, "answer larger than {limit} bytes"),
            AttemptError::Status { status, .. } => write!(f, "HTTP {status}"),
            AttemptError::Invalid(why) => write!(f, "invalid answer: {why}"),
            AttemptError::TakenOut => f.write_str("taken out by its health checks"),
            AttemptError::NoCapacity(why) => write!(f, "no worker available: {why}"),
            AttemptError::CutOff { .. } => {
                f.write_str("its load balancer cut the request off (HTTP 524)")
            }
        }
    }
}

impl From<CallError> for AttemptError {
    fn from(e: CallError) -> AttemptError {
        let text = e.to_string();
        match e {
            CallError::Connect(_) => AttemptError::Connect(text),
            CallError::NoAnswer(_) => AttemptError::Reset(text),
            CallError::Stale(_) => AttemptError::Stale(text),
            CallError::Io(_) => AttemptError::Broken(text),
            CallError::TooLarge(limit) => AttemptError::TooLarge(limit),
        }
    }
}

/// Whether a 400's body is RunPod's load balancer saying that no worker took
/// the request (`{"error":"no workers available"}`): a vLLM 400 is an OpenAI
/// error object, never a bare string in `error`.
fn says_no_workers(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v.get("error")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("no workers available"))
    })
}

/// `Retry-After` as a wait, when it is a number of seconds.
pub fn retry_after_wait(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Removes an upstream's key from text that came from that upstream, in case
/// it echoed it (an error message quoting the request, say).
pub fn scrub_key(text: &str, key: Option<&str>) -> String {
    match key {
        Some(k) if k.len() >= 4 && text.contains(k) => text.replace(k, "[redacted]"),
        _ => text.to_string(),
    }
}

/// Longest upstream error text passed on to a client.
pub const MAX_ERROR_TEXT: usize = 500;

/// The message of an upstream error in any of the formats seen in the field:
/// OpenAI's `{"error":{"message"}}`, vLLM's flat `{"object":"error","message"}`,
/// RunPod's `{"error":"…"}`, FastAPI's `{"detail":…}`, or plain text;
/// scrubbed of `key`, then cut to [`MAX_ERROR_TEXT`] characters (in that
/// order: a key straddling the cut must not leave its first characters).
/// `None` when the body says nothing.
pub fn upstream_error_message(body: &[u8], key: Option<&str>) -> Option<String> {
    use serde_json::Value;
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| !e.is_object()))
            .or_else(|| v.get("detail"))
            .filter(|m| !m.is_null())
            .map(|m| match m {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        Err(_) => Some(String::from_utf8_lossy(body).trim().to_string()),
    }
    .filter(|t| !t.is_empty())?;
    Some(shorten(scrub_key(&text, key)))
}

/// [`upstream_error_message`], or JSON in none of the known shapes shown whole
/// (scrubbed, then cut), or `(empty body)`: what the answers and `/status`
/// say of an upstream's error.
pub fn upstream_error_text(body: &[u8], key: Option<&str>) -> String {
    upstream_error_message(body, key)
        .or_else(|| {
            let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
            Some(shorten(scrub_key(&v.to_string(), key)))
        })
        .unwrap_or_else(|| "(empty body)".to_string())
}

/// `text` cut to [`MAX_ERROR_TEXT`] characters, marked with `…` when cut.
pub fn shorten(text: String) -> String {
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Why a call produced no answer.
#[derive(Debug, Clone)]
pub enum CallFailure {
    /// No attempt was made: `stop` says why.
    NoUpstream {
        stop: Stop,
        healthy: usize,
        total: usize,
    },
    /// The last attempt failed so (earlier ones, if any, were retried).
    Attempt {
        error: AttemptError,
        upstream: Arc<Upstream>,
    },
}

/// A whole, valid answer.
pub struct Answered<T> {
    /// What the front door's parser made of it.
    pub value: T,
    /// The body as the upstream sent it.
    pub body: Bytes,
    pub content_type: Option<String>,
    pub upstream: Arc<Upstream>,
    pub usage: Option<Usage>,
}

/// A stream whose first chunk arrived; the front door relays it and then
/// says how it ended with [`OpenStream::finish`].
pub struct OpenStream<'c> {
    pub first: Bytes,
    /// The stream's `Content-Type` (`text/event-stream` when none was given).
    pub content_type: String,
    pub upstream: Arc<Upstream>,
    exchange: Exchange<'c>,
    attempt: Attempt<'c>,
    ttft: Duration,
    token_model: String,
    caller: &'c Caller,
}

/// How a relayed stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream sent `[DONE]` and closed the body.
    Complete,
    /// The client went away; the upstream connection is closed so that it
    /// stops generating for nobody.
    ClientLeft,
    /// The client accepted no byte for `limits.client_write_timeout`: cut as
    /// if it had left.
    ClientStalled,
    /// The upstream broke the stream midway.
    UpstreamFailed(String),
}

impl OpenStream<'_> {
    /// The next piece of the stream as the upstream sent it; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, CallError> {
        self.exchange.next_chunk().await
    }

    /// `chunk` with the pieces the upstream already sent behind it (up to
    /// `limit` bytes in all), so that they go to the client in one write;
    /// and, when the stream's end or a failure came among them, that too.
    pub fn gather(&mut self, chunk: Bytes, limit: usize) -> (Bytes, Option<Result<(), CallError>>) {
        let mut gathered: Option<bytes::BytesMut> = None;
        let mut after = None;
        while gathered.as_ref().map_or(chunk.len(), |g| g.len()) < limit {
            match self.exchange.next_chunk_now() {
                None => break,
                Some(Ok(Some(more))) => gathered
                    .get_or_insert_with(|| bytes::BytesMut::from(&chunk[..]))
                    .extend_from_slice(&more),
                Some(Ok(None)) => {
                    after = Some(Ok(()));
                    break;
                }
                Some(Err(e)) => {
                    after = Some(Err(e));
                    break;
                }
            }
        }
        (gathered.map_or(chunk, bytes::BytesMut::freeze), after)
    }

    /// Records how the stream ended: the pool's outcome, the upstream metrics
    /// (counted once, with the whole stream's duration) and its tokens.
    pub fn finish(self, end: &StreamEnd, usage: Option<Usage>) {
        let OpenStream {
            exchange,
            attempt,
            ttft,
            token_model,
            caller,
            upstream,
            ..
        } = self;
        let metrics = &caller.metrics;
        let label = match end {
            StreamEnd::Complete => {
                exchange.finish();
                "ok"
            }
            StreamEnd::ClientLeft => {
                drop(exchange);
                metrics.streams_cancelled.inc();
                "cancelled"
            }
            StreamEnd::ClientStalled => {
                drop(exchange);
                metrics.streams_cancelled.inc();
                metrics.client_write_timeouts.inc();
                "cancelled"
            }
            StreamEnd::UpstreamFailed(_) => {
                drop(exchange);
                metrics.streams_broken.inc();
                "error"
            }
        };
        caller.count(&upstream, label, attempt.elapsed());
        if let Some(usage) = usage {
            caller.count_tokens(&upstream, &token_model, usage);
        }
        attempt.finish(match end {
            StreamEnd::UpstreamFailed(why) => Outcome::Failure(format!("stream broke: {why}")),
            // The latency signal of a stream is its time to first token.
            _ => Outcome::Success(ttft),
        });
    }
}

/// What is wrong with a 2xx answer, in the front door's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAnswer(pub String);

impl fmt::Display for InvalidAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for InvalidAnswer {
    fn from(why: &str) -> InvalidAnswer {
        InvalidAnswer(why.to_string())
    }
}

/// A front door's judgement of a whole 2xx answer: what it made of it and the
/// tokens it reports, or what is wrong with it.
pub type Parse<'p, T> = &'p (dyn Fn(&[u8]) -> Result<(T, Option<Usage>), InvalidAnswer> + Sync);

/// How the answer is to be taken.
enum Take<'p, T> {
    /// Read whole, then judged by the front door's parser.
    Whole(Parse<'p, T>),
    /// Streamed: the call ends with the first chunk.
    Stream,
}

enum Got<'c, T> {
    Whole(Answered<T>),
    Stream(OpenStream<'c>),
}

/// Makes upstream calls for every front door. One per configuration; the
/// client (and its connections) outlives it.
pub struct Caller {
    pool: Arc<Pool>,
    client: Arc<UpstreamClient>,
    metrics: Arc<Metrics>,
    total_timeout: Duration,
    first_byte_timeout: Option<Duration>,
    connect_timeout: Duration,
    max_upstream_body: usize,
}

impl Caller {
    pub fn new(
        config: &crate::config::Config,
        pool: Arc<Pool>,
        client: Arc<UpstreamClient>,
        metrics: Arc<Metrics>,
    ) -> Caller {
        Caller {
            pool,
            client,
            metrics,
            total_timeout: config.timeouts.total,
            first_byte_timeout: config.timeouts.first_byte,
            connect_timeout: config.timeouts.connect,
            max_upstream_body: config.limits.max_upstream_body_bytes,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// A non-streamed call: the answer read whole and accepted by `parse`
    /// (which says what is wrong with a 2xx answer that is not what was asked).
    pub async fn call<T>(
        &self,
        ask: &Ask<'_>,
        parse: Parse<'_, T>,
    ) -> Result<Answered<T>, CallFailure> {
        match self.run(ask, Take::Whole(parse)).await? {
            Got::Whole(answered) => Ok(answered),
            Got::Stream(_) => unreachable!("a whole answer was asked for"),
        }
    }

    /// A streamed call, up to its first chunk: until then another upstream
    /// can still be tried.
    pub async fn open_stream(&self, ask: &Ask<'_>) -> Result<OpenStream<'_>, CallFailure> {
        match self.run::<()>(ask, Take::Stream).await? {
            Got::Stream(stream) => Ok(stream),
            Got::Whole(_) => unreachable!("a stream was asked for"),
        }
    }

    /// The attempts: on distinct upstreams, within `retries.max_attempts`,
    /// the retry budget and the total deadline.
    async fn run<T>(&self, ask: &Ask<'_>, take: Take<'_, T>) -> Result<Got<'_, T>, CallFailure> {
        let deadline = Instant::now() + self.total_timeout;
        let mut tried = Vec::new();
        let mut last: Option<CallFailure> = None;
        // An upstream to resend to on a new connection, after a stale one.
        let mut resend: Option<Arc<Upstream>> = None;
        loop {
            let (upstream, fresh) = match resend.take() {
                Some(upstream) => (upstream, true),
                None => match self.pool.next_attempt(&mut tried, ask.eligible) {
                    Ok(upstream) => (upstream, false),
                    Err(stop) => {
                        return Err(last.unwrap_or(CallFailure::NoUpstream {
                            stop,
                            healthy: self.pool.healthy_count(),
                            total: self.pool.upstreams().len(),
                        }));
                    }
                },
            };
            // Boxed: the attempt's future is large, and only one lives at a time.
            let outcome = {
                let attempt = Box::pin(self.attempt(ask, &take, &upstream, deadline, fresh));
                let taken_out = upstream.taken_out();
                tokio::pin!(taken_out);
                taken_out.as_mut().enable();
                let started = Instant::now();
                tokio::select! {
                    biased;
                    outcome = attempt => outcome,
                    () = &mut taken_out => {
                        // The attempt is dropped: its guard stops counting it in flight.
                        self.count(&upstream, AttemptError::TakenOut.label(), started.elapsed());
                        Err(AttemptError::TakenOut)
                    }
                }
            };
            match outcome {
                Ok(got) => return Ok(got),
                Err(error) => {
                    let (next, _) = error.verdict(ask.model_named_by);
                    match next {
                        Next::PassOn => return Err(CallFailure::Attempt { error, upstream }),
                        Next::ResendHere => {
                            // Once per attempt, within the retry budget.
                            if !fresh && self.pool.resend(&upstream).is_ok() {
                                log::info!("upstream {}: {error}; resending", upstream.name);
                                resend = Some(upstream.clone());
                            }
                        }
                        Next::RetryElsewhere => {
                            log::warn!("upstream {}: {error}; trying another", upstream.name);
                        }
                    }
                    last = Some(CallFailure::Attempt { error, upstream });
                }
            }
        }
    }

    async fn attempt<'c, T>(
        &'c self,
        ask: &Ask<'_>,
        take: &Take<'_, T>,
        upstream: &Arc<Upstream>,
        deadline: Instant,
        fresh: bool,
    ) -> Result<Got<'c, T>, AttemptError> {
        let prepared = (ask.prepare)(upstream);
        let path = format!("{}{}", upstream.base.path, ask.endpoint);
        let streamed = matches!(take, Take::Stream);
        let request = UpstreamRequest {
            method: "POST",
            url: &upstream.base,
            path: &path,
            authorization: upstream.authorization(),
            body: Some(prepared.body),
            max_body: self.max_upstream_body,
            // Between two reads of a stream (a whole stream may last longer).
            // A whole answer is bounded by the deadline around it instead: a
            // per-read timer there was 1.7 % of a research request.
            read_timeout: streamed.then_some(self.total_timeout),
            accept: if streamed {
                "text/event-stream"
            } else {
                "application/json"
            },
            connect_timeout: self.connect_timeout,
            fresh,
        };
        let first_byte_deadline = match self.first_byte_timeout {
            Some(limit) => deadline.min(Instant::now() + limit),
            None => deadline,
        };
        let timeout = |waiting: Waiting, at: Instant| AttemptError::Timeout {
            waiting,
            retryable: at < deadline,
            limit: if at < deadline {
                self.first_byte_timeout.unwrap_or(self.total_timeout)
            } else {
                self.total_timeout
            },
        };
        let attempt = self.pool.begin(upstream);
        let fail = |attempt: Attempt<'_>, error: AttemptError| {
            self.count(upstream, error.label(), attempt.elapsed());
            let (_, blame) = error.verdict(ask.model_named_by);
            attempt.finish(error.outcome(blame, upstream.api_key()));
            error
        };
        let Some(address) = upstream.address() else {
            let why = format!("connection failed: {} did not resolve", upstream.base.host);
            return Err(fail(attempt, AttemptError::Connect(why)));
        };
        let opened =
            tokio::time::timeout_at(first_byte_deadline, self.client.open(address, &request)).await;
        let mut exchange = match opened {
            Err(_) => return Err(fail(attempt, timeout(Waiting::Answer, first_byte_deadline))),
            Ok(Err(e)) => return Err(fail(attempt, e.into())),
            Ok(Ok(exchange)) => exchange,
        };
        let status = exchange.status();
        if !(200..300).contains(&status) {
            let retry_after = exchange.header_str("retry-after").map(str::to_string);
            let body = tokio::time::timeout_at(deadline, exchange.read_all(MAX_ERROR_BODY))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|r| r.body)
                .unwrap_or_default();
            let error = match status {
                // RunPod's load balancer cut the request (after about 5.5
                // minutes): a timeout, retried elsewhere while time is left.
                524 => AttemptError::CutOff {
                    retryable: Instant::now() < deadline,
                },
                400 if says_no_workers(&body) => {
                    AttemptError::NoCapacity(upstream_error_text(&body, upstream.api_key()))
                }
                _ => AttemptError::Status {
                    status,
                    body,
                    retry_after,
                },
            };
            return Err(fail(attempt, error));
        }
        let parse = match take {
            Take::Stream => {
                let first =
                    match tokio::time::timeout_at(first_byte_deadline, exchange.next_chunk()).await
                    {
                        Err(_) => {
                            let error = timeout(Waiting::FirstChunk, first_byte_deadline);
                            return Err(fail(attempt, error));
                        }
                        Ok(Err(e)) => {
                            return Err(fail(attempt, AttemptError::Broken(e.to_string())));
                        }
                        Ok(Ok(None)) => {
                            let why = "the stream ended before its first chunk".to_string();
                            return Err(fail(attempt, AttemptError::Invalid(why)));
                        }
                        Ok(Ok(Some(chunk))) => chunk,
                    };
                let ttft = attempt.elapsed();
                upstream.observe_time_to_first_token(ttft);
                self.metrics.observe_time_to_first_token(
                    &upstream.series,
                    &upstream.name,
                    ttft.as_secs_f64(),
                );
                let content_type = exchange
                    .header_str("content-type")
                    .unwrap_or("text/event-stream")
                    .to_string();
                return Ok(Got::Stream(OpenStream {
                    first,
                    content_type,
                    upstream: upstream.clone(),
                    exchange,
                    attempt,
                    ttft,
                    token_model: prepared.token_model,
                    caller: self,
                }));
            }
            Take::Whole(parse) => parse,
        };
        let reply = match tokio::time::timeout_at(
            deadline,
            exchange.read_all(self.max_upstream_body),
        )
        .await
        {
            Err(_) => return Err(fail(attempt, timeout(Waiting::Answer, deadline))),
            Ok(Err(e)) => return Err(fail(attempt, e.into())),
            Ok(Ok(reply)) => reply,
        };
        let (value, usage) = match parse(&reply.body) {
            Ok(parsed) => parsed,
            Err(why) => return Err(fail(attempt, AttemptError::Invalid(why.0))),
        };
        // The latency sample is the whole answer's time, not normalised by its
        // length: see "Latency signal" in docs/pool.md.
        let latency = attempt.elapsed();
        self.count(upstream, "ok", latency);
        if let Some(usage) = usage {
            self.count_tokens(upstream, &prepared.token_model, usage);
        }
        attempt.finish(Outcome::Success(latency));
        Ok(Got::Whole(Answered {
            value,
            body: reply.body,
            content_type: reply.content_type,
            upstream: upstream.clone(),
            usage,
        }))
    }

    /// One attempt in `context7_upstream_requests_total` and the duration
    /// histogram.
    fn count(&self, upstream: &Upstream, outcome: &str, took: Duration) {
        upstream.count_attempt(!matches!(outcome, "ok" | "cancelled"));
        self.metrics.count_attempt(
            &upstream.series,
            &upstream.name,
            outcome,
            took.as_secs_f64(),
        );
    }

    fn count_tokens(&self, upstream: &Upstream, model: &str, usage: Usage) {
        upstream.count_tokens(usage.prompt_tokens, usage.completion_tokens);
        if let Some(pricing) = &upstream.pricing {
            let usd = pricing.for_tokens(usage.prompt_tokens, usage.completion_tokens);
            self.pool.charge(upstream, usd);
        }
        self.metrics.count_tokens(
            &upstream.series,
            &upstream.name,
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
        );
    }
}
