//! The Pingora `ProxyHttp` phases: route each request, check its key and
//! rate, answer it, record metrics and one access-log line per request.

use crate::auth::{ClientId, ClientKeys, RateLimit, Refusal};
use crate::cache::{CacheKey, CacheOutcome, ResearchCache};
use crate::config::{Config, LogFormat};
use crate::guard::{self, ClientLimits};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::routes::mcp::{self, McpServer};
use crate::routes::openai::{Endpoint, OpenAiError, OpenAiService};
use crate::routes::research::{ResearchRequest, ResearchService};
use crate::routes::{Reply, Route, local};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use std::sync::Arc;
use tokio::time::Instant;

/// What the proxy phases share: built from one configuration in `app`,
/// swapped whole on reload, read by every request.
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub research: ResearchService,
    pub openai: OpenAiService,
    pub keys: ClientKeys,
    /// Limits on clients: head size, head and body deadlines, keep-alive.
    pub client: ClientLimits,
    pub rate_limit: Arc<RateLimit>,
    pub cache: Option<Arc<ResearchCache>>,
    /// The MCP transport's origin policy and sessions (kept across reloads).
    pub mcp: Arc<McpServer>,
    /// Ports of `metrics_listen` and `health_listen`, parsed once per
    /// configuration rather than on every request.
    pub metrics_port: Option<u16>,
    pub health_port: Option<u16>,
}

/// Requests being served now, across reloads: a graceful stop waits for zero.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlightGuard(self.clone())
    }
}

struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The current [`AppState`]; a reload swaps in a new one while requests that
/// began under the old one finish with it.
pub type SharedState = Arc<ArcSwap<AppState>>;

/// The gateway's `ProxyHttp` implementation.
pub struct Gateway {
    state: SharedState,
    in_flight: InFlight,
}

impl Gateway {
    pub fn new(state: SharedState, in_flight: InFlight) -> Gateway {
        Gateway { state, in_flight }
    }
}

/// Per-request state carried through the phases.
pub struct RequestCtx {
    route: Route,
    started: Instant,
    status: u16,
    upstream: Option<String>,
    request_id: Option<Arc<str>>,
    client: Option<ClientId>,
    cache: Option<CacheOutcome>,
    tokens: Option<u64>,
    query: Option<String>,
    /// Time spent waiting on upstreams, to tell the gateway's own time apart.
    upstream_time: std::time::Duration,
    _in_flight: InFlightGuard,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            route: Route::NotFound,
            started: Instant::now(),
            status: 0,
            upstream: None,
            request_id: None,
            client: None,
            cache: None,
            tokens: None,
            query: None,
            upstream_time: std::time::Duration::ZERO,
            _in_flight: self.in_flight.enter(),
        }
    }

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {
        // None. Pingora's default is a response compression module, disabled,
        // which still built a context for every request and looked at every
        // answer's head; the gateway compresses nothing (streams must not be
        // buffered, and LLM answers are small).
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.state.load_full();
        let id = request_id(session);
        ctx.request_id = Some(id.clone());
        // Boxed: the handlers' futures are large, and nesting them inline in
        // the scope's future overflows the stack of unoptimised builds.
        let (result, upstream_time) =
            crate::scope::serve(id, Box::pin(serve(&state, session, ctx))).await;
        ctx.upstream_time = upstream_time;
        result
    }
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // Every route is answered in `request_filter`; reaching here is a bug.
        Error::e_explain(InternalError, "no route is proxied as is")
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        guard::request_done(session);
        let status = match (ctx.status, error) {
            (0, Some(_)) => 500,
            (0, None) => session.response_written().map_or(0, |r| r.status.as_u16()),
            (s, _) => s,
        };
        let elapsed = ctx.started.elapsed();
        let route = ctx.route.label();
        let state = self.state.load();
        let metrics = &state.metrics;
        metrics
            .requests
            .with_label_values(&[route, status_label(status)])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        metrics
            .gateway_overhead
            .with_label_values(&[route])
            .observe(elapsed.saturating_sub(ctx.upstream_time).as_secs_f64());
        if state.config.access_log.enabled {
            log::info!(
                target: "access",
                "{}",
                access_line(session, ctx, status, elapsed, error, state.config.access_log.format)
            );
        }
    }
}

