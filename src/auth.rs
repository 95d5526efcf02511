//! Who the client is and how much it may ask: client keys compared in
//! constant time, and a token-bucket rate limit per key (per IP without keys).

use crate::config::{AuthConfig, RateLimitConfig};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// A client as the rate limit and the access log see it. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// The n-th configured key (1-based), as `key#n` in logs.
    Key(usize),
    Ip(IpAddr),
    /// No key and no address (should not happen over TCP).
    Unknown,
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientId::Key(n) => write!(f, "key#{n}"),
            ClientId::Ip(ip) => write!(f, "{ip}"),
            ClientId::Unknown => f.write_str("-"),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no `Authorization: Bearer …`.
    MissingKey,
    /// 401: a key that is not configured.
    WrongKey,
    /// 429: over the rate; the client may retry after this long.
    RateLimited(Duration),
}

/// The configured client keys; empty means authentication is off.
pub struct ClientKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKeys({} keys)", self.keys.len())
    }
}

impl ClientKeys {
    pub fn from_config(config: &AuthConfig) -> Result<ClientKeys, String> {
        let keys = crate::config::client_keys(config)?;
        Ok(ClientKeys {
            keys: keys.into_iter().map(String::into_bytes).collect(),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks an `Authorization` header value. Every configured key is
    /// compared, in constant time, whatever matches, so neither the timing nor
    /// the order of the keys tells anything about them.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<ClientId, Refusal> {
        let Some(value) = authorization else {
            return Err(Refusal::MissingKey);
        };
        let Some(presented) = strip_bearer(value) else {
            return Err(Refusal::MissingKey);
        };
        let mut matched = 0usize;
        for (i, key) in self.keys.iter().enumerate() {
            let equal: bool = key.as_slice().ct_eq(presented).into();
            // Branch-free accumulation of the (single) matching position.
            matched |= (i + 1) * usize::from(equal);
        }
        if matched == 0 {
            Err(Refusal::WrongKey)
        } else {
            Ok(ClientId::Key(matched))
        }
    }
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
        Some(value[7..].trim_ascii()).filter(|k| !k.is_empty())
    } else {
        None
    }
}

/// Token buckets per client.
pub struct RateLimit {
    limiter: Option<DefaultKeyedRateLimiter<ClientId>>,
}

impl RateLimit {
    pub fn from_config(config: &RateLimitConfig) -> RateLimit {
        if config.requests_per_second <= 0.0 {
            return RateLimit { limiter: None };
        }
        let period = Duration::from_secs_f64(1.0 / config.requests_per_second);
        let burst = NonZeroU32::new(config.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = Quota::with_period(period).map(|q| RateLimiter::keyed(q.allow_burst(burst)));
        RateLimit { limiter }
    }

    pub fn enabled(&self) -> bool {
        self.limiter.is_some()
    }

    /// Takes one token from `client`'s bucket, or says how long to wait.
    pub fn check(&self, client: &ClientId) -> Result<(), Refusal> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(client).map_err(|not_until| {
            let clock = governor::clock::DefaultClock::default();
            Refusal::RateLimited(not_until.wait_time_from(governor::clock::Clock::now(&clock)))
        })
    }

    /// Forgets buckets that are full again, so idle clients cost no memory.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> ClientKeys {
        ClientKeys::from_config(&AuthConfig {
            keys: list.iter().map(|k| k.to_string()).collect(),
            keys_file: None,
        })
        .unwrap()
    }

    #[test]
    fn bearer_keys_are_matched_and_identified_by_position() {
        let k = keys(&["first-key-123", "second-key-456"]);
        assert_eq!(
            k.check(Some(b"Bearer second-key-456")),
            Ok(ClientId::Key(2))
        );
        assert_eq!(
            k.check(Some(b"bearer  first-key-123 ")),
            Ok(ClientId::Key(1))
        );
        assert_eq!(
            k.check(Some(b"Bearer nope-nope-nope")),
            Err(Refusal::WrongKey)
        );
        assert_eq!(
            k.check(Some(b"Basic Zm9vOmJhcg==")),
            Err(Refusal::MissingKey)
        );
        assert_eq!(k.check(Some(b"Bearer ")), Err(Refusal::MissingKey));
        assert_eq!(k.check(None), Err(Refusal::MissingKey));
        assert!(!format!("{k:?}").contains("first"));
    }

    #[test]
    fn the_rate_limit_allows_the_burst_then_says_when() {
        let limit = RateLimit::from_config(&RateLimitConfig {
            requests_per_second: 1.0,
            burst: 3,
        });
        let client = ClientId::Key(1);
        for _ in 0..3 {
            assert_eq!(limit.check(&client), Ok(()));
        }
        match limit.check(&client) {
            Err(Refusal::RateLimited(wait)) => assert!(wait <= Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            limit.check(&ClientId::Key(2)),
            Ok(()),
            "buckets are per client"
        );
    }
}
