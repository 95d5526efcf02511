//! The binary's life as an operator drives it with signals: SIGHUP reloads,
//! SIGTERM lets a running stream finish and exits early once idle, SIGQUIT
//! hands the listening socket to a new process started with `--upgrade`, and
//! the access log (JSON) never holds a key.

mod common;

use common::*;
use context7_lb::sim::{SimConfig, SimUpstream};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const UPSTREAM_KEY: &str = "upstream-secret-0123456789";
const CLIENT_KEY: &str = "client-secret-9876543210";

/// The binary with `--config file` and `extra`, logging at info to pipes.
fn command(config: &Path, extra: &[&str]) -> std::process::Command {
    let mut command = configured(config);
    command.args(extra);
    command
}

/// Starts the binary on `config` (which listens on 127.0.0.1, port 0), and
/// waits until it listens there.
fn spawn(config: &Path) -> Process {
    let gw = Process::spawn(&mut command(config, &[]));
    assert_eq!(
        gw.address.ip(),
        std::net::Ipv4Addr::LOCALHOST,
        "listen is read"
    );
    gw
}

async fn ready(gw: &Process, upstreams: u64) {
    wait_for(
        &format!("{}/ping", gw.url()),
        Duration::from_secs(20),
        |_, body| body["upstreams"]["healthy"] == upstreams,
    )
    .await;
}

/// A configuration listening on 127.0.0.1, port 0: the kernel picks the port.
fn yaml(upstreams: &[(&str, &SimUpstream)], extra: &str) -> String {
    let mut y = format!(
        "listen: \"127.0.0.1:0\"\nthreads: 1\nhealth_check:\n  interval: 300ms\n  timeout: 500ms\nauth:\n  keys: [\"{CLIENT_KEY}\"]\n{extra}upstreams:\n"
    );
    for (name, sim) in upstreams {
        y.push_str(&format!(
            "  - name: {name}\n    base_url: \"{}\"\n    api_key: \"{UPSTREAM_KEY}\"\n",
            sim.base_url()
        ));
    }
    y
}

