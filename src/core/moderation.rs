//! What a node knows of the operator's moderation, kept in memory so that checking a request
//! costs a hash lookup: the banned users and the recent disconnect marks. The store is the
//! source of truth; the operator actions (`chat::admin`) load and follow it.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::Duration;

use super::time::Timestamp;

/// How often a node reloads the banned set and the recent disconnect marks from the store
/// even when its bus reported no loss.
pub const BANS_RECHECK: Duration = Duration::from_secs(2);

/// How far back a node follows operator disconnect marks: a connection opened before a mark
/// is closed within a tick or two, so older marks have nothing left to close.
pub(crate) const DISCONNECTS_FOLLOWED: Duration = Duration::from_secs(300);

/// The users banned, as this node knows them. `std::sync::RwLock`: every use is one set
/// operation, never held across `.await`; reads (every request) vastly outnumber writes.
#[derive(Default)]
pub struct Bans {
    users: RwLock<HashSet<String>>,
}

impl Bans {
    /// Whether `user_id` is banned.
    pub fn contains(&self, user_id: &str) -> bool {
        self.users.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(user_id)
    }

    pub(crate) fn set(&self, user_id: &str, banned: bool) {
        let mut users = self.users.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if banned {
            users.insert(user_id.to_owned());
        } else {
            users.remove(user_id);
        }
    }

    pub(crate) fn replace(&self, banned: Vec<String>) {
        *self.users.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = banned.into_iter().collect();
    }
}

/// Operator disconnects of the last [`DISCONNECTS_FOLLOWED`], as this node knows them: user
/// → the mark (connections the user opened before it are to be closed). Usually empty.
#[derive(Default)]
pub struct DisconnectMarks {
    marks: RwLock<HashMap<String, Timestamp>>,
}

impl DisconnectMarks {
    /// Runs `read` over the marks (user → mark). `read` must not block.
    pub(crate) fn read<R>(&self, read: impl FnOnce(&HashMap<String, Timestamp>) -> R) -> R {
        read(&self.marks.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub(crate) fn set(&self, user_id: &str, at: Timestamp) {
        let mut marks = self.marks.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mark = marks.entry(user_id.to_owned()).or_insert(at);
        *mark = (*mark).max(at);
    }

    pub(crate) fn replace(&self, marks: Vec<(String, Timestamp)>) {
        *self.marks.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = marks.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_are_set_lifted_and_replaced() {
        let bans = Bans::default();
        bans.set("mallory", true);
        assert!(bans.contains("mallory"));
        bans.set("mallory", false);
        assert!(!bans.contains("mallory"));
        bans.replace(vec!["eve".into()]);
        assert!(bans.contains("eve") && !bans.contains("mallory"));
    }
}
