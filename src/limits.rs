//! How much a client may ask: requests per second with a burst, and tokens
//! per minute, per client key (per address without keys), each key with its
//! own limits where it sets them. Without `redis:` both are kept in process;
//! with it, in Redis, shared by every replica: one script decides a request
//! in one round trip, another charges an answer's tokens.
//!
//! Both are GCRA (the generic cell rate algorithm): a client's state is one
//! time, the moment its allowance would be whole again. Requests move it
//! by one period each and are refused past the burst; tokens move it by
//! their count once the answer arrives (so an answer may overspend) and a
//! request is refused while less than one token is left of the minute.

use crate::auth::{ClientId, Refusal};
use crate::config::{OnRedisFailure, RateLimitConfig};
use crate::shared::SharedStore;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The window tokens are counted over.
const TOKEN_WINDOW: Duration = Duration::from_secs(60);
/// The furthest a token debt can reach: an answer larger than many minutes'
/// budget refuses for at most this long.
const MAX_TOKEN_DEBT: Duration = Duration::from_secs(24 * 3600);

/// Decides a request in Redis: the token budget first (so a request refused
/// for tokens spends no request), then the request rate. Times are Redis's
/// own (`TIME`), in microseconds, so replicas with skewed clocks agree.
/// Returns `{0, 0}` (allowed), `{1, wait}` (requests) or `{2, wait}` (tokens).
const ADMIT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local token_period = tonumber(ARGV[3])
if token_period > 0 then
  local tat = tonumber(redis.call('GET', KEYS[2]) or now)
  local over = tat - now - (tonumber(ARGV[4]) - token_period)
  if over > 0 then return {2, math.ceil(over)} end
end
local period = tonumber(ARGV[1])
if period > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
  local next_tat = tat + period
  local wait = next_tat - now - tonumber(ARGV[2])
  if wait > 0 then return {1, math.ceil(wait)} end
  redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
end
return {0, 0}
";

