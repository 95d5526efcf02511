//! Protection against abusive clients, around Pingora's HTTP/1 server: a
//! deadline and a size limit on each request head, an idle timeout between
//! requests, and the checks on a parsed head that Pingora leaves to us.
//!
//! What Pingora 0.9 does by itself, and why this module exists:
//!
//! - A request head is read with a timeout per `read()` (60 s on a new
//!   connection, **none at all** on a kept-alive one, where its keep-alive
//!   timeout is "infinite"), so a client sending one byte every few seconds
//!   holds a connection forever. Its only size limit is a fixed 1 MiB
//!   (`MAX_HEADER_SIZE`), answered 400.
//! - Both `Content-Length` and `Transfer-Encoding`: the length is dropped and
//!   the body read as chunked (RFC 9112 §6.1 allows that); we answer 400, as
//!   the RFC also allows, since an ambiguous frame is how requests get smuggled.
//! - Pipelined requests: off by default, so the second of two requests sent in
//!   one write was silently dropped; we turn Pingora's pipelining on.
//!
//! So each accepted connection is wrapped in a [`GuardedStream`] before
//! Pingora's HTTP server sees it. While a request head is being read, the
//! stream itself enforces `limits.client_header_timeout` (from the head's
//! first byte; from the accept for a new connection), `max_header_bytes`
//! (answered 431) and, between requests, `client_keepalive_timeout` (a quiet
//! close). It knows where a head ends because the gateway tells it
//! ([`screen`] once a head is parsed, [`request_done`] once its request is
//! over): Pingora reads nothing of the body before the gateway asks for it.
//! Refusals written by the stream bypass the gateway, so they are logged and
//! counted here (`context7_http_requests_total{route="invalid"}`).

use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::routes::Reply;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::tls::{ALPN, SslDigest};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The limits on clients, from `limits:` in the configuration.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Largest request head (request line and header fields).
    pub max_header_bytes: usize,
    /// Time for a whole request head, from its first byte.
    pub header_timeout: Duration,
    /// Time for a whole request body, from the end of its head.
    pub body_timeout: Duration,
    /// An idle connection between two requests is closed after this long.
    pub keepalive_timeout: Duration,
    /// Largest request body (bodies on routes that take none are refused past it).
    pub max_body_bytes: usize,
    /// Longest a write to the client may wait for it to accept bytes.
    pub write_timeout: Duration,
}

impl ClientLimits {
    pub fn from_config(limits: &LimitsConfig) -> ClientLimits {
        ClientLimits {
            max_header_bytes: limits.max_header_bytes,
            header_timeout: limits.client_header_timeout,
            body_timeout: limits.client_body_timeout,
            keepalive_timeout: limits.client_keepalive_timeout,
            max_body_bytes: limits.max_body_bytes,
            write_timeout: limits.client_write_timeout,
        }
    }
}

/// The limits in force now: read for each new connection, so that a reload's
/// limits apply to the connections accepted after it.
pub type CurrentLimits = Arc<dyn Fn() -> ClientLimits + Send + Sync>;

/// The listening service for `app`, named `name`: Pingora's HTTP server
/// behind a [`Guarded`] layer that wraps each connection.
pub fn guarded_service<A>(
    app: A,
    name: &str,
    limits: CurrentLimits,
    metrics: Arc<Metrics>,
) -> Service<Guarded<A>>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    Service::new(name.to_string(), Guarded::new(app, limits, metrics))
}

/// A Pingora server application that wraps each accepted connection in a
/// [`GuardedStream`] and serves its HTTP/1 requests, one after the other,
/// with the HTTP application inside (the gateway).
///
/// The keep-alive loop is Pingora's own (its `ServerApp` for every
/// `HttpServerApp`) without its HTTP/2 and custom-protocol paths, which the
/// gateway never takes (no TLS listener, no h2c): inline in that loop's
/// future they made it 3.8 KiB for every open connection.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: CurrentLimits,
    metrics: Arc<Metrics>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limits: CurrentLimits, metrics: Arc<Metrics>) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            limits,
            metrics,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let guarded = GuardedStream::new(stream, (self.limits)(), self.metrics.clone());
        let mut session = ServerSession::new_http1(Box::new(guarded));
        // Kept alive unless the service is shutting down; how long an idle
        // connection stays is the stream's business (`keepalive_timeout`).
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        let mut served = self.inner.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = served.map(ReusedHttpStream::consume) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            served = self.inner.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

