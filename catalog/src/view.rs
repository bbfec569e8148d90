//! Materialized views: their definition, and reading their rows.
//!
//! The dataflow runtime keeps each view's rows in memory ([`ViewRows`]),
//! each row in Arrow's row format with its multiplicity, and changes them
//! at each epoch's commit; queries read them here. The store holds them in
//! the view's state log, from which a restart loads them.

use foldhash::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};

use crate::chunked_scan::{indexed_batches, Chunks, SCAN_BATCH_ROWS};
use crate::row_format::RowFormat;
use crate::{CatalogError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewColumn {
    pub name: String,
    /// The Arrow type, in Arrow's display form (parsed back by `FromStr`).
    pub data_type: String,
    /// The Postgres type of a text column that holds one (`jsonb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_type: Option<String>,
}

impl ViewColumn {
    /// The column that holds `field`'s values.
    pub fn of_field(field: &Field) -> Self {
        ViewColumn {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
            pg_type: field.metadata().get(crate::PG_TYPE_KEY).cloned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDef {
    pub id: u64,
    pub name: String,
    /// The defining query, as SQL text; planned again at startup.
    pub sql: String,
    pub columns: Vec<ViewColumn>,
    /// Ids of the tables and views the query reads.
    pub depends_on: Vec<u64>,
    /// The dataflow as EXPLAIN shows it, one operator a line.
    pub explain: String,
    /// The typed plan its dataflow is built from, at creation and at each
    /// restart (see `eddy_dataflow::plan`).
    pub plan: serde_json::Value,
    /// Set when maintenance failed; the view then refuses reads.
    #[serde(default)]
    pub error: Option<String>,
    /// For a persistent query (`CREATE STREAM|TABLE ... AS SELECT`): the
    /// Kafka relation whose topic it writes. Its rows then go to that
    /// topic, not to the store.
    #[serde(default)]
    pub sink_relation: Option<u64>,
    /// Columns (by position) that identify each row: a filter fixing them
    /// is a lookup, not a scan. Empty when no columns do.
    #[serde(default)]
    pub key_columns: Vec<usize>,
    /// Plain views its query names, expanded when it was planned.
    #[serde(default)]
    pub plain_views: Vec<u64>,
    /// The oid of the role that created it; `None` for the bootstrap
    /// superuser (and for what predates roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
}

impl ViewDef {
    /// Whether this is a persistent query writing a topic.
    pub fn is_query(&self) -> bool {
        self.sink_relation.is_some()
    }

    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        columns_schema(&self.name, &self.columns)
    }
}

/// The schema of view `view`'s columns.
pub(crate) fn columns_schema(view: &str, columns: &[ViewColumn]) -> Result<SchemaRef> {
    let fields = columns
        .iter()
        .map(|c| {
            let data_type = DataType::from_str(&c.data_type).map_err(|e| {
                CatalogError::Internal(format!("view {view} column {}: {e}", c.name))
            })?;
            let field = Field::new(&c.name, data_type, true);
            Ok(match &c.pg_type {
                Some(pg_type) => {
                    field.with_metadata([(crate::PG_TYPE_KEY.to_owned(), pg_type.clone())].into())
                }
                None => field,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// A view's rows as of the last committed epoch, shared by the runtime,
/// which changes them as each epoch commits, and the queries that read
/// them: each row in the row format, with its multiplicity. A view with
/// key columns also finds its rows by key.
#[derive(Debug, Default)]
pub struct ViewRows {
    contents: RwLock<Contents>,
}

/// A row in the row format, shared by the rows and the key index.
pub type SharedRow = Arc<[u8]>;

/// An epoch's changes to a view's rows, by row in the row format.
pub type RowChanges = hashbrown::HashMap<Box<[u8]>, RowChange, foldhash::fast::RandomState>;

/// A view's rows: each row in the row format, and its multiplicity.
pub type RowCounts = hashbrown::HashMap<SharedRow, i64, foldhash::fast::RandomState>;

/// One row's change in an epoch.
#[derive(Debug, Clone)]
pub struct RowChange {
    /// The sum of the row's weights.
    pub weight: i64,
    /// The row's multiplicity before the epoch.
    pub before: i64,
    /// For a keyed view, the row's encoded key.
    pub key: Option<Box<[u8]>>,
}

#[derive(Debug, Default)]
struct Contents {
    rows: RowCounts,
    /// Encoded key columns → the rows with that key (one, but for a view
    /// whose key is not unique after all).
    by_key: HashMap<Box<[u8]>, Vec<SharedRow>>,
    /// The runtime's number of the last epoch published.
    epoch: u64,
}

impl Contents {
    fn index(&mut self, key: Box<[u8]>, row: SharedRow) {
        self.by_key.entry(key).or_default().push(row);
    }

    fn unindex(&mut self, key: &[u8], row: &[u8]) {
        if let Some(rows) = self.by_key.get_mut(key) {
            rows.retain(|r| &r[..] != row);
            if rows.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}

impl ViewRows {
    /// Runs `f` over the rows, with writers held off.
    pub fn read<R>(&self, f: impl FnOnce(&RowCounts) -> R) -> R {
        f(&self.contents.read().unwrap_or_else(|e| e.into_inner()).rows)
    }

    /// Runs `f` over the rows and the number of the epoch they are at.
    pub fn read_at<R>(&self, f: impl FnOnce(&RowCounts, u64) -> R) -> R {
        let contents = self.contents.read().unwrap_or_else(|e| e.into_inner());
        f(&contents.rows, contents.epoch)
    }

    /// The rows with each of `keys`, with their multiplicities.
    pub fn lookup<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> Vec<(SharedRow, i64)> {
        let contents = self.contents.read().unwrap_or_else(|e| e.into_inner());
        let mut found = Vec::new();
        for key in keys {
            for row in contents.by_key.get(key).into_iter().flatten() {
                if let Some(&count) = contents.rows.get(row) {
                    found.push((row.clone(), count));
                }
            }
        }
        found
    }

    /// Adds epoch `epoch`'s `changes` to the rows; a row whose
    /// multiplicity reaches zero is gone.
    pub fn publish(&self, changes: &RowChanges, epoch: u64) {
        let mut contents = self.contents.write().unwrap_or_else(|e| e.into_inner());
        contents.epoch = epoch;
        for (row, change) in changes {
            let weight = change.weight;
            if weight == 0 {
                continue;
            }
            match contents.rows.entry_ref(&row[..]) {
                hashbrown::hash_map::EntryRef::Occupied(mut entry) => {
                    *entry.get_mut() += weight;
                    if *entry.get() <= 0 {
                        entry.remove();
                        if let Some(key) = &change.key {
                            contents.unindex(key, row);
                        }
                    }
                }
                hashbrown::hash_map::EntryRef::Vacant(entry) if weight > 0 => {
                    let shared = entry.insert_entry(weight).key().clone();
                    if let Some(key) = &change.key {
                        contents.index(key.clone(), shared);
                    }
                }
                hashbrown::hash_map::EntryRef::Vacant(_) => {}
            }
        }
    }

    /// Replaces every row; `keys`, for a keyed view, has each row's key.
    pub fn replace(&self, rows: Vec<(Box<[u8]>, i64)>, keys: Option<Vec<Box<[u8]>>>) {
        let mut contents = Contents::default();
        let mut keys = keys.map(Vec::into_iter);
        for (row, count) in rows {
            let row: SharedRow = row.into();
            if let Some(key) = keys.as_mut().and_then(Iterator::next) {
                contents.index(key, row.clone());
            }
            contents.rows.insert(row, count);
        }
        *self.contents.write().unwrap_or_else(|e| e.into_inner()) = contents;
    }
}

/// A materialized view as a relation queries read.
#[derive(Debug)]
pub struct StoredView {
    def: ViewDef,
    schema: SchemaRef,
    format: RowFormat,
    /// Encodes the key columns, for a view that has them.
    key_format: Option<RowFormat>,
    rows: Arc<ViewRows>,
}

impl StoredView {
    pub(crate) fn new(def: ViewDef, rows: Arc<ViewRows>) -> Result<Self> {
        let schema = def.arrow_schema()?;
        let format = RowFormat::for_schema(&schema)?;
        let key_format = view_key_format(&schema, &def.key_columns)?;
        Ok(StoredView {
            def,
            schema,
            format,
            key_format,
            rows,
        })
    }

    pub fn def(&self) -> &ViewDef {
        &self.def
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// How this view or query depends on `kind name`, for DROP's errors.
    pub fn dependency_text(&self, kind: &str, name: &str) -> String {
        if self.def.is_query() {
            format!("query {} reads {kind} {name}", self.def.name)
        } else {
            format!(
                "materialized view {} depends on {kind} {name}",
                self.def.name
            )
        }
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn check_usable(&self) -> Result<()> {
        match &self.def.error {
            Some(error) => Err(CatalogError::ViewFailed {
                view: self.def.name.clone(),
                error: error.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Reads every row of the view, as of the last committed epoch.
    pub fn read_all(&self) -> Result<RecordBatch> {
        self.check_usable()?;
        let (distinct, repeat) = self.rows.read(|rows| {
            let repeat: Vec<i64> = rows.values().copied().collect();
            (self.format.decode(rows.keys().map(|k| &k[..])), repeat)
        });
        self.batch_of(distinct?, &repeat)
    }

    /// Reads the rows whose key columns hold one of `keys`; `None` when the
    /// view has no key, or a value does not fit its column.
    pub fn read_keys(&self, keys: &[Vec<ScalarValue>]) -> Result<Option<RecordBatch>> {
        self.check_usable()?;
        let Some(key_format) = &self.key_format else {
            return Ok(None);
        };
        let Some(columns) = crate::key_lookup::key_columns(keys, key_format.types()) else {
            return Ok(None);
        };
        let encoded = key_format.encode(&columns, keys.len())?;
        let found = self.rows.lookup((0..encoded.len()).map(|i| encoded.row(i)));
        let distinct = self.format.decode(found.iter().map(|(row, _)| &row[..]))?;
        let repeat: Vec<i64> = found.iter().map(|(_, n)| *n).collect();
        self.batch_of(distinct, &repeat).map(Some)
    }

    fn batch_of(&self, distinct: Vec<ArrayRef>, repeat: &[i64]) -> Result<RecordBatch> {
        repeated(&self.schema, distinct, repeat)
    }

    /// The rows as of the last committed epoch (at most `limit` distinct
    /// ones), shared with the view, for a query to decode a batch at a time.
    pub fn chunks(&self, limit: Option<usize>) -> Result<Arc<dyn Chunks>> {
        self.check_usable()?;
        let rows = self.rows.read(|rows| {
            rows.iter()
                .take(limit.unwrap_or(usize::MAX))
                .map(|(row, &n)| (row.clone(), n))
                .collect()
        });
        Ok(Arc::new(ViewChunks {
            schema: self.schema.clone(),
            format: RowFormat::for_schema(&self.schema)?,
            rows,
        }))
    }

    pub fn key_column_names(&self) -> Vec<&str> {
        self.def
            .key_columns
            .iter()
            .map(|&c| self.schema.field(c).name().as_str())
            .collect()
    }
}

/// The rows of `distinct` columns, each repeated its multiplicity.
fn repeated(schema: &SchemaRef, distinct: Vec<ArrayRef>, repeat: &[i64]) -> Result<RecordBatch> {
    let indices: UInt32Array = repeat
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| std::iter::repeat_n(i as u32, n.max(0) as usize))
        .collect();
    let columns = distinct
        .iter()
        .map(|c| take(c.as_ref(), &indices, None))
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// A view's rows at one epoch, decoded [`SCAN_BATCH_ROWS`] distinct rows
/// at a time.
struct ViewChunks {
    schema: SchemaRef,
    format: RowFormat,
    rows: Vec<(SharedRow, i64)>,
}

impl Chunks for ViewChunks {
    fn batches(self: Arc<Self>) -> Box<dyn Iterator<Item = Result<RecordBatch>> + Send> {
        let count = self.rows.len().div_ceil(SCAN_BATCH_ROWS);
        indexed_batches(self, count, Self::chunk)
    }
}

impl ViewChunks {
    fn chunk(&self, i: usize) -> Result<Option<RecordBatch>> {
        let start = i * SCAN_BATCH_ROWS;
        let rows = &self.rows[start..(start + SCAN_BATCH_ROWS).min(self.rows.len())];
        let distinct = self.format.decode(rows.iter().map(|(row, _)| &row[..]))?;
        let repeat: Vec<i64> = rows.iter().map(|(_, n)| *n).collect();
        repeated(&self.schema, distinct, &repeat).map(Some)
    }
}

/// The row format of a view's key columns; `None` without any.
pub fn view_key_format(schema: &Schema, key_columns: &[usize]) -> Result<Option<RowFormat>> {
    if key_columns.is_empty() {
        return Ok(None);
    }
    let types = key_columns
        .iter()
        .map(|&c| {
            schema
                .fields()
                .get(c)
                .map(|f| f.data_type().clone())
                .ok_or_else(|| CatalogError::Internal(format!("view key column {c} is missing")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(RowFormat::new(types)?))
}

#[async_trait]
impl TableProvider for StoredView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// Filters that fix key columns are pushed down as inexact: DataFusion
    /// still applies them to the rows a lookup returns.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(crate::key_lookup::key_pushdown(
            filters,
            &self.key_column_names(),
        ))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        crate::chunked_scan::lookup_or_scan(
            &self.schema,
            filters,
            &self.key_column_names(),
            projection,
            limit,
            |keys| self.read_keys(keys),
            |limit| self.chunks(limit),
        )
    }
}
