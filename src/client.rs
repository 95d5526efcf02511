//! The gateway's one HTTP client towards upstreams: every request the gateway
//! makes (research, OpenAI, health probes, model discovery) goes through one
//! instance, built once per process and kept across reloads, over Pingora's
//! transport connector (TCP, rustls with verified certificates, SNI) and
//! HTTP/1 client session, with `Host` taken from the URL, and its own pool of
//! kept-alive connections ([`IdleConnections`]). It knows addresses and
//! URLs, not upstreams: choosing one is the pool's job (`pool::call`).

use crate::config::BaseUrl;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use pingora::connectors::TransportConnector;
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::{HttpPeer, Peer};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How long an idle upstream connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most idle connections kept per upstream address; more are closed.
const MAX_IDLE_PER_PEER: usize = 1024;

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
    /// `Accept` header: `application/json`, or `text/event-stream` for streams.
    pub accept: &'static str,
    /// Limit on making a connection (TCP and TLS) and on writing the request.
    pub connect_timeout: Duration,
    /// A new connection, not one from the pool (a resend after a stale one).
    pub fresh: bool,
}

/// A whole answer from an upstream.
#[derive(Debug)]
pub struct UpstreamReply {
    pub status: u16,
    /// The answer's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The answer's `Retry-After`, if any (429 and 503 answers carry it).
    pub retry_after: Option<String>,
    pub body: Bytes,
}

/// Why a request to an upstream produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No connection could be made: refused, unreachable, TLS failed, connect timeout.
    /// Nothing was sent, so another upstream can safely be tried.
    Connect(String),
    /// The connection broke after the request was sent, before any answer:
    /// the upstream may or may not have seen it, and nothing reached the client.
    NoAnswer(String),
    /// A pooled connection the upstream had closed: it failed on first use
    /// with nothing of an answer back, so a resend on a new one is safe.
    Stale(String),
    /// The connection broke while the answer was being read.
    Io(String),
    /// The answer's body was larger than allowed.
    TooLarge(usize),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connect(why) => write!(f, "connection failed: {why}"),
            CallError::NoAnswer(why) => write!(f, "connection broken before an answer: {why}"),
            CallError::Stale(why) => {
                write!(f, "kept-alive connection closed by the upstream: {why}")
            }
            CallError::Io(why) => write!(f, "connection broken: {why}"),
            CallError::TooLarge(limit) => write!(f, "answer larger than {limit} bytes"),
        }
    }
}

/// The gateway's HTTP client towards upstreams, and its connection pool.
pub struct UpstreamClient {
    connector: TransportConnector,
    idle: IdleConnections,
}

impl Default for UpstreamClient {
    fn default() -> Self {
        UpstreamClient::new()
    }
}

impl UpstreamClient {
    pub fn new() -> UpstreamClient {
        UpstreamClient {
            connector: TransportConnector::new(None),
            idle: IdleConnections::default(),
        }
    }

    /// Sends `req` to `address` and reads the whole answer; a pooled
    /// connection found closed is replaced by a new one once (probes and
    /// discovery: the upstream calls of requests resend in `pool::call`,
    /// where a resend counts as an attempt).
    ///
    /// The caller bounds the total time; `read_timeout` bounds each read.
    pub async fn send(
        &self,
        address: SocketAddr,
        req: &UpstreamRequest<'_>,
    ) -> Result<UpstreamReply, CallError> {
        match self.open(address, req).await {
            Err(CallError::Stale(_)) => {
                let fresh = UpstreamRequest {
                    fresh: true,
                    body: req.body.clone(),
                    ..*req
                };
                self.open(address, &fresh)
                    .await?
                    .read_all(req.max_body)
                    .await
            }
            opened => opened?.read_all(req.max_body).await,
        }
    }

