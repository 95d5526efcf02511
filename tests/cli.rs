//! The binary as an operator runs it: environment-only mode in front of a
//! simulated RunPod API, and logs that never hold an API key.

use context7_lb::sim::{SimConfig, SimUpstream};
use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(url: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = reqwest::get(url).await
            && let Ok(body) = r.json::<Value>().await
            && until(&body)
        {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_mode_serves_research_and_never_logs_a_key() {
    let secret = "rp-secret-key-0123456789";
    let sim = SimUpstream::start(SimConfig::new("runpod").api_key(secret))
        .await
        .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_context7-lb"))
        .env("RUNPOD_API_KEY", secret)
        .env("RUNPOD_VLLM_ENDPOINT_ID", "ep-one,ep-two")
        .env("RUNPOD_API_BASE", sim.origin())
        .env("PORT", port.to_string())
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut gateway = Gateway(child);
    let base = format!("http://127.0.0.1:{port}");

    let ping = wait_for(&format!("{base}/ping"), |b| b["upstreams"]["healthy"] == 2).await;
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
    let pid = gateway.0.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "gateway did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut logs = String::new();
    gateway
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    gateway
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
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
