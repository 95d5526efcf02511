//! One request from head to answer: the client guard's screening, listener
//! restrictions, the client key and rate limit, the request body within its
//! limits, then the route. Refusals are named here ([`Refusal`]) and written
//! in the route's own format by its protocol ([`Route::envelope`]).

use crate::auth::ClientId;
use crate::guard;
use crate::routes::openai::{Endpoint, OpenAiError};
use crate::routes::research::{CacheOutcome, ResearchRequest};
use crate::routes::{Refusal, Reply, Route, is_json, local, mcp};
use crate::state::{AppState, InFlightGuard};
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession as Session;
use std::sync::Arc;
use tokio::time::Instant;

/// What is known about a request as it is served: read by the access log
/// and the request metrics once it is over.
pub struct RequestCtx {
    pub route: Route,
    pub started: Instant,
    /// The status answered (0 until an answer was written).
    pub status: u16,
    pub upstream: Option<String>,
    pub request_id: Option<Arc<str>>,
    pub client: Option<ClientId>,
    pub cache: Option<CacheOutcome>,
    pub tokens: Option<u64>,
    /// Tokens to charge to the client's budget: `tokens`, or an estimate
    /// for a stream that ended without usage.
    pub charge: Option<u64>,
    pub query: Option<String>,
    /// Time spent waiting on upstreams, to tell the gateway's own time apart.
    pub upstream_time: std::time::Duration,
    /// What its upstream attempts cost in dollars, by their `pricing`.
    pub cost_usd: f64,
    _in_flight: InFlightGuard,
}

impl RequestCtx {
    pub fn new(in_flight: InFlightGuard) -> RequestCtx {
        RequestCtx {
            route: Route::NotFound,
            started: Instant::now(),
            status: 0,
            upstream: None,
            request_id: None,
            client: None,
            cache: None,
            tokens: None,
            charge: None,
            query: None,
            upstream_time: std::time::Duration::ZERO,
            cost_usd: 0.0,
            _in_flight: in_flight,
        }
    }
}

/// Routes a request: listener restrictions, client key, rate limit, then the
/// route's handler. Every answer carries the request id.
pub async fn serve(state: &AppState, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    let header = session.req_header();
    ctx.route = Route::of(header.method.as_str(), header.uri.path());
    if let Some(refusal) = guard::screen(session, &state.limits, ctx.route.takes_body()) {
        return write_reply(session, ctx, refusal).await;
    }
    let port = local_port(session);
    if let Some(reply) = listener_refusal(state, port, ctx.route) {
        return write_reply(session, ctx, reply).await;
    }
    if let Some(refusal) = admit(state, session, port, ctx).await {
        let mut reply = ctx.route.envelope().refuse(&refusal);
        if ctx.route == Route::Ui && reply.status == 401 {
            // The browser then asks for credentials: the key as the password.
            reply
                .headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("www-authenticate"));
            reply.headers.push((
                "www-authenticate",
                "Basic realm=\"context7-lb\", charset=\"UTF-8\"".into(),
            ));
        }
        return write_reply(session, ctx, reply).await;
    }
    let reply = match ctx.route {
        Route::Ping => local::ping(
            &state.pool,
            state.config.ping_always_200,
            state.shared.as_deref(),
        ),
        Route::Status => {
            let with_history = session
                .req_header()
                .uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "history=1"));
            local::status(&state.pool, state.shared.as_deref(), with_history)
        }
        Route::Ui => local::ui(),
        Route::Root => local::root(),
        Route::Docs => local::docs(),
        Route::ReDoc => local::redoc(),
        Route::DocsAsset => local::docs_asset_reply(session.req_header().uri.path()),
        Route::OpenApi => local::openapi(state.keys.enabled()),
        Route::Metrics => local::metrics(&state.metrics, &state.pool, state.shared.as_deref()),
        // Research's and MCP's futures are boxed where they are awaited, so
        // that this future (boxed for every request) stays small; OpenAI's is
        // inline: a stream holds it for as long as it lasts, and one box for
        // both takes less memory per open stream than two.
        Route::Research => Box::pin(research(state, session, ctx)).await?,
        Route::Mcp => Box::pin(mcp(state, session, ctx)).await?,
        Route::Models => state.openai.models(),
        Route::ChatCompletions | Route::Completions => {
            let endpoint = if ctx.route == Route::ChatCompletions {
                Endpoint::ChatCompletions
            } else {
                Endpoint::Completions
            };
            let served = openai(state, session, ctx, endpoint).await;
            // The answer was written (as it streamed): its tokens are charged
            // now, with other answers' in one Redis round trip when shared,
            // so that the connection's next request does not wait for it.
            if let Some((client, limits, tokens)) = ChargeOf::from(ctx, state).0 {
                state.rate_limit.charge_soon(&client, &limits, tokens);
            }
            return served;
        }
        Route::MethodNotAllowed => {
            // RFC 9110: a 405 says which methods the resource does take.
            let mut reply = Reply::detail(405, "Method Not Allowed");
            if let Some(allowed) = Route::allowed_methods(session.req_header().uri.path()) {
                reply.headers.push(("allow", allowed.join(", ")));
            }
            reply
        }
        Route::NotFound => Reply::detail(404, "Not Found"),
    };
    // The charge is sent before the answer is written (polled once, its
    // command is queued on the Redis connection), so that the client's next
    // request, on any replica, comes after it; then it finishes on its own,
    // so that neither the answer nor the connection's next request waits.
    if let Some((client, limits, tokens)) = ChargeOf::from(ctx, state).0 {
        let rate_limit = state.rate_limit.clone();
        let mut charging =
            Box::pin(async move { rate_limit.charge(&client, &limits, tokens).await });
        if futures::poll!(charging.as_mut()).is_pending() {
            tokio::spawn(charging);
        }
    }
    write_reply(session, ctx, reply).await
}

