//! One endpoint behind the gateway: where it is, how to authenticate, what model
//! it serves, its resolved addresses and its health state.

use super::ewma::PeakEwma;
use crate::config::{BaseUrl, Config, UpstreamConfig, parse_base_url};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::time::Instant;

/// What kind of endpoint this is; it decides how health is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKind {
    /// Any OpenAI-compatible server (`vllm serve`, a RunPod load-balancing worker).
    OpenAi,
    /// A RunPod serverless queue endpoint, reached through the RunPod API host.
    RunPodQueue { endpoint_id: String },
    /// A RunPod load-balancing endpoint: HTTP straight to its workers.
    RunPodLoadBalancer { endpoint_id: String },
}

impl UpstreamKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            UpstreamKind::OpenAi => "openai",
            UpstreamKind::RunPodQueue { .. } => "runpod_queue",
            UpstreamKind::RunPodLoadBalancer { .. } => "runpod_load_balancer",
        }
    }
}

/// How a health answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeContract {
    /// `/ping` of vLLM and RunPod workers: 200 up, 204 initializing, else down.
    Ping,
    /// RunPod's `/v2/{id}/health`: 200 up with job and worker counts.
    RunPodHealth,
}

/// Queue depth and workers of a RunPod queue endpoint, from its `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct QueueDepth {
    pub in_queue: u64,
    pub in_progress: u64,
    pub workers_idle: u64,
    pub workers_running: u64,
}

impl QueueDepth {
    /// No worker is up, idle or running: the next job waits for a cold start.
    pub fn is_cold(&self) -> bool {
        self.workers_idle == 0 && self.workers_running == 0
    }

    /// Jobs waiting or running per running worker: the load others put on it.
    pub fn jobs_per_worker(&self) -> f64 {
        (self.in_queue + self.in_progress) as f64 / self.workers_running.max(1) as f64
    }
}

/// The last failure of a real request, for `/status`. Never holds a key.
#[derive(Debug, Clone)]
pub struct ErrorRecord {
    pub at: SystemTime,
    pub message: String,
}

/// The health of an upstream as active checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// No check has finished yet.
    Unknown = 0,
    /// Passed its checks: routable.
    Healthy = 1,
    /// Answered 204: alive but still loading, so not routable and not failing.
    Initializing = 2,
    /// Failed its checks.
    Unhealthy = 3,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Initializing,
            3 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Initializing => "initializing",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// The result of one active check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    Up,
    Initializing,
    Down,
}

impl CheckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Up => "up",
            CheckOutcome::Initializing => "initializing",
            CheckOutcome::Down => "down",
        }
    }
}

/// The last active check, for `/status` and logs.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub at: SystemTime,
    pub outcome: CheckOutcome,
    /// Human-readable detail: the status code or the error. Never holds a key.
    pub detail: String,
}

#[derive(Debug, Default)]
struct Streaks {
    ok: u32,
    failed: u32,
    last: Option<CheckRecord>,
}

/// Where and how an upstream's health is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTarget {
    pub url: BaseUrl,
    pub contract: ProbeContract,
}

/// One upstream endpoint.
pub struct Upstream {
    /// Position in the pool, stable for the pool's lifetime.
    pub index: usize,
    pub name: String,
    pub kind: UpstreamKind,
    /// Base URL of the OpenAI API, such as `https://api.runpod.ai/v2/ID/openai/v1`.
    pub base: BaseUrl,
    pub health_target: HealthTarget,
    /// Model name sent for research requests.
    pub model: String,
    /// Share of traffic relative to the others.
    pub weight: f64,
    /// Models named in the configuration (`models` and `model`).
    configured_models: Vec<String>,
    /// `Bearer …` header value; private so it is never formatted by accident.
    authorization: Option<String>,
    /// Whether probes carry the key: the health target is on the API's
    /// origin, or the configuration opted in for one elsewhere.
    probe_gets_key: bool,
    /// Requests allowed in flight at once (0: no limit).
    pub max_concurrent: u64,
    /// Preference order (`upstreams[].tier`): lower tiers are used first.
    pub tier: u32,
    /// Its prices, when the configuration gives them.
    pub pricing: Option<crate::config::Pricing>,
    /// What the gateway learnt about this endpoint: kept across a reload that
    /// keeps the endpoint, and shared with requests of the old configuration
    /// still in flight.
    pub(super) shared: Arc<UpstreamState>,
    /// Its series in the metrics every answer adds to, looked up once.
    pub series: crate::metrics::UpstreamSeries,
}