fn research_at(base: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}/v1/research"))
        .bearer_auth(CLIENT_KEY)
        .header("content-type", "application/json")
        .body(r#"{"query":"What is vLLM?"}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_keeps_the_running_configuration() {
    let a = SimUpstream::start(SimConfig::new("a").api_key(UPSTREAM_KEY))
        .await
        .unwrap();
    let b = SimUpstream::start(SimConfig::new("b").api_key(UPSTREAM_KEY))
        .await
        .unwrap();
    let dir = TempDir::new("sighup");
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, yaml(&[("a", &a)], "")).unwrap();
    let mut gw = spawn(&file);
    ready(&gw, 1).await;

    std::fs::write(&file, yaml(&[("a", &a), ("b", &b)], "")).unwrap();
    gw.signal("HUP");
    ready(&gw, 2).await;

    std::fs::write(&file, "upstreams: [oops\n").unwrap();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = research_at(&gw.url()).send().await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "still serving the last good configuration"
    );
    let status = fetch_json(&format!("{}/status", gw.url()), Some(CLIENT_KEY)).await;
    assert_eq!(status["upstreams"].as_array().unwrap().len(), 2);
    gw.signal("INT");
    let (_, _, logs) = gw.wait(Duration::from_secs(10));
    assert!(logs.contains("reloaded"), "{logs}");
    assert!(
        logs.contains("reload refused, the running configuration stays"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_finish_then_exits_before_the_grace_period_ends() {
    let sim = SimUpstream::start(
        SimConfig::new("a")
            .api_key(UPSTREAM_KEY)
            .tokens_per_second(20.0)
            .answer_tokens(30),
    )
    .await
    .unwrap();
    let dir = TempDir::new("sigterm");
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        yaml(&[("a", &sim)], "shutdown:\n  grace_period: 30s\n"),
    )
    .unwrap();
    let mut gw = spawn(&file);
    ready(&gw, 1).await;
    let mut stream = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(CLIENT_KEY)
        .json(
            &json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "stream": true,
                      "messages": [{"role": "user", "content": "q"}]}),
        )
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    gw.signal("TERM");
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream was cut:\n{text}"
    );
    assert!(!text.contains("\"error\""), "{text}");
    let (waited, _, logs) = gw.wait(Duration::from_secs(20));
    assert!(
        waited < Duration::from_secs(10),
        "exited {waited:?} after the stream, not at the end of the 30 s grace period"
    );
    assert!(logs.contains("no request in flight"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_hands_the_socket_to_an_upgraded_process_without_losing_requests() {
    let sim = SimUpstream::start(
        SimConfig::new("a")
            .api_key(UPSTREAM_KEY)
            .ttft(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let dir = TempDir::new("upgrade");
    let file = dir.join("gateway.yaml");
    let sock = dir.join("upgrade.sock");
    std::fs::write(
        &file,
        yaml(
            &[("a", &sim)],
            &format!(
                "shutdown:\n  grace_period: 5s\n  upgrade_sock: \"{}\"\n",
                sock.display()
            ),
        ),
    )
    .unwrap();
    let mut old = spawn(&file);
    ready(&old, 1).await;
    let base = old.url();

    // Steady traffic from before the handover until after it.
    let load = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(9);
        let (mut ok, mut failed) = (0u32, Vec::new());
        while Instant::now() < deadline {
            match research_at(&base).send().await {
                Ok(r) if r.status().as_u16() == 200 => ok += 1,
                Ok(r) => failed.push(format!("status {}", r.status())),
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut new = Process::taking_over(&mut command(&file, &["--upgrade"]), old.address);
    tokio::time::sleep(Duration::from_millis(800)).await;
    old.signal("QUIT");
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 50, "{ok}");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let (_, _, old_logs) = old.wait(Duration::from_secs(20));
    assert!(old_logs.contains("listener sockets sent"), "{old_logs}");
    let r = research_at(&new.url()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the new process serves");
    new.signal("INT");
    new.wait(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_access_log_has_one_line_per_request_and_no_key() {
    let sim = SimUpstream::start(SimConfig::new("a").api_key(UPSTREAM_KEY))
        .await
        .unwrap();
    let dir = TempDir::new("accesslog");
    let file = dir.join("gateway.yaml");
    // Priced, so that each line says what its request cost.
    let config = yaml(&[("a", &sim)], "access_log:\n  format: json\n")
        + "    pricing: {per_second: 0.001}\n";
    std::fs::write(&file, config).unwrap();
    let mut gw = spawn(&file);
    ready(&gw, 1).await;
    let r = research_at(&gw.url())
        .header("x-request-id", "req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/research", gw.url()))
        .bearer_auth("a-wrong-key-for-the-log")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    gw.signal("INT");
    let (_, stdout, stderr) = gw.wait(Duration::from_secs(10));
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("each access line is JSON"))
        .collect();
    let research_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["route"] == "/v1/research")
        .collect();
    assert_eq!(research_lines.len(), 2, "{stdout}");
    let ok = research_lines[0];
    assert_eq!(ok["request_id"], "req-1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["upstream"], "a");
    assert_eq!(ok["client"], "key#1");
    assert!(ok["tokens"].as_u64().unwrap() > 0);
    assert!(ok["latency_ms"].is_number());
    let cost = ok["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && cost < ok["latency_ms"].as_f64().unwrap() / 1000.0 * 0.001 + 1e-9);
    assert_eq!(
        ok["query"],
        Value::Null,
        "queries stay out unless configured"
    );
    assert_eq!(research_lines[1]["status"], 401);
    assert_eq!(
        research_lines[1]["cost_usd"],
        Value::Null,
        "a refusal costs nothing"
    );
    for secret in [
        UPSTREAM_KEY,
        CLIENT_KEY,
        "a-wrong-key-for-the-log",
        "What is vLLM",
    ] {
        assert!(!stdout.contains(secret), "stdout holds {secret}");
        assert!(!stderr.contains(secret), "stderr holds {secret}");
    }
}

/// One upstream client, one connection pool, kept across reloads: research,
/// OpenAI and the health probes share it, so a SIGHUP that keeps the
/// upstreams opens no new upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_unchanged_upstreams_opens_no_upstream_connection() {
    let sim = SimUpstream::start(SimConfig::new("a")).await.unwrap();
    // Probes go to a server of their own, so that each side's connections are
    // counted apart: requests one after another need one connection, probes
    // (one at a time) another, and neither may open a new one on reload.
    let probed = SimUpstream::start(SimConfig::new("probed")).await.unwrap();
    let dir = TempDir::new("keep-connections");
    let path = dir.join("gateway.yaml");
    let yaml = |extra: &str| {
        yaml(&[("a", &sim)], extra)
            .replace(
                "timeout: 500ms\n",
                "timeout: 10s\n  discover_models: false\n",
            )
            .replace(
                &format!("api_key: \"{UPSTREAM_KEY}\"\n"),
                &format!(
                    "api_key: \"{UPSTREAM_KEY}\"\n    health_url: \"{}/ping\"\n",
                    probed.origin()
                ),
            )
    };
    std::fs::write(&path, yaml("")).unwrap();
    let gw = spawn(&path);
    ready(&gw, 1).await;
    let base = gw.url();
    let chat = move |stream: bool| {
        reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(
                &json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "stream": stream,
                          "messages": [{"role": "user", "content": "hi"}]}),
            )
    };
    // Three requests at once leave three pooled connections: more than the
    // one that requests one after another need below.
    let warm = [research_at(&gw.url()), chat(false), chat(true)].map(|r| async {
        let answer = r.send().await.unwrap();
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap()
    });
    futures::future::join_all(warm).await;
    // One after another, while the probes (every 300 ms) go on.
    let one_after_another = || async {
        for i in 0..12 {
            let answer = match i % 3 {
                0 => research_at(&gw.url()),
                1 => chat(false),
                _ => chat(true),
            }
            .send()
            .await
            .unwrap();
            assert_eq!(answer.status(), 200);
            answer.text().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    one_after_another().await;
    let before = (sim.accepted_connections(), probed.accepted_connections());
    let probes_before = probed.health_requests();

    // The same upstream; a system prompt shows when the new state serves.
    let prompt = "research:\n  system_prompt: reloaded\n";
    std::fs::write(&path, yaml(prompt)).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        research_at(&gw.url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let last = sim
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.method == "POST");
        if last.is_some_and(|r| r.json()["messages"][0]["content"] == "reloaded") {
            break;
        }
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one_after_another().await;
    assert!(
        probed.health_requests() > probes_before,
        "the probes went on meanwhile"
    );
    assert_eq!(
        (sim.accepted_connections(), probed.accepted_connections()),
        before,
        "the reload opened new upstream connections (requests, probes)"
    );
}
