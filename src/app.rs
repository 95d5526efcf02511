//! The one place that wires the gateway together: pool, health checker,
//! research service, proxy service and metrics, inside a Pingora server.

use crate::config::Config;
use crate::guard::ClientLimits;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::pool::health::HealthChecker;
use crate::proxy::{AppState, Gateway};
use crate::routes::mcp::McpServer;
use crate::routes::openai::OpenAiService;
use crate::routes::research::ResearchService;
use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything built from one configuration, before it runs.
pub struct Built {
    pub server: Server,
    pub state: Arc<AppState>,
    pub listen: SocketAddr,
}

/// Builds the Pingora server for `config` (already validated).
pub fn build(config: &Config, opt: Option<Opt>) -> Result<Built, String> {
    let metrics = Arc::new(Metrics::new());
    let pool = Arc::new(Pool::from_config(config, metrics.clone())?);
    let state = Arc::new(AppState {
        pool: pool.clone(),
        metrics: metrics.clone(),
        research: ResearchService::new(config, pool.clone(), metrics.clone()),
        openai: OpenAiService::new(config, pool.clone(), metrics.clone()),
        max_body_bytes: config.limits.max_body_bytes,
        client: ClientLimits::from_config(&config.limits),
        ping_always_200: config.ping_always_200,
        mcp: McpServer::new(&config.mcp),
    });

    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.threads
    };
    let conf = ServerConf {
        threads,
        // Stop accepting, give in-flight requests this long, then stop.
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listen = config.listen_addr();
    // Pingora's HTTP proxy behind the client guard (see `guard`).
    let mut proxy = crate::guard::proxy_service(
        &server.configuration,
        Gateway::new(state.clone()),
        "context7-lb",
        ClientLimits::from_config(&config.limits),
        metrics.clone(),
    );
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);

    if !pool.is_empty() {
        let checker = HealthChecker::new(
            pool,
            config.health_check.clone(),
            config.timeouts.connect,
            metrics,
        );
        server.add_service(background_service("health checks", checker));
    }
    Ok(Built {
        server,
        state,
        listen,
    })
}

/// Runs the gateway until a signal stops it: SIGTERM graceful, SIGINT fast,
/// SIGQUIT hands the listening socket to a new process started with `-u`.
pub fn run(config: &Config) -> Result<(), String> {
    let built = build(config, None)?;
    log::info!(
        "context7-lb {} listening on {} with {} upstream(s)",
        env!("CARGO_PKG_VERSION"),
        built.listen,
        built.state.pool.upstreams().len()
    );
    built.server.run(RunArgs::default());
    Ok(())
}

/// A gateway running in threads of this process, for tests, benchmarks and
/// the demo. Dropping it shuts it down.
pub struct RunningGateway {
    pub address: SocketAddr,
    pub state: Arc<AppState>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct NotifiedShutdown(Arc<tokio::sync::Notify>);

#[async_trait]
impl ShutdownSignalWatch for NotifiedShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

impl RunningGateway {
    /// Starts a gateway for `config`; a `listen` port of 0 is replaced by a free
    /// loopback port. Returns once the gateway accepts connections.
    pub fn start(mut config: Config) -> Result<RunningGateway, String> {
        if config.listen_addr().port() == 0 {
            let probe = TcpListener::bind((config.listen_addr().ip(), 0))
                .map_err(|e| format!("no free port: {e}"))?;
            config.listen = probe.local_addr().map_err(|e| e.to_string())?.to_string();
        }
        let built = build(&config, None)?;
        let address = built.listen;
        let state = built.state.clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let shutdown = NotifiedShutdown(stop.clone());
        let server = built.server;
        let thread = std::thread::Builder::new()
            .name("gateway".into())
            .spawn(move || {
                server.run(RunArgs {
                    shutdown_signal: Box::new(shutdown),
                })
            })
            .map_err(|e| e.to_string())?;
        let gateway = RunningGateway {
            address,
            state,
            stop,
            thread: Some(thread),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&connectable(address), Duration::from_millis(200)).is_err()
        {
            if Instant::now() > deadline {
                return Err(format!("gateway did not start listening on {address}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(gateway)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", connectable(self.address))
    }
}

/// A wildcard listen address is reached through loopback.
fn connectable(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], address.port()))
    } else {
        address
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
