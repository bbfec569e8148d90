//! Group aggregate, with retractable accumulators.
//!
//! Each group keeps its row count and one accumulator per aggregate:
//! counts and sums are plain numbers that a retraction subtracts from;
//! MIN, MAX, count(DISTINCT), string_agg keep the multiset of values in
//! order, so deleting the current extreme falls back to the next one;
//! bool_and and bool_or count trues and falses. Over an input that never
//! retracts, MIN and MAX keep only the extreme: a value that does not beat
//! it is never needed. A group whose rows all go
//! away disappears; a global aggregate (no GROUP BY) always has its one row.
//!
//! Groups are slots of a [`KeyIndex`], and accumulators are columns indexed
//! by slot. A batch hashes each group key once to find its slot; then each
//! aggregate folds the whole batch in one loop over the slots. The output
//! is built a column at a time: each touched group's values before and
//! after the batch, and for a group whose values changed, a retraction of
//! the old row and an insertion of the new one.
//!
//! A window aggregate (one group column is a window's start or end over
//! event time) closes each group once the watermark passes its window and
//! grace: the group's state is dropped, rows that arrive for it later are
//! dropped and counted as late, and under EMIT FINAL its row is emitted
//! only then, once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::make_comparator;
use datafusion::arrow::array::{
    new_empty_array, new_null_array, Array, ArrayRef, AsArray, BooleanArray, Decimal128Array,
    Float64Array, Int64Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::kernels::cmp::not_distinct;
use datafusion::arrow::compute::{
    and, cast, concat, filter, filter_record_batch, interleave, take, SortOptions,
};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::PhysicalExpr;
use eddy_catalog::{EncodedRows, RowFormat};
use serde::{Deserialize, Serialize};

use crate::change::ChangeBatch;
use crate::operators::key_index::KeyIndex;
use crate::operators::session::{Assigned, SessionWindows, Sessions};
use crate::operators::{
    column_watermark, evaluate, evaluate_predicate, read_i64, split_state_key, state_key, Bytes,
    ColumnWatermarks, EpochContext, Operator, StateWriter,
};
use crate::plan::SortKey;
use crate::{DataflowError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggFunction {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    CountDistinct,
    BoolAnd,
    BoolOr,
    StringAgg,
    /// `first_value(x ORDER BY ...) IGNORE NULLS`.
    FirstValue,
    /// `last_value(x ORDER BY ...) IGNORE NULLS`.
    LastValue,
    /// `array_agg(x ORDER BY ...)`: NULLs kept.
    ArrayAgg,
    /// `array_agg(DISTINCT x ORDER BY x)`.
    ArrayAggDistinct,
}

/// One aggregate call, over expressions of type `E`: physical ones to
/// run, or a plan's (see [`crate::plan`]).
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "E: Serialize", deserialize = "E: Deserialize<'de>"))]
pub struct AggSpec<E = Arc<dyn PhysicalExpr>> {
    pub function: AggFunction,
    /// The argument; `None` for `count(*)`.
    pub arg: Option<E>,
    /// `FILTER (WHERE ...)`.
    pub filter: Option<E>,
    /// string_agg's `ORDER BY`: expression, its type, direction.
    #[serde(with = "crate::plan::sort_keys")]
    pub order_by: Vec<SortKey<E>>,
    /// string_agg's delimiter.
    pub delimiter: String,
    pub input_type: DataType,
    pub output_type: DataType,
}

impl<E> AggSpec<E> {
    /// The same call over expressions mapped by `f`.
    pub fn try_map<F, T>(&self, mut f: F) -> Result<AggSpec<T>>
    where
        F: FnMut(&E) -> Result<T>,
    {
        Ok(AggSpec {
            function: self.function,
            arg: self.arg.as_ref().map(&mut f).transpose()?,
            filter: self.filter.as_ref().map(&mut f).transpose()?,
            order_by: crate::plan::map_sort_keys(&self.order_by, f)?,
            delimiter: self.delimiter.clone(),
            input_type: self.input_type.clone(),
            output_type: self.output_type.clone(),
        })
    }
}

/// How SUM and AVG add.
#[derive(Debug, Clone, Copy)]
enum Numeric {
    Int,
    Float,
    Decimal { scale: i8 },
}

struct Agg {
    spec: AggSpec,
    numeric: Option<Numeric>,
    /// Orders the values of multiset accumulators.
    values: Option<RowFormat>,
}

/// One aggregate's accumulators, indexed by group slot.
enum Accumulators {
    Count(Vec<i64>),
    Sum {
        int: Vec<i128>,
        float: Vec<f64>,
        n: Vec<i64>,
    },
    Bools {
        trues: Vec<i64>,
        falses: Vec<i64>,
    },
    Set(Vec<BTreeMap<Bytes, i64>>),
    /// The multiset of another aggregate over the same values (`min(x)`,
    /// `max(x)` and `count(DISTINCT x)` keep one between them): it holds
    /// nothing of its own.
    SharedSet {
        owner: usize,
    },
}

impl Accumulators {
    fn new(function: AggFunction) -> Self {
        match function {
            AggFunction::Count => Accumulators::Count(Vec::new()),
            AggFunction::Sum | AggFunction::Avg => Accumulators::Sum {
                int: Vec::new(),
                float: Vec::new(),
                n: Vec::new(),
            },
            AggFunction::BoolAnd | AggFunction::BoolOr => Accumulators::Bools {
                trues: Vec::new(),
                falses: Vec::new(),
            },
            AggFunction::Min
            | AggFunction::Max
            | AggFunction::CountDistinct
            | AggFunction::StringAgg
            | AggFunction::FirstValue
            | AggFunction::LastValue
            | AggFunction::ArrayAgg
            | AggFunction::ArrayAggDistinct => Accumulators::Set(Vec::new()),
        }
    }

    /// Makes room for `slots` groups, each empty.
    fn grow(&mut self, slots: usize) {
        match self {
            Accumulators::Count(c) => c.resize(slots, 0),
            Accumulators::Sum { int, float, n } => {
                int.resize(slots, 0);
                float.resize(slots, 0.0);
                n.resize(slots, 0);
            }
            Accumulators::Bools { trues, falses } => {
                trues.resize(slots, 0);
                falses.resize(slots, 0);
            }
            Accumulators::Set(sets) => sets.resize_with(slots, BTreeMap::new),
            Accumulators::SharedSet { .. } => {}
        }
    }

    /// Empties a freed slot for its next group.
    fn reset(&mut self, s: usize) {
        match self {
            Accumulators::Count(c) => c[s] = 0,
            Accumulators::Sum { int, float, n } => {
                int[s] = 0;
                float[s] = 0.0;
                n[s] = 0;
            }
            Accumulators::Bools { trues, falses } => {
                trues[s] = 0;
                falses[s] = 0;
            }
            Accumulators::Set(sets) => sets[s] = BTreeMap::new(),
            Accumulators::SharedSet { .. } => {}
        }
    }

    /// Adds slot `from`'s accumulators into slot `into`'s and empties
    /// `from`, noting the multiset entries that changed.
    fn merge(&mut self, j: u16, into: usize, from: usize, dirty: &mut HashSet<(u16, u32, Bytes)>) {
        match self {
            Accumulators::Count(c) => c[into] += std::mem::take(&mut c[from]),
            Accumulators::Sum { int, float, n } => {
                int[into] += std::mem::take(&mut int[from]);
                float[into] += std::mem::take(&mut float[from]);
                n[into] += std::mem::take(&mut n[from]);
            }
            Accumulators::Bools { trues, falses } => {
                trues[into] += std::mem::take(&mut trues[from]);
                falses[into] += std::mem::take(&mut falses[from]);
            }
            Accumulators::Set(sets) => {
                for (value, count) in std::mem::take(&mut sets[from]) {
                    dirty.insert((j, from as u32, value.clone()));
                    dirty.insert((j, into as u32, value.clone()));
                    let total = sets[into].entry(value).or_insert(0);
                    *total += count;
                }
            }
            Accumulators::SharedSet { .. } => {}
        }
    }

    /// Appends slot `s`'s numbers to a stored group value; multisets are
    /// stored as entries of their own.
    fn encode(&self, s: usize, value: &mut Vec<u8>) {
        match self {
            Accumulators::Count(c) => value.extend_from_slice(&c[s].to_be_bytes()),
            Accumulators::Sum { int, float, n } => {
                value.extend_from_slice(&int[s].to_be_bytes());
                value.extend_from_slice(&float[s].to_be_bytes());
                value.extend_from_slice(&n[s].to_be_bytes());
            }
            Accumulators::Bools { trues, falses } => {
                value.extend_from_slice(&trues[s].to_be_bytes());
                value.extend_from_slice(&falses[s].to_be_bytes());
            }
            Accumulators::Set(_) | Accumulators::SharedSet { .. } => {}
        }
    }

