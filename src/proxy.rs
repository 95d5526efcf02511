//! The Pingora `ProxyHttp` phases: route each request, answer local and
//! research routes, record metrics and one access-log line per request.

use crate::guard::{self, ClientLimits};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::routes::mcp::{self, McpServer};
use crate::routes::openai::{Endpoint, OpenAiError, OpenAiService};
use crate::routes::research::{ResearchRequest, ResearchService};
use crate::routes::{Reply, Route, local};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use humantime::format_duration;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use std::sync::Arc;
use tokio::time::Instant;

/// What the proxy phases share: built once in `app`, read by every request.
pub struct AppState {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub research: ResearchService,
    pub openai: OpenAiService,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Limits on clients: head size, head and body deadlines, keep-alive.
    pub client: ClientLimits,
    /// `/ping` answers 200 whatever the upstreams' state.
    pub ping_always_200: bool,
    /// The MCP transport's origin policy and sessions.
    pub mcp: McpServer,
}

/// The gateway's `ProxyHttp` implementation.
pub struct Gateway {
    state: Arc<AppState>,
}

impl Gateway {
    pub fn new(state: Arc<AppState>) -> Gateway {
        Gateway { state }
    }
}

/// Per-request state carried through the phases.
pub struct RequestCtx {
    route: Route,
    started: Instant,
    status: u16,
    upstream: Option<String>,
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
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let header = session.req_header();
        ctx.route = Route::of(header.method.as_str(), header.uri.path());
        let takes_body = matches!(
            ctx.route,
            Route::Research | Route::Mcp | Route::ChatCompletions | Route::Completions
        );
        if let Some(refusal) = guard::screen(session, &self.state.client, takes_body) {
            write_reply(session, ctx, refusal).await?;
            return Ok(true);
        }
        let reply = match ctx.route {
            Route::Ping => local::ping(&self.state.pool, self.state.ping_always_200),
            Route::Status => local::status(&self.state.pool),
            Route::Root => local::root(),
            Route::Docs => local::docs(),
            Route::Metrics => local::metrics(&self.state.metrics, &self.state.pool),
            Route::Research => self.research(session, ctx).await?,
            Route::Mcp => self.mcp(session, ctx).await?,
            Route::Models => self.state.openai.models(),
            Route::ChatCompletions => {
                return self.openai(session, ctx, Endpoint::ChatCompletions).await;
            }
            Route::Completions => {
                return self.openai(session, ctx, Endpoint::Completions).await;
            }
            Route::MethodNotAllowed => Reply::detail(405, "Method Not Allowed"),
            Route::NotFound => Reply::detail(404, "Not Found"),
        };
        write_reply(session, ctx, reply).await?;
        Ok(true)
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
        let metrics = &self.state.metrics;
        metrics
            .requests
            .with_label_values(&[route, status_label(status)])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        let header = session.req_header();
        log::info!(
            "{} {} {} {} upstream={} {:.1}ms{}",
            session
                .client_addr()
                .map_or_else(|| "-".to_string(), |a| a.to_string()),
            header.method,
            header.uri.path(),
            status,
            ctx.upstream.as_deref().unwrap_or("-"),
            elapsed.as_secs_f64() * 1000.0,
            error.map_or_else(String::new, |e| format!(" error={}", e.etype.as_str())),
        );
    }
}