/// What the proxy phases tell the stream, shared with its reader.
#[derive(Debug, Default)]
struct Phase {
    /// A request head is being read (or awaited).
    in_head: AtomicBool,
    /// Requests finished on this connection: a change starts a new head.
    finished: AtomicU64,
    /// A write was cut: the client accepted no byte for `write_timeout`.
    write_stalled: AtomicBool,
}

/// Why the stream refused a request head itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    TooLarge,
    TooSlow,
}

/// A client connection whose request heads are bounded in time and size.
pub struct GuardedStream {
    inner: Stream,
    limits: ClientLimits,
    metrics: Arc<Metrics>,
    phase: Arc<Phase>,
    /// `phase.finished` when the current head began.
    head_of: u64,
    /// Bytes of the current head read so far.
    head_bytes: usize,
    /// Idle deadline before the head's first byte, then the head's deadline.
    deadline: Option<Pin<Box<Sleep>>>,
    /// A refusal being written: the answer and how much of it went out.
    refusing: Option<(Refusal, Bytes, usize)>,
    /// After a refusal: until when what the client still sends is read and
    /// dropped, so that closing does not reset the connection under the
    /// answer (a close with unread input sends RST, and the client may lose
    /// the answer it had not read yet).
    lingering: Option<(Pin<Box<Sleep>>, usize)>,
    /// Since when a write has waited for the client to accept bytes: armed
    /// only while one waits, so that an answer whose writes go straight
    /// through (nearly all) never touches a timer. Pingora's own write
    /// timeout registered one for every piece of every answer written.
    write_stall: Option<Pin<Box<Sleep>>>,
}

/// How long, and how much, a refused client's remaining input is drained.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

impl GuardedStream {
    fn new(inner: Stream, limits: ClientLimits, metrics: Arc<Metrics>) -> GuardedStream {
        let phase = Phase {
            in_head: AtomicBool::new(true),
            finished: AtomicU64::new(0),
            write_stalled: AtomicBool::new(false),
        };
        // A new connection is expected to send its request at once: the
        // head's whole time runs from the accept (as nginx does).
        let deadline = Box::pin(tokio::time::sleep(limits.header_timeout));
        GuardedStream {
            inner,
            limits,
            metrics,
            phase: Arc::new(phase),
            head_of: 0,
            head_bytes: 0,
            deadline: Some(deadline),
            refusing: None,
            lingering: None,
            write_stall: None,
        }
    }

