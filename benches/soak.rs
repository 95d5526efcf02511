//! Soak: the real binary under mixed traffic (research, streamed chat, MCP
//! tool calls) for a bounded time while one of its three simulated upstreams
//! is killed and restarted on the same port every minute; the gateway
//! process's resident memory and open descriptors are sampled every 10 s and
//! must stay flat.
//!
//! `scripts/soak.sh` runs it for `SOAK_SECONDS` (default 600) against
//! `target/dist/context7-lb`; under `cargo test` it runs a 6 s smoke pass
//! against the debug binary, restarting the upstream every 2 s.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Process, wait_for};
use context7_lb::sim::{SimConfig, SimUpstream};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// How long, how often, against which binary.
struct Plan {
    duration: Duration,
    restart_every: Duration,
    sample_every: Duration,
    clients: usize,
    binary: String,
    full: bool,
}

impl Plan {
    fn from_args() -> Plan {
        let full = std::env::args().any(|a| a == "--bench");
        let secs = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let binary = std::env::var("SOAK_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_context7-lb").to_string());
        if full {
            Plan {
                duration: Duration::from_secs(secs("SOAK_SECONDS", 600)),
                restart_every: Duration::from_secs(secs("SOAK_RESTART_SECONDS", 60)),
                sample_every: Duration::from_secs(10),
                clients: 6,
                binary,
                full,
            }
        } else {
            Plan {
                duration: Duration::from_secs(6),
                restart_every: Duration::from_secs(2),
                sample_every: Duration::from_secs(1),
                clients: 3,
                binary,
                full,
            }
        }
    }
}

/// What the clients saw, by kind of request.
#[derive(Default)]
struct Tally {
    research_ok: AtomicU64,
    research_failed: AtomicU64,
    stream_ok: AtomicU64,
    /// Streams that ended with the gateway's error event and `[DONE]`.
    stream_cut: AtomicU64,
    stream_failed: AtomicU64,
    mcp_ok: AtomicU64,
    mcp_failed: AtomicU64,
}

impl Tally {
    fn requests(&self) -> u64 {
        [
            &self.research_ok,
            &self.research_failed,
            &self.stream_ok,
            &self.stream_cut,
            &self.stream_failed,
            &self.mcp_ok,
            &self.mcp_failed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn errors(&self) -> u64 {
        [
            &self.research_failed,
            &self.stream_cut,
            &self.stream_failed,
            &self.mcp_failed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// One sample of the gateway process.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    requests: u64,
    errors: u64,
}

fn sample(pid: u32, started: Instant, tally: &Tally) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Sample {
        at: started.elapsed(),
        rss_kib,
        fds,
        requests: tally.requests(),
        errors: tally.errors(),
    }
}

fn sim_config(name: &str) -> SimConfig {
    SimConfig::new(name)
        .ttft(Duration::from_millis(20))
        .tokens_per_second(200.0)
        .answer_tokens(16)
}

/// Starts the binary with a configuration naming the three simulators,
/// listening on a port the kernel picks, and waits until it listens.
fn start_gateway(plan: &Plan, sims: &[SocketAddr], dir: &std::path::Path) -> Process {
    let upstreams: String = sims
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  - name: sim-{i}\n    base_url: \"http://{a}/v1\"\n"))
        .collect();
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nthreads: 2\nupstreams:\n{upstreams}\
         health_check:\n  interval: 1s\n  timeout: 500ms\ntimeouts:\n  connect: 1s\n  total: 20s\n"
    );
    let config = dir.join("soak.yaml");
    std::fs::write(&config, yaml).expect("config written");
    let log = std::fs::File::create(dir.join("gateway.log")).expect("log file");
    Process::spawn(
        Command::new(&plan.binary)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log)),
    )
}

/// Research, a streamed chat and an MCP tool call, in turn, until `stop`.
async fn client_loop(base: String, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut session: Option<String> = None;
    let mut turn = 0u64;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        match turn % 3 {
            0 => research(&client, &base, &tally).await,
            1 => stream(&client, &base, &tally).await,
            _ => mcp(&client, &base, &tally, &mut session).await,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn research(client: &reqwest::Client, base: &str, tally: &Tally) {
    let ok = match client
        .post(format!("{base}/v1/research"))
        .json(&json!({"query": "soak", "max_tokens": 100}))
        .send()
        .await
    {
        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
        Err(_) => false,
    };
    let counter = if ok {
        &tally.research_ok
    } else {
        &tally.research_failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn stream(client: &reqwest::Client, base: &str, tally: &Tally) {
    let body = json!({"model": MODEL, "stream": true,
                      "messages": [{"role": "user", "content": "soak"}]});
    let outcome = match client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => match r.text().await {
            Ok(text) if text.contains("data: {\"error\"") && text.ends_with("data: [DONE]\n\n") => {
                &tally.stream_cut
            }
            Ok(text) if text.ends_with("data: [DONE]\n\n") => &tally.stream_ok,
            _ => &tally.stream_failed,
        },
        _ => &tally.stream_failed,
    };
    outcome.fetch_add(1, Ordering::Relaxed);
}

async fn mcp(client: &reqwest::Client, base: &str, tally: &Tally, session: &mut Option<String>) {
    let url = format!("{base}/mcp");
    let post = |body: Value, session: Option<&str>| {
        let mut request = client
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(id) = session {
            request = request.header("mcp-session-id", id);
        }
        request.send()
    };
    if session.is_none() {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "soak", "version": "1"}}});
        *session = match post(init, None).await {
            Ok(r) if r.status() == 200 => r
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            _ => None,
        };
    }
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "research", "arguments": {"query": "soak", "max_tokens": 100}}});
    let ok = match post(call, session.as_deref()).await {
        Ok(r) if r.status() == 200 => r
            .json::<Value>()
            .await
            .is_ok_and(|v| v["result"]["isError"] == json!(false)),
        Ok(r) if r.status() == 404 => {
            *session = None;
            false
        }
        _ => false,
    };
    let counter = if ok { &tally.mcp_ok } else { &tally.mcp_failed };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn main() {
    let plan = Plan::from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let verdict = runtime.block_on(run(&plan));
    if !verdict {
        std::process::exit(1);
    }
}

