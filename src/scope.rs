//! What belongs to the client request a task is serving, wherever the code
//! runs below it: its id (sent upstream) and the time spent waiting on
//! upstreams (so that the gateway's own overhead can be told apart).

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The request a task serves.
pub struct RequestScope {
    pub id: Arc<str>,
    upstream_time: Cell<Duration>,
}

tokio::task_local! {
    static SCOPE: RequestScope;
}

/// Runs `f` as the serving of request `id`; returns its output and the time
/// its upstream attempts took.
pub async fn serve<F: Future>(id: Arc<str>, f: F) -> (F::Output, Duration) {
    let scope = RequestScope {
        id,
        upstream_time: Cell::new(Duration::ZERO),
    };
    SCOPE
        .scope(scope, async {
            let out = f.await;
            let spent = SCOPE.with(|s| s.upstream_time.get());
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
