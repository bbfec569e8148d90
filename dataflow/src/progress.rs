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

/// The runtime's own clocks, for the metrics endpoint: epochs stepped and
/// checkpoints staged, and the time they took on the runtime's thread.
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    pub epochs: std::sync::atomic::AtomicU64,
    pub epoch_micros: std::sync::atomic::AtomicU64,
    pub checkpoints: std::sync::atomic::AtomicU64,
    pub checkpoint_micros: std::sync::atomic::AtomicU64,
}

impl RuntimeCounters {
    pub fn record_epoch(&self, started: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        self.epochs.fetch_add(1, Relaxed);
        self.epoch_micros
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    }

    pub fn record_checkpoint(&self, started: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        self.checkpoints.fetch_add(1, Relaxed);
        self.checkpoint_micros
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    }
}