/// The client's `X-Request-Id` when it is a sane token, else a new one.
pub fn request_id(session: &Session) -> Arc<str> {
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

/// The extra listeners serve only their routes: `health_listen` `/ping`,
/// `metrics_listen` `/metrics` and `/status` (and those two then leave the
/// main listener).
fn listener_refusal(state: &AppState, port: Option<u16>, route: Route) -> Option<Reply> {
    let allowed = if port.is_some() && port == state.health_port {
        route == Route::Ping
    } else if port.is_some() && port == state.metrics_port {
        matches!(route, Route::Metrics | Route::Status | Route::Ui)
    } else {
        state.metrics_port.is_none() || !matches!(route, Route::Metrics | Route::Status | Route::Ui)
    };
    (!allowed).then(|| Reply::detail(404, "Not Found"))
}

/// Client key and limits: `Some(refusal)` when the request is refused.
async fn admit(
    state: &AppState,
    session: &Session,
    port: Option<u16>,
    ctx: &mut RequestCtx,
) -> Option<Refusal> {
    let on_metrics_listener = port.is_some() && port == state.metrics_port;
    let client = if state.keys.enabled() && ctx.route.needs_key(on_metrics_listener) {
        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let checked = if ctx.route.opened_by_browsers() {
            state.keys.check_from_browser(authorization)
        } else {
            state.keys.check(authorization)
        };
        match checked {
            Ok(id) => id,
            Err(refusal) => {
                state
                    .metrics
                    .auth_failures
                    .with_label_values(&[ctx.route.label()])
                    .inc();
                return Some(refusal.into());
            }
        }
    } else {
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| ClientId::Ip(a.ip()))
            .unwrap_or(ClientId::Unknown)
    };
    let refused = if ctx.route.rate_limited() && state.rate_limit.enabled() {
        state
            .rate_limit
            .admit(&client, state.limits_of(&client))
            .await
            .err()
    } else {
        None
    };
    ctx.client = Some(client);
    let refusal = refused?;
    let limit = match refusal {
        crate::auth::Refusal::TokensSpent(_) => "tokens",
        crate::auth::Refusal::LimitsUnavailable => "unavailable",
        _ => "requests",
    };
    state
        .metrics
        .rate_limited
        .with_label_values(&[ctx.route.label(), limit])
        .inc();
    Some(refusal.into())
}

/// What a request is to be charged: its client, the limits it is held to,
/// and the tokens an upstream spent on it (cached answers spent none).
struct ChargeOf(Option<(ClientId, crate::config::RateLimitConfig, u64)>);