/// One access-log line: the request id, client (an address, or `key#n`,
/// never a key), route, upstream, status, latency, tokens and cache result.
fn access_line(
    session: &Session,
    ctx: &RequestCtx,
    status: u16,
    elapsed: std::time::Duration,
    error: Option<&Error>,
    format: LogFormat,
) -> String {
    let header = session.req_header();
    let address = session
        .client_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let client = ctx.client.as_ref().map(ToString::to_string);
    let latency_ms = (elapsed.as_secs_f64() * 10_000.0).round() / 10.0;
    match format {
        LogFormat::Json => serde_json::json!({
            "time": crate::routes::iso_timestamp(),
            "request_id": ctx.request_id.as_deref(),
            "remote": address,
            "client": client,
            "method": header.method.as_str(),
            "path": header.uri.path(),
            "route": ctx.route.label(),
            "status": status,
            "upstream": ctx.upstream,
            "latency_ms": latency_ms,
            "tokens": ctx.tokens,
            "cache": ctx.cache.map(CacheOutcome::as_str),
            "query": ctx.query,
            "error": error.map(|e| e.etype.as_str()),
        })
        .to_string(),
        LogFormat::Text => {
            let mut line = format!(
                "{} {address} {} {} {status} upstream={} {latency_ms}ms id={} client={}",
                crate::routes::iso_timestamp(),
                header.method,
                header.uri.path(),
                ctx.upstream.as_deref().unwrap_or("-"),
                ctx.request_id.as_deref().unwrap_or("-"),
                client.as_deref().unwrap_or("-"),
            );
            if let Some(tokens) = ctx.tokens {
                line.push_str(&format!(" tokens={tokens}"));
            }
            if let Some(cache) = ctx.cache {
                line.push_str(&format!(" cache={}", cache.as_str()));
            }
            if let Some(query) = &ctx.query {
                line.push_str(&format!(" query={query:?}"));
            }
            if let Some(e) = error {
                line.push_str(&format!(" error={}", e.etype.as_str()));
            }
            line
        }
    }
}

/// Routes a request: listener restrictions, client key, rate limit, then the
/// route's handler. Every answer carries the request id.
async fn serve(state: &AppState, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let header = session.req_header();
    ctx.route = Route::of(header.method.as_str(), header.uri.path());
    let takes_body = matches!(
        ctx.route,
        Route::Research | Route::Mcp | Route::ChatCompletions | Route::Completions
    );
    if let Some(refusal) = guard::screen(session, &state.client, takes_body) {
        write_reply(session, ctx, refusal).await?;
        return Ok(true);
    }
    let port = local_port(session);
    if let Some(reply) = listener_refusal(state, port, ctx.route) {
        write_reply(session, ctx, reply).await?;
        return Ok(true);
    }
    if let Some(reply) = admit(state, session, port, ctx) {
        write_reply(session, ctx, reply).await?;
        return Ok(true);
    }
    let reply = match ctx.route {
        Route::Ping => local::ping(&state.pool, state.config.ping_always_200),
        Route::Status => local::status(&state.pool),
        Route::Root => local::root(),
        Route::Docs => local::docs(),
        Route::OpenApi => local::openapi(),
        Route::Metrics => local::metrics(&state.metrics, &state.pool),
        // The handlers' futures are boxed where they are awaited, so that this
        // future stays small: it is moved into a box for every request, and
        // profiling found that copy among the largest costs of a request.
        Route::Research => Box::pin(research(state, session, ctx)).await?,
        Route::Mcp => Box::pin(mcp(state, session, ctx)).await?,
        Route::Models => state.openai.models(),
        Route::ChatCompletions => {
            return Box::pin(openai(state, session, ctx, Endpoint::ChatCompletions)).await;
        }
        Route::Completions => {
            return Box::pin(openai(state, session, ctx, Endpoint::Completions)).await;
        }
        Route::MethodNotAllowed => Reply::detail(405, "Method Not Allowed"),
        Route::NotFound => Reply::detail(404, "Not Found"),
    };
    write_reply(session, ctx, reply).await?;
    Ok(true)
}

/// The client's `X-Request-Id` when it is a sane token, else a new one.
fn request_id(session: &Session) -> Arc<str> {
    let given = session
        .req_header()
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
    match given {
        Some(id) => Arc::from(id),
        None => Arc::from(format!("{:032x}", fastrand::u128(..)).as_str()),
    }
}

