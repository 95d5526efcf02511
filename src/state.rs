//! What every request reads: the state built from one configuration (the
//! pool, the one upstream call, the protocol services, client keys and
//! limits), how it is built, and what carries over when a reload builds the
//! next one. Also the count of requests in flight, across reloads.

use crate::auth::ClientKeys;
use crate::client::UpstreamClient;
use crate::config::{Config, ConfigError, Problem};
use crate::guard::ClientLimits;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pool::call::Caller;
use crate::pool::{Pool, PoolError};
use crate::routes::mcp::{McpServer, Tools};
use crate::routes::openai::OpenAiService;
use crate::routes::research::{ResearchCache, ResearchService};
use crate::shared::SharedStore;
use arc_swap::ArcSwap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the proxy phases share: built from one configuration, swapped whole
/// on reload, read by every request.
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    /// The gateway's one upstream client (and connection pool): the same
    /// instance in every state, so that a reload keeps warm connections.
    pub client: Arc<UpstreamClient>,
    pub research: ResearchService,
    pub openai: OpenAiService,
    pub keys: ClientKeys,
    /// Limits on clients: head size, head and body deadlines, keep-alive.
    pub limits: ClientLimits,
    /// Requests and tokens per client (in Redis with `redis:`).
    pub rate_limit: Arc<Limits>,
    /// The Redis that replicas share state through, with `redis:`.
    pub shared: Option<Arc<SharedStore>>,
    /// The MCP transport's origin policy and sessions (kept across reloads).
    pub mcp: Arc<McpServer>,
    /// Ports of `metrics_listen` and `health_listen`, parsed once per
    /// configuration rather than on every request.
    pub metrics_port: Option<u16>,
    pub health_port: Option<u16>,
}

impl AppState {
    /// The limits `client` is held to: its key's own, else `rate_limit`'s.
    pub fn limits_of(&self, client: &crate::auth::ClientId) -> &crate::config::RateLimitConfig {
        match client {
            crate::auth::ClientId::Key(n, _) => {
                self.keys.limits_of(*n).unwrap_or(&self.config.rate_limit)
            }
            _ => &self.config.rate_limit,
        }
    }

    /// What MCP's tools run on.
    pub fn mcp_tools(&self) -> Tools<'_> {
        Tools {
            research: &self.research,
            pool: &self.pool,
            metrics: &self.metrics,
        }
    }
}

/// The current [`AppState`]; a reload swaps in a new one while requests that
/// began under the old one finish with it.
pub type SharedState = Arc<ArcSwap<AppState>>;

/// Why a validated configuration could still not be put to work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// An upstream whose address cannot be used.
    Upstream(PoolError),
    /// `auth.keys_file` (or `auth.keys`) could not be read or holds a bad key.
    Keys(String),
    /// `redis.url` cannot be used.
    Redis(String),
}

impl StartError {
    /// The configuration field at fault and why, as `--check` prints problems.
    pub fn problem(&self) -> Problem {
        match self {
            StartError::Upstream(e) => Problem {
                at: format!("upstreams[{}]", e.upstream),
                why: e.why.clone(),
            },
            StartError::Keys(why) => Problem {
                at: "auth".into(),
                why: why.clone(),
            },
            StartError::Redis(why) => Problem {
                at: "redis.url".into(),
                why: why.clone(),
            },
        }
    }

    /// As a configuration error of `source` (a file, or "environment").
    pub fn in_source(&self, source: &str) -> ConfigError {
        ConfigError {
            source: source.to_string(),
            problems: vec![self.problem()],
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = self.problem();
        write!(f, "{}: {}", problem.at, problem.why)
    }
}

impl std::error::Error for StartError {}

/// Builds the state for `config`. With `previous` (a reload), upstreams that
/// stay the same endpoint keep their live state, the upstream client and its
/// connections carry on, and so do the MCP sessions, the cache and the
/// rate-limit buckets when their settings did not change.
pub fn build_state(
    config: &Config,
    metrics: Arc<Metrics>,
    previous: Option<&AppState>,
) -> Result<Arc<AppState>, StartError> {
    let pool = Arc::new(
        Pool::from_config_after(config, metrics.clone(), previous.map(|p| &*p.pool))
            .map_err(StartError::Upstream)?,
    );
    let client = match previous {
        Some(p) => p.client.clone(),
        None => Arc::new(UpstreamClient::new()),
    };
    let shared = match (previous, &config.redis) {
        (_, None) => None,
        (Some(p), Some(redis)) if p.config.redis.as_ref() == Some(redis) => p.shared.clone(),
        (_, Some(redis)) => Some(Arc::new(
            SharedStore::new(redis, metrics.clone()).map_err(StartError::Redis)?,
        )),
    };
    let mcp = match previous {
        Some(p) if p.config.mcp == config.mcp && p.config.redis == config.redis => p.mcp.clone(),
        _ => Arc::new(McpServer::new(&config.mcp, shared.clone())),
    };
    let cache = match previous {
        Some(p) if p.config.cache == config.cache && p.config.redis == config.redis => {
            p.research.cache().cloned()
        }
        _ => config
            .cache
            .enabled
            .then(|| Arc::new(ResearchCache::new(&config.cache, shared.clone()))),
    };
    let keys =
        ClientKeys::from_config(&config.auth, &config.rate_limit).map_err(StartError::Keys)?;
    let rate_limit = match previous {
        Some(p)
            if p.config.rate_limit == config.rate_limit
                && p.config.auth == config.auth
                && p.config.redis == config.redis =>
        {
            p.rate_limit.clone()
        }
        _ => Arc::new(Limits::new(
            std::iter::once(&config.rate_limit).chain(keys.all_limits()),
            shared.clone(),
        )),
    };
    let caller = Arc::new(Caller::new(
        config,
        pool.clone(),
        client.clone(),
        metrics.clone(),
    ));
    Ok(Arc::new(AppState {
        research: ResearchService::new(config, caller.clone(), metrics.clone(), cache),
        openai: OpenAiService::new(config, caller),
        keys,
        limits: ClientLimits::from_config(&config.limits),
        rate_limit,
        shared,
        mcp,
        pool,
        client,
        metrics,
        metrics_port: port_of(&config.metrics_listen),
        health_port: port_of(&config.health_listen),
        config: Arc::new(config.clone()),
    }))
}

fn port_of(address: &Option<String>) -> Option<u16> {
    address
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
}

/// Requests being served now, across reloads: a graceful stop waits for zero.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one request until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }
}

/// One request in flight.
pub struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::AcqRel);
    }
}
