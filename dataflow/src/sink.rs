//! A view's contents: the multiset of its rows, kept in memory where
//! queries read it, and in the view's state log.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::SchemaRef;
use eddy_catalog::{RowFormat, ViewRows};

use crate::change::{conform, ChangeBatch};
use crate::operators::read_i64;
use crate::state_log::{entries_under, Segment, StateMap};
use crate::{DataflowError, Result};

/// Heads the view's rows in its state log, apart from every operator's
/// node id.
pub const VIEW_ROWS_HEAD: [u8; 4] = u32::MAX.to_be_bytes();

pub struct ViewSink {
    schema: SchemaRef,
    format: RowFormat,
    /// The rows as of the last commit, which queries read.
    rows: Arc<ViewRows>,
    /// This epoch's changes to them, by row, until the epoch commits.
    pending: HashMap<Box<[u8]>, i64>,
}

impl ViewSink {
    pub fn new(schema: SchemaRef, rows: Arc<ViewRows>) -> Result<Self> {
        let format = RowFormat::for_schema(&schema)?;
        Ok(ViewSink {
            schema,
            format,
            rows,
            pending: HashMap::new(),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Bytes the rows take in memory, roughly: each row's bytes, its
    /// multiplicity and the map's pointers.
    pub fn bytes(&self) -> usize {
        self.rows
            .read(|rows| rows.keys().map(|row| row.len() + 32).sum())
    }

    /// Takes the view's changes for this epoch; returns them consolidated,
    /// in the view's schema, for the views that read this one. Queries see
    /// them once [`ViewSink::publish`] runs, as the epoch commits.
    pub fn apply(&mut self, changes: &ChangeBatch) -> Result<ChangeBatch> {
        let changes = ChangeBatch::new(
            conform(&self.schema, &changes.data)?,
            changes.weights.clone(),
        )
        .consolidate()?;
        let encoded = self
            .format
            .encode(changes.data.columns(), changes.num_rows())?;
        let pending = &mut self.pending;
        self.rows.read(|rows| {
            for i in 0..changes.num_rows() {
                let row = encoded.row(i);
                let stored = rows.get(row).copied().unwrap_or(0);
                if !pending.contains_key(row) {
                    pending.insert(row.into(), 0);
                }
                if let Some(delta) = pending.get_mut(row) {
                    *delta += changes.weight(i);
                    let count = stored + *delta;
                    if count < 0 {
                        return Err(DataflowError::Internal(format!(
                            "view row has multiplicity {count}"
                        )));
                    }
                }
            }
            Ok(())
        })?;
        Ok(changes)
    }

    /// Every row, as insertions.
    pub fn contents(&self) -> Result<ChangeBatch> {
        let (columns, weights) = self.rows.read(|rows| {
            let columns = self.format.decode(rows.keys().map(|k| &k[..]));
            let weights = Int64Array::from_iter_values(rows.values().copied());
            (columns, weights)
        });
        ChangeBatch::try_from_columns(&self.schema, columns?, weights)
    }

    pub fn len(&self) -> usize {
        self.rows
            .read(|rows| rows.values().map(|&c| c as usize).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.rows.read(|rows| rows.is_empty())
    }

    /// Stages the rows this epoch changed into the view's state log.
    pub fn persist(&self, segment: &mut Segment) {
        self.rows.read(|rows| {
            for (row, delta) in &self.pending {
                match rows.get(row).copied().unwrap_or(0) + delta {
                    0 => segment.delete(&VIEW_ROWS_HEAD, row),
                    count => segment.put(&VIEW_ROWS_HEAD, row, &count.to_be_bytes()),
                }
            }
        });
    }

    /// Makes this epoch's changes visible to queries; called as the epoch
    /// commits, with queries held off.
    pub fn publish(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.rows
            .apply(pending.into_iter().filter(|(_, d)| *d != 0));
    }

    /// Loads the rows from the view's stored state, dropping any changes
    /// not committed.
    pub fn restore(&mut self, state: &StateMap) -> Result<()> {
        let mut rows = HashMap::new();
        for (row, count) in entries_under(state, &VIEW_ROWS_HEAD) {
            rows.insert(row.into(), read_i64(count, 0)?);
        }
        self.pending.clear();
        self.rows.replace(rows);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]))
    }

    fn changes(rows: &[(i64, i64)]) -> ChangeBatch {
        let data = RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.0),
            ))],
        )
        .unwrap();
        ChangeBatch::new(data, Int64Array::from_iter_values(rows.iter().map(|r| r.1)))
    }

    fn contents(sink: &ViewSink) -> Vec<(i64, i64)> {
        let batch = sink.contents().unwrap();
        let values = batch.data.column(0).as_primitive::<Int64Type>();
        let mut rows: Vec<_> = (0..batch.num_rows())
            .map(|i| (values.value(i), batch.weight(i)))
            .collect();
        rows.sort();
        rows
    }

    #[test]
    fn queries_see_an_epoch_once_it_is_published() {
        let rows = Arc::new(ViewRows::default());
        let mut sink = ViewSink::new(schema(), rows.clone()).unwrap();
        sink.apply(&changes(&[(1, 1), (2, 2), (1, 1)])).unwrap();
        assert!(sink.is_empty(), "not committed yet");
        let mut segment = Segment::default();
        sink.persist(&mut segment);
        assert_eq!(segment.entries(), 2);
        sink.publish();
        assert_eq!(contents(&sink), vec![(1, 2), (2, 2)]);
        assert_eq!(sink.len(), 4);

        // A retraction below zero is refused, whatever the epoch holds.
        sink.apply(&changes(&[(2, -1)])).unwrap();
        assert!(sink.apply(&changes(&[(2, -2)])).is_err());
    }

    #[test]
    fn rows_come_back_from_the_state_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = eddy_storage::Store::open(dir.path()).unwrap();
        let mut log = crate::state_log::StateLog::new(5);
        let mut sink = ViewSink::new(schema(), Arc::default()).unwrap();
        for epoch in [&[(1, 1), (2, 1)][..], &[(1, -1), (3, 2)]] {
            sink.apply(&changes(epoch)).unwrap();
            let mut segment = Segment::default();
            sink.persist(&mut segment);
            let mut batch = eddy_storage::WriteBatch::new();
            log.stage(segment, &store, &mut batch).unwrap();
            store.commit(batch).unwrap();
            sink.publish();
        }
        // Changes that never committed are dropped on restore.
        sink.apply(&changes(&[(9, 1)])).unwrap();
        let (_, state) = crate::state_log::StateLog::load(&store, 5).unwrap();
        let mut restored = ViewSink::new(schema(), Arc::default()).unwrap();
        restored.restore(&state).unwrap();
        assert_eq!(contents(&restored), vec![(2, 1), (3, 2)]);
        assert_eq!(contents(&sink), vec![(2, 1), (3, 2)]);
    }
}
