//! The routes: which one a request takes, the facts about each (takes a
//! body, needs a key, is rate limited, its error envelope), the refusals the
//! service may answer before a route runs, and the answer type they share.
//! Each protocol writes those refusals in its own format (`refusal` in
//! `research`, `openai` and `mcp`); the service only says which.

pub mod local;
pub mod mcp;
pub mod openai;
pub mod research;

use bytes::Bytes;
use serde::Serialize;
use std::time::Duration;

/// Which route a request took; also the `route` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Ping,
    Root,
    /// `/docs`: Swagger UI.
    Docs,
    /// `/redoc`: ReDoc.
    ReDoc,
    /// The explorers' scripts and styles, under `/docs/`.
    DocsAsset,
    OpenApi,
    Metrics,
    Status,
    /// `/ui`: the operator's page, which reads `/status`.
    Ui,
    Research,
    /// `/mcp`, every method: the MCP transport answers 405 itself.
    Mcp,
    ChatCompletions,
    Completions,
    Models,
    /// A known path with a method it does not take.
    MethodNotAllowed,
    NotFound,
}

// Every route has its series slot (`NotFound` is the last variant).
const _: () = assert!((Route::NotFound as usize) < crate::metrics::MAX_ROUTES);

impl Route {
    /// Its number, below `metrics::MAX_ROUTES`: where its series are kept.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Low-cardinality label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Route::Ping => "/ping",
            Route::Root => "/",
            Route::Docs => "/docs",
            Route::ReDoc => "/redoc",
            Route::DocsAsset => "/docs/assets",
            Route::OpenApi => "/openapi.json",
            Route::Metrics => "/metrics",
            Route::Status => "/status",
            Route::Ui => "/ui",
            Route::Research => "/v1/research",
            Route::Mcp => "/mcp",
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Models => "/v1/models",
            Route::MethodNotAllowed => "method_not_allowed",
            Route::NotFound => "not_found",
        }
    }

    /// Whether a browser opens it, and so may send its key as HTTP Basic
    /// credentials (see `ClientKeys::check_from_browser`).
    pub fn opened_by_browsers(self) -> bool {
        matches!(self, Route::Ui | Route::Status)
    }

    /// Whether the route reads a request body (and so refuses a too large
    /// one in its own format).
    pub fn takes_body(self) -> bool {
        matches!(
            self,
            Route::Research | Route::Mcp | Route::ChatCompletions | Route::Completions
        )
    }

    /// Whether the route needs a client key when keys are configured. `/ping`,
    /// `/`, `/docs` and errors about unknown paths stay open; `/metrics`,
    /// `/status` and `/ui` are open only on `metrics_listen`.
    pub fn needs_key(self, on_metrics_listener: bool) -> bool {
        match self {
            Route::Research
            | Route::Mcp
            | Route::ChatCompletions
            | Route::Completions
            | Route::Models => true,
            Route::Metrics | Route::Status | Route::Ui => !on_metrics_listener,
            Route::Ping
            | Route::Root
            | Route::Docs
            | Route::ReDoc
            | Route::DocsAsset
            | Route::OpenApi
            | Route::MethodNotAllowed
            | Route::NotFound => false,
        }
    }

    /// Whether the route costs upstream capacity, and so is rate limited.
    pub fn rate_limited(self) -> bool {
        matches!(
            self,
            Route::Research
                | Route::Mcp
                | Route::ChatCompletions
                | Route::Completions
                | Route::Models
        )
    }

    /// The format of the route's errors.
    pub fn envelope(self) -> Envelope {
        match self {
            Route::ChatCompletions | Route::Completions | Route::Models => Envelope::OpenAi,
            Route::Mcp => Envelope::JsonRpc,
            _ => Envelope::Detail,
        }
    }

    /// Maps a method and path onto a route. A query string is ignored.
    pub fn of(method: &str, path: &str) -> Route {
        match Route::at(path) {
            None => Route::NotFound,
            // The MCP transport answers its own methods, 405 included.
            Some((Route::Mcp, _)) => Route::Mcp,
            Some((route, allowed)) if allowed.contains(&method) => route,
            Some(_) => Route::MethodNotAllowed,
        }
    }

    /// The methods `path` takes (for a 405's `Allow`), when it is known.
    pub fn allowed_methods(path: &str) -> Option<&'static [&'static str]> {
        Route::at(path).map(|(_, allowed)| allowed)
    }

    /// The route at `path` and the methods it takes.
    fn at(path: &str) -> Option<(Route, &'static [&'static str])> {
        const READ: &[&str] = &["GET", "HEAD"];
        const POST: &[&str] = &["POST"];
        Some(match path {
            "/ping" => (Route::Ping, READ),
            "/" => (Route::Root, READ),
            "/docs" => (Route::Docs, READ),
            "/redoc" => (Route::ReDoc, READ),
            "/openapi.json" => (Route::OpenApi, READ),
            "/metrics" => (Route::Metrics, READ),
            "/status" => (Route::Status, READ),
            "/ui" => (Route::Ui, READ),
            "/v1/research" => (Route::Research, POST),
            // The MCP transport answers other methods itself, with these in `Allow`.
            "/mcp" => (Route::Mcp, &["POST", "DELETE"]),
            "/v1/chat/completions" => (Route::ChatCompletions, POST),
            "/v1/completions" => (Route::Completions, POST),
            "/v1/models" => (Route::Models, READ),
            // Last, and only under /docs/: every API request matched above
            // without looking through the asset table.
            p if p.starts_with("/docs/") && crate::routes::local::docs_asset(p).is_some() => {
                (Route::DocsAsset, READ)
            }
            _ => return None,
        })
    }
}

