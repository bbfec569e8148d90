//! Equi-join: inner, left, right and full outer, semi and anti, on any
//! number of keys, with an optional extra condition.
//!
//! Each side's rows are indexed by join key (an arrangement), with each
//! distinct row's multiplicity. The output changes are
//! `ΔL ⋈ R + L' ⋈ ΔR`, where `L'` already includes `ΔL`.
//!
//! Outer, semi and anti joins also need to know, per row, how many rows of
//! the other side it matches (under the extra condition too). Each
//! arrangement entry keeps that count; when it moves between zero and
//! non-zero, the row's NULL-padded (or semi/anti) output is retracted or
//! inserted.
//!
//! A join of two streams bounded in event time ([`TimeBound`]) also
//! forgets rows once no row still to come can match them, and emits an
//! outer or anti row without a match only then, when it is final.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions,
    UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::PhysicalExpr;
use eddy_catalog::{EncodedRows, RowFormat};
use serde::{Deserialize, Serialize};

use crate::change::ChangeBatch;
use crate::operators::key_index::KeyIndex;
use crate::operators::{
    column_watermark, evaluate, evaluate_predicate, read_i64, split_state_key, state_key,
    ColumnWatermarks, EpochContext, Operator, StateWriter,
};
use crate::watermark::{micros, Watermark};
use crate::{DataflowError, Result};

/// Which rows a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    LeftSemi,
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinKind {
    fn emits_pairs(self) -> bool {
        matches!(
            self,
            JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
        )
    }

    /// What side `s` (0 left, 1 right) emits on its own.
    fn lone_rows(self, s: usize) -> Lone {
        use JoinKind::*;
        match (self, s) {
            (Left | Full, 0) | (Right | Full, 1) => Lone::UnmatchedPadded,
            (LeftAnti, 0) | (RightAnti, 1) => Lone::Unmatched,
            (LeftSemi, 0) | (RightSemi, 1) => Lone::Matched,
            _ => Lone::Nothing,
        }
    }
}

/// Rows a side emits without a partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lone {
    Nothing,
    /// Rows with no match, padded with NULLs for the other side (outer).
    UnmatchedPadded,
    /// Rows with no match, alone (anti).
    Unmatched,
    /// Rows with a match, alone, once each (semi).
    Matched,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Multiplicity of the row.
    count: i64,
    /// How many rows of the other side it matches.
    matches: i64,
    /// The slot of the row's join key.
    key: u32,
    /// Where the row sits in its key's bucket.
    pos: u32,
}

/// One side's rows, arranged by join key. Join keys and distinct rows are
/// interned ([`KeyIndex`]); a key's bucket lists its rows' slots, and each
/// row slot has its [`Entry`].
struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Encodes this side's whole rows.
    format: RowFormat,
    schema: SchemaRef,
    join_keys: KeyIndex,
    buckets: Vec<Vec<u32>>,
    rows: KeyIndex,
    entries: Vec<Entry>,
    /// Row slots changed since the last persist.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// State keys of rows gone since the last persist.
    removed: Vec<Vec<u8>>,
    lone: Lone,
    bytes: usize,
    /// Under a [`TimeBound`]: each row slot's event time, and the slots
    /// in time order.
    times: Vec<i64>,
    by_time: BTreeSet<(i64, u32)>,
}

impl Side {
    fn tracks_matches(&self) -> bool {
        self.lone != Lone::Nothing
    }

    /// The slots of the rows whose join key is `key`.
    fn bucket(&self, key: &[u8]) -> &[u32] {
        match self.join_keys.find(key) {
            Some(k) => &self.buckets[k as usize],
            None => &[],
        }
    }

    /// The slot of `row` under `key`, with an empty entry if it is new.
    /// `time` is the row's event time under a [`TimeBound`].
    fn slot_for(&mut self, key: &[u8], row: &[u8], matches: i64, time: Option<i64>) -> u32 {
        let (k, _) = self.join_keys.find_or_insert(key);
        if self.buckets.len() < self.join_keys.slots() {
            self.buckets.resize_with(self.join_keys.slots(), Vec::new);
        }
        let (r, new) = self.rows.find_or_insert(row);
        if self.entries.len() < self.rows.slots() {
            self.entries.resize(self.rows.slots(), Entry::default());
            self.is_dirty.resize(self.rows.slots(), false);
        }
        if new {
            let bucket = &mut self.buckets[k as usize];
            self.entries[r as usize] = Entry {
                count: 0,
                matches,
                key: k,
                pos: bucket.len() as u32,
            };
            bucket.push(r);
            self.bytes += key.len() + row.len() + 16;
            if let Some(time) = time {
                if self.times.len() < self.rows.slots() {
                    self.times.resize(self.rows.slots(), 0);
                }
                self.times[r as usize] = time;
                self.by_time.insert((time, r));
                self.bytes += 24;
            }
        }
        r
    }

    /// Forgets row slot `r`, and its key once no row has it.
    fn remove(&mut self, r: u32) {
        let entry = self.entries[r as usize];
        let (key, row) = (self.join_keys.key(entry.key), self.rows.key(r));
        self.bytes = self.bytes.saturating_sub(key.len() + row.len() + 16);
        if let Some(&time) = self.times.get(r as usize) {
            if self.by_time.remove(&(time, r)) {
                self.bytes = self.bytes.saturating_sub(24);
            }
        }
        self.removed.push(state_key(key, row));
        let bucket = &mut self.buckets[entry.key as usize];
        bucket.swap_remove(entry.pos as usize);
        if let Some(&moved) = bucket.get(entry.pos as usize) {
            self.entries[moved as usize].pos = entry.pos;
        }
        if bucket.is_empty() {
            *bucket = Vec::new();
            self.join_keys.remove(entry.key);
        }
        self.rows.remove(r);
        self.entries[r as usize] = Entry::default();
    }

    fn mark_dirty(&mut self, r: u32) {
        if !self.is_dirty[r as usize] {
            self.is_dirty[r as usize] = true;
            self.dirty.push(r);
        }
    }
}

/// Bounds on a join of two streams in event time: a right row at time `u`
/// can match a left row at time `t` only if `u - t` lies in
/// `[lower, upper]` (microseconds; `None` is unbounded). The join's time
/// follows its inputs' watermarks (see [`StreamTime`]). A row older than
/// that time less the grace period is late and dropped; a row leaves state
/// once no row that is not late could match it. The join condition itself
/// must hold the bounds: they only decide what is kept and when unmatched
/// rows are final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeBound {
    /// Each side's event-time column.
    pub columns: [usize; 2],
    /// The relations whose watermarks each side's times follow.
    pub relations: [u64; 2],
    pub lower: Option<i64>,
    pub upper: Option<i64>,
    pub grace_us: i64,
    pub stream_time: StreamTime,
}

/// Which input watermark a bounded join's time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamTime {
    /// The later one, as ksqlDB's stream time in a `WITHIN` join: a record
    /// behind the other stream is late.
    Later,
    /// The earlier one, as Flink's interval join: a record is late only
    /// once both streams have passed it, so in-order streams lose nothing
    /// and the view equals its query (the SQL form).
    Earlier,
}

/// A join condition's bounds on `right column - left column`
/// (microseconds; `None` is unbounded), for columns that are not both a
/// stream's event time. Where the columns have watermarks, rows no change
/// to come can match are forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeInterval {
    pub columns: [usize; 2],
    pub lower: Option<i64>,
    pub upper: Option<i64>,
}

