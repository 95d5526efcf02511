//! Requests the gateway itself makes to upstreams (research calls, health
//! probes), over Pingora's connector: pooled keep-alive connections, rustls with
//! verified certificates, SNI and `Host` taken from the upstream's URL.

use crate::config::BaseUrl;
use crate::pool::Upstream;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// How long an idle upstream connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A pooled connection that the upstream closed meanwhile fails on first use;
/// that many fresh tries are made before giving up on the upstream.
const STALE_CONNECTION_TRIES: usize = 3;

/// One HTTP request to an upstream.
pub struct UpstreamRequest<'a> {
    pub method: &'a str,
    pub url: &'a BaseUrl,
    /// Path and query on the upstream, already including the base path.
    pub path: &'a str,
    /// `Authorization` header value, if any.
    pub authorization: Option<&'a str>,
    pub body: Option<Bytes>,
    /// Limit on the answer's body size.
    pub max_body: usize,
    /// Limit on each read from the upstream, when one applies.
    pub read_timeout: Option<Duration>,
}

/// A whole answer from an upstream.
#[derive(Debug)]
pub struct UpstreamReply {
    pub status: u16,
    pub header: ResponseHeader,
    pub body: Bytes,
}

impl UpstreamReply {
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request to an upstream produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The host name has no address (yet): resolution failed or has not run.
    NoAddress(String),
    /// No connection could be made: refused, unreachable, TLS failed, connect timeout.
    /// Nothing was sent, so another upstream can safely be tried.
    Connect(String),
    /// The connection broke after the request was sent, before any answer:
    /// the upstream may or may not have seen it, and nothing reached the client.
    NoAnswer(String),
    /// The connection broke while the answer was being read.
    Io(String),
    /// The answer's body was larger than allowed.
    TooLarge(usize),
}

impl CallError {
    /// Whether the request certainly never reached the upstream.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, CallError::NoAddress(_) | CallError::Connect(_))
    }

    /// Whether it failed before any byte of an answer arrived.
    pub fn before_answer(&self) -> bool {
        self.nothing_sent() || matches!(self, CallError::NoAnswer(_))
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NoAddress(why) => write!(f, "no address: {why}"),
            CallError::Connect(why) => write!(f, "connection failed: {why}"),
            CallError::NoAnswer(why) => write!(f, "connection broken before an answer: {why}"),
            CallError::Io(why) => write!(f, "connection broken: {why}"),
            CallError::TooLarge(limit) => write!(f, "answer larger than {limit} bytes"),
        }
    }
}

/// The gateway's own HTTP client towards upstreams.
pub struct UpstreamClient {
    connector: Connector,
    connect_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration) -> UpstreamClient {
        UpstreamClient {
            connector: Connector::new(None),
            connect_timeout,
        }
    }

    /// Sends `req` to `upstream`'s resolved address and reads the whole answer.
    ///
    /// The caller bounds the total time; `read_timeout` bounds each read.
    pub async fn send(
        &self,
        upstream: &Upstream,
        req: &UpstreamRequest<'_>,
    ) -> Result<UpstreamReply, CallError> {
        let address = upstream
            .address()
            .ok_or_else(|| CallError::NoAddress(format!("{} did not resolve", req.url.host)))?;
        self.send_to(address, req).await
    }

    /// Sends `req` to `address`, with TLS, SNI and `Host` from `req.url`.
    pub async fn send_to(
        &self,
        address: SocketAddr,
        req: &UpstreamRequest<'_>,
    ) -> Result<UpstreamReply, CallError> {
        let peer = self.peer(address, req);
        let mut tries = 0;
        loop {
            tries += 1;
            let (mut session, reused) = self
                .connector
                .get_http_session(&peer)
                .await
                .map_err(|e| CallError::Connect(describe(&e)))?;
            session.set_read_timeout(req.read_timeout);
            session.set_write_timeout(Some(self.connect_timeout));
            match exchange(&mut session, req).await {
                Ok(reply) => {
                    if session.response_done() {
                        self.connector
                            .release_http_session(session, &peer, Some(IDLE_TIMEOUT))
                            .await;
                    }
                    return Ok(reply);
                }
                Err(Failure::BeforeAnswer(_)) if reused && tries < STALE_CONNECTION_TRIES => {
                    // A kept-alive connection the upstream had closed: try a fresh one.
                    continue;
                }
                Err(Failure::BeforeAnswer(why)) => {
                    session.shutdown().await;
                    return Err(match why {
                        CallError::Io(text) => CallError::NoAnswer(text),
                        other => other,
                    });
                }
                Err(Failure::AfterAnswer(why)) => {
                    session.shutdown().await;
                    return Err(why);
                }
            }
        }
    }

    fn peer(&self, address: SocketAddr, req: &UpstreamRequest<'_>) -> HttpPeer {
        let mut peer = HttpPeer::new(address, req.url.tls, req.url.host.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer
    }
}

