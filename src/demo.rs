//! `--demo`: three simulated vLLM upstreams on loopback with different speeds,
//! and the configuration that puts the gateway in front of them.

use crate::config::{Config, UpstreamConfig};
use crate::sim::{SimConfig, SimUpstream};
use std::time::Duration;

/// The demo's upstreams: a fast, a middling and a slow one.
pub fn upstream_configs() -> Vec<SimConfig> {
    vec![
        SimConfig::new("sim-fast")
            .ttft(Duration::from_millis(20))
            .tokens_per_second(400.0)
            .answer_tokens(48),
        SimConfig::new("sim-medium")
            .ttft(Duration::from_millis(80))
            .tokens_per_second(150.0)
            .answer_tokens(48),
        SimConfig::new("sim-slow")
            .ttft(Duration::from_millis(300))
            .tokens_per_second(50.0)
            .answer_tokens(48),
    ]
}

/// Starts the simulated upstreams on a runtime of their own (a thread that
/// lives as long as the process) and returns the gateway configuration.
pub fn start(listen: &str) -> Result<Config, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("demo-upstreams".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut sims = Vec::new();
                for config in upstream_configs() {
                    match SimUpstream::start(config.clone()).await {
                        Ok(sim) => sims.push((config.name, sim)),
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    }
                }
                let urls = sims
                    .iter()
                    .map(|(name, sim)| (name.clone(), sim.base_url()))
                    .collect::<Vec<_>>();
                let _ = tx.send(Ok(urls));
                // Keep the upstreams running for the life of the process.
                std::future::pending::<()>().await;
            });
        })
        .map_err(|e| e.to_string())?;
    let urls = rx
        .recv()
        .map_err(|_| "demo upstreams did not start".to_string())??;
    let mut config = Config {
        listen: listen.to_string(),
        upstreams: urls
            .into_iter()
            .map(|(name, url)| UpstreamConfig {
                name,
                base_url: Some(url),
                api_key: Some("demo-key".into()),
                // The original service's example price of serverless time, so
                // that /ui and /status show what the demo's traffic would cost.
                pricing: Some(crate::config::Pricing {
                    per_second: Some(0.0001),
                    ..Default::default()
                }),
                ..UpstreamConfig::default()
            })
            .collect(),
        ..Config::default()
    };
    config.health_check.interval = Duration::from_secs(2);
    config.validate().map_err(|problems| {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(config)
}

/// The lines printed for a newcomer once the demo runs.
pub fn banner(base: &str, config: &Config) -> String {
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| format!("  {} -> {}", u.name, u.base_url.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "context7-lb demo: gateway on {base}, in front of three simulated vLLM upstreams:\n\
         {upstreams}\n\n\
         Try:\n\
         \x20 curl -s {base}/ping\n\
         \x20 curl -s {base}/\n\
         \x20 curl -s -X POST {base}/v1/research -H 'Content-Type: application/json' \\\n\
         \x20      -d '{{\"query\": \"Explain the benefits of vLLM\", \"max_tokens\": 200}}'\n\
         \x20 curl -s -X POST {base}/v1/research -H 'Content-Type: application/json' -d '{{}}'   # 422\n\
         \x20 curl -s {base}/metrics | grep context7_\n\n\
         As an OpenAI base URL (any key; the gateway sends its own upstream):\n\
         \x20 curl -sN {base}/v1/chat/completions -H 'Content-Type: application/json' \\\n\
         \x20      -d '{{\"model\": \"meta-llama/Llama-3.1-8B-Instruct\", \"stream\": true, \"messages\": [{{\"role\": \"user\", \"content\": \"Hi\"}}]}}'\n\
         \x20 OpenAI(base_url=\"{base}/v1\", api_key=\"unused\")   # Python SDK\n\n\
         As an MCP server (tools research, list_models, upstream_status):\n\
         \x20 claude mcp add --transport http context7-demo {base}/mcp\n\n\
         Ctrl-C stops it.\n"
    )
}
