//! The research answer cache (opt-in): deterministic answers only, keyed by
//! the normalised request, bounded in entries and bytes, with identical
//! concurrent misses coalesced into one upstream call (moka's `entry` API).
//! With `redis:`, Redis is the second level that every replica shares: a
//! miss here is looked up there before any upstream is asked, and a fresh
//! answer is stored in both, with the same expiry. Without Redis (down, or
//! slow) the cache is what this replica holds.

use super::{ResearchAnswer, ResearchFailure, ResearchRequest};
use crate::config::CacheConfig;
use crate::shared::SharedStore;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What identifies an answer: the normalised request and the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey {
    /// The query with surrounding whitespace removed and inner runs folded.
    query: String,
    max_tokens: i64,
    /// Temperature in thousandths, so 0, 0.0 and 0.000 are one key.
    temperature_milli: i64,
    model: String,
}

impl CacheKey {
    pub fn new(req: &ResearchRequest, model: &str) -> CacheKey {
        CacheKey {
            query: req.query.split_whitespace().collect::<Vec<_>>().join(" "),
            max_tokens: req.max_tokens,
            temperature_milli: (req.temperature * 1000.0).round() as i64,
            model: model.to_string(),
        }
    }
}

/// How the cache took part in an answer, for `X-Cache` and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// `Cache-Control: no-cache`: looked up nothing, stored the fresh answer.
    Bypass,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "HIT",
            CacheOutcome::Miss => "MISS",
            CacheOutcome::Bypass => "BYPASS",
        }
    }
}

/// An answer as the cache holds it, with the moment it expires (the same
/// on every replica, however it got there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedAnswer {
    result: String,
    model: String,
    tokens_used: u64,
    latency_ms: u64,
    timestamp: String,
    upstream: String,
    /// Milliseconds since the Unix epoch.
    expires_at_ms: u64,
}

impl CachedAnswer {
    fn new(answer: &ResearchAnswer, ttl: Duration) -> CachedAnswer {
        CachedAnswer {
            result: answer.result.clone(),
            model: answer.model.clone(),
            tokens_used: answer.tokens_used,
            latency_ms: answer.latency_ms,
            timestamp: answer.timestamp.clone(),
            upstream: answer.upstream.clone(),
            expires_at_ms: unix_ms().saturating_add(ttl.as_millis() as u64),
        }
    }

    pub fn answer(&self) -> ResearchAnswer {
        ResearchAnswer {
            result: self.result.clone(),
            model: self.model.clone(),
            tokens_used: self.tokens_used,
            latency_ms: self.latency_ms,
            timestamp: self.timestamp.clone(),
            upstream: self.upstream.clone(),
        }
    }

    /// Time left before it expires (zero once it has).
    fn time_left(&self) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(unix_ms()))
    }
}

/// The form stored in Redis: the key itself beside the answer, so that two
/// requests whose digests collide can never be served each other's answer.
#[derive(Serialize, Deserialize)]
struct SharedEntry {
    key: CacheKey,
    answer: CachedAnswer,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Each entry lives until its own expiry: one that came from Redis with
/// little time left does not get a whole TTL here.
struct UntilItExpires;

impl moka::Expiry<CacheKey, Arc<CachedAnswer>> for UntilItExpires {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedAnswer>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.time_left())
    }

    /// A refresh (`Cache-Control: no-cache`) starts the new answer's time.
    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedAnswer>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.time_left())
    }
}

/// Cached research answers.
pub struct ResearchCache {
    answers: Cache<CacheKey, Arc<CachedAnswer>>,
    max_temperature: f64,
    ttl: Duration,
    shared: Option<Arc<SharedStore>>,
}

