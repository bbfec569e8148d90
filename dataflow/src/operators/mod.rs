//! The incremental operators, their interface, and what an epoch hands
//! each operator.

pub mod aggregate;
pub mod filter;
pub mod join;
pub mod key_index;
pub mod project;
pub mod retire;
pub mod session;
pub mod source;
pub mod topn;
pub mod union;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::physical_plan::PhysicalExpr;
use eddy_catalog::EncodedRows;

use crate::change::ChangeBatch;
use crate::state_log::Segment;
use crate::watermark::{Partitions, Watermarks};

/// How long a source partition may send nothing before watermarks stop
/// waiting for it, unless configured.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
use crate::{DataflowError, Result};

/// Per output column, a watermark: a value (in microseconds) below which
/// no change of that column will come any more, if there is one. Empty
/// when no column has one.
pub type ColumnWatermarks = Vec<Option<i64>>;

/// The watermark of column `c`, if it has one.
pub fn column_watermark(watermarks: &[Option<i64>], c: usize) -> Option<i64> {
    watermarks.get(c).copied().flatten()
}

/// Per column, the lower of two sets of watermarks; a column without one
/// in either has none.
pub fn lower_watermarks(a: &[Option<i64>], b: &[Option<i64>]) -> ColumnWatermarks {
    (0..a.len().max(b.len()))
        .map(|c| {
            column_watermark(a, c)
                .zip(column_watermark(b, c))
                .map(|(a, b)| a.min(b))
        })
        .collect()
}

/// An encoded key or row, as held in operator state.
pub type Bytes = Box<[u8]>;

/// Two encoded parts of a state key, such as a join key and a row.
pub type KeyPair = (Bytes, Bytes);

/// What one epoch feeds the dataflows.
pub struct EpochContext<'a> {
    /// Each changed table's or view's changes, by object id.
    pub changes: &'a HashMap<u64, ChangeBatch>,
    /// Set for the first epoch of a new view, which reads its inputs whole.
    pub backfill: bool,
    /// Set for every step of a backfill but its last: the inputs are read
    /// in slices, and event time stands still until all are read, so the
    /// view comes out as if it had read them whole in one epoch.
    pub hold_watermarks: bool,
    /// Which of a dataflow's workers steps the operator.
    pub worker: Worker,
    /// Event-time watermarks, published by the leaves that track them.
    pub watermarks: Watermarks,
    /// How many partitions each Kafka relation's topic has, by id.
    pub topic_partitions: Arc<HashMap<u64, usize>>,
    /// How long a partition may send nothing before watermarks stop
    /// waiting for it.
    pub idle_timeout: Duration,
    /// The epoch's clock, for judging partitions idle: one reading for
    /// every dataflow in the epoch, so they judge alike.
    pub now: Instant,
}

impl<'a> EpochContext<'a> {
    /// An epoch for a dataflow run by one worker.
    pub fn new(changes: &'a HashMap<u64, ChangeBatch>, backfill: bool) -> Self {
        EpochContext {
            changes,
            backfill,
            hold_watermarks: false,
            worker: Worker::SOLE,
            watermarks: Watermarks::default(),
            topic_partitions: Arc::default(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            now: Instant::now(),
        }
    }

    /// The partitions relation `id`'s rows come in.
    pub fn partitions(&self, id: u64) -> Partitions {
        Partitions {
            count: self.topic_partitions.get(&id).copied(),
            idle_timeout: self.idle_timeout,
        }
    }

    /// The same epoch, for worker `index` of `count`.
    pub fn for_worker(&self, index: usize, count: usize) -> Self {
        EpochContext {
            changes: self.changes,
            backfill: self.backfill,
            hold_watermarks: self.hold_watermarks,
            worker: Worker { index, count },
            watermarks: self.watermarks.clone(),
            topic_partitions: self.topic_partitions.clone(),
            idle_timeout: self.idle_timeout,
            now: self.now,
        }
    }
}

/// One of the workers a dataflow runs on. Each keyed operator's state is
/// split between them by a stable hash of the key, so every change of a
/// key reaches the same worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub index: usize,
    pub count: usize,
}

impl Worker {
    /// The only worker.
    pub const SOLE: Worker = Worker { index: 0, count: 1 };

    /// Whether changes of the encoded `key` are routed to this worker.
    pub fn owns(&self, key: &[u8]) -> bool {
        worker_of(key, self.count) == self.index
    }
}

/// Seeds the routing hash; it differs from the hash that keyed state
/// indexes by, so that a worker's keys still spread over its hash table.
const ROUTE_SEED: u64 = 0x726f_7574_696e_6721;

/// The worker, of `count`, that changes of the encoded `key` go to. The
/// hash is fixed, so a key goes to the same worker in every run.
pub fn worker_of(key: &[u8], count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    let hash = foldhash::fast::FixedState::with_seed(ROUTE_SEED).hash_one(key);
    ((u128::from(hash) * count as u128) >> 64) as usize
}

/// An incremental operator: it turns its inputs' changes into its output's
/// changes, keeping whatever state that needs.
pub trait Operator: Send {
    /// One line for EXPLAIN.
    fn describe(&self) -> String;

    /// Whether the output only ever gains rows, given whether each input
    /// does; `source` answers that for a table or view, by id.
    fn append_only(&self, _inputs: &[bool], _source: &dyn Fn(u64) -> bool) -> bool {
        false
    }