/// The error formats of the gateway's protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// The original FastAPI service's `{"detail": …}` (research, local routes).
    Detail,
    /// OpenAI's `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// MCP's JSON-RPC error with a null id.
    JsonRpc,
}

impl Envelope {
    /// `refusal` in this protocol's words and format.
    pub fn refuse(self, refusal: &Refusal) -> Reply {
        match self {
            Envelope::Detail => research::refusal(refusal),
            Envelope::OpenAi => openai::refusal(refusal),
            Envelope::JsonRpc => mcp::refusal(refusal),
        }
    }
}

/// Why the service refused a request before its route ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401, 429 or 503: a missing or wrong key, over a limit, or limits
    /// that cannot be checked.
    Admission(Admission),
    /// 408: the body was not all there within `limits.client_body_timeout`.
    BodyTimedOut(Duration),
    /// 413: a body larger than `limits.max_body_bytes` (declared or read).
    BodyTooLarge(usize),
    /// 415: a content type that is not JSON.
    MediaType(String),
}

/// A refused key or rate in the words every protocol uses: status, message,
/// OpenAI's `type` and `code`, and the header that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub code: &'static str,
    pub header: (&'static str, String),
}

impl From<crate::auth::Refusal> for Refusal {
    fn from(refusal: crate::auth::Refusal) -> Refusal {
        use crate::auth::Refusal as Auth;
        Refusal::Admission(match refusal {
            Auth::MissingKey => Admission {
                status: 401,
                message: "Missing API key: send Authorization: Bearer <key>".into(),
                kind: "invalid_request_error",
                code: "missing_api_key",
                header: (
                    "WWW-Authenticate",
                    r#"Bearer realm="context7-lb""#.to_string(),
                ),
            },
            Auth::WrongKey => Admission {
                status: 401,
                message: "Invalid API key".into(),
                kind: "invalid_request_error",
                code: "invalid_api_key",
                header: (
                    "WWW-Authenticate",
                    r#"Bearer realm="context7-lb", error="invalid_token""#.to_string(),
                ),
            },
            Auth::RateLimited(wait) => {
                let seconds = whole_seconds(wait);
                Admission {
                    status: 429,
                    message: format!("Rate limit exceeded: retry after {seconds} s"),
                    kind: "rate_limit_error",
                    code: "rate_limit_exceeded",
                    header: ("Retry-After", seconds.to_string()),
                }
            }
            Auth::TokensSpent(wait) => {
                let seconds = whole_seconds(wait);
                Admission {
                    status: 429,
                    message: format!(
                        "Token limit exceeded: this key's tokens per minute are spent; retry \
                         after {seconds} s"
                    ),
                    kind: "rate_limit_error",
                    code: "tokens_per_minute_exceeded",
                    header: ("Retry-After", seconds.to_string()),
                }
            }
            Auth::LimitsUnavailable => Admission {
                status: 503,
                message: "Service Unavailable: the shared rate limits cannot be checked (Redis \
                          is unreachable and redis.on_failure is deny); retry shortly"
                    .into(),
                kind: "server_error",
                code: "limits_unavailable",
                header: ("Retry-After", "1".into()),
            },
        })
    }
}