    /// Sends `req` to `address`, with TLS, SNI and `Host` from `req.url`, and
    /// returns once the answer's header is in, leaving its body to be read
    /// chunk by chunk.
    pub async fn open<'c>(
        &'c self,
        address: SocketAddr,
        req: &UpstreamRequest<'_>,
    ) -> Result<Exchange<'c>, CallError> {
        // Boxed: a peer is 700 bytes, and the exchange moves through several
        // futures that would each copy it.
        let peer = Box::new(self.peer(address, req));
        // Built once, before any connection: a request that cannot be written
        // is not worth a connection, and a stale one's retry sends the same bytes.
        let wire = request_wire(req).map_err(|why| CallError::NoAnswer(why.to_string()))?;
        let (stream, reused) = self.stream_for(&peer, req.fresh).await?;
        let (mut session, sent) =
            send_request(stream, &peer, &wire, req.read_timeout, req.connect_timeout).await;
        match sent {
            Ok(()) => Ok(Exchange {
                client: self,
                connection: Some(Box::new(Connection {
                    session,
                    pool_key: peer.reuse_hash(),
                })),
            }),
            Err(why) => {
                // A kept-alive connection the upstream had closed fails on first
                // use. Resent only when nothing of an answer came back, and by
                // the caller, as an attempt of its own (budget and metrics).
                let stale = reused && session.resp_header().is_none();
                session.shutdown().await;
                let text = match why {
                    CallError::Io(text) => text,
                    other => return Err(other),
                };
                Err(if stale {
                    CallError::Stale(text)
                } else {
                    CallError::NoAnswer(text)
                })
            }
        }
    }

    /// Puts a connection whose answer was read to its end back in the pool;
    /// closes any other.
    fn release(&self, connection: Box<Connection>) {
        let Connection {
            mut session,
            pool_key,
        } = *connection;
        if !session.is_body_done() {
            return;
        }
        // The answer's own say (`Connection: close`, HTTP/1.0) decides.
        session.respect_keepalive();
        // `reuse` only awaits to shut down a connection that cannot be kept;
        // dropping that future closes it as well.
        if let Some(Some(stream)) = session.reuse().now_or_never() {
            self.idle.put(pool_key, stream);
        }
    }

    /// A pooled connection to `peer`, or else a new one; says which.
    async fn stream_for(&self, peer: &HttpPeer, fresh: bool) -> Result<(Stream, bool), CallError> {
        if !fresh && let Some(stream) = self.idle.take(peer.reuse_hash()) {
            return Ok((stream, true));
        }
        // Connecting (TCP, then TLS for https) is the rare path and its future
        // is large; boxed, so that every request does not carry and copy it.
        Box::pin(self.connector.new_stream(peer))
            .await
            .map(|stream| (stream, false))
            .map_err(|e| CallError::Connect(describe(&e)))
    }

    /// Closes the pooled connections idle for too long or closed by their
    /// upstream (the janitor calls it; taking one checks it too).
    pub fn sweep(&self) {
        self.idle.sweep();
    }

    /// Connections idle in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    fn peer(&self, address: SocketAddr, req: &UpstreamRequest<'_>) -> HttpPeer {
        let mut peer = HttpPeer::new(address, req.url.tls, req.url.host.clone());
        // Not part of the pool's key: requests with other limits share connections.
        peer.options.connection_timeout = Some(req.connect_timeout);
        peer.options.total_connection_timeout = Some(req.connect_timeout);
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer
    }
}

/// An answer whose header has arrived and whose body is still to be read.
/// Dropping it without [`Exchange::finish`] closes the connection, which is
/// how an upstream learns that nobody waits for the rest.
pub struct Exchange<'c> {
    client: &'c UpstreamClient,
    connection: Option<Box<Connection>>,
}

/// The connection an exchange runs on, and where it goes back to.
struct Connection {
    session: HttpSession,
    /// Where it goes back to ([`IdleConnections`]): the peer itself is 700
    /// bytes, not worth keeping for as long as the answer streams.
    pool_key: u64,
}

