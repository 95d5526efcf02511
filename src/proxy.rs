//! The Pingora `ProxyHttp` phases, and nothing else: a context per request,
//! `request_filter` serving the whole request (`serve`), and `logging`
//! recording its metrics and access-log line. No route is proxied as is.

use crate::metrics::status_label;
use crate::serve::{self, RequestCtx};
use crate::state::{InFlight, SharedState};
use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

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

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.in_flight.enter())
    }

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {
        // None. Pingora's default is a response compression module, disabled,
        // which still built a context for every request and looked at every
        // answer's head; the gateway compresses nothing (streams must not be
        // buffered, and LLM answers are small).
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.state.load_full();
        let id = serve::request_id(session);
        ctx.request_id = Some(id.clone());
        // Boxed: the handlers' futures are large, and nesting them inline in
        // the scope's future overflows the stack of unoptimised builds.
        let (result, upstream_time) =
            crate::scope::serve(id, Box::pin(serve::serve(&state, session, ctx))).await;
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
        crate::guard::request_done(session);
        let status = match (ctx.status, error) {
            (0, Some(_)) => 500,
            (0, None) => session.response_written().map_or(0, |r| r.status.as_u16()),
            (s, _) => s,
        };
        if error.is_some_and(|e| e.etype == WriteTimedout) {
            self.state.load().metrics.client_write_timeouts.inc();
        }
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
            let format = state.config.access_log.format;
            log::info!(
                target: "access",
                "{}",
                crate::access_log::line(session, ctx, status, elapsed, error, format)
            );
        }
    }
}