    /// Reads what [`Accumulators::encode`] wrote into slot `s`.
    fn decode(&mut self, s: usize, rest: &mut &[u8]) -> Option<()> {
        fn next<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
            let head = rest.get(..N)?.try_into().ok()?;
            *rest = &rest[N..];
            Some(head)
        }
        match self {
            Accumulators::Count(c) => c[s] = i64::from_be_bytes(next(rest)?),
            Accumulators::Sum { int, float, n } => {
                int[s] = i128::from_be_bytes(next(rest)?);
                float[s] = f64::from_be_bytes(next(rest)?);
                n[s] = i64::from_be_bytes(next(rest)?);
            }
            Accumulators::Bools { trues, falses } => {
                trues[s] = i64::from_be_bytes(next(rest)?);
                falses[s] = i64::from_be_bytes(next(rest)?);
            }
            Accumulators::Set(_) | Accumulators::SharedSet { .. } => {}
        }
        Some(())
    }

    /// Bytes slot `s` holds, roughly.
    fn bytes(&self, s: usize) -> usize {
        match self {
            Accumulators::Count(_) => 8,
            Accumulators::Sum { .. } => 32,
            Accumulators::Bools { .. } => 16,
            Accumulators::Set(sets) => sets[s].keys().map(|k| k.len() + 8).sum(),
            Accumulators::SharedSet { .. } => 0,
        }
    }
}

/// An aggregate's argument for one batch, ready to fold.
enum Prepared {
    All,
    Valid(ArrayRef),
    Int(Int64Array),
    Float(Float64Array),
    Decimal(Decimal128Array),
    Bool(BooleanArray),
    Values(EncodedRows, ArrayRef),
}

/// How a window aggregate's groups close (see [`crate::watermark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowClose {
    /// The relation whose watermark closes the windows.
    pub relation: u64,
    /// The group column holding each window's start or end.
    pub key_column: usize,
    /// A group closes once the watermark reaches its window column's value
    /// plus this many microseconds (the size for a start, and the grace).
    pub after_value: i64,
    /// A row is late once the watermark before its epoch reaches its
    /// window column's value plus this many microseconds: `after_value`,
    /// except for sessions, where a row's column is its own time.
    pub late_after: i64,
    /// `EMIT FINAL`: a group's row is emitted once, when it closes.
    pub emit_final: bool,
}

/// A slot with no close time: free, or its window column is NULL.
const NEVER: i64 = i64::MIN;

/// The open windows of a window aggregate.
struct Windows {
    close: WindowClose,
    /// Open groups by the watermark that closes them.
    closing: BTreeMap<i64, Vec<u32>>,
    /// Each slot's close time, so a slot freed and reused by another group
    /// is not closed with the old one.
    close_at: Vec<i64>,
    /// Rows dropped because their window had closed.
    late_rows: u64,
    /// Set when groups close by the watermark of this input column (the
    /// group column's), not by a relation's.
    by_input: Option<usize>,
}

pub struct Aggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_format: RowFormat,
    aggs: Vec<Agg>,
    groups: KeyIndex,
    /// Input rows per group slot.
    rows: Vec<i64>,
    /// One column of accumulators per aggregate.
    accs: Vec<Accumulators>,
    /// Slots changed since the last persist; a freed group's slot is
    /// released only then, once its deletion is written.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// Slots the current step has touched.
    is_touched: Vec<bool>,
    /// Multiset entries changed since the last persist: aggregate, slot, value.
    dirty_values: HashSet<(u16, u32, Bytes)>,
    /// Whether the input never takes a row back.
    append_only_input: bool,
    windows: Option<Windows>,
    sessions: Option<Sessions>,
    schema: SchemaRef,
    text: String,
}

