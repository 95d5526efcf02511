//! The upstream pool: the endpoints, their health and load, and the choice of
//! which one serves the next attempt. Nothing here needs a running proxy, and
//! every time-based rule reads `tokio::time::Instant`, so tests can pause time.
//!
//! Selection is power of two choices (P2C) over routable upstreams: two are
//! compared and the cheaper one wins, with cost = Peak-EWMA latency ×
//! (1 + in_flight_weight × (in-flight + queued jobs per worker)) ÷ weight.
//! Classic Peak-EWMA counts each request in flight as a whole extra request
//! (weight 1); vLLM decodes its running requests as one batch, so each adds
//! only a fraction of a request's latency (default 0.25), and the fastest
//! upstream keeps its traffic at moderate concurrency.
//! By default one of the two is the last winner and the other is drawn at
//! random ("P2C with memory", Shah and Prabhakar): with plain P2C and three
//! upstreams the pair without the best one comes up a third of the time, so
//! the second best gets a third of the traffic however slow it is; with
//! memory the best keeps winning until its in-flight count makes a random
//! challenger cheaper, and every upstream is still compared regularly.
//! Routable means: passed its active checks and not passively ejected.

pub mod budget;
pub mod call;
pub mod ewma;
pub mod health;
pub mod upstream;

pub use budget::RetryBudget;
pub use upstream::{
    CheckOutcome, CheckRecord, ErrorRecord, HISTORY_EVERY, HISTORY_SPAN, Health, HealthTarget,
    HistorySample, ProbeContract, QueueDepth, TotalsNow, Upstream, UpstreamKind,
};

use crate::config::{Config, EjectionConfig, HealthCheckConfig, PoolConfig, Strategy};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// An upstream whose configuration entry cannot be put to work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolError {
    /// The upstream's `name`.
    pub upstream: String,
    pub why: String,
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream {}: {}", self.upstream, self.why)
    }
}

/// Why no upstream could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoUpstream {
    /// The configuration has no upstream at all.
    NoneConfigured,
    /// Every upstream failed its checks, or was already tried for this request.
    NoneHealthy,
    /// Healthy upstreams are left, but each has its `max_concurrent` requests.
    AllBusy,
}

/// Why an upstream was chosen: the `reason` label of the selections metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Reason {
    /// The cheaper of two random routable upstreams.
    PowerOfTwo,
    /// The only routable upstream left.
    OnlyCandidate,
    /// Plain rotation (the round-robin strategy).
    RoundRobin,
    /// No check has finished yet; an upstream of unknown health was used.
    UnknownHealth,
    /// Every healthy upstream was ejected: the one whose ejection ends first.
    AllEjected,
    /// A higher tier than the lowest one eligible, because the lower tiers
    /// were full, slow, cold or down.
    Spill,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::PowerOfTwo,
        Reason::OnlyCandidate,
        Reason::RoundRobin,
        Reason::UnknownHealth,
        Reason::AllEjected,
        Reason::Spill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PowerOfTwo => "p2c",
            Reason::OnlyCandidate => "only_candidate",
            Reason::RoundRobin => "round_robin",
            Reason::UnknownHealth => "unknown_health",
            Reason::AllEjected => "all_ejected",
            Reason::Spill => "spill",
        }
    }
}

/// How an attempt ended, from the upstream's point of view.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The upstream answered well; the sample is its latency signal.
    Success(Duration),
    /// The upstream answered, but the request was at fault (a 400, say): no
    /// latency sample and no failure.
    Neutral,
    /// Connect error, broken connection, timeout, 5xx, or an answer that says
    /// the upstream is misconfigured (401, 403, 404).
    Failure(String),
    /// 429: ejected for `Retry-After` (capped), or the base cooldown.
    RateLimited(Option<Duration>),
}

/// All upstreams and the selection over them.
pub struct Pool {
    upstreams: Vec<Arc<Upstream>>,
    settings: PoolConfig,
    ejection: EjectionConfig,
    next: AtomicUsize,
    /// Index + 1 of the last P2C winner (0: none yet), the remembered candidate.
    best: AtomicUsize,
    metrics: Arc<Metrics>,
    /// Selection counters per upstream and reason, resolved once so that the
    /// request path does no label lookup.
    selections: Vec<[prometheus::IntCounter; Reason::ALL.len()]>,
    /// Shared by every route, so retries are bounded for the gateway as a whole.
    budget: RetryBudget,
    max_attempts: usize,
    health: HealthCheckConfig,
    connect_timeout: Duration,
    /// Whether the upstreams are in more than one tier (else no selection
    /// is a spill, and none looks for one).
    tiered: bool,
    /// Whether an upstream prices tokens, so streams must ask for usage.
    prices_tokens: bool,
}