impl Exchange<'_> {
    /// The answer's head, as Pingora parsed it (read in place: copying it
    /// cost more than the rest of the exchange's bookkeeping).
    fn header(&self) -> Option<&ResponseHeader> {
        self.connection.as_ref()?.session.resp_header()
    }

    pub fn status(&self) -> u16 {
        self.header().map_or(0, |h| h.status.as_u16())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header()?.headers.get(name)?.to_str().ok()
    }

    fn session(&mut self) -> Result<&mut HttpSession, CallError> {
        self.connection
            .as_mut()
            .map(|c| &mut c.session)
            .ok_or_else(|| CallError::Io("exchange already finished".into()))
    }

    /// The next piece of the body as the upstream sent it; `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, CallError> {
        self.session()?
            .read_body_bytes()
            .await
            .map_err(|e| CallError::Io(describe(&e)))
    }

    /// The next piece of the body if the upstream already sent it: `None`
    /// when reading would wait. Pingora's body reader keeps its state in the
    /// session across a cancelled read, so giving up on a read that waits
    /// loses nothing. The read timeout is left out of this one poll: it
    /// would register a timer only to drop it.
    pub fn next_chunk_now(&mut self) -> Option<Result<Option<Bytes>, CallError>> {
        let session = match self.session() {
            Ok(session) => session,
            Err(e) => return Some(Err(e)),
        };
        let read_timeout = session.read_timeout.take();
        let read = session.read_body_bytes().now_or_never();
        session.read_timeout = read_timeout;
        read.map(|read| read.map_err(|e| CallError::Io(describe(&e))))
    }

    /// Reads the rest of the body, within `limit` bytes, and returns the
    /// connection to the pool.
    pub async fn read_all(mut self, limit: usize) -> Result<UpstreamReply, CallError> {
        let mut body = BytesMut::new();
        let session = self.session()?;
        // Straight from Pingora's read buffer into one body: no piece copied twice.
        while let Some(piece) = session
            .read_body_ref()
            .await
            .map_err(|e| CallError::Io(describe(&e)))?
        {
            if body.len() + piece.len() > limit {
                return Err(CallError::TooLarge(limit));
            }
            body.extend_from_slice(piece);
        }
        let reply = UpstreamReply {
            status: self.status(),
            content_type: self.header_str("content-type").map(str::to_string),
            retry_after: self.header_str("retry-after").map(str::to_string),
            body: body.freeze(),
        };
        self.finish();
        Ok(reply)
    }

    /// Returns the connection to the pool when the answer was read to its
    /// end, and closes it otherwise.
    pub fn finish(mut self) {
        if let Some(connection) = self.connection.take() {
            self.client.release(connection);
        }
    }
}

/// Kept-alive upstream connections waiting for their next request: per
/// address (Pingora's reuse hash of the peer, which covers TLS and SNI), the
/// most recently used last, so that the connections in use stay few and warm.
///
/// No task watches an idle connection (Pingora's pool spawned one for every
/// connection given back, with a timer, to notice a close): a connection is
/// checked when it is taken instead, by polling a read once. Nothing to read
/// is a live connection; an end of stream is the upstream's close, and bytes
/// it sent unasked make the connection unusable. Either way it is closed and
/// the next one tried; a close that comes while the request is being written
/// is the stale-connection resend of `pool::call`.
#[derive(Default)]
struct IdleConnections {
    by_peer: Mutex<HashMap<u64, VecDeque<IdleStream>>>,
}

struct IdleStream {
    stream: Stream,
    since: Instant,
}

impl IdleStream {
    /// Not idle too long, and not closed by its upstream.
    fn usable(&mut self) -> bool {
        self.since.elapsed() < IDLE_TIMEOUT && still_open(&mut self.stream)
    }
}

impl IdleConnections {
    fn put(&self, peer: u64, stream: Stream) {
        let evicted = {
            let mut by_peer = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = by_peer.entry(peer).or_default();
            idle.push_back(IdleStream {
                stream,
                since: Instant::now(),
            });
            (idle.len() > MAX_IDLE_PER_PEER).then(|| idle.pop_front())
        };
        // Closed outside the lock.
        drop(evicted);
    }

    fn take(&self, peer: u64) -> Option<Stream> {
        let mut closing = Vec::new();
        let found = {
            let mut by_peer = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = by_peer.get_mut(&peer)?;
            loop {
                let Some(mut newest) = idle.pop_back() else {
                    break None;
                };
                if newest.since.elapsed() >= IDLE_TIMEOUT {
                    // The newest is too old: so are all the others.
                    closing.push(newest);
                    closing.extend(idle.drain(..));
                    break None;
                }
                if newest.usable() {
                    break Some(newest.stream);
                }
                closing.push(newest);
            }
        };
        drop(closing);
        found
    }

    fn sweep(&self) {
        let closing: Vec<IdleStream> = {
            let mut by_peer = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
            let mut closing = Vec::new();
            for idle in by_peer.values_mut() {
                let mut keep = VecDeque::with_capacity(idle.len());
                for mut entry in idle.drain(..) {
                    if entry.usable() {
                        keep.push_back(entry);
                    } else {
                        closing.push(entry);
                    }
                }
                *idle = keep;
            }
            by_peer.retain(|_, idle| !idle.is_empty());
            closing
        };
        drop(closing);
    }

    fn len(&self) -> usize {
        let by_peer = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        by_peer.values().map(VecDeque::len).sum()
    }
}

/// Whether an idle connection is still usable: a read polled once finds
/// nothing to read (see [`IdleConnections`]).
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    stream.read(&mut byte).now_or_never().is_none()
}

