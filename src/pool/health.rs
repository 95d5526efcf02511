//! Active health checks: one loop that resolves host names and probes every
//! upstream each interval (with jitter), in the way its kind expects.

use super::{CheckOutcome, Health, Pool, ProbeContract, QueueDepth, Upstream, UpstreamKind};
use crate::client::{UpstreamClient, UpstreamRequest};
use crate::config::HealthCheckConfig;
use crate::metrics::Metrics;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// Largest probe answer read; `/health` answers are a few hundred bytes.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// Gives the pool to probe now: after a reload, the new one.
pub type CurrentPool = Arc<dyn Fn() -> Arc<Pool> + Send + Sync>;

/// Probes every upstream of the current pool and records the results.
pub struct HealthChecker {
    current: CurrentPool,
    /// The gateway's one client: probes keep warm the connections requests use.
    client: Arc<UpstreamClient>,
    metrics: Arc<Metrics>,
    rounds: std::sync::atomic::AtomicU64,
}

/// The pause before probing again a healthy upstream whose probe just failed.
const RECHECK_PAUSE: Duration = Duration::from_millis(250);

/// Model lists are asked for again every this many rounds (a minute at 5 s).
const DISCOVERY_EVERY: u64 = 12;

impl HealthChecker {
    /// Each probe's connect is bounded by `timeouts.connect` and by
    /// `health_check.timeout`, whichever is shorter, as the current pool has them.
    pub fn new(
        current: CurrentPool,
        client: Arc<UpstreamClient>,
        metrics: Arc<Metrics>,
    ) -> HealthChecker {
        HealthChecker {
            current,
            client,
            metrics,
            rounds: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Runs one round: every upstream probed concurrently.
    pub async fn check_all(&self) {
        let round = self
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pool = (self.current)();
        let config = pool.health_config();
        let connect_timeout = pool.connect_timeout().min(config.timeout);
        let probes = pool.upstreams().iter().map(|up| {
            let check = self.check_one(up, config, connect_timeout, round);
            crate::task::guarded("health_check", &self.metrics, check)
        });
        futures::future::join_all(probes).await;
    }

    async fn check_one(
        &self,
        up: &Arc<Upstream>,
        config: &HealthCheckConfig,
        connect_timeout: Duration,
        round: u64,
    ) {
        let (changed, detail) = loop {
            let (outcome, detail) =
                match tokio::time::timeout(config.timeout, self.probe(up, config, connect_timeout))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => (
                        CheckOutcome::Down,
                        format!("no answer within {:?}", config.timeout),
                    ),
                };
            self.metrics
                .health_checks
                .with_label_values(&[&up.name, outcome.as_str()])
                .inc();
            self.note_warmth(up, outcome);
            let changed = up.observe_check(
                outcome,
                detail.clone(),
                config.healthy_threshold,
                config.unhealthy_threshold,
            );
            // A healthy upstream that just failed is probed again soon, not a
            // whole interval later: a hung server is then taken out (and the
            // requests waiting on it moved) in about unhealthy_threshold ×
            // timeout rather than that many intervals. Bounded: each failure
            // lengthens the streak until the threshold takes it out.
            if outcome == CheckOutcome::Down && up.health() == Health::Healthy {
                tokio::time::sleep(RECHECK_PAUSE.min(config.interval)).await;
                continue;
            }
            break (changed, detail);
        };
        if let Some(state) = changed {
            // Misconfiguration is logged once, when the state flips, in words an operator can act on.
            match state {
                Health::Healthy => log::info!("upstream {} is healthy ({detail})", up.name),
                Health::Initializing => {
                    log::info!("upstream {} is initializing ({detail})", up.name)
                }
                _ => log::warn!("upstream {} is unhealthy: {detail}", up.name),
            }
        }
        let due = changed == Some(Health::Healthy) || round.is_multiple_of(DISCOVERY_EVERY);
        if config.discover_models && up.can_discover_models() && up.is_healthy() && due {
            let discovery = self.discover_models(up, config, connect_timeout);
            let discovery = tokio::time::timeout(config.timeout, discovery);
            match crate::task::guarded("model_discovery", &self.metrics, discovery).await {
                Some(Ok(Ok(models))) => up.set_discovered_models(models),
                Some(Ok(Err(why))) => log::debug!("upstream {}: no model list: {why}", up.name),
                Some(Err(_)) => log::debug!("upstream {}: no model list in time", up.name),
                None => {}
            }
        }
    }

    /// What a check says of the upstream's workers: a 204, or a RunPod queue
    /// with no worker up, is a cold worker (a cold start begins, and the
    /// upstream is used only when no warm one has room); a 200 otherwise is a
    /// warm one (and ends a cold start that no request waited for).
    fn note_warmth(&self, up: &Upstream, outcome: CheckOutcome) {
        let now = tokio::time::Instant::now();
        let cold = match outcome {
            CheckOutcome::Initializing => true,
            CheckOutcome::Up => up.queue_depth().is_some_and(|q| q.is_cold()),
            CheckOutcome::Down => return,
        };
        if cold {
            up.cold_sign(now);
        } else if let Some(took) = up.warm_sign(now) {
            super::count_cold_start(&self.metrics, up, took);
        }
    }

    /// `GET {base}/models`: the ids the upstream lists.
    async fn discover_models(
        &self,
        up: &Upstream,
        config: &HealthCheckConfig,
        connect_timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let address = up
            .address()
            .ok_or_else(|| format!("{} has no address", up.base.host))?;
        let path = format!("{}/models", up.base.path);
        let request = UpstreamRequest {
            method: "GET",
            url: &up.base,
            path: &path,
            authorization: up.authorization(),
            body: None,
            max_body: MAX_PROBE_BODY,
            read_timeout: Some(config.timeout),
            accept: "application/json",
            connect_timeout,
            fresh: false,
        };
        let reply = self
            .client
            .send(address, &request)
            .await
            .map_err(|e| e.to_string())?;
        if reply.status != 200 {
            return Err(format!("HTTP {}", reply.status));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
        Ok(value
            .get("data")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("id").and_then(serde_json::Value::as_str))
            .map(str::to_string)
            .collect())
    }

    async fn probe(
        &self,
        up: &Upstream,
        config: &HealthCheckConfig,
        connect_timeout: Duration,
    ) -> (CheckOutcome, String) {
        let target = &up.health_target;
        // Requests go to the API's host; the probe goes to the health
        // target's, which a `health_url` may put elsewhere: each is resolved
        // on its own, so that neither takes the other's address.
        if up.needs_resolution() {
            let host = (up.base.host.as_str(), up.base.port);
            match resolve(host).await {
                Ok(addrs) => up.set_addresses(addrs),
                Err(why) => return (CheckOutcome::Down, why),
            }
        }
        if up.health_needs_resolution() {
            let host = (target.url.host.as_str(), target.url.port);
            match resolve(host).await {
                Ok(addrs) => up.set_health_addresses(addrs),
                Err(why) => return (CheckOutcome::Down, why),
            }
        }
        let Some(address) = up.health_address() else {
            return (
                CheckOutcome::Down,
                format!("{} has no address", target.url.host),
            );
        };
        let request = UpstreamRequest {
            method: "GET",
            url: &target.url,
            path: &target.url.path,
            // The upstream's own key goes with its probe: RunPod's `/health` and
            // load-balancing endpoints need it, and vLLM's `/ping` ignores it;
            // but only to the API's own origin unless the config opts in.
            authorization: up.probe_authorization(),
            body: None,
            max_body: MAX_PROBE_BODY,
            read_timeout: Some(config.timeout),
            accept: "application/json",
            connect_timeout,
            fresh: false,
        };
        let reply = match self.client.send(address, &request).await {
            Ok(reply) => reply,
            Err(e) => return (CheckOutcome::Down, e.to_string()),
        };
        match (target.contract, reply.status) {
            (ProbeContract::RunPodHealth, 200) => {
                let depth = parse_runpod_health(&reply.body);
                up.set_queue_depth(depth);
                match depth {
                    Some(q) => (
                        CheckOutcome::Up,
                        format!(
                            "200: {} in queue, {} in progress, {} running and {} idle workers",
                            q.in_queue, q.in_progress, q.workers_running, q.workers_idle
                        ),
                    ),
                    None => (CheckOutcome::Up, "200 (no job counts)".into()),
                }
            }
            (_, 200) => (CheckOutcome::Up, "200".into()),
            (ProbeContract::Ping, 204) => (CheckOutcome::Initializing, "204 initializing".into()),
            (_, 401) => (
                CheckOutcome::Down,
                format!(
                    "401: the endpoint refused the API key{}",
                    endpoint_words(&up.kind)
                ),
            ),
            (ProbeContract::RunPodHealth, 404) => (
                CheckOutcome::Down,
                format!(
                    "404: RunPod has no such endpoint{}; check runpod_endpoint_id",
                    endpoint_words(&up.kind)
                ),
            ),
            (_, status) => (CheckOutcome::Down, format!("{status}")),
        }
    }

    /// Probes every interval (±10% jitter, so that many gateways do not probe
    /// in step) until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.check_all().await;
            let jitter = 0.9 + fastrand::f64() * 0.2;
            let pause = (self.current)().health_config().interval.mul_f64(jitter);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await
    }
}

