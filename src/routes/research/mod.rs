//! `POST /v1/research`, the original service's API: the research service
//! (its cache, then the chat completion sent through the one upstream call,
//! `pool::call`), the answer read back, and every failure mapped into the
//! original's statuses and words. The request and its validation are in
//! `request`, the cache in `cache`.

mod cache;
mod request;

pub use cache::{CacheKey, CacheOutcome, ResearchCache};
pub use request::{
    FieldError, MAX_TOKENS_DEFAULT, MAX_TOKENS_RANGE, QUERY_MAX_CHARS, Rejection, ResearchRequest,
    TEMPERATURE_DEFAULT, TEMPERATURE_RANGE,
};

use super::{Refusal, Reply, iso_timestamp};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool::call::{
    Ask, AttemptError, CallFailure, Caller, InvalidAnswer, ModelNamedBy, Prepared, Usage,
    upstream_error_text,
};
use crate::pool::{Stop, Upstream};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use tokio::time::Instant;

/// A refusal in the original service's format, `{"detail": …}`; the local
/// routes (`/status`, `/metrics`) share it.
pub fn refusal(refusal: &Refusal) -> Reply {
    match refusal {
        Refusal::Admission(a) => {
            Reply::detail(a.status, a.message.clone()).with_header(a.header.0, a.header.1.clone())
        }
        Refusal::BodyTimedOut(limit) => Reply::detail(
            408,
            format!(
                "Request body not received within {}",
                humantime::format_duration(*limit)
            ),
        ),
        Refusal::MediaType(content_type) => Reply::detail(
            415,
            format!("Unsupported media type {content_type:?}: send application/json"),
        ),
        Refusal::BodyTooLarge(limit) => Reply::detail(
            413,
            format!("Request body larger than the limit of {limit} bytes"),
        ),
    }
}

/// The answer of `/v1/research`, field for field as the original service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResearchAnswer {
    pub result: String,
    pub model: String,
    pub tokens_used: u64,
    pub latency_ms: u64,
    pub timestamp: String,
    /// The upstream that answered; sent as a header, not in the body.
    #[serde(skip)]
    pub upstream: String,
}

impl ResearchAnswer {
    /// The answer's body, `{result, model, tokens_used, latency_ms,
    /// timestamp}`, byte for byte as serde writes it, written directly (see
    /// `routes::push_json_str`).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(96 + self.result.len() + self.model.len() + self.timestamp.len());
        out.extend_from_slice(b"{\"result\":");
        super::push_json_str(&mut out, &self.result);
        out.extend_from_slice(b",\"model\":");
        super::push_json_str(&mut out, &self.model);
        out.extend_from_slice(b",\"tokens_used\":");
        serde_json::to_writer(&mut out, &self.tokens_used).expect("a number serializes");
        out.extend_from_slice(b",\"latency_ms\":");
        serde_json::to_writer(&mut out, &self.latency_ms).expect("a number serializes");
        out.extend_from_slice(b",\"timestamp\":");
        super::push_json_str(&mut out, &self.timestamp);
        out.push(b'}');
        out
    }
}

/// A research request that failed after validation, with the status to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ResearchFailure {
    pub status: u16,
    pub detail: String,
    pub retry_after: Option<String>,
    /// The upstream involved, if one was.
    pub upstream: Option<String>,
}

impl ResearchFailure {
    fn new(status: u16, detail: impl Into<String>) -> ResearchFailure {
        ResearchFailure {
            status,
            detail: detail.into(),
            retry_after: None,
            upstream: None,
        }
    }

    pub fn reply(&self) -> Reply {
        let mut reply = Reply::detail(self.status, self.detail.clone());
        if let Some(retry_after) = &self.retry_after {
            reply = reply.with_header("Retry-After", retry_after.clone());
        }
        if let Some(upstream) = &self.upstream {
            reply = reply.with_header("X-Upstream", upstream.clone());
        }
        reply
    }
}