impl std::fmt::Display for TimeBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = |b: Option<i64>| b.map_or("unbounded".to_owned(), |b| format!("{b}us"));
        write!(
            f,
            "right time - left time in [{}, {}], grace {}us",
            bound(self.lower),
            bound(self.upper),
            self.grace_us
        )
    }
}

pub struct Join {
    kind: JoinKind,
    sides: [Side; 2],
    bound: Option<TimeBound>,
    /// ksqlDB's stream-table join: each left (stream) row joins the right
    /// (table) rows current when it is processed and is not kept; right
    /// changes emit nothing.
    lookup: bool,
    /// Rows dropped as late under the bound.
    late: u64,
    /// Once a join key column of each side has a watermark: those
    /// columns. Rows are indexed by their value and forgotten once both
    /// watermarks pass it, since no change can match them any more.
    key_watermark: Option<[usize; 2]>,
    /// Bounds the condition puts on two columns without a [`TimeBound`];
    /// once their watermarks come, rows are indexed by them
    /// (`key_watermark` holds the columns) and forgotten when no change to
    /// come can match them.
    interval: Option<TimeInterval>,
    /// Whether each input never takes a row back.
    append_only_inputs: [bool; 2],
    key_format: RowFormat,
    /// Over left columns then right columns.
    condition: Option<Arc<dyn PhysicalExpr>>,
    nulls_equal: bool,
    /// Left columns then right columns.
    pair_schema: SchemaRef,
    schema: SchemaRef,
    text: String,
}

/// How to build a join, over expressions of type `E` (see
/// [`AggSpec`](super::aggregate::AggSpec)).
#[derive(Serialize, Deserialize)]
pub struct JoinSpec<E = Arc<dyn PhysicalExpr>> {
    pub kind: JoinKind,
    pub left_keys: Vec<E>,
    pub right_keys: Vec<E>,
    pub condition: Option<E>,
    pub nulls_equal: bool,
    pub left_schema: SchemaRef,
    pub right_schema: SchemaRef,
    pub pair_schema: SchemaRef,
    pub schema: SchemaRef,
    pub text: String,
    pub bound: Option<TimeBound>,
    /// Bounds on columns that are not both event times (see [`Join`]).
    pub interval: Option<TimeInterval>,
    /// A stream-table join, as ksqlDB's (see [`Join`]); inner or left.
    pub lookup: bool,
}

impl<E> JoinSpec<E> {
    /// The same join over expressions mapped by `f`, which is given each
    /// expression with the schema it reads.
    pub fn try_map<F, T>(&self, mut f: F) -> Result<JoinSpec<T>>
    where
        F: FnMut(&E, &SchemaRef) -> Result<T>,
    {
        Ok(JoinSpec {
            kind: self.kind,
            left_keys: self
                .left_keys
                .iter()
                .map(|e| f(e, &self.left_schema))
                .collect::<Result<_>>()?,
            right_keys: self
                .right_keys
                .iter()
                .map(|e| f(e, &self.right_schema))
                .collect::<Result<_>>()?,
            condition: self
                .condition
                .as_ref()
                .map(|e| f(e, &self.pair_schema))
                .transpose()?,
            nulls_equal: self.nulls_equal,
            left_schema: self.left_schema.clone(),
            right_schema: self.right_schema.clone(),
            pair_schema: self.pair_schema.clone(),
            schema: self.schema.clone(),
            text: self.text.clone(),
            bound: self.bound.clone(),
            interval: self.interval,
            lookup: self.lookup,
        })
    }
}

impl Join {
    pub fn new(spec: JoinSpec) -> Result<Self> {
        let key_types = spec
            .left_keys
            .iter()
            .map(|k| k.data_type(&spec.left_schema))
            .collect::<Result<Vec<_>, _>>()?;
        let side = |keys, schema: SchemaRef, s| -> Result<Side> {
            Ok(Side {
                keys,
                format: RowFormat::for_schema(&schema)?,
                schema,
                join_keys: KeyIndex::default(),
                buckets: Vec::new(),
                rows: KeyIndex::default(),
                entries: Vec::new(),
                dirty: Vec::new(),
                is_dirty: Vec::new(),
                removed: Vec::new(),
                lone: spec.kind.lone_rows(s),
                bytes: 0,
                times: Vec::new(),
                by_time: BTreeSet::new(),
            })
        };
        Ok(Join {
            kind: spec.kind,
            sides: [
                side(spec.left_keys, spec.left_schema.clone(), 0)?,
                side(spec.right_keys, spec.right_schema.clone(), 1)?,
            ],
            bound: spec.bound,
            lookup: spec.lookup && matches!(spec.kind, JoinKind::Inner | JoinKind::Left),
            late: 0,
            key_watermark: None,
            interval: spec.interval,
            append_only_inputs: [false; 2],
            key_format: RowFormat::new(key_types)?,
            condition: spec.condition,
            nulls_equal: spec.nulls_equal,
            pair_schema: spec.pair_schema,
            schema: spec.schema,
            text: spec.text,
        })
    }

    /// Applies side `s`'s changes against the other side's current rows.
    /// Side `s`'s join key columns of `data`, in the key format's types.
    fn key_columns(&self, s: usize, data: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.sides[s]
            .keys
            .iter()
            .zip(self.key_format.types())
            .map(|(k, t)| {
                let array = evaluate(k.as_ref(), data)?;
                Ok(if array.data_type() == t {
                    array
                } else {
                    cast(&array, t)?
                })
            })
            .collect()
    }

