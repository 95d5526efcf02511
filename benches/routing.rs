//! Routing benchmark: three simulated upstreams answering in 10, 50 and 200 ms,
//! a fixed number of concurrent clients for a bounded time, once with round
//! robin, once with plain P2C over Peak-EWMA, and once with the pool's default
//! (P2C with memory of the last winner), plus the 10 ms
//! upstream alone without the gateway as the baseline.
//!
//! `cargo bench --bench routing` runs 10 s per case; under `cargo test` it
//! runs a 1 s smoke pass so that it always builds and runs.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Answered, config, gateway, load, load_on, share, sims, stop};
use context7_lb::config::Strategy;
use context7_lb::sim::SimConfig;
use std::time::Duration;

const CONCURRENCY: usize = 4;
const MAX_REQUESTS: usize = 1_000_000;

fn upstreams() -> Vec<SimConfig> {
    [("ms10", 10), ("ms50", 50), ("ms200", 200)]
        .into_iter()
        .map(|(name, ms)| {
            SimConfig::new(name)
                .ttft(Duration::from_millis(ms))
                .answer_tokens(32)
        })
        .collect()
}

struct Summary {
    requests: usize,
    errors: usize,
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn summarize(answers: &[Answered]) -> Summary {
    let mut latencies: Vec<Duration> = answers.iter().map(|a| a.latency).collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Summary {
        requests: answers.len(),
        errors: answers.iter().filter(|a| a.status != 200).count(),
        mean: latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32,
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The 10 ms upstream alone, straight from the client.
async fn direct(duration: Duration) -> Summary {
    let sim = context7_lb::sim::SimUpstream::start(upstreams().remove(0))
        .await
        .expect("sim starts");
    let url = format!("{}/chat/completions", sim.base_url());
    let body = r#"{"model":"m","messages":[{"role":"user","content":"load"}],"max_tokens":2000}"#;
    let answers = load_on(&url, body, CONCURRENCY, duration, usize::MAX).await;
    summarize(&answers)
}

async fn through_gateway(
    strategy: Strategy,
    remember_best: bool,
    duration: Duration,
) -> (Summary, [usize; 3]) {
    let sims = sims(upstreams()).await;
    let mut config = config();
    config.pool.strategy = strategy;
    config.pool.remember_best = remember_best;
    config.timeouts.total = Duration::from_secs(30);
    let gw = gateway(&sims, config).await;
    let answers = load(&gw, CONCURRENCY, duration, MAX_REQUESTS).await;
    let shares = [
        share(&answers, "ms10"),
        share(&answers, "ms50"),
        share(&answers, "ms200"),
    ];
    stop(gw).await;
    (summarize(&answers), shares)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let duration = Duration::from_secs(if full { 10 } else { 1 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "routing benchmark: upstreams at 10, 50 and 200 ms, {CONCURRENCY} concurrent clients, {} s per case",
            duration.as_secs()
        );
        println!(
            "{:<22} {:>9} {:>7} {:>10} {:>10} {:>10}   shares ms10 / ms50 / ms200",
            "case", "requests", "errors", "mean", "p50", "p99"
        );
        let baseline = direct(duration).await;
        println!(
            "{:<22} {:>9} {:>7} {:>10} {:>10} {:>10}",
            "10 ms upstream direct",
            baseline.requests,
            baseline.errors,
            ms(baseline.mean),
            ms(baseline.p50),
            ms(baseline.p99)
        );
        let mut pool_mean = Duration::ZERO;
        for (label, strategy, memory) in [
            ("gateway, round robin", Strategy::RoundRobin, false),
            ("gateway, plain P2C", Strategy::PeakEwma, false),
            ("gateway, pool default", Strategy::PeakEwma, true),
        ] {
            let (s, shares) = through_gateway(strategy, memory, duration).await;
            let pct = |n: usize| 100.0 * n as f64 / s.requests.max(1) as f64;
            println!(
                "{:<22} {:>9} {:>7} {:>10} {:>10} {:>10}   {:.1}% / {:.1}% / {:.1}%",
                label,
                s.requests,
                s.errors,
                ms(s.mean),
                ms(s.p50),
                ms(s.p99),
                pct(shares[0]),
                pct(shares[1]),
                pct(shares[2])
            );
            if memory {
                pool_mean = s.mean;
            }
        }
        println!(
            "pool mean / direct 10 ms mean = {:.2} (target: within 1.2 plus gateway overhead)",
            pool_mean.as_secs_f64() / baseline.mean.as_secs_f64()
        );
    });
}