/// An upstream's live state: health, load, addresses, models.
#[derive(Debug)]
pub(super) struct UpstreamState {
    /// Models the upstream listed on `/v1/models`.
    discovered_models: RwLock<Vec<String>>,
    addresses: RwLock<Vec<SocketAddr>>,
    /// Resolved addresses of the health target, when it is not on the API's
    /// host and port (a `health_url` elsewhere); otherwise `addresses` serve.
    health_addresses: RwLock<Vec<SocketAddr>>,
    health: AtomicU8,
    streaks: Mutex<Streaks>,
    pub(super) in_flight: AtomicU64,
    pub(super) load: Mutex<LoadState>,
    /// When passive ejection ends, as nanoseconds after `epoch` (0: never
    /// ejected); an atomic, so that selection reads it without taking a lock.
    ejected_until_nanos: AtomicU64,
    epoch: Instant,
    queue: Mutex<Option<QueueDepth>>,
    /// Woken when the active checks take the upstream out, so that attempts
    /// in flight on it move elsewhere at once instead of waiting it out.
    taken_out: tokio::sync::Notify,
    /// Whether its last sign was of a cold worker (a 204, or a RunPod queue
    /// with no worker up): read by every selection, so an atomic.
    cold: AtomicBool,
    /// The cold start under way, until its first answer.
    cold_start: Mutex<Option<ColdStart>>,
    /// Whether its latency estimate crossed `pool.spill_latency` and has not
    /// yet come back under the hysteresis mark.
    pub(super) slow: AtomicBool,
    pub(super) totals: Totals,
    /// Time to first token of its streams, smoothed (microseconds; 0: none yet).
    ttft_micros: AtomicU64,
    /// What the last 15 minutes looked like, sampled by [`Upstream::sample_history`].
    history: Mutex<std::collections::VecDeque<HistorySample>>,
}

/// A cold start being timed: from the first sign of a cold worker, or from
/// the first request sent while it was cold when that came later (a RunPod
/// queue at zero workers starts one only when a job arrives).
#[derive(Debug, Clone, Copy)]
struct ColdStart {
    since: Instant,
    waited_from: Option<Instant>,
}

/// What an upstream did since it joined (kept across reloads), for `/status`
/// and `/ui`.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub attempts: AtomicU64,
    /// Attempts that ended in anything but an answer or a client leaving.
    pub errors: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Dollars, in billionths: an integer adds up exactly and atomically.
    pub cost_nano_usd: AtomicU64,
}

/// One point of an upstream's recent history.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct HistorySample {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// Attempts and errors so far (differences give rates and shares).
    pub attempts: u64,
    pub errors: u64,
    pub in_flight: u64,
    pub latency_ms: f64,
    pub routable: bool,
    /// Whether a health check had finished (before the first, not routable
    /// says nothing).
    pub checked: bool,
    pub cost_usd: f64,
}

/// How long the history reaches back, and how often it is sampled: 180
/// samples per upstream.
pub const HISTORY_SPAN: std::time::Duration = std::time::Duration::from_secs(15 * 60);
pub const HISTORY_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const HISTORY_LEN: usize = (HISTORY_SPAN.as_secs() / HISTORY_EVERY.as_secs()) as usize;

/// An upstream's totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TotalsNow {
    pub attempts: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// What real requests taught us about an upstream.
#[derive(Debug)]
pub(super) struct LoadState {
    pub latency: PeakEwma,
    pub consecutive_failures: u32,
    /// Ejections without a success in between; each one doubles the next cooldown.
    pub ejections_in_row: u32,
    pub ejections_total: u64,
    pub last_error: Option<ErrorRecord>,
}

