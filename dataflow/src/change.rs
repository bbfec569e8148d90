//! Change batches: rows with a weight each, +1 for an insertion and -1 for
//! a deletion. An update is a deletion followed by an insertion.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions,
    UInt32Array,
};
use datafusion::arrow::compute::{cast, concat, concat_batches, filter, filter_record_batch, take};
use datafusion::arrow::datatypes::{Field, Int64Type, Schema, SchemaRef};
use eddy_catalog::{EncodedRows, RowFormat};

use crate::Result;

/// Rows and their weights.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    pub data: RecordBatch,
    pub weights: Int64Array,
}

impl ChangeBatch {
    pub fn new(data: RecordBatch, weights: Int64Array) -> Self {
        debug_assert_eq!(data.num_rows(), weights.len());
        ChangeBatch { data, weights }
    }

    /// Every row of `data` with weight +1.
    pub fn insert_all(data: RecordBatch) -> Self {
        let weights = Int64Array::from(vec![1; data.num_rows()]);
        ChangeBatch { data, weights }
    }

    pub fn empty(schema: SchemaRef) -> Self {
        ChangeBatch {
            data: RecordBatch::new_empty(schema),
            weights: Int64Array::from(Vec::<i64>::new()),
        }
    }

    /// A batch of `schema` from columns and weights.
    pub fn try_from_columns(
        schema: &SchemaRef,
        columns: Vec<ArrayRef>,
        weights: Int64Array,
    ) -> Result<Self> {
        let options = RecordBatchOptions::new().with_row_count(Some(weights.len()));
        let data = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
        Ok(ChangeBatch { data, weights })
    }

    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.num_rows() == 0
    }

    /// `len` changes from `offset` on, without copying them.
    pub fn slice(&self, offset: usize, len: usize) -> ChangeBatch {
        ChangeBatch::new(
            self.data.slice(offset, len),
            self.weights.slice(offset, len),
        )
    }

    pub fn schema(&self) -> SchemaRef {
        self.data.schema()
    }

    pub fn weight(&self, row: usize) -> i64 {
        self.weights.value(row)
    }

    /// The rows where `mask` is true.
    pub fn filter(&self, mask: &BooleanArray) -> Result<Self> {
        Ok(ChangeBatch {
            data: filter_record_batch(&self.data, mask)?,
            weights: weights_of(&filter(&self.weights, mask)?),
        })
    }

    /// The rows at `indices`, in that order.
    pub fn take(&self, indices: &UInt32Array) -> Result<Self> {
        let columns = self
            .data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), indices, None))
            .collect::<Result<Vec<_>, _>>()?;
        let weights = weights_of(&take(&self.weights, indices, None)?);
        ChangeBatch::try_from_columns(&self.schema(), columns, weights)
    }

    /// Concatenates batches, casting columns to `schema`'s types where they
    /// differ.
    pub fn concat(schema: &SchemaRef, parts: &[ChangeBatch]) -> Result<Self> {
        let parts: Vec<&ChangeBatch> = parts.iter().filter(|p| !p.is_empty()).collect();
        match parts.as_slice() {
            [] => return Ok(ChangeBatch::empty(schema.clone())),
            [only] if only.schema() == *schema => return Ok((*only).clone()),
            _ => {}
        }
        let batches = parts
            .iter()
            .map(|p| conform(schema, &p.data))
            .collect::<Result<Vec<_>>>()?;
        let data = concat_batches(schema, &batches)?;
        let weights: Vec<&dyn Array> = parts.iter().map(|p| &p.weights as &dyn Array).collect();
        let weights = weights_of(&concat(&weights)?);
        Ok(ChangeBatch { data, weights })
    }

    /// Sums the weights of equal rows and drops rows whose weight is zero.
    pub fn consolidate(&self) -> Result<Self> {
        if self.is_empty() {
            return Ok(self.clone());
        }
        let format = RowFormat::for_schema(&self.data.schema())?;
        let rows = format.encode(self.data.columns(), self.num_rows())?;
        Ok(self.consolidate_encoded(&rows)?.0)
    }

    /// [`ChangeBatch::consolidate`], with the rows already encoded: also
    /// gives the rows kept, by index, or `None` when every row is.
    pub fn consolidate_encoded(&self, rows: &EncodedRows) -> Result<(Self, Option<Vec<u32>>)> {
        let mut first: HashMap<&[u8], usize> = HashMap::with_capacity(self.num_rows());
        let mut order = Vec::new();
        let mut sums: Vec<i64> = Vec::new();
        for i in 0..self.num_rows() {
            let slot = *first.entry(rows.row(i)).or_insert_with(|| {
                order.push(i as u32);
                sums.push(0);
                sums.len() - 1
            });
            sums[slot] += self.weight(i);
        }
        if order.len() == self.num_rows() && sums.iter().all(|&w| w != 0) {
            return Ok((self.clone(), None));
        }
        let (indices, weights): (Vec<u32>, Vec<i64>) =
            order.into_iter().zip(sums).filter(|(_, w)| *w != 0).unzip();
        let mut taken = self.take(&UInt32Array::from(indices.clone()))?;
        taken.weights = Int64Array::from(weights);
        Ok((taken, Some(indices)))
    }
}

/// Weights back from an Arrow kernel, which keeps their type.
fn weights_of(array: &ArrayRef) -> Int64Array {
    array.as_primitive::<Int64Type>().clone()
}

/// `schema` with every field nullable. Changes carry this schema: outer
/// joins pad with NULLs, and nullability is not worth checking per batch.
pub fn nullable_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// `batch` re-labelled with `schema`, casting columns whose types differ.
pub fn conform(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let columns = cast_columns(batch.columns().to_vec(), schema)?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// Casts each column whose type differs from its field in `schema`.
pub fn cast_columns(columns: Vec<ArrayRef>, schema: &SchemaRef) -> Result<Vec<ArrayRef>> {
    columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                Ok(cast(&c, f.data_type())?)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::DataType;

    use super::*;

    fn batch(values: &[i64], weights: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        ChangeBatch::try_from_columns(
            &schema,
            vec![Arc::new(Int64Array::from(values.to_vec()))],
            Int64Array::from(weights.to_vec()),
        )
        .unwrap()
    }

    #[test]
    fn consolidate_sums_equal_rows_and_drops_zeros() {
        let b = batch(&[1, 2, 1, 3, 2], &[1, 1, 1, 1, -1])
            .consolidate()
            .unwrap();
        let values: Vec<i64> = b
            .data
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        assert_eq!(values, vec![1, 3]);
        assert_eq!(b.weights.values().to_vec(), vec![2, 1]);
    }

    #[test]
    fn concat_keeps_weights_aligned() {
        let a = batch(&[1], &[1]);
        let b = batch(&[2, 3], &[-1, 1]);
        let c = ChangeBatch::concat(&a.schema(), &[a.clone(), b]).unwrap();
        assert_eq!(c.num_rows(), 3);
        assert_eq!(c.weights.values().to_vec(), vec![1, -1, 1]);
    }
}