/// A host's addresses, or why it has none (`cannot resolve …`, `… has no address`).
async fn resolve((host, port): (&str, u16)) -> Result<Vec<std::net::SocketAddr>, String> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if addrs.is_empty() {
                Err(format!("{host} has no address"))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
    }
}

fn endpoint_words(kind: &UpstreamKind) -> String {
    match kind {
        UpstreamKind::RunPodQueue { endpoint_id }
        | UpstreamKind::RunPodLoadBalancer { endpoint_id } => {
            format!(" for endpoint {endpoint_id}")
        }
        UpstreamKind::OpenAi => String::new(),
    }
}

/// Reads RunPod's `{"jobs":{"inQueue","inProgress",…},"workers":{"idle","running"}}`.
pub fn parse_runpod_health(body: &[u8]) -> Option<QueueDepth> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let n = |path: &str| v.pointer(path).and_then(serde_json::Value::as_u64);
    Some(QueueDepth {
        in_queue: n("/jobs/inQueue")?,
        in_progress: n("/jobs/inProgress").unwrap_or(0),
        workers_idle: n("/workers/idle").unwrap_or(0),
        workers_running: n("/workers/running").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runpod_health_counts_are_read() {
        let q = parse_runpod_health(
            br#"{"jobs":{"completed":9,"failed":0,"inProgress":2,"inQueue":5,"retried":0},"workers":{"idle":1,"running":3}}"#,
        )
        .unwrap();
        assert_eq!(
            q,
            QueueDepth {
                in_queue: 5,
                in_progress: 2,
                workers_idle: 1,
                workers_running: 3
            }
        );
        assert!((q.jobs_per_worker() - 7.0 / 3.0).abs() < 1e-9);
        assert_eq!(parse_runpod_health(b"{}"), None);
    }
}