    fn absorb(&mut self, s: usize, delta: &ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        let o = 1 - s;
        let n = delta.num_rows();
        let key_columns = self.key_columns(s, &delta.data)?;
        let keys = self.key_format.encode(&key_columns, n)?;
        let times = match (&self.bound, self.key_watermark) {
            (Some(bound), _) => Some(micros(&delta.data, bound.columns[s])?),
            (None, Some(columns)) => Some(micros(&delta.data, columns[s])?),
            (None, None) => None,
        };
        // A row without a key, or without a time under a bound, matches
        // nothing, ever.
        let null_key: Vec<bool> = (0..n)
            .map(|i| {
                (!self.nulls_equal && key_columns.iter().any(|c| c.is_null(i)))
                    || times.as_ref().is_some_and(|t| t.is_null(i))
            })
            .collect();
        let (defer, other_defer) = (self.defers(s), self.defers(o));
        let rows = self.sides[s].format.encode(delta.data.columns(), n)?;

        // Pair each change with the other side's rows of the same key; a
        // lookup join's table changes pair with nothing.
        let mut delta_matches = vec![0i64; n];
        let mut other_changes: HashMap<u32, i64> = HashMap::new();
        if !(self.lookup && s == 1) {
            let other = &self.sides[o];
            let mut pair_index = Vec::new();
            let mut pair_slots: Vec<u32> = Vec::new();
            let mut pair_weights = Vec::new();
            for (i, &null) in null_key.iter().enumerate() {
                if null {
                    continue;
                }
                for &r in other.bucket(keys.row(i)) {
                    pair_index.push(i as u32);
                    pair_slots.push(r);
                    pair_weights.push(delta.weight(i) * other.entries[r as usize].count);
                }
            }
            if !pair_index.is_empty() {
                let mine =
                    take_columns(delta.data.columns(), &UInt32Array::from(pair_index.clone()))?;
                let theirs = other
                    .format
                    .decode(pair_slots.iter().map(|&r| other.rows.key(r)))?;
                let columns = if s == 0 {
                    [mine, theirs].concat()
                } else {
                    [theirs, mine].concat()
                };
                let pairs = batch_of(&self.pair_schema, columns, pair_index.len())?;
                let passed = match &self.condition {
                    Some(condition) => evaluate_predicate(condition.as_ref(), &pairs)?,
                    None => BooleanArray::from(vec![true; pair_index.len()]),
                };
                if self.kind.emits_pairs() {
                    let pairs = ChangeBatch::new(pairs, Int64Array::from(pair_weights));
                    out.push(pairs.filter(&passed)?);
                }
                for (p, &i) in pair_index.iter().enumerate() {
                    if !passed.value(p) {
                        continue;
                    }
                    let r = pair_slots[p];
                    delta_matches[i as usize] += other.entries[r as usize].count;
                    if other.tracks_matches() {
                        *other_changes.entry(r).or_default() += delta.weight(i as usize);
                    }
                }
            }
        }

        // Apply the changes to this side, emitting its lone rows.
        let side = &mut self.sides[s];
        let mut lone = Vec::new();
        for i in 0..n {
            let weight = delta.weight(i);
            let matched = delta_matches[i] != 0;
            if match side.lone {
                Lone::UnmatchedPadded | Lone::Unmatched => !matched && (!defer || null_key[i]),
                Lone::Matched => matched,
                Lone::Nothing => false,
            } {
                lone.push((i as u32, weight));
            }
            if null_key[i] || (self.lookup && s == 0) {
                // Matches nothing, ever, or a lookup join's stream row:
                // nothing to remember.
                continue;
            }
            let time = times.as_ref().map(|t| t.value(i));
            let r = side.slot_for(keys.row(i), rows.row(i), delta_matches[i], time);
            side.entries[r as usize].count += weight;
            side.mark_dirty(r);
            if side.entries[r as usize].count == 0 {
                side.remove(r);
            }
        }
        if !lone.is_empty() {
            let (indices, weights): (Vec<u32>, Vec<i64>) = lone.into_iter().unzip();
            let columns = take_columns(delta.data.columns(), &UInt32Array::from(indices))?;
            out.push(self.lone_batch(s, columns, Int64Array::from(weights))?);
        }

        // Rows of the other side whose matched state flipped.
        let other = &mut self.sides[o];
        let mut flipped_rows: Vec<u32> = Vec::new();
        let mut flipped_weights = Vec::new();
        for (r, change) in other_changes {
            if change == 0 {
                continue;
            }
            if !other.rows.is_live(r) {
                return Err(DataflowError::Internal(
                    "join match for a missing row".into(),
                ));
            }
            let entry = &mut other.entries[r as usize];
            let before = entry.matches != 0;
            entry.matches += change;
            let after = entry.matches != 0;
            let count = entry.count;
            other.mark_dirty(r);
            if before != after && !other_defer {
                let weight = match other.lone {
                    Lone::UnmatchedPadded | Lone::Unmatched => {
                        if after {
                            -count
                        } else {
                            count
                        }
                    }
                    Lone::Matched => {
                        if after {
                            count
                        } else {
                            -count
                        }
                    }
                    Lone::Nothing => 0,
                };
                if weight != 0 {
                    flipped_rows.push(r);
                    flipped_weights.push(weight);
                }
            }
        }
        if !flipped_rows.is_empty() {
            let columns = other
                .format
                .decode(flipped_rows.iter().map(|&r| other.rows.key(r)))?;
            out.push(self.lone_batch(o, columns, Int64Array::from(flipped_weights))?);
        }
        Ok(())
    }

    /// Whether side `s` emits its rows without a match only once they are
    /// final: outer and anti rows under a time bound.
    fn defers(&self, s: usize) -> bool {
        self.bound.is_some()
            && matches!(self.sides[s].lone, Lone::UnmatchedPadded | Lone::Unmatched)
    }

    /// The join's time around this epoch: the later input watermark.
    fn join_time(&self, ctx: &EpochContext) -> Watermark {
        let Some(bound) = &self.bound else {
            return Watermark::default();
        };
        let [left, right] = bound.relations.map(|r| ctx.watermarks.get(r));
        let pick = |a: Option<i64>, b: Option<i64>| match bound.stream_time {
            StreamTime::Later => a.max(b),
            StreamTime::Earlier => a.zip(b).map(|(a, b)| a.min(b)),
        };
        Watermark {
            before: pick(left.before, right.before),
            after: pick(left.after, right.after),
        }
    }

    /// Side `s`'s changes without the rows that are late: older than the
    /// join's time before this epoch, less the grace period.
    fn drop_late(&mut self, s: usize, delta: ChangeBatch, now: Option<i64>) -> Result<ChangeBatch> {
        let (Some(bound), Some(now)) = (&self.bound, now) else {
            return Ok(delta);
        };
        let floor = now.saturating_sub(bound.grace_us);
        let times = micros(&delta.data, bound.columns[s])?;
        let keep: BooleanArray = (0..delta.num_rows())
            .map(|i| Some(times.is_null(i) || times.value(i) >= floor))
            .collect();
        let late = keep.false_count();
        if late == 0 {
            return Ok(delta);
        }
        self.late += late as u64;
        delta.filter(&keep)
    }

    /// Forgets side `s`'s rows older than `horizon`, which no row still to
    /// come can match, emitting the deferred ones that never matched.
    fn expire(&mut self, s: usize, horizon: i64, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let defer = self.defers(s);
        let side = &mut self.sides[s];
        let expired: Vec<u32> = side
            .by_time
            .range(..(horizon, 0))
            .map(|&(_, r)| r)
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let (mut final_rows, mut final_weights) = (Vec::new(), Vec::new());
        for &r in &expired {
            let entry = side.entries[r as usize];
            if defer && entry.matches == 0 && entry.count != 0 {
                final_rows.push(r);
                final_weights.push(entry.count);
            }
        }
        let columns = side
            .format
            .decode(final_rows.iter().map(|&r| side.rows.key(r)))?;
        for r in expired {
            side.remove(r);
        }
        if !final_rows.is_empty() {
            out.push(self.lone_batch(s, columns, Int64Array::from(final_weights))?);
        }
        Ok(())
    }

    /// Indexes each side's rows by the value of its column in `columns`,
    /// so that rows below a watermark can be forgotten.
    fn index_by_time(&mut self, columns: [usize; 2]) -> Result<()> {
        for (side, column) in self.sides.iter_mut().zip(columns) {
            let live: Vec<u32> = side.rows.iter().map(|(r, _)| r).collect();
            side.by_time.clear();
            side.times = vec![0; side.rows.slots()];
            if live.is_empty() {
                continue;
            }
            let rows = side.format.decode(live.iter().map(|&r| side.rows.key(r)))?;
            let batch = RecordBatch::try_from_iter([("time", rows[column].clone())])?;
            let times = micros(&batch, 0)?;
            for (i, &r) in live.iter().enumerate() {
                if times.is_valid(i) {
                    side.times[r as usize] = times.value(i);
                    side.by_time.insert((times.value(i), r));
                }
            }
        }
        self.key_watermark = Some(columns);
        Ok(())
    }

