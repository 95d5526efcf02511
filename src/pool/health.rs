//! Active health checks: one loop that resolves host names and probes every
//! upstream each interval (with jitter), in the way its kind expects.

use super::{CheckOutcome, Health, Pool, Upstream, UpstreamKind};
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

/// Probes every upstream of a pool and records the results.
pub struct HealthChecker {
    pool: Arc<Pool>,
    client: UpstreamClient,
    config: HealthCheckConfig,
    metrics: Arc<Metrics>,
}

impl HealthChecker {
    pub fn new(
        pool: Arc<Pool>,
        config: HealthCheckConfig,
        connect_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> HealthChecker {
        for up in pool.upstreams() {
            metrics
                .upstream_healthy
                .with_label_values(&[&up.name])
                .set(0);
        }
        HealthChecker {
            pool,
            // A probe must not wait longer to connect than it waits for an answer.
            client: UpstreamClient::new(connect_timeout.min(config.timeout)),
            config,
            metrics,
        }
    }

    /// Runs one round: every upstream probed concurrently.
    pub async fn check_all(&self) {
        let probes = self.pool.upstreams().iter().map(|up| self.check_one(up));
        futures::future::join_all(probes).await;
    }

    async fn check_one(&self, up: &Arc<Upstream>) {
        let (outcome, detail) =
            match tokio::time::timeout(self.config.timeout, self.probe(up)).await {
                Ok(result) => result,
                Err(_) => (
                    CheckOutcome::Down,
                    format!("no answer within {:?}", self.config.timeout),
                ),
            };
        self.metrics
            .health_checks
            .with_label_values(&[&up.name, outcome.as_str()])
            .inc();
        let changed = up.observe_check(
            outcome,
            detail.clone(),
            self.config.healthy_threshold,
            self.config.unhealthy_threshold,
        );
        if let Some(state) = changed {
            match state {
                Health::Healthy => log::info!("upstream {} is healthy ({detail})", up.name),
                Health::Initializing => {
                    log::info!("upstream {} is initializing ({detail})", up.name)
                }
                _ => log::warn!("upstream {} is unhealthy: {detail}", up.name),
            }
        }
        self.metrics
            .upstream_healthy
            .with_label_values(&[&up.name])
            .set(i64::from(up.is_healthy()));
    }

    async fn probe(&self, up: &Upstream) -> (CheckOutcome, String) {
        let target = &up.health_target;
        if up.needs_resolution() {
            let host = (target.url.host.as_str(), target.url.port);
            match tokio::net::lookup_host(host).await {
                Ok(addrs) => {
                    let addrs: Vec<_> = addrs.collect();
                    if addrs.is_empty() {
                        return (
                            CheckOutcome::Down,
                            format!("{} has no address", target.url.host),
                        );
                    }
                    up.set_addresses(addrs);
                }
                Err(e) => {
                    return (
                        CheckOutcome::Down,
                        format!("cannot resolve {}: {e}", target.url.host),
                    );
                }
            }
        }
        let request = UpstreamRequest {
            method: "GET",
            url: &target.url,
            path: &target.url.path,
            authorization: if target.send_key {
                up.authorization()
            } else {
                None
            },
            body: None,
            max_body: MAX_PROBE_BODY,
            read_timeout: Some(self.config.timeout),
        };
        let reply = match self.client.send(up, &request).await {
            Ok(reply) => reply,
            Err(e) => return (CheckOutcome::Down, e.to_string()),
        };
        match (&up.kind, reply.status) {
            (_, 200) => (CheckOutcome::Up, "200".into()),
            (UpstreamKind::OpenAi, 204) => (CheckOutcome::Initializing, "204 initializing".into()),
            (UpstreamKind::RunPodQueue { endpoint_id }, 401) => (
                CheckOutcome::Down,
                format!("401: RunPod refused the API key for endpoint {endpoint_id}"),
            ),
            (UpstreamKind::RunPodQueue { endpoint_id }, 404) => (
                CheckOutcome::Down,
                format!("404: RunPod has no endpoint {endpoint_id}; check runpod_endpoint_id"),
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
            let pause = self.config.interval.mul_f64(jitter);
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
