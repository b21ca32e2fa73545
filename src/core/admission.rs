//! Connection admission: how many realtime connections (Socket.IO, plain WebSocket, SSE)
//! this node holds, in total and per user. Every transport asks here before it accepts a
//! connection and keeps the returned [`Permit`] for the connection's life; dropping the
//! permit gives the place back, so no exit path can leak a slot.
//!
//! The per-user count is per node: behind a load balancer a user may hold
//! `max_per_user` connections on each node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::ChatError;

/// How long a client refused for holding too many connections is told to wait.
const USER_FULL_RETRY: Duration = Duration::from_secs(5);

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The node holds `max_connections` already.
    #[error("this node is at its connection limit; try again later or another node")]
    NodeFull,
    /// The user holds `max_per_user` connections on this node already.
    #[error("too many connections for this user; close one first")]
    UserFull,
}

impl From<Refusal> for ChatError {
    /// A full node is `unavailable` (503); a user over the cap is `rate_limited` (429).
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NodeFull => ChatError::Unavailable(refusal.to_string()),
            Refusal::UserFull => ChatError::RateLimited { retry_after: USER_FULL_RETRY },
        }
    }
}

/// The node's connection counts and caps.
pub struct Admission {
    max_connections: usize,
    max_per_user: usize,
    /// `std::sync::Mutex`: a map lookup and two increments, never held across `.await`.
    /// One lock for both counts keeps check-then-reserve atomic.
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

impl Admission {
    /// Caps of `max_connections` on the node and `max_per_user` per user.
    pub fn new(max_connections: usize, max_per_user: usize) -> Arc<Admission> {
        Arc::new(Admission { max_connections, max_per_user, counts: Mutex::default() })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves a place for one more connection of `user_id`, or says why not.
    pub fn admit(self: &Arc<Self>, user_id: &str) -> Result<Permit, Refusal> {
        let mut counts = self.counts();
        if counts.total >= self.max_connections {
            return Err(Refusal::NodeFull);
        }
        let held = counts.per_user.get(user_id).copied().unwrap_or(0);
        if held >= self.max_per_user {
            return Err(Refusal::UserFull);
        }
        counts.total += 1;
        counts.per_user.insert(user_id.to_owned(), held + 1);
        Ok(Permit { admission: self.clone(), user_id: user_id.to_owned() })
    }

    /// Connections held on this node.
    pub fn connections(&self) -> usize {
        self.counts().total
    }

    fn release(&self, user_id: &str) {
        let mut counts = self.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.per_user.get_mut(user_id) {
            *held -= 1;
            if *held == 0 {
                counts.per_user.remove(user_id);
            }
        }
    }
}

/// One admitted connection's place; released when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    user_id: String,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("user_id", &self.user_id).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(&self.user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_cap_is_refused_until_one_of_theirs_closes() {
        let admission = Admission::new(10, 2);
        let first = admission.admit("alice").expect("first");
        let _second = admission.admit("alice").expect("second");
        assert_eq!(admission.admit("alice").unwrap_err(), Refusal::UserFull);
        assert!(admission.admit("bob").is_ok(), "other users are not affected");
        drop(first);
        assert!(admission.admit("alice").is_ok());
    }

    #[test]
    fn the_node_cap_counts_every_user() {
        let admission = Admission::new(2, 5);
        let _a = admission.admit("alice").expect("alice");
        let b = admission.admit("bob").expect("bob");
        assert_eq!(admission.admit("carol").unwrap_err(), Refusal::NodeFull);
        drop(b);
        assert_eq!(admission.connections(), 1);
        assert!(admission.admit("carol").is_ok());
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_caps() {
        let admission = Admission::new(1000, 3);
        let permits: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16).map(|_| scope.spawn(|| admission.admit("alice").ok())).collect();
            handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
        });
        assert_eq!(permits.len(), 3);
        drop(permits);
        assert_eq!(admission.connections(), 0);
    }
}