    /// A write's outcome, bounded by `write_timeout` without progress: a
    /// write that is ready disarms the deadline, one that waits arms it, and
    /// one still waiting when it passes fails with `TimedOut`.
    fn bound_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stall = None;
            return polled;
        }
        let timeout = self.limits.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stall.as_mut().poll(cx));
        self.write_stall = None;
        self.phase.write_stalled.store(true, Ordering::Release);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client accepted no byte for {timeout:?}"),
        )))
    }

    /// The request head was parsed: what follows is its body.
    fn head_received(&self) {
        self.phase.in_head.store(false, Ordering::Release);
    }

    /// The request was answered: what follows is the next head.
    fn request_done(&self) {
        self.phase.finished.fetch_add(1, Ordering::AcqRel);
        self.phase.in_head.store(true, Ordering::Release);
    }

    fn peer(&self) -> String {
        self.inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_else(|| "-".into())
    }

    fn refuse(&mut self, refusal: Refusal) {
        let (status, reason, detail) = match refusal {
            Refusal::TooLarge => (
                431,
                "Request Header Fields Too Large",
                format!(
                    "Request header fields larger than the limit of {} bytes",
                    self.limits.max_header_bytes
                ),
            ),
            Refusal::TooSlow => (
                408,
                "Request Timeout",
                format!(
                    "Request header not received within {}",
                    humantime::format_duration(self.limits.header_timeout)
                ),
            ),
        };
        log::info!(
            "{} - - {status} refused: {detail} ({} bytes read)",
            self.peer(),
            self.head_bytes
        );
        self.metrics
            .requests
            .with_label_values(&["invalid", if status == 431 { "431" } else { "408" }])
            .inc();
        let reply = Reply::detail(status, detail);
        let answer = raw_answer(status, reason, &reply);
        self.refusing = Some((refusal, answer, 0));
        self.deadline = None;
    }

    /// Writes the refusal, then fails the read so that Pingora closes.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((refusal, answer, written)) = &mut self.refusing else {
            return Poll::Ready(Ok(()));
        };
        while *written < answer.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..])) {
                Ok(0) => break,
                Ok(n) => *written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        let kind = match refusal {
            Refusal::TooLarge => io::ErrorKind::InvalidData,
            Refusal::TooSlow => io::ErrorKind::TimedOut,
        };
        if self.lingering.is_none() {
            // The answer is out: say so with a FIN, then drain.
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.lingering = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        }
        if let Some((until, drained)) = &mut self.lingering {
            let mut scratch = [0u8; 8192];
            while *drained < LINGER_BYTES && until.as_mut().poll(cx).is_pending() {
                let mut sink = ReadBuf::new(&mut scratch);
                match Pin::new(&mut self.inner).poll_read(cx, &mut sink) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) if sink.filled().is_empty() => break,
                    Poll::Ready(Ok(())) => *drained += sink.filled().len(),
                    Poll::Ready(Err(_)) => break,
                }
            }
        }
        Poll::Ready(Err(io::Error::new(kind, "request head refused")))
    }

    /// A read while a head is awaited or being read.
    fn poll_read_head(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            if self.head_bytes == 0 {
                // Nothing sent (a new connection, or one idle between two
                // requests): close quietly, as at the end of a keep-alive;
                // Pingora reads this end of file as "no request".
                self.deadline = None;
                return Poll::Ready(Ok(()));
            }
            self.refuse(Refusal::TooSlow);
            return self.poll_refusal(cx);
        }
        let room = self.limits.max_header_bytes.saturating_sub(self.head_bytes);
        if room == 0 {
            // Pingora asks for more, so the head has not ended within the limit.
            self.refuse(Refusal::TooLarge);
            return self.poll_refusal(cx);
        }
        // Never hand Pingora more than the limit allows: it would buffer up
        // to 1 MiB of head per connection otherwise.
        let take = room.min(buf.remaining());
        let inner = &mut self.inner;
        let n = ready!(HEAD_SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < take {
                scratch.resize(take, 0);
            }
            let mut limited = ReadBuf::new(&mut scratch[..take]);
            Pin::new(inner).poll_read(cx, &mut limited).map_ok(|()| {
                let read = limited.filled();
                buf.put_slice(read);
                read.len()
            })
        }))?;
        if n > 0 && self.head_bytes == 0 && self.head_of > 0 {
            // The next request began: its head has the header timeout from now.
            self.deadline = Some(Box::pin(tokio::time::sleep(self.limits.header_timeout)));
        }
        self.head_bytes += n;
        Poll::Ready(Ok(()))
    }
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .field("head_bytes", &self.head_bytes)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Where heads are read before being handed to Pingora. `ReadBuf` lends
    /// its uninitialised memory only through `unsafe`, and zeroing Pingora's
    /// fresh buffer up to the head limit on every read cost 9,000
    /// instructions a request, more than the rest of the guard; copying the
    /// few hundred bytes actually read costs next to nothing.
    static HEAD_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An HTTP/1.1 answer written straight to the socket, closing the connection.
