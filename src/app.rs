//! The one place that wires the gateway together: the Pingora server with
//! its listeners and background services (health checks, reloads on SIGHUP,
//! housekeeping), and shutdown. The state it serves is built in `state`.

use crate::config::{Config, ConfigError};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::pool::health::HealthChecker;
use crate::ports::PortReservation;
use crate::state::{AppState, InFlight, SharedState, StartError, build_state};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything built from one configuration, before it runs.
pub struct Built {
    pub server: Server,
    pub state: SharedState,
    pub in_flight: InFlight,
    pub listen: SocketAddr,
}

/// Builds the Pingora server for `config` (already validated). `reuse_port`
/// (only [`RunningGateway`]) binds the listeners with SO_REUSEPORT.
pub fn build(config: &Config, opt: Option<Opt>, reuse_port: bool) -> Result<Built, StartError> {
    let metrics = Arc::new(Metrics::new());
    let state: SharedState = Arc::new(ArcSwap::new(build_state(config, metrics.clone(), None)?));
    let in_flight = InFlight::default();

    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.threads
    };
    let conf = ServerConf {
        threads,
        // After SIGTERM (or a socket handover) in-flight requests get the grace
        // period; `run` ends the process as soon as none is left.
        grace_period_seconds: Some(config.shutdown.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.shutdown.upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listen = config.listen_addr();
    // Pingora's HTTP server behind the client guard (see `guard`).
    let current = state.clone();
    let mut proxy = crate::guard::guarded_service(
        Gateway::new(state.clone(), in_flight.clone()),
        "context7-lb",
        Arc::new(move || current.load().limits.clone()),
        metrics.clone(),
    );
    add_tcp(&mut proxy, &listen.to_string(), reuse_port);
    for extra in [&config.metrics_listen, &config.health_listen]
        .into_iter()
        .flatten()
    {
        add_tcp(&mut proxy, extra, reuse_port);
    }
    server.add_service(proxy);

    let current = state.clone();
    // The probes share the requests' client, so they keep its connections warm.
    let client = state.load().client.clone();
    let checker = HealthChecker::new(
        Arc::new(move || current.load().pool.clone()),
        client,
        metrics,
    );
    server.add_service(background_service("health checks", checker));
    let janitor = Janitor {
        state: state.clone(),
    };
    server.add_service(background_service("janitor", janitor));
    server.add_service(background_service(
        "history",
        SampleHistory {
            state: state.clone(),
        },
    ));
    server.add_service(background_service(
        "redis",
        KeepRedisConnected {
            state: state.clone(),
        },
    ));
    Ok(Built {
        server,
        state,
        in_flight,
        listen,
    })
}

/// Re-reads the configuration file and swaps the new state in.
pub struct Reloader {
    path: PathBuf,
    state: SharedState,
}

impl Reloader {
    pub fn new(path: PathBuf, state: SharedState) -> Reloader {
        Reloader { path, state }
    }

    /// Loads and validates the file; on any problem the running configuration
    /// stays and the problems are returned. Requests already in flight finish
    /// with the state they started with.
    pub fn reload(&self) -> Result<Arc<AppState>, ConfigError> {
        let config = Config::load_file(&self.path)?;
        let current = self.state.load_full();
        for (what, old, new) in [
            ("listen", &current.config.listen, &config.listen),
            (
                "metrics_listen",
                &format!("{:?}", current.config.metrics_listen),
                &format!("{:?}", config.metrics_listen),
            ),
            (
                "health_listen",
                &format!("{:?}", current.config.health_listen),
                &format!("{:?}", config.health_listen),
            ),
            (
                "threads",
                &current.config.threads.to_string(),
                &config.threads.to_string(),
            ),
            (
                "shutdown.grace_period",
                &format!("{:?}", current.config.shutdown.grace_period),
                &format!("{:?}", config.shutdown.grace_period),
            ),
            (
                "shutdown.upgrade_sock",
                &current.config.shutdown.upgrade_sock,
                &config.shutdown.upgrade_sock,
            ),
        ] {
            if old != new {
                log::warn!("reload: {what} changed from {old} to {new}; that takes a restart");
            }
        }
        let state = build_state(&config, current.metrics.clone(), Some(&current))
            .map_err(|e| e.in_source(&self.path.display().to_string()))?;
        self.state.store(state.clone());
        Ok(state)
    }
}

/// Reloads on SIGHUP.
struct ReloadOnHangup(Reloader);

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("cannot listen for SIGHUP, reloads are off: {e}");
                    return;
                }
            };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    let metrics = self.0.state.load().metrics.clone();
                    match crate::task::guarded_sync("reload", &metrics, || self.0.reload()) {
                        Some(Ok(state)) => log::info!(
                            "reloaded {}: {} upstream(s)",
                            self.0.path.display(),
                            state.pool.upstreams().len()
                        ),
                        Some(Err(e)) => {
                            log::error!("reload refused, the running configuration stays:\n{e}")
                        }
                        None => log::error!("reload failed, the running configuration stays"),
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Periodic housekeeping: idle rate-limit buckets are forgotten.
struct Janitor {
    state: SharedState,
}

#[async_trait]
impl BackgroundService for Janitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {
                    let state = self.state.load();
                    crate::task::guarded_sync("janitor", &state.metrics, || {
                        state.rate_limit.forget_idle();
                        state.client.sweep();
                    });
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Samples every upstream's figures for the last 15 minutes that `/ui` draws
/// (`/status?history=1`).
struct SampleHistory {
    state: SharedState,
}

#[async_trait]
impl BackgroundService for SampleHistory {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(crate::pool::HISTORY_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let state = self.state.load();
                    crate::task::guarded_sync("history", &state.metrics, || {
                        state.pool.sample_history();
                    });
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Connects to the current state's Redis (with `redis:`), and reconnects
/// after it was lost.
struct KeepRedisConnected {
    state: SharedState,
}

#[async_trait]
impl BackgroundService for KeepRedisConnected {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::shared::keep_connected(|| self.state.load().shared.clone(), shutdown).await;
    }
}

/// Unix signals as Pingora reads them, plus an early end to the grace period:
/// once a graceful stop began and no request is in flight, the process exits
/// instead of sleeping out the rest of the period.
struct Signals {
    in_flight: InFlight,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = pingora::server::UnixShutdownSignalWatch.recv().await;
        if matches!(
            signal,
            ShutdownSignal::GracefulTerminate | ShutdownSignal::GracefulUpgrade
        ) {
            let in_flight = self.in_flight.clone();
            let upgrade = matches!(signal, ShutdownSignal::GracefulUpgrade);
            std::thread::spawn(move || {
                // A handover first waits for the new process to take the
                // sockets (Pingora's close timeout); then the same rule applies.
                std::thread::sleep(Duration::from_secs(if upgrade { 6 } else { 1 }));
                while in_flight.count() > 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                log::info!("no request in flight: exiting before the grace period ends");
                log::logger().flush();
                std::process::exit(0);
            });
        }
        signal
    }
}

/// Runs the gateway until a signal stops it: SIGTERM graceful (in-flight
/// requests finish within `shutdown.grace_period`), SIGINT fast, SIGQUIT hands
/// the listening sockets to a new process started with `--upgrade`, SIGHUP
/// reloads `config_path`.
pub fn run(config: &Config, config_path: Option<PathBuf>, upgrade: bool) -> Result<(), StartError> {
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut built = build(config, Some(opt), false)?;
    match config_path {
        Some(path) => {
            let reloader = Reloader::new(path, built.state.clone());
            built
                .server
                .add_service(background_service("reload", ReloadOnHangup(reloader)));
        }
        None => log::info!("no --config file: SIGHUP has nothing to reload"),
    }
    log::info!(
        "context7-lb {} listening on {} with {} upstream(s)",
        env!("CARGO_PKG_VERSION"),
        built.listen,
        built.state.load().pool.upstreams().len()
    );
    built.server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            in_flight: built.in_flight,
        }),
    });
    Ok(())
}