/// Why a request gets no further attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    NoneConfigured,
    /// No eligible upstream is left: unhealthy, initializing, or tried.
    NoneHealthy,
    /// The eligible upstreams are all at their `max_concurrent` limit.
    AllBusy,
    /// `retries.max_attempts` reached.
    AttemptsExhausted,
    /// The retry budget is spent.
    BudgetSpent,
}

/// A slow upstream counts as fast again once its estimate is under this
/// share of `pool.spill_latency`.
pub const SPILL_HYSTERESIS: f64 = 0.8;

/// The upstreams a selection is made among: warm or cold, and one tier.
#[derive(Debug, Clone, Copy)]
struct Class {
    cold: bool,
    tier: u32,
}

impl Class {
    fn holds(self, u: &Upstream) -> bool {
        u.is_cold() == self.cold && u.tier == self.tier
    }
}

impl Pool {
    /// Builds the pool from a validated configuration.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Result<Pool, PoolError> {
        Pool::from_config_after(config, metrics, None)
    }

    /// Builds the pool for a reloaded configuration: an upstream that is the
    /// same endpoint as one of `previous` (name, address, health check) carries
    /// on with its health, latency estimate, ejection and in-flight count.
    pub fn from_config_after(
        config: &Config,
        metrics: Arc<Metrics>,
        previous: Option<&Pool>,
    ) -> Result<Pool, PoolError> {
        let upstreams = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, up)| {
                let mut upstream =
                    Upstream::from_config(i, up, config).map_err(|why| PoolError {
                        upstream: up.name.clone(),
                        why,
                    })?;
                if let Some(old) = previous
                    .into_iter()
                    .flat_map(|p| p.upstreams.iter())
                    .find(|old| old.same_endpoint(&upstream))
                {
                    upstream.carry_on_from(old);
                }
                Ok(Arc::new(upstream))
            })
            .collect::<Result<Vec<_>, PoolError>>()?;
        let selections = upstreams
            .iter()
            .map(|u| {
                Reason::ALL.map(|r| {
                    metrics
                        .upstream_selections
                        .with_label_values(&[&u.name, r.as_str()])
                })
            })
            .collect();
        Ok(Pool {
            selections,
            budget: RetryBudget::new(
                config.retries.budget_ratio,
                config.retries.budget_min_per_second,
            ),
            max_attempts: config.retries.max_attempts as usize,
            health: config.health_check.clone(),
            connect_timeout: config.timeouts.connect,
            settings: config.pool.clone(),
            ejection: config.ejection.clone(),
            next: AtomicUsize::new(0),
            best: AtomicUsize::new(0),
            tiered: upstreams.iter().any(|u| u.tier != upstreams[0].tier),
            prices_tokens: upstreams
                .iter()
                .any(|u| u.pricing.is_some_and(|p| p.prices_tokens())),
            upstreams,
            metrics,
        })
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    pub fn settings(&self) -> &PoolConfig {
        &self.settings
    }

    pub fn health_config(&self) -> &HealthCheckConfig {
        &self.health
    }

    /// `timeouts.connect`: the limit on each new upstream connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// Selections of `u` that spilled from a lower tier, so far.
    pub fn spilled_to(&self, u: &Upstream) -> u64 {
        self.selections
            .get(u.index)
            .map_or(0, |s| s[Reason::Spill as usize].get())
    }

    /// Whether any upstream has token prices (see `Pricing::prices_tokens`).
    pub fn prices_tokens(&self) -> bool {
        self.prices_tokens
    }

    pub fn healthy_count(&self) -> usize {
        self.upstreams.iter().filter(|u| u.is_healthy()).count()
    }

    /// Healthy and not ejected.
    pub fn routable_count(&self) -> usize {
        let now = Instant::now();
        self.upstreams
            .iter()
            .filter(|u| u.is_healthy() && u.ejected_until(now).is_none())
            .count()
    }

    /// Whether the first round of active checks is still running everywhere.
    pub fn initializing(&self) -> bool {
        !self.upstreams.is_empty() && self.upstreams.iter().all(|u| u.last_check().is_none())
    }

    /// Chooses the upstream for the next attempt, skipping the ones in `tried`.
    ///
    /// Healthy, non-ejected upstreams first: of those, warm before cold (a
    /// RunPod queue with no worker up is used only when no warm upstream has
    /// room), then the lowest tier with one that is not slow, then the
    /// lowest tier (see [`Pool::preferred`]). When there is none: an upstream
    /// whose first check has not finished (just after start), then the
    /// ejected upstream whose ejection ends first, so that a burst of
    /// failures never turns into refusing everything. Unhealthy and
    /// initializing upstreams are never chosen.
    pub fn select(&self, tried: &[usize]) -> Result<Arc<Upstream>, NoUpstream> {
        self.select_where(tried, &|_| true)
    }

    /// [`Pool::select`] among the upstreams `eligible` accepts (those serving
    /// a model, say).
    pub fn select_where(
        &self,
        tried: &[usize],
        eligible: &dyn Fn(&Upstream) -> bool,
    ) -> Result<Arc<Upstream>, NoUpstream> {
        if self.upstreams.is_empty() {
            return Err(NoUpstream::NoneConfigured);
        }
        let now = Instant::now();
        let open = |u: &Upstream| {
            !tried.contains(&u.index)
                && u.ejected_until(now).is_none()
                && u.has_room()
                && eligible(u)
        };
        let routable = |u: &Upstream| u.is_healthy() && open(u);
        let chosen = match self.preferred(now, &routable) {
            Some(class) => self.choose(now, |u| routable(u) && class.holds(u)),
            None => None,
        }
        .or_else(|| {
            self.choose(now, |u| u.health() == Health::Unknown && open(u))
                .map(|(u, _)| (u, Reason::UnknownHealth))
        })
        .or_else(|| self.least_ejected(now, tried, eligible));
        let Some((upstream, mut reason)) = chosen else {
            let busy = self.upstreams.iter().any(|u| {
                !tried.contains(&u.index) && u.is_healthy() && !u.has_room() && eligible(u)
            });
            return Err(if busy {
                NoUpstream::AllBusy
            } else {
                NoUpstream::NoneHealthy
            });
        };
        if self.tiered
            && self
                .upstreams
                .iter()
                .any(|u| u.tier < upstream.tier && eligible(u))
        {
            reason = Reason::Spill;
        }
        self.selections[upstream.index][reason as usize].inc();
        Ok(upstream)
    }

    /// Which of the routable upstreams the next request goes among: warm
    /// ones before cold ones, and of those the lowest tier that has one that
    /// is not slow, else the lowest tier. `None` when none is routable.
    fn preferred(&self, now: Instant, routable: &dyn Fn(&Upstream) -> bool) -> Option<Class> {
        let mut best: Option<(bool, bool, u32)> = None;
        for u in self.upstreams.iter().filter(|u| routable(u)) {
            // Ordered: warm first, then not slow, then the lower tier.
            let key = (u.is_cold(), self.is_slow(u, now), u.tier);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        best.map(|(cold, _, tier)| Class { cold, tier })
    }

    /// Whether `u`'s estimate crossed `pool.spill_latency` and has not come
    /// back under 80 % of it since (so a tier does not flap in and out).
    fn is_slow(&self, u: &Upstream, now: Instant) -> bool {
        let Some(limit) = self.settings.spill_latency else {
            return false;
        };
        let Some(estimate) = u.sampled_latency(now, self.settings.decay) else {
            return false;
        };
        let was_slow = u.shared.slow.load(Ordering::Relaxed);
        let slow = if was_slow {
            estimate.as_secs_f64() >= limit.as_secs_f64() * SPILL_HYSTERESIS
        } else {
            estimate >= limit
        };
        if slow != was_slow {
            u.shared.slow.store(slow, Ordering::Relaxed);
        }
        slow
    }

    fn choose(
        &self,
        now: Instant,
        accept: impl Fn(&Upstream) -> bool,
    ) -> Option<(Arc<Upstream>, Reason)> {
        match self.settings.strategy {
            Strategy::RoundRobin => {
                let n = self.upstreams.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|offset| &self.upstreams[(start + offset) % n])
                    .find(|u| accept(u))
                    .map(|u| (u.clone(), Reason::RoundRobin))
            }
            Strategy::PeakEwma => {
                let remembered = self
                    .best
                    .load(Ordering::Relaxed)
                    .checked_sub(1)
                    .and_then(|i| self.upstreams.get(i))
                    .filter(|u| self.settings.remember_best && accept(u));
                // The remembered winner against one random other, or two random
                // ones, drawn uniformly without allocating.
                let a = remembered.or_else(|| self.random_accepted(&accept, None));
                let b = a.and_then(|a| self.random_accepted(&accept, Some(a.index)));
                let chosen = match (a, b) {
                    (Some(a), None) => Some((a.clone(), Reason::OnlyCandidate)),
                    (Some(a), Some(b)) => {
                        let (cost_a, cost_b) = (self.cost(a, now), self.cost(b, now));
                        // A tie goes to an upstream without a sample (a newcomer
                        // starts at the best estimate, and gets the request
                        // that measures it), else either way, so that neither
                        // side is starved by order.
                        let tie = || match (a.has_latency_sample(), b.has_latency_sample()) {
                            (true, false) => true,
                            (false, true) => false,
                            _ => fastrand::bool(),
                        };
                        let winner = if cost_b < cost_a || (cost_b == cost_a && tie()) {
                            b
                        } else {
                            a
                        };
                        log::trace!(
                            "p2c: {} costs {cost_a:.6}, {} costs {cost_b:.6}: {}",
                            a.name,
                            b.name,
                            winner.name
                        );
                        Some((winner.clone(), Reason::PowerOfTwo))
                    }
                    (None, _) => None,
                };
                if let Some((winner, _)) = &chosen {
                    self.best.store(winner.index + 1, Ordering::Relaxed);
                }
                chosen
            }
        }
    }

    /// A uniformly drawn accepted upstream other than `exclude`. A few random
    /// probes find one in constant time while most upstreams are routable; a
    /// single reservoir-sampling pass covers the rest.
    fn random_accepted(
        &self,
        accept: &impl Fn(&Upstream) -> bool,
        exclude: Option<usize>,
    ) -> Option<&Arc<Upstream>> {
        const PROBES: usize = 8;
        let n = self.upstreams.len();
        let wanted = |u: &Upstream| Some(u.index) != exclude && accept(u);
        for _ in 0..PROBES {
            let u = &self.upstreams[fastrand::usize(..n)];
            if wanted(u) {
                return Some(u);
            }
        }
        let mut pick = None;
        for (seen, u) in self.upstreams.iter().filter(|u| wanted(u)).enumerate() {
            if fastrand::usize(..=seen) == 0 {
                pick = Some(u);
            }
        }
        pick
    }

    fn least_ejected(
        &self,
        now: Instant,
        tried: &[usize],
        eligible: &dyn Fn(&Upstream) -> bool,
    ) -> Option<(Arc<Upstream>, Reason)> {
        self.upstreams
            .iter()
            .filter(|u| !tried.contains(&u.index) && u.has_room() && eligible(u))
            .filter(|u| matches!(u.health(), Health::Healthy | Health::Unknown))
            .filter_map(|u| u.ejected_until(now).map(|until| (until, u)))
            .min_by_key(|(until, _)| *until)
            .map(|(_, u)| (u.clone(), Reason::AllEjected))
    }

    /// The cost of sending one more request to `u` now.
    pub fn cost(&self, u: &Upstream, now: Instant) -> f64 {
        let latency = self.latency_estimate(u, now).as_secs_f64();
        let queued = u.queue_depth().map_or(0.0, |q| q.jobs_per_worker());
        let load = u.in_flight() as f64 + queued;
        latency * (1.0 + self.settings.in_flight_weight * load) / u.weight
    }

    /// An upstream's latency estimate. One with no sample yet (new, or back
    /// from being down or ejected) gets the lowest estimate of those that
    /// have one, so that it is tried as soon as it may be the best: with the
    /// mean, a slow upstream's estimate made a fast newcomer look slow, and a
    /// fresh gateway sent most of its first requests to the slow one. With no
    /// sample anywhere it is the configured initial latency.
    pub fn latency_estimate(&self, u: &Upstream, now: Instant) -> Duration {
        let decay = self.settings.decay;
        if let Some(estimate) = u.sampled_latency(now, decay) {
            return estimate;
        }
        self.upstreams
            .iter()
            .filter_map(|o| o.sampled_latency(now, decay))
            .min()
            .unwrap_or(self.settings.initial_latency)
    }

    /// The upstream for a request's next attempt, recorded in `tried`: the
    /// first attempt, or a retry on a different upstream within
    /// `retries.max_attempts` and the retry budget.
    pub fn next_attempt(
        &self,
        tried: &mut Vec<usize>,
        eligible: &dyn Fn(&Upstream) -> bool,
    ) -> Result<Arc<Upstream>, Stop> {
        if tried.len() >= self.max_attempts {
            return Err(Stop::AttemptsExhausted);
        }
        let upstream = self.select_where(tried, eligible).map_err(|e| match e {
            NoUpstream::NoneConfigured => Stop::NoneConfigured,
            NoUpstream::NoneHealthy => Stop::NoneHealthy,
            NoUpstream::AllBusy => Stop::AllBusy,
        })?;
        match tried.last() {
            None => self.budget.record_request(),
            Some(&previous) => self.charge_retry(&self.upstreams[previous])?,
        }
        tried.push(upstream.index);
        Ok(upstream)
    }

    /// A retry after a failed attempt on `previous`: within the retry budget,
    /// counted in `context7_upstream_retries_total`.
    fn charge_retry(&self, previous: &Upstream) -> Result<(), Stop> {
        if !self.budget.try_retry() {
            self.metrics.retry_budget_exhausted.inc();
            return Err(Stop::BudgetSpent);
        }
        self.metrics
            .upstream_retries
            .with_label_values(&[&previous.name])
            .inc();
        Ok(())
    }

    /// Allows a resend to the same `upstream` on a new connection, after a
    /// pooled one it had closed: a retry in the retry budget and the metrics,
    /// but not one of `retries.max_attempts`, which counts upstreams tried (the
    /// stale connection said nothing about this one).
    pub fn resend(&self, upstream: &Upstream) -> Result<(), Stop> {
        self.charge_retry(upstream)
    }

    /// Starts an attempt on `upstream`: counts it in flight until the returned
    /// guard is finished or dropped.
    pub fn begin<'p>(&'p self, upstream: &Arc<Upstream>) -> Attempt<'p> {
        upstream.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        upstream.attempt_begins(Instant::now());
        Attempt {
            pool: self,
            upstream: upstream.clone(),
            started: Instant::now(),
            finished: false,
        }
    }

    fn record(&self, upstream: &Upstream, outcome: Outcome) {
        let now = Instant::now();
        let decay = self.settings.decay;
        let mut load = upstream.load();
        let newly_ejected_for = match outcome {
            Outcome::Success(sample) => {
                load.latency.observe(sample, now, decay);
                load.consecutive_failures = 0;
                load.ejections_in_row = 0;
                if let Some(took) = upstream.answered(now) {
                    count_cold_start(&self.metrics, upstream, took);
                }
                None
            }
            Outcome::Neutral => {
                load.consecutive_failures = 0;
                None
            }
            Outcome::Failure(message) => {
                load.latency
                    .observe(self.settings.failure_penalty, now, decay);
                load.consecutive_failures += 1;
                load.last_error = Some(ErrorRecord {
                    at: SystemTime::now(),
                    message,
                });
                if load.consecutive_failures >= self.ejection.consecutive_failures
                    && upstream.ejected_until(now).is_none()
                {
                    let doubling = 2u32.saturating_pow(load.ejections_in_row.min(16));
                    Some(
                        self.ejection
                            .base_cooldown
                            .saturating_mul(doubling)
                            .min(self.ejection.max_cooldown),
                    )
                } else {
                    None
                }
            }
            Outcome::RateLimited(retry_after) => {
                load.latency
                    .observe(self.settings.failure_penalty, now, decay);
                load.last_error = Some(ErrorRecord {
                    at: SystemTime::now(),
                    message: "429 rate limited".into(),
                });
                Some(
                    retry_after
                        .unwrap_or(self.ejection.base_cooldown)
                        .min(self.ejection.max_retry_after),
                )
            }
        };
        if let Some(cooldown) = newly_ejected_for {
            upstream.set_ejected_until(now + cooldown);
            // Back from its ejection, it starts afresh (see `latency_estimate`).
            load.latency.forget();
            load.ejections_in_row += 1;
            load.ejections_total += 1;
            load.consecutive_failures = 0;
            drop(load);
            self.metrics
                .upstream_ejections
                .with_label_values(&[&upstream.name])
                .inc();
            log::warn!(
                "upstream {} ejected for {}",
                upstream.name,
                humantime::format_duration(cooldown)
            );
        }
    }

    /// Charges `usd` to `upstream`: its total, the cost counter and the
    /// request being served (for the access log).
    pub fn charge(&self, upstream: &Upstream, usd: f64) {
        if usd <= 0.0 || !usd.is_finite() {
            return;
        }
        upstream.add_cost(usd);
        self.metrics.charge(&upstream.series, &upstream.name, usd);
        crate::scope::add_cost(usd);
    }

    /// Appends a point to every upstream's history (see [`HISTORY_EVERY`]).
    pub fn sample_history(&self) {
        let now = Instant::now();
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for u in &self.upstreams {
            let latency_ms = self.latency_estimate(u, now).as_secs_f64() * 1000.0;
            let routable = u.is_healthy() && u.ejected_until(now).is_none();
            u.sample_history(at, latency_ms, routable);
        }
    }

    /// Copies the pool's live figures into the metrics' gauges (at scrape time,
    /// so the request path never pays for them).
    pub fn export_gauges(&self) {
        let now = Instant::now();
        let m = &self.metrics;
        let mut exported = m
            .exported_upstreams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // An upstream a reload removed leaves no gauge behind: a stale
        // `routable 1` would hide the "no routable upstream" alert.
        for gone in exported
            .iter()
            .filter(|name| !self.upstreams.iter().any(|u| &u.name == *name))
        {
            let name = gone.as_str();
            for gauge in [
                &m.upstream_healthy,
                &m.upstream_routable,
                &m.upstream_in_flight,
            ] {
                let _ = gauge.remove_label_values(&[name]);
            }
            let _ = m.upstream_latency_estimate.remove_label_values(&[name]);
            for state in ["in_queue", "in_progress"] {
                let _ = m.upstream_queue_jobs.remove_label_values(&[name, state]);
            }
            for state in ["idle", "running"] {
                let _ = m.upstream_workers.remove_label_values(&[name, state]);
            }
        }
        *exported = self.upstreams.iter().map(|u| u.name.clone()).collect();
        for u in &self.upstreams {
            let name = u.name.as_str();
            m.upstream_healthy
                .with_label_values(&[name])
                .set(i64::from(u.is_healthy()));
            m.upstream_routable
                .with_label_values(&[name])
                .set(i64::from(u.is_healthy() && u.ejected_until(now).is_none()));
            m.upstream_in_flight
                .with_label_values(&[name])
                .set(u.in_flight() as i64);
            m.upstream_latency_estimate
                .with_label_values(&[name])
                .set(self.latency_estimate(u, now).as_secs_f64());
            if let Some(q) = u.queue_depth() {
                for (state, n) in [("in_queue", q.in_queue), ("in_progress", q.in_progress)] {
                    m.upstream_queue_jobs
                        .with_label_values(&[name, state])
                        .set(n as i64);
                }
                for (state, n) in [("idle", q.workers_idle), ("running", q.workers_running)] {
                    m.upstream_workers
                        .with_label_values(&[name, state])
                        .set(n as i64);
                }
            }
        }
    }
}