impl ChargeOf {
    fn from(ctx: &RequestCtx, state: &AppState) -> ChargeOf {
        ChargeOf(match (&ctx.client, ctx.charge) {
            (Some(client), Some(tokens))
                if ctx.cache != Some(CacheOutcome::Hit) && ctx.route.rate_limited() =>
            {
                let limits = state.limits_of(client);
                (limits.tokens_per_minute > 0).then(|| (client.clone(), limits.clone(), tokens))
            }
            _ => None,
        })
    }
}

/// `POST /v1/research`: the body within the limit, validated, then the
/// research service (its cache, then the pool).
async fn research(state: &AppState, session: &mut Session, ctx: &mut RequestCtx) -> Result<Reply> {
    let body = match read_json_body(session, state, true).await? {
        Ok(body) => body,
        Err(refusal) => return Ok(ctx.route.envelope().refuse(&refusal)),
    };
    let request = match ResearchRequest::parse(&body) {
        Ok(r) => r,
        Err(rejection) => return Ok(rejection.reply()),
    };
    if state.config.access_log.include_query {
        ctx.query = Some(request.query.clone());
    }
    let bypass_cache = session
        .req_header()
        .headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"));
    let researched = state.research.answer(&request, bypass_cache).await;
    ctx.cache = researched.cache;
    let reply = match researched.outcome {
        Ok(answer) => {
            ctx.upstream = Some(answer.upstream.clone());
            ctx.tokens = Some(answer.tokens_used);
            ctx.charge = ctx.tokens;
            Reply::json_bytes(200, answer.to_json()).with_header("X-Upstream", answer.upstream)
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
) -> Result<()> {
    let body = match read_json_body(session, state, true).await? {
        Ok(body) => body,
        Err(refusal) => {
            let reply = ctx.route.envelope().refuse(&refusal);
            return write_reply(session, ctx, reply).await;
        }
    };
    let count_tokens = ctx
        .client
        .as_ref()
        .is_some_and(|c| state.limits_of(c).tokens_per_minute > 0);
    match state
        .openai
        .serve(session, endpoint, body, count_tokens)
        .await
    {
        Ok(served) => {
            ctx.status = 200;
            ctx.upstream = Some(served.upstream);
            ctx.tokens = served.tokens;
            ctx.charge = served.charge;
        }
        Err(error) => {
            ctx.upstream = error.upstream.clone();
            write_reply(session, ctx, OpenAiError::reply(&error)).await?;
        }
    }
    Ok(())
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
            Err(refusal) => return Ok(ctx.route.envelope().refuse(&refusal)),
        }
    } else {
        Bytes::new()
    };
    let answer = state.mcp.answer(&state.mcp_tools(), &request, &body).await;
    ctx.upstream = answer.upstream;
    ctx.tokens = answer.tokens;
    ctx.charge = answer.tokens;
    Ok(answer.reply)
}

/// Reads a request body within `limits.max_body_bytes`. A body refused
/// before it is read (wrong type, declared too large) or cut off (too large,
/// too slow) leaves the connection to be closed rather than drained.
/// `Expect: 100-continue` is answered once the request is known to be
/// acceptable, so a well-behaved client never uploads a body that would be
/// refused.
async fn read_json_body(
    session: &mut Session,
    state: &AppState,
    check_type: bool,
) -> Result<std::result::Result<Bytes, Refusal>> {
    let limit = state.config.limits.max_body_bytes;
    let timeout = state.limits.body_timeout;
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
        return Ok(Err(Refusal::MediaType(content_type)));
    }
    if declared.is_some_and(|n| n > limit as u64) {
        session.set_keepalive(None);
        return Ok(Err(Refusal::BodyTooLarge(limit)));
    }
    if expects_continue {
        session.write_continue_response().await?;
    }
    // The whole body within the deadline, however slowly it trickles in.
    let Ok(read) = tokio::time::timeout(timeout, read_body(session, limit)).await else {
        session.set_keepalive(None);
        return Ok(Err(Refusal::BodyTimedOut(timeout)));
    };
    match read? {
        Some(body) => Ok(Ok(body)),
        None => {
            session.set_keepalive(None);
            Ok(Err(Refusal::BodyTooLarge(limit)))
        }
    }
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

/// Writes an answer of the gateway's own, with the request id.
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
    session.write_response_header(Box::new(header)).await?;
    let body = if head_only { Bytes::new() } else { reply.body };
    session.write_response_body(body, true).await
}