async fn run(plan: &Plan) -> bool {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak");
    std::fs::create_dir_all(&dir).expect("soak dir");
    let mut restarted = SimUpstream::start(sim_config("sim-0")).await.expect("sim");
    let steady = [
        SimUpstream::start(sim_config("sim-1")).await.expect("sim"),
        SimUpstream::start(sim_config("sim-2")).await.expect("sim"),
    ];
    let restarted_at = restarted.address();
    let addresses = [restarted_at, steady[0].address(), steady[1].address()];
    let gateway = start_gateway(plan, &addresses, &dir);
    let pid = gateway.child.id();
    let base = gateway.url();
    wait_for(
        &format!("{base}/ping"),
        Duration::from_secs(20),
        |status, _| status == 200,
    )
    .await;
    println!(
        "soak: {} for {} s, upstream sim-0 restarted every {} s, {} clients, gateway pid {pid}",
        plan.binary,
        plan.duration.as_secs(),
        plan.restart_every.as_secs(),
        plan.clients
    );

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..plan.clients)
        .map(|_| tokio::spawn(client_loop(base.clone(), tally.clone(), stop.clone())))
        .collect();
    let started = Instant::now();
    let mut samples = vec![sample(pid, started, &tally)];
    let mut next_sample = plan.sample_every;
    let mut next_restart = plan.restart_every;
    let mut restarts = 0;
    while started.elapsed() < plan.duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() >= next_restart {
            next_restart += plan.restart_every;
            // A crash: every connection dropped at once, back a moment later.
            restarted.stop();
            tokio::time::sleep(Duration::from_millis(500)).await;
            restarted = SimUpstream::start_on(restarted_at, sim_config("sim-0"))
                .await
                .expect("restarts on its port");
            restarts += 1;
        }
        if started.elapsed() >= next_sample {
            next_sample += plan.sample_every;
            samples.push(sample(pid, started, &tally));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    // Let kept-alive connections and finished streams settle, then the last sample.
    tokio::time::sleep(Duration::from_secs(2)).await;
    samples.push(sample(pid, started, &tally));
    drop(gateway);

    println!("\n|   time | RSS MiB | fds | requests | errors |");
    println!("|-------:|--------:|----:|---------:|-------:|");
    for s in &samples {
        println!(
            "| {:>5}s | {:>7} | {:>3} | {:>8} | {:>6} |",
            s.at.as_secs(),
            mib(s.rss_kib),
            s.fds,
            s.requests,
            s.errors
        );
    }
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "\nrestarts {restarts}; research {} ok / {} failed; streams {} ok / {} cut (error event + [DONE]) / {} failed; MCP research {} ok / {} failed",
        count(&tally.research_ok),
        count(&tally.research_failed),
        count(&tally.stream_ok),
        count(&tally.stream_cut),
        count(&tally.stream_failed),
        count(&tally.mcp_ok),
        count(&tally.mcp_failed),
    );
    // Flat: from the first sample after warm-up (pools filled, allocator
    // grown) to the end, memory grows by at most 10 % + 4 MiB and
    // descriptors by at most 8.
    let warm = &samples[samples.len().min(3) - 1];
    let last = samples.last().expect("samples");
    let peak_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let rss_flat = last.rss_kib <= warm.rss_kib + warm.rss_kib / 10 + 4096;
    let fds_flat = last.fds <= warm.fds + 8;
    let served = tally.requests() > 0 && count(&tally.research_ok) > 0;
    let verdict = rss_flat && fds_flat && served;
    println!(
        "RSS {} MiB after warm-up, {} MiB at the end (peak {}); fds {} after warm-up, {} at the end",
        mib(warm.rss_kib),
        mib(last.rss_kib),
        mib(peak_rss),
        warm.fds,
        last.fds
    );
    println!(
        "verdict: {}",
        if verdict {
            "PASS (memory and descriptors flat)"
        } else {
            "FAIL"
        }
    );
    if !plan.full {
        assert!(verdict, "soak smoke pass failed");
    }
    drop(steady);
    verdict
}
