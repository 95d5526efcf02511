//! Background work that survives its own bugs: a panic in a health probe,
//! a model discovery, a reload or the janitor is caught, logged, counted in
//! `context7_internal_errors_total{task}`, and the loop goes on. Without this,
//! one panic would stop the health checks (and freeze every upstream's state)
//! or reloads for good, silently.

use crate::metrics::Metrics;
use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Runs `work`; `None` when it panicked (logged and counted under `task`).
pub async fn guarded<F: Future>(
    task: &'static str,
    metrics: &Metrics,
    work: F,
) -> Option<F::Output> {
    // Unwind safety: what a task shares (the pool's state) is behind locks
    // and atomics that a panic leaves consistent, or poisoned and recovered.
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(output) => Some(output),
        Err(panic) => {
            caught(task, metrics, panic.as_ref());
            None
        }
    }
}

/// [`guarded`] for synchronous work.
pub fn guarded_sync<T>(
    task: &'static str,
    metrics: &Metrics,
    work: impl FnOnce() -> T,
) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(work)) {
        Ok(output) => Some(output),
        Err(panic) => {
            caught(task, metrics, panic.as_ref());
            None
        }
    }
}

fn caught(task: &'static str, metrics: &Metrics, panic: &(dyn std::any::Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    metrics.internal_errors.with_label_values(&[task]).inc();
    log::error!("internal error in {task}, which carries on: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_caught_counted_and_the_next_round_runs() {
        let metrics = Metrics::new();
        let mut rounds = Vec::new();
        for round in 0..3 {
            let done = guarded("health_check", &metrics, async move {
                if round == 1 {
                    panic!("probe bug in round {round}");
                }
                round
            })
            .await;
            rounds.push(done);
        }
        assert_eq!(rounds, [Some(0), None, Some(2)]);
        let reload = guarded_sync("reload", &metrics, || -> u8 { panic!("reload bug") });
        assert_eq!(reload, None);
        for (task, n) in [("health_check", 1), ("reload", 1)] {
            assert_eq!(metrics.internal_errors.with_label_values(&[task]).get(), n);
        }
    }
}
