//! Session windows for the group aggregate.
//!
//! A session of a key is a run of its rows in which each is at most the gap
//! after the one before; its window runs from its first row's time to its
//! last's, as in ksqlDB. The lowering fills a session aggregate's
//! `window_start` and `window_end` input columns with each row's event
//! time. Before the aggregate folds a batch, [`Sessions::assign`] puts each
//! row in its session as the batch leaves it: a row near no session starts
//! one, a row near one extends it, and a row that bridges several merges
//! them. It rewrites both columns with the session's bounds, so the
//! aggregate groups by session. A session whose bounds change gets a new
//! group: the groups of the sessions it absorbed are merged into it, so
//! their rows are taken back and the merged row is inserted.
//!
//! Rows are never stored: a merge adds accumulators together. So the input
//! must never take a row back (a stream), as in ksqlDB.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use eddy_catalog::{EncodedRows, RowFormat};

use crate::operators::Bytes;
use crate::{DataflowError, Result};

/// Where a session aggregate's window columns are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionWindows {
    /// Group columns holding each session's start and end.
    pub start_key: usize,
    pub end_key: usize,
    /// The input columns those group columns are, which arrive holding
    /// each row's event time.
    pub start_input: usize,
    pub end_input: usize,
    /// Rows at most this far apart (in microseconds) share a session.
    pub gap_us: i64,
}

impl SessionWindows {
    /// Whether group column `k` is one of the window's bounds.
    pub fn is_bound(&self, k: usize) -> bool {
        k == self.start_key || k == self.end_key
    }
}

/// One open session of a key.
#[derive(Debug, Clone)]
struct Session {
    end: i64,
    /// Its group, if the batch being assigned has not changed it.
    slot: Option<u32>,
    /// Groups of sessions from before the batch that this one absorbed.
    absorbed: Vec<u32>,
    /// A row of the batch in it, once the batch changed it.
    row: Option<usize>,
}

/// A batch's rows, placed in their sessions.
pub struct Assigned {
    /// The input, with the window columns set to each row's session.
    pub data: RecordBatch,
    /// For each session the batch made or changed: its key, start and a
    /// row in it, to learn its group from.
    changed: Vec<(Bytes, i64, usize)>,
}

/// The open sessions of every key (the group columns other than the
/// window's bounds).
pub struct Sessions {
    pub windows: SessionWindows,
    key_format: RowFormat,
    open: HashMap<Bytes, BTreeMap<i64, Session>>,
    /// Each group's key and session start, by slot.
    of_slot: Vec<Option<(Bytes, i64)>>,
}

impl Sessions {
    pub fn new(windows: SessionWindows, key_format: RowFormat) -> Self {
        Sessions {
            windows,
            key_format,
            open: HashMap::new(),
            of_slot: Vec::new(),
        }
    }

    /// Each row's session key, from the aggregate's group columns.
    pub fn keys(&self, group_columns: &[ArrayRef], num_rows: usize) -> Result<EncodedRows> {
        let columns: Vec<ArrayRef> = group_columns
            .iter()
            .enumerate()
            .filter(|(k, _)| !self.windows.is_bound(*k))
            .map(|(_, c)| c.clone())
            .collect();
        Ok(self.key_format.encode(&columns, num_rows)?)
    }

