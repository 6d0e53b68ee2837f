//! The policy in force: one value the engine replaces on a reload (SIGHUP) and every stage
//! reads at each decision, so that a reload applies to the next decision of a connection that
//! is already open, not only to connections opened after it.

use std::sync::{Arc, RwLock};

use super::Policy;

/// The current policy, shared by the engine and every connection. Readers take a clone of the
/// `Arc` and decide with it, so one decision is always made by one whole policy, never by
/// parts of two.
#[derive(Debug)]
pub struct PolicyHandle {
    current: RwLock<Arc<Policy>>,
}

impl PolicyHandle {
    /// A handle whose current policy is `policy`.
    pub fn new(policy: Arc<Policy>) -> PolicyHandle {
        PolicyHandle {
            current: RwLock::new(policy),
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        // A poisoned lock still holds a whole `Arc` (replacing it cannot panic half-way).
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `new` in force and gives back the policy it replaces.
    pub fn replace(&self, new: Arc<Policy>) -> Arc<Policy> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *current, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_puts_the_new_policy_in_force_and_returns_the_old() {
        let old = Arc::new(Policy::allow_all());
        let new = Arc::new(Policy::parse("default = \"deny\"\n", "new.toml").unwrap());
        let handle = PolicyHandle::new(old.clone());
        assert!(Arc::ptr_eq(&handle.current(), &old));
        let replaced = handle.replace(new.clone());
        assert!(Arc::ptr_eq(&replaced, &old));
        assert!(Arc::ptr_eq(&handle.current(), &new));
    }
}