/// Writes the request (see [`request_wire`]) and reads the answer's header;
/// hands the session back either way, for the pool or for shutdown.
async fn send_request(
    mut stream: Stream,
    peer: &HttpPeer,
    wire: &[u8],
    read_timeout: Option<Duration>,
    write_timeout: Duration,
) -> (HttpSession, Result<(), CallError>) {
    // Pingora's HTTP/1 client flushes the head on its own and then writes the
    // body: two sends, two segments, and on loopback two wake-ups of the
    // upstream. A third of the gateway's CPU went there, so head and body
    // leave here in one write; Pingora still reads and parses the answer.
    let written = write_request(&mut stream, wire, write_timeout).await;
    let mut session = HttpSession::new_with_options(stream, peer);
    if let Err(why) = written {
        return (session, Err(why));
    }
    session.read_timeout = read_timeout;
    let answer = read_final_head(&mut session).await;
    (session, answer)
}

/// Most interim (1xx) answers skipped before the final one: a server sends
/// one or two (100 Continue, 103 Early Hints); an endless run is an attack.
const MAX_INTERIM_ANSWERS: usize = 16;

/// Reads answer heads until the final one: interim answers (100, 102, 103,
/// with or without headers) are skipped, as RFC 9110 says a client must; a
/// 101 is an error, since the gateway never asks to switch protocols.
async fn read_final_head(session: &mut HttpSession) -> Result<(), CallError> {
    for _ in 0..=MAX_INTERIM_ANSWERS {
        if let Err(e) = session.read_response().await {
            return Err(CallError::Io(describe(&e)));
        }
        match session.resp_header().map(|h| h.status.as_u16()) {
            Some(101) => {
                return Err(CallError::Io(
                    "the upstream answered 101 Switching Protocols, which was not asked for".into(),
                ));
            }
            Some(100..=199) => continue,
            Some(_) => return Ok(()),
            None => return Err(CallError::Io("no answer head".into())),
        }
    }
    Err(CallError::Io(format!(
        "more than {MAX_INTERIM_ANSWERS} interim (1xx) answers"
    )))
}

const USER_AGENT: &str = concat!("context7-lb/", env!("CARGO_PKG_VERSION"));

/// The whole HTTP/1.1 request, head and body, as it goes on the wire.
///
/// Written out directly rather than through Pingora's `RequestHeader`: every
/// name is fixed, and building a header map only to serialise it again was a
/// tenth of a proxied request's instructions. Names go in lower case (HTTP/1.1
/// does not care, HTTP/2 insists).
fn request_wire(req: &UpstreamRequest<'_>) -> Result<BytesMut, Unsendable> {
    if !req.path.starts_with('/') || req.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Unsendable::Path(req.path.to_string()));
    }
    let length = req.body.as_ref().map(|body| body.len().to_string());
    let request_id = crate::scope::request_id();
    let fields = [
        ("user-agent", Some(USER_AGENT)),
        ("accept", Some(req.accept)),
        // Answers the gateway parses must not come compressed; streams pass as sent.
        ("accept-encoding", Some("identity")),
        ("content-type", length.as_ref().map(|_| "application/json")),
        ("content-length", length.as_deref()),
        ("authorization", req.authorization),
        // The request id of the client request being served, if any, so that
        // the upstream's logs can be joined with ours.
        ("x-request-id", request_id.as_deref()),
    ];
    let body = req.body.as_deref().unwrap_or_default();
    let mut wire = BytesMut::with_capacity(256 + body.len());
    wire.extend_from_slice(req.method.as_bytes());
    wire.extend_from_slice(b" ");
    wire.extend_from_slice(req.path.as_bytes());
    wire.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    req.url.write_authority(&mut wire);
    wire.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        let Some(value) = value else { continue };
        // Values come from the configuration, our own ids or a client's parsed
        // header: none may break out of its line.
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(Unsendable::ControlCharacter(name));
        }
        wire.extend_from_slice(name.as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(body);
    Ok(wire)
}

/// Why a request cannot be written: a value that would break out of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unsendable {
    Path(String),
    ControlCharacter(&'static str),
}

impl fmt::Display for Unsendable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsendable::Path(path) => write!(f, "request path {path:?} cannot be sent"),
            Unsendable::ControlCharacter(name) => {
                write!(f, "the {name} header has a control character")
            }
        }
    }
}

/// One write of the whole request, within `write_timeout`.
async fn write_request(
    stream: &mut Stream,
    wire: &[u8],
    write_timeout: Duration,
) -> Result<(), CallError> {
    let write = async {
        stream.write_all(wire).await?;
        stream.flush().await
    };
    match tokio::time::timeout(write_timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CallError::Io(format!("writing the request: {e}"))),
        Err(_) => Err(CallError::Io(format!(
            "writing the request: no progress in {write_timeout:?}"
        ))),
    }
}

