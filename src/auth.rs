//! Who the client is: client keys compared in constant time, each with its
//! name and limits. How much a client may ask is `limits`.

use crate::config::{AuthConfig, RateLimitConfig};
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A client as the limits and the access log see it. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// The n-th configured key (1-based), with its names.
    Key(usize, Arc<KeyName>),
    Ip(IpAddr),
    /// No key and no address (should not happen over TCP).
    Unknown,
}

/// How a key is named: in logs, and in the state replicas share.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct KeyName {
    /// Its configured `name`, else `key#n`.
    pub shown: String,
    /// Its configured `name`, else `key-` and 16 hex digits of a digest of
    /// the key: the same on every replica whatever the order of the keys
    /// (a rolling change of the key list), and not the key.
    pub shared: String,
}

impl KeyName {
    pub fn new(position: usize, name: Option<&str>, key: &str) -> KeyName {
        match name {
            Some(name) => KeyName {
                shown: name.to_string(),
                shared: name.to_string(),
            },
            None => {
                let mut digest = sha1_smol::Sha1::new();
                digest.update(b"context7-lb client key\0");
                digest.update(key.as_bytes());
                let hex = digest.digest().to_string();
                KeyName {
                    shown: format!("key#{position}"),
                    shared: format!("key-{}", &hex[..16]),
                }
            }
        }
    }
}

impl ClientId {
    /// The client's name in the state replicas share (Redis).
    pub fn shared_name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            ClientId::Key(_, name) => std::borrow::Cow::Borrowed(&name.shared),
            ClientId::Ip(ip) => std::borrow::Cow::Owned(ip.to_string()),
            ClientId::Unknown => std::borrow::Cow::Borrowed("-"),
        }
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientId::Key(_, name) => f.write_str(&name.shown),
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
    /// 429: over the request rate; the client may retry after this long.
    RateLimited(std::time::Duration),
    /// 429: the key's tokens per minute are spent; retry after this long.
    TokensSpent(std::time::Duration),
    /// 503: the limits live in Redis, which cannot be reached, and
    /// `redis.on_failure` is `deny`.
    LimitsUnavailable,
}

/// One configured key.
struct ClientKey {
    secret: Vec<u8>,
    name: Arc<KeyName>,
    limits: RateLimitConfig,
}

/// The configured client keys; empty means authentication is off.
pub struct ClientKeys {
    keys: Vec<ClientKey>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKeys({} keys)", self.keys.len())
    }
}

impl ClientKeys {
    /// The keys of `config`, each with its limits (its own, else `defaults`).
    pub fn from_config(
        config: &AuthConfig,
        defaults: &RateLimitConfig,
    ) -> Result<ClientKeys, String> {
        let keys = crate::config::client_keys(config)?;
        Ok(ClientKeys {
            keys: keys
                .into_iter()
                .enumerate()
                .map(|(i, entry)| ClientKey {
                    name: Arc::new(KeyName::new(i + 1, entry.name.as_deref(), &entry.key)),
                    limits: entry.limits(defaults),
                    secret: entry.key.into_bytes(),
                })
                .collect(),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The limits of the n-th key (1-based), when it has its own.
    pub fn limits_of(&self, n: usize) -> Option<&RateLimitConfig> {
        self.keys.get(n.checked_sub(1)?).map(|k| &k.limits)
    }

    /// Every key's limits, in order.
    pub fn all_limits(&self) -> impl Iterator<Item = &RateLimitConfig> {
        self.keys.iter().map(|k| &k.limits)
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
        self.match_key(presented)
    }

    /// [`ClientKeys::check`], or HTTP Basic credentials whose password is a
    /// key (any user name): a browser cannot send a bearer key when it opens
    /// a page, but asks for and then sends Basic credentials by itself. Taken
    /// only where a page needs it (`/ui` and the `/status` it reads).
    pub fn check_from_browser(&self, authorization: Option<&[u8]>) -> Result<ClientId, Refusal> {
        match authorization.and_then(basic_password) {
            Some(password) => self.match_key(&password),
            None => self.check(authorization),
        }
    }

    fn match_key(&self, presented: &[u8]) -> Result<ClientId, Refusal> {
        if presented.is_empty() {
            return Err(Refusal::MissingKey);
        }
        let mut matched = 0usize;
        for (i, key) in self.keys.iter().enumerate() {
            let equal: bool = key.secret.as_slice().ct_eq(presented).into();
            // Branch-free accumulation of the (single) matching position.
            matched |= (i + 1) * usize::from(equal);
        }
        if matched == 0 {
            Err(Refusal::WrongKey)
        } else {
            Ok(ClientId::Key(matched, self.keys[matched - 1].name.clone()))
        }
    }
}

/// The password of `Basic base64(user:password)`; `None` for another scheme.
/// Credentials that are not base64 or have no `:` give an empty password,
/// which no key matches.
fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let value = value.trim_ascii();
    if !(value.len() > 6 && value[..6].eq_ignore_ascii_case(b"basic ")) {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value[6..].trim_ascii())
        .unwrap_or_default();
    Some(match decoded.iter().position(|&b| b == b':') {
        Some(colon) => decoded[colon + 1..].to_vec(),
        None => Vec::new(),
    })
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
        Some(value[7..].trim_ascii()).filter(|k| !k.is_empty())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> ClientKeys {
        ClientKeys::from_config(
            &AuthConfig {
                keys: list.iter().map(|&k| k.into()).collect(),
                keys_file: None,
            },
            &RateLimitConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_browser_may_send_the_key_as_a_basic_password_where_a_page_needs_it() {
        use base64::Engine;
        let k = keys(&["first-key-123", "second-key-456"]);
        let basic = |credentials: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        };
        let second = k
            .check_from_browser(Some(basic("ops:second-key-456").as_bytes()))
            .unwrap();
        assert!(matches!(second, ClientId::Key(2, _)));
        // Bearer still works there; elsewhere Basic is no key at all.
        assert!(k.check_from_browser(Some(b"Bearer first-key-123")).is_ok());
        assert_eq!(
            k.check(Some(basic("ops:second-key-456").as_bytes())),
            Err(Refusal::MissingKey)
        );
        for (credentials, refusal) in [
            ("ops:nope-nope-nope", Refusal::WrongKey),
            ("second-key-456", Refusal::MissingKey),
            ("ops:", Refusal::MissingKey),
        ] {
            assert_eq!(
                k.check_from_browser(Some(basic(credentials).as_bytes())),
                Err(refusal),
                "{credentials}"
            );
        }
        assert_eq!(
            k.check_from_browser(Some(b"Basic !!!not-base64")),
            Err(Refusal::MissingKey)
        );
    }

    #[test]
    fn bearer_keys_are_matched_and_identified_by_position() {
        let k = keys(&["first-key-123", "second-key-456"]);
        let second = k.check(Some(b"Bearer second-key-456")).unwrap();
        assert!(matches!(second, ClientId::Key(2, _)));
        assert_eq!(second.to_string(), "key#2");
        let first = k.check(Some(b"bearer  first-key-123 ")).unwrap();
        assert!(matches!(first, ClientId::Key(1, _)));
        // In shared state a key is named by a digest, the same whatever its
        // position, never by the key.
        let moved = keys(&["second-key-456", "first-key-123"]);
        let first_moved = moved.check(Some(b"Bearer first-key-123")).unwrap();
        assert_eq!(first.shared_name(), first_moved.shared_name());
        assert_ne!(first.shared_name(), second.shared_name());
        assert!(first.shared_name().starts_with("key-"));
        assert_eq!(first.shared_name().len(), 20);
        assert!(!first.shared_name().contains("first"));
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
}
