//! The HTTP envelope of `/mcp`: the parts of a request the transport reads,
//! the origin policy, the framing `Accept` asks for, and the refusals.

use super::*;
use crate::config::OriginPattern;

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

/// A refusal of the transport: the status, and a JSON-RPC error without id.
pub fn transport_error(status: u16, code: i64, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        &rpc_error(&Value::Null, &RpcError::new(code, message)),
    )
}

/// A refusal of the service (key, rate, body) as a transport error.
pub fn refusal(refusal: &Refusal) -> Reply {
    match refusal {
        Refusal::Admission(a) => transport_error(a.status, -32001, a.message.clone())
            .with_header(a.header.0, a.header.1.clone()),
        Refusal::BodyTimedOut(limit) => transport_error(
            408,
            TRANSPORT_ERROR,
            format!(
                "Request Timeout: the body was not received within {}",
                humantime::format_duration(*limit)
            ),
        ),
        Refusal::MediaType(content_type) => unsupported_media_type(content_type),
        Refusal::BodyTooLarge(limit) => body_too_large(*limit),
    }
}

/// 415, for a body that is not JSON.
pub(crate) fn unsupported_media_type(content_type: &str) -> Reply {
    transport_error(
        415,
        TRANSPORT_ERROR,
        format!("Unsupported Media Type {content_type:?}: send application/json"),
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
pub(crate) fn respond(framing: Framing, message: &Value) -> Reply {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check_allowed_origin;

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
}