    /// Places each row of `data` (with its session `keys`) in its session.
    pub fn assign(&mut self, data: &RecordBatch, keys: &EncodedRows) -> Result<Assigned> {
        let times = crate::watermark::micros(data, self.windows.start_input)?;
        let gap = self.windows.gap_us;
        let mut near = Vec::new();
        for i in 0..data.num_rows() {
            if times.is_null(i) {
                continue;
            }
            let t = times.value(i);
            let sessions = match self.open.get_mut(keys.row(i)) {
                Some(sessions) => sessions,
                None => self.open.entry(keys.row(i).into()).or_default(),
            };
            near.clear();
            near.extend(
                sessions
                    .range(..=t.saturating_add(gap))
                    .rev()
                    .take_while(|(_, s)| s.end >= t.saturating_sub(gap))
                    .map(|(&start, _)| start),
            );
            if let [start] = near[..] {
                if start <= t && t <= sessions[&start].end {
                    continue;
                }
            }
            let mut merged = Session {
                end: t,
                slot: None,
                absorbed: Vec::new(),
                row: None,
            };
            let mut merged_start = t;
            for &start in &near {
                let Some(session) = sessions.remove(&start) else {
                    continue;
                };
                merged_start = merged_start.min(start);
                merged.end = merged.end.max(session.end);
                merged.absorbed.extend(session.slot);
                merged.absorbed.extend(session.absorbed);
            }
            sessions.insert(merged_start, merged);
        }

        let mut starts = Vec::with_capacity(data.num_rows());
        let mut ends = Vec::with_capacity(data.num_rows());
        let mut changed = Vec::new();
        for i in 0..data.num_rows() {
            if times.is_null(i) {
                starts.push(None);
                ends.push(None);
                continue;
            }
            let t = times.value(i);
            let key = keys.row(i);
            let (&start, session) = self
                .open
                .get_mut(key)
                .and_then(|s| s.range_mut(..=t).next_back())
                .ok_or_else(|| DataflowError::Internal("a row lost its session".into()))?;
            starts.push(Some(start));
            ends.push(Some(session.end));
            if session.slot.is_none() && session.row.is_none() {
                session.row = Some(i);
                changed.push((key.into(), start, i));
            }
        }
        let mut columns = data.columns().to_vec();
        for (index, values) in [
            (self.windows.start_input, starts),
            (self.windows.end_input, ends),
        ] {
            let values: ArrayRef = Arc::new(TimestampMicrosecondArray::from(values));
            columns[index] = cast(&values, data.column(index).data_type())?;
        }
        Ok(Assigned {
            data: RecordBatch::try_new(data.schema(), columns)?,
            changed,
        })
    }

    /// Records the groups of the sessions `assigned` made, given each
    /// row's group; returns each absorbed group with the group it merges
    /// into.
    pub fn placed(&mut self, assigned: &Assigned, slots: &[u32]) -> Result<Vec<(u32, u32)>> {
        let mut moves = Vec::new();
        for (key, start, row) in &assigned.changed {
            let slot = slots[*row];
            let session = self
                .open
                .get_mut(key)
                .and_then(|s| s.get_mut(start))
                .ok_or_else(|| DataflowError::Internal("a session went missing".into()))?;
            session.slot = Some(slot);
            session.row = None;
            for old in std::mem::take(&mut session.absorbed) {
                if let Some(entry) = self.of_slot.get_mut(old as usize) {
                    *entry = None;
                }
                moves.push((old, slot));
            }
            self.set_slot(slot, key.clone(), *start);
        }
        Ok(moves)
    }

    fn set_slot(&mut self, slot: u32, key: Bytes, start: i64) {
        let s = slot as usize;
        if self.of_slot.len() <= s {
            self.of_slot.resize(s + 1, None);
        }
        self.of_slot[s] = Some((key, start));
    }

    /// Forgets the session in group `slot`: it closed.
    pub fn close(&mut self, slot: u32) {
        let Some((key, start)) = self.of_slot.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        if let Some(sessions) = self.open.get_mut(&key) {
            if sessions.get(&start).is_some_and(|s| s.slot == Some(slot)) {
                sessions.remove(&start);
            }
            if sessions.is_empty() {
                self.open.remove(&key);
            }
        }
    }

    /// Reopens a stored group's session: `columns` are its group columns.
    pub fn restore(&mut self, slot: u32, columns: &[ArrayRef]) -> Result<()> {
        let bound = |k: usize| -> Result<Option<i64>> {
            let batch = RecordBatch::try_from_iter([("bound", columns[k].clone())])?;
            let values = crate::watermark::micros(&batch, 0)?;
            Ok((!values.is_null(0)).then(|| values.value(0)))
        };
        let (Some(start), Some(end)) =
            (bound(self.windows.start_key)?, bound(self.windows.end_key)?)
        else {
            return Ok(());
        };
        let key: Bytes = self.keys(columns, 1)?.row(0).into();
        self.open.entry(key.clone()).or_default().insert(
            start,
            Session {
                end,
                slot: Some(slot),
                absorbed: Vec::new(),
                row: None,
            },
        );
        self.set_slot(slot, key, start);
        Ok(())
    }

