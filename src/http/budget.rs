//! The HTTP action budget: how many actions may wait for a PBX at once, in all and per user, so
//! one user cannot take every slot. A slot is released when it is dropped (the result came, or
//! the handler gave up because its client went away).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why an HTTP action got no slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("too many HTTP actions in flight (at most {0})")]
    Full(usize),
    #[error("user {user} has {share} HTTP actions in flight, its share")]
    Share { user: String, share: usize },
}

/// Slots in flight: in all, and per user name.
pub struct ActionBudget {
    total: usize,
    per_user: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One action's slot; released on drop.
pub struct Slot {
    budget: Arc<ActionBudget>,
    user: String,
}

impl ActionBudget {
    pub fn new(total: usize, per_user: usize) -> Arc<ActionBudget> {
        Arc::new(ActionBudget {
            total,
            per_user: per_user.clamp(1, total.max(1)),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `user`, unless the budget or the user's share is used up.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<Slot, BudgetError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.values().sum::<usize>() >= self.total {
            return Err(BudgetError::Full(self.total));
        }
        let mine = held.entry(user.to_string()).or_insert(0);
        if *mine >= self.per_user {
            return Err(BudgetError::Share {
                user: user.to_string(),
                share: self.per_user,
            });
        }
        *mine += 1;
        Ok(Slot {
            budget: self.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.budget.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_gets_its_share_and_slots_come_back() {
        let b = ActionBudget::new(3, 2);
        let a1 = b.acquire("a").unwrap();
        let _a2 = b.acquire("a").unwrap();
        assert!(matches!(b.acquire("a"), Err(BudgetError::Share { .. })));
        let _b1 = b.acquire("b").unwrap();
        assert_eq!(b.acquire("c").err(), Some(BudgetError::Full(3)));
        drop(a1);
        assert!(b.acquire("a").is_ok());
    }
}
