//! The Redis connection that replicas share state through (`redis:`): one
//! multiplexed connection, made and remade in the background, each command
//! under its deadline, and whether Redis is up. While it is down every
//! command fails at once instead of waiting, each failure is counted in
//! `context7_redis_errors_total{op}`, and the outage is logged once, when it
//! begins and when it ends. What is kept there, and what each user does
//! when it cannot be reached, is theirs: `limits`, the research cache and
//! MCP sessions.

use crate::config::{OnRedisFailure, RedisConfig, without_userinfo};
use crate::metrics::Metrics;
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often a connected store checks that Redis still answers, so that an
/// outage of an idle gateway is noticed and logged, and its end too.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Reconnection attempts back off from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_LAST: Duration = Duration::from_secs(2);

/// Why a command did not run or did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Redis is down (or not reached yet): nothing was sent.
    Down,
    /// No answer within `redis.command_timeout`.
    TimedOut,
    /// The connection failed, or Redis answered with an error.
    Failed(String),
}

/// Redis as `/status` and `/ping` show it.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// `connecting` (never reached yet), `up` or `down`.
    pub state: &'static str,
    /// The URL without its password.
    pub url: String,
    /// When the state last changed.
    #[serde(serialize_with = "iso")]
    pub since: SystemTime,
    /// The error that began the current outage, or ended the last one.
    pub last_error: Option<String>,
    /// Outages since the gateway started.
    pub outages: u64,
    /// Operations that failed or were skipped since the gateway started.
    pub failed_operations: u64,
}

fn iso<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let time = chrono::DateTime::<chrono::Utc>::from(*t);
    s.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Micros, false))
}

struct Link {
    state: &'static str,
    since: SystemTime,
    down_at: Option<Instant>,
    last_error: Option<String>,
    outages: u64,
    failed: u64,
    failed_in_outage: u64,
    /// Connections made so far; the current one's number.
    connections: u64,
}

/// A live connection and which one it is: a command that fails on a
/// connection already replaced must not drop its successor.
struct Connected {
    connection: MultiplexedConnection,
    number: u64,
}

