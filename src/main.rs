//! Command line: parses arguments, loads or checks the configuration, runs the gateway.
#![forbid(unsafe_code)]

use clap::Parser;
use context7_lb::config::Config;
use context7_lb::{app, demo};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

// glibc's allocator took about a sixth of the gateway's CPU time under load
// (malloc, free and their consolidation); mimalloc's thread-local free lists
// suit the many short-lived buffers of a proxy. See docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Pingora gateway in front of RunPod serverless vLLM and OpenAI-compatible endpoints.
///
/// Without --config the gateway reads the original service's environment:
/// RUNPOD_API_KEY, RUNPOD_VLLM_ENDPOINT_ID (comma-separated for several) and PORT.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// YAML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, print every problem, and exit.
    #[arg(long)]
    check: bool,
    /// Run in front of three built-in simulated vLLM upstreams.
    #[arg(long, conflicts_with_all = ["config", "check"])]
    demo: bool,
    /// Listen address, overriding the configuration (demo default 127.0.0.1:8002).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Take over the listening sockets of a running gateway (then send it SIGQUIT).
    #[arg(long, short = 'u')]
    upgrade: bool,
    /// Run one simulated vLLM upstream on ADDR instead of the gateway (for
    /// load benchmarks and soak runs); it answers at once unless
    /// --sim-ttft-ms sets a time to first token.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["config", "check", "demo"])]
    sim_upstream: Option<String>,
    /// Time to first token of --sim-upstream, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 0,
        requires = "sim_upstream"
    )]
    sim_ttft_ms: u64,
    /// Tokens per second after the first one of --sim-upstream's streams
    /// (0, the default, sends them all at once).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0.0,
        requires = "sim_upstream"
    )]
    sim_tokens_per_second: f64,
    /// Tokens in each answer of --sim-upstream (fewer when a request's
    /// max_tokens is lower).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 16,
        requires = "sim_upstream"
    )]
    sim_answer_tokens: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    context7_lb::logging::init();

    if let Some(address) = &args.sim_upstream {
        return run_sim_upstream(address, &args);
    }

    let config = if args.demo {
        let listen = args.listen.clone().unwrap_or_else(|| {
            format!(
                "127.0.0.1:{}",
                std::env::var("PORT").unwrap_or_else(|_| "8002".into())
            )
        });
        match demo::start(&listen) {
            Ok(config) => {
                let base = format!("http://{listen}");
                println!("{}", demo::banner(&base, &config));
                config
            }
            Err(e) => {
                eprintln!("demo: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let loaded = match &args.config {
            Some(path) => Config::load_file(path),
            None => Config::from_env(&std::env::vars().collect::<HashMap<_, _>>()),
        };
        let mut config = match loaded {
            Ok(config) => config,
            Err(e) => {
                eprint!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(listen) = &args.listen {
            config.listen = listen.clone();
            if let Err(problems) = config.validate() {
                for p in problems {
                    eprintln!("--listen: {p}");
                }
                return ExitCode::FAILURE;
            }
        }
        if args.check {
            let source = args
                .config
                .as_ref()
                .map_or("environment".to_string(), |p| p.display().to_string());
            println!(
                "{source}: configuration is valid ({} upstream(s), listening on {})",
                config.upstreams.len(),
                config.listen
            );
            return ExitCode::SUCCESS;
        }
        config
    };

    match app::run(&config, args.config.clone(), args.upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("context7-lb: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--sim-upstream`: one simulated vLLM upstream until the process is stopped.
fn run_sim_upstream(address: &str, args: &Args) -> ExitCode {
    let Ok(address) = address.parse::<std::net::SocketAddr>() else {
        eprintln!("--sim-upstream: {address:?} is not an address and port");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("--sim-upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let config = context7_lb::sim::SimConfig::new(&format!("sim-{}", address.port()))
            .ttft(std::time::Duration::from_millis(args.sim_ttft_ms))
            .tokens_per_second(args.sim_tokens_per_second)
            .answer_tokens(args.sim_answer_tokens);
        match context7_lb::sim::SimUpstream::start_on(address, config).await {
            Ok(sim) => {
                println!("simulated upstream on {}", sim.base_url());
                let _ = tokio::signal::ctrl_c().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("--sim-upstream: cannot listen on {address}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