enum Failure {
    /// Nothing of the answer was read.
    BeforeAnswer(CallError),
    AfterAnswer(CallError),
}

async fn exchange(
    session: &mut pingora::protocols::http::client::HttpSession,
    req: &UpstreamRequest<'_>,
) -> Result<UpstreamReply, Failure> {
    let io = |e: Box<pingora::Error>| CallError::Io(describe(&e));
    let mut header = RequestHeader::build(req.method, req.path.as_bytes(), None)
        .map_err(|e| Failure::BeforeAnswer(io(e)))?;
    let headers: [(&str, String); 5] = [
        ("Host", req.url.authority()),
        (
            "User-Agent",
            concat!("context7-lb/", env!("CARGO_PKG_VERSION")).into(),
        ),
        ("Accept", "application/json".into()),
        // Answers on these routes are parsed, so they must not come compressed.
        ("Accept-Encoding", "identity".into()),
        (
            "Content-Length",
            req.body.as_ref().map_or(0, |b| b.len()).to_string(),
        ),
    ];
    for (name, value) in headers {
        if name == "Content-Length" && req.body.is_none() {
            continue;
        }
        header
            .insert_header(name, value)
            .map_err(|e| Failure::BeforeAnswer(io(e)))?;
    }
    if req.body.is_some() {
        header
            .insert_header("Content-Type", "application/json")
            .map_err(|e| Failure::BeforeAnswer(io(e)))?;
    }
    if let Some(auth) = req.authorization {
        header
            .insert_header("Authorization", auth)
            .map_err(|e| Failure::BeforeAnswer(io(e)))?;
    }
    session
        .write_request_header(Box::new(header))
        .await
        .map_err(|e| Failure::BeforeAnswer(io(e)))?;
    if let Some(body) = &req.body {
        session
            .write_request_body(body.clone(), true)
            .await
            .map_err(|e| Failure::BeforeAnswer(io(e)))?;
    }
    session
        .finish_request_body()
        .await
        .map_err(|e| Failure::BeforeAnswer(io(e)))?;
    session
        .read_response_header()
        .await
        .map_err(|e| Failure::BeforeAnswer(io(e)))?;
    let header = session
        .response_header()
        .cloned()
        .ok_or_else(|| Failure::BeforeAnswer(CallError::Io("no response header".into())))?;
    let mut body = BytesMut::new();
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| Failure::AfterAnswer(io(e)))?
    {
        if body.len() + chunk.len() > req.max_body {
            return Err(Failure::AfterAnswer(CallError::TooLarge(req.max_body)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(UpstreamReply {
        status: header.status.as_u16(),
        header,
        body: body.freeze(),
    })
}

/// A short description of a Pingora error, without its internal context chain.
fn describe(e: &pingora::Error) -> String {
    match &e.cause {
        Some(cause) => format!("{} ({cause})", e.etype.as_str()),
        None => e.etype.as_str().to_string(),
    }
}