impl Aggregate {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_types: Vec<DataType>,
        aggs: Vec<AggSpec>,
        schema: SchemaRef,
        text: String,
    ) -> Result<Self> {
        let aggs = aggs
            .into_iter()
            .map(|spec| {
                let numeric = match spec.function {
                    AggFunction::Sum | AggFunction::Avg => Some(numeric_of(&spec.input_type)?),
                    _ => None,
                };
                let values = match spec.function {
                    AggFunction::Min | AggFunction::Max | AggFunction::CountDistinct => {
                        Some(RowFormat::new(vec![spec.input_type.clone()])?)
                    }
                    AggFunction::StringAgg
                    | AggFunction::FirstValue
                    | AggFunction::LastValue
                    | AggFunction::ArrayAgg
                    | AggFunction::ArrayAggDistinct => Some(RowFormat::with_options(
                        spec.order_by
                            .iter()
                            .map(|o| o.1.clone())
                            .chain([spec.input_type.clone()])
                            .collect(),
                        spec.order_by
                            .iter()
                            .map(|o| o.2)
                            .chain([SortOptions::default()])
                            .collect(),
                    )?),
                    _ => None,
                };
                Ok(Agg {
                    spec,
                    numeric,
                    values,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let accs = aggs
            .iter()
            .enumerate()
            .map(|(j, a)| match multiset_owner(&aggs, j) {
                Some(owner) => Accumulators::SharedSet { owner },
                None => Accumulators::new(a.spec.function),
            })
            .collect();
        Ok(Aggregate {
            group_exprs,
            group_format: RowFormat::new(group_types)?,
            aggs,
            groups: KeyIndex::default(),
            rows: Vec::new(),
            accs,
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            is_touched: Vec::new(),
            dirty_values: HashSet::new(),
            append_only_input: false,
            windows: None,
            sessions: None,
            schema,
            text,
        })
    }

    /// Makes this a session window aggregate (see [`crate::operators::session`]).
    pub fn with_sessions(mut self, windows: SessionWindows) -> Result<Self> {
        let key_types = self
            .group_format
            .types()
            .iter()
            .enumerate()
            .filter(|(k, _)| !windows.is_bound(*k))
            .map(|(_, t)| t.clone())
            .collect();
        self.text.push_str(&format!(
            ", in sessions of group columns {} to {} with a gap of {}us",
            windows.start_key, windows.end_key, windows.gap_us
        ));
        self.sessions = Some(Sessions::new(windows, RowFormat::new(key_types)?));
        Ok(self)
    }

    /// Makes this a window aggregate whose groups close by the watermark.
    pub fn with_window_close(mut self, close: WindowClose) -> Self {
        self.text.push_str(&format!(
            ", closing groups when the watermark of relation {} passes group column {} + {}us{}",
            close.relation,
            close.key_column,
            close.after_value,
            if close.emit_final {
                ", emitting final rows"
            } else {
                ""
            }
        ));
        self.windows = Some(Windows {
            close,
            closing: BTreeMap::new(),
            close_at: Vec::new(),
            late_rows: 0,
            by_input: None,
        });
        self
    }

    /// Each row's window column, as microseconds.
    fn window_values(
        &self,
        close: &WindowClose,
        data: &RecordBatch,
    ) -> Result<TimestampMicrosecondArray> {
        let column = evaluate(self.group_exprs[close.key_column].as_ref(), data)?;
        let batch = RecordBatch::try_from_iter([("window", column)])?;
        crate::watermark::micros(&batch, 0)
    }

    /// Drops the rows whose window closed before this epoch.
    fn drop_late(&mut self, input: ChangeBatch, ctx: &EpochContext) -> Result<ChangeBatch> {
        let Some(close) = self.windows.as_ref().map(|w| w.close) else {
            return Ok(input);
        };
        let Some(watermark) = ctx.watermarks.get(close.relation).before else {
            return Ok(input);
        };
        if input.is_empty() {
            return Ok(input);
        }
        let values = self.window_values(&close, &input.data)?;
        let keep = BooleanArray::from_iter((0..values.len()).map(|i| {
            Some(values.is_null(i) || values.value(i).saturating_add(close.late_after) > watermark)
        }));
        let weights = input.weights.values();
        let late = (0..keep.len())
            .filter(|&i| !keep.value(i) && weights[i] > 0)
            .count() as u64;
        if keep.true_count() == keep.len() {
            return Ok(input);
        }
        if let Some(windows) = &mut self.windows {
            windows.late_rows += late;
        }
        let data = filter_record_batch(&input.data, &keep)?;
        let weights = filter(&input.weights, &keep)?
            .as_primitive::<Int64Type>()
            .clone();
        Ok(ChangeBatch::new(data, weights))
    }

    /// Notes when each group new in this batch closes: `slots` are the
    /// rows' groups.
    fn note_closes(&mut self, data: &RecordBatch, slots: &[u32]) -> Result<()> {
        let Some(close) = self.windows.as_ref().map(|w| w.close) else {
            return Ok(());
        };
        let values = self.window_values(&close, data)?;
        let Some(windows) = &mut self.windows else {
            return Ok(());
        };
        for (i, &slot) in slots.iter().enumerate() {
            let s = slot as usize;
            if windows.close_at.len() <= s {
                windows.close_at.resize(s + 1, NEVER);
            }
            if windows.close_at[s] != NEVER || values.is_null(i) {
                continue;
            }
            let at = values.value(i).saturating_add(close.after_value);
            windows.close_at[s] = at;
            windows.closing.entry(at).or_default().push(slot);
        }
        Ok(())
    }

    /// Closes the groups whose windows the watermark after this epoch has
    /// passed; under EMIT FINAL, returns their rows.
    fn close_windows(&mut self, ctx: &EpochContext) -> Result<Option<ChangeBatch>> {
        let Some(windows) = self.windows.as_ref().filter(|w| w.by_input.is_none()) else {
            return Ok(None);
        };
        match ctx.watermarks.get(windows.close.relation).after {
            Some(watermark) => self.close_until(watermark),
            None => Ok(None),
        }
    }

    /// Closes the groups that close at or before `watermark`; under EMIT
    /// FINAL, returns their rows.
    fn close_until(&mut self, watermark: i64) -> Result<Option<ChangeBatch>> {
        let Some(windows) = &mut self.windows else {
            return Ok(None);
        };
        let open = match watermark.checked_add(1) {
            Some(next) => windows.closing.split_off(&next),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut windows.closing, open);
        let mut closed = Vec::new();
        for (at, slots) in due {
            for slot in slots {
                let s = slot as usize;
                if windows.close_at.get(s) == Some(&at) && self.rows[s] > 0 {
                    windows.close_at[s] = NEVER;
                    closed.push(slot);
                }
            }
        }
        let rows = if windows.close.emit_final && !closed.is_empty() {
            Some(self.rows_of(&closed)?)
        } else {
            None
        };
        for &slot in &closed {
            self.expire(slot);
            if let Some(sessions) = &mut self.sessions {
                sessions.close(slot);
            }
        }
        Ok(rows)
    }

    /// Starts closing groups by the watermark of input column `input`,
    /// which group column `k` is: each group closes once no change can
    /// reach its value any more.
    fn close_by_input(&mut self, k: usize, input: usize) -> Result<()> {
        let slots: Vec<u32> = self
            .groups
            .iter()
            .map(|(slot, _)| slot)
            .filter(|&slot| self.exists(slot))
            .collect();
        let mut windows = Windows {
            close: WindowClose {
                relation: u64::MAX,
                key_column: k,
                after_value: 1,
                late_after: 1,
                emit_final: false,
            },
            closing: BTreeMap::new(),
            close_at: vec![NEVER; self.groups.slots()],
            late_rows: 0,
            by_input: Some(input),
        };
        if !slots.is_empty() {
            let keys = self
                .group_format
                .decode(slots.iter().map(|&slot| self.groups.key(slot)))?;
            let batch = RecordBatch::try_from_iter([("window", keys[k].clone())])?;
            let values = crate::watermark::micros(&batch, 0)?;
            for (i, &slot) in slots.iter().enumerate() {
                if !values.is_null(i) {
                    let at = values.value(i).saturating_add(1);
                    windows.close_at[slot as usize] = at;
                    windows.closing.entry(at).or_default().push(slot);
                }
            }
        }
        self.windows = Some(windows);
        Ok(())
    }

    /// The output rows of the groups in `slots`, each inserted once.
    fn rows_of(&self, slots: &[u32]) -> Result<ChangeBatch> {
        let mut columns = self
            .group_format
            .decode(slots.iter().map(|&s| self.groups.key(s)))?;
        for j in 0..self.aggs.len() {
            columns.push(self.finish(j, slots)?);
        }
        let columns = crate::change::cast_columns(columns, &self.schema)?;
        let weights = Int64Array::from(vec![1; slots.len()]);
        ChangeBatch::try_from_columns(&self.schema, columns, weights)
    }

    /// Drops a closed group's state; its row stays in the output.
    fn expire(&mut self, slot: u32) {
        self.rows[slot as usize] = 0;
        for (j, acc) in self.accs.iter_mut().enumerate() {
            if let Accumulators::Set(sets) = acc {
                for (value, _) in std::mem::take(&mut sets[slot as usize]) {
                    self.dirty_values.insert((j as u16, slot, value));
                }
            }
        }
        self.mark_dirty(slot);
    }

    fn is_global(&self) -> bool {
        self.group_exprs.is_empty()
    }

    /// Each row's group columns.
    fn group_columns(&self, data: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.group_exprs
            .iter()
            .map(|e| evaluate(e.as_ref(), data))
            .collect()
    }

    /// Each row's group key, encoded.
    fn group_keys(&self, data: &RecordBatch) -> Result<EncodedRows> {
        let columns = self.group_columns(data)?;
        Ok(self.group_format.encode(&columns, data.num_rows())?)
    }

    /// The keys rows are routed to workers by: the group key, or for
    /// sessions the group columns other than the window's bounds.
    fn route_keys(&self, data: &RecordBatch) -> Result<EncodedRows> {
        match &self.sessions {
            Some(sessions) => sessions.keys(&self.group_columns(data)?, data.num_rows()),
            None => self.group_keys(data),
        }
    }

    /// Puts each row of a session aggregate's input in its session.
    fn assign_sessions(&mut self, input: ChangeBatch) -> Result<(ChangeBatch, Option<Assigned>)> {
        if self.sessions.is_none() || input.is_empty() {
            return Ok((input, None));
        }
        if !self.append_only_input || input.weights.values().iter().any(|&w| w <= 0) {
            return Err(DataflowError::Unsupported(
                "session windows over rows that are updated or deleted (window a stream)".into(),
            ));
        }
        let columns = self.group_columns(&input.data)?;
        let Some(sessions) = &mut self.sessions else {
            return Ok((input, None));
        };
        let keys = sessions.keys(&columns, input.num_rows())?;
        let assigned = sessions.assign(&input.data, &keys)?;
        let input = ChangeBatch::new(assigned.data.clone(), input.weights);
        Ok((input, Some(assigned)))
    }

    /// Folds one batch into the groups; returns the changes to their rows.
    fn apply(&mut self, input: ChangeBatch, ctx: &EpochContext) -> Result<ChangeBatch> {
        // The global group's row exists from the start, on the worker
        // that its (empty) key is routed to.
        let create_global =
            ctx.backfill && self.is_global() && self.groups.is_empty() && ctx.worker.owns(&[]);
        if input.is_empty() && !create_global {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let (input, assigned) = self.assign_sessions(input)?;
        let n = input.num_rows();
        let keys = self.group_keys(&input.data)?;
        // An aggregate sharing another's multiset has nothing to fold.
        let prepared = self
            .aggs
            .iter()
            .zip(&self.accs)
            .map(|(a, acc)| match acc {
                Accumulators::SharedSet { .. } => Ok(Prepared::All),
                _ => self.prepare(a, &input.data),
            })
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .aggs
            .iter()
            .map(|a| {
                a.spec
                    .filter
                    .as_ref()
                    .map(|f| evaluate_predicate(f.as_ref(), &input.data))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;

        // Each row's group slot; the touched groups in first-touch order,
        // and whether each had an output row before this batch.
        let mut slots = Vec::with_capacity(n);
        let mut touched: Vec<u32> = Vec::new();
        let mut existed: Vec<bool> = Vec::new();
        if create_global {
            let slot = self.slot_for(&[]);
            self.is_touched[slot as usize] = true;
            touched.push(slot);
            existed.push(false);
        }
        for i in 0..n {
            let slot = self.slot_for(keys.row(i));
            if !self.is_touched[slot as usize] {
                self.is_touched[slot as usize] = true;
                touched.push(slot);
                existed.push(self.exists(slot));
            }
            slots.push(slot);
        }
        // Sessions merged into others: their rows are taken back.
        let moves = match (&mut self.sessions, &assigned) {
            (Some(sessions), Some(assigned)) => sessions.placed(assigned, &slots)?,
            _ => Vec::new(),
        };
        for &(old, _) in &moves {
            if !self.is_touched[old as usize] {
                self.is_touched[old as usize] = true;
                touched.push(old);
                existed.push(self.exists(old));
            }
        }
        for &slot in &touched {
            self.is_touched[slot as usize] = false;
        }
        self.note_closes(&input.data, &slots)?;
        let before = (0..self.aggs.len())
            .map(|j| self.finish(j, &touched))
            .collect::<Result<Vec<_>>>()?;
        for &(old, into) in &moves {
            let (old, into) = (old as usize, into as usize);
            self.rows[into] += std::mem::take(&mut self.rows[old]);
            for (j, acc) in self.accs.iter_mut().enumerate() {
                acc.merge(j as u16, into, old, &mut self.dirty_values);
            }
        }

        let weights = input.weights.values();
        for (&slot, &w) in slots.iter().zip(weights.iter()) {
            self.rows[slot as usize] += w;
        }
        for (j, (prepared, filter)) in prepared.iter().zip(&filters).enumerate() {
            let extreme_only = match self.aggs[j].spec.function {
                AggFunction::Min if self.append_only_input => Some(Extreme::Min),
                AggFunction::Max if self.append_only_input => Some(Extreme::Max),
                _ => None,
            };
            fold(
                j as u16,
                extreme_only,
                &mut self.accs[j],
                prepared,
                filter.as_ref(),
                &slots,
                weights,
                &mut self.dirty_values,
            )?;
        }
        for &slot in &touched {
            let rows = self.rows[slot as usize];
            if rows < 0 {
                return Err(DataflowError::Internal(format!("group has {rows} rows")));
            }
            self.mark_dirty(slot);
        }
        let after = (0..self.aggs.len())
            .map(|j| self.finish(j, &touched))
            .collect::<Result<Vec<_>>>()?;

        // Groups whose every value is as before have nothing to say.
        let mut unchanged: Option<BooleanArray> = None;
        for (b, a) in before.iter().zip(&after) {
            let same = same_values(b, a)?;
            unchanged = Some(match unchanged {
                Some(u) => and(&u, &same)?,
                None => same,
            });
        }
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut out_weights = Vec::new();
        for (t, &slot) in touched.iter().enumerate() {
            let (was, is) = (existed[t], self.exists(slot));
            if was && is && unchanged.as_ref().is_none_or(|u| u.value(t)) {
                continue;
            }
            if was {
                picks.push((0, t));
                out_weights.push(-1);
            }
            if is {
                picks.push((1, t));
                out_weights.push(1);
            }
        }
        if picks.is_empty() {
            return Ok(ChangeBatch::empty(self.schema.clone()));
        }
        let key_columns = self
            .group_format
            .decode(touched.iter().map(|&s| self.groups.key(s)))?;
        let key_rows = UInt32Array::from_iter_values(picks.iter().map(|&(_, t)| t as u32));
        let mut columns = key_columns
            .iter()
            .map(|c| take(c.as_ref(), &key_rows, None))
            .collect::<Result<Vec<_>, _>>()?;
        for (b, a) in before.iter().zip(&after) {
            columns.push(interleave(&[b.as_ref(), a.as_ref()], &picks)?);
        }
        let columns = crate::change::cast_columns(columns, &self.schema)?;
        ChangeBatch::try_from_columns(&self.schema, columns, Int64Array::from(out_weights))
    }

    /// Whether the group in `slot` has an output row.
    fn exists(&self, slot: u32) -> bool {
        self.rows[slot as usize] > 0 || self.is_global()
    }

    /// The slot of the group `key`, making an empty group if it is new.
    fn slot_for(&mut self, key: &[u8]) -> u32 {
        let (slot, _) = self.groups.find_or_insert(key);
        let slots = self.groups.slots();
        if self.rows.len() < slots {
            self.rows.resize(slots, 0);
            self.is_dirty.resize(slots, false);
            self.is_touched.resize(slots, false);
            for acc in &mut self.accs {
                acc.grow(slots);
            }
        }
        slot
    }

    /// Releases a group that has no rows left.
    fn free(&mut self, slot: u32) {
        if let Some(at) = self
            .windows
            .as_mut()
            .and_then(|w| w.close_at.get_mut(slot as usize))
        {
            *at = NEVER;
        }
        self.groups.remove(slot);
        self.rows[slot as usize] = 0;
        for acc in &mut self.accs {
            acc.reset(slot as usize);
        }
    }

    fn mark_dirty(&mut self, slot: u32) {
        if !self.is_dirty[slot as usize] {
            self.is_dirty[slot as usize] = true;
            self.dirty.push(slot);
        }
    }

    fn prepare(
        &self,
        agg: &Agg,
        batch: &datafusion::arrow::array::RecordBatch,
    ) -> Result<Prepared> {
        let Some(arg) = &agg.spec.arg else {
            return Ok(Prepared::All);
        };
        let values = evaluate(arg.as_ref(), batch)?;
        Ok(match agg.spec.function {
            AggFunction::Count => Prepared::Valid(values),
            AggFunction::Sum | AggFunction::Avg => match agg.numeric {
                Some(Numeric::Int) => {
                    Prepared::Int(cast(&values, &DataType::Int64)?.as_primitive().clone())
                }
                Some(Numeric::Float) => {
                    Prepared::Float(cast(&values, &DataType::Float64)?.as_primitive().clone())
                }
                Some(Numeric::Decimal { scale }) => Prepared::Decimal(
                    cast(&values, &DataType::Decimal128(38, scale))?
                        .as_primitive()
                        .clone(),
                ),
                None => return Err(DataflowError::Internal("sum without a number type".into())),
            },
            AggFunction::BoolAnd | AggFunction::BoolOr => {
                Prepared::Bool(cast(&values, &DataType::Boolean)?.as_boolean().clone())
            }
            AggFunction::Min
            | AggFunction::Max
            | AggFunction::CountDistinct
            | AggFunction::StringAgg
            | AggFunction::FirstValue
            | AggFunction::LastValue
            | AggFunction::ArrayAgg
            | AggFunction::ArrayAggDistinct => {
                let format = agg
                    .values
                    .as_ref()
                    .ok_or_else(|| DataflowError::Internal("multiset without a format".into()))?;
                let mut columns = agg
                    .spec
                    .order_by
                    .iter()
                    .map(|(e, _, _)| evaluate(e.as_ref(), batch))
                    .collect::<Result<Vec<_>>>()?;
                let last = format.types().len() - 1;
                let values = if values.data_type() == &format.types()[last] {
                    values
                } else {
                    cast(&values, &format.types()[last])?
                };
                columns.push(values.clone());
                let encoded = format.encode(&columns, batch.num_rows())?;
                // array_agg keeps NULL values: every row counts as present.
                let present = match agg.spec.function {
                    AggFunction::ArrayAgg | AggFunction::ArrayAggDistinct => {
                        Arc::new(BooleanArray::from(vec![true; batch.num_rows()])) as ArrayRef
                    }
                    _ => values,
                };
                Prepared::Values(encoded, present)
            }
        })
    }

    /// Aggregate `j`'s output values for the groups in `slots`.
    fn finish(&self, j: usize, slots: &[u32]) -> Result<ArrayRef> {
        let agg = &self.aggs[j];
        let output = &agg.spec.output_type;
        let avg = agg.spec.function == AggFunction::Avg;
        let accs = match self.accs[j] {
            Accumulators::SharedSet { owner } => &self.accs[owner],
            ref own => own,
        };
        let array: ArrayRef = match (accs, agg.spec.function) {
            (Accumulators::Count(c), _) => Arc::new(Int64Array::from_iter_values(
                slots.iter().map(|&s| c[s as usize]),
            )),
            (Accumulators::Sum { int, float, n }, _) => {
                let each = slots.iter().map(|&s| s as usize).filter(|&s| n[s] != 0);
                let present = || slots.iter().map(|&s| n[s as usize] != 0);
                match agg.numeric {
                    Some(Numeric::Int) if avg => Arc::new(Float64Array::from_iter(
                        slots
                            .iter()
                            .map(|&s| s as usize)
                            .map(|s| (n[s] != 0).then(|| int[s] as f64 / n[s] as f64)),
                    )),
                    Some(Numeric::Int) => {
                        let mut values = Vec::with_capacity(slots.len());
                        for s in each {
                            values.push(i64::try_from(int[s]).map_err(|_| overflow("bigint"))?);
                        }
                        present_at(&Int64Array::from(values), present())?
                    }
                    Some(Numeric::Float) => Arc::new(Float64Array::from_iter(
                        slots.iter().map(|&s| s as usize).map(|s| {
                            (n[s] != 0).then(|| {
                                if avg {
                                    float[s] / n[s] as f64
                                } else {
                                    float[s]
                                }
                            })
                        }),
                    )),
                    Some(Numeric::Decimal { scale }) => {
                        let DataType::Decimal128(precision, out_scale) = output else {
                            return Err(DataflowError::Internal(format!(
                                "decimal sum yields {output}"
                            )));
                        };
                        let shift = (*out_scale as i32 - scale as i32).max(0) as u32;
                        let mut values = Vec::with_capacity(slots.len());
                        for s in each {
                            let scaled = int[s]
                                .checked_mul(10i128.pow(shift))
                                .ok_or_else(|| overflow("numeric"))?;
                            let value = if avg { scaled / n[s] as i128 } else { scaled };
                            if value.unsigned_abs() >= 10u128.pow(*precision as u32) {
                                return Err(overflow("numeric"));
                            }
                            values.push(value);
                        }
                        let values = Decimal128Array::from(values)
                            .with_precision_and_scale(*precision, *out_scale)?;
                        present_at(&values, present())?
                    }
                    None => {
                        return Err(DataflowError::Internal("sum without a number type".into()))
                    }
                }
            }
            (Accumulators::Bools { trues, falses }, function) => {
                Arc::new(BooleanArray::from_iter(slots.iter().map(|&s| {
                    let (t, f) = (trues[s as usize], falses[s as usize]);
                    (t + f > 0).then_some(if function == AggFunction::BoolAnd {
                        f == 0
                    } else {
                        t > 0
                    })
                })))
            }
            (Accumulators::Set(sets), AggFunction::CountDistinct) => Arc::new(
                Int64Array::from_iter_values(slots.iter().map(|&s| sets[s as usize].len() as i64)),
            ),
            (
                Accumulators::Set(sets),
                AggFunction::Min
                | AggFunction::Max
                | AggFunction::FirstValue
                | AggFunction::LastValue,
            ) => {
                let min = matches!(
                    agg.spec.function,
                    AggFunction::Min | AggFunction::FirstValue
                );
                let extremes: Vec<Option<&[u8]>> = slots
                    .iter()
                    .map(|&s| {
                        let set = &sets[s as usize];
                        let key = if min {
                            set.keys().next()
                        } else {
                            set.keys().next_back()
                        };
                        key.map(|k| &k[..])
                    })
                    .collect();
                let format = multiset_format(agg)?;
                let decoded = format.decode(extremes.iter().flatten().copied())?;
                // first_value and last_value order by their ORDER BY
                // columns; the value is the last column.
                let Some(decoded) = decoded.into_iter().next_back().filter(|d| !d.is_empty())
                else {
                    return Ok(new_null_array(output, slots.len()));
                };
                present_at(&decoded, extremes.iter().map(Option::is_some))?
            }
            (Accumulators::Set(sets), AggFunction::ArrayAgg | AggFunction::ArrayAggDistinct) => {
                let distinct = agg.spec.function == AggFunction::ArrayAggDistinct;
                array_agg(multiset_format(agg)?, sets, slots, output, distinct)?
            }
            (Accumulators::Set(sets), AggFunction::StringAgg) => {
                let format = multiset_format(agg)?;
                let mut texts = Vec::with_capacity(slots.len());
                for &s in slots {
                    texts.push(string_agg(agg, format, &sets[s as usize])?);
                }
                Arc::new(StringArray::from(texts))
            }
            (_, function) => {
                return Err(DataflowError::Internal(format!(
                    "{function:?} with the wrong accumulators"
                )))
            }
        };
        if array.data_type() == output {
            Ok(array)
        } else {
            Ok(cast(&array, output)?)
        }
    }
}

/// The aggregate before `j` whose multiset `j` can share: `min`, `max` and
/// `count(DISTINCT ...)` of one expression without FILTER each keep the
/// multiset of its values.
fn multiset_owner(aggs: &[Agg], j: usize) -> Option<usize> {
    let shares = |agg: &Agg| {
        matches!(
            agg.spec.function,
            AggFunction::Min | AggFunction::Max | AggFunction::CountDistinct
        ) && agg.spec.filter.is_none()
            && agg.spec.arg.is_some()
    };
    let mine = &aggs[j];
    if !shares(mine) {
        return None;
    }
    aggs[..j].iter().position(|other| {
        shares(other)
            && other.spec.input_type == mine.spec.input_type
            && match (&other.spec.arg, &mine.spec.arg) {
                (Some(a), Some(b)) => a.as_ref() == b.as_ref(),
                _ => false,
            }
    })
}

fn multiset_format(agg: &Agg) -> Result<&RowFormat> {
    agg.values
        .as_ref()
        .ok_or_else(|| DataflowError::Internal("multiset without a format".into()))
}

/// Row by row, whether `a` and `b` hold the same value (NULLs equal).
fn same_values(a: &ArrayRef, b: &ArrayRef) -> Result<BooleanArray> {
    if !a.data_type().is_nested() {
        return Ok(not_distinct(a, b)?);
    }
    // Lists (array_agg): compared through their order.
    let compare = make_comparator(a.as_ref(), b.as_ref(), SortOptions::default())?;
    Ok((0..a.len()).map(|i| Some(compare(i, i).is_eq())).collect())
}

/// array_agg over each slot's multiset of (order by..., value) rows: the
/// values in order, each as often as its count (once, `distinct`); NULL
/// for an empty group.
fn array_agg(
    format: &RowFormat,
    sets: &[BTreeMap<Bytes, i64>],
    slots: &[u32],
    output: &DataType,
    distinct: bool,
) -> Result<ArrayRef> {
    let DataType::List(item) = output else {
        return Err(DataflowError::Internal(format!(
            "array_agg into {output}, not a list"
        )));
    };
    let mut pieces: Vec<ArrayRef> = Vec::new();
    let mut offsets = vec![0i32];
    let mut present = Vec::with_capacity(slots.len());
    for &s in slots {
        let set = &sets[s as usize];
        let end = *offsets.last().unwrap_or(&0);
        present.push(!set.is_empty());
        if set.is_empty() {
            offsets.push(end);
            continue;
        }
        let columns = format.decode(set.keys().map(|k| &k[..]))?;
        let values = columns
            .last()
            .ok_or_else(|| DataflowError::Internal("array_agg without values".into()))?;
        let indices: Vec<u32> = set
            .values()
            .enumerate()
            .flat_map(|(i, &count)| {
                let times = if distinct { 1 } else { count.max(0) as usize };
                std::iter::repeat_n(i as u32, times)
            })
            .collect();
        let taken = take(values.as_ref(), &UInt32Array::from(indices), None)?;
        offsets.push(end + taken.len() as i32);
        pieces.push(cast(&taken, item.data_type())?);
    }
    let values = if pieces.is_empty() {
        new_empty_array(item.data_type())
    } else {
        concat(&pieces.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?
    };
    Ok(Arc::new(ListArray::try_new(
        item.clone(),
        OffsetBuffer::new(offsets.into()),
        values,
        Some(NullBuffer::from(present)),
    )?))
}

/// string_agg over a multiset of (order by..., value) rows.
fn string_agg(agg: &Agg, format: &RowFormat, set: &BTreeMap<Bytes, i64>) -> Result<Option<String>> {
    if set.is_empty() {
        return Ok(None);
    }
    let columns = format.decode(set.keys().map(|k| &k[..]))?;
    let strings = cast(&columns[columns.len() - 1], &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    let mut text = String::new();
    let mut first = true;
    for (i, count) in set.values().enumerate() {
        for _ in 0..*count {
            if !first {
                text.push_str(&agg.spec.delimiter);
            }
            first = false;
            text.push_str(strings.value(i));
        }
    }
    Ok(Some(text))
}

/// `values`, one per `true` of `present`, spread out with NULLs at the
/// `false`s.
fn present_at(values: &dyn Array, present: impl Iterator<Item = bool>) -> Result<ArrayRef> {
    let mut next = 0u32;
    let indices = UInt32Array::from_iter(present.map(|p| {
        p.then(|| {
            next += 1;
            next - 1
        })
    }));
    if next as usize == indices.len() {
        return Ok(values.slice(0, values.len()));
    }
    Ok(take(values, &indices, None)?)
}

fn numeric_of(data_type: &DataType) -> Result<Numeric> {
    Ok(match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Numeric::Int,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Numeric::Float,
        DataType::Decimal128(_, scale) => Numeric::Decimal { scale: *scale },
        other => {
            return Err(DataflowError::Unsupported(format!(
                "sum or avg of type {other}"
            )))
        }
    })
}

fn overflow(what: &str) -> DataflowError {
    DataflowError::Overflow(format!("{what} out of range"))
}

/// Which end of a multiset an aggregate keeps, when it keeps only that.
#[derive(Clone, Copy)]
enum Extreme {
    Min,
    Max,
}

/// Folds a batch into one aggregate's accumulators: row `i` goes to group
/// `slots[i]` with `weights[i]`, where `filter` (if any) passes it and its
/// value is not NULL. Multiset entries it changes go to `dirty`. With
/// `extreme_only`, a multiset keeps only its least or greatest value, and
/// weights must be positive.
#[allow(clippy::too_many_arguments)]
fn fold(
    j: u16,
    extreme_only: Option<Extreme>,
    accs: &mut Accumulators,
    prepared: &Prepared,
    filter: Option<&BooleanArray>,
    slots: &[u32],
    weights: &[i64],
    dirty: &mut HashSet<(u16, u32, Bytes)>,
) -> Result<()> {
    let passes = |i: usize| filter.is_none_or(|f| f.value(i));
    let rows = slots.iter().zip(weights).enumerate();
    match (accs, prepared) {
        (Accumulators::Count(c), Prepared::All) => {
            for (i, (&s, &w)) in rows {
                if passes(i) {
                    c[s as usize] += w;
                }
            }
        }
        (Accumulators::Count(c), Prepared::Valid(values)) => {
            for (i, (&s, &w)) in rows {
                if passes(i) && values.is_valid(i) {
                    c[s as usize] += w;
                }
            }
        }
        (Accumulators::Sum { int, n, .. }, Prepared::Int(values)) => {
            for (i, (&s, &w)) in rows {
                if passes(i) && values.is_valid(i) {
                    int[s as usize] += values.value(i) as i128 * w as i128;
                    n[s as usize] += w;
                }
            }
        }
        (Accumulators::Sum { int, n, .. }, Prepared::Decimal(values)) => {
            for (i, (&s, &w)) in rows {
                if passes(i) && values.is_valid(i) {
                    int[s as usize] += values.value(i) * w as i128;
                    n[s as usize] += w;
                }
            }
        }
        (Accumulators::Sum { float, n, .. }, Prepared::Float(values)) => {
            for (i, (&s, &w)) in rows {
                if passes(i) && values.is_valid(i) {
                    let s = s as usize;
                    float[s] += values.value(i) * w as f64;
                    n[s] += w;
                    if n[s] == 0 {
                        // Start afresh, so rounding does not outlive the rows.
                        float[s] = 0.0;
                    }
                }
            }
        }
        (Accumulators::Bools { trues, falses }, Prepared::Bool(values)) => {
            for (i, (&s, &w)) in rows {
                if passes(i) && values.is_valid(i) {
                    if values.value(i) {
                        trues[s as usize] += w;
                    } else {
                        falses[s as usize] += w;
                    }
                }
            }
        }
        (Accumulators::Set(sets), Prepared::Values(encoded, values)) if extreme_only.is_some() => {
            let keep_least = matches!(extreme_only, Some(Extreme::Min));
            for (i, (&s, &w)) in rows {
                if !(passes(i) && values.is_valid(i)) {
                    continue;
                }
                if w <= 0 {
                    return Err(DataflowError::Internal(format!(
                        "weight {w} into an aggregate over rows never taken back"
                    )));
                }
                let key = encoded.row(i);
                let set = &mut sets[s as usize];
                let current = if keep_least {
                    set.keys().next()
                } else {
                    set.keys().next_back()
                };
                match current.map(|c| key.cmp(c)) {
                    Some(std::cmp::Ordering::Equal) => {
                        if let Some(count) = set.get_mut(key) {
                            *count += w;
                        }
                    }
                    Some(std::cmp::Ordering::Greater) if keep_least => continue,
                    Some(std::cmp::Ordering::Less) if !keep_least => continue,
                    _ => {
                        if let Some(old) = current.cloned() {
                            set.remove(&old);
                            dirty.insert((j, s, old));
                        }
                        set.insert(key.into(), w);
                    }
                }
                dirty.insert((j, s, key.into()));
            }
        }
        (Accumulators::SharedSet { .. }, _) => {}
        (Accumulators::Set(sets), Prepared::Values(encoded, values)) => {
            for (i, (&s, &w)) in rows {
                if passes(i) && values.is_valid(i) {
                    let key = encoded.row(i);
                    let set = &mut sets[s as usize];
                    if let Some(count) = set.get_mut(key) {
                        *count += w;
                        if *count == 0 {
                            set.remove(key);
                        }
                    } else if w != 0 {
                        set.insert(key.into(), w);
                    }
                    dirty.insert((j, s, key.into()));
                }
            }
        }
        _ => {
            return Err(DataflowError::Internal(
                "aggregate argument does not match its accumulators".into(),
            ))
        }
    }
    Ok(())
}

impl Operator for Aggregate {
    fn describe(&self) -> String {
        format!("Aggregate: {}", self.text)
    }

    fn inputs_append_only(&mut self, inputs: &[bool]) {
        self.append_only_input = inputs.iter().all(|&a| a);
        if self.append_only_input {
            // MIN and MAX then keep only their extreme, each its own.
            for (agg, acc) in self.aggs.iter().zip(&mut self.accs) {
                if let Accumulators::SharedSet { .. } = acc {
                    *acc = Accumulators::new(agg.spec.function);
                }
            }
        }
    }

    /// One row per group: the group columns, which come first.
    fn unique_key(
        &self,
        _inputs: &[Option<Vec<usize>>],
        _source: &dyn Fn(u64) -> Option<Vec<usize>>,
    ) -> Option<Vec<usize>> {
        (!self.is_global()).then(|| (0..self.group_exprs.len()).collect())
    }

    fn step(&mut self, mut inputs: Vec<ChangeBatch>, ctx: &EpochContext) -> Result<ChangeBatch> {
        let input = self.drop_late(inputs.remove(0), ctx)?;
        let changes = self.apply(input, ctx)?;
        match self.close_windows(ctx)? {
            Some(finals) => Ok(finals),
            None if self.windows.as_ref().is_some_and(|w| w.close.emit_final) => {
                Ok(ChangeBatch::empty(self.schema.clone()))
            }
            None => Ok(changes),
        }
    }

    /// A window aggregate's window column holds the watermark past which
    /// its windows have closed. A group column that is an input column
    /// with a watermark keeps it, and groups below it close: no change
    /// reaches them any more.
    fn advance_watermarks(
        &mut self,
        inputs: &[ColumnWatermarks],
        ctx: &EpochContext,
    ) -> Result<ColumnWatermarks> {
        let input = inputs.first().map(Vec::as_slice).unwrap_or_default();
        if self.windows.is_none() && !self.is_global() && !input.is_empty() {
            let watermarked = self.group_exprs.iter().enumerate().find_map(|(k, e)| {
                let column = e.downcast_ref::<Column>()?.index();
                column_watermark(input, column).map(|_| (k, column))
            });
            if let Some((k, column)) = watermarked {
                self.close_by_input(k, column)?;
            }
        }
        let Some(windows) = &self.windows else {
            return Ok(Vec::new());
        };
        let (close, by_input) = (windows.close, windows.by_input);
        let closed_below = match by_input {
            Some(column) => {
                let watermark = column_watermark(input, column);
                if let Some(watermark) = watermark {
                    // A group below the watermark closes at its value + 1.
                    self.close_until(watermark)?;
                }
                watermark
            }
            None => ctx
                .watermarks
                .get(close.relation)
                .after
                .map(|w| w.saturating_sub(close.after_value).saturating_add(1)),
        };
        let mut out = vec![None; self.schema.fields().len()];
        out[close.key_column] = closed_below;
        Ok(out)
    }

    fn exchange_keys(&self, _input: usize, data: &RecordBatch) -> Result<Option<EncodedRows>> {
        self.route_keys(data).map(Some)
    }

    fn state_route<'k>(&self, key: &'k [u8]) -> Result<Cow<'k, [u8]>> {
        let group_key = match key.split_first() {
            Some((0, group_key)) => group_key,
            Some((1, rest)) if rest.len() >= 2 => split_state_key(&rest[2..])?.0,
            _ => return Err(DataflowError::Internal("aggregate state is damaged".into())),
        };
        match &self.sessions {
            Some(sessions) => {
                let columns = self.group_format.decode([group_key])?;
                Ok(Cow::Owned(sessions.keys(&columns, 1)?.row(0).to_vec()))
            }
            None => Ok(Cow::Borrowed(group_key)),
        }
    }

    fn persist(&mut self, out: &mut StateWriter) -> Result<()> {
        for (j, slot, value) in self.dirty_values.drain() {
            let mut state = vec![1u8];
            state.extend_from_slice(&j.to_be_bytes());
            state.extend_from_slice(&state_key(self.groups.key(slot), &value));
            let count = match &self.accs[j as usize] {
                Accumulators::Set(sets) => sets[slot as usize].get(&value).copied(),
                _ => None,
            };
            match count {
                Some(count) => out.put(&state, count.to_be_bytes().to_vec()),
                None => out.delete(&state),
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            self.is_dirty[slot as usize] = false;
            let mut state = vec![0u8];
            state.extend_from_slice(self.groups.key(slot));
            if self.exists(slot) {
                let mut value = self.rows[slot as usize].to_be_bytes().to_vec();
                for acc in &self.accs {
                    acc.encode(slot as usize, &mut value);
                }
                out.put(&state, value);
            } else {
                out.delete(&state);
                self.free(slot);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        Ok(())
    }

    fn restore(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let damaged = || DataflowError::Internal("aggregate state is damaged".into());
        match key.split_first() {
            Some((0, group_key)) => {
                let slot = self.slot_for(group_key) as usize;
                if self.sessions.is_some() {
                    let columns = self.group_format.decode([group_key])?;
                    if let Some(sessions) = &mut self.sessions {
                        sessions.restore(slot as u32, &columns)?;
                    }
                }
                if let Some(close) = self.windows.as_ref().map(|w| w.close) {
                    let key = self.group_format.decode([group_key])?;
                    let batch =
                        RecordBatch::try_from_iter([("window", key[close.key_column].clone())])?;
                    let values = crate::watermark::micros(&batch, 0)?;
                    if let (Some(windows), false) = (&mut self.windows, values.is_null(0)) {
                        let at = values.value(0).saturating_add(close.after_value);
                        if windows.close_at.len() <= slot {
                            windows.close_at.resize(slot + 1, NEVER);
                        }
                        windows.close_at[slot] = at;
                        windows.closing.entry(at).or_default().push(slot as u32);
                    }
                }
                let mut rest = value;
                self.rows[slot] = read_i64(rest, 0)?;
                rest = &rest[8..];
                for acc in &mut self.accs {
                    acc.decode(slot, &mut rest).ok_or_else(damaged)?;
                }
            }
            Some((1, rest)) => {
                let j = u16::from_be_bytes(
                    rest.get(..2)
                        .ok_or_else(damaged)?
                        .try_into()
                        .map_err(|_| damaged())?,
                );
                let (group_key, value_key) = split_state_key(&rest[2..])?;
                let count = read_i64(value, 0)?;
                let slot = self.groups.find(group_key).ok_or_else(damaged)?;
                match self.accs.get_mut(j as usize) {
                    Some(Accumulators::Set(sets)) => {
                        sets[slot as usize].insert(value_key.into(), count);
                    }
                    _ => return Err(damaged()),
                }
            }
            _ => return Err(damaged()),
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.groups
            .iter()
            .filter(|&(slot, _)| self.exists(slot))
            .map(|(slot, key)| {
                key.len()
                    + 8
                    + self
                        .accs
                        .iter()
                        .map(|acc| acc.bytes(slot as usize))
                        .sum::<usize>()
            })
            .sum()
    }

    fn state_entries(&self) -> usize {
        self.groups
            .iter()
            .filter(|&(slot, _)| self.exists(slot))
            .count()
    }

    fn late_rows(&self) -> u64 {
        self.windows.as_ref().map_or(0, |w| w.late_rows)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::col;

    use super::*;
    use crate::testing::{
        accumulate, changes, physical, round_trip, rows_of, schema_ab, step, step_into,
        step_with_watermark, PersistedState,
    };

    fn spec(function: AggFunction, output_type: DataType) -> AggSpec {
        AggSpec {
            function,
            arg: Some(physical(&col("b"), &schema_ab())),
            filter: None,
            order_by: vec![],
            delimiter: String::new(),
            input_type: DataType::Int64,
            output_type,
        }
    }

    /// `SELECT a, count(*), sum(b), min(b), max(b), count(DISTINCT b) ... GROUP BY a`,
    /// or without the group when `global`.
    fn aggregate(global: bool) -> Aggregate {
        let mut count = spec(AggFunction::Count, DataType::Int64);
        count.arg = None;
        let aggs = vec![
            count,
            spec(AggFunction::Sum, DataType::Int64),
            spec(AggFunction::Min, DataType::Int64),
            spec(AggFunction::Max, DataType::Int64),
            spec(AggFunction::CountDistinct, DataType::Int64),
        ];
        let mut fields = vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("lo", DataType::Int64, true),
            Field::new("hi", DataType::Int64, true),
            Field::new("d", DataType::Int64, true),
        ];
        let (groups, types) = if global {
            (vec![], vec![])
        } else {
            fields.insert(0, Field::new("a", DataType::Int64, true));
            (
                vec![physical(&col("a"), &schema_ab())],
                vec![DataType::Int64],
            )
        };
        Aggregate::new(
            groups,
            types,
            aggs,
            Arc::new(Schema::new(fields)),
            "test".into(),
        )
        .unwrap()
    }

    fn row(values: &[Option<i64>]) -> Vec<Option<i64>> {
        values.to_vec()
    }

    /// `SELECT a, first_value(a ORDER BY b), last_value(a ORDER BY b)`,
    /// IGNORE NULLS, over no group: the value at each end of `b`'s order.
    #[test]
    fn first_and_last_value_follow_their_order_through_deletes() {
        let ordered = |function| AggSpec {
            arg: Some(physical(&col("a"), &schema_ab())),
            order_by: vec![(
                physical(&col("b"), &schema_ab()),
                DataType::Int64,
                SortOptions::default(),
            )],
            ..spec(function, DataType::Int64)
        };
        let fields = vec![
            Field::new("first", DataType::Int64, true),
            Field::new("last", DataType::Int64, true),
        ];
        let mut agg = Aggregate::new(
            vec![],
            vec![],
            vec![
                ordered(AggFunction::FirstValue),
                ordered(AggFunction::LastValue),
            ],
            Arc::new(Schema::new(fields)),
            "test".into(),
        )
        .unwrap();
        // A global aggregate starts with its row over no input.
        let mut total = HashMap::from([(row(&[None, None]), 1)]);
        // (a, b): a is the value, b the order.
        let out = step(
            &mut agg,
            vec![changes(&schema_ab(), &[(7, 2, 1), (8, 1, 1), (9, 3, 1)])],
        );
        accumulate(&mut total, &out);
        assert_eq!(total, HashMap::from([(row(&[Some(8), Some(9)]), 1)]));
        // Deleting both ends moves each to the middle row.
        let out = step(
            &mut agg,
            vec![changes(&schema_ab(), &[(8, 1, -1), (9, 3, -1)])],
        );
        accumulate(&mut total, &out);
        assert_eq!(total, HashMap::from([(row(&[Some(7), Some(7)]), 1)]));
    }

    /// `SELECT array_agg(a ORDER BY b), array_agg(DISTINCT a ORDER BY a)`:
    /// lists in order, kept through deletes, NULL once empty.
    #[test]
    fn array_agg_lists_values_in_order_through_deletes() {
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        let by = |order: &str, function| AggSpec {
            arg: Some(physical(&col("a"), &schema_ab())),
            order_by: vec![(
                physical(&col(order), &schema_ab()),
                DataType::Int64,
                SortOptions::default(),
            )],
            ..spec(function, list.clone())
        };
        let fields = vec![
            Field::new("all", list.clone(), true),
            Field::new("distinct", list.clone(), true),
        ];
        let mut agg = Aggregate::new(
            vec![],
            vec![],
            vec![
                by("b", AggFunction::ArrayAgg),
                by("a", AggFunction::ArrayAggDistinct),
            ],
            Arc::new(Schema::new(fields)),
            "test".into(),
        )
        .unwrap();
        let shown = |out: &ChangeBatch| -> Vec<(String, i64)> {
            (0..out.num_rows())
                .map(|i| {
                    let row: Vec<String> = out
                        .data
                        .columns()
                        .iter()
                        .map(|c| {
                            datafusion::arrow::util::display::array_value_to_string(c, i).unwrap()
                        })
                        .collect();
                    (row.join(" "), out.weight(i))
                })
                .collect()
        };
        // (a, b): a is the value, b the order.
        let out = step(
            &mut agg,
            vec![changes(&schema_ab(), &[(7, 3, 1), (5, 1, 1), (7, 2, 1)])],
        );
        assert!(shown(&out).contains(&("[5, 7, 7] [5, 7]".to_owned(), 1)));
        let out = step(
            &mut agg,
            vec![changes(&schema_ab(), &[(7, 3, -1), (5, 1, -1)])],
        );
        assert_eq!(
            shown(&out),
            [
                ("[5, 7, 7] [5, 7]".to_owned(), -1),
                ("[7] [7]".to_owned(), 1)
            ]
        );
        let out = step(&mut agg, vec![changes(&schema_ab(), &[(7, 2, -1)])]);
        assert_eq!(
            shown(&out),
            [("[7] [7]".to_owned(), -1), (" ".to_owned(), 1)]
        );
    }

    /// MIN, MAX and count(DISTINCT) of one expression keep one multiset;
    /// with a FILTER, or of another expression, an aggregate keeps its own.
    #[test]
    fn aggregates_of_one_expression_share_their_multiset() {
        let mut filtered = spec(AggFunction::Max, DataType::Int64);
        filtered.filter = Some(physical(
            &col("a").gt(datafusion::logical_expr::lit(0i64)),
            &schema_ab(),
        ));
        let mut of_a = spec(AggFunction::Min, DataType::Int64);
        of_a.arg = Some(physical(&col("a"), &schema_ab()));
        let aggs: Vec<Agg> = [
            spec(AggFunction::Min, DataType::Int64),
            filtered,
            of_a,
            spec(AggFunction::CountDistinct, DataType::Int64),
            spec(AggFunction::Max, DataType::Int64),
        ]
        .into_iter()
        .map(|spec| Agg {
            spec,
            numeric: None,
            values: None,
        })
        .collect();
        let owners: Vec<_> = (0..aggs.len()).map(|j| multiset_owner(&aggs, j)).collect();
        assert_eq!(owners, [None, None, None, Some(0), Some(0)]);
    }

    #[test]
    fn min_and_max_survive_deleting_the_extreme() {
        let mut agg = aggregate(false);
        let mut total = HashMap::new();
        let out = step(
            &mut agg,
            vec![changes(&schema_ab(), &[(1, 5, 1), (1, 9, 1), (1, 2, 1)])],
        );
        accumulate(&mut total, &out);
        assert_eq!(
            total,
            HashMap::from([(
                row(&[Some(1), Some(3), Some(16), Some(2), Some(9), Some(3)]),
                1
            )])
        );
        let out = step(
            &mut agg,
            vec![changes(&schema_ab(), &[(1, 9, -1), (1, 2, -1)])],
        );
        accumulate(&mut total, &out);
        assert_eq!(
            total,
            HashMap::from([(
                row(&[Some(1), Some(1), Some(5), Some(5), Some(5), Some(1)]),
                1
            )])
        );
    }

    #[test]
    fn emptied_group_disappears_and_moves_between_groups() {
        let mut agg = aggregate(false);
        let mut total = HashMap::new();
        accumulate(
            &mut total,
            &step(
                &mut agg,
                vec![changes(&schema_ab(), &[(1, 5, 1), (2, 7, 1)])],
            ),
        );
        // "UPDATE ... SET a = 2 WHERE a = 1": a retraction and an insertion.
        accumulate(
            &mut total,
            &step(
                &mut agg,
                vec![changes(&schema_ab(), &[(1, 5, -1), (2, 5, 1)])],
            ),
        );
        assert_eq!(
            total,
            HashMap::from([(
                row(&[Some(2), Some(2), Some(12), Some(5), Some(7), Some(2)]),
                1
            )])
        );
    }

    #[test]
    fn global_aggregate_has_one_row_even_when_empty() {
        let mut agg = aggregate(true);
        let none = HashMap::new();
        let ctx = EpochContext::new(&none, true);
        let mut total = HashMap::new();
        accumulate(
            &mut total,
            &agg.step(vec![changes(&schema_ab(), &[])], &ctx).unwrap(),
        );
        assert_eq!(
            total,
            HashMap::from([(row(&[Some(0), None, None, None, Some(0)]), 1)])
        );
        accumulate(
            &mut total,
            &step(&mut agg, vec![changes(&schema_ab(), &[(1, 4, 1)])]),
        );
        accumulate(
            &mut total,
            &step(&mut agg, vec![changes(&schema_ab(), &[(1, 4, -1)])]),
        );
        assert_eq!(
            total,
            HashMap::from([(row(&[Some(0), None, None, None, Some(0)]), 1)])
        );
    }

    #[test]
    fn state_survives_persist_and_restore() {
        let mut first = aggregate(false);
        step(
            &mut first,
            vec![changes(&schema_ab(), &[(1, 5, 1), (1, 9, 1), (1, 9, 1)])],
        );
        let mut second = aggregate(false);
        round_trip(&mut first, &mut second);
        let mut total = HashMap::new();
        accumulate(
            &mut total,
            &step(&mut second, vec![changes(&schema_ab(), &[(1, 9, -1)])]),
        );
        assert_eq!(
            total,
            HashMap::from([
                (
                    row(&[Some(1), Some(3), Some(23), Some(5), Some(9), Some(2)]),
                    -1
                ),
                (
                    row(&[Some(1), Some(2), Some(14), Some(5), Some(9), Some(2)]),
                    1
                ),
            ])
        );
    }
    /// What `aggregate(false)` must hold for a multiset of `(a, b)` rows.
    fn expected(live: &HashMap<(i64, i64), i64>) -> HashMap<Vec<Option<i64>>, i64> {
        let mut by_group: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
        for (&(a, b), &n) in live {
            by_group.entry(a).or_default().push((b, n));
        }
        by_group
            .into_iter()
            .map(|(a, values)| {
                let n: i64 = values.iter().map(|v| v.1).sum();
                let sum: i64 = values.iter().map(|v| v.0 * v.1).sum();
                let lo = values.iter().map(|v| v.0).min();
                let hi = values.iter().map(|v| v.0).max();
                let distinct = values.len() as i64;
                (vec![Some(a), Some(n), Some(sum), lo, hi, Some(distinct)], 1)
            })
            .collect()
    }

    /// Random insertions and deletions, groups that come and go, and state
    /// persisted every epoch and restored into a fresh operator now and
    /// then: the accumulated output always equals the aggregate computed
    /// afresh.
    #[test]
    fn random_changes_match_recomputation_across_restores() {
        use rand::{Rng, SeedableRng};

        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut persisted = PersistedState::default();
        let mut agg = aggregate(false);
        let mut live: HashMap<(i64, i64), i64> = HashMap::new();
        let mut total = HashMap::new();
        for epoch in 0..300 {
            let mut batch = Vec::new();
            for _ in 0..rng.random_range(0..40) {
                let rows: Vec<(i64, i64)> = live.keys().copied().collect();
                if !rows.is_empty() && rng.random_bool(0.45) {
                    let (a, b) = rows[rng.random_range(0..rows.len())];
                    batch.push((a, b, -1));
                    let n = live.get_mut(&(a, b)).unwrap();
                    *n -= 1;
                    if *n == 0 {
                        live.remove(&(a, b));
                    }
                } else {
                    let (a, b) = (rng.random_range(0..12), rng.random_range(-5..6));
                    batch.push((a, b, 1));
                    *live.entry((a, b)).or_default() += 1;
                }
            }
            accumulate(
                &mut total,
                &step(&mut agg, vec![changes(&schema_ab(), &batch)]),
            );
            assert_eq!(total, expected(&live), "epoch {epoch}");

            persisted.persist(&mut agg);
            assert_eq!(agg.state_entries(), expected(&live).len());
            if epoch % 37 == 36 {
                agg = aggregate(false);
                persisted.restore(&mut agg);
                assert_eq!(agg.state_entries(), expected(&live).len());
            }
        }
    }

    /// Over an input that never retracts, MIN and MAX keep one value per
    /// group and give the same output.
    #[test]
    fn append_only_input_keeps_only_the_extremes() {
        let mut bounded = aggregate(false);
        bounded.inputs_append_only(&[true]);
        let mut full = aggregate(false);
        let (mut total_bounded, mut total_full) = (HashMap::new(), HashMap::new());
        for epoch in 0..10i64 {
            let rows: Vec<(i64, i64, i64)> = (0..20)
                .map(|i| (i % 4, (epoch * 13 + i * 7) % 30 - 10, 1))
                .collect();
            step_into(&mut bounded, &mut total_bounded, &rows);
            step_into(&mut full, &mut total_full, &rows);
        }
        // count(DISTINCT) still keeps every value; MIN and MAX keep one.
        // Over an input that retracts, the three share MIN's multiset.
        let distinct = |agg: &Aggregate, j: usize| match &agg.accs[j] {
            Accumulators::Set(sets) => sets.iter().map(BTreeMap::len).sum::<usize>(),
            _ => 0,
        };
        assert_eq!(distinct(&bounded, 2), 4);
        assert_eq!(distinct(&bounded, 3), 4);
        assert_eq!(distinct(&bounded, 4), distinct(&full, 2));
        assert!(matches!(
            full.accs[3..],
            [
                Accumulators::SharedSet { owner: 2 },
                Accumulators::SharedSet { owner: 2 }
            ]
        ));
        assert_eq!(total_bounded, total_full);
        let mut restored = aggregate(false);
        restored.inputs_append_only(&[true]);
        round_trip(&mut bounded, &mut restored);
        assert_eq!(restored.state_bytes(), bounded.state_bytes());
    }

    /// `SELECT a, count(*), sum(b), ... GROUP BY a`, where `a` is a
    /// window's end and a group closes 10us after it.
    fn window_aggregate(emit_final: bool) -> Aggregate {
        aggregate(false).with_window_close(WindowClose {
            relation: 9,
            key_column: 0,
            after_value: 10,
            late_after: 10,
            emit_final,
        })
    }

    fn step_at(
        op: &mut Aggregate,
        watermark: (Option<i64>, Option<i64>),
        rows: &[(i64, i64, i64)],
    ) -> ChangeBatch {
        step_with_watermark(op, 9, watermark, changes(&schema_ab(), rows))
    }

    #[test]
    fn windows_close_by_the_watermark_and_late_rows_are_dropped() {
        let mut op = window_aggregate(false);
        let mut state = PersistedState::default();
        let out = step_at(
            &mut op,
            (None, Some(15)),
            &[(0, 1, 1), (10, 2, 1), (20, 3, 1)],
        );
        assert_eq!(rows_of(&out).len(), 3);
        // Window 0 closed at 10: its state is gone, its row stays out there.
        assert_eq!(op.state_entries(), 2);
        state.persist(&mut op);
        // 0 is late now; 10 is not (it closes at 20), and closes after.
        let out = step_at(
            &mut op,
            (Some(15), Some(25)),
            &[(0, 5, 1), (10, 4, 1), (20, 6, 1)],
        );
        assert_eq!(
            rows_of(&out),
            vec![
                (
                    vec![Some(10), Some(1), Some(2), Some(2), Some(2), Some(1)],
                    -1
                ),
                (
                    vec![Some(10), Some(2), Some(6), Some(2), Some(4), Some(2)],
                    1
                ),
                (
                    vec![Some(20), Some(1), Some(3), Some(3), Some(3), Some(1)],
                    -1
                ),
                (
                    vec![Some(20), Some(2), Some(9), Some(3), Some(6), Some(2)],
                    1
                ),
            ]
        );
        assert_eq!(op.late_rows(), 1);
        state.persist(&mut op);
        // Only window 20 is left, in memory and in the store.
        let mut restored = window_aggregate(false);
        state.restore(&mut restored);
        assert_eq!(restored.state_entries(), op.state_entries());
        let out = step_at(&mut restored, (Some(25), Some(25)), &[(20, 3, -1)]);
        assert_eq!(
            rows_of(&out),
            vec![
                (
                    vec![Some(20), Some(1), Some(6), Some(6), Some(6), Some(1)],
                    1
                ),
                (
                    vec![Some(20), Some(2), Some(9), Some(3), Some(6), Some(2)],
                    -1
                ),
            ]
        );
        // The restored window closes, and its state goes.
        step_at(&mut restored, (Some(25), Some(30)), &[]);
        state.persist(&mut restored);
        let mut empty = window_aggregate(false);
        state.restore(&mut empty);
        assert_eq!(empty.state_entries(), 0);
    }

    #[test]
    fn emit_final_emits_each_window_once_when_it_closes() {
        let mut op = window_aggregate(true);
        let out = step_at(
            &mut op,
            (None, Some(15)),
            &[(0, 1, 1), (10, 2, 1), (0, 7, 1)],
        );
        assert_eq!(
            rows_of(&out),
            vec![(
                vec![Some(0), Some(2), Some(8), Some(1), Some(7), Some(2)],
                1
            )]
        );
        let out = step_at(&mut op, (Some(15), Some(19)), &[(10, 4, 1), (0, 9, 1)]);
        assert!(out.is_empty(), "window 10 is still open");
        let out = step_at(&mut op, (Some(19), Some(20)), &[]);
        assert_eq!(
            rows_of(&out),
            vec![(
                vec![Some(10), Some(2), Some(6), Some(2), Some(4), Some(2)],
                1
            )]
        );
        assert_eq!(op.late_rows(), 1);
        assert_eq!(op.state_entries(), 0);
    }

    /// A group column with an input watermark closes the groups below it:
    /// their state goes, their rows stay, and the column keeps the mark.
    #[test]
    fn groups_below_an_input_watermark_close() {
        let mut op = aggregate(false);
        let none = HashMap::new();
        let ctx = EpochContext::new(&none, false);
        let mut total = HashMap::new();
        step_into(&mut op, &mut total, &[(1, 10, 1), (2, 20, 1), (3, 30, 1)]);
        let marks = op.advance_watermarks(&[vec![None, None]], &ctx).unwrap();
        assert!(marks.is_empty(), "no input watermark, none out");
        assert_eq!(op.state_entries(), 3);
        let marks = op.advance_watermarks(&[vec![Some(3), None]], &ctx).unwrap();
        assert_eq!(marks, vec![Some(3), None, None, None, None, None]);
        assert_eq!(op.state_entries(), 1, "groups 1 and 2 closed");
        let mut state = PersistedState::default();
        state.persist(&mut op);
        // Group 3 goes on; a new group 4 closes too once passed.
        step_into(&mut op, &mut total, &[(3, 31, 1), (4, 40, 1)]);
        op.advance_watermarks(&[vec![Some(5), None]], &ctx).unwrap();
        assert_eq!(op.state_entries(), 0);
        assert_eq!(
            total
                .keys()
                .filter(|r| r[0] == Some(3))
                .cloned()
                .collect::<Vec<_>>(),
            vec![row(&[
                Some(3),
                Some(2),
                Some(61),
                Some(30),
                Some(31),
                Some(2)
            ])]
        );
        assert_eq!(total.len(), 4, "every group's row stays: {total:?}");
        // A restored aggregate indexes its groups when the mark comes.
        let mut restored = aggregate(false);
        state.restore(&mut restored);
        assert_eq!(restored.state_entries(), 1);
        restored
            .advance_watermarks(&[vec![Some(4), None]], &ctx)
            .unwrap();
        assert_eq!(restored.state_entries(), 0);
    }
}