/// One Redis server, shared by every request of every state built for the
/// same `redis:` settings (a reload that keeps them keeps the connection).
pub struct SharedStore {
    client: redis::Client,
    /// `Some` while Redis is up; commands clone its handle on the one
    /// multiplexed connection.
    connection: ArcSwapOption<Connected>,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    on_failure: OnRedisFailure,
    shown_url: String,
    link: Mutex<Link>,
    /// Wakes the background loop when a command found Redis gone, or the
    /// requests' runtime became known.
    lost: Notify,
    /// The runtime requests run on, known from the first command. The
    /// connection is made there, so that its driver task runs beside the
    /// requests: on the background service's runtime, every command crossed
    /// to another thread and back.
    request_runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Whether the current connection was made on `request_runtime`.
    beside_requests: std::sync::atomic::AtomicBool,
    /// `true` once the first connection attempt is over: until then (a
    /// gateway starting, a reload onto a new `redis:`) commands wait for it,
    /// within `connect_timeout`, rather than finding Redis "down".
    first_attempt: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl SharedStore {
    /// A store for `config` (validated), not connected yet: [`Self::maintain`]
    /// connects, in the background.
    pub fn new(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<SharedStore, String> {
        let shown_url = without_userinfo(&config.url);
        let client = redis::Client::open(config.url.as_str())
            .map_err(|_| format!("{shown_url:?} is not a Redis URL"))?;
        Ok(SharedStore {
            client,
            connection: ArcSwapOption::empty(),
            prefix: config.prefix.clone(),
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            on_failure: config.on_failure,
            shown_url,
            link: Mutex::new(Link {
                state: "connecting",
                since: SystemTime::now(),
                down_at: None,
                last_error: None,
                outages: 0,
                failed: 0,
                failed_in_outage: 0,
                connections: 0,
            }),
            lost: Notify::new(),
            request_runtime: std::sync::OnceLock::new(),
            beside_requests: std::sync::atomic::AtomicBool::new(false),
            first_attempt: tokio::sync::watch::Sender::new(false),
            metrics,
        })
    }

    /// `prefix` + `rest`: every key the gateway writes.
    pub fn key(&self, rest: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + rest.len());
        key.push_str(&self.prefix);
        key.push_str(rest);
        key
    }

    /// What limits do while Redis cannot be reached.
    pub fn on_failure(&self) -> OnRedisFailure {
        self.on_failure
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> StoreStatus {
        let link = self.link();
        StoreStatus {
            state: link.state,
            url: self.shown_url.clone(),
            since: link.since,
            last_error: link.last_error.clone(),
            outages: link.outages,
            failed_operations: link.failed,
        }
    }

    /// Runs `cmd`, named `op` in the error count.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.run(op, |mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Runs a Lua script (by its digest; sent whole once after Redis lost it).
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.run(op, |mut c| async move { script.invoke_async(&mut c).await })
            .await
    }

    /// Sends one command on the connection, within the command timeout.
    async fn run<T, F, Fut>(&self, op: &'static str, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let Some((number, connection)) = self.connection().await else {
            return Err(self.failed(op, StoreError::Down));
        };
        let outcome = tokio::time::timeout(self.command_timeout, command(connection)).await;
        let failure = match settle(outcome, self.command_timeout) {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        if failure.lost {
            self.lose(number, failure.why.clone());
        }
        Err(self.failed(
            op,
            if failure.timed_out {
                StoreError::TimedOut
            } else {
                StoreError::Failed(failure.why)
            },
        ))
    }

    /// The connection for a command of a request, noting the requests'
    /// runtime the first time; before the first connection attempt is over,
    /// once it is (within `connect_timeout`).
    async fn connection(&self) -> Option<(u64, MultiplexedConnection)> {
        if self.request_runtime.get().is_none()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
            && self.request_runtime.set(handle).is_ok()
        {
            self.lost.notify_one();
        }
        if let Some(connection) = self.current() {
            return Some(connection);
        }
        if !*self.first_attempt.borrow() {
            let mut attempted = self.first_attempt.subscribe();
            let _ =
                tokio::time::timeout(self.connect_timeout, attempted.wait_for(|done| *done)).await;
        }
        self.current()
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let guard = self.connection.load();
        let connected = guard.as_deref()?;
        Some((connected.number, connected.connection.clone()))
    }

    /// Counts a failed or skipped operation.
    fn failed(&self, op: &'static str, error: StoreError) -> StoreError {
        self.metrics.redis_errors.with_label_values(&[op]).inc();
        let mut link = self.link();
        link.failed += 1;
        link.failed_in_outage += 1;
        error
    }

    /// Redis stopped answering on connection `number`: drop it (unless it
    /// was replaced already), so that commands fail at once, and have the
    /// background loop reconnect.
    fn lose(&self, number: u64, why: String) {
        // Under the link's lock, as `mark_up` stores a new connection.
        let mut link = self.link();
        let current = self.connection.load();
        if current.as_ref().is_some_and(|c| c.number == number) {
            drop(current);
            self.connection.store(None);
            self.mark_down_locked(&mut link, why);
            self.lost.notify_one();
        }
    }

    fn mark_down(&self, why: String) {
        self.mark_down_locked(&mut self.link(), why);
    }

    fn mark_down_locked(&self, link: &mut Link, why: String) {
        if link.state == "down" {
            return;
        }
        let was_connecting = link.state == "connecting";
        link.state = "down";
        link.since = SystemTime::now();
        link.down_at = Some(Instant::now());
        link.outages += 1;
        link.failed_in_outage = 0;
        link.last_error = Some(why.clone());
        let limits = match self.on_failure {
            OnRedisFailure::Allow => "allowed without limits",
            OnRedisFailure::Deny => "refused (redis.on_failure: deny)",
        };
        log::warn!(
            "redis {}: {} ({why}); until it answers, requests are {limits}, the research cache \
             is this replica's own and MCP sessions made elsewhere are not found",
            self.shown_url,
            if was_connecting {
                "cannot be reached"
            } else {
                "lost"
            },
        );
    }

    fn mark_up(&self, connection: MultiplexedConnection, beside_requests: bool) {
        self.beside_requests
            .store(beside_requests, std::sync::atomic::Ordering::Relaxed);
        let mut link = self.link();
        link.connections += 1;
        self.connection.store(Some(Arc::new(Connected {
            connection,
            number: link.connections,
        })));
        let previous = std::mem::replace(&mut link.state, "up");
        if previous == "up" {
            // A connection moved beside the requests: nothing to tell.
            return;
        }
        link.since = SystemTime::now();
        match (previous, link.down_at.take()) {
            ("down", Some(down_at)) => log::info!(
                "redis {}: reachable again after {:.1}s ({} operations failed or were skipped)",
                self.shown_url,
                down_at.elapsed().as_secs_f64(),
                link.failed_in_outage
            ),
            _ => log::info!("redis {}: connected", self.shown_url),
        }
    }

    /// One step of the background loop: connects when not connected, else
    /// checks that Redis answers. Returns how long to wait before the next
    /// step (which [`Self::wait`] cuts short when a command loses Redis).
    pub async fn maintain(&self, backoff: &mut Duration) -> Duration {
        if let Some((number, mut connection)) = self.current() {
            let ping = redis::cmd("PING");
            let answer = tokio::time::timeout(
                self.command_timeout,
                ping.query_async::<String>(&mut connection),
            )
            .await;
            let Err(failure) = settle(answer, self.command_timeout) else {
                let misplaced = !self
                    .beside_requests
                    .load(std::sync::atomic::Ordering::Relaxed)
                    && self.request_runtime.get().is_some();
                if misplaced && let Ok((connection, true)) = self.connect().await {
                    self.mark_up(connection, true);
                }
                return PING_INTERVAL;
            };
            self.lose(number, failure.why);
            *backoff = RECONNECT_FIRST;
            return Duration::ZERO;
        }
        let attempt = self.connect().await;
        self.first_attempt.send_replace(true);
        match attempt {
            Ok((connection, beside_requests)) => {
                self.mark_up(connection, beside_requests);
                *backoff = RECONNECT_FIRST;
                PING_INTERVAL
            }
            Err(why) => {
                self.mark_down(why);
                let wait = *backoff;
                *backoff = (*backoff * 2).min(RECONNECT_LAST);
                wait
            }
        }
    }

    /// Waits `pause`; `true` when cut short because a command found Redis
    /// gone (or the requests' runtime became known).
    pub async fn wait(&self, pause: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => false,
            _ = self.lost.notified() => true,
        }
    }

