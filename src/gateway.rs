//! The gateway as a Pingora HTTP server application: each request head read
//! (or the connection let go at shutdown), served (`serve`), recorded in the
//! metrics and the access log, and its connection kept for the next request
//! or closed. The gateway answers every request itself, so it implements
//! pingora-core's `HttpServerApp` rather than pingora-proxy's `ProxyHttp`:
//! no phase framework, module contexts or cache state per request, whose
//! boxed future alone was 14 KiB of every open stream (docs/performance.md).

use crate::metrics::status_label;
use crate::serve::{self, RequestCtx};
use crate::state::{InFlight, SharedState};
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// The gateway's HTTP server application.
pub struct Gateway {
    state: SharedState,
    in_flight: InFlight,
    /// Set, and the waiters woken, when the service shuts down: connections
    /// idle between two requests then close instead of waiting for one.
    shutting_down: AtomicBool,
    shutdown: Notify,
}

impl Gateway {
    pub fn new(state: SharedState, in_flight: InFlight) -> Gateway {
        Gateway {
            state,
            in_flight,
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
        }
    }

    async fn shut_down(&self) {
        let notified = self.shutdown.notified();
        if self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// Reads the next request head: `None` when there is none to serve (the
    /// client closed, the service is shutting down, or the head was bad and
    /// has been answered).
    async fn read_head(&self, session: &mut ServerSession) -> Option<()> {
        // Biased: a request already buffered is served, not dropped.
        let read = tokio::select! {
            biased;
            read = session.read_request() => read,
            () = self.shut_down() => return None,
        };
        match read {
            Ok(true) => Some(()),
            Ok(false) => None,
            Err(mut e) => {
                e.as_down();
                if e.etype == InvalidHTTPHeader {
                    log::debug!("bad request head: {e}");
                    let _ = Box::pin(session.respond_error(400)).await;
                } else {
                    log::debug!("connection broken before a request head: {e}");
                }
                session.shutdown().await;
                None
            }
        }
    }

    /// Records a finished request: its metrics and access-log line.
    fn record(&self, session: &ServerSession, ctx: &RequestCtx, error: Option<&Error>) {
        crate::guard::request_done(session);
        let status = match (ctx.status, error) {
            (0, Some(_)) => 500,
            (0, None) => session.response_written().map_or(0, |r| r.status.as_u16()),
            (s, _) => s,
        };
        let state = self.state.load();
        let metrics = &state.metrics;
        if error.is_some() && crate::guard::write_timed_out(session) {
            metrics.client_write_timeouts.inc();
        }
        let elapsed = ctx.started.elapsed();
        let route = ctx.route.label();
        let series = metrics.route(ctx.route.index(), route);
        if status == 200 {
            series.ok.inc();
        } else {
            metrics
                .requests
                .with_label_values(&[route, status_label(status)])
                .inc();
        }
        series.duration.observe(elapsed.as_secs_f64());
        series
            .overhead
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

/// The status a request that failed with `e` is answered with, if its
/// connection can still carry one (what Pingora's proxy answered).
fn failure_status(e: &Error) -> u16 {
    match e.etype() {
        HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[async_trait]
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.read_head(&mut session).await?;
        if *shutdown.borrow() {
            // The service is going down: this connection carries no other.
            session.set_keepalive(None);
        }
        if session.req_header().method == http::Method::CONNECT {
            // Answered by the routes like any unknown request, but what
            // follows a CONNECT head is not framed as a next request.
            session.set_keepalive(None);
        }
        let mut ctx = RequestCtx::new(self.in_flight.enter());
        let state = self.state.load_full();
        let id = serve::request_id(&session);
        ctx.request_id = Some(id.clone());
        // Boxed: the handlers' futures are large, and nesting them inline in
        // the scope's future overflows the stack of unoptimised builds.
        let (served, spent) =
            crate::scope::serve(id, Box::pin(serve::serve(&state, &mut session, &mut ctx))).await;
        ctx.upstream_time = spent.upstream_time;
        ctx.cost_usd = spent.cost_usd;
        drop(state);
        match served {
            Ok(()) => {
                self.record(&session, &ctx, None);
                let settings = HttpPersistentSettings::for_session(&session);
                // Boxed: finishing (the body's end, draining what the client
                // sent unread) is a 3.7 KiB future, and inline it would make
                // every open stream's future that large for its whole life.
                Box::pin(session.finish())
                    .await
                    .ok()
                    .flatten()
                    .map(|stream| ReusedHttpStream::from_reusable_stream(stream, settings))
            }
            Err(e) => {
                let code = failure_status(&e);
                if code > 0 {
                    // Boxed, like `finish` above: a rare path's large future.
                    let _ = Box::pin(session.respond_error(code)).await;
                }
                log::error!(
                    "Fail to filter request: {e}, status: {code}, {}",
                    session.request_summary()
                );
                self.record(&session, &ctx, Some(&e));
                // The connection is in an unknown state: closed, never reused.
                None
            }
        }
    }

    async fn http_cleanup(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.shutdown.notify_waiters();
    }
}
