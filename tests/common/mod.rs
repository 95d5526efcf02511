//! Shared test harness: a gateway in this process in front of simulated vLLM
//! upstreams, all on 127.0.0.1 ephemeral ports.
#![allow(dead_code)]

use context7_lb::app::RunningGateway;
use context7_lb::config::{Config, UpstreamConfig};
use context7_lb::sim::{SimConfig, SimUpstream};
use std::time::{Duration, Instant};

/// A configuration listening on a free loopback port, with quick health checks.
pub fn config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        threads: 1,
        ..Config::default()
    };
    config.health_check.interval = Duration::from_millis(200);
    config.health_check.timeout = Duration::from_millis(500);
    config.timeouts.connect = Duration::from_secs(1);
    config.timeouts.total = Duration::from_secs(5);
    config
}

/// An upstream entry for a simulated upstream.
pub fn upstream(name: &str, sim: &SimUpstream, key: &str) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        base_url: Some(sim.base_url()),
        api_key: Some(key.into()),
        ..UpstreamConfig::default()
    }
}

/// Starts one simulated upstream per configuration.
pub async fn sims(configs: Vec<SimConfig>) -> Vec<SimUpstream> {
    let mut out = Vec::new();
    for c in configs {
        out.push(SimUpstream::start(c).await.expect("sim starts"));
    }
    out
}

/// Starts a gateway in front of `sims` (keys `key-<name>`) and waits until every
/// upstream's first health check has landed.
pub async fn gateway(sims: &[SimUpstream], mut config: Config) -> RunningGateway {
    for sim in sims {
        let name = sim.config().name;
        config
            .upstreams
            .push(upstream(&name, sim, &format!("key-{name}")));
    }
    start(config).await
}

/// Starts a gateway for `config` and waits for the first round of health checks.
pub async fn start(config: Config) -> RunningGateway {
    config.validate().expect("test config is valid");
    let gw = tokio::task::spawn_blocking(move || RunningGateway::start(config))
        .await
        .expect("start task")
        .expect("gateway starts");
    let state = gw.state.clone();
    wait_until("first health checks", || {
        state
            .pool
            .upstreams()
            .iter()
            .all(|u| u.last_check().is_some())
    })
    .await;
    gw
}

/// Polls `condition` every 10 ms for up to 10 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops a gateway without blocking the test's runtime.
pub async fn stop(gw: RunningGateway) {
    tokio::task::spawn_blocking(move || drop(gw))
        .await
        .expect("stop task");
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// POSTs a JSON text to `/v1/research`; returns status, headers and JSON body.
pub async fn research(
    gw: &RunningGateway,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = client()
        .post(format!("{}/v1/research", gw.url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body read");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text:?}"));
    (status, headers, json)
}

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
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (url, sent, client) = (url.clone(), sent.clone(), client());
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            while Instant::now() < deadline
                && sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < max_requests
            {
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(r#"{"query":"load"}"#)
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

/// How many answers each upstream gave.
pub fn share(answers: &[Answered], upstream: &str) -> usize {
    answers
        .iter()
        .filter(|a| a.upstream.as_deref() == Some(upstream))
        .count()
}

/// Tests that count this process's file descriptors take this lock, so that
/// no other test of the same binary opens or closes sockets meanwhile.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Open file descriptors of this process: the entries of `/proc/self/fd`.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Descriptors a test may leave above its baseline: the runtime keeps a few.
pub const FD_MARGIN: usize = 4;

/// Idle gateway-to-upstream connections the connector may keep pooled.
pub const MAX_POOLED: u64 = 24;

/// Descriptors held for gateway-to-upstream connections: both ends live in
/// this process, and each simulator knows how many it has open.
fn upstream_fds(sims: &[&SimUpstream]) -> (usize, u64) {
    let connections: u64 = sims.iter().map(|s| s.open_connections()).sum();
    (2 * connections as usize, connections)
}

/// A leak check: the descriptors open before a test's traffic, apart from
/// pooled upstream connections (legitimately kept for reuse, and bounded by
/// [`MAX_POOLED`]), to compare with those open once it settled.
pub struct LeakCheck {
    pub baseline: usize,
}

impl LeakCheck {
    /// Takes the baseline now (after the gateway started and warmed up).
    pub fn start(sims: &[&SimUpstream]) -> LeakCheck {
        LeakCheck {
            baseline: open_fds().saturating_sub(upstream_fds(sims).0),
        }
    }

    /// Waits (up to 5 s) until nothing is in flight on any upstream, the
    /// descriptors other than pooled upstream connections are back within
    /// [`FD_MARGIN`] of the baseline, and the pool holds at most [`MAX_POOLED`].
    pub async fn settled(&self, gw: &RunningGateway, sims: &[&SimUpstream], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let in_flight: Vec<u64> = gw
                .state
                .pool
                .upstreams()
                .iter()
                .map(|u| u.in_flight())
                .collect();
            let (pooled_fds, pooled) = upstream_fds(sims);
            let fds = open_fds().saturating_sub(pooled_fds);
            if in_flight.iter().all(|n| *n == 0)
                && fds <= self.baseline + FD_MARGIN
                && pooled <= MAX_POOLED
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: in flight {in_flight:?}, {fds} descriptors open against {} before, \
                 {pooled} upstream connections",
                self.baseline
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// POSTs `body` to `path` with a fresh client (closed when it returns, so it
/// keeps no descriptor); returns status, headers and the whole body as text.
pub async fn post_json(
    gw: &RunningGateway,
    path: &str,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(format!("{}{path}", gw.url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body read"))
}

/// `GET` of a gateway path, as text.
pub async fn get_text(gw: &RunningGateway, path: &str) -> String {
    reqwest::get(format!("{}{path}", gw.url()))
        .await
        .expect("request sent")
        .text()
        .await
        .expect("body read")
}

/// `GET` of a gateway path, as JSON.
pub async fn get_json(gw: &RunningGateway, path: &str) -> serde_json::Value {
    reqwest::get(format!("{}{path}", gw.url()))
        .await
        .expect("request sent")
        .json()
        .await
        .expect("a JSON body")
}