impl Gateway {
    /// `POST /v1/research`: checks the envelope, reads the body within the
    /// limit, validates it and runs it through the research service.
    async fn research(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Reply> {
        let body = match read_json_body(
            session,
            self.state.max_body_bytes,
            self.state.client.body_timeout,
            true,
        )
        .await?
        {
            Ok(body) => body,
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
            Err(BodyRefused::TimedOut(limit)) => {
                return Ok(Reply::detail(
                    408,
                    format!(
                        "Request body not received within {}",
                        format_duration(limit)
                    ),
                ));
            }
        };
        let request = match ResearchRequest::parse(&body) {
            Ok(r) => r,
            Err(rejection) => return Ok(rejection.reply()),
        };
        Ok(match self.state.research.answer(&request).await {
            Ok(answer) => {
                ctx.upstream = Some(answer.upstream.clone());
                Reply::json(200, &answer).with_header("X-Upstream", answer.upstream)
            }
            Err(failure) => {
                ctx.upstream = failure.upstream.clone();
                failure.reply()
            }
        })
    }
}

impl Gateway {
    /// `/v1/chat/completions` and `/v1/completions`: errors in OpenAI's format;
    /// the answer itself is written by the OpenAI service as it streams.
    async fn openai(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
    ) -> Result<bool> {
        let body = match read_json_body(
            session,
            self.state.max_body_bytes,
            self.state.client.body_timeout,
            true,
        )
        .await?
        {
            Ok(body) => body,
            Err(BodyRefused::MediaType(content_type)) => {
                let error = OpenAiError::new(
                    415,
                    "invalid_request_error",
                    format!("Unsupported media type {content_type:?}: send application/json."),
                );
                write_reply(session, ctx, error.reply()).await?;
                return Ok(true);
            }
            Err(BodyRefused::TooLarge(limit)) => {
                let error = OpenAiError::new(
                    413,
                    "invalid_request_error",
                    format!("The request body is larger than the limit of {limit} bytes."),
                );
                write_reply(session, ctx, error.reply()).await?;
                return Ok(true);
            }
            Err(BodyRefused::TimedOut(limit)) => {
                let error = OpenAiError::new(
                    408,
                    "invalid_request_error",
                    format!(
                        "The request body was not received within {}.",
                        format_duration(limit)
                    ),
                );
                write_reply(session, ctx, error.reply()).await?;
                return Ok(true);
            }
        };
        match self.state.openai.serve(session, endpoint, body).await {
            Ok(served) => {
                ctx.status = served.status;
                ctx.upstream = Some(served.upstream);
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
    async fn mcp(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Reply> {
        let header = session.req_header();
        let request = mcp::HttpRequest::from_parts(&header.method, &header.headers);
        let is_post = header.method == http::Method::POST;
        if let Some(refusal) = self.state.mcp.refuse_before_body(&request) {
            if is_post {
                // The body was not read: close rather than drain it.
                session.set_keepalive(None);
            }
            return Ok(refusal);
        }
        let body = if is_post {
            // The MCP server judges the content type itself.
            match read_json_body(
                session,
                self.state.max_body_bytes,
                self.state.client.body_timeout,
                false,
            )
            .await?
            {
                Ok(body) => body,
                Err(BodyRefused::TimedOut(limit)) => {
                    return Ok(mcp::transport_error(
                        408,
                        mcp::TRANSPORT_ERROR,
                        format!(
                            "Request Timeout: the body was not received within {}",
                            format_duration(limit)
                        ),
                    ));
                }
                Err(_) => return Ok(mcp::body_too_large(self.state.max_body_bytes)),
            }
        } else {
            Bytes::new()
        };
        let answer = self.state.mcp.answer(&self.state, &request, &body).await;
        ctx.upstream = answer.upstream;
        Ok(answer.reply)
    }
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
    limit: usize,
    timeout: std::time::Duration,
    check_type: bool,
) -> Result<std::result::Result<Bytes, BodyRefused>> {
    let header = session.req_header();
    let text = |name: http::header::HeaderName| {
        header
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("").to_string())
    };
    let content_type = text(http::header::CONTENT_TYPE);
    let declared = text(http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue =
        text(http::header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if check_type && let Some(content_type) = content_type.filter(|ct| !is_json(ct)) {
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
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
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
    let mut header = ResponseHeader::build(reply.status, Some(4 + reply.headers.len()))?;
    if !reply.content_type.is_empty() {
        header.insert_header(http::header::CONTENT_TYPE, reply.content_type)?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, reply.body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
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
