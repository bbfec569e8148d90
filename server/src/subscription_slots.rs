//! Caps on open subscriptions (SUBSCRIBE, EMIT CHANGES, PRINT and cursors
//! over them): at most `--max-subscriptions-per-connection` held by one
//! connection, and `--max-subscriptions-per-relation` reading one
//! relation. Past either, a new one fails with 53400 and those open go on.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::error::{EddyError, Result};

static LIMITS: OnceLock<(usize, usize)> = OnceLock::new();

#[derive(Default)]
struct Open {
    by_session: HashMap<String, usize>,
    by_relation: HashMap<u64, usize>,
}

static OPEN: OnceLock<Mutex<Open>> = OnceLock::new();

/// Sets the caps (once, at startup); without it there are none.
pub fn set_limits(per_connection: usize, per_relation: usize) {
    let _ = LIMITS.set((per_connection, per_relation));
}

fn open() -> std::sync::MutexGuard<'static, Open> {
    OPEN.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// One open subscription, counted until dropped.
#[derive(Debug)]
pub struct SubscriptionSlot {
    session: String,
    relations: Vec<u64>,
}

impl SubscriptionSlot {
    /// Counts a new subscription of `session` reading `relations` (by id,
    /// named by `name_of` in errors), or refuses it past a cap.
    pub fn take(
        session: &str,
        relations: &[u64],
        name_of: impl Fn(u64) -> String,
    ) -> Result<SubscriptionSlot> {
        let (per_connection, per_relation) =
            LIMITS.get().copied().unwrap_or((usize::MAX, usize::MAX));
        let mut open = open();
        if open.by_session.get(session).copied().unwrap_or(0) >= per_connection {
            return Err(EddyError::ConfigurationLimit(format!(
                "too many subscriptions open on this connection (at most {per_connection}, set by \
                 --max-subscriptions-per-connection)"
            )));
        }
        if let Some(full) = relations
            .iter()
            .find(|id| open.by_relation.get(id).copied().unwrap_or(0) >= per_relation)
        {
            return Err(EddyError::ConfigurationLimit(format!(
                "too many subscriptions open to relation \"{}\" (at most {per_relation}, set by \
                 --max-subscriptions-per-relation)",
                name_of(*full)
            )));
        }
        *open.by_session.entry(session.to_owned()).or_default() += 1;
        let mut counted = relations.to_vec();
        counted.sort_unstable();
        counted.dedup();
        for id in &counted {
            *open.by_relation.entry(*id).or_default() += 1;
        }
        Ok(SubscriptionSlot {
            session: session.to_owned(),
            relations: counted,
        })
    }
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let mut open = open();
        if let Some(n) = open.by_session.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                open.by_session.remove(&self.session);
            }
        }
        for id in &self.relations {
            if let Some(n) = open.by_relation.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    open.by_relation.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_until_dropped() {
        set_limits(2, 3);
        let name = |id: u64| format!("r{id}");
        let a = SubscriptionSlot::take("s1", &[1, 1], name).unwrap();
        let b = SubscriptionSlot::take("s1", &[1], name).unwrap();
        let err = SubscriptionSlot::take("s1", &[2], name).unwrap_err();
        assert_eq!(err.sqlstate(), "53400");
        assert!(err.to_string().contains("on this connection"), "{err}");
        let c = SubscriptionSlot::take("s2", &[1], name).unwrap();
        let err = SubscriptionSlot::take("s3", &[2, 1], name).unwrap_err();
        assert!(err.to_string().contains("relation \"r1\""), "{err}");
        drop(a);
        let d = SubscriptionSlot::take("s1", &[1], name).unwrap();
        drop((b, c, d));
        assert!(open().by_session.is_empty() && open().by_relation.is_empty());
    }
}
