//! A connection's lease: when its token expires, and the one place a transport waits for that
//! (or for a refreshed token that moves it).

use std::time::Duration;

use tokio::sync::watch;

use super::time::unix_now;

/// How long a live connection's credentials last: the `exp` of its token, moved by
/// `auth:refresh`, and the one timer every transport waits on to close it at expiry.
pub struct Lease {
    state: watch::Sender<LeaseState>,
}

#[derive(Clone, Copy)]
struct LeaseState {
    /// Unix seconds.
    expires_at: u64,
    /// The connection closed: stop waiting.
    ended: bool,
}

/// What ended a wait on a [`Lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// The token expired without a refresh: close the connection (`token_expired`).
    Expired,
    /// The connection closed first.
    Ended,
}

impl Lease {
    /// Moves the expiry to `expires_at` (a refreshed token); waiters see the change.
    pub(crate) fn extend_to(&self, expires_at: u64) {
        self.state.send_modify(|state| state.expires_at = expires_at);
    }

    /// A lease ending at `expires_at` (Unix seconds).
    pub fn new(expires_at: u64) -> Lease {
        Lease { state: watch::Sender::new(LeaseState { expires_at, ended: false }) }
    }

    /// The current expiry, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.state.borrow().expires_at
    }

    /// Whether the token has expired by `now` (Unix seconds) while the connection is open:
    /// for transports that check leases in a periodic sweep instead of waiting on each.
    pub fn expired(&self, now: u64) -> bool {
        let state = self.state.borrow();
        !state.ended && state.expires_at <= now
    }

    /// Stops every [`Lease::wait`] (the connection is gone).
    pub fn end(&self) {
        self.state.send_modify(|state| state.ended = true);
    }

    /// Resolves when the token expires (re-armed by each refresh) or the lease is ended.
    pub async fn wait(&self) -> LeaseEnd {
        let mut changes = self.state.subscribe();
        loop {
            let LeaseState { expires_at, ended } = *changes.borrow_and_update();
            if ended {
                return LeaseEnd::Ended;
            }
            // Re-checked at least daily, so a far `exp` never overflows the timer.
            let left = Duration::from_secs(expires_at.saturating_sub(unix_now()).min(86_400));
            if left.is_zero() {
                return LeaseEnd::Expired;
            }
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                changed = changes.changed() => if changed.is_err() { return LeaseEnd::Ended },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_at_its_exp_unless_refreshed_and_ends_with_its_connection() {
        let lease = Arc::new(Lease::new(unix_now() + 2));
        let waiter = tokio::spawn({
            let lease = lease.clone();
            async move { lease.wait().await }
        });
        tokio::task::yield_now().await;
        lease.extend_to(u64::MAX);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiter.is_finished(), "a refresh re-arms the timer");
        lease.end();
        assert_eq!(waiter.await.expect("waiter"), LeaseEnd::Ended);
        assert_eq!(Lease::new(unix_now().saturating_sub(1)).wait().await, LeaseEnd::Expired);
    }
}
