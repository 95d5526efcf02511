//! Gateways in this process in front of simulated vLLM upstreams, their
//! configurations, and a warm pool for benchmarks.

pub use context7_lb::app::RunningGateway;
use context7_lb::config::{Config, Strategy, UpstreamConfig};
use context7_lb::metrics::Metrics;
use context7_lb::pool::{CheckOutcome, Outcome, Pool};
use context7_lb::sim::{SimConfig, SimUpstream};
use std::sync::Arc;
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
    let gw = start_now(config).await;
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

/// Starts a gateway for `config` (checked valid) and returns as soon as it
/// accepts connections, before any health check has landed.
pub async fn start_now(config: Config) -> RunningGateway {
    config.validate().expect("test config is valid");
    tokio::task::spawn_blocking(move || RunningGateway::start(config))
        .await
        .expect("start task")
        .expect("gateway starts")
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

/// A pool of `n` upstreams (on ports nothing listens on: it is never asked
/// to connect) in its steady state: each passed its health check and
/// answered once, upstream `i` in `10 + i` ms.
pub fn warm_pool(n: usize, strategy: Strategy) -> Pool {
    let mut config = Config {
        upstreams: (0..n)
            .map(|i| UpstreamConfig {
                name: format!("u{i}"),
                base_url: Some(format!("http://127.0.0.1:{}/v1", 9000 + i)),
                ..UpstreamConfig::default()
            })
            .collect(),
        ..Config::default()
    };
    config.pool.strategy = strategy;
    let pool = Pool::from_config(&config, Arc::new(Metrics::new())).expect("valid pool");
    for (i, u) in pool.upstreams().iter().enumerate() {
        u.observe_check(CheckOutcome::Up, String::new(), 1, 1);
        pool.begin(u)
            .finish(Outcome::Success(Duration::from_millis(10 + i as u64)));
    }
    pool
}
