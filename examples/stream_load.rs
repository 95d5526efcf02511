//! The load generator of `scripts/stream-bench.sh`: holds a fixed number of
//! streaming chat completions open against one URL for a bounded time, each
//! connection starting its next stream as soon as one ends, and prints one
//! JSON line: streams finished per second, stream time and time to first
//! chunk (p50, p99), errors by kind, the CPU time of the processes given
//! with `--pid` over the measured window, and their peak resident memory
//! during the run (VmRSS sampled every 100 ms), from `/proc`.
//!
//!   cargo run --release --example stream_load -- URL BODY CONCURRENCY \
//!       WARMUP_S MEASURE_S EXPECTED_EVENTS [--pid PID]...
//!
//! A stream counts as good when it answers 200 and its body holds exactly
//! EXPECTED_EVENTS `data:` events, the last of them `data: [DONE]`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One stream as the client saw it.
struct Sample {
    started: Instant,
    ended: Instant,
    first_chunk: Duration,
}

#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    errors: BTreeMap<String, u64>,
}

/// CPU time (user + system) and resident memory (VmRSS, KiB) of a process
/// and its children (nginx's workers), from `/proc`.
fn cpu_and_rss(pids: &[u32]) -> (Duration, u64) {
    let tick = 100.0; // USER_HZ on Linux
    let mut cpu = 0.0;
    let mut rss_kb = 0;
    let mut all: Vec<u32> = pids.to_vec();
    for &pid in pids {
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    for pid in all {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name, which is in parentheses.
            let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            cpu += (utime + stime) / tick;
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            rss_kb += status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (Duration::from_secs_f64(cpu), rss_kb)
}

/// Counts the SSE `data:` events of a whole body and says whether the last
/// one is `[DONE]`.
fn events(body: &[u8]) -> (usize, bool) {
    let text = String::from_utf8_lossy(body);
    let events: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|e| e.starts_with("data:"))
        .collect();
    let done = events
        .last()
        .is_some_and(|e| e.trim_end() == "data: [DONE]");
    (events.len(), done)
}

async fn one_stream(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    expected: usize,
) -> Result<Duration, String> {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("send: {}", kind(&e)))?;
    let status = response.status().as_u16();
    let mut response = response;
    let mut first_chunk = None;
    let mut all = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("body: {}", kind(&e)))?
    {
        if first_chunk.is_none() && !chunk.is_empty() {
            first_chunk = Some(started.elapsed());
        }
        all.extend_from_slice(&chunk);
    }
    if status != 200 {
        return Err(format!("status {status}"));
    }
    let (count, done) = events(&all);
    if !done {
        return Err("no [DONE]".into());
    }
    if count != expected {
        return Err(format!("{count} events"));
    }
    Ok(first_chunk.unwrap_or_default())
}

fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 {
        eprintln!(
            "usage: stream_load URL BODY CONCURRENCY WARMUP_S MEASURE_S EXPECTED_EVENTS [--pid PID]..."
        );
        std::process::exit(2);
    }
    let url: Arc<str> = args[0].as_str().into();
    let body: Arc<str> = args[1].as_str().into();
    let concurrency: usize = args[2].parse().expect("CONCURRENCY is a number");
    let warmup = Duration::from_secs_f64(args[3].parse().expect("WARMUP_S is a number"));
    let measure = Duration::from_secs_f64(args[4].parse().expect("MEASURE_S is a number"));
    let expected: usize = args[5].parse().expect("EXPECTED_EVENTS is a number");
    let pids: Vec<u32> = args[6..]
        .chunks(2)
        .filter(|pair| pair[0] == "--pid")
        .filter_map(|pair| pair.get(1).and_then(|p| p.parse().ok()))
        .collect();
    let threads = std::env::var("LOAD_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(concurrency)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let tally = Arc::new(Mutex::new(Tally::default()));
        let begun = Instant::now();
        let window_start = begun + warmup;
        let deadline = window_start + measure;
        let mut tasks = Vec::with_capacity(concurrency);
        for i in 0..concurrency {
            let (client, url, body, tally) =
                (client.clone(), url.clone(), body.clone(), tally.clone());
            // Starts spread over the first second, so that the listener's
            // backlog is not what is measured, and streams end at different times.
            let offset = Duration::from_secs(1) * i as u32 / concurrency as u32;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let outcome = one_stream(&client, &url, &body, expected).await;
                    if started < window_start {
                        continue;
                    }
                    let mut tally = tally.lock().unwrap();
                    match outcome {
                        Ok(first_chunk) => tally.samples.push(Sample {
                            started,
                            ended: Instant::now(),
                            first_chunk,
                        }),
                        Err(why) => *tally.errors.entry(why).or_default() += 1,
                    }
                }
            }));
        }
        // This run's own peak: resident memory sampled every 100 ms while
        // the streams are open (VmHWM would carry an earlier run's peak).
        let sampling = {
            let pids = pids.clone();
            tokio::spawn(async move {
                let mut peak_kb = 0;
                while Instant::now() < deadline {
                    peak_kb = peak_kb.max(cpu_and_rss(&pids).1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                peak_kb
            })
        };
        tokio::time::sleep_until(window_start.into()).await;
        let (cpu_before, _) = cpu_and_rss(&pids);
        let (own_before, _) = cpu_and_rss(&[std::process::id()]);
        tokio::time::sleep_until(deadline.into()).await;
        let (cpu_after, _) = cpu_and_rss(&pids);
        let (own_after, _) = cpu_and_rss(&[std::process::id()]);
        for task in tasks {
            let _ = task.await;
        }
        let peak_kb = sampling.await.unwrap_or(0);
        let tally = tally.lock().unwrap();
        let finished_in_window = tally
            .samples
            .iter()
            .filter(|s| s.ended <= deadline)
            .count();
        let mut times: Vec<f64> = tally
            .samples
            .iter()
            .map(|s| (s.ended - s.started).as_secs_f64() * 1000.0)
            .collect();
        let mut firsts: Vec<f64> = tally
            .samples
            .iter()
            .map(|s| s.first_chunk.as_secs_f64() * 1000.0)
            .collect();
        times.sort_by(f64::total_cmp);
        firsts.sort_by(f64::total_cmp);
        let errors: u64 = tally.errors.values().sum();
        let cpu = cpu_after.saturating_sub(cpu_before).as_secs_f64();
        let json = serde_json::json!({
            "concurrency": concurrency,
            "streams": tally.samples.len(),
            "streams_per_s": finished_in_window as f64 / measure.as_secs_f64(),
            "p50_ms": percentile(&times, 50.0),
            "p99_ms": percentile(&times, 99.0),
            "first_chunk_p50_ms": percentile(&firsts, 50.0),
            "first_chunk_p99_ms": percentile(&firsts, 99.0),
            "errors": errors,
            "error_kinds": tally.errors,
            "cpu_s": cpu,
            "cpu_ms_per_stream": if finished_in_window > 0 { cpu * 1000.0 / finished_in_window as f64 } else { 0.0 },
            "peak_rss_mb": peak_kb as f64 / 1024.0,
            "load_generator_cpu_s": own_after.saturating_sub(own_before).as_secs_f64(),
        });
        println!("{json}");
    });
}