/// The port a request came in on.
fn local_port(session: &Session) -> Option<u16> {
    session
        .server_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.port())
}

pub(crate) fn port_of(address: &Option<String>) -> Option<u16> {
    address
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
}

/// The extra listeners serve only their routes: `health_listen` `/ping`,
/// `metrics_listen` `/metrics` and `/status` (and those two then leave the
/// main listener).
fn listener_refusal(state: &AppState, port: Option<u16>, route: Route) -> Option<Reply> {
    let allowed = if port.is_some() && port == state.health_port {
        route == Route::Ping
    } else if port.is_some() && port == state.metrics_port {
        matches!(route, Route::Metrics | Route::Status)
    } else {
        state.metrics_port.is_none() || !matches!(route, Route::Metrics | Route::Status)
    };
    (!allowed).then(|| Reply::detail(404, "Not Found"))
}

/// Routes that need a client key when keys are configured. `/ping`, `/`,
/// `/docs` and errors about unknown paths stay open; `/metrics` and `/status`
/// are open only on `metrics_listen`.
fn needs_key(route: Route, on_metrics_listener: bool) -> bool {
    match route {
        Route::Research
        | Route::Mcp
        | Route::ChatCompletions
        | Route::Completions
        | Route::Models => true,
        Route::Metrics | Route::Status => !on_metrics_listener,
        Route::Ping
        | Route::Root
        | Route::Docs
        | Route::OpenApi
        | Route::MethodNotAllowed
        | Route::NotFound => false,
    }
}

/// Routes that cost upstream capacity, and so are rate limited.
fn rate_limited(route: Route) -> bool {
    matches!(
        route,
        Route::Research | Route::Mcp | Route::ChatCompletions | Route::Completions | Route::Models
    )
}

/// Client key and rate limit: `Some(answer)` when the request is refused.
fn admit(
    state: &AppState,
    session: &Session,
    port: Option<u16>,
    ctx: &mut RequestCtx,
) -> Option<Reply> {
    let on_metrics_listener = port.is_some() && port == state.metrics_port;
    let ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| ClientId::Ip(a.ip()))
        .unwrap_or(ClientId::Unknown);
    let client = if state.keys.enabled() && needs_key(ctx.route, on_metrics_listener) {
        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match state.keys.check(authorization) {
            Ok(id) => id,
            Err(refusal) => {
                state
                    .metrics
                    .auth_failures
                    .with_label_values(&[ctx.route.label()])
                    .inc();
                return Some(refused(ctx.route, &refusal));
            }
        }
    } else {
        ip
    };
    ctx.client = Some(client.clone());
    if rate_limited(ctx.route)
        && let Err(refusal) = state.rate_limit.check(&client)
    {
        state
            .metrics
            .rate_limited
            .with_label_values(&[ctx.route.label()])
            .inc();
        return Some(refused(ctx.route, &refusal));
    }
    None
}

/// A 401 or 429 in the route's own error format.
fn refused(route: Route, refusal: &Refusal) -> Reply {
    let (status, message, kind, code, header) = match refusal {
        Refusal::MissingKey => (
            401,
            "Missing API key: send Authorization: Bearer <key>".to_string(),
            "invalid_request_error",
            "missing_api_key",
            (
                "WWW-Authenticate",
                r#"Bearer realm="context7-lb""#.to_string(),
            ),
        ),
        Refusal::WrongKey => (
            401,
            "Invalid API key".to_string(),
            "invalid_request_error",
            "invalid_api_key",
            (
                "WWW-Authenticate",
                r#"Bearer realm="context7-lb", error="invalid_token""#.to_string(),
            ),
        ),
        Refusal::RateLimited(wait) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            (
                429,
                format!("Rate limit exceeded: retry after {} s", seconds.max(1)),
                "rate_limit_error",
                "rate_limit_exceeded",
                ("Retry-After", seconds.max(1).to_string()),
            )
        }
    };
    let reply = match route {
        Route::ChatCompletions | Route::Completions | Route::Models => {
            let error = OpenAiError::new(status, kind, message).code(code);
            error.reply()
        }
        Route::Mcp => mcp::transport_error(status, -32001, message),
        _ => Reply::detail(status, message),
    };
    reply.with_header(header.0, header.1)
}