    /// Under a [`TimeInterval`]: forgets the rows of each side that no
    /// change to come can match, or take back. A left row at `t` matches
    /// right rows up to `t + upper`, and right changes to come are at or
    /// after the right column's watermark; likewise a right row at `u`
    /// matches left rows from `u - lower`.
    fn expire_by_interval(&mut self, inputs: &[ColumnWatermarks]) -> Result<()> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let marks = [0, 1].map(|s| column_watermark(&inputs[s], interval.columns[s]));
        let reach = [
            marks[1]
                .zip(interval.upper)
                .map(|(w, up)| w.saturating_sub(up)),
            marks[0]
                .zip(interval.lower)
                .map(|(w, low)| w.saturating_add(low)),
        ];
        let mut horizons = [None, None];
        for s in 0..2 {
            // A row that may yet be taken back stays until its own column's
            // watermark passes it too.
            horizons[s] = match (reach[s], self.append_only_inputs[s]) {
                (Some(reach), true) => Some(reach),
                (Some(reach), false) => marks[s].map(|own| reach.min(own)),
                (None, _) => None,
            };
        }
        if horizons.iter().all(Option::is_none) {
            return Ok(());
        }
        if self.key_watermark != Some(interval.columns) {
            self.index_by_time(interval.columns)?;
        }
        let mut out = Vec::new();
        for (s, horizon) in horizons.into_iter().enumerate() {
            if let Some(horizon) = horizon {
                self.expire(s, horizon, &mut out)?;
            }
        }
        Ok(())
    }

    /// Side `s`'s rows as output: padded with NULLs for outer joins, alone
    /// for semi and anti joins.
    fn lone_batch(
        &self,
        s: usize,
        columns: Vec<ArrayRef>,
        weights: Int64Array,
    ) -> Result<ChangeBatch> {
        let n = weights.len();
        let columns = if self.sides[s].lone == Lone::UnmatchedPadded {
            let nulls: Vec<ArrayRef> = self.sides[1 - s]
                .schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), n))
                .collect();
            if s == 0 {
                [columns, nulls].concat()
            } else {
                [nulls, columns].concat()
            }
        } else {
            columns
        };
        Ok(ChangeBatch::new(
            batch_of(&self.schema, columns, n)?,
            weights,
        ))
    }
}

fn take_columns(columns: &[ArrayRef], indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    Ok(columns
        .iter()
        .map(|c| take(c.as_ref(), indices, None))
        .collect::<Result<Vec<_>, _>>()?)
}

