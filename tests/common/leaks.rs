//! Descriptor counts, and the check that a test's traffic leaked none.

use super::gateway::RunningGateway;
use context7_lb::sim::SimUpstream;
use std::time::{Duration, Instant};

/// Tests that count this process's file descriptors take this lock, so that
/// no other test of the same binary opens or closes sockets meanwhile.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Open file descriptors of this process: the entries of `/proc/self/fd`.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Descriptors a test may leave above its baseline: the runtime keeps a few.
pub const FD_MARGIN: usize = 4;

/// Idle gateway-to-upstream connections the connector may keep pooled.
pub const MAX_POOLED: u64 = 24;

/// Descriptors held for gateway-to-upstream connections: both ends live in
/// this process, and each simulator knows how many it has open.
fn upstream_fds(sims: &[&SimUpstream]) -> (usize, u64) {
    let connections: u64 = sims.iter().map(|s| s.open_connections()).sum();
    (2 * connections as usize, connections)
}

/// A leak check: the descriptors open before a test's traffic, apart from
/// pooled upstream connections (legitimately kept for reuse, and bounded by
/// [`MAX_POOLED`]), to compare with those open once it settled.
pub struct LeakCheck {
    pub baseline: usize,
}

impl LeakCheck {
    /// Takes the baseline now (after the gateway started and warmed up).
    pub fn start(sims: &[&SimUpstream]) -> LeakCheck {
        LeakCheck {
            baseline: open_fds().saturating_sub(upstream_fds(sims).0),
        }
    }

    /// Waits (up to 5 s) until nothing is in flight on any upstream, the
    /// descriptors other than pooled upstream connections are back within
    /// [`FD_MARGIN`] of the baseline, and the pool holds at most [`MAX_POOLED`].
    pub async fn settled(&self, gw: &RunningGateway, sims: &[&SimUpstream], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let in_flight: Vec<u64> = gw
                .state
                .pool
                .upstreams()
                .iter()
                .map(|u| u.in_flight())
                .collect();
            let (pooled_fds, pooled) = upstream_fds(sims);
            let fds = open_fds().saturating_sub(pooled_fds);
            if in_flight.iter().all(|n| *n == 0)
                && fds <= self.baseline + FD_MARGIN
                && pooled <= MAX_POOLED
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: in flight {in_flight:?}, {fds} descriptors open against {} before, \
                 {pooled} upstream connections",
                self.baseline
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