/// `POST /v1/research`: checks the envelope, reads the body within the
/// limit, validates it and runs it through the research service.
async fn research(state: &AppState, session: &mut Session, ctx: &mut RequestCtx) -> Result<Reply> {
    let body = match read_json_body(session, state, true).await? {
        Ok(body) => body,
        Err(BodyRefused::TimedOut(limit)) => {
            return Ok(Reply::detail(
                408,
                format!(
                    "Request body not received within {}",
                    humantime::format_duration(limit)
                ),
            ));
        }
        Err(BodyRefused::MediaType(content_type)) => {
            return Ok(Reply::detail(
                415,
                format!("Unsupported media type {content_type:?}: send application/json"),
            ));
        }
        Err(BodyRefused::TooLarge(limit)) => {
            return Ok(Reply::detail(
                413,
                format!("Request body larger than the limit of {limit} bytes"),
            ));
        }
    };
    let request = match ResearchRequest::parse(&body) {
        Ok(r) => r,
        Err(rejection) => return Ok(rejection.reply()),
    };
    if state.config.access_log.include_query {
        ctx.query = Some(request.query.clone());
    }
    let started = Instant::now();
    let outcome = match state.cache.as_ref().filter(|c| c.admits(&request)) {
        Some(cache) => {
            let bypass = session
                .req_header()
                .headers
                .get_all(http::header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"));
            let key = CacheKey::new(&request, &state.config.research.model);
            // moka's entry futures hold several copies of the computation's:
            // boxed (the computation too), the cached path stays off the
            // uncached one's stack and out of every request's copies.
            let compute = Box::pin(state.research.answer(&request));
            let (result, cached) = Box::pin(cache.get_or_compute(key, bypass, compute)).await;
            state
                .metrics
                .cache_lookups
                .with_label_values(&[cached.as_str()])
                .inc();
            ctx.cache = Some(cached);
            result.map(|answer| {
                let mut answer = (*answer).clone();
                if cached == CacheOutcome::Hit {
                    // A cached answer is served now: its latency and time are this request's.
                    answer.latency_ms = started.elapsed().as_millis() as u64;
                    answer.timestamp = crate::routes::iso_timestamp();
                }
                answer
            })
        }
        None => state.research.answer(&request).await,
    };
    let reply = match outcome {
        Ok(answer) => {
            ctx.upstream = Some(answer.upstream.clone());
            ctx.tokens = Some(answer.tokens_used);
            Reply::json(200, &answer).with_header("X-Upstream", answer.upstream)
        }
        Err(failure) => {
            ctx.upstream = failure.upstream.clone();
            failure.reply()
        }
    };
    Ok(match ctx.cache {
        Some(cached) => reply.with_header("X-Cache", cached.as_str()),
        None => reply,
    })
}

/// `/v1/chat/completions` and `/v1/completions`: errors in OpenAI's format;
/// the answer itself is written by the OpenAI service as it streams.
async fn openai(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    endpoint: Endpoint,
) -> Result<bool> {
    let refusal = match read_json_body(session, state, true).await? {
        Ok(body) => Ok(body),
        Err(BodyRefused::TimedOut(limit)) => Err((
            408,
            format!(
                "The request body was not received within {}.",
                humantime::format_duration(limit)
            ),
        )),
        Err(BodyRefused::MediaType(content_type)) => Err((
            415,
            format!("Unsupported media type {content_type:?}: send application/json."),
        )),
        Err(BodyRefused::TooLarge(limit)) => Err((
            413,
            format!("The request body is larger than the limit of {limit} bytes."),
        )),
    };
    let body = match refusal {
        Ok(body) => body,
        Err((status, message)) => {
            let error = OpenAiError::new(status, "invalid_request_error", message);
            write_reply(session, ctx, error.reply()).await?;
            return Ok(true);
        }
    };
    match state.openai.serve(session, endpoint, body).await {
        Ok(served) => {
            ctx.status = 200;
            ctx.upstream = Some(served.upstream);
            ctx.tokens = served.tokens;
        }
        Err(error) => {
            ctx.upstream = error.upstream.clone();
            write_reply(session, ctx, error.reply()).await?;
        }
    }
    Ok(true)
}

/// `/mcp`: the checks that need no body first, then the body within the
/// limit, then the MCP server, which answers every outcome itself.
async fn mcp(state: &AppState, session: &mut Session, ctx: &mut RequestCtx) -> Result<Reply> {
    let header = session.req_header();
    let request = mcp::HttpRequest::from_parts(&header.method, &header.headers);
    let is_post = header.method == http::Method::POST;
    if let Some(refusal) = state.mcp.refuse_before_body(&request) {
        if is_post {
            // The body was not read: close rather than drain it.
            session.set_keepalive(None);
        }
        return Ok(refusal);
    }
    let body = if is_post {
        // The MCP server judges the content type itself.
        match read_json_body(session, state, false).await? {
            Ok(body) => body,
            Err(BodyRefused::TimedOut(limit)) => {
                return Ok(mcp::transport_error(
                    408,
                    mcp::TRANSPORT_ERROR,
                    format!(
                        "Request Timeout: the body was not received within {}",
                        humantime::format_duration(limit)
                    ),
                ));
            }
            Err(_) => return Ok(mcp::body_too_large(state.config.limits.max_body_bytes)),
        }
    } else {
        Bytes::new()
    };
    let answer = state.mcp.answer(state, &request, &body).await;
    ctx.upstream = answer.upstream;
    Ok(answer.reply)
}

/// Why a request body was not read.
enum BodyRefused {
    /// A content type that is not JSON.
    MediaType(String),
    /// Larger than the limit (declared, or found while reading).
    TooLarge(usize),
    /// Not all there within `limits.client_body_timeout`.
    TimedOut(std::time::Duration),
}

/// Reads a request body within `limit` bytes. A body refused before it is
/// read (wrong type, declared too large) or cut off (too large) leaves the
/// connection to be closed rather than drained. `Expect: 100-continue` is
/// answered once the request is known to be acceptable, so a well-behaved
/// client never uploads a body that would be refused.
async fn read_json_body(
    session: &mut Session,
    state: &AppState,
    check_type: bool,
) -> Result<std::result::Result<Bytes, BodyRefused>> {
    let limit = state.config.limits.max_body_bytes;
    let timeout = state.client.body_timeout;
    let header = session.req_header();
    let text =
        |name: http::header::HeaderName| header.headers.get(name).map(|v| v.to_str().unwrap_or(""));
    // Borrowed from the head; only a refused content type is copied out.
    let refused_type = text(http::header::CONTENT_TYPE)
        .filter(|ct| check_type && !is_json(ct))
        .map(str::to_string);
    let declared = text(http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue =
        text(http::header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if let Some(content_type) = refused_type {
        session.set_keepalive(None);
        return Ok(Err(BodyRefused::MediaType(content_type)));
    }
    if declared.is_some_and(|n| n > limit as u64) {
        session.set_keepalive(None);
        return Ok(Err(BodyRefused::TooLarge(limit)));
    }
    if expects_continue {
        session.write_continue_response().await?;
    }
    // The whole body within the deadline, however slowly it trickles in.
    let Ok(read) = tokio::time::timeout(timeout, read_body(session, limit)).await else {
        session.set_keepalive(None);
        return Ok(Err(BodyRefused::TimedOut(timeout)));
    };
    match read? {
        Some(body) => Ok(Ok(body)),
        None => {
            session.set_keepalive(None);
            Ok(Err(BodyRefused::TooLarge(limit)))
        }
    }
}

/// `application/json` or any `application/*+json`, parameters allowed.
pub(crate) fn is_json(content_type: &str) -> bool {
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

/// Reads the whole request body; `None` when it grows past `limit`.
async fn read_body(session: &mut Session, limit: usize) -> Result<Option<Bytes>> {
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

async fn write_reply(session: &mut Session, ctx: &mut RequestCtx, reply: Reply) -> Result<()> {
    ctx.status = reply.status;
    // Names go out in lower case, as uvicorn sent them for the original
    // service; Pingora's case-preserving variant keeps a second map per head.
    let mut header = ResponseHeader::build_no_case(reply.status, Some(4 + reply.headers.len()))?;
    if !reply.content_type.is_empty() {
        header.insert_header(http::header::CONTENT_TYPE, reply.content_type)?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, reply.body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if let Some(id) = &ctx.request_id {
        header.insert_header("X-Request-Id", &**id)?;
    }
    for (name, value) in reply.headers {
        header.insert_header(name, value)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}

/// Status codes as static labels, so metrics never allocate or explode.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        413 => "413",
        415 => "415",
        431 => "431",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 200 => "1xx",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

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
}
