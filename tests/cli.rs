//! The binary as an operator runs it: environment-only mode in front of a
//! simulated RunPod API, and logs that never hold an API key.

mod common;

use common::*;
use context7_lb::sim::{SimConfig, SimUpstream};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_mode_serves_research_and_never_logs_a_key() {
    let secret = "rp-secret-key-0123456789";
    let sim = SimUpstream::start(SimConfig::new("runpod").api_key(secret))
        .await
        .unwrap();
    // PORT=0: the kernel picks the port, read back once the gateway listens.
    let mut gateway = Process::spawn(
        binary()
            .env("RUNPOD_API_KEY", secret)
            .env("RUNPOD_VLLM_ENDPOINT_ID", "ep-one,ep-two")
            .env("RUNPOD_API_BASE", sim.origin())
            .env("PORT", "0")
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert_eq!(
        gateway.address.ip().to_string(),
        "0.0.0.0",
        "{:?}",
        gateway.address
    );
    assert_ne!(
        gateway.address.port(),
        8002,
        "PORT is read, not the default"
    );
    let base = gateway.url();

    let ping = wait_for(&format!("{base}/ping"), Duration::from_secs(15), |_, b| {
        b["upstreams"]["healthy"] == 2
    })
    .await;
    assert_eq!(ping["vllm_configured"], true);

    let client = reqwest::Client::new();
    let research = |body: &'static str| {
        client
            .post(format!("{base}/v1/research"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = research(r#"{"query":"What is RunPod?"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let paths: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect();
    assert!(
        paths[0] == "/v2/ep-one/openai/v1/chat/completions"
            || paths[0] == "/v2/ep-two/openai/v1/chat/completions",
        "{paths:?}"
    );

    // An upstream error that echoes the key, and a validation error.
    sim.update(|c| {
        c.error_rate = 1.0;
        c.error_status = 401;
        c.error_message = Some(format!("bad key {secret}"));
    });
    let r = research(r#"{"query":"again"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert!(!r.text().await.unwrap().contains(secret));
    assert_eq!(research("{}").await.unwrap().status().as_u16(), 422);

    // Stop it (SIGINT: fast shutdown) and read everything it logged.
    gateway.signal("INT");
    let (_, stdout, stderr) = gateway.wait(Duration::from_secs(10));
    let logs = stderr + &stdout;
    assert!(
        logs.contains("POST /v1/research 200 upstream=runpod-ep-"),
        "access log line missing:\n{logs}"
    );
    assert!(logs.contains("POST /v1/research 502"), "{logs}");
    assert!(
        !logs.contains(secret),
        "a log line holds the key:\n{}",
        logs.lines()
            .filter(|l| l.contains(secret))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