fn raw_answer(status: u16, reason: &str, reply: &Reply) -> Bytes {
    let mut text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    text.extend_from_slice(&reply.body);
    Bytes::from(text)
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.refusing.is_some() {
            return this.poll_refusal(cx);
        }
        let finished = this.phase.finished.load(Ordering::Acquire);
        if finished != this.head_of {
            // A new head: awaited for at most the keep-alive timeout.
            this.head_of = finished;
            this.head_bytes = 0;
            this.deadline = Some(Box::pin(tokio::time::sleep(this.limits.keepalive_timeout)));
        }
        if this.phase.in_head.load(Ordering::Acquire) {
            this.poll_read_head(cx, buf)
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bound_write(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bound_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The guarded stream under a session, if it is one.
fn guarded(session: &ServerSession) -> Option<&GuardedStream> {
    let stream = session.stream()?;
    (**stream).as_any().downcast_ref::<GuardedStream>()
}

/// Called first, once a request head is parsed: tells
/// the stream its head ended, sets the body's timeouts, turns pipelining on,
/// and refuses a head that is too large, ambiguously framed, or announces a
/// body too large for a route that takes none. `takes_body` says whether the
/// route reads a body (it then refuses a too large one in its own format).
pub fn screen(
    session: &mut ServerSession,
    limits: &ClientLimits,
    takes_body: bool,
) -> Option<Reply> {
    if let Some(stream) = guarded(session) {
        stream.head_received();
    }
    // The body's own deadline is enforced where it is read; this per-read
    // timeout is Pingora's backstop, a little longer so that ours decides.
    session.set_read_timeout(Some(limits.body_timeout + Duration::from_secs(1)));
    session.set_total_drain_timeout(Some(limits.body_timeout));
    session.set_pipelining_enabled(true);
    // A client that stops reading must not hold its answer, its upstream
    // request and its concurrency slot for ever: the stream bounds every
    // write (`GuardedStream::bound_write`), so Pingora's timeout is not set.
    // An answer written before the body was read (a refusal) closes the
    // connection: the unread bytes must never be taken for the next request.
    session.set_close_on_response_before_downstream_finish(true);
    // A client may half-close once its request is sent (RFC 9112, 9.6): its
    // answer, a stream too, goes on until written or a write fails.
    session.set_abort_on_close(false);
    let raw = session.to_h1_raw();
    let framing = framing(&raw);
    let refusal = judge(raw.len(), &framing, limits, takes_body);
    match &refusal {
        Some(_) => session.set_keepalive(None),
        None if !takes_body && framing.declares_body() => {
            // Not read, and not worth draining: the connection closes after
            // the answer instead.
            session.set_keepalive(None);
        }
        None => {}
    }
    refusal
}

/// Whether a write to this session's client was cut because the client
/// accepted no byte for `limits.client_write_timeout`.
pub fn write_timed_out(session: &ServerSession) -> bool {
    guarded(session).is_some_and(|stream| stream.phase.write_stalled.load(Ordering::Acquire))
}

/// Called once a request is over: what the stream reads next is the next
/// request's head.
pub fn request_done(session: &ServerSession) {
    if let Some(stream) = guarded(session) {
        stream.request_done();
    }
}

/// The framing headers of a raw request head, as sent (Pingora drops
/// `Content-Length` from its parsed header when `Transfer-Encoding` is there).
#[derive(Debug, Default, PartialEq, Eq)]
struct Framing {
    content_lengths: Vec<String>,
    transfer_encoding: bool,
}

impl Framing {
    fn declares_body(&self) -> bool {
        self.transfer_encoding || self.content_lengths.iter().any(|l| l != "0")
    }
}

fn framing(raw: &[u8]) -> Framing {
    // Uninitialised slots: zeroing 256 of them (8 KiB) cost more than parsing.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; 256];
    let mut request = httparse::Request::new(&mut []);
    let mut framing = Framing::default();
    // Pingora parsed this head already; a failure here leaves nothing to judge.
    if request
        .parse_with_uninit_headers(raw, &mut headers)
        .is_err()
    {
        return framing;
    }
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            framing
                .content_lengths
                .push(String::from_utf8_lossy(header.value).trim().to_string());
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            framing.transfer_encoding = true;
        }
    }
    framing
}

/// The refusal a head of `head_len` bytes with this framing deserves, if any.
fn judge(
    head_len: usize,
    framing: &Framing,
    limits: &ClientLimits,
    takes_body: bool,
) -> Option<Reply> {
    if head_len > limits.max_header_bytes {
        // A pipelined head that arrived with the request before it, so the
        // stream did not count it.
        return Some(Reply::detail(
            431,
            format!(
                "Request header fields larger than the limit of {} bytes",
                limits.max_header_bytes
            ),
        ));
    }
    if framing.transfer_encoding && !framing.content_lengths.is_empty() {
        return Some(Reply::detail(
            400,
            "Both Content-Length and Transfer-Encoding: the body's length is ambiguous; send one of them",
        ));
    }
    let declared = framing
        .content_lengths
        .first()
        .and_then(|l| l.parse::<u64>().ok());
    if !takes_body && declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Some(Reply::detail(
            413,
            format!(
                "Request body larger than the limit of {} bytes",
                limits.max_body_bytes
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ClientLimits {
        ClientLimits {
            max_header_bytes: 200,
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            max_body_bytes: 100,
            write_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn ambiguous_framing_is_refused_in_either_order() {
        for head in [
            "POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
        ] {
            let reply = judge(head.len(), &framing(head.as_bytes()), &limits(), true).unwrap();
            assert_eq!(reply.status, 400, "{head}");
        }
        let head = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            judge(head.len(), &framing(head.as_bytes()), &limits(), true),
            None
        );
    }

    #[test]
    fn a_declared_body_over_the_limit_is_refused_where_no_body_is_read() {
        let head = "GET / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n";
        assert_eq!(
            judge(head.len(), &framing(head.as_bytes()), &limits(), false)
                .unwrap()
                .status,
            413
        );
        // A route that reads bodies answers in its own format.
        assert_eq!(
            judge(head.len(), &framing(head.as_bytes()), &limits(), true),
            None
        );
        assert!(framing(head.as_bytes()).declares_body());
        assert!(!framing(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").declares_body());
    }

    #[test]
    fn a_head_over_the_limit_is_431() {
        let head = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(200));
        assert_eq!(
            judge(head.len(), &framing(head.as_bytes()), &limits(), false)
                .unwrap()
                .status,
            431
        );
    }
}