fn batch_of(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

impl Operator for Join {
    /// A side whose unique key is among its join columns matches each row
    /// of the other side at most once, so the output is unique by the
    /// other side's key: a table joined to another by its primary key (or
    /// a foreign key to it) is keyed as the first table.
    fn unique_key(
        &self,
        inputs: &[Option<Vec<usize>>],
        _source: &dyn Fn(u64) -> Option<Vec<usize>>,
    ) -> Option<Vec<usize>> {
        let [left, right] = inputs else {
            return None;
        };
        let matched_once = |side: usize, unique: &Option<Vec<usize>>| {
            let joined: Option<Vec<usize>> = self.sides[side]
                .keys
                .iter()
                .map(|k| k.downcast_ref::<Column>().map(Column::index))
                .collect();
            match (unique, joined) {
                (Some(unique), Some(joined)) => {
                    !unique.is_empty() && unique.iter().all(|c| joined.contains(c))
                }
                _ => false,
            }
        };
        let left_width = self.sides[0].schema.fields().len();
        let shifted = |key: &Vec<usize>| key.iter().map(|c| c + left_width).collect();
        match self.kind {
            JoinKind::Inner | JoinKind::Left if matched_once(1, right) => left.clone(),
            JoinKind::Inner | JoinKind::Right if matched_once(0, left) => {
                right.as_ref().map(shifted)
            }
            JoinKind::LeftSemi | JoinKind::LeftAnti => left.clone(),
            JoinKind::RightSemi | JoinKind::RightAnti => right.clone(),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match &self.bound {
            Some(bound) => format!("Join: {:?} {}, {bound}", self.kind, self.text),
            None if self.lookup => format!(
                "Join: {:?} stream to table, each stream row joining the table as it is then, {}",
                self.kind, self.text
            ),
            None => format!("Join: {:?} {}", self.kind, self.text),
        }
    }

    /// Pairs and semi-join matches of rows that stay are never taken back;
    /// padded or anti-join rows are, once a match arrives, unless a time
    /// bound holds them back until they are final.
    fn append_only(&self, inputs: &[bool], _source: &dyn Fn(u64) -> bool) -> bool {
        if self.lookup {
            return inputs.first().copied().unwrap_or(false);
        }
        (self.bound.is_some()
            || matches!(
                self.kind,
                JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
            ))
            && inputs.iter().all(|&a| a)
    }

    fn step(&mut self, inputs: Vec<ChangeBatch>, ctx: &EpochContext) -> Result<ChangeBatch> {
        let [left, right]: [ChangeBatch; 2] = inputs
            .try_into()
            .map_err(|_| DataflowError::Internal("join needs two inputs".into()))?;
        let time = self.join_time(ctx);
        let left = self.drop_late(0, left, time.before)?;
        let right = self.drop_late(1, right, time.before)?;
        let mut out = Vec::new();
        if self.lookup {
            // Stream rows see the table as of the end of the epoch.
            self.absorb(1, &right, &mut out)?;
            self.absorb(0, &left, &mut out)?;
        } else {
            self.absorb(0, &left, &mut out)?;
            self.absorb(1, &right, &mut out)?;
        }
        if let (Some(bound), Some(now)) = (&self.bound, time.after) {
            // Rows to come are at least this late in event time.
            let floor = now.saturating_sub(bound.grace_us);
            let horizons = [
                bound.upper.map(|upper| floor.saturating_sub(upper)),
                bound.lower.map(|lower| floor.saturating_add(lower)),
            ];
            for (s, horizon) in horizons.into_iter().enumerate() {
                if let Some(horizon) = horizon {
                    self.expire(s, horizon, &mut out)?;
                }
            }
        }
        ChangeBatch::concat(&self.schema, &out)
    }

    /// Where a join key column of each side has a watermark, rows below
    /// both are forgotten, and the output's copies of those columns hold
    /// the lower watermark.
    fn advance_watermarks(
        &mut self,
        inputs: &[ColumnWatermarks],
        _ctx: &EpochContext,
    ) -> Result<ColumnWatermarks> {
        if self.bound.is_some() || self.lookup || self.nulls_equal || inputs.len() != 2 {
            return Ok(Vec::new());
        }
        let watermarked = |s: usize, k: &Arc<dyn PhysicalExpr>| {
            let column = k.downcast_ref::<Column>()?.index();
            column_watermark(&inputs[s], column).map(|w| (column, w))
        };
        let found = self.sides[0]
            .keys
            .iter()
            .zip(&self.sides[1].keys)
            .find_map(|(l, r)| Some((watermarked(0, l)?, watermarked(1, r)?)));
        let Some(((left, left_mark), (right, right_mark))) = found else {
            self.expire_by_interval(inputs)?;
            return Ok(Vec::new());
        };
        if self.key_watermark != Some([left, right]) {
            self.index_by_time([left, right])?;
        }
        let below = left_mark.min(right_mark);
        let mut out = Vec::new();
        for s in 0..2 {
            self.expire(s, below, &mut out)?;
        }
        let left_columns = self.sides[0].schema.fields().len();
        let mut marks = vec![None; self.schema.fields().len()];
        match self.schema.fields().len() {
            n if n == left_columns + self.sides[1].schema.fields().len() => {
                marks[left] = Some(below);
                marks[left_columns + right] = Some(below);
            }
            n if n == left_columns && self.kind.lone_rows(0) != Lone::Nothing => {
                marks[left] = Some(below)
            }
            _ => marks[right] = Some(below),
        }
        Ok(marks)
    }

    fn inputs_append_only(&mut self, inputs: &[bool]) {
        for (s, &append_only) in inputs.iter().take(2).enumerate() {
            self.append_only_inputs[s] = append_only;
        }
    }

    fn exchange_keys(&self, input: usize, data: &RecordBatch) -> Result<Option<EncodedRows>> {
        let columns = self.key_columns(input, data)?;
        Ok(Some(self.key_format.encode(&columns, data.num_rows())?))
    }

    fn state_route<'k>(&self, key: &'k [u8]) -> Result<Cow<'k, [u8]>> {
        let rest = key
            .get(1..)
            .ok_or_else(|| DataflowError::Internal("join state key is empty".into()))?;
        Ok(Cow::Borrowed(split_state_key(rest)?.0))
    }

    fn persist(&mut self, out: &mut StateWriter) -> Result<()> {
        let timed = self.bound.is_some();
        for (s, side) in self.sides.iter_mut().enumerate() {
            let mut state = Vec::new();
            for key in side.removed.drain(..) {
                state.clear();
                state.push(s as u8);
                state.extend_from_slice(&key);
                out.delete(&state);
            }
            for r in side.dirty.drain(..) {
                side.is_dirty[r as usize] = false;
                // A slot freed since has its deletion among `removed`.
                if !side.rows.is_live(r) {
                    continue;
                }
                let entry = side.entries[r as usize];
                state.clear();
                state.push(s as u8);
                state
                    .extend_from_slice(&state_key(side.join_keys.key(entry.key), side.rows.key(r)));
                let mut value = entry.count.to_be_bytes().to_vec();
                value.extend_from_slice(&entry.matches.to_be_bytes());
                if let Some(time) = side.times.get(r as usize).filter(|_| timed) {
                    value.extend_from_slice(&time.to_be_bytes());
                }
                out.put(&state, value);
            }
        }
        Ok(())
    }

    fn restore(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let (&s, rest) = key
            .split_first()
            .ok_or_else(|| DataflowError::Internal("join state key is empty".into()))?;
        let side = self
            .sides
            .get_mut(s as usize)
            .ok_or_else(|| DataflowError::Internal("join state names no side".into()))?;
        let (join_key, row) = split_state_key(rest)?;
        let (count, matches) = (read_i64(value, 0)?, read_i64(value, 1)?);
        let time = match self.bound {
            Some(_) => Some(read_i64(value, 2)?),
            None => None,
        };
        let r = side.slot_for(join_key, row, matches, time);
        side.entries[r as usize].count = count;
        side.entries[r as usize].matches = matches;
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.sides.iter().map(|s| s.bytes).sum()
    }

    fn state_entries(&self) -> usize {
        self.sides.iter().map(|s| s.rows.len()).sum()
    }

    fn late_rows(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::{col, lit};

    use super::*;
    use crate::change::nullable_schema;
    use crate::testing::{
        accumulate, changes, physical, round_trip, rows_of, schema_ab, step, PersistedState,
    };

    fn pair_schema() -> SchemaRef {
        nullable_schema(&Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Int64, true),
            Field::new("d", DataType::Int64, true),
        ]))
    }

    /// Joins (a, b) with (c, d) on a = c, optionally requiring b < d.
    fn join(kind: JoinKind, with_condition: bool) -> Join {
        let left = schema_ab();
        let right = Arc::new(Schema::new(vec![
            Field::new("c", DataType::Int64, true),
            Field::new("d", DataType::Int64, true),
        ]));
        let pairs = pair_schema();
        let schema = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => left.clone(),
            JoinKind::RightSemi | JoinKind::RightAnti => right.clone(),
            _ => pairs.clone(),
        };
        Join::new(JoinSpec {
            kind,
            left_keys: vec![physical(&col("a"), &left)],
            right_keys: vec![physical(&col("c"), &right)],
            condition: with_condition.then(|| physical(&col("b").lt(col("d")), &pairs)),
            nulls_equal: false,
            left_schema: left,
            right_schema: right,
            pair_schema: pairs,
            schema,
            text: "a = c".into(),
            bound: None,
            interval: None,
            lookup: false,
        })
        .unwrap()
    }

    /// Joined on a = c: a side whose key is its join column matches each
    /// row of the other at most once, so the output keeps that other
    /// side's key; a full outer join keeps none.
    #[test]
    fn a_side_joined_by_its_key_keeps_the_others() {
        let none = |_: u64| None;
        let key = |kind, left: Option<Vec<usize>>, right: Option<Vec<usize>>| {
            join(kind, true).unique_key(&[left, right], &none)
        };
        // (c) is the right side's key: the output is keyed as the left.
        assert_eq!(
            key(JoinKind::Inner, Some(vec![1]), Some(vec![0])),
            Some(vec![1])
        );
        assert_eq!(
            key(JoinKind::Left, Some(vec![0]), Some(vec![0])),
            Some(vec![0])
        );
        // (a) is the left side's key: keyed as the right, after its columns.
        assert_eq!(
            key(JoinKind::Inner, Some(vec![0]), Some(vec![1])),
            Some(vec![3])
        );
        assert_eq!(
            key(JoinKind::Right, Some(vec![0]), Some(vec![1])),
            Some(vec![3])
        );
        // A left join keeps every left row but may repeat it when the
        // right side's key is not its join column.
        assert_eq!(key(JoinKind::Left, Some(vec![0]), Some(vec![1])), None);
        assert_eq!(key(JoinKind::Full, Some(vec![0]), Some(vec![0])), None);
        assert_eq!(key(JoinKind::Inner, None, None), None);
        assert_eq!(key(JoinKind::LeftSemi, Some(vec![1]), None), Some(vec![1]));
    }

    type Rows = Vec<(i64, i64, i64)>;

    /// Feeds epochs of (left, right) changes and returns the accumulated
    /// output after each.
    fn run(
        kind: JoinKind,
        condition: bool,
        epochs: &[(Rows, Rows)],
    ) -> Vec<HashMap<Vec<Option<i64>>, i64>> {
        let mut join = join(kind, condition);
        let mut total = HashMap::new();
        let mut results = Vec::new();
        for (l, r) in epochs {
            let out = step(
                &mut join,
                vec![changes(&schema_ab(), l), changes(&schema_ab(), r)],
            );
            accumulate(&mut total, &out);
            results.push(total.clone());
        }
        results
    }

    fn row(values: &[Option<i64>]) -> Vec<Option<i64>> {
        values.to_vec()
    }

    #[test]
    fn inner_join_retracts_pairs() {
        let results = run(
            JoinKind::Inner,
            false,
            &[
                (vec![(1, 10, 1), (2, 20, 1)], vec![(1, 100, 1)]),
                (vec![], vec![(1, 100, -1), (2, 200, 1)]),
            ],
        );
        assert_eq!(
            results[0],
            HashMap::from([(row(&[Some(1), Some(10), Some(1), Some(100)]), 1)])
        );
        assert_eq!(
            results[1],
            HashMap::from([(row(&[Some(2), Some(20), Some(2), Some(200)]), 1)])
        );
    }

    #[test]
    fn left_join_flips_between_padded_and_matched() {
        let results = run(
            JoinKind::Left,
            false,
            &[
                (vec![(1, 10, 1), (1, 10, 1)], vec![]),
                (vec![], vec![(1, 100, 1)]),
                (vec![], vec![(1, 100, -1)]),
            ],
        );
        assert_eq!(
            results[0],
            HashMap::from([(row(&[Some(1), Some(10), None, None]), 2)])
        );
        assert_eq!(
            results[1],
            HashMap::from([(row(&[Some(1), Some(10), Some(1), Some(100)]), 2)])
        );
        assert_eq!(results[2], results[0]);
    }

    #[test]
    fn full_join_with_condition_pads_both_sides() {
        let results = run(
            JoinKind::Full,
            true,
            &[
                (vec![(1, 50, 1)], vec![(1, 10, 1), (1, 90, 1)]),
                (vec![(1, 50, -1)], vec![]),
            ],
        );
        assert_eq!(
            results[0],
            HashMap::from([
                (row(&[Some(1), Some(50), Some(1), Some(90)]), 1),
                (row(&[None, None, Some(1), Some(10)]), 1),
            ])
        );
        assert_eq!(
            results[1],
            HashMap::from([
                (row(&[None, None, Some(1), Some(90)]), 1),
                (row(&[None, None, Some(1), Some(10)]), 1),
            ])
        );
    }

    #[test]
    fn semi_and_anti_follow_match_counts() {
        let epochs = [
            (vec![(1, 1, 1), (2, 2, 1)], vec![(1, 9, 1), (1, 8, 1)]),
            (vec![], vec![(1, 9, -1)]),
            (vec![], vec![(1, 8, -1)]),
        ];
        let semi = run(JoinKind::LeftSemi, false, &epochs);
        let anti = run(JoinKind::LeftAnti, false, &epochs);
        assert_eq!(semi[0], HashMap::from([(row(&[Some(1), Some(1)]), 1)]));
        assert_eq!(semi[1], semi[0]);
        assert!(semi[2].is_empty());
        assert_eq!(anti[0], HashMap::from([(row(&[Some(2), Some(2)]), 1)]));
        assert_eq!(anti[2].len(), 2);
    }

    #[test]
    fn state_survives_persist_and_restore() {
        let mut first = join(JoinKind::Left, false);
        step(
            &mut first,
            vec![
                changes(&schema_ab(), &[(1, 10, 1)]),
                changes(&schema_ab(), &[(1, 100, 1)]),
            ],
        );
        let mut second = join(JoinKind::Left, false);
        round_trip(&mut first, &mut second);
        let out = step(
            &mut second,
            vec![
                changes(&schema_ab(), &[]),
                changes(&schema_ab(), &[(1, 100, -1)]),
            ],
        );
        let mut total = HashMap::new();
        accumulate(&mut total, &out);
        assert_eq!(
            total,
            HashMap::from([
                (row(&[Some(1), Some(10), Some(1), Some(100)]), -1),
                (row(&[Some(1), Some(10), None, None]), 1),
            ])
        );
    }
    /// What a join of multisets `left` (a, b) and `right` (c, d) on a = c,
    /// with `b < d` when `condition`, must hold.
    fn expected(
        kind: JoinKind,
        condition: bool,
        left: &HashMap<(i64, i64), i64>,
        right: &HashMap<(i64, i64), i64>,
    ) -> HashMap<Vec<Option<i64>>, i64> {
        let matches = |l: &(i64, i64), r: &(i64, i64)| l.0 == r.0 && (!condition || l.1 < r.1);
        expected_with(kind, matches, left, right)
    }

    /// What a join of multisets `left` and `right` must hold, rows pairing
    /// when `matches` says so.
    fn expected_with(
        kind: JoinKind,
        matches: impl Fn(&(i64, i64), &(i64, i64)) -> bool,
        left: &HashMap<(i64, i64), i64>,
        right: &HashMap<(i64, i64), i64>,
    ) -> HashMap<Vec<Option<i64>>, i64> {
        let mut out: HashMap<Vec<Option<i64>>, i64> = HashMap::new();
        let mut add = |row: Vec<Option<i64>>, n: i64| *out.entry(row).or_default() += n;
        for (l, &nl) in left {
            let partners: Vec<_> = right.iter().filter(|(r, _)| matches(l, r)).collect();
            for (r, &nr) in &partners {
                if kind.emits_pairs() {
                    add(vec![Some(l.0), Some(l.1), Some(r.0), Some(r.1)], nl * nr);
                }
            }
            match (kind, partners.is_empty()) {
                (JoinKind::Left | JoinKind::Full, true) => {
                    add(vec![Some(l.0), Some(l.1), None, None], nl)
                }
                (JoinKind::LeftAnti, true) | (JoinKind::LeftSemi, false) => {
                    add(vec![Some(l.0), Some(l.1)], nl)
                }
                _ => {}
            }
        }
        for (r, &nr) in right {
            let matched = left.keys().any(|l| matches(l, r));
            match (kind, matched) {
                (JoinKind::Right | JoinKind::Full, false) => {
                    add(vec![None, None, Some(r.0), Some(r.1)], nr)
                }
                (JoinKind::RightAnti, false) | (JoinKind::RightSemi, true) => {
                    add(vec![Some(r.0), Some(r.1)], nr)
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn lookup_join_pairs_stream_rows_with_the_table_as_it_is_then() {
        for kind in [JoinKind::Inner, JoinKind::Left] {
            let mut op = join(kind, false);
            op.lookup = true;
            let mut state = PersistedState::default();
            // The table row and the stream row of one epoch meet.
            let out = step(
                &mut op,
                vec![
                    changes(&schema_ab(), &[(1, 10, 1), (2, 20, 1)]),
                    changes(&schema_ab(), &[(1, 100, 1)]),
                ],
            );
            let mut want = vec![(row(&[Some(1), Some(10), Some(1), Some(100)]), 1)];
            if kind == JoinKind::Left {
                want.push((row(&[Some(2), Some(20), None, None]), 1));
            }
            let mut got = crate::testing::rows_of(&out);
            got.sort();
            assert_eq!(got, want, "{kind:?}");
            // A table change re-emits nothing; later stream rows see it.
            state.persist(&mut op);
            let mut op = join(kind, false);
            op.lookup = true;
            state.restore(&mut op);
            let out = step(
                &mut op,
                vec![
                    changes(&schema_ab(), &[]),
                    changes(&schema_ab(), &[(1, 100, -1), (1, 101, 1), (2, 200, 1)]),
                ],
            );
            assert!(out.is_empty(), "{kind:?}");
            let out = step(
                &mut op,
                vec![
                    changes(&schema_ab(), &[(1, 11, 1)]),
                    changes(&schema_ab(), &[]),
                ],
            );
            assert_eq!(
                crate::testing::rows_of(&out),
                vec![(row(&[Some(1), Some(11), Some(1), Some(101)]), 1)]
            );
            // Only the table is state.
            assert_eq!(op.state_entries(), 2);
            assert!(op.append_only(&[true, false], &|_| false));
        }
    }

    const ALL_KINDS: [JoinKind; 8] = [
        JoinKind::Inner,
        JoinKind::Left,
        JoinKind::Right,
        JoinKind::Full,
        JoinKind::LeftSemi,
        JoinKind::LeftAnti,
        JoinKind::RightSemi,
        JoinKind::RightAnti,
    ];

    /// Joins (a, b) with (c, d) on a = c and d within 10 of b, b and d
    /// being event times of relations 1 and 2.
    fn bounded_join(kind: JoinKind, grace_us: i64) -> Join {
        let mut op = join(kind, false);
        let pairs = pair_schema();
        let within = col("d")
            .gt_eq(col("b") - lit(10i64))
            .and(col("d").lt_eq(col("b") + lit(10i64)));
        op.condition = Some(physical(&within, &pairs));
        op.bound = Some(TimeBound {
            columns: [1, 1],
            relations: [1, 2],
            lower: Some(-10),
            upper: Some(10),
            grace_us,
            stream_time: StreamTime::Later,
        });
        op
    }

    /// Steps `op` with both relations' watermarks at `watermark`.
    fn step_at(
        op: &mut Join,
        watermark: (Option<i64>, Option<i64>),
        left: &[(i64, i64, i64)],
        right: &[(i64, i64, i64)],
    ) -> ChangeBatch {
        let none = HashMap::new();
        let ctx = EpochContext::new(&none, false);
        for relation in [1, 2] {
            ctx.watermarks.publish(
                relation,
                Watermark {
                    before: watermark.0,
                    after: watermark.1,
                },
            );
        }
        op.step(
            vec![changes(&schema_ab(), left), changes(&schema_ab(), right)],
            &ctx,
        )
        .unwrap()
    }

    #[test]
    fn bounded_join_forgets_rows_no_later_row_can_match() {
        let mut op = bounded_join(JoinKind::Inner, 0);
        let out = step_at(
            &mut op,
            (None, Some(200)),
            &[(1, 100, 1)],
            &[(1, 105, 1), (1, 200, 1)],
        );
        assert_eq!(
            crate::testing::rows_of(&out),
            vec![(row(&[Some(1), Some(100), Some(1), Some(105)]), 1)]
        );
        // Left rows before 190 and right rows before 190 can match no row
        // at 200 or later.
        assert_eq!(op.state_entries(), 1);
        let out = step_at(
            &mut op,
            (Some(200), Some(205)),
            &[(1, 195, 1), (1, 205, 1)],
            &[],
        );
        assert_eq!(
            crate::testing::rows_of(&out),
            vec![(row(&[Some(1), Some(205), Some(1), Some(200)]), 1)]
        );
        assert_eq!(op.late_rows(), 1);
    }

    /// The SQL form's time is the earlier watermark: a stream that runs
    /// ahead of the other makes none of the other's rows late.
    #[test]
    fn a_sql_bounded_join_waits_for_the_slower_stream() {
        let mut op = bounded_join(JoinKind::Inner, 0);
        if let Some(bound) = &mut op.bound {
            bound.stream_time = StreamTime::Earlier;
        }
        let none = HashMap::new();
        let step = |op: &mut Join,
                    marks: [Option<i64>; 2],
                    left: &[(i64, i64, i64)],
                    right: &[(i64, i64, i64)]| {
            let ctx = EpochContext::new(&none, false);
            for (relation, mark) in [(1, marks[0]), (2, marks[1])] {
                ctx.watermarks.publish(
                    relation,
                    Watermark {
                        before: mark,
                        after: mark,
                    },
                );
            }
            op.step(
                vec![changes(&schema_ab(), left), changes(&schema_ab(), right)],
                &ctx,
            )
            .unwrap()
        };
        // The right stream is at 500, the left one at 100: a left row at
        // 120 is behind the right stream but not late.
        step(&mut op, [Some(100), Some(500)], &[], &[(1, 125, 1)]);
        let out = step(&mut op, [Some(100), Some(500)], &[(1, 120, 1)], &[]);
        assert_eq!(
            crate::testing::rows_of(&out),
            vec![(row(&[Some(1), Some(120), Some(1), Some(125)]), 1)]
        );
        assert_eq!(op.late_rows(), 0);
        // Once both have passed 300, a row at 120 is late, and rows that
        // nothing to come can match are gone.
        let out = step(&mut op, [Some(300), Some(500)], &[(1, 121, 1)], &[]);
        assert!(out.is_empty());
        assert_eq!(op.late_rows(), 1);
        assert_eq!(op.state_entries(), 0);
    }

    #[test]
    fn bounded_outer_join_emits_unmatched_rows_once_final() {
        let mut op = bounded_join(JoinKind::Left, 5);
        let out = step_at(
            &mut op,
            (None, Some(108)),
            &[(1, 100, 1), (2, 105, 1)],
            &[(2, 108, 1)],
        );
        assert_eq!(
            crate::testing::rows_of(&out),
            vec![(row(&[Some(2), Some(105), Some(2), Some(108)]), 1)]
        );
        // 100 waits for right rows up to 110, which may come until the
        // join's time passes 115 (grace 5).
        let out = step_at(&mut op, (Some(108), Some(115)), &[], &[]);
        assert!(out.is_empty());
        let mut restored = bounded_join(JoinKind::Left, 5);
        round_trip(&mut op, &mut restored);
        let out = step_at(&mut restored, (Some(115), Some(116)), &[], &[]);
        assert_eq!(
            crate::testing::rows_of(&out),
            vec![(row(&[Some(1), Some(100), None, None]), 1)]
        );
        // Left 105 and right 108 may still meet rows at 111 or later.
        assert_eq!(restored.state_entries(), 2);
        let out = step_at(&mut restored, (Some(116), Some(1_000)), &[], &[]);
        assert!(out.is_empty(), "a matched row is never padded");
        assert_eq!(restored.state_entries(), 0);
    }

    /// Rows in rough time order, some late, into bounded joins of every
    /// kind, state persisted every epoch and restored now and then: the
    /// output is append-only, inner pairs are always those of the rows
    /// taken so far, and once every row is final the output is the join
    /// of the rows that were not late.
    #[test]
    fn bounded_joins_match_the_join_of_rows_not_late() {
        use rand::{Rng, SeedableRng};

        for kind in ALL_KINDS {
            for grace in [0, 4] {
                let mut rng = rand::rngs::StdRng::seed_from_u64(5);
                let mut persisted = PersistedState::default();
                let mut op = bounded_join(kind, grace);
                let (mut left, mut right) = (HashMap::new(), HashMap::new());
                let mut total = HashMap::new();
                let (mut now, mut late) = (None::<i64>, 0);
                for epoch in 0..80 {
                    let base = epoch * 3;
                    let mut rows = || -> Vec<(i64, i64, i64)> {
                        (0..rng.random_range(0..6))
                            .map(|_| (rng.random_range(0..4), base + rng.random_range(-15..5), 1))
                            .collect()
                    };
                    let (l, r) = (rows(), rows());
                    let latest = l.iter().chain(&r).map(|row| row.1).max();
                    let after = now.max(latest);
                    for (rows, model) in [(&l, &mut left), (&r, &mut right)] {
                        for row in rows {
                            if now.is_some_and(|now| row.1 < now - grace) {
                                late += 1;
                            } else {
                                *model.entry((row.0, row.1)).or_default() += 1;
                            }
                        }
                    }
                    let out = step_at(&mut op, (now, after), &l, &r);
                    assert!(out.weights.values().iter().all(|&w| w > 0), "{kind:?}");
                    accumulate(&mut total, &out);
                    now = after;
                    let within = |l: &(i64, i64), r: &(i64, i64)| {
                        l.0 == r.0 && r.1 >= l.1 - 10 && r.1 <= l.1 + 10
                    };
                    if kind == JoinKind::Inner {
                        assert_eq!(total, expected_with(kind, within, &left, &right));
                    }
                    persisted.persist(&mut op);
                    if epoch % 17 == 16 {
                        op = bounded_join(kind, grace);
                        op.late = late;
                        persisted.restore(&mut op);
                    }
                }
                let out = step_at(&mut op, (now, Some(i64::MAX / 2)), &[], &[]);
                accumulate(&mut total, &out);
                let within = |l: &(i64, i64), r: &(i64, i64)| {
                    l.0 == r.0 && r.1 >= l.1 - 10 && r.1 <= l.1 + 10
                };
                assert_eq!(
                    total,
                    expected_with(kind, within, &left, &right),
                    "{kind:?} grace {grace}"
                );
                assert_eq!(op.state_entries(), 0, "{kind:?}");
                assert_eq!(op.late_rows(), late, "{kind:?}");
                assert!(late > 0);
            }
        }
    }

    /// Random changes to both sides of every kind of join, state persisted
    /// every epoch and restored into a fresh operator now and then: the
    /// accumulated output always equals the join computed afresh.
    #[test]
    fn random_changes_match_recomputation_across_restores() {
        use rand::{Rng, SeedableRng};

        fn change(
            rng: &mut rand::rngs::StdRng,
            live: &mut HashMap<(i64, i64), i64>,
        ) -> (i64, i64, i64) {
            let rows: Vec<(i64, i64)> = live.keys().copied().collect();
            if !rows.is_empty() && rng.random_bool(0.4) {
                let row = rows[rng.random_range(0..rows.len())];
                let n = live.get_mut(&row).unwrap();
                *n -= 1;
                if *n == 0 {
                    live.remove(&row);
                }
                (row.0, row.1, -1)
            } else {
                let row = (rng.random_range(0..6), rng.random_range(0..4));
                *live.entry(row).or_default() += 1;
                (row.0, row.1, 1)
            }
        }

        let right_schema = Arc::new(Schema::new(vec![
            Field::new("c", DataType::Int64, true),
            Field::new("d", DataType::Int64, true),
        ]));
        for kind in ALL_KINDS {
            for condition in [false, true] {
                let mut rng = rand::rngs::StdRng::seed_from_u64(11);
                let mut persisted = PersistedState::default();
                let mut op = join(kind, condition);
                let (mut left, mut right) = (HashMap::new(), HashMap::new());
                let mut total = HashMap::new();
                for epoch in 0..120 {
                    let l: Vec<_> = (0..rng.random_range(0..8))
                        .map(|_| change(&mut rng, &mut left))
                        .collect();
                    let r: Vec<_> = (0..rng.random_range(0..8))
                        .map(|_| change(&mut rng, &mut right))
                        .collect();
                    let out = step(
                        &mut op,
                        vec![changes(&schema_ab(), &l), changes(&right_schema, &r)],
                    );
                    accumulate(&mut total, &out);
                    let want = expected(kind, condition, &left, &right);
                    assert_eq!(total, want, "{kind:?} condition {condition} epoch {epoch}");
                    persisted.persist(&mut op);
                    if epoch % 29 == 28 {
                        op = join(kind, condition);
                        persisted.restore(&mut op);
                    }
                }
            }
        }
    }

    /// One step of `op`; its output rows.
    fn step_pair(
        op: &mut Join,
        left: &[(i64, i64, i64)],
        right: &[(i64, i64, i64)],
    ) -> Vec<(Vec<Option<i64>>, i64)> {
        rows_of(&step(
            op,
            vec![changes(&schema_ab(), left), changes(&schema_ab(), right)],
        ))
    }

    /// Join keys with a watermark on both sides: rows below the lower one
    /// are forgotten, and the output's key columns hold it.
    #[test]
    fn rows_below_both_key_watermarks_are_forgotten() {
        let mut op = join(JoinKind::Inner, false);
        let none = HashMap::new();
        let ctx = EpochContext::new(&none, false);
        let out = step_pair(&mut op, &[(1, 10, 1), (2, 20, 1)], &[(1, 5, 1), (3, 7, 1)]);
        assert_eq!(out.len(), 1);
        assert_eq!(op.state_entries(), 4);
        let only_left = op
            .advance_watermarks(&[vec![Some(3), None], vec![None, None]], &ctx)
            .unwrap();
        assert!(only_left.is_empty());
        assert_eq!(op.state_entries(), 4, "the right side has no mark yet");
        let marks = op
            .advance_watermarks(&[vec![Some(3), None], vec![Some(2), None]], &ctx)
            .unwrap();
        assert_eq!(marks, vec![Some(2), None, Some(2), None]);
        assert_eq!(op.state_entries(), 2, "key 1 is gone from both sides");
        // Changes at or above the marks still join.
        let out = step_pair(&mut op, &[(3, 30, 1)], &[(2, 8, 1), (3, 9, 1)]);
        assert_eq!(out.len(), 3, "{out:?}");
    }

    /// `c BETWEEN a AND a + 10` where both have watermarks: a left row
    /// goes once the right mark passes its time plus 10, a right row once
    /// the left mark passes it.
    #[test]
    fn interval_rows_no_change_can_match_are_forgotten() {
        let mut op = join(JoinKind::Inner, false);
        let pairs = pair_schema();
        op.condition = Some(physical(
            &col("c")
                .gt_eq(col("a"))
                .and(col("c").lt_eq(col("a") + lit(10i64))),
            &pairs,
        ));
        op.sides[0].keys = vec![physical(&col("b"), &op.sides[0].schema.clone())];
        op.sides[1].keys = vec![physical(&col("d"), &op.sides[1].schema.clone())];
        op.interval = Some(TimeInterval {
            columns: [0, 0],
            lower: Some(0),
            upper: Some(10),
        });
        op.inputs_append_only(&[true, true]);
        let none = HashMap::new();
        let ctx = EpochContext::new(&none, false);
        step_pair(&mut op, &[(0, 1, 1), (20, 1, 1)], &[(5, 1, 1), (25, 1, 1)]);
        assert_eq!(op.state_entries(), 4);
        // Right changes to come are at 12 or later: left 0 (reaching 10)
        // goes. Left changes to come are at 21 or later: right 5 goes.
        op.advance_watermarks(&[vec![Some(21), None], vec![Some(12), None]], &ctx)
            .unwrap();
        assert_eq!(op.state_entries(), 2);
        let out = step_pair(&mut op, &[(22, 1, 1)], &[(30, 1, 1)]);
        // 22 meets 25 and 30; 20 meets 30.
        assert_eq!(out.len(), 3, "{out:?}");
    }
}