/// Research as a service: the cache, then the one upstream call. One instance
/// serves `/v1/research` and MCP's `research` tool, so both share the cache,
/// selection, retries and metrics.
pub struct ResearchService {
    caller: Arc<Caller>,
    metrics: Arc<Metrics>,
    system_prompt: Option<String>,
    /// `research.model`, part of every cache key.
    model: String,
    cache: Option<Arc<ResearchCache>>,
}

/// A research answer or failure, and how the cache took part.
#[derive(Debug, Clone)]
pub struct Researched {
    pub outcome: Result<ResearchAnswer, ResearchFailure>,
    /// `None` when the request is not cacheable or no cache is configured.
    pub cache: Option<CacheOutcome>,
}

impl ResearchService {
    pub fn new(
        config: &Config,
        caller: Arc<Caller>,
        metrics: Arc<Metrics>,
        cache: Option<Arc<ResearchCache>>,
    ) -> ResearchService {
        ResearchService {
            caller,
            metrics,
            system_prompt: config.research.system_prompt.clone(),
            model: config.research.model.clone(),
            cache,
        }
    }

    /// The research cache, when one is configured.
    pub fn cache(&self) -> Option<&Arc<ResearchCache>> {
        self.cache.as_ref()
    }

    /// Answers one validated request, from the cache when it may (deterministic
    /// requests, `bypass_cache` false), otherwise through the pool.
    pub async fn answer(&self, req: &ResearchRequest, bypass_cache: bool) -> Researched {
        let Some(cache) = self.cache.as_ref().filter(|c| c.admits(req)) else {
            return Researched {
                outcome: self.answer_uncached(req).await,
                cache: None,
            };
        };
        let started = Instant::now();
        let key = CacheKey::new(req, &self.model);
        // moka's entry futures hold several copies of the computation's:
        // boxed (the computation too), the cached path stays off the
        // uncached one's stack and out of every request's copies.
        let compute = Box::pin(self.answer_uncached(req));
        let (result, cached) = Box::pin(cache.get_or_compute(key, bypass_cache, compute)).await;
        self.metrics
            .cache_lookups
            .with_label_values(&[cached.as_str()])
            .inc();
        let outcome = result.map(|entry| {
            let mut answer = entry.answer();
            if cached == CacheOutcome::Hit {
                // A cached answer is served now: its latency and time are this request's.
                answer.latency_ms = started.elapsed().as_millis() as u64;
                answer.timestamp = iso_timestamp();
            }
            answer
        });
        Researched {
            outcome,
            cache: Some(cached),
        }
    }

    /// Answers one validated request through the pool (see `pool::call` for
    /// the attempts and retries).
    async fn answer_uncached(
        &self,
        req: &ResearchRequest,
    ) -> Result<ResearchAnswer, ResearchFailure> {
        let started = Instant::now();
        let system_prompt = self.system_prompt.as_deref();
        // Every upstream takes research, with its own `model`: a model it
        // does not serve is a configuration error its answer will name.
        let prepare = |u: &Upstream| Prepared {
            body: req.chat_body(&u.model, system_prompt),
            token_model: u.model.clone(),
        };
        let ask = Ask {
            endpoint: "/chat/completions",
            model_named_by: ModelNamedBy::Gateway,
            eligible: &|_| true,
            prepare: &prepare,
        };
        let parse = |body: &[u8]| {
            let completion = parse_chat_completion(body)?;
            let usage = Usage {
                prompt_tokens: completion.prompt_tokens,
                completion_tokens: completion.completion_tokens,
            };
            Ok((completion, Some(usage)))
        };
        match self.caller.call(&ask, &parse).await {
            Ok(answered) => {
                let completion = answered.value;
                Ok(ResearchAnswer {
                    result: completion.content,
                    model: completion
                        .model
                        .unwrap_or_else(|| answered.upstream.model.clone()),
                    tokens_used: completion.total_tokens,
                    latency_ms: started.elapsed().as_millis() as u64,
                    timestamp: iso_timestamp(),
                    upstream: answered.upstream.name.clone(),
                })
            }
            Err(failure) => Err(self.failure(failure)),
        }
    }

