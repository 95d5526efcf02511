//! The memory an open connection holds for its whole life, kept small: the
//! gateway's per-request future is allocated for every request and lives as
//! long as its answer streams, so at thousands of open streams every KiB of
//! it is megabytes (docs/performance.md, "Thousands of streams").

use context7_lb::gateway::Gateway;
use pingora::apps::HttpServerApp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// A session on a real loopback connection (its listener kept bound), and
/// the state of a default configuration.
async fn session_and_state() -> (
    tokio::net::TcpListener,
    ServerSession,
    Arc<context7_lb::state::AppState>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let stream: pingora::protocols::l4::stream::Stream = client.into();
    let session = ServerSession::new_http1(Box::new(stream));
    let config = context7_lb::config::Config::default();
    let metrics = Arc::new(context7_lb::metrics::Metrics::new());
    let state = context7_lb::state::build_state(&config, metrics, None).unwrap();
    (listener, session, state)
}

#[tokio::test]
async fn a_request_holds_a_small_future_while_it_is_served() {
    let (_listener, session, state) = session_and_state().await;
    let gateway = Arc::new(Gateway::new(
        Arc::new(arc_swap::ArcSwap::new(state)),
        Default::default(),
    ));
    let (_shutdown, watch) = tokio::sync::watch::channel(false);
    let serving = gateway.process_new_http(session, &watch);
    let size = std::mem::size_of_val(&*serving);
    // 5,408 bytes when Pingora's `finish` future was inline (its 3.7 KiB
    // were held by every open stream); 2,008 with it boxed (Rust 1.95,
    // debug build). The session itself is 680 of them.
    assert!(size <= 2560, "the per-request future is {size} bytes");
}

#[tokio::test]
async fn serving_a_request_holds_one_small_future_below_the_connection() {
    let (_listener, mut session, state) = session_and_state().await;
    let mut ctx =
        context7_lb::serve::RequestCtx::new(context7_lb::state::InFlight::default().enter());
    let serving = context7_lb::serve::serve(&state, &mut session, &mut ctx);
    let size = std::mem::size_of_val(&serving);
    // Everything an open stream holds below the connection's future: the
    // route, the OpenAI adapter and the relay, in one box (debug build).
    // Three boxes before they were one (1,376 + 1,776 + 1,680 bytes in a
    // release build, as DHAT saw them).
    assert!(size <= 3072, "the serving future is {size} bytes");
}
