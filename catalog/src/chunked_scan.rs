//! Scans that hand a query its rows a batch at a time, as the query pulls
//! them, instead of building the whole relation as one batch first.
//!
//! What a scan reads is fixed when the query is planned (under the epoch
//! lock, so at one consistent point across relations): a stream's block
//! keys, a view's rows (shared with the view, not copied), or a snapshot
//! of a table's rows (nothing copied; see `eddy_storage::snapshot`).
//! Decoding happens batch by batch as the query runs, so a
//! `SELECT` over a large relation holds one batch of decoded rows at a
//! time, and `LIMIT` stops reading early.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::ExecutionPlan;
use eddy_storage::Store;
use futures::stream;

use crate::codec::decode_batch;
use crate::table::memory_scan;
use crate::{stream_blocks, CatalogError, Result};

/// Rows a scan decodes at a time.
pub const SCAN_BATCH_ROWS: usize = 8192;

/// A relation's rows as of one point, decoded a batch at a time as a scan
/// reads them.
pub trait Chunks: Send + Sync + 'static {
    /// The rows, a batch at a time; empty batches are skipped.
    fn batches(self: Arc<Self>) -> Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;
}

/// The batches `chunk` reads for `0..count`; a `None` (a stream block its
/// retention expired since the query was planned) is skipped.
pub fn indexed_batches<C: Send + Sync + 'static>(
    chunks: Arc<C>,
    count: usize,
    chunk: fn(&C, usize) -> Result<Option<RecordBatch>>,
) -> Box<dyn Iterator<Item = Result<RecordBatch>> + Send> {
    Box::new((0..count).filter_map(move |i| chunk(&chunks, i).transpose()))
}

/// A scan over `chunks` (whose batches have `schema`), projected and
/// limited as DataFusion asks.
pub fn chunked_scan(
    schema: SchemaRef,
    chunks: Arc<dyn Chunks>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let partition = Arc::new(ChunkedPartition {
        schema: schema.clone(),
        chunks,
    });
    Ok(Arc::new(StreamingTableExec::try_new(
        schema,
        vec![partition],
        projection,
        Vec::new(),
        false,
        limit,
    )?))
}

/// A scan of a relation keyed by `key_columns`: the rows of the keys
/// `filters` fix, read by `lookup` when it can, else every row, by
/// `chunks`.
pub fn lookup_or_scan(
    schema: &SchemaRef,
    filters: &[Expr],
    key_columns: &[&str],
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    lookup: impl FnOnce(&[Vec<ScalarValue>]) -> Result<Option<RecordBatch>>,
    chunks: impl FnOnce(Option<usize>) -> Result<Arc<dyn Chunks>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let external = |e: CatalogError| DataFusionError::External(Box::new(e));
    crate::key_lookup::lookup_or_scan(
        filters,
        key_columns,
        |keys| match lookup(keys).map_err(external)? {
            Some(batch) => memory_scan(batch, projection).map(Some),
            None => Ok(None),
        },
        || {
            chunked_scan(
                schema.clone(),
                chunks(limit).map_err(external)?,
                projection,
                limit,
            )
        },
    )
}

struct ChunkedPartition {
    schema: SchemaRef,
    chunks: Arc<dyn Chunks>,
}

impl std::fmt::Debug for ChunkedPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedPartition").finish_non_exhaustive()
    }
}

impl PartitionStream for ChunkedPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self
            .chunks
            .clone()
            .batches()
            .filter_map(|batch| match batch {
                Ok(batch) if batch.num_rows() > 0 => Some(Ok(batch)),
                Ok(_) => None,
                Err(e) => Some(Err(DataFusionError::External(Box::new(e)))),
            });
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream::iter(batches),
        ))
    }
}

/// A stream's stored blocks, read from the store one at a time.
pub struct StreamBlocks {
    pub schema: SchemaRef,
    pub store: Store,
    pub keys: Vec<Vec<u8>>,
}

impl StreamBlocks {
    fn block(&self, i: usize) -> Result<Option<RecordBatch>> {
        match self.store.get_blob(&self.keys[i])? {
            Some(bytes) => stream_blocks::decode_block(&self.schema, &bytes).map(Some),
            None => Ok(None),
        }
    }
}

impl Chunks for StreamBlocks {
    fn batches(self: Arc<Self>) -> Box<dyn Iterator<Item = Result<RecordBatch>> + Send> {
        let count = self.keys.len();
        indexed_batches(self, count, Self::block)
    }
}

/// Rows in the row codec's encoding as of one point (a table's snapshot),
/// at most `limit` of them: `next(n)` reads about `n` more, and none at
/// the end. Decoded [`SCAN_BATCH_ROWS`] at a time.
pub struct EncodedRows<F> {
    pub schema: SchemaRef,
    pub next: F,
    pub limit: usize,
}

impl<F> Chunks for EncodedRows<F>
where
    F: Fn(usize) -> Result<Vec<Vec<u8>>> + Send + Sync + 'static,
{
    fn batches(self: Arc<Self>) -> Box<dyn Iterator<Item = Result<RecordBatch>> + Send> {
        let mut left = self.limit;
        Box::new(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let mut rows = match (self.next)(SCAN_BATCH_ROWS.min(left)) {
                Ok(rows) if rows.is_empty() => return None,
                Ok(rows) => rows,
                Err(e) => {
                    left = 0;
                    return Some(Err(e));
                }
            };
            rows.truncate(left);
            left -= rows.len();
            Some(decode_batch(&self.schema, rows.iter().map(Vec::as_slice)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;

    use super::*;
    use crate::codec::encode_rows;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn encoded(n: i64) -> impl Chunks {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("r{i}")),
                )),
            ],
        )
        .unwrap();
        let rows = std::sync::Mutex::new(encode_rows(batch.columns()).unwrap().into_iter());
        EncodedRows {
            schema: schema(),
            next: move |n| Ok(rows.lock().unwrap().by_ref().take(n).collect()),
            limit: usize::MAX,
        }
    }

    async fn run(plan: Arc<dyn ExecutionPlan>) -> Vec<RecordBatch> {
        let ctx = SessionContext::new().task_ctx();
        datafusion::physical_plan::execute_stream(plan, ctx)
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn rows_come_a_batch_at_a_time_projected_and_limited() {
        let plan = chunked_scan(schema(), Arc::new(encoded(20_000)), Some(&vec![1]), None).unwrap();
        let batches = run(plan).await;
        let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, vec![8192, 8192, 3616]);
        assert_eq!(batches[0].schema().field(0).name(), "name");
        let last = batches[2].column(0).as_any().downcast_ref::<StringArray>();
        assert_eq!(last.unwrap().value(3615), "r19999");

        let plan = chunked_scan(schema(), Arc::new(encoded(20_000)), None, Some(10)).unwrap();
        let total: usize = run(plan).await.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total, 10);
    }

    #[tokio::test]
    async fn an_empty_relation_scans_to_nothing() {
        let plan = chunked_scan(schema(), Arc::new(encoded(0)), None, None).unwrap();
        assert!(run(plan).await.is_empty());
    }
}
