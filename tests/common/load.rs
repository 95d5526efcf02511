//! Concurrent traffic for a bounded time, and who answered it.

use super::gateway::RunningGateway;
use super::http::client;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One answered request of a load run.
#[derive(Debug, Clone)]
pub struct Answered {
    pub status: u16,
    pub upstream: Option<String>,
    pub latency: Duration,
}

/// Sends research requests from `concurrency` clients until `duration` has
/// passed or `max_requests` were sent, whichever comes first.
pub async fn load(
    gw: &RunningGateway,
    concurrency: usize,
    duration: Duration,
    max_requests: usize,
) -> Vec<Answered> {
    let url = format!("{}/v1/research", gw.url());
    load_on(
        &url,
        r#"{"query":"load"}"#,
        concurrency,
        duration,
        max_requests,
    )
    .await
}

/// POSTs the JSON `body` to `url` from `concurrency` clients until `duration`
/// has passed or `max_requests` were sent, whichever comes first; a request
/// that got no answer counts with status 0.
pub async fn load_on(
    url: &str,
    body: &str,
    concurrency: usize,
    duration: Duration,
    max_requests: usize,
) -> Vec<Answered> {
    let body = bytes::Bytes::copy_from_slice(body.as_bytes());
    let sent = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (url, body, sent, client) = (url.to_string(), body.clone(), sent.clone(), client());
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max_requests {
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let (status, upstream) = match response {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.headers()
                            .get("x-upstream")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    ),
                    Err(_) => (0, None),
                };
                answered.push(Answered {
                    status,
                    upstream,
                    latency: started.elapsed(),
                });
            }
            answered
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    all
}

/// How many answers `upstream` gave.
pub fn share(answers: &[Answered], upstream: &str) -> usize {
    answers
        .iter()
        .filter(|a| a.upstream.as_deref() == Some(upstream))
        .count()
}