/// A wait as `Retry-After` gives it: whole seconds, rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A complete answer written by the gateway itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    /// A JSON answer.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(value)
                .expect("answer types serialize")
                .into(),
        }
    }

    /// A JSON answer already rendered.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The FastAPI-style error `{"detail": "…"}`.
    pub fn detail(status: u16, detail: impl Into<String>) -> Reply {
        #[derive(Serialize)]
        struct Detail {
            detail: String,
        }
        Reply::json(
            status,
            &Detail {
                detail: detail.into(),
            },
        )
    }

    /// An answer without a body (and so without a content type), such as
    /// MCP's 202 for a notification.
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: "",
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// `application/json` or any `application/*+json`, parameters allowed.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let starts = |prefix: &str| {
        essence
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let ends = |suffix: &str| {
        essence
            .len()
            .checked_sub(suffix.len())
            .and_then(|at| essence.get(at..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
    };
    essence.eq_ignore_ascii_case("application/json") || (starts("application/") && ends("+json"))
}

pub(crate) use crate::pool::call::{scrub_key, shorten, upstream_error_message};

/// The current time as ISO 8601 with microseconds and an explicit UTC offset,
/// the form Python's `datetime.now(timezone.utc).isoformat()` writes and
/// `datetime.fromisoformat` reads back on every Python version.
pub fn iso_timestamp() -> String {
    iso_time(std::time::SystemTime::now())
}

/// A point in time in the form of [`iso_timestamp`].
pub fn iso_time(t: std::time::SystemTime) -> String {
    // chrono's RFC 3339 writer, not a format string: `format` parses its
    // pattern on every call, which was 2 % of a research request.
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert_eq!(Route::of("GET", "/ping"), Route::Ping);
        assert_eq!(Route::of("HEAD", "/"), Route::Root);
        assert_eq!(Route::of("POST", "/v1/research"), Route::Research);
        assert_eq!(Route::of("GET", "/v1/research"), Route::MethodNotAllowed);
        assert_eq!(Route::of("POST", "/ping"), Route::MethodNotAllowed);
        assert_eq!(Route::of("GET", "/nope"), Route::NotFound);
        for method in ["POST", "GET", "DELETE", "PUT"] {
            assert_eq!(Route::of(method, "/mcp"), Route::Mcp);
        }
    }

    #[test]
    fn json_media_types_in_any_case_with_parameters() {
        for accepted in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
            "application/vnd.api+json",
            "APPLICATION/LD+JSON;profile=x",
        ] {
            assert!(is_json(accepted), "{accepted:?} refused");
        }
        for refused in [
            "",
            "json",
            "text/plain",
            "application/jsonx",
            "application/json-patch",
            "text/x+json",
            "application/é+json2",
            "applicatioñ/json",
        ] {
            assert!(!is_json(refused), "{refused:?} accepted");
        }
    }

    #[test]
    fn timestamps_are_iso_8601_with_offset() {
        let before = chrono::Utc::now();
        let t = iso_timestamp();
        let after = chrono::Utc::now();
        let parsed = chrono::DateTime::parse_from_rfc3339(&t).expect(&t);
        // Now, not some other instant (microseconds: the form keeps no more).
        assert!(
            before - chrono::TimeDelta::microseconds(1) <= parsed && parsed <= after,
            "{t}"
        );
        assert!(t.ends_with("+00:00") && t.len() == 32, "{t}");
        let at = |secs, nanos| std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        // What Python's isoformat() writes for the same instants.
        assert_eq!(
            iso_time(at(1_764_144_586, 383_239_000)),
            "2025-11-26T08:09:46.383239+00:00"
        );
        assert_eq!(
            iso_time(at(1_764_144_586, 0)),
            "2025-11-26T08:09:46.000000+00:00"
        );
    }
}

/// Appends `text` as a JSON string, byte for byte as serde_json writes it.
/// Text with nothing to escape (nearly all: queries, answers, model names)
/// is copied whole, after a check the compiler vectorises; serde_json walks
/// every byte through its escape table, which was the largest cost of
/// rendering a research request and its answer (docs/performance.md).
pub fn push_json_str(out: &mut Vec<u8>, text: &str) {
    let needs_escape = text.bytes().fold(false, |seen, b| {
        seen | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        serde_json::to_writer(&mut *out, text).expect("a string serializes");
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

#[cfg(test)]
mod json_text_tests {
    use super::push_json_str;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_string_is_written_as_serde_json_writes_it(text in any::<String>(), plain in "[ -~]{0,40}") {
            for text in [text, plain] {
                let mut ours = Vec::new();
                push_json_str(&mut ours, &text);
                prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap());
            }
        }
    }

    #[test]
    fn escapes_are_kept() {
        for text in [
            "a\"b",
            "back\\slash",
            "line\nbreak",
            "\u{1}",
            "\u{7f}",
            "é ✓",
        ] {
            let mut ours = Vec::new();
            push_json_str(&mut ours, text);
            assert_eq!(ours, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }
}