impl std::fmt::Debug for Upstream {
    // Written by hand so that the key can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base", &self.base.origin())
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Whether `other` is the same endpoint (name, address, health check), so
    /// that it may carry on with this one's state after a reload.
    pub fn same_endpoint(&self, other: &Upstream) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.base == other.base
            && self.health_target == other.health_target
    }

    /// Takes over `previous`'s live state (health, latency, ejection, load).
    pub fn carry_on_from(&mut self, previous: &Upstream) {
        self.shared = previous.shared.clone();
    }

    /// Builds an upstream from a validated configuration entry.
    pub fn from_config(index: usize, up: &UpstreamConfig, config: &Config) -> Result<Self, String> {
        // vLLM and RunPod load-balancing workers answer `/ping` on their own host.
        let ping_at = |base: &BaseUrl| HealthTarget {
            url: BaseUrl {
                path: config.health_check.path.clone(),
                ..base.clone()
            },
            contract: ProbeContract::Ping,
        };
        let (kind, base, health_target) = match (
            &up.runpod_endpoint_id,
            &up.base_url,
            &up.runpod_lb_endpoint_id,
        ) {
            (None, None, Some(id)) => {
                let base = parse_base_url(&format!("https://{id}.api.runpod.ai/v1"))?;
                let health = ping_at(&base);
                (
                    UpstreamKind::RunPodLoadBalancer {
                        endpoint_id: id.clone(),
                    },
                    base,
                    health,
                )
            }
            (Some(id), _, _) => {
                let api = parse_base_url(&config.runpod_api_base)?;
                let base = BaseUrl {
                    path: format!("{}/v2/{id}/openai/v1", api.path),
                    ..api.clone()
                };
                let health = HealthTarget {
                    url: BaseUrl {
                        path: format!("{}/v2/{id}/health", api.path),
                        ..api
                    },
                    contract: ProbeContract::RunPodHealth,
                };
                (
                    UpstreamKind::RunPodQueue {
                        endpoint_id: id.clone(),
                    },
                    base,
                    health,
                )
            }
            (None, Some(url), _) => {
                let base = parse_base_url(url)?;
                let health = ping_at(&base);
                (UpstreamKind::OpenAi, base, health)
            }
            (None, None, None) => return Err(format!("upstream {:?} has no address", up.name)),
        };
        let health_target = match &up.health_url {
            Some(url) => HealthTarget {
                url: parse_base_url(url)?,
                contract: ProbeContract::Ping,
            },
            None => health_target,
        };
        let literal = |url: &BaseUrl| match url.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, url.port)],
            Err(_) => Vec::new(),
        };
        let probe_gets_key =
            health_target.url.origin() == base.origin() || up.send_key_to_health_url;
        let addresses = literal(&base);
        let health_addresses = literal(&health_target.url);
        Ok(Upstream {
            index,
            series: Default::default(),
            name: up.name.clone(),
            kind,
            base,
            health_target,
            model: up
                .model
                .clone()
                .unwrap_or_else(|| config.research.model.clone()),
            weight: up.weight,
            configured_models: {
                let mut models = up.models.clone();
                if let Some(m) = &up.model
                    && !models.contains(m)
                {
                    models.push(m.clone());
                }
                models
            },
            authorization: up
                .api_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(|k| format!("Bearer {k}")),
            max_concurrent: up.max_concurrent,
            tier: up.tier,
            pricing: up.pricing,
            probe_gets_key,
            shared: Arc::new(UpstreamState {
                discovered_models: RwLock::new(Vec::new()),
                addresses: RwLock::new(addresses),
                health_addresses: RwLock::new(health_addresses),
                health: AtomicU8::new(Health::Unknown as u8),
                streaks: Mutex::new(Streaks::default()),
                in_flight: AtomicU64::new(0),
                load: Mutex::new(LoadState {
                    latency: PeakEwma::new(config.pool.initial_latency, Instant::now()),
                    consecutive_failures: 0,
                    ejections_in_row: 0,
                    ejections_total: 0,
                    last_error: None,
                }),
                queue: Mutex::new(None),
                ejected_until_nanos: AtomicU64::new(0),
                epoch: Instant::now(),
                taken_out: tokio::sync::Notify::new(),
                cold: AtomicBool::new(false),
                cold_start: Mutex::new(None),
                slow: AtomicBool::new(false),
                totals: Totals::default(),
                ttft_micros: AtomicU64::new(0),
                history: Mutex::new(std::collections::VecDeque::with_capacity(HISTORY_LEN)),
            }),
        })
    }

    /// The `Authorization` header value for this upstream, if it has a key.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// The `Authorization` value for a health probe: the key goes to the API's
    /// own origin only, unless `send_key_to_health_url` says otherwise.
    pub fn probe_authorization(&self) -> Option<&str> {
        self.probe_gets_key
            .then_some(())
            .and(self.authorization.as_deref())
    }

    /// Completes when the active checks next take this upstream out (create
    /// and enable it before the work it is to interrupt begins).
    pub fn taken_out(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.taken_out.notified()
    }

    /// The key itself, so that error texts can be scrubbed of it.
    pub fn api_key(&self) -> Option<&str> {
        self.authorization.as_deref().map(|a| &a["Bearer ".len()..])
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.shared.health.load(Ordering::Acquire))
    }

    /// Passed its active checks.
    pub fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }

    /// Whether it may take one more request under its `max_concurrent`.
    pub fn has_room(&self) -> bool {
        self.max_concurrent == 0 || self.in_flight() < self.max_concurrent
    }

    /// Requests being served by this upstream now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn load(&self) -> std::sync::MutexGuard<'_, LoadState> {
        match self.shared.load.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// When passive ejection ends, if the upstream is ejected at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        match self.shared.ejected_until_nanos.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.shared.epoch + std::time::Duration::from_nanos(nanos))
                .filter(|t| *t > now),
        }
    }

    /// Ejects until `until` (called by the pool with the load lock held, so
    /// that deciding to eject and ejecting are one step).
    pub(super) fn set_ejected_until(&self, until: Instant) {
        let nanos = until
            .saturating_duration_since(self.shared.epoch)
            .as_nanos();
        self.shared.ejected_until_nanos.store(
            u64::try_from(nanos).unwrap_or(u64::MAX).max(1),
            Ordering::Release,
        );
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u64 {
        self.load().ejections_total
    }

    /// The last failure of a real request.
    pub fn last_error(&self) -> Option<ErrorRecord> {
        self.load().last_error.clone()
    }

    /// Whether any real request has finished here yet.
    pub fn has_latency_sample(&self) -> bool {
        self.load().latency.is_sampled()
    }

    /// The latency estimate at `now`, if any sample was taken (one lock).
    pub fn sampled_latency(
        &self,
        now: Instant,
        decay: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let load = self.load();
        load.latency
            .is_sampled()
            .then(|| load.latency.estimate(now, decay))
    }

    /// The latency estimate at `now`.
    pub fn latency_estimate(
        &self,
        now: Instant,
        decay: std::time::Duration,
    ) -> std::time::Duration {
        self.load().latency.estimate(now, decay)
    }

    /// Every model this upstream is known to serve; empty when unknown.
    pub fn served_models(&self) -> Vec<String> {
        let mut models = self.configured_models.clone();
        if let Ok(found) = self.shared.discovered_models.read() {
            for m in found.iter() {
                if !models.contains(m) {
                    models.push(m.clone());
                }
            }
        }
        models
    }

    /// Whether the models this upstream serves are unknown: then it is taken
    /// to serve whatever it is asked for.
    pub fn serves_anything(&self) -> bool {
        self.configured_models.is_empty()
            && self
                .shared
                .discovered_models
                .read()
                .map_or(true, |d| d.is_empty())
    }

    /// Whether the configuration or discovery names `model` for this
    /// upstream. Asked on every OpenAI request, so it copies nothing.
    pub fn knows_model(&self, model: &str) -> bool {
        self.configured_models.iter().any(|m| m == model)
            || self
                .shared
                .discovered_models
                .read()
                .is_ok_and(|found| found.iter().any(|m| m == model))
    }

    /// Whether a request for `model` can go here: it is known to serve it, or
    /// its models are unknown.
    pub fn serves(&self, model: &str) -> bool {
        self.knows_model(model) || self.serves_anything()
    }

    /// Records what `/v1/models` listed.
    pub fn set_discovered_models(&self, models: Vec<String>) {
        if let Ok(mut d) = self.shared.discovered_models.write() {
            *d = models;
        }
    }

    /// Whether asking `/v1/models` costs nothing: never through RunPod's
    /// queue, where it is a billed job that needs a worker.
    pub fn can_discover_models(&self) -> bool {
        !matches!(self.kind, UpstreamKind::RunPodQueue { .. })
    }

    /// Queue depth from the last RunPod `/health`, for queue endpoints.
    pub fn queue_depth(&self) -> Option<QueueDepth> {
        self.shared.queue.lock().ok().and_then(|q| *q)
    }

    pub fn set_queue_depth(&self, depth: Option<QueueDepth>) {
        if let Ok(mut q) = self.shared.queue.lock() {
            *q = depth;
        }
    }

    /// The address to connect to: the first resolved one.
    pub fn address(&self) -> Option<SocketAddr> {
        self.shared
            .addresses
            .read()
            .ok()
            .and_then(|a| a.first().copied())
    }

    /// Whether the host is a name that needs resolving (rather than an IP literal).
    pub fn needs_resolution(&self) -> bool {
        self.base.host.parse::<IpAddr>().is_err()
    }

    pub fn set_addresses(&self, addresses: Vec<SocketAddr>) {
        if let Ok(mut a) = self.shared.addresses.write() {
            *a = addresses;
        }
    }

    /// Whether the health target is on another host or port than the API
    /// (a `health_url` elsewhere), and so has addresses of its own.
    pub fn health_is_elsewhere(&self) -> bool {
        let target = &self.health_target.url;
        (target.host.as_str(), target.port) != (self.base.host.as_str(), self.base.port)
    }

    /// Whether the health target's host is a name to resolve on its own.
    pub fn health_needs_resolution(&self) -> bool {
        self.health_is_elsewhere() && self.health_target.url.host.parse::<IpAddr>().is_err()
    }

    /// The address health probes connect to.
    pub fn health_address(&self) -> Option<SocketAddr> {
        if self.health_is_elsewhere() {
            self.shared
                .health_addresses
                .read()
                .ok()
                .and_then(|a| a.first().copied())
        } else {
            self.address()
        }
    }

    pub fn set_health_addresses(&self, addresses: Vec<SocketAddr>) {
        if let Ok(mut a) = self.shared.health_addresses.write() {
            *a = addresses;
        }
    }

    /// Whether its last sign was of a cold worker: then it is chosen only
    /// when no warm upstream has room.
    pub fn is_cold(&self) -> bool {
        self.shared.cold.load(Ordering::Relaxed)
    }

    /// A sign of a cold worker (a 204, a queue with no worker up): a cold
    /// start begins, unless one is already being timed.
    pub fn cold_sign(&self, now: Instant) {
        self.shared.cold.store(true, Ordering::Relaxed);
        let mut cold = lock(&self.shared.cold_start);
        cold.get_or_insert(ColdStart {
            since: now,
            waited_from: None,
        });
    }

    /// A sign of a warm worker from the health checks: no longer avoided.
    /// A cold start that no request waited for ends here (a worker that
    /// loaded on its own: 204, then 200) and its length is returned; one a
    /// request waits for ends with that request's answer.
    pub fn warm_sign(&self, now: Instant) -> Option<std::time::Duration> {
        self.shared.cold.store(false, Ordering::Relaxed);
        let mut cold = lock(&self.shared.cold_start);
        match *cold {
            Some(ColdStart {
                since,
                waited_from: None,
            }) => {
                *cold = None;
                Some(now.saturating_duration_since(since))
            }
            _ => None,
        }
    }

    /// An attempt begins: when the upstream is cold, its cold start is timed
    /// from now if it began earlier (the worker starts for this job).
    pub(super) fn attempt_begins(&self, now: Instant) {
        if !self.is_cold() {
            return;
        }
        if let Some(cold) = lock(&self.shared.cold_start).as_mut() {
            cold.waited_from.get_or_insert(now);
        }
    }

    /// A good answer: the end of a cold start a request waited for, whose
    /// length is returned.
    pub(super) fn answered(&self, now: Instant) -> Option<std::time::Duration> {
        let mut cold = lock(&self.shared.cold_start);
        let start = (*cold)?;
        let waited_from = start.waited_from?;
        *cold = None;
        self.shared.cold.store(false, Ordering::Relaxed);
        Some(now.saturating_duration_since(start.since.max(waited_from)))
    }

    /// Adds `usd` to its cost.
    pub(super) fn add_cost(&self, usd: f64) {
        let nanos = (usd * 1e9).round();
        if nanos >= 1.0 {
            self.shared
                .totals
                .cost_nano_usd
                .fetch_add(nanos as u64, Ordering::Relaxed);
        }
    }

    /// Folds a stream's time to first token into its smoothed figure (a
    /// fifth of each new one: it shows where streams start, not one outlier).
    pub fn observe_time_to_first_token(&self, ttft: std::time::Duration) {
        let sample = (ttft.as_micros() as u64).max(1);
        let old = self.shared.ttft_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 4 + sample) / 5
        };
        self.shared.ttft_micros.store(new, Ordering::Relaxed);
    }

    /// The smoothed time to first token, once a stream started here.
    pub fn time_to_first_token(&self) -> Option<std::time::Duration> {
        match self.shared.ttft_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(std::time::Duration::from_micros(micros)),
        }
    }

    /// Whether it counts as slow for `pool.spill_latency` (its tier then
    /// spills to the next).
    pub fn is_slow(&self) -> bool {
        self.shared.slow.load(Ordering::Relaxed)
    }

    /// Attempts in the last `window`, by its history (the oldest point when
    /// the history is shorter): what `/status` turns into shares.
    pub fn attempts_within(&self, window: std::time::Duration, now_secs: u64) -> u64 {
        let current = self.shared.totals.attempts.load(Ordering::Relaxed);
        let history = lock(&self.shared.history);
        let since = now_secs.saturating_sub(window.as_secs());
        let base = history
            .iter()
            .rev()
            .find(|s| s.at <= since)
            .or_else(|| history.front())
            .map_or(current, |s| s.attempts);
        current.saturating_sub(base)
    }

    /// Counts one attempt in its totals.
    pub(super) fn count_attempt(&self, failed: bool) {
        let t = &self.shared.totals;
        t.attempts.fetch_add(1, Ordering::Relaxed);
        if failed {
            t.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn count_tokens(&self, prompt: u64, completion: u64) {
        let t = &self.shared.totals;
        t.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        t.completion_tokens.fetch_add(completion, Ordering::Relaxed);
    }

    /// Its totals so far.
    pub fn totals(&self) -> TotalsNow {
        let t = &self.shared.totals;
        TotalsNow {
            attempts: t.attempts.load(Ordering::Relaxed),
            errors: t.errors.load(Ordering::Relaxed),
            prompt_tokens: t.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: t.completion_tokens.load(Ordering::Relaxed),
            cost_usd: t.cost_nano_usd.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Appends one history point, dropping the oldest past 15 minutes.
    pub fn sample_history(&self, at: u64, latency_ms: f64, routable: bool) {
        let totals = self.totals();
        let mut history = lock(&self.shared.history);
        if history.len() == HISTORY_LEN {
            history.pop_front();
        }
        history.push_back(HistorySample {
            at,
            attempts: totals.attempts,
            errors: totals.errors,
            in_flight: self.in_flight(),
            latency_ms,
            routable,
            checked: self.health() != Health::Unknown,
            cost_usd: totals.cost_usd,
        });
    }

    /// The history, oldest first.
    pub fn history(&self) -> Vec<HistorySample> {
        lock(&self.shared.history).iter().copied().collect()
    }

    /// The last active check, if any finished.
    pub fn last_check(&self) -> Option<CheckRecord> {
        self.shared.streaks.lock().ok().and_then(|s| s.last.clone())
    }

    /// Records one active check and flips the state once `healthy_threshold`
    /// successes or `unhealthy_threshold` failures came in a row, so that one lost
    /// probe does not drain an upstream. The first check after start decides at
    /// once, and a 204 takes effect at once: the upstream said it is not ready.
    /// Returns the new state when it changed.
    pub fn observe_check(
        &self,
        outcome: CheckOutcome,
        detail: String,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<Health> {
        let mut streaks = match self.shared.streaks.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        match outcome {
            CheckOutcome::Up => {
                streaks.ok += 1;
                streaks.failed = 0;
            }
            CheckOutcome::Down => {
                streaks.failed += 1;
                streaks.ok = 0;
            }
            CheckOutcome::Initializing => {
                streaks.ok = 0;
                streaks.failed = 0;
            }
        }
        streaks.last = Some(CheckRecord {
            at: SystemTime::now(),
            outcome,
            detail,
        });
        let current = self.health();
        let next = match (current, outcome) {
            (_, CheckOutcome::Initializing) => Health::Initializing,
            (Health::Unknown | Health::Initializing, CheckOutcome::Up) => Health::Healthy,
            (Health::Unknown | Health::Initializing, CheckOutcome::Down) => Health::Unhealthy,
            (Health::Healthy, CheckOutcome::Down) if streaks.failed >= unhealthy_threshold => {
                Health::Unhealthy
            }
            (Health::Unhealthy, CheckOutcome::Up) if streaks.ok >= healthy_threshold => {
                Health::Healthy
            }
            (state, _) => state,
        };
        if next != current {
            self.shared.health.store(next as u8, Ordering::Release);
            if next == Health::Unhealthy {
                self.shared.taken_out.notify_waiters();
                self.load().latency.forget();
            }
            Some(next)
        } else {
            None
        }
    }
}

/// A lock whose holder panicked is still usable: what it guards is counters.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_balancing_endpoints_and_health_url_overrides() {
        let config = Config::default();
        let up = UpstreamConfig {
            name: "lb".into(),
            runpod_lb_endpoint_id: Some("xyz".into()),
            api_key: Some("k".into()),
            ..Default::default()
        };
        let u = Upstream::from_config(0, &up, &config).unwrap();
        assert_eq!(u.base.origin(), "https://xyz.api.runpod.ai");
        assert_eq!(u.base.path, "/v1");
        assert_eq!(u.health_target.url.path, "/ping");
        assert_eq!(u.health_target.contract, ProbeContract::Ping);
        let up = UpstreamConfig {
            name: "box".into(),
            base_url: Some("http://10.0.0.1:8000/v1".into()),
            health_url: Some("http://10.0.0.1:9000/healthz".into()),
            ..Default::default()
        };
        let u = Upstream::from_config(0, &up, &config).unwrap();
        assert_eq!(u.health_target.url.origin(), "http://10.0.0.1:9000");
        assert_eq!(u.health_target.url.path, "/healthz");
    }

    fn upstream() -> Upstream {
        let config = Config::default();
        let up = UpstreamConfig {
            name: "a".into(),
            base_url: Some("http://127.0.0.1:9/v1".into()),
            api_key: Some("sk-secret".into()),
            ..Default::default()
        };
        Upstream::from_config(0, &up, &config).unwrap()
    }

    #[test]
    fn thresholds_flip_state_only_after_streaks() {
        let u = upstream();
        assert_eq!(u.health(), Health::Unknown);
        assert_eq!(
            u.observe_check(CheckOutcome::Up, "200".into(), 2, 3),
            Some(Health::Healthy)
        );
        assert_eq!(
            u.observe_check(CheckOutcome::Down, "503".into(), 2, 3),
            None
        );
        assert_eq!(
            u.observe_check(CheckOutcome::Down, "503".into(), 2, 3),
            None
        );
        assert_eq!(u.observe_check(CheckOutcome::Up, "200".into(), 2, 3), None);
        assert_eq!(
            u.observe_check(CheckOutcome::Down, "503".into(), 2, 3),
            None
        );
        assert_eq!(
            u.observe_check(CheckOutcome::Down, "503".into(), 2, 3),
            None
        );
        assert_eq!(
            u.observe_check(CheckOutcome::Down, "503".into(), 2, 3),
            Some(Health::Unhealthy)
        );
        assert_eq!(u.observe_check(CheckOutcome::Up, "200".into(), 2, 3), None);
        assert_eq!(
            u.observe_check(CheckOutcome::Up, "200".into(), 2, 3),
            Some(Health::Healthy)
        );
        assert_eq!(
            u.observe_check(CheckOutcome::Initializing, "204".into(), 2, 3),
            Some(Health::Initializing)
        );
        assert!(!u.is_healthy());
        assert_eq!(u.last_check().unwrap().detail, "204");
    }

    #[test]
    fn key_is_kept_as_a_header_and_ip_hosts_need_no_resolution() {
        let u = upstream();
        assert_eq!(u.authorization(), Some("Bearer sk-secret"));
        assert_eq!(u.api_key(), Some("sk-secret"));
        assert!(!u.needs_resolution());
        assert_eq!(u.address(), Some("127.0.0.1:9".parse().unwrap()));
        assert!(!format!("{:?}", u.health_target).contains("sk-secret"));
        assert!(!format!("{u:?}").contains("sk-secret"));
    }

    #[test]
    fn runpod_endpoints_use_the_api_host_and_its_health_route() {
        let config = Config {
            runpod_api_base: "http://127.0.0.1:7000".into(),
            ..Config::default()
        };
        let up = UpstreamConfig {
            name: "rp".into(),
            runpod_endpoint_id: Some("abc123".into()),
            api_key: Some("k".into()),
            ..Default::default()
        };
        let u = Upstream::from_config(0, &up, &config).unwrap();
        assert_eq!(u.base.path, "/v2/abc123/openai/v1");
        assert_eq!(u.health_target.url.path, "/v2/abc123/health");
        assert_eq!(u.health_target.contract, ProbeContract::RunPodHealth);
        assert_eq!(u.model, crate::config::DEFAULT_RESEARCH_MODEL);
    }
}