    /// Open sessions, over all keys.
    pub fn len(&self) -> usize {
        self.open.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::logical_expr::col;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::change::ChangeBatch;
    use crate::operators::aggregate::{AggFunction, AggSpec, Aggregate, WindowClose};
    use crate::operators::{EpochContext, Operator};
    use crate::testing::{accumulate, physical, rows_of, step_with_watermark, PersistedState};

    const GAP: i64 = 10;

    /// Rows `(k, t, t, v)`: a key, its time as both bounds, and a value.
    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(
            ["k", "start", "end", "v"]
                .map(|name| Field::new(name, DataType::Int64, true))
                .to_vec(),
        ))
    }

    fn input(rows: &[(i64, i64, i64)]) -> ChangeBatch {
        let column = |f: fn(&(i64, i64, i64)) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
        };
        ChangeBatch::try_from_columns(
            &input_schema(),
            vec![
                column(|r| r.0),
                column(|r| r.1),
                column(|r| r.1),
                column(|r| r.2),
            ],
            Int64Array::from(vec![1; rows.len()]),
        )
        .unwrap()
    }

    /// `SELECT k, window_start, window_end, count(*), sum(v) ... GROUP BY
    /// k, window_start, window_end` over sessions with a gap of 10us;
    /// with a watermark of relation 9 when `grace` is given.
    fn session_aggregate(grace: Option<i64>, emit_final: bool) -> Aggregate {
        let schema = input_schema();
        let output = Arc::new(Schema::new(
            ["k", "start", "end", "count", "sum"]
                .map(|name| Field::new(name, DataType::Int64, true))
                .to_vec(),
        ));
        let specs = [(AggFunction::Count, None), (AggFunction::Sum, Some("v"))]
            .map(|(function, arg)| AggSpec {
                function,
                arg: arg.map(|a| physical(&col(a), &schema)),
                filter: None,
                order_by: vec![],
                delimiter: String::new(),
                input_type: DataType::Int64,
                output_type: DataType::Int64,
            })
            .into_iter()
            .collect();
        let mut op = Aggregate::new(
            ["k", "start", "end"]
                .map(|c| physical(&col(c), &schema))
                .to_vec(),
            vec![DataType::Int64; 3],
            specs,
            output,
            "sessions".into(),
        )
        .unwrap()
        .with_sessions(SessionWindows {
            start_key: 1,
            end_key: 2,
            start_input: 1,
            end_input: 2,
            gap_us: GAP,
        })
        .unwrap();
        if let Some(grace) = grace {
            op = op.with_window_close(WindowClose {
                relation: 9,
                key_column: 2,
                after_value: GAP + grace + 1,
                late_after: grace + 1,
                emit_final,
            });
        }
        op.inputs_append_only(&[true]);
        op
    }

    fn step_at(
        op: &mut Aggregate,
        watermark: (Option<i64>, Option<i64>),
        rows: &[(i64, i64, i64)],
    ) -> ChangeBatch {
        step_with_watermark(op, 9, watermark, input(rows))
    }

    fn session(
        k: i64,
        start: i64,
        end: i64,
        count: i64,
        sum: i64,
        w: i64,
    ) -> (Vec<Option<i64>>, i64) {
        ([k, start, end, count, sum].map(Some).to_vec(), w)
    }

    #[test]
    fn rows_extend_sessions_and_a_bridging_row_merges_them() {
        let mut op = session_aggregate(None, false);
        let out = step_at(&mut op, (None, None), &[(1, 0, 1), (1, 5, 2), (2, 3, 7)]);
        assert_eq!(
            rows_of(&out),
            vec![session(1, 0, 5, 2, 3, 1), session(2, 3, 3, 1, 7, 1)]
        );
        // 18 is 13 after 5 and 12 before 30: a session of its own.
        let out = step_at(&mut op, (None, None), &[(1, 30, 4), (1, 18, 8)]);
        assert_eq!(
            rows_of(&out),
            vec![session(1, 18, 18, 1, 8, 1), session(1, 30, 30, 1, 4, 1)]
        );
        // 24 is within 10 of both 18 and 30, and 12 of 5 and 18.
        let out = step_at(&mut op, (None, None), &[(1, 24, 16), (1, 12, 32)]);
        assert_eq!(
            rows_of(&out),
            vec![
                session(1, 0, 5, 2, 3, -1),
                session(1, 0, 30, 6, 63, 1),
                session(1, 18, 18, 1, 8, -1),
                session(1, 30, 30, 1, 4, -1),
            ]
        );
        // A row inside a session changes only its values.
        let out = step_at(&mut op, (None, None), &[(1, 20, 1)]);
        assert_eq!(
            rows_of(&out),
            vec![session(1, 0, 30, 6, 63, -1), session(1, 0, 30, 7, 64, 1)]
        );
    }

    /// Sessions of `rows`, computed whole: by key, runs of times at most
    /// the gap apart.
    fn expected(rows: &[(i64, i64, i64)]) -> HashMap<Vec<Option<i64>>, i64> {
        let mut by_key: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for &(k, t, v) in rows {
            by_key.entry(k).or_default().push((t, v));
        }
        let mut sessions = HashMap::new();
        for (k, mut rows) in by_key {
            rows.sort();
            let mut current: Option<(i64, i64, i64, i64)> = None;
            for (t, v) in rows {
                current = match current {
                    Some((start, end, count, sum)) if t - end <= GAP => {
                        Some((start, t, count + 1, sum + v))
                    }
                    done => {
                        if let Some((start, end, count, sum)) = done {
                            sessions.insert(session(k, start, end, count, sum, 1).0, 1);
                        }
                        Some((t, t, 1, v))
                    }
                };
            }
            if let Some((start, end, count, sum)) = current {
                sessions.insert(session(k, start, end, count, sum, 1).0, 1);
            }
        }
        sessions
    }

    /// Random rows in random batches, persisted and now and then restored
    /// into a fresh operator: the output always adds up to the sessions
    /// of every row so far.
    #[test]
    fn random_rows_match_sessions_computed_whole_across_restores() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut op = session_aggregate(None, false);
            let mut state = PersistedState::default();
            let mut all = Vec::new();
            let mut total = HashMap::new();
            for _ in 0..30 {
                let rows: Vec<(i64, i64, i64)> = (0..rng.random_range(0..12))
                    .map(|_| {
                        (
                            rng.random_range(0..3),
                            rng.random_range(0..200),
                            rng.random_range(-5..50),
                        )
                    })
                    .collect();
                all.extend_from_slice(&rows);
                accumulate(&mut total, &step_at(&mut op, (None, None), &rows));
                assert_eq!(total, expected(&all), "seed {seed}");
                state.persist(&mut op);
                if rng.random_bool(0.3) {
                    op = session_aggregate(None, false);
                    state.restore(&mut op);
                }
            }
        }
    }

    #[test]
    fn sessions_close_a_gap_and_grace_after_their_end_and_late_rows_are_dropped() {
        let mut op = session_aggregate(Some(5), true);
        let mut state = PersistedState::default();
        let out = step_at(
            &mut op,
            (None, Some(20)),
            &[(1, 0, 1), (1, 8, 2), (1, 30, 3)],
        );
        assert!(out.is_empty(), "[0, 8] closes at 8 + 10 + 5 + 1 = 24");
        state.persist(&mut op);
        // 14 is more than the grace behind the watermark: late. 40 joins
        // the session at 30.
        let out = step_at(&mut op, (Some(20), Some(23)), &[(1, 14, 4), (1, 40, 5)]);
        assert!(out.is_empty());
        assert_eq!(op.late_rows(), 1);
        // 22 is 14 after 8 and 8 before 30: it joins [30, 40]; [0, 8]
        // closes.
        let out = step_at(&mut op, (Some(23), Some(35)), &[(1, 22, 6)]);
        assert_eq!(rows_of(&out), vec![session(1, 0, 8, 2, 3, 1)]);
        state.persist(&mut op);
        let mut restored = session_aggregate(Some(5), true);
        state.restore(&mut restored);
        let out = step_at(&mut restored, (Some(35), Some(60)), &[(1, 41, 7)]);
        assert_eq!(rows_of(&out), vec![session(1, 22, 41, 4, 21, 1)]);
        assert_eq!(restored.state_entries(), 0);
    }

    #[test]
    fn rows_taken_back_are_refused() {
        let mut op = session_aggregate(None, false);
        let mut batch = input(&[(1, 0, 1)]);
        batch.weights = Int64Array::from(vec![-1]);
        let none = HashMap::new();
        let err = op
            .step(vec![batch], &EpochContext::new(&none, false))
            .unwrap_err();
        assert!(err.to_string().contains("session windows"), "{err}");
    }
}
