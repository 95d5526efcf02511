//! MCP sessions: made by `initialize`, bounded in number and idle time. With
//! `redis:` they live in Redis, so that a session made on one replica is
//! usable and ended on any; while Redis cannot be reached, `initialize` makes
//! sessions here (used only through this replica) and a session this replica
//! does not hold is not found, so the client initializes again.

use super::*;

// ---------------------------------------------------------------------------
// Sessions

struct SessionEntry {
    protocol_version: &'static str,
    last_used: Instant,
}

/// Live sessions, bounded in number and idle time.
///
/// Time comes from `tokio::time::Instant`, so tests can pause and advance it.
/// Ids are 128 bits from the operating system's random source: a session
/// grants nothing, but a guessable id would let anyone end another client's
/// session with `DELETE`.
pub struct SessionStore {
    sessions: Mutex<HashMap<String, SessionEntry>>,
    idle_timeout: Duration,
    max_sessions: usize,
    shared: Option<Arc<SharedStore>>,
}

impl SessionStore {
    pub fn new(
        idle_timeout: Duration,
        max_sessions: usize,
        shared: Option<Arc<SharedStore>>,
    ) -> SessionStore {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            idle_timeout,
            max_sessions: max_sessions.max(1),
            shared,
        }
    }

    /// The idle timeout as Redis's `PX` takes it: whole milliseconds, at least 1.
    fn idle_millis(&self) -> u64 {
        (self.idle_timeout.as_millis() as u64).max(1)
    }

    fn shared_key(store: &SharedStore, id: &str) -> String {
        store.key(&format!("mcp:session:{id}"))
    }

    /// Starts a session and returns its id: in Redis when it is configured
    /// and answers, else here.
    pub async fn create(&self, protocol_version: &'static str) -> String {
        if let Some(store) = &self.shared {
            let id = new_session_id();
            let mut set = redis::cmd("SET");
            set.arg(Self::shared_key(store, &id))
                .arg(protocol_version)
                .arg("PX")
                .arg(self.idle_millis());
            if store.query::<()>("session_create", &set).await.is_ok() {
                return id;
            }
        }
        self.create_local(protocol_version)
    }

    /// Marks a session used; its negotiated version, or `None` when the id
    /// is unknown, expired, or kept in a Redis that cannot be reached.
    pub async fn touch(&self, id: &str) -> Option<&'static str> {
        if let Some(version) = self.touch_local(id) {
            return Some(version);
        }
        let store = self.shared.as_ref().filter(|_| is_session_id(id))?;
        let mut get = redis::cmd("GETEX");
        get.arg(Self::shared_key(store, id))
            .arg("PX")
            .arg(self.idle_millis());
        let version: Option<String> = store.query("session_touch", &get).await.ok()?;
        let version = version?;
        SUPPORTED_VERSIONS.iter().copied().find(|v| *v == version)
    }

    /// Ends a session; `false` when there was none live with that id.
    pub async fn remove(&self, id: &str) -> bool {
        if self.remove_local(id) {
            return true;
        }
        let Some(store) = self.shared.as_ref().filter(|_| is_session_id(id)) else {
            return false;
        };
        let mut del = redis::cmd("DEL");
        del.arg(Self::shared_key(store, id));
        store
            .query::<u64>("session_end", &del)
            .await
            .is_ok_and(|n| n > 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session here and returns its id. Expired sessions are dropped
    /// first; at the limit, the one idle the longest makes room. Both are a
    /// scan of the map, which is fine at one `initialize` per client.
    fn create_local(&self, protocol_version: &'static str) -> String {
        let now = Instant::now();
        let id = new_session_id();
        let mut sessions = self.lock();
        sessions.retain(|_, s| now.duration_since(s.last_used) < self.idle_timeout);
        while sessions.len() >= self.max_sessions {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => sessions.remove(&oldest),
                None => break,
            };
        }
        sessions.insert(
            id.clone(),
            SessionEntry {
                protocol_version,
                last_used: now,
            },
        );
        id
    }

    /// Marks a session used; its negotiated version, or `None` when the id
    /// is unknown or the session sat idle too long (it is then dropped).
    fn touch_local(&self, id: &str) -> Option<&'static str> {
        let now = Instant::now();
        let mut sessions = self.lock();
        let session = sessions.get_mut(id)?;
        if now.duration_since(session.last_used) >= self.idle_timeout {
            sessions.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.protocol_version)
    }

    fn remove_local(&self, id: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .remove(id)
            .is_some_and(|s| now.duration_since(s.last_used) < self.idle_timeout)
    }

    /// Sessions held here (not in Redis), expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `id` has the form of the ids this server makes: anything else is
/// not looked up in Redis.
fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// 32 hex digits, visible ASCII as the transport requires.
pub(crate) fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // Not expected on any supported system; a weaker id beats no session.
        log::warn!("no operating-system randomness for a session id ({e}); using fastrand");
        bytes = fastrand::u128(..).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_after_the_idle_timeout_exactly() {
        let store = SessionStore::new(Duration::from_secs(60), 10, None);
        let id = store.create("2025-11-25").await;
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(
            store.touch(&id).await,
            Some("2025-11-25"),
            "use restarts the clock"
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.touch(&id).await.is_some());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(store.touch(&id).await, None, "idle for the whole timeout");
        assert!(store.is_empty(), "an expired session is dropped");
        assert_eq!(store.touch("nope").await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_idle_longest_makes_room() {
        let store = SessionStore::new(Duration::from_secs(600), 2, None);
        let first = store.create("2025-11-25").await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = store.create("2025-11-25").await;
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(store.touch(&first).await.is_some());
        let third = store.create("2025-06-18").await;
        assert_eq!(store.len(), 2);
        assert!(store.touch(&second).await.is_none(), "idle the longest");
        assert!(store.touch(&first).await.is_some());
        assert_eq!(store.touch(&third).await, Some("2025-06-18"));
        assert!(store.remove(&third).await);
        assert!(!store.remove(&third).await);
        assert_ne!(first, third);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_sessions_are_swept_when_a_new_one_starts() {
        let store = SessionStore::new(Duration::from_secs(10), 100, None);
        for _ in 0..5 {
            store.create("2025-11-25").await;
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        store.create("2025-11-25").await;
        assert_eq!(store.len(), 1);
    }
}