/// Charges tokens to every key in KEYS (the same key may come again): ARGV[1]
/// the longest debt, then for each key its microseconds per token and its
/// tokens. One call charges a whole batch.
const CHARGE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max_debt = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local cost = tonumber(ARGV[2 * i]) * tonumber(ARGV[2 * i + 1])
  local tat = math.max(tonumber(redis.call('GET', key) or now), now)
  local next_tat = math.min(tat + cost, now + max_debt)
  redis.call('SET', key, string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
end
return #KEYS
";

/// Charges made "soon" wait this long to go to Redis together: under load a
/// batch takes one round trip instead of one per answer.
const CHARGE_BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Keys in one charging call at most.
const CHARGE_BATCH_MAX: usize = 256;

/// A charge waiting for its batch: the Redis key, microseconds per token,
/// tokens.
type PendingCharge = (String, f64, u64);

/// The client limits of one configuration.
pub struct Limits {
    /// In-process request buckets, one limiter per distinct rate and burst.
    requests: Vec<(RequestQuota, DefaultKeyedRateLimiter<ClientId>)>,
    tokens: TokenLedger,
    shared: Option<Arc<SharedStore>>,
    admit_script: redis::Script,
    charge_script: redis::Script,
    any_requests: bool,
    any_tokens: bool,
    /// Charges for the next batch, and whether its flush is scheduled.
    pending: Mutex<(Vec<PendingCharge>, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct RequestQuota {
    per_second: f64,
    burst: u32,
}

impl RequestQuota {
    fn of(limits: &RateLimitConfig) -> Option<RequestQuota> {
        (limits.requests_per_second > 0.0).then_some(RequestQuota {
            per_second: limits.requests_per_second,
            burst: limits.burst.max(1),
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

impl Limits {
    /// Limits for the defaults and every key's own (`all`, the defaults
    /// among them), kept in `shared` when it is set.
    pub fn new<'a>(
        all: impl IntoIterator<Item = &'a RateLimitConfig>,
        shared: Option<Arc<SharedStore>>,
    ) -> Limits {
        let mut requests: Vec<(RequestQuota, DefaultKeyedRateLimiter<ClientId>)> = Vec::new();
        let mut any_tokens = false;
        for limits in all {
            any_tokens |= limits.tokens_per_minute > 0;
            let Some(quota) = RequestQuota::of(limits) else {
                continue;
            };
            if requests.iter().any(|(q, _)| *q == quota) {
                continue;
            }
            let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
            if let Some(q) = Quota::with_period(quota.period()) {
                requests.push((quota, RateLimiter::keyed(q.allow_burst(burst))));
            }
        }
        Limits {
            any_requests: !requests.is_empty(),
            any_tokens,
            requests,
            tokens: TokenLedger::default(),
            shared,
            admit_script: redis::Script::new(ADMIT_SCRIPT),
            charge_script: redis::Script::new(CHARGE_SCRIPT),
            pending: Mutex::new((Vec::new(), false)),
        }
    }

    /// Whether any client has any limit.
    pub fn enabled(&self) -> bool {
        self.any_requests || self.any_tokens
    }

    /// Takes one request from `client`'s allowance under `limits` (its key's,
    /// or the defaults), or says why not.
    pub async fn admit(&self, client: &ClientId, limits: &RateLimitConfig) -> Result<(), Refusal> {
        let quota = RequestQuota::of(limits);
        let tokens_per_minute = limits.tokens_per_minute;
        if quota.is_none() && tokens_per_minute == 0 {
            return Ok(());
        }
        match &self.shared {
            Some(store) => {
                self.admit_shared(store, client, quota, tokens_per_minute)
                    .await
            }
            None => {
                if tokens_per_minute > 0 {
                    self.tokens.check(client, tokens_per_minute)?;
                }
                match quota {
                    Some(quota) => self.admit_local(client, quota),
                    None => Ok(()),
                }
            }
        }
    }

    fn admit_local(&self, client: &ClientId, quota: RequestQuota) -> Result<(), Refusal> {
        let Some((_, limiter)) = self.requests.iter().find(|(q, _)| *q == quota) else {
            return Ok(());
        };
        limiter.check_key(client).map_err(|not_until| {
            let clock = governor::clock::DefaultClock::default();
            Refusal::RateLimited(not_until.wait_time_from(governor::clock::Clock::now(&clock)))
        })
    }

    async fn admit_shared(
        &self,
        store: &SharedStore,
        client: &ClientId,
        quota: Option<RequestQuota>,
        tokens_per_minute: u64,
    ) -> Result<(), Refusal> {
        let (period_us, tolerance_us) = match quota {
            Some(q) => {
                let period = 1e6 / q.per_second;
                (period, period * f64::from(q.burst))
            }
            None => (0.0, 0.0),
        };
        let token_period_us = token_period_us(tokens_per_minute);
        let mut invocation = self.admit_script.prepare_invoke();
        invocation
            .key(limit_key(store, client, "requests"))
            .key(limit_key(store, client, "tokens"))
            .arg(period_us)
            .arg(tolerance_us)
            .arg(token_period_us)
            .arg(TOKEN_WINDOW.as_micros() as f64);
        match store.invoke::<(i64, i64)>("limit", &invocation).await {
            Ok((0, _)) => Ok(()),
            Ok((1, wait)) => Err(Refusal::RateLimited(micros(wait))),
            Ok((_, wait)) => Err(Refusal::TokensSpent(micros(wait))),
            Err(_) => match store.on_failure() {
                OnRedisFailure::Allow => Ok(()),
                OnRedisFailure::Deny => Err(Refusal::LimitsUnavailable),
            },
        }
    }

    /// Charges `tokens` of an answer to `client` under `limits`, now: the
    /// next request, on any replica, sees them. A charge Redis cannot take is
    /// counted as its error and lost: the answer was given.
    pub async fn charge(&self, client: &ClientId, limits: &RateLimitConfig, tokens: u64) {
        let tokens_per_minute = limits.tokens_per_minute;
        if tokens_per_minute == 0 || tokens == 0 {
            return;
        }
        match &self.shared {
            Some(store) => {
                let charge = Self::pending_charge(store, client, tokens_per_minute, tokens);
                self.send_charges(store, &[charge]).await;
            }
            None => self.tokens.charge(client, tokens_per_minute, tokens),
        }
    }

    /// [`Self::charge`] without waiting: in process at once; in Redis with
    /// the other charges of the next couple of milliseconds, in one round
    /// trip. For answers already given, whose next request may wait that long
    /// for their tokens to count.
    pub fn charge_soon(self: &Arc<Self>, client: &ClientId, limits: &RateLimitConfig, tokens: u64) {
        let tokens_per_minute = limits.tokens_per_minute;
        if tokens_per_minute == 0 || tokens == 0 {
            return;
        }
        let Some(store) = &self.shared else {
            self.tokens.charge(client, tokens_per_minute, tokens);
            return;
        };
        let charge = Self::pending_charge(store, client, tokens_per_minute, tokens);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.0.push(charge);
        if std::mem::replace(&mut pending.1, true) {
            return;
        }
        drop(pending);
        let limits = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CHARGE_BATCH_WINDOW).await;
            let batch = {
                let mut pending = limits.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.1 = false;
                std::mem::take(&mut pending.0)
            };
            if let Some(store) = &limits.shared {
                for part in batch.chunks(CHARGE_BATCH_MAX) {
                    limits.send_charges(store, part).await;
                }
            }
        });
    }

    fn pending_charge(
        store: &SharedStore,
        client: &ClientId,
        tokens_per_minute: u64,
        tokens: u64,
    ) -> PendingCharge {
        (
            limit_key(store, client, "tokens"),
            token_period_us(tokens_per_minute),
            tokens,
        )
    }

    async fn send_charges(&self, store: &SharedStore, charges: &[PendingCharge]) {
        let mut invocation = self.charge_script.prepare_invoke();
        invocation.arg(MAX_TOKEN_DEBT.as_micros() as f64);
        for (key, period, tokens) in charges {
            invocation.key(key).arg(*period).arg(*tokens);
        }
        let _ = store.invoke::<i64>("charge", &invocation).await;
    }

    /// Forgets in-process allowances that are whole again, so idle clients
    /// cost no memory (Redis expires its own).
    pub fn forget_idle(&self) {
        for (_, limiter) in &self.requests {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.tokens.forget_idle();
    }
}

/// Where `client`'s allowance of `what` (`requests`, `tokens`) is kept in
/// Redis: `{prefix}limit:{client}:{what}`, hash-tagged by client so that a
/// script's two keys would share a Redis Cluster slot.
fn limit_key(store: &SharedStore, client: &ClientId, what: &str) -> String {
    store.key(&format!("limit:{{{}}}:{what}", client.shared_name()))
}

fn token_period_us(tokens_per_minute: u64) -> f64 {
    if tokens_per_minute == 0 {
        0.0
    } else {
        TOKEN_WINDOW.as_micros() as f64 / tokens_per_minute as f64
    }
}

fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

/// Token budgets kept in process: per client, the moment its minute of
/// tokens is whole again.
#[derive(Default)]
struct TokenLedger {
    whole_at: Mutex<HashMap<ClientId, Instant>>,
}

impl TokenLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Instant>> {
        self.whole_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses while less than one token of the minute is left.
    fn check(&self, client: &ClientId, tokens_per_minute: u64) -> Result<(), Refusal> {
        let now = Instant::now();
        let Some(whole_at) = self.lock().get(client).copied() else {
            return Ok(());
        };
        let ahead = whole_at.saturating_duration_since(now).as_nanos();
        let window = TOKEN_WINDOW.as_nanos();
        let allowed = window - window / u128::from(tokens_per_minute);
        if ahead > allowed {
            Err(Refusal::TokensSpent(nanos(ahead - allowed)))
        } else {
            Ok(())
        }
    }

    fn charge(&self, client: &ClientId, tokens_per_minute: u64, tokens: u64) {
        let now = Instant::now();
        let cost = TOKEN_WINDOW.as_nanos() * u128::from(tokens) / u128::from(tokens_per_minute);
        let cost = nanos(cost.min(MAX_TOKEN_DEBT.as_nanos()));
        let mut ledger = self.lock();
        let whole_at = ledger.entry(client.clone()).or_insert(now);
        *whole_at = ((*whole_at).max(now) + cost).min(now + MAX_TOKEN_DEBT);
    }

    fn forget_idle(&self) {
        let now = Instant::now();
        let mut ledger = self.lock();
        ledger.retain(|_, whole_at| *whole_at > now);
        ledger.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> ClientId {
        ClientId::Key(
            n,
            Arc::new(crate::auth::KeyName::new(n, None, &format!("key-{n}"))),
        )
    }

    fn limits(requests_per_second: f64, burst: u32, tokens_per_minute: u64) -> RateLimitConfig {
        RateLimitConfig {
            requests_per_second,
            burst,
            tokens_per_minute,
        }
    }

    #[tokio::test]
    async fn the_request_limit_allows_the_burst_then_says_when() {
        let config = limits(1.0, 3, 0);
        let limit = Limits::new([&config], None);
        let client = key(1);
        for _ in 0..3 {
            assert_eq!(limit.admit(&client, &config).await, Ok(()));
        }
        match limit.admit(&client, &config).await {
            Err(Refusal::RateLimited(wait)) => assert!(wait <= Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            limit.admit(&key(2), &config).await,
            Ok(()),
            "allowances are per client"
        );
    }

    #[tokio::test]
    async fn a_key_with_its_own_rate_gets_its_own_bucket() {
        let defaults = limits(1.0, 1, 0);
        let generous = limits(1000.0, 50, 0);
        let limit = Limits::new([&defaults, &generous], None);
        let client = key(1);
        for _ in 0..50 {
            assert_eq!(limit.admit(&client, &generous).await, Ok(()));
        }
        let other = key(2);
        assert_eq!(limit.admit(&other, &defaults).await, Ok(()));
        assert!(limit.admit(&other, &defaults).await.is_err());
        let unlimited = limits(0.0, 1, 0);
        for _ in 0..100 {
            assert_eq!(limit.admit(&other, &unlimited).await, Ok(()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_charged_when_spent_and_refused_until_the_minute_frees_up() {
        let config = limits(0.0, 1, 600);
        let limit = Limits::new([&config], None);
        let client = ClientId::Ip([127, 0, 0, 1].into());
        assert!(limit.enabled());
        assert_eq!(limit.admit(&client, &config).await, Ok(()));
        limit.charge(&client, &config, 599).await;
        assert_eq!(
            limit.admit(&client, &config).await,
            Ok(()),
            "one token left"
        );
        // An answer may overspend: 900 of 600 puts the budget 300 tokens
        // (30 s) in debt, plus the one token a request needs.
        limit.charge(&client, &config, 301).await;
        match limit.admit(&client, &config).await {
            Err(Refusal::TokensSpent(wait)) => {
                assert_eq!(wait.as_millis(), 30_100, "300 tokens of debt plus one")
            }
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_millis(30_099)).await;
        assert!(limit.admit(&client, &config).await.is_err());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(limit.admit(&client, &config).await, Ok(()));
        tokio::time::advance(Duration::from_secs(60)).await;
        limit.forget_idle();
        assert!(limit.tokens.lock().is_empty(), "whole again: forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn an_enormous_answer_refuses_for_a_day_at_most() {
        let config = limits(0.0, 1, 1);
        let limit = Limits::new([&config], None);
        let client = ClientId::Unknown;
        limit.charge(&client, &config, u64::MAX).await;
        match limit.admit(&client, &config).await {
            Err(Refusal::TokensSpent(wait)) => assert!(wait <= MAX_TOKEN_DEBT),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_any_limit_nothing_is_enabled() {
        assert!(!Limits::new([&RateLimitConfig::default()], None).enabled());
    }
}
