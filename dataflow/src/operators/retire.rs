//! Retention of windows (ksqlDB's `RETENTION`): a window aggregate's rows
//! leave the output once the watermark passes their window's start plus
//! the retention (a session's end plus it).
//!
//! The operator sits on the window aggregate. It passes changes through,
//! keeps the rows it passed (with their multiplicity) in order of their
//! window column, and takes back the rows whose time has come. Retention is
//! at least the window's size and grace, so a window has closed, and its
//! row is final, before it is taken back.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use eddy_catalog::{EncodedRows, RowFormat};

use crate::change::ChangeBatch;
use crate::operators::{read_i64, Bytes, EpochContext, Operator, StateWriter};
use crate::watermark::micros;
use crate::{DataflowError, Result};

pub struct Retire {
    /// The relation whose watermark retires rows.
    relation: u64,
    /// The window column, and how long after its value a row leaves.
    column: usize,
    after_us: i64,
    format: RowFormat,
    schema: SchemaRef,
    rows: HashMap<Bytes, i64>,
    /// Rows by the time they leave.
    by_time: BTreeSet<(i64, Bytes)>,
    /// Rows changed since the last persist.
    dirty: Vec<Bytes>,
}

impl Retire {
    pub fn new(relation: u64, column: usize, after_us: i64, schema: SchemaRef) -> Result<Self> {
        Ok(Retire {
            relation,
            column,
            after_us,
            format: RowFormat::for_schema(&schema)?,
            schema,
            rows: HashMap::new(),
            by_time: BTreeSet::new(),
            dirty: Vec::new(),
        })
    }

    /// The time each row of `data` leaves; `None` for a row without a
    /// window.
    fn leave_times(&self, data: &RecordBatch) -> Result<Vec<Option<i64>>> {
        let times = micros(data, self.column)?;
        Ok((0..times.len())
            .map(|i| {
                times
                    .is_valid(i)
                    .then(|| times.value(i).saturating_add(self.after_us))
            })
            .collect())
    }

    /// Adds `weight` to `row`, which leaves at `leaves`.
    fn count(&mut self, row: &[u8], leaves: Option<i64>, weight: i64) {
        let count = self.rows.entry(row.into()).or_default();
        let was = *count;
        *count += weight;
        let now = *count;
        if now == 0 {
            self.rows.remove(row);
        }
        if let Some(at) = leaves {
            match (was == 0, now == 0) {
                (true, false) => {
                    self.by_time.insert((at, row.into()));
                }
                (false, true) => {
                    self.by_time.remove(&(at, row.into()));
                }
                _ => {}
            }
        }
        self.dirty.push(row.into());
    }
}

impl Operator for Retire {
    fn describe(&self) -> String {
        format!(
            "Retire: rows leave when the watermark of relation {} passes column {} + {}us",
            self.relation, self.column, self.after_us
        )
    }

    fn step(&mut self, mut inputs: Vec<ChangeBatch>, ctx: &EpochContext) -> Result<ChangeBatch> {
        let input = inputs.remove(0);
        let mut out = Vec::new();
        if !input.is_empty() {
            let rows = self.format.encode(input.data.columns(), input.num_rows())?;
            let leaves = self.leave_times(&input.data)?;
            for (i, &at) in leaves.iter().enumerate() {
                self.count(rows.row(i), at, input.weight(i));
            }
            out.push(input);
        }
        if let Some(watermark) = ctx.watermarks.get(self.relation).after {
            let due: Vec<(i64, Bytes)> = self
                .by_time
                .range(..(watermark.saturating_add(1), Bytes::default()))
                .cloned()
                .collect();
            if !due.is_empty() {
                let mut weights = Vec::with_capacity(due.len());
                for (at, row) in &due {
                    let count = self.rows.get(row).copied().unwrap_or(0);
                    weights.push(-count);
                    self.count(row, Some(*at), -count);
                }
                let columns = self.format.decode(due.iter().map(|(_, r)| &r[..]))?;
                out.push(ChangeBatch::try_from_columns(
                    &self.schema,
                    columns,
                    Int64Array::from(weights),
                )?);
            }
        }
        ChangeBatch::concat(&self.schema, &out)
    }

    fn exchange_keys(&self, _input: usize, data: &RecordBatch) -> Result<Option<EncodedRows>> {
        Ok(Some(self.format.encode(data.columns(), data.num_rows())?))
    }

    fn state_route<'k>(&self, key: &'k [u8]) -> Result<Cow<'k, [u8]>> {
        Ok(Cow::Borrowed(key))
    }

    fn persist(&mut self, out: &mut StateWriter) -> Result<()> {
        for row in std::mem::take(&mut self.dirty) {
            match self.rows.get(&row) {
                Some(count) => out.put(&row, count.to_be_bytes().to_vec()),
                None => out.delete(&row),
            }
        }
        Ok(())
    }

    fn restore(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let count = read_i64(value, 0)?;
        let columns = self.format.decode([key])?;
        let row = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| DataflowError::Internal(format!("retained row is damaged: {e}")))?;
        let at = self.leave_times(&row)?[0];
        self.count(key, at, count);
        self.dirty.clear();
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.rows.keys().map(|r| 2 * r.len() + 32).sum()
    }

    fn state_entries(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{changes, rows_of, schema_ab, step_with_watermark, PersistedState};

    /// Rows (a, b) whose window column is `a`, leaving 10us after it.
    fn retire() -> Retire {
        Retire::new(9, 0, 10, schema_ab()).unwrap()
    }

    #[test]
    fn rows_leave_once_the_watermark_passes_their_window() {
        let mut op = retire();
        let mut state = PersistedState::default();
        let out = step_with_watermark(
            &mut op,
            9,
            (None, Some(5)),
            changes(&schema_ab(), &[(0, 1, 1), (10, 2, 1), (10, 3, 1)]),
        );
        assert_eq!(rows_of(&out).len(), 3);
        state.persist(&mut op);
        // Window 0 leaves at 10; the changed row of window 10 passes on.
        let out = step_with_watermark(
            &mut op,
            9,
            (Some(5), Some(12)),
            changes(&schema_ab(), &[(10, 2, -1), (10, 4, 1)]),
        );
        assert_eq!(
            rows_of(&out),
            vec![
                (vec![Some(0), Some(1)], -1),
                (vec![Some(10), Some(2)], -1),
                (vec![Some(10), Some(4)], 1),
            ]
        );
        state.persist(&mut op);
        let mut restored = retire();
        state.restore(&mut restored);
        assert_eq!(restored.state_entries(), 2);
        let out = step_with_watermark(
            &mut restored,
            9,
            (Some(12), Some(20)),
            changes(&schema_ab(), &[]),
        );
        assert_eq!(
            rows_of(&out),
            vec![(vec![Some(10), Some(3)], -1), (vec![Some(10), Some(4)], -1)]
        );
        assert_eq!(restored.state_entries(), 0);
    }
}