    /// Told once the tree is built whether each input only ever gains rows,
    /// so that an operator can keep less state when none are taken back.
    fn inputs_append_only(&mut self, _inputs: &[bool]) {}

    /// Output columns (by position) whose values identify each output row,
    /// given such columns of each input; `source` answers for a table or
    /// view, by id.
    fn unique_key(
        &self,
        _inputs: &[Option<Vec<usize>>],
        _source: &dyn Fn(u64) -> Option<Vec<usize>>,
    ) -> Option<Vec<usize>> {
        None
    }

    /// For an operator with keyed state: each row's key of input `input`,
    /// encoded as the state encodes it, so that the row reaches the worker
    /// that holds that key. `None` for an operator without state, whose
    /// rows stay on the worker they are on.
    fn exchange_keys(&self, _input: usize, _data: &RecordBatch) -> Result<Option<EncodedRows>> {
        Ok(None)
    }

    /// The part of one of this operator's state keys that
    /// [`Operator::exchange_keys`] routes by: it picks the worker that
    /// restores the entry.
    fn state_route<'k>(&self, _key: &'k [u8]) -> Result<Cow<'k, [u8]>> {
        Err(DataflowError::Internal(format!(
            "{} keeps no keyed state",
            self.describe()
        )))
    }

    /// For a leaf whose output is one relation's changes, unchanged but
    /// for which columns it reads: the relation's id and those columns
    /// (`None` for all).
    fn relation_columns(&self) -> Option<(u64, Option<Vec<usize>>)> {
        None
    }

    /// For an operator whose output only picks columns of its one input,
    /// as they are: the input column of each output column.
    fn picked_columns(&self) -> Option<Vec<usize>> {
        None
    }

    /// Processes one epoch's changes, one batch per input.
    fn step(&mut self, inputs: Vec<ChangeBatch>, ctx: &EpochContext) -> Result<ChangeBatch>;

    /// After each step: given its inputs' column watermarks, forgets the
    /// state no change can reach any more (its rows stay in the output),
    /// and returns its own output's column watermarks.
    fn advance_watermarks(
        &mut self,
        _inputs: &[ColumnWatermarks],
        _ctx: &EpochContext,
    ) -> Result<ColumnWatermarks> {
        Ok(Vec::new())
    }

    /// Writes the state that changed since the last call.
    fn persist(&mut self, _out: &mut StateWriter) -> Result<()> {
        Ok(())
    }

    /// Loads one persisted state entry, at startup.
    fn restore(&mut self, _key: &[u8], _value: &[u8]) -> Result<()> {
        Err(DataflowError::Internal(format!(
            "{} has no state to restore",
            self.describe()
        )))
    }

    /// Bytes of state held in memory, roughly.
    fn state_bytes(&self) -> usize {
        0
    }

    /// Entries (keys, rows or groups) of state held in memory.
    fn state_entries(&self) -> usize {
        0
    }

    /// Whether the operator keeps nothing between epochs: its output for a
    /// change depends on that change alone. A dataflow of such operators
    /// can be swapped for another without losing anything.
    fn stateless(&self) -> bool {
        false
    }

    /// Rows dropped since startup because their window had closed.
    fn late_rows(&self) -> u64 {
        0
    }
}

/// Writes one operator's state entries into an epoch's segment of its
/// view's state log.
pub struct StateWriter<'a> {
    pub(crate) segment: &'a mut Segment,
    /// The operator's node id, which heads each of its keys.
    pub(crate) head: [u8; 4],
}

impl StateWriter<'_> {
    pub fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.segment.put(&self.head, key, &value);
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.segment.delete(&self.head, key);
    }
}

/// Evaluates `expr` over `batch` into an array.
pub fn evaluate(expr: &dyn PhysicalExpr, batch: &RecordBatch) -> Result<ArrayRef> {
    Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?)
}

/// Evaluates a predicate; NULL counts as false.
pub fn evaluate_predicate(expr: &dyn PhysicalExpr, batch: &RecordBatch) -> Result<BooleanArray> {
    let array = evaluate(expr, batch)?;
    let mask = array.as_boolean_opt().ok_or_else(|| {
        DataflowError::Internal(format!("predicate yields {}", array.data_type()))
    })?;
    Ok(if mask.null_count() > 0 {
        prep_null_mask_filter(mask)
    } else {
        mask.clone()
    })
}

/// Encodes a key for state: a length-prefixed head, then the rest.
pub fn state_key(head: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + head.len() + rest.len());
    key.extend_from_slice(&(head.len() as u32).to_be_bytes());
    key.extend_from_slice(head);
    key.extend_from_slice(rest);
    key
}

/// Splits a key made by [`state_key`].
pub fn split_state_key(key: &[u8]) -> Result<(&[u8], &[u8])> {
    let damaged = || DataflowError::Internal("operator state key is damaged".into());
    let len: [u8; 4] = key
        .get(..4)
        .ok_or_else(damaged)?
        .try_into()
        .map_err(|_| damaged())?;
    let len = u32::from_be_bytes(len) as usize;
    let head = key.get(4..4 + len).ok_or_else(damaged)?;
    Ok((head, &key[4 + len..]))
}

/// Reads the `i`th big-endian i64 of a state value.
pub fn read_i64(value: &[u8], i: usize) -> Result<i64> {
    value
        .get(i * 8..i * 8 + 8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| DataflowError::Internal("operator state value is damaged".into()))
}
