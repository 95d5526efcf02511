//! The upstream pool: the endpoints, their health, and the choice of which one
//! serves the next request. Nothing here needs a running proxy.

pub mod health;
pub mod upstream;

pub use upstream::{CheckOutcome, CheckRecord, Health, HealthTarget, Upstream, UpstreamKind};

use crate::config::Config;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why no upstream could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoUpstream {
    /// The configuration has no upstream at all.
    NoneConfigured,
    /// Every upstream failed its checks, or was already tried for this request.
    NoneHealthy,
}

/// All upstreams and the selection over them.
pub struct Pool {
    upstreams: Vec<Arc<Upstream>>,
    next: AtomicUsize,
}

impl Pool {
    /// Builds the pool from a validated configuration.
    pub fn from_config(config: &Config) -> Result<Pool, String> {
        let upstreams = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, up)| Upstream::from_config(i, up, config).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pool {
            upstreams,
            next: AtomicUsize::new(0),
        })
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    pub fn healthy_count(&self) -> usize {
        self.upstreams.iter().filter(|u| u.is_healthy()).count()
    }

    /// Chooses the upstream for the next attempt, skipping the ones in `tried`.
    ///
    /// Round robin over healthy upstreams. When none is healthy, an upstream whose
    /// first check has not finished yet (just after start) is used rather than
    /// refusing traffic; an upstream known to be unhealthy or initializing is
    /// never chosen.
    pub fn select(&self, tried: &[usize]) -> Result<Arc<Upstream>, NoUpstream> {
        let n = self.upstreams.len();
        if n == 0 {
            return Err(NoUpstream::NoneConfigured);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidate = |accept: &dyn Fn(&Upstream) -> bool| {
            (0..n)
                .map(|offset| &self.upstreams[(start + offset) % n])
                .find(|u| !tried.contains(&u.index) && accept(u))
                .cloned()
        };
        if let Some(u) = candidate(&|u| u.is_healthy()) {
            return Ok(u);
        }
        candidate(&|u| u.health() == Health::Unknown).ok_or(NoUpstream::NoneHealthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    fn pool(n: usize) -> Pool {
        let config = Config {
            upstreams: (0..n)
                .map(|i| UpstreamConfig {
                    name: format!("u{i}"),
                    base_url: Some(format!("http://127.0.0.1:{}/v1", 9000 + i)),
                    ..Default::default()
                })
                .collect(),
            ..Config::default()
        };
        Pool::from_config(&config).unwrap()
    }

    fn set(pool: &Pool, i: usize, outcome: CheckOutcome) {
        pool.upstreams()[i].observe_check(outcome, String::new(), 1, 1);
    }

    #[test]
    fn empty_pool_says_none_configured() {
        assert_eq!(pool(0).select(&[]).unwrap_err(), NoUpstream::NoneConfigured);
    }

    #[test]
    fn round_robin_covers_healthy_upstreams_evenly() {
        let p = pool(3);
        for i in 0..3 {
            set(&p, i, CheckOutcome::Up);
        }
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[p.select(&[]).unwrap().index] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn unhealthy_and_initializing_upstreams_are_never_chosen() {
        let p = pool(4);
        set(&p, 0, CheckOutcome::Up);
        set(&p, 1, CheckOutcome::Down);
        set(&p, 2, CheckOutcome::Initializing);
        set(&p, 3, CheckOutcome::Up);
        for _ in 0..100 {
            let i = p.select(&[]).unwrap().index;
            assert!(i == 0 || i == 3, "chose {i}");
        }
        assert_eq!(p.select(&[0, 3]).unwrap_err(), NoUpstream::NoneHealthy);
    }

    #[test]
    fn tried_upstreams_are_skipped() {
        let p = pool(2);
        set(&p, 0, CheckOutcome::Up);
        set(&p, 1, CheckOutcome::Up);
        for _ in 0..10 {
            assert_eq!(p.select(&[0]).unwrap().index, 1);
        }
    }

    #[test]
    fn unknown_upstreams_serve_only_while_none_is_healthy() {
        let p = pool(3);
        assert!(p.select(&[]).is_ok());
        set(&p, 0, CheckOutcome::Down);
        for _ in 0..10 {
            assert_ne!(p.select(&[]).unwrap().index, 0);
        }
        set(&p, 1, CheckOutcome::Up);
        for _ in 0..10 {
            assert_eq!(p.select(&[]).unwrap().index, 1);
        }
        set(&p, 2, CheckOutcome::Down);
        assert_eq!(p.select(&[1]).unwrap_err(), NoUpstream::NoneHealthy);
    }
}
