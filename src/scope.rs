//! What belongs to the client request a task is serving, wherever the code
//! runs below it: its id (sent upstream), the time spent waiting on
//! upstreams (so that the gateway's own overhead can be told apart) and what
//! its upstream attempts cost.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The request a task serves.
pub struct RequestScope {
    pub id: Arc<str>,
    upstream_time: Cell<Duration>,
    cost_usd: Cell<f64>,
}

/// What serving a request spent upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub upstream_time: Duration,
    /// Dollars, by the upstreams' `pricing` (0 without it).
    pub cost_usd: f64,
}

tokio::task_local! {
    static SCOPE: RequestScope;
}

/// Runs `f` as the serving of request `id`; returns its output and what its
/// upstream attempts took and cost.
pub async fn serve<F: Future>(id: Arc<str>, f: F) -> (F::Output, Spent) {
    let scope = RequestScope {
        id,
        upstream_time: Cell::new(Duration::ZERO),
        cost_usd: Cell::new(0.0),
    };
    SCOPE
        .scope(scope, async {
            let out = f.await;
            let spent = SCOPE.with(|s| Spent {
                upstream_time: s.upstream_time.get(),
                cost_usd: s.cost_usd.get(),
            });
            (out, spent)
        })
        .await
}

/// The id of the request being served, if any (health checks have none).
pub fn request_id() -> Option<Arc<str>> {
    SCOPE.try_with(|s| s.id.clone()).ok()
}

/// Adds time spent on an upstream attempt to the request being served.
pub fn add_upstream_time(spent: Duration) {
    let _ = SCOPE.try_with(|s| s.upstream_time.set(s.upstream_time.get() + spent));
}

/// Adds the cost of an upstream attempt to the request being served.
pub fn add_cost(usd: f64) {
    let _ = SCOPE.try_with(|s| s.cost_usd.set(s.cost_usd.get() + usd));
}
