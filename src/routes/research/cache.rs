//! The research answer cache (opt-in): deterministic answers only, keyed by
//! the normalised request, bounded in entries and bytes, with identical
//! concurrent misses coalesced into one upstream call (moka's `entry` API).

use super::{ResearchAnswer, ResearchFailure, ResearchRequest};
use crate::config::CacheConfig;
use moka::future::Cache;
use std::sync::Arc;

/// What identifies an answer: the normalised request and the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// Cached research answers.
pub struct ResearchCache {
    answers: Cache<CacheKey, Arc<ResearchAnswer>>,
    max_temperature: f64,
}

impl ResearchCache {
    pub fn new(config: &CacheConfig) -> ResearchCache {
        // moka bounds one weight. Each entry weighs its bytes, but at least an
        // equal share of the byte budget, so that `max_bytes` bounds the memory
        // and no more than `max_entries` entries fit.
        let floor = (config.max_bytes / config.max_entries.max(1)).max(1);
        let answers = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |key: &CacheKey, answer: &Arc<ResearchAnswer>| {
                let bytes = (key.query.len() + answer.result.len() + answer.model.len()) as u64;
                u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
            })
            .time_to_live(config.ttl)
            .build();
        ResearchCache {
            answers,
            max_temperature: config.max_temperature,
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
    ) -> (Result<Arc<ResearchAnswer>, ResearchFailure>, CacheOutcome)
    where
        F: std::future::Future<Output = Result<ResearchAnswer, ResearchFailure>>,
    {
        if bypass {
            let result = compute.await.map(Arc::new);
            if let Ok(answer) = &result {
                self.answers.insert(key, answer.clone()).await;
            }
            return (result, CacheOutcome::Bypass);
        }
        let entry = self
            .answers
            .entry(key)
            .or_try_insert_with(async { compute.await.map(Arc::new) })
            .await;
        match entry {
            Ok(entry) => {
                let outcome = if entry.is_fresh() {
                    CacheOutcome::Miss
                } else {
                    CacheOutcome::Hit
                };
                (Ok(entry.into_value()), outcome)
            }
            Err(failure) => (Err((*failure).clone()), CacheOutcome::Miss),
        }
    }

    /// Entries now (after pending evictions ran).
    pub async fn entry_count(&self) -> u64 {
        self.answers.run_pending_tasks().await;
        self.answers.entry_count()
    }
}