impl ResearchCache {
    /// A cache for `config`, with `shared` as its second level when set.
    pub fn new(config: &CacheConfig, shared: Option<Arc<SharedStore>>) -> ResearchCache {
        // moka bounds one weight. Each entry weighs its bytes, but at least an
        // equal share of the byte budget, so that `max_bytes` bounds the memory
        // and no more than `max_entries` entries fit.
        let floor = (config.max_bytes / config.max_entries.max(1)).max(1);
        let answers = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |key: &CacheKey, answer: &Arc<CachedAnswer>| {
                let bytes = (key.query.len() + answer.result.len() + answer.model.len()) as u64;
                u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
            })
            .expire_after(UntilItExpires)
            .build();
        ResearchCache {
            answers,
            max_temperature: config.max_temperature,
            ttl: config.ttl,
            shared,
        }
    }

    /// Whether a request may be served from or stored in the cache.
    pub fn admits(&self, req: &ResearchRequest) -> bool {
        req.temperature <= self.max_temperature
    }

    /// The cached answer for `key`, or the one `compute` produces, computed
    /// once however many identical requests wait for it. Failures are not
    /// cached. `bypass` skips the lookup but still stores a fresh answer.
    pub async fn get_or_compute<F>(
        &self,
        key: CacheKey,
        bypass: bool,
        compute: F,
    ) -> (Result<Arc<CachedAnswer>, ResearchFailure>, CacheOutcome)
    where
        F: std::future::Future<Output = Result<ResearchAnswer, ResearchFailure>>,
    {
        if bypass {
            let result = compute
                .await
                .map(|a| Arc::new(CachedAnswer::new(&a, self.ttl)));
            if let Ok(answer) = &result {
                self.store_shared(&key, answer).await;
                self.answers.insert(key, answer.clone()).await;
            }
            return (result, CacheOutcome::Bypass);
        }
        let from_shared = AtomicBool::new(false);
        let fill = async {
            if let Some(answer) = self.lookup_shared(&key).await {
                from_shared.store(true, Ordering::Relaxed);
                return Ok(answer);
            }
            let answer = Arc::new(CachedAnswer::new(&compute.await?, self.ttl));
            self.store_shared(&key, &answer).await;
            Ok::<_, ResearchFailure>(answer)
        };
        let entry = self
            .answers
            .entry(key.clone())
            .or_try_insert_with(fill)
            .await;
        match entry {
            Ok(entry) => {
                let outcome = if entry.is_fresh() && !from_shared.load(Ordering::Relaxed) {
                    CacheOutcome::Miss
                } else {
                    CacheOutcome::Hit
                };
                (Ok(entry.into_value()), outcome)
            }
            Err(failure) => (Err((*failure).clone()), CacheOutcome::Miss),
        }
    }

    /// Where `key`'s answer is kept in Redis: a digest of the key, whatever
    /// the query's length.
    fn shared_key(store: &SharedStore, key: &CacheKey) -> String {
        let text = serde_json::to_string(key).unwrap_or_default();
        store.key(&format!(
            "cache:{}",
            sha1_smol::Sha1::from(text.as_bytes()).digest()
        ))
    }

    async fn lookup_shared(&self, key: &CacheKey) -> Option<Arc<CachedAnswer>> {
        let store = self.shared.as_ref()?;
        let mut get = redis::cmd("GET");
        get.arg(Self::shared_key(store, key));
        let text: Option<Vec<u8>> = store.query("cache_get", &get).await.ok()?;
        let entry: SharedEntry = serde_json::from_slice(&text?).ok()?;
        (entry.key == *key && !entry.answer.time_left().is_zero()).then(|| Arc::new(entry.answer))
    }

    async fn store_shared(&self, key: &CacheKey, answer: &CachedAnswer) {
        let Some(store) = &self.shared else {
            return;
        };
        let entry = SharedEntry {
            key: key.clone(),
            answer: answer.clone(),
        };
        let Ok(text) = serde_json::to_vec(&entry) else {
            return;
        };
        let mut set = redis::cmd("SET");
        set.arg(Self::shared_key(store, key))
            .arg(text)
            .arg("PX")
            .arg(answer.time_left().as_millis().max(1) as u64);
        // A failed store is counted by the store; the answer is served anyway.
        let _ = store.query::<()>("cache_put", &set).await;
    }

    /// Entries now (after pending evictions ran).
    pub async fn entry_count(&self) -> u64 {
        self.answers.run_pending_tasks().await;
        self.answers.entry_count()
    }
}
