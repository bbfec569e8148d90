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

/// A new view's or query's backfill while it runs: how many of the rows
/// its inputs held when it was created it has read.
#[derive(Debug, Clone)]
pub struct BackfillProgress {
    pub id: u64,
    pub name: String,
    /// A persistent query (it writes a topic) rather than a view.
    pub persistent: bool,
    pub depends_on: Vec<u64>,
    pub rows_done: u64,
    pub rows_total: u64,
    pub started: Instant,
}

impl BackfillProgress {
    /// Rows read per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.rows_done as f64 / secs
        } else {
            0.0
        }
    }

    /// The time left at the rate so far, once there is one.
    pub fn time_left(&self) -> Option<std::time::Duration> {
        let rate = self.rate();
        (rate > 0.0).then(|| {
            let left = self.rows_total.saturating_sub(self.rows_done) as f64 / rate;
            std::time::Duration::from_secs_f64(left)
        })
    }

    /// `40% (40000 of 100000 rows, 25000 rows/s, about 2.4 s left)`.
    pub fn describe(&self) -> String {
        let percent = match self.rows_total {
            0 => 100.0,
            total => self.rows_done as f64 * 100.0 / total as f64,
        };
        let left = match self.time_left() {
            Some(left) => format!(", about {:.1} s left", left.as_secs_f64()),
            None => String::new(),
        };
        format!(
            "{percent:.0}% ({} of {} rows, {:.0} rows/s{left})",
            self.rows_done,
            self.rows_total,
            self.rate()
        )
    }
}

/// Backfills running, by view or query id.
pub type BackfillMap = Arc<Mutex<HashMap<u64, BackfillProgress>>>;

/// Called on the runtime's thread as a backfill moves on, at most about
/// once per [`BACKFILL_REPORT_EVERY`].
pub type BackfillReport = Box<dyn Fn(&BackfillProgress) + Send>;

/// How often a running backfill is reported to its client and the log.
pub const BACKFILL_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