    /// A failed call in the original service's words and statuses.
    fn failure(&self, failure: CallFailure) -> ResearchFailure {
        let (error, upstream) = match failure {
            CallFailure::NoUpstream {
                stop: Stop::NoneConfigured,
                ..
            } => return ResearchFailure::new(500, "vLLM backend not configured"),
            CallFailure::NoUpstream {
                stop: Stop::AllBusy,
                ..
            } => {
                return ResearchFailure::new(
                    503,
                    "vLLM backend busy: every upstream is at its max_concurrent limit",
                );
            }
            CallFailure::NoUpstream { healthy, total, .. } => {
                return ResearchFailure::new(
                    503,
                    format!(
                        "vLLM backend unreachable: no healthy upstream ({healthy} of {total} passed their health checks)"
                    ),
                );
            }
            CallFailure::Attempt { error, upstream } => (error, upstream),
        };
        let name = &upstream.name;
        let with_upstream = |status: u16, detail: String| ResearchFailure {
            upstream: Some(name.clone()),
            ..ResearchFailure::new(status, detail)
        };
        match error {
            // Nothing reached it: the answer names no upstream.
            AttemptError::Connect(why) => ResearchFailure::new(
                503,
                format!("vLLM backend unreachable: upstream {name}: {why}"),
            ),
            e @ AttemptError::TakenOut => {
                with_upstream(502, format!("vLLM backend {name} failed: {e}"))
            }
            AttemptError::Reset(why) | AttemptError::Broken(why) | AttemptError::Stale(why) => {
                with_upstream(502, format!("vLLM backend {name} failed: {why}"))
            }
            e @ AttemptError::TooLarge(_) => {
                with_upstream(502, format!("vLLM backend {name} failed: {e}"))
            }
            AttemptError::Timeout {
                retryable: true,
                limit,
                ..
            } => with_upstream(
                504,
                format!(
                    "vLLM backend {name} did not start answering within {}",
                    humantime::format_duration(limit)
                ),
            ),
            AttemptError::Timeout { limit, .. } => with_upstream(
                504,
                format!(
                    "vLLM backend did not answer within {}",
                    humantime::format_duration(limit)
                ),
            ),
            AttemptError::Status {
                status,
                body,
                retry_after,
            } => {
                let message = upstream_error_text(&body, upstream.api_key());
                if status == 429 {
                    ResearchFailure {
                        retry_after,
                        ..with_upstream(
                            429,
                            format!("vLLM backend {name} is rate limited: {message}"),
                        )
                    }
                } else {
                    with_upstream(
                        502,
                        format!("vLLM backend {name} answered HTTP {status}: {message}"),
                    )
                }
            }
            AttemptError::Invalid(why) => with_upstream(
                502,
                format!("vLLM backend {name} sent an invalid chat completion: {why}"),
            ),
            e @ AttemptError::CutOff { .. } => {
                with_upstream(504, format!("vLLM backend {name} timed out: {e}"))
            }
            AttemptError::NoCapacity(why) => with_upstream(
                503,
                format!("vLLM backend {name} has no worker available: {why}"),
            ),
        }
    }
}

/// The parts of an OpenAI chat completion that research needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletion {
    pub content: String,
    pub model: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Reads a non-streamed chat completion; says what is missing when it is not one.
