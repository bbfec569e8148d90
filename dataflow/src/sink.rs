//! A view's contents: the multiset of its rows, kept in memory where
//! queries read it, and in the view's state log.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::SchemaRef;
use eddy_catalog::{
    view_key_format, EncodedRows, RowChange, RowChanges, RowCounts, RowFormat, ViewRows,
};

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
    /// The view's key columns and their format, if it has a key.
    key: Option<(Vec<usize>, RowFormat)>,
    /// The rows as of the last epoch published, which queries read.
    rows: Arc<ViewRows>,
    /// This epoch's changes to them, by row (with its key).
    pending: RowChanges,
    /// The changes of an epoch being committed, and its number: until
    /// `rows` reach that epoch, they count on top of `rows`.
    sealed: Option<(u64, Arc<RowChanges>)>,
}

impl ViewSink {
    /// A sink into `rows`; `key_columns` (maybe none) identify each row.
    pub fn new(schema: SchemaRef, rows: Arc<ViewRows>, key_columns: &[usize]) -> Result<Self> {
        let format = RowFormat::for_schema(&schema)?;
        let key = view_key_format(&schema, key_columns)?.map(|f| (key_columns.to_vec(), f));
        Ok(ViewSink {
            schema,
            format,
            key,
            rows,
            pending: RowChanges::default(),
            sealed: None,
        })
    }