    /// A new connection, checked with a PING, all within the connect timeout:
    /// a Redis that accepts connections but does not answer (stopped, or
    /// loading) is not up. Made on the requests' runtime once it is known
    /// (then `true`).
    async fn connect(&self) -> Result<(MultiplexedConnection, bool), String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let client = self.client.clone();
        let connect_timeout = self.connect_timeout;
        let attempt = async move {
            let attempt = async {
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| describe(&e))?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map_err(|e| describe(&e))?;
                Ok(connection)
            };
            match tokio::time::timeout(connect_timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "no connection within redis.connect_timeout ({})",
                    humantime::format_duration(connect_timeout)
                )),
            }
        };
        match self.request_runtime.get() {
            Some(runtime) => match runtime.spawn(attempt).await {
                Ok(result) => result.map(|c| (c, true)),
                Err(e) => Err(format!("the connection attempt failed: {e}")),
            },
            None => attempt.await.map(|c| (c, false)),
        }
    }
}

/// Why a command failed.
struct Failure {
    why: String,
    /// No answer in time, or a broken connection: the connection is gone.
    lost: bool,
    timed_out: bool,
}

/// A command's value, or why it failed.
fn settle<T>(
    outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    command_timeout: Duration,
) -> Result<T, Failure> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if !e.is_timeout() => Err(Failure {
            why: describe(&e),
            lost: e.is_io_error() || e.is_connection_dropped(),
            timed_out: false,
        }),
        // The connection's own response timeout is the same deadline.
        _ => Err(Failure {
            why: format!(
                "no answer within redis.command_timeout ({})",
                humantime::format_duration(command_timeout)
            ),
            lost: true,
            timed_out: true,
        }),
    }
}

/// A Redis error as logs and `/status` show it: the crate's text, which
/// names the kind and the server's message but never the URL, at most 200
/// characters.
fn describe(e: &redis::RedisError) -> String {
    let text = e.to_string();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The background service that keeps the current store connected. It looks
/// for a new store (a reload onto other `redis:` settings) every 100 ms,
/// whatever it waits for, so that the new one connects at once.
pub async fn keep_connected(
    current: impl Fn() -> Option<Arc<SharedStore>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    const LOOK_AGAIN: Duration = Duration::from_millis(100);
    let mut backoff = RECONNECT_FIRST;
    loop {
        let Some(store) = current() else {
            tokio::select! {
                _ = tokio::time::sleep(LOOK_AGAIN) => continue,
                _ = shutdown.changed() => return,
            }
        };
        let pause = crate::task::guarded("redis", &store.metrics, store.maintain(&mut backoff))
            .await
            .unwrap_or(RECONNECT_LAST);
        let until = Instant::now() + pause;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let woken = tokio::select! {
                woken = store.wait(left.min(LOOK_AGAIN)) => woken,
                _ = shutdown.changed() => return,
            };
            let replaced = !current().is_some_and(|now| Arc::ptr_eq(&now, &store));
            if woken || replaced {
                break;
            }
        }
    }
}
