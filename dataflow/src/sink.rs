//! A view's contents: the multiset of its rows, kept in memory and in the
//! store's view-rows keyspace, where queries read it.

use std::collections::{HashMap, HashSet};

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::SchemaRef;
use eddy_catalog::RowFormat;
use eddy_storage::{Keyspace, Store, WriteBatch};

use crate::change::{conform, ChangeBatch};
use crate::operators::read_i64;
use crate::{DataflowError, Result};

pub struct ViewSink {
    view_id: u64,
    schema: SchemaRef,
    format: RowFormat,
    rows: HashMap<Box<[u8]>, i64>,
    dirty: HashSet<Box<[u8]>>,
}

impl ViewSink {
    pub fn new(view_id: u64, schema: SchemaRef) -> Result<Self> {
        let format = RowFormat::for_schema(&schema)?;
        Ok(ViewSink {
            view_id,
            schema,
            format,
            rows: HashMap::new(),
            dirty: HashSet::new(),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Bytes the rows take in memory, roughly: each row's bytes, its
    /// multiplicity and the map's pointers.
    pub fn bytes(&self) -> usize {
        self.rows.keys().map(|row| row.len() + 32).sum()
    }

    /// Applies the view's changes; returns them consolidated, in the view's
    /// schema, for the views that read this one.
    pub fn apply(&mut self, changes: &ChangeBatch) -> Result<ChangeBatch> {
        let changes = ChangeBatch::new(
            conform(&self.schema, &changes.data)?,
            changes.weights.clone(),
        )
        .consolidate()?;
        let rows = self
            .format
            .encode(changes.data.columns(), changes.num_rows())?;
        for i in 0..changes.num_rows() {
            let row = rows.row(i);
            let count = self.rows.entry(row.into()).or_insert(0);
            *count += changes.weight(i);
            if *count < 0 {
                return Err(DataflowError::Internal(format!(
                    "view row has multiplicity {count}"
                )));
            }
            if *count == 0 {
                self.rows.remove(row);
            }
            self.dirty.insert(row.into());
        }
        Ok(changes)
    }

    /// Every row, as insertions.
    pub fn contents(&self) -> Result<ChangeBatch> {
        let columns = self.format.decode(self.rows.keys().map(|k| &k[..]))?;
        let weights = Int64Array::from_iter_values(self.rows.values().copied());
        ChangeBatch::try_from_columns(&self.schema, columns, weights)
    }

    pub fn len(&self) -> usize {
        self.rows.values().map(|&c| c as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn key(&self, row: &[u8]) -> Vec<u8> {
        let mut key = Keyspace::ViewRows.object_prefix(self.view_id);
        key.extend_from_slice(row);
        key
    }

    pub fn persist(&mut self, batch: &mut WriteBatch) {
        for row in std::mem::take(&mut self.dirty) {
            let key = self.key(&row);
            match self.rows.get(&row) {
                Some(count) => batch.put(key, count.to_be_bytes().to_vec()),
                None => batch.delete(key),
            }
        }
    }

    pub fn restore(&mut self, store: &Store) -> Result<()> {
        let prefix = Keyspace::ViewRows.object_prefix(self.view_id);
        for item in store.scan_prefix(&prefix) {
            let (key, value) = item?;
            self.rows
                .insert(key[prefix.len()..].into(), read_i64(&value, 0)?);
        }
        Ok(())
    }
}
