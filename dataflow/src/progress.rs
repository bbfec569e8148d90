//! How far each source relation has been absorbed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How far a Kafka source has been absorbed, for FLUSH and SHOW QUERIES.
#[derive(Debug, Clone, Default)]
pub struct SourceProgress {
    /// Committed next offset per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Records absorbed since the server started.
    pub records: u64,
    /// Records that did not decode since the server started.
    pub dead_letters: u64,
    /// Records dropped because they were absorbed before (a broker or
    /// client delivered them again), since the server started.
    pub redelivered: u64,
    /// Times a resumed partition started past its committed offset.
    pub broker_faults: u64,
    /// The last broker fault, for SHOW QUERIES.
    pub fault: Option<String>,
    /// Records per second over the last epochs.
    pub rate: f64,
    /// How many partitions the topic has, once the source has read it.
    pub partitions: Option<usize>,
    pub last_absorbed: Option<Instant>,
    /// Each partition's end as the ingest thread's last fetch saw it, and
    /// when it looked.
    pub fetched_ends: BTreeMap<i32, i64>,
    pub fetched_at: Option<Instant>,
}

/// Every Kafka relation's progress, by id.
pub type ProgressMap = Arc<Mutex<HashMap<u64, SourceProgress>>>;