/// Logs and counts one cold start of `upstream` that took `took`.
fn count_cold_start(metrics: &Metrics, upstream: &Upstream, took: Duration) {
    let shown = Duration::from_millis(took.as_millis() as u64);
    log::info!(
        "upstream {}: cold start took {}",
        upstream.name,
        humantime::format_duration(shown)
    );
    metrics
        .upstream_cold_starts
        .with_label_values(&[&upstream.name])
        .observe(took.as_secs_f64());
}

/// One attempt on one upstream, counted in flight while it lives.
pub struct Attempt<'p> {
    pool: &'p Pool,
    upstream: Arc<Upstream>,
    started: Instant,
    finished: bool,
}

impl Attempt<'_> {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Time since the attempt began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records how the attempt ended and stops counting it in flight.
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        let spent = self.started.elapsed();
        crate::scope::add_upstream_time(spent);
        self.charge_time(spent);
        self.upstream
            .shared
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        self.pool.record(&self.upstream, outcome);
    }

    /// Upstream time is charged however the attempt ended: a serverless
    /// worker is billed for the seconds it worked, answer or not.
    fn charge_time(&self, spent: Duration) {
        if let Some(pricing) = &self.upstream.pricing {
            self.pool
                .charge(&self.upstream, pricing.for_time(spent.as_secs_f64()));
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        // Abandoned (the client went away, or a timeout dropped the future):
        // no sample, since nobody saw the upstream's real latency.
        if !self.finished {
            self.charge_time(self.started.elapsed());
            self.upstream
                .shared
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