pub fn parse_chat_completion(body: &[u8]) -> Result<ChatCompletion, InvalidAnswer> {
    // Only the fields research needs are built; serde checks the rest of the
    // document without allocating it. Fields of unexpected types are kept as
    // raw values so that the error can say which one is wrong.
    use serde::Deserialize;
    use serde_json::value::RawValue;
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        content: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow)]
        message: Option<Message<'a>>,
    }
    #[derive(Deserialize, Default)]
    struct Usage {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        total_tokens: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Completion<'a> {
        #[serde(borrow)]
        model: Option<&'a RawValue>,
        #[serde(borrow, default)]
        choices: Option<Vec<Choice<'a>>>,
        #[serde(default)]
        usage: Option<Usage>,
    }
    let completion: Completion<'_> = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            // JSON, but not shaped like a chat completion: say what is missing.
            return Err(InvalidAnswer(match serde_json::from_slice::<Value>(body) {
                Ok(v) if v.pointer("/choices/0/message/content").is_none() => {
                    "no choices[0].message.content".to_string()
                }
                _ => format!("not a chat completion ({e})"),
            }));
        }
        Err(e) => return Err(InvalidAnswer(format!("not JSON ({e})"))),
    };
    let Some(content) = completion
        .choices
        .as_deref()
        .and_then(|c| c.first())
        .and_then(|c| c.message.as_ref())
        .and_then(|m| m.content)
    else {
        // Missing, or null (which serde folds into "missing"): tell them apart.
        let present = serde_json::from_slice::<Value>(body)
            .ok()
            .is_some_and(|v| v.pointer("/choices/0/message/content").is_some());
        return Err(if present {
            "choices[0].message.content is not a string".into()
        } else {
            "no choices[0].message.content".into()
        });
    };
    let content = serde_json::from_str::<String>(content.get())
        .map_err(|_| "choices[0].message.content is not a string")?;
    let usage = completion.usage.unwrap_or_default();
    let prompt_tokens = usage.prompt_tokens.unwrap_or(0);
    let completion_tokens = usage.completion_tokens.unwrap_or(0);
    Ok(ChatCompletion {
        content,
        model: completion
            .model
            .and_then(|m| serde_json::from_str::<String>(m.get()).ok()),
        prompt_tokens,
        completion_tokens,
        total_tokens: usage
            .total_tokens
            .unwrap_or(prompt_tokens + completion_tokens),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_in_every_format() {
        assert_eq!(
            upstream_error_text(br#"{"error":{"message":"bad model"}}"#, None),
            "bad model"
        );
        assert_eq!(
            upstream_error_text(
                br#"{"object":"error","message":"too long","type":"x"}"#,
                None
            ),
            "too long"
        );
        assert_eq!(
            upstream_error_text(br#"{"error":"no workers available"}"#, None),
            "no workers available"
        );
        assert_eq!(upstream_error_text(b"Bad Gateway\n", None), "Bad Gateway");
        assert_eq!(upstream_error_text(b"", None), "(empty body)");
        assert_eq!(
            crate::routes::scrub_key("key sk-abcdef leaked", Some("sk-abcdef")),
            "key [redacted] leaked"
        );
    }

    #[test]
    fn a_key_straddling_the_cut_is_scrubbed_first() {
        let key = "sk-0123456789abcdef";
        // The key starts 5 characters before the cut at 500.
        let text = format!("{}{key} and more", "x".repeat(495));
        let body = serde_json::to_vec(&serde_json::json!({"error": {"message": text}})).unwrap();
        let shown = upstream_error_text(&body, Some(key));
        assert!(!shown.contains("sk-01"), "{shown}");
        assert_eq!(shown, format!("{}[reda…", "x".repeat(495)));
        // JSON in no known shape is shown whole, scrubbed first too.
        let odd = format!(r#"{{"oops":"{}{key}"}}"#, "y".repeat(490));
        let shown = upstream_error_text(odd.as_bytes(), Some(key));
        assert!(!shown.contains("sk-0"), "{shown}");
    }

    #[test]
    fn chat_completions_are_read_or_refused_with_a_reason() {
        let c = parse_chat_completion(
            br#"{"model":"m","choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        )
        .unwrap();
        assert_eq!((c.content.as_str(), c.total_tokens), ("hi", 5));
        assert_eq!(
            parse_chat_completion(br#"{"choices":[]}"#).unwrap_err(),
            "no choices[0].message.content".into()
        );
        assert!(
            parse_chat_completion(b"{\"choices\":")
                .unwrap_err()
                .0
                .starts_with("not JSON")
        );
    }
}

#[cfg(test)]
mod answer_tests {
    use super::ResearchAnswer;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_answer_is_written_as_serde_writes_it(
            result in any::<String>(),
            model in any::<String>(),
            tokens_used in any::<u64>(),
            latency_ms in any::<u64>(),
            timestamp in "[0-9T:.+-]{0,32}",
        ) {
            let answer = ResearchAnswer { result, model, tokens_used, latency_ms, timestamp, upstream: "u".into() };
            prop_assert_eq!(answer.to_json(), serde_json::to_vec(&answer).unwrap());
        }
    }
}