/// A Pingora error in one line: its type and the reason at the bottom of its
/// chain (`ConnectRefused: Connection refused (os error 111)`,
/// `TLSHandshakeFailure: invalid peer certificate: UnknownIssuer, SNI: …`),
/// without the layers of context in between that repeat the address.
fn describe(e: &pingora::Error) -> String {
    let mut contexts = Vec::new();
    let mut root_cause = None;
    let mut level = Some(e);
    while let Some(error) = level {
        if let Some(context) = &error.context {
            contexts.push(context.to_string());
        }
        level = match &error.cause {
            None => None,
            Some(cause) => match cause.downcast_ref::<Box<pingora::Error>>() {
                Some(inner) => Some(inner),
                None => match cause.downcast_ref::<pingora::Error>() {
                    Some(inner) => Some(inner),
                    None => {
                        root_cause = Some(cause.to_string());
                        None
                    }
                },
            },
        };
    }
    // A context that embeds a formatted chain (a TLS failure's) holds the
    // reason as its last cause; otherwise the operating system's own words
    // (the cause at the bottom); otherwise the outermost context.
    let reason = contexts
        .iter()
        .find_map(|c| c.rsplit_once(" cause: ").map(|(_, last)| last.to_string()))
        .or(root_cause)
        .or_else(|| contexts.first().cloned());
    match reason {
        Some(reason) => format!("{}: {}", e.etype.as_str(), reason.trim()),
        None => e.etype.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_base_url;

    fn request<'a>(url: &'a BaseUrl, authorization: Option<&'a str>) -> UpstreamRequest<'a> {
        UpstreamRequest {
            method: "POST",
            url,
            path: "/openai/v1/chat/completions",
            authorization,
            body: Some(Bytes::from_static(b"{\"model\":\"m\"}")),
            max_body: 1024,
            read_timeout: None,
            accept: "application/json",
            connect_timeout: Duration::from_secs(1),
            fresh: false,
        }
    }

    #[test]
    fn the_request_goes_out_as_one_head_and_body() {
        let url = parse_base_url("https://api.runpod.ai/v2/abc/openai/v1").unwrap();
        let wire = request_wire(&request(&url, Some("Bearer rp_key"))).unwrap();
        let expected = format!(
            "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: api.runpod.ai\r\nuser-agent: {USER_AGENT}\r\n\
             accept: application/json\r\naccept-encoding: identity\r\ncontent-type: application/json\r\n\
             content-length: 13\r\nauthorization: Bearer rp_key\r\n\r\n{{\"model\":\"m\"}}"
        );
        assert_eq!(std::str::from_utf8(&wire).unwrap(), expected);
    }

    #[test]
    fn a_request_without_a_body_has_no_body_headers_and_the_port_in_host() {
        for (base, host) in [
            ("http://127.0.0.1:8000/v1", "127.0.0.1:8000"),
            ("http://[::1]:8000/v1", "[::1]:8000"),
            ("http://vllm.internal/v1", "vllm.internal"),
        ] {
            let url = parse_base_url(base).unwrap();
            let mut get = request(&url, None);
            get.method = "GET";
            get.path = "/v1/models";
            get.body = None;
            let wire = request_wire(&get).unwrap();
            assert_eq!(
                std::str::from_utf8(&wire).unwrap(),
                format!(
                    "GET /v1/models HTTP/1.1\r\nhost: {host}\r\nuser-agent: {USER_AGENT}\r\n\
                     accept: application/json\r\naccept-encoding: identity\r\n\r\n"
                )
            );
        }
    }

    #[test]
    fn a_value_that_would_break_its_line_is_refused() {
        let url = parse_base_url("http://127.0.0.1:8000/v1").unwrap();
        let Err(why) = request_wire(&request(&url, Some("Bearer a\r\nx-evil: 1"))) else {
            panic!("a CR LF in a header value was written");
        };
        assert_eq!(
            why.to_string(),
            "the authorization header has a control character"
        );
        let mut bad_path = request(&url, None);
        bad_path.path = "/v1/chat completions";
        let Err(why) = request_wire(&bad_path) else {
            panic!("a path with a space was written");
        };
        assert_eq!(
            why.to_string(),
            "request path \"/v1/chat completions\" cannot be sent"
        );
    }
}