    /// Each row's encoded key columns, for a keyed view.
    fn keys_of(&self, columns: &[ArrayRef], n: usize) -> Result<Option<EncodedRows>> {
        let Some((positions, format)) = &self.key else {
            return Ok(None);
        };
        let key_columns: Vec<ArrayRef> = positions.iter().map(|&c| columns[c].clone()).collect();
        Ok(Some(format.encode(&key_columns, n)?))
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
        );
        let encoded = self
            .format
            .encode(changes.data.columns(), changes.num_rows())?;
        let (changes, kept) = changes.consolidate_encoded(&encoded)?;
        let row_of = |i: usize| match &kept {
            Some(kept) => encoded.row(kept[i] as usize),
            None => encoded.row(i),
        };
        let keys = self.keys_of(changes.data.columns(), changes.num_rows())?;
        let (pending, sealed) = (&mut self.pending, &self.sealed);
        self.rows.read_at(|rows, published| {
            for i in 0..changes.num_rows() {
                let row = row_of(i);
                let change = pending.entry_ref(row).or_insert_with(|| RowChange {
                    weight: 0,
                    before: committed(rows, published, sealed, row),
                    key: keys.as_ref().map(|k| k.row(i).into()),
                });
                change.weight += changes.weight(i);
                let count = change.before + change.weight;
                if count < 0 {
                    return Err(DataflowError::Internal(format!(
                        "view row has multiplicity {count}"
                    )));
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
        for (row, change) in &self.pending {
            match change.before + change.weight {
                0 => segment.delete(&VIEW_ROWS_HEAD, row),
                count => segment.put(&VIEW_ROWS_HEAD, row, &count.to_be_bytes()),
            }
        }
    }

    /// Makes this epoch's changes visible to queries as epoch `epoch`;
    /// called as the epoch commits, with queries held off.
    pub fn publish(&mut self, epoch: u64) {
        let pending = std::mem::take(&mut self.pending);
        self.rows.publish(&pending, epoch);
    }

    /// Hands this epoch's changes over to be published as epoch `epoch`
    /// once it commits, while the next epoch runs: the rows to change and
    /// the changes, or nothing if there are none. The epoch sealed before
    /// must be settled first.
    pub fn seal(&mut self, epoch: u64) -> Option<(Arc<ViewRows>, Arc<RowChanges>)> {
        debug_assert!(self.sealed.is_none(), "an epoch is already sealed");
        if self.pending.is_empty() {
            return None;
        }
        let changes = Arc::new(std::mem::take(&mut self.pending));
        self.sealed = Some((epoch, changes.clone()));
        Some((self.rows.clone(), changes))
    }

    /// Forgets the sealed epoch, once it is published (or failed).
    pub fn settle(&mut self) {
        self.sealed = None;
    }

    /// Loads the rows from the view's stored state, dropping any changes
    /// not committed.
    pub fn restore(&mut self, state: &StateMap) -> Result<()> {
        let mut rows = Vec::new();
        for (row, count) in entries_under(state, &VIEW_ROWS_HEAD) {
            rows.push((Box::from(row), read_i64(count, 0)?));
        }
        let keys = match &self.key {
            None => None,
            Some(_) => {
                let columns = self
                    .format
                    .decode(rows.iter().map(|(r, _): &(Box<[u8]>, i64)| &r[..]))?;
                let keys = self.keys_of(&columns, rows.len())?;
                keys.map(|k| (0..rows.len()).map(|i| Box::from(k.row(i))).collect())
            }
        };
        self.pending.clear();
        self.sealed = None;
        self.rows.replace(rows, keys);
        Ok(())
    }
}

/// A row's multiplicity as of the last epoch handed over to commit: the
/// published rows at epoch `published`, plus the sealed epoch's changes if
/// they are not published yet.
fn committed(
    rows: &RowCounts,
    published: u64,
    sealed: &Option<(u64, Arc<RowChanges>)>,
    row: &[u8],
) -> i64 {
    let stored = rows.get(row).copied().unwrap_or(0);
    match sealed {
        Some((epoch, changes)) if *epoch > published => {
            stored + changes.get(row).map_or(0, |change| change.weight)
        }
        _ => stored,
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
        let mut sink = ViewSink::new(schema(), rows.clone(), &[]).unwrap();
        sink.apply(&changes(&[(1, 1), (2, 2), (1, 1)])).unwrap();
        assert!(sink.is_empty(), "not committed yet");
        let mut segment = Segment::default();
        sink.persist(&mut segment);
        assert_eq!(segment.entries(), 2);
        sink.publish(0);
        assert_eq!(contents(&sink), vec![(1, 2), (2, 2)]);
        assert_eq!(sink.len(), 4);

        // A retraction below zero is refused, whatever the epoch holds.
        sink.apply(&changes(&[(2, -1)])).unwrap();
        assert!(sink.apply(&changes(&[(2, -2)])).is_err());
    }

    /// What persisting the sink now writes for rows 1 and 2: a count, 0
    /// for a deletion, or nothing.
    fn persisted(sink: &ViewSink) -> Vec<Option<i64>> {
        let key = |v: i64| {
            let column: ArrayRef = Arc::new(Int64Array::from(vec![v]));
            let row = sink.format.encode(&[column], 1).unwrap();
            [&VIEW_ROWS_HEAD[..], row.row(0)].concat()
        };
        let mut state = StateMap::new();
        for v in [1, 2] {
            state.insert(key(v), b"untouched".to_vec());
        }
        let mut segment = Segment::default();
        sink.persist(&mut segment);
        segment.apply_to(&mut state).unwrap();
        [1, 2]
            .map(|v| match state.get(&key(v)) {
                None => Some(0),
                Some(value) if value == b"untouched" => None,
                Some(value) => Some(read_i64(value, 0).unwrap()),
            })
            .to_vec()
    }

    /// While a sealed epoch commits, the next one counts on top of it, and
    /// once it is published (before the sink has heard) it is not counted
    /// twice.
    #[test]
    fn the_next_epoch_counts_on_top_of_a_sealed_one() {
        let rows = Arc::new(ViewRows::default());
        let mut sink = ViewSink::new(schema(), rows.clone(), &[]).unwrap();
        sink.apply(&changes(&[(1, 1), (2, 1)])).unwrap();
        let (target, sealed) = sink.seal(1).expect("changes to seal");

        // Epoch 2 runs while epoch 1 commits: row 1 goes, row 2 doubles.
        sink.apply(&changes(&[(1, -1), (2, 1)])).unwrap();
        let before_publish = persisted(&sink);
        assert_eq!(before_publish, vec![Some(0), Some(2)]);
        target.publish(&sealed, 1);
        assert_eq!(contents(&sink), vec![(1, 1), (2, 1)], "epoch 1 shows");
        // The sink has not settled yet; the published rows already hold
        // epoch 1, so it must not count it again.
        assert_eq!(persisted(&sink), before_publish);
        sink.settle();
        assert_eq!(persisted(&sink), before_publish);
        let (target, sealed) = sink.seal(2).expect("changes to seal");
        target.publish(&sealed, 2);
        sink.settle();
        assert_eq!(contents(&sink), vec![(2, 2)]);
    }

    /// Commits the sink's epoch to its state log and publishes it.
    fn commit(
        sink: &mut ViewSink,
        log: &mut crate::state_log::StateLog,
        store: &eddy_storage::Store,
    ) {
        let mut segment = Segment::default();
        sink.persist(&mut segment);
        let mut batch = eddy_storage::WriteBatch::new();
        log.stage(segment, store, &mut batch).unwrap();
        store.commit(batch).unwrap();
        sink.publish(0);
    }

    #[test]
    fn rows_come_back_from_the_state_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = eddy_storage::Store::open(dir.path()).unwrap();
        let mut log = crate::state_log::view_log(5);
        let mut sink = ViewSink::new(schema(), Arc::default(), &[]).unwrap();
        for epoch in [&[(1, 1), (2, 1)][..], &[(1, -1), (3, 2)]] {
            sink.apply(&changes(epoch)).unwrap();
            commit(&mut sink, &mut log, &store);
        }
        // Changes that never committed are dropped on restore.
        sink.apply(&changes(&[(9, 1)])).unwrap();
        let (_, state) = crate::state_log::load_view_log(&store, 5).unwrap();
        let mut restored = ViewSink::new(schema(), Arc::default(), &[]).unwrap();
        restored.restore(&state).unwrap();
        assert_eq!(contents(&restored), vec![(2, 1), (3, 2)]);
        assert_eq!(contents(&sink), vec![(2, 1), (3, 2)]);
    }
    /// Rows of `(k, v)` changes, keyed by `k`.
    fn keyed_changes(rows: &[(i64, i64, i64)]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]));
        crate::testing::changes(&schema, rows)
    }

    /// The `v`s of the rows a keyed view finds for `k`.
    fn found(rows: &ViewRows, k: i64) -> Vec<i64> {
        let format = RowFormat::new(vec![DataType::Int64]).unwrap();
        let key = format
            .encode(&[Arc::new(Int64Array::from(vec![k]))], 1)
            .unwrap();
        let found = rows.lookup([key.row(0)]);
        let schema = keyed_changes(&[]).schema();
        let format = RowFormat::for_schema(&schema).unwrap();
        let columns = format.decode(found.iter().map(|(r, _)| &r[..])).unwrap();
        let mut values: Vec<i64> = columns[1].as_primitive::<Int64Type>().values().to_vec();
        values.sort();
        values
    }

    #[test]
    fn keyed_rows_are_found_by_key_after_updates_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let store = eddy_storage::Store::open(dir.path()).unwrap();
        let mut log = crate::state_log::view_log(5);
        let rows = Arc::new(ViewRows::default());
        let schema = keyed_changes(&[]).schema();
        let mut sink = ViewSink::new(schema.clone(), rows.clone(), &[0]).unwrap();
        // An update arrives as its insertion before the deletion.
        for epoch in [
            &[(1, 10, 1), (2, 20, 1)][..],
            &[(1, 11, 1), (1, 10, -1), (3, 30, 1)],
            &[(2, 20, -1)],
        ] {
            sink.apply(&keyed_changes(epoch)).unwrap();
            commit(&mut sink, &mut log, &store);
        }
        assert_eq!(found(&rows, 1), vec![11]);
        assert_eq!(found(&rows, 2), Vec::<i64>::new());
        assert_eq!(found(&rows, 3), vec![30]);

        let (_, state) = crate::state_log::load_view_log(&store, 5).unwrap();
        let restored_rows = Arc::new(ViewRows::default());
        let mut restored = ViewSink::new(schema, restored_rows.clone(), &[0]).unwrap();
        restored.restore(&state).unwrap();
        assert_eq!(found(&restored_rows, 1), vec![11]);
        assert_eq!(found(&restored_rows, 3), vec![30]);
        assert_eq!(found(&restored_rows, 2), Vec::<i64>::new());
    }
}
