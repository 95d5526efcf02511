//! The latency- and health-aware pool end to end: a killed upstream under
//! load, a cold upstream coming up, slow upstreams avoided, /status, /ping.

mod common;

use common::*;
use context7_lb::sim::SimConfig;
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_killed_under_load_costs_no_client_an_error() {
    let mut sims = sims(vec![
        SimConfig::new("a").ttft(Duration::from_millis(5)),
        SimConfig::new("b").ttft(Duration::from_millis(5)),
        SimConfig::new("c").ttft(Duration::from_millis(5)),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    let load = load(&gw, 8, Duration::from_secs(2), 5000);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sims[1].stop();
    };
    let (answers, ()) = tokio::join!(load, killer);
    let errors: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(answers.len() > 100, "only {} requests", answers.len());
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let state = gw.state.clone();
    wait_until("b marked unhealthy", || {
        !state.pool.upstreams()[1].is_healthy()
    })
    .await;
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_upstream_gets_nothing_until_it_answers_200_then_traffic_within_two_intervals() {
    let sims = sims(vec![
        SimConfig::new("warm").ttft(Duration::from_millis(5)),
        SimConfig::new("cold")
            .ttft(Duration::from_millis(5))
            .cold(true),
    ])
    .await;
    let mut config = config();
    let interval = Duration::from_millis(300);
    config.health_check.interval = interval;
    let gw = gateway(&sims, config).await;
    let answers = load(&gw, 4, Duration::from_millis(800), 2000).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(
        sims[1].chat_requests(),
        0,
        "initializing upstream got traffic"
    );

    sims[1].update(|c| c.cold = false);
    let warmed = Instant::now();
    let gw_ref = &gw;
    let (answers, first_seen) = tokio::join!(load(gw_ref, 4, interval * 3, 5000), async {
        while sims[1].chat_requests() == 0 && warmed.elapsed() < interval * 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        warmed.elapsed()
    });
    assert!(answers.iter().all(|a| a.status == 200));
    assert!(
        sims[1].chat_requests() > 0 && first_seen <= interval * 2,
        "first request after {first_seen:?}"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_gets_under_five_percent() {
    let sims = sims(vec![
        SimConfig::new("ms10").ttft(Duration::from_millis(10)),
        SimConfig::new("ms50").ttft(Duration::from_millis(50)),
        SimConfig::new("ms200").ttft(Duration::from_millis(200)),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    let answers = load(&gw, 4, Duration::from_secs(3), 5000).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let total = answers.len();
    let slow = share(&answers, "ms200");
    let fast = share(&answers, "ms10");
    assert!(total > 200, "only {total} requests");
    assert!(slow * 20 < total, "200 ms upstream got {slow} of {total}");
    assert!(
        fast * 2 > total,
        "10 ms upstream got only {fast} of {total}"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_failing_upstream_is_penalised_and_its_failures_retried() {
    let sims = sims(vec![
        SimConfig::new("good").ttft(Duration::from_millis(2)),
        SimConfig::new("bad").errors(1.0, 503),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    let answers = load(&gw, 2, Duration::from_secs(1), 200).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "503s are retried elsewhere"
    );
    // It answers its errors in no time, yet the failure penalty keeps it from
    // looking cheap: after its first failures it gets nothing.
    assert!(sims[1].chat_requests() <= 3, "{}", sims[1].chat_requests());
    // Every answer came from "good", once each: no request sent twice there.
    assert_eq!(sims[0].chat_requests() as usize, answers.len());
    assert!(answers.len() >= 100, "{}", answers.len());
    let status: Value = get_json(&gw, "/status").await;
    let entry = &status["upstreams"][1];
    assert_eq!(entry["name"], "bad");
    assert_eq!(entry["state"], "healthy", "its health checks still pass");
    assert_eq!(
        entry["last_error"]["message"],
        "HTTP 503: simulated failure from bad"
    );
    assert!(entry["latency_estimate_ms"].as_f64().unwrap() > 100.0);
    assert_eq!(entry["in_flight"], 0);
    assert_eq!(status["upstreams"][0]["in_flight"], 0);
    assert_eq!(status["strategy"], "peak_ewma");
    let metrics = get_text(&gw, "/metrics").await;
    for needle in [
        "context7_upstream_retries_total{upstream=\"bad\"}",
        "context7_upstream_in_flight{upstream=\"good\"} 0",
        "context7_upstream_latency_estimate_seconds{upstream=\"good\"}",
        "context7_upstream_selections_total{reason=\"p2c\",upstream=\"good\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle}");
    }
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_eject_an_upstream_that_passes_its_health_checks() {
    let sims = sims(vec![
        SimConfig::new("good").ttft(Duration::from_millis(2)),
        SimConfig::new("bad").errors(1.0, 500),
    ])
    .await;
    let mut config = config();
    // Round robin keeps choosing it, so only passive ejection can stop that.
    config.pool.strategy = context7_lb::config::Strategy::RoundRobin;
    let gw = gateway(&sims, config).await;
    for _ in 0..40 {
        research(&gw, r#"{"query":"q"}"#).await;
    }
    assert_eq!(
        sims[1].chat_requests(),
        3,
        "ejected after three 500s in a row"
    );
    let status: Value = get_json(&gw, "/status").await;
    let entry = &status["upstreams"][1];
    assert_eq!(entry["state"], "healthy");
    assert_eq!(entry["routable"], false);
    assert_eq!(entry["ejections"], 1);
    assert!(entry["ejected_for_ms"].as_u64().unwrap() > 0);
    let metrics = get_text(&gw, "/metrics").await;
    for needle in [
        "context7_upstream_ejections_total{upstream=\"bad\"} 1",
        "context7_upstream_routable{upstream=\"bad\"} 0",
        "context7_upstream_routable{upstream=\"good\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle}");
    }
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_passed_on_and_the_upstream_rests_for_its_retry_after() {
    let sims = sims(vec![SimConfig::new("limited").errors(1.0, 429)]).await;
    let gw = gateway(&sims, config()).await;
    let (status, headers, _) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    let up = &gw.state.pool.upstreams()[0];
    assert!(up.ejected_until(tokio::time::Instant::now()).is_some());
    // Every upstream ejected: the least bad one is still tried, not refused.
    let (status, _, _) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 429);
    assert_eq!(sims[0].chat_requests(), 2);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries() {
    let sims = sims(vec![
        SimConfig::new("x").errors(1.0, 503),
        SimConfig::new("y").errors(1.0, 503),
    ])
    .await;
    let mut config = config();
    config.retries.budget_ratio = 0.0;
    config.retries.budget_min_per_second = 0.2; // 2 retries per 10 s window
    config.ejection.consecutive_failures = 1000;
    let gw = gateway(&sims, config).await;
    for _ in 0..10 {
        let (status, _, _) = research(&gw, r#"{"query":"q"}"#).await;
        assert_eq!(status, 502);
    }
    assert_eq!(sims[0].chat_requests() + sims[1].chat_requests(), 12);
    stop(gw).await;
}

/// A loopback server that accepts connections and never answers: a probe to it
/// hangs until its timeout.
async fn black_hole() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (address, task)
}

async fn ping(gw: &RunningGateway) -> (u16, Option<Value>) {
    let answer = send(gw, "GET", "/ping", &[], None).await;
    (answer.status, serde_json::from_str(&answer.text).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_204_while_initializing_and_503_when_nothing_is_routable() {
    let (hole, hole_task) = black_hole().await;
    let make = |always_200: bool| {
        let mut c = config();
        c.health_check.timeout = Duration::from_millis(600);
        c.ping_always_200 = always_200;
        c.upstreams.push(context7_lb::config::UpstreamConfig {
            name: "silent".into(),
            base_url: Some(format!("http://{hole}/v1")),
            ..Default::default()
        });
        c
    };
    let c = make(false);
    let gw = start_now(c).await;
    let (status, body) = ping(&gw).await;
    assert_eq!((status, body), (204, None), "first round still running");
    let state = gw.state.clone();
    wait_until("first check", || {
        state.pool.upstreams()[0].last_check().is_some()
    })
    .await;
    let (status, body) = ping(&gw).await;
    assert_eq!(status, 503);
    let body = body.unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["upstreams"]["routable"], 0);
    stop(gw).await;

    let c = make(true);
    let gw = start_now(c).await;
    assert_eq!(ping(&gw).await.0, 200, "the original's always-200");
    stop(gw).await;
    hole_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_url_elsewhere_is_probed_there_while_requests_go_to_the_base_url() {
    // Before the fix the probe went to the base URL's address with the
    // health URL's path, so a health endpoint on another port was never asked.
    let api = context7_lb::sim::SimUpstream::start(SimConfig::new("api"))
        .await
        .unwrap();
    let health = context7_lb::sim::SimUpstream::start(SimConfig::new("health"))
        .await
        .unwrap();
    let mut config = config();
    config.health_check.discover_models = false;
    config.upstreams.push(context7_lb::config::UpstreamConfig {
        health_url: Some(format!("{}/ping", health.origin())),
        ..upstream("api", &api, "k")
    });
    let gw = start(config).await;
    assert!(gw.state.pool.upstreams()[0].is_healthy());
    let (status, headers, _) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-upstream"], "api");
    assert!(health.health_requests() >= 1);
    assert_eq!(api.health_requests(), 0, "the probe went to the API's port");
    assert_eq!((api.chat_requests(), health.chat_requests()), (1, 0));
    stop(gw).await;
}
