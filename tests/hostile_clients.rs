//! Clients that misbehave mid-answer, over raw TCP: one that stops reading a
//! stream (its answer is cut after `limits.client_write_timeout`, its upstream
//! request cancelled, its slot freed), one that half-closes after its request
//! (its answer still arrives whole), and early refusals that leave a body
//! unread (the connection closes; nothing unsolicited follows the answer).

mod common;

use common::raw::{RawUpstream, read_request};
use common::*;
use context7_lb::sim::SimConfig;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

fn chat_request(stream: bool) -> String {
    let body = format!(
        r#"{{"model":"{MODEL}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads until the peer closes (or `limit` passes); returns what arrived.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// An upstream that streams as fast as its connection takes bytes, without
/// end (64 KiB events), and counts the streams whose connection the gateway
/// closed under it.
async fn endless_stream(closed: Arc<AtomicU64>) -> RawUpstream {
    RawUpstream::start(move |mut stream| {
        let closed = closed.clone();
        async move {
            let mut buffer = Vec::new();
            while let Some((line, _)) = read_request(&mut stream, &mut buffer).await {
                if !line.contains("/chat/completions") {
                    // Probes and model discovery.
                    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                    if stream.write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let event = format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": "x".repeat(65_000)}}]})
                );
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_and_its_upstream_request_cancelled() {
    let closed = Arc::new(AtomicU64::new(0));
    let raw = endless_stream(closed.clone()).await;
    let mut config = config();
    config.limits.client_write_timeout = Duration::from_secs(1);
    config.timeouts.total = Duration::from_secs(60);
    config.upstreams.push(context7_lb::config::UpstreamConfig {
        name: "endless".into(),
        base_url: Some(raw.base_url()),
        model: Some(MODEL.into()),
        max_concurrent: 1,
        ..Default::default()
    });
    let gw = start(config).await;
    // A small receive window, and not a byte read after the request.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(gw.address).await.unwrap();
    stalled
        .write_all(chat_request(true).as_bytes())
        .await
        .unwrap();
    let state = gw.state.clone();
    let upstream = || state.pool.upstreams()[0].in_flight();
    wait_until("the stream to start", || upstream() == 1).await;
    let started = Instant::now();
    wait_until("the stalled stream to be cut", || upstream() == 0).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "cut after {waited:?}, not about a second"
    );
    wait_until("the upstream connection to be closed", || {
        closed.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(
        metric(&gw, "context7_client_write_timeouts_total").await,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            r#"context7_upstream_requests_total{outcome="cancelled",upstream="endless"}"#
        )
        .await,
        1.0
    );
    // The stalled client's connection was closed by the gateway: draining
    // what its buffers hold ends in an end of stream, not a wait.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 1 << 20];
        let mut tail = Vec::new();
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return tail,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    let keep = tail.len().saturating_sub(64);
                    tail.drain(..keep);
                }
            }
        }
    })
    .await;
    let tail = drained.expect("the stalled connection stayed open");
    assert!(
        !String::from_utf8_lossy(&tail).contains("[DONE]"),
        "a cut stream does not claim to be complete"
    );
    // Its slot is free again: the upstream (max_concurrent 1) takes a stream.
    let mut next = TcpStream::connect(gw.address).await.unwrap();
    next.write_all(chat_request(true).as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    next.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_still_gets_its_whole_answer() {
    let sims = sims(vec![
        SimConfig::new("a")
            .answer_tokens(20)
            .tokens_per_second(100.0),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    for stream in [true, false] {
        let mut client = TcpStream::connect(gw.address).await.unwrap();
        client
            .write_all(chat_request(stream).as_bytes())
            .await
            .unwrap();
        // The request is complete; the client says it will send nothing more.
        client.shutdown().await.unwrap();
        let answer = read_to_close(&mut client, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        if stream {
            assert!(answer.contains("data: [DONE]"), "stream cut: {answer}");
        } else {
            assert!(answer.contains("Simulated answer about: hi."), "{answer}");
        }
    }
    assert_eq!(sims[0].cancelled_streams(), 0);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refusal_closes_the_connection_and_nothing_follows_it() {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.auth.keys = vec!["client-key-0123456789".into()];
    config.rate_limit.requests_per_second = 1.0;
    config.rate_limit.burst = 1;
    let gw = gateway(&sims, config).await;
    // A body that, read as the next request, would be a head of its own.
    let smuggled = "GET /ping HTTP/1.1\r\nhost: x\r\n\r\n";
    let with_body = |path: &str, key: Option<&str>, method: &str| {
        let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
        format!(
            "{method} {path} HTTP/1.1\r\nhost: gw\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        )
    };
    let key = Some("client-key-0123456789");
    let cases = [
        (with_body("/v1/research", None, "POST"), "401"),
        (
            with_body("/v1/chat/completions", Some("wrong-key-0123456789"), "POST"),
            "401",
        ),
        // With the key: this one spends the burst of one request...
        (with_body("/mcp", key, "GET"), "405"),
        // ...and this one, within the same second, is over the rate.
        (with_body("/v1/research", key, "POST"), "429"),
    ];
    for (request, status) in cases {
        // The head first; the body only once the refusal is back, so that
        // its bytes arrive after the answer, as a slow upload's would.
        let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
        let mut raw = TcpStream::connect(gw.address).await.unwrap();
        raw.write_all(head.as_bytes()).await.unwrap();
        let mut first = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut first))
            .await
            .expect("an answer before the body")
            .unwrap();
        let _ = raw.write_all(body.as_bytes()).await;
        let answer = String::from_utf8_lossy(&first[..n]).to_string()
            + &read_to_close(&mut raw, Duration::from_secs(5)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("connection: close\r\n"),
            "{status}: {answer}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "something followed the {status}: {answer}"
        );
    }
    stop(gw).await;
}
