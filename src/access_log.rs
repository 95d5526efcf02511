//! The access log: one line per request, as text or JSON. A line names the
//! client by address or `key#n`, never by its key.

use crate::config::LogFormat;
use crate::routes::research::CacheOutcome;
use crate::serve::RequestCtx;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession as Session;

/// One access-log line: the request id, client, route, upstream, status,
/// latency, tokens and cache result.
pub fn line(
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
            "cost_usd": (ctx.cost_usd > 0.0).then_some(ctx.cost_usd),
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
            if ctx.cost_usd > 0.0 {
                line.push_str(&format!(" cost_usd={:.6}", ctx.cost_usd));
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
