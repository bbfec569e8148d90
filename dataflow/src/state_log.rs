//! Views keep their operators' state and rows in a state log; the log
//! itself is the store's (`eddy_storage::state_log`).

pub use eddy_storage::state_log::{entries_under, Segment, StateLog, StateMap};

use eddy_storage::{Keyspace, Store};

/// A view's state log, with nothing stored yet.
pub fn view_log(view_id: u64) -> StateLog {
    StateLog::new(Keyspace::OperatorState, view_id)
}

/// Reads a view's stored state: its log's position and every entry.
pub fn load_view_log(store: &Store, view_id: u64) -> crate::Result<(StateLog, StateMap)> {
    Ok(StateLog::load(store, Keyspace::OperatorState, view_id)?)
}