/// Adds a TCP listener to `service`; with `reuse_port` it binds with
/// SO_REUSEPORT, so that it can take over the address of a [`PortReservation`].
///
/// Reads from clients are not buffered: Pingora's default puts a zeroed
/// 64 KiB read buffer in front of every accepted connection, which at
/// thousands of open streams was most of the gateway's memory (about
/// 64 KiB a stream, docs/performance.md), and it only saved syscalls for
/// reads smaller than the HTTP layer's own buffers, which are not made.
fn add_tcp<A>(
    service: &mut pingora::services::listening::Service<A>,
    address: &str,
    reuse_port: bool,
) {
    use pingora::listeners::{ListenerConfig, TcpSocketOptions};
    use pingora::protocols::l4::stream::{DEFAULT_L4_WRITE_BUFFER_SIZE, L4BufferSettings};
    let mut options = TcpSocketOptions::default();
    if reuse_port {
        options.so_reuseport = Some(true);
    }
    service.add_listener(
        ListenerConfig::tcp(address)
            .tcp_socket_options(options)
            .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
    );
}

/// A gateway running in threads of this process, for tests, benchmarks and
/// the demo. Dropping it shuts it down.
pub struct RunningGateway {
    pub address: SocketAddr,
    /// The state it started with; [`RunningGateway::current`] after a reload.
    pub state: Arc<AppState>,
    shared: SharedState,
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
    /// Starts a gateway for `config`. A `listen` port of 0 is replaced by a
    /// [`PortReservation`] on that address, dropped once the gateway listens
    /// there. Every listener binds with SO_REUSEPORT, so `metrics_listen` and
    /// `health_listen` may name ports the caller reserved (and drops once this
    /// returns). Returns once every listener accepts connections.
    pub fn start(mut config: Config) -> Result<RunningGateway, String> {
        let reservation = if config.listen_addr().port() == 0 {
            let reserved = PortReservation::on(config.listen_addr().ip())
                .map_err(|e| format!("no free port: {e}"))?;
            config.listen = reserved.address().to_string();
            Some(reserved)
        } else {
            None
        };
        let built = build(&config, None, true).map_err(|e| e.to_string())?;
        let address = built.listen;
        let shared = built.state.clone();
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
            state: shared.load_full(),
            shared,
            stop,
            thread: Some(thread),
        };
        let extras = [&config.metrics_listen, &config.health_listen]
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse::<SocketAddr>().ok());
        let deadline = Instant::now() + Duration::from_secs(10);
        for listener in std::iter::once(address).chain(extras) {
            while TcpStream::connect_timeout(&connectable(listener), Duration::from_millis(200))
                .is_err()
            {
                if Instant::now() > deadline {
                    return Err(format!("gateway did not start listening on {listener}"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        drop(reservation);
        Ok(gateway)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", connectable(self.address))
    }

    /// The state serving requests now.
    pub fn current(&self) -> Arc<AppState> {
        self.shared.load_full()
    }

    /// A reloader of `path` for this gateway, as SIGHUP would use it.
    pub fn reloader(&self, path: PathBuf) -> Reloader {
        Reloader::new(path, self.shared.clone())
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
