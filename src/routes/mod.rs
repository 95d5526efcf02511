//! The routes the gateway answers itself, and the small answer type they share.

pub mod local;
pub mod mcp;
pub mod openai;
pub mod research;

use bytes::Bytes;
use serde::Serialize;

/// Which route a request took; also the `route` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Ping,
    Root,
    Docs,
    OpenApi,
    Metrics,
    Status,
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

impl Route {
    /// Low-cardinality label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Route::Ping => "/ping",
            Route::Root => "/",
            Route::Docs => "/docs",
            Route::OpenApi => "/openapi.json",
            Route::Metrics => "/metrics",
            Route::Status => "/status",
            Route::Research => "/v1/research",
            Route::Mcp => "/mcp",
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Models => "/v1/models",
            Route::MethodNotAllowed => "method_not_allowed",
            Route::NotFound => "not_found",
        }
    }

    /// Maps a method and path onto a route. A query string is ignored.
    pub fn of(method: &str, path: &str) -> Route {
        let (route, allowed): (Route, &[&str]) = match path {
            "/ping" => (Route::Ping, &["GET", "HEAD"]),
            "/" => (Route::Root, &["GET", "HEAD"]),
            "/docs" => (Route::Docs, &["GET", "HEAD"]),
            "/openapi.json" => (Route::OpenApi, &["GET", "HEAD"]),
            "/metrics" => (Route::Metrics, &["GET", "HEAD"]),
            "/status" => (Route::Status, &["GET", "HEAD"]),
            "/v1/research" => (Route::Research, &["POST"]),
            "/mcp" => return Route::Mcp,
            "/v1/chat/completions" => (Route::ChatCompletions, &["POST"]),
            "/v1/completions" => (Route::Completions, &["POST"]),
            "/v1/models" => (Route::Models, &["GET", "HEAD"]),
            _ => return Route::NotFound,
        };
        if allowed.contains(&method) {
            route
        } else {
            Route::MethodNotAllowed
        }
    }
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

/// Removes an upstream's key from text that came from that upstream, in case
/// it echoed it (an error message quoting the request, say).
pub(crate) fn scrub_key(text: &str, key: Option<&str>) -> String {
    match key {
        Some(k) if k.len() >= 4 && text.contains(k) => text.replace(k, "[redacted]"),
        _ => text.to_string(),
    }
}

/// Longest upstream error text passed on to a client.
pub(crate) const MAX_ERROR_TEXT: usize = 500;

/// The message of an upstream error in any of the formats seen in the field:
/// OpenAI's `{"error":{"message"}}`, vLLM's flat `{"object":"error","message"}`,
/// RunPod's `{"error":"…"}`, FastAPI's `{"detail":…}`, or plain text; cut
/// to [`MAX_ERROR_TEXT`] characters. `None` when the body says nothing.
pub(crate) fn upstream_error_message(body: &[u8]) -> Option<String> {
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
    Some(match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

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
