//! Per-user budgets of the expensive requests besides message writes: typing, presence
//! queries, `sync`, conversation creation, member additions and search. Each kind has a token bucket
//! of its own per user (a [`RateLimiter`], shared across nodes with Redis like the message
//! limiter); a request over its budget is refused with `rate_limited` before it does any
//! work. Defaults are far above what a normal client sends.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::error::ChatError;
use super::ports::RateLimiter;

/// A sustained rate per user per second and a burst; `per_second == 0` switches it off.
/// Written `RATE/BURST` in flags and the config file, e.g. `5/30`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Budget {
    /// Requests per second, sustained; 0: unlimited.
    pub per_second: u32,
    /// Requests admitted at once after a quiet while (at least 1).
    pub burst: u32,
}

impl Budget {
    /// `per_second` sustained with bursts of `burst`.
    pub const fn new(per_second: u32, burst: u32) -> Budget {
        Budget { per_second, burst }
    }
}

/// Why a budget could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected RATE/BURST (requests per second per user, burst), e.g. 5/30; got {0:?}")]
pub struct BadBudget(String);

impl FromStr for Budget {
    type Err = BadBudget;

    fn from_str(text: &str) -> Result<Budget, BadBudget> {
        let bad = || BadBudget(text.to_owned());
        let (rate, burst) = text.split_once('/').ok_or_else(bad)?;
        let per_second = rate.trim().parse().map_err(|_| bad())?;
        let burst = burst.trim().parse().map_err(|_| bad())?;
        if burst == 0 {
            return Err(bad());
        }
        Ok(Budget { per_second, burst })
    }
}

impl TryFrom<String> for Budget {
    type Error = BadBudget;

    fn try_from(text: String) -> Result<Budget, BadBudget> {
        text.parse()
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.per_second, self.burst)
    }
}

/// The kinds of budgeted requests, each with a bucket of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetKind {
    /// `typing:start` and `typing:stop`.
    Typing,
    /// `presence:query`.
    Presence,
    /// `sync`.
    Sync,
    /// Conversation creation.
    CreateConversation,
    /// Member additions.
    AddMembers,
    /// Message search.
    Search,
}

impl BudgetKind {
    /// Every kind, in [`EventBudgets`] field order.
    pub const ALL: [BudgetKind; 6] = [
        BudgetKind::Typing,
        BudgetKind::Presence,
        BudgetKind::Sync,
        BudgetKind::CreateConversation,
        BudgetKind::AddMembers,
        BudgetKind::Search,
    ];

    /// A short name (Redis key namespaces, logs).
    pub fn name(self) -> &'static str {
        match self {
            BudgetKind::Typing => "typing",
            BudgetKind::Presence => "presence",
            BudgetKind::Sync => "sync",
            BudgetKind::CreateConversation => "create",
            BudgetKind::AddMembers => "members",
            BudgetKind::Search => "search",
        }
    }
}

/// The budget of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBudgets {
    /// `typing:start` / `typing:stop` together.
    pub typing: Budget,
    /// `presence:query`.
    pub presence: Budget,
    /// `sync`.
    pub sync: Budget,
    /// Conversation creation.
    pub create_conversation: Budget,
    /// Member additions.
    pub add_members: Budget,
    /// Message search.
    pub search: Budget,
}

impl Default for EventBudgets {
    fn default() -> Self {
        EventBudgets {
            typing: Budget::new(5, 30),
            presence: Budget::new(5, 30),
            sync: Budget::new(5, 30),
            create_conversation: Budget::new(2, 30),
            add_members: Budget::new(5, 30),
            search: Budget::new(2, 20),
        }
    }
}

impl EventBudgets {
    /// The budget of `kind`.
    pub fn of(&self, kind: BudgetKind) -> Budget {
        match kind {
            BudgetKind::Typing => self.typing,
            BudgetKind::Presence => self.presence,
            BudgetKind::Sync => self.sync,
            BudgetKind::CreateConversation => self.create_conversation,
            BudgetKind::AddMembers => self.add_members,
            BudgetKind::Search => self.search,
        }
    }
}

/// One limiter per kind, built for the [`EventBudgets`] in force (none: unlimited).
#[derive(Clone, Default)]
pub struct BudgetLimiters {
    limiters: Vec<(BudgetKind, Arc<dyn RateLimiter>)>,
}

impl BudgetLimiters {
    /// Admits each kind with its limiter (built for its [`Budget`]); a kind left out is not
    /// limited.
    pub fn new(limiters: Vec<(BudgetKind, Arc<dyn RateLimiter>)>) -> Self {
        BudgetLimiters { limiters }
    }

    /// Takes one request of `kind` from `user_id`'s budget, or refuses with `rate_limited`.
    pub async fn spend(&self, kind: BudgetKind, user_id: &str) -> Result<(), ChatError> {
        match self.limiters.iter().find(|(k, _)| *k == kind) {
            Some((_, limiter)) => Ok(limiter.check(user_id).await?),
            None => Ok(()),
        }
    }

    /// Forgets the state of idle users (periodic housekeeping).
    pub fn forget_idle(&self) {
        for (_, limiter) in &self.limiters {
            limiter.forget_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_reads_as_rate_slash_burst() {
        assert_eq!("5/30".parse(), Ok(Budget::new(5, 30)));
        assert_eq!("0/1".parse(), Ok(Budget::new(0, 1)));
        for bad in ["5", "5/0", "a/1", "1/b", "-1/2", ""] {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
        assert_eq!(Budget::new(2, 30).to_string(), "2/30");
    }
}
