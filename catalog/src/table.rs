//! Local tables: their definition, and reading and writing their rows.

use std::collections::HashMap;

use foldhash::{HashSet, HashSetExt};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::{Constraint, Constraints};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_plan::ExecutionPlan;
use eddy_storage::snapshot::Snapshots;
use eddy_storage::state_log::{Segment, StateLog, StateMap};
use eddy_storage::{Keyspace, Store, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::changelog::{ChangeLog, LoggedRow};
use crate::chunked_scan::{Chunks, EncodedRows, StreamBlocks};
use crate::codec::{decode_batch, encode_rows};
use crate::generator::{Connector, FieldSpec, GeneratorDef};
use crate::kafka::{KafkaDef, SourceKind};
use crate::stream_blocks;
use crate::types::ColumnType;
use crate::{CatalogError, Result};

/// Name of the hidden column that carries each row's storage key in plans
/// for UPDATE and DELETE (see [`RowKeyedTable`]).
pub const ROW_KEY_COLUMN: &str = "__eddy_row_key";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub column_type: ColumnType,
    pub nullable: bool,
    /// The DEFAULT expression, as SQL text.
    pub default: Option<String>,
}

impl ColumnDef {
    /// A nullable column without a default.
    pub fn nullable(name: &str, column_type: ColumnType) -> Self {
        ColumnDef {
            name: name.into(),
            column_type,
            nullable: true,
            default: None,
        }
    }
}

/// The pseudo-columns appended to a Kafka relation's declared columns.
pub fn pseudo_columns() -> Vec<ColumnDef> {
    let types = [ColumnType::Timestamp, ColumnType::Int, ColumnType::BigInt];
    crate::kafka::PSEUDO_COLUMNS
        .into_iter()
        .zip(types)
        .map(|(name, column_type)| ColumnDef::nullable(name, column_type))
        .collect()
}

/// The definition of [`DEAD_LETTERS`](crate::kafka::DEAD_LETTERS): a local table without a key.
pub fn dead_letters_def() -> TableDef {
    let column = ColumnDef::nullable;
    TableDef {
        owner: None,
        id: 0,
        name: crate::kafka::DEAD_LETTERS.into(),
        columns: vec![
            column("source", ColumnType::Text),
            column("topic", ColumnType::Text),
            column("kafka_partition", ColumnType::Int),
            column("kafka_offset", ColumnType::BigInt),
            column("error", ColumnType::Text),
            column("raw_key", ColumnType::Bytea),
            column("raw_value", ColumnType::Bytea),
            column("received_at", ColumnType::TimestampTz),
        ],
        primary_key: Vec::new(),
        kafka: None,
        generator: None,
        watermark: None,
        processing_time: None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: u64,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Indexes into `columns`; empty for a table without a primary key.
    pub primary_key: Vec<usize>,
    /// Set for a stream or table over a Kafka topic.
    #[serde(default)]
    pub kafka: Option<KafkaDef>,
    /// Set for a stream or table fed by a built-in generator.
    #[serde(default)]
    pub generator: Option<GeneratorDef>,
    /// `WATERMARK FOR col AS col - INTERVAL ...`: the event-time column,
    /// and how far the watermark stays behind its latest value.
    #[serde(default)]
    pub watermark: Option<WatermarkDef>,
    /// A declared column filled with the time each record is ingested
    /// (`name AS PROCTIME()`); sources only.
    #[serde(default)]
    pub processing_time: Option<usize>,
    /// The oid of the role that created it; `None` for the bootstrap
    /// superuser (and for what predates roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
}

/// A source relation's declared watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkDef {
    pub column: usize,
    /// Microseconds the watermark stays behind the latest event time.
    pub delay_us: i64,
}

impl TableDef {
    /// The columns the user declared: all of them, less a Kafka relation's
    /// trailing pseudo-columns.
    pub fn declared_columns(&self) -> &[ColumnDef] {
        let pseudo = if self.source_kind().is_some() {
            crate::kafka::PSEUDO_COLUMNS.len()
        } else {
            0
        };
        &self.columns[..self.columns.len().saturating_sub(pseudo)]
    }

    /// The declared columns a source's records carry: all but the
    /// processing-time column, which the source fills itself.
    pub fn carried_columns(&self) -> Vec<ColumnDef> {
        let mut columns = self.declared_columns().to_vec();
        if let Some(p) = self.processing_time {
            columns.remove(p);
        }
        columns
    }

    /// Whether this is a stream or an upsert table fed by a source (a Kafka
    /// topic or a generator); `None` for a local table.
    pub fn source_kind(&self) -> Option<SourceKind> {
        match (&self.kafka, &self.generator) {
            (Some(kafka), _) => Some(kafka.kind),
            (None, Some(generator)) => Some(generator.kind),
            (None, None) => None,
        }
    }

    /// The column holding a source relation's event time: its `WATERMARK
    /// FOR` column if it declares one; else a Kafka
    /// relation's `timestamp` column if it names one (`rowtime` if that is
    /// a BIGINT of epoch milliseconds); a generator's event
    /// time column (Nexmark's `date_time`, datagen's `event_time` field) if
    /// declared; else `rowtime` (the record's timestamp, or the generator's
    /// event time). `None` for a local table.
    pub fn event_time_column(&self) -> Option<usize> {
        self.source_kind()?;
        if let Some(watermark) = &self.watermark {
            return Some(watermark.column);
        }
        let rowtime = || {
            self.columns
                .iter()
                .position(|c| c.name == crate::kafka::ROWTIME)
        };
        if let Some(column) = self.kafka.as_ref().and_then(|k| k.timestamp_column) {
            // Epoch milliseconds and formatted text are in `rowtime` as a
            // timestamp.
            return match self.columns[column].column_type {
                ColumnType::Timestamp | ColumnType::TimestampTz => Some(column),
                _ => rowtime(),
            };
        }
        let generated = self.generator.as_ref().and_then(|g| match &g.connector {
            Connector::Nexmark { .. } => self
                .declared_columns()
                .iter()
                .position(|c| c.name == "date_time"),
            Connector::Datagen { fields } => fields
                .iter()
                .position(|f| matches!(f, FieldSpec::EventTime)),
        });
        generated.or_else(rowtime)
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| c.column_type.to_field(&c.name, c.nullable))
                .collect::<Vec<_>>(),
        ))
    }
}

/// A key touched by a batch of upserts: its stored value, and the index of
/// the row that ends up there (`None` once deleted).
type Touched = (Option<Vec<u8>>, Option<usize>);

/// What [`StoredTable::stage_upserts`] staged.
#[derive(Debug)]
pub struct Upserts {
    /// Rows taken out.
    pub removed: RecordBatch,
    /// Rows put in.
    pub added: RecordBatch,
    /// For a stream, the keys of the blocks that store `added`, in order.
    pub blocks: Vec<Vec<u8>>,
}

/// Where a table keeps its rows.
enum Rows {
    /// A local table's rows, in memory by key. Each write appends its
    /// changes to the table's state log in the store, fsynced, before the
    /// rows in memory change and the client hears back.
    Memory(Arc<RwLock<MemoryRows>>),
    /// One store entry per row, staged into the epoch that ingests it: a
    /// Kafka table, and the dead-letter table, which the runtime writes.
    /// A stream's rows are blocks under the same prefix.
    Store,
}

struct MemoryRows {
    rows: StateMap,
    log: StateLog,
    /// Scans reading the rows as of a point while writes go on.
    snapshots: Snapshots,
}

/// A write's changes to rows, in order: each key's new row, or `None` to
/// delete it.
type RowChanges = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Stored rows: their keys (when asked for) and their encodings.
type KeysAndRows = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// A table backed by the store.
pub struct StoredTable {
    def: TableDef,
    schema: SchemaRef,
    constraints: Constraints,
    defaults: Vec<Option<Expr>>,
    store: Store,
    /// Orders rows by primary key; `None` for a heap table keyed by row id.
    key_converter: Option<RowConverter>,
    next_row_id: AtomicU64,
    rows: Rows,
    /// Serializes writers, so that key checks and commits do not interleave.
    write_lock: Arc<Mutex<()>>,
    changes: Arc<ChangeLog>,
    /// How many views read this table; its changes are logged while any do.
    dependents: AtomicUsize,
}

impl std::fmt::Debug for StoredTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTable")
            .field("name", &self.def.name)
            .finish_non_exhaustive()
    }
}

/// What a write did, in rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteCount {
    pub rows: u64,
}

impl StoredTable {
    pub(crate) fn new(
        def: TableDef,
        defaults: Vec<Option<Expr>>,
        store: Store,
        write_lock: Arc<Mutex<()>>,
        changes: Arc<ChangeLog>,
    ) -> Result<Self> {
        let schema = def.arrow_schema();
        let key_converter = if def.primary_key.is_empty() {
            None
        } else {
            let fields = def
                .primary_key
                .iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect();
            Some(RowConverter::new(fields)?)
        };
        let constraints = if def.primary_key.is_empty() {
            Constraints::default()
        } else {
            Constraints::new_unverified(vec![Constraint::PrimaryKey(def.primary_key.clone())])
        };
        let rows = if def.source_kind().is_none() && def.name != crate::kafka::DEAD_LETTERS {
            let (log, rows) = StateLog::load(&store, Keyspace::TableRows, def.id)?;
            Rows::Memory(Arc::new(RwLock::new(MemoryRows {
                rows,
                log,
                snapshots: Snapshots::default(),
            })))
        } else {
            Rows::Store
        };
        let prefix = Keyspace::TableRows.object_prefix(def.id);
        let last_key = match &rows {
            Rows::Memory(memory) => memory
                .read()
                .expect("table rows lock poisoned")
                .rows
                .keys()
                .next_back()
                .cloned(),
            Rows::Store => store
                .last_key(&prefix)?
                .map(|key| key[prefix.len()..].to_vec()),
        };
        let next_row_id = match (&key_converter, last_key) {
            (None, Some(last)) => row_id_of(&last).map_or(0, |id| id + 1),
            _ => 0,
        };
        Ok(StoredTable {
            def,
            schema,
            constraints,
            defaults,
            store,
            key_converter,
            next_row_id: AtomicU64::new(next_row_id),
            rows,
            write_lock,
            changes,
            dependents: AtomicUsize::new(0),
        })
    }

    pub(crate) fn add_dependent(&self) {
        self.dependents.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn remove_dependent(&self) {
        self.dependents.fetch_sub(1, Ordering::SeqCst);
    }

    /// A buffer for the changes of one write, if views need them.
    fn change_buffer(&self) -> Option<Vec<LoggedRow>> {
        (self.dependents.load(Ordering::SeqCst) > 0).then(Vec::new)
    }

    /// Commits a client's write: its rows and the changes logged for views,
    /// in one fsynced batch. A local table's rows in memory change only
    /// once the batch is committed.
    fn commit(&self, rows: RowChanges, changes: Option<Vec<LoggedRow>>) -> Result<()> {
        let mut write = WriteBatch::new();
        let logged = changes.is_some_and(|rows| {
            self.changes.stage(&mut write, self.def.id, &rows);
            !rows.is_empty()
        });
        match &self.rows {
            Rows::Store => {
                for (key, value) in rows {
                    match value {
                        Some(value) => write.put(self.row_key(&key), value),
                        None => write.delete(self.row_key(&key)),
                    }
                }
                self.store.commit(write)?;
            }
            Rows::Memory(memory) => {
                let mut memory = memory.write().expect("table rows lock poisoned");
                let MemoryRows {
                    rows: stored,
                    log,
                    snapshots,
                } = &mut *memory;
                let mut segment = Segment::default();
                for (key, value) in &rows {
                    match value {
                        Some(value) => segment.put(key, &[], value),
                        None => segment.delete(key, &[]),
                    }
                }
                // Rows in memory change once the commit is in.
                log.stage(segment, &self.store, &mut write)?;
                self.store.commit(write)?;
                apply_rows(stored, snapshots, rows);
            }
        }
        if logged {
            self.changes.wake();
        }
        Ok(())
    }

    /// The stored row under `key`.
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &self.rows {
            Rows::Memory(memory) => Ok(memory
                .read()
                .expect("table rows lock poisoned")
                .rows
                .get(key)
                .cloned()),
            Rows::Store => self.store.get(&self.row_key(key)).map_err(Into::into),
        }
    }

    fn has_row(&self, key: &[u8]) -> Result<bool> {
        match &self.rows {
            Rows::Memory(memory) => Ok(memory
                .read()
                .expect("table rows lock poisoned")
                .rows
                .contains_key(key)),
            Rows::Store => self.store.contains(&self.row_key(key)).map_err(Into::into),
        }
    }

    /// Every stored row, in key order, with its key when `with_keys` is set.
    fn all_rows(&self, with_keys: bool) -> Result<KeysAndRows> {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        match &self.rows {
            Rows::Memory(memory) => {
                let memory = memory.read().expect("table rows lock poisoned");
                values.reserve(memory.rows.len());
                for (key, value) in &memory.rows {
                    if with_keys {
                        keys.push(key.clone());
                    }
                    values.push(value.clone());
                }
            }
            Rows::Store => {
                let prefix = self.prefix();
                for item in self.store.scan_prefix(&prefix) {
                    let (key, value) = item?;
                    if with_keys {
                        keys.push(key[prefix.len()..].to_vec());
                    }
                    values.push(value);
                }
            }
        }
        Ok((keys, values))
    }

    /// Logs the current value of each row key in `keys` as deleted.
    fn log_deleted<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a Vec<u8>>,
        changes: &mut Option<Vec<LoggedRow>>,
    ) -> Result<()> {
        if let Some(changes) = changes {
            for key in keys {
                if let Some(value) = self.row(key)? {
                    changes.push((-1, value));
                }
            }
        }
        Ok(())
    }

    pub fn def(&self) -> &TableDef {
        &self.def
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Whether this is a stream (append-only), over a topic or generated.
    pub fn is_stream(&self) -> bool {
        self.def.source_kind() == Some(SourceKind::Stream)
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn prefix(&self) -> Vec<u8> {
        Keyspace::TableRows.object_prefix(self.def.id)
    }

    /// Reads every row, with each row's storage key when `with_keys` is set.
    /// The rows with the given primary keys (one value per key column
    /// each), read by key; `None` if a value does not convert to its
    /// column's type, which only a scan can judge.
    pub fn read_keys(&self, keys: &[Vec<ScalarValue>]) -> Result<Option<RecordBatch>> {
        let Some(converter) = &self.key_converter else {
            return Ok(None);
        };
        if self.is_stream() {
            // Stored in blocks: a scan finds the records.
            return Ok(None);
        }
        let types: Vec<DataType> = self
            .def
            .primary_key
            .iter()
            .map(|&c| self.schema.field(c).data_type().clone())
            .collect();
        let Some(columns) = crate::key_lookup::key_columns(keys, &types) else {
            return Ok(None);
        };
        let encoded = converter.convert_columns(&columns)?;
        let mut values = Vec::new();
        for row in encoded.iter() {
            if let Some(value) = self.row(row.as_ref())? {
                values.push(value);
            }
        }
        Ok(Some(decode_batch(
            &self.schema,
            values.iter().map(Vec::as_slice),
        )?))
    }

    /// The names of the primary-key columns, in key order.
    pub fn key_column_names(&self) -> Vec<&str> {
        self.def
            .primary_key
            .iter()
            .map(|&i| self.def.columns[i].name.as_str())
            .collect()
    }

    pub fn read_all(&self, with_keys: bool) -> Result<RecordBatch> {
        if self.is_stream() {
            return self.read_stream(with_keys);
        }
        let (keys, values) = self.all_rows(with_keys)?;
        let rows = decode_batch(&self.schema, values.iter().map(Vec::as_slice))?;
        if !with_keys {
            return Ok(rows);
        }
        self.append_row_keys(rows, BinaryArray::from_iter_values(keys.iter()))
    }

    /// The rows as of now (at most `limit` of them), for a query to decode
    /// a batch at a time as it reads them: a stream's block keys, or a
    /// snapshot of the other tables' rows, which writes after it keep
    /// whole (see [`eddy_storage::snapshot`]) instead of a copy.
    pub fn chunks(&self, limit: Option<usize>) -> Result<Arc<dyn Chunks>> {
        if self.is_stream() {
            let keys = self
                .store
                .scan_keys(&self.prefix())
                .collect::<std::result::Result<Vec<_>, _>>()?;
            return Ok(Arc::new(StreamBlocks {
                schema: self.schema.clone(),
                store: self.store.clone(),
                keys,
            }));
        }
        let schema = self.schema.clone();
        let limit = limit.unwrap_or(usize::MAX);
        Ok(match &self.rows {
            Rows::Memory(memory) => {
                let snapshot = memory
                    .read()
                    .expect("table rows lock poisoned")
                    .snapshots
                    .take(Vec::new());
                let memory = memory.clone();
                Arc::new(EncodedRows {
                    schema,
                    limit,
                    next: move |n| {
                        let memory = memory.read().expect("table rows lock poisoned");
                        let rows = snapshot.read_map(&memory.rows, n);
                        Ok(rows.into_iter().map(|(_, value)| value).collect())
                    },
                })
            }
            Rows::Store => {
                let snapshot = self.store.snapshot(self.prefix());
                Arc::new(EncodedRows {
                    schema,
                    limit,
                    next: move |n| {
                        let rows = snapshot.next_rows(n)?;
                        Ok(rows.into_iter().map(|(_, value)| value).collect())
                    },
                })
            }
        })
    }

    /// Reads a stream's blocks; each row's key, when asked for, is its
    /// primary key (partition and offset) in the row format.
    fn read_stream(&self, with_keys: bool) -> Result<RecordBatch> {
        let mut blocks = Vec::new();
        for item in self.store.scan_blobs(&self.prefix()) {
            let (_, value) = item?;
            blocks.push(stream_blocks::decode_block(&self.schema, &value)?);
        }
        let rows = datafusion::arrow::compute::concat_batches(&self.schema, &blocks)?;
        if !with_keys {
            return Ok(rows);
        }
        let converter = self.key_converter.as_ref().ok_or_else(|| {
            CatalogError::Internal(format!("stream {} has no key", self.def.name))
        })?;
        let key_columns: Vec<ArrayRef> = self
            .def
            .primary_key
            .iter()
            .map(|&i| rows.column(i).clone())
            .collect();
        let keys = converter.convert_columns(&key_columns)?;
        self.append_row_keys(rows, BinaryArray::from_iter_values(keys.iter()))
    }

    /// `rows` with each row's stored key as a last binary column.
    fn append_row_keys(&self, rows: RecordBatch, keys: BinaryArray) -> Result<RecordBatch> {
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(keys));
        let options = datafusion::arrow::array::RecordBatchOptions::new()
            .with_row_count(Some(rows.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            with_row_key(&self.schema),
            columns,
            &options,
        )?)
    }

    /// Deletes the stored blocks of a stream with a retention whose newest
    /// record is older than it; returns how many. Views keep what they
    /// computed from them.
    pub fn expire(&self) -> Result<usize> {
        let Some(retention_ms) = self.def.kafka.as_ref().and_then(|k| k.retention_ms) else {
            return Ok(0);
        };
        if !self.is_stream() {
            return Ok(0);
        }
        let cutoff = now_micros().saturating_sub((retention_ms as i64).saturating_mul(1000));
        let prefix = self.prefix();
        let mut write = WriteBatch::new();
        let mut expired = 0;
        for key in self.store.scan_keys(&prefix) {
            let key = key?;
            if stream_blocks::block_newest(&prefix, &key).is_some_and(|newest| newest < cutoff) {
                write.delete_blob(key);
                expired += 1;
            }
        }
        self.store.commit(write)?;
        Ok(expired)
    }

    /// Inserts rows whose columns match the table's schema.
    pub fn insert(&self, batches: &[RecordBatch]) -> Result<WriteCount> {
        let _guard = self.write_lock.lock().expect("table write lock poisoned");
        let mut write = RowChanges::new();
        let mut changes = self.change_buffer();
        let mut new_keys = HashSet::new();
        let mut rows = 0;
        for batch in batches {
            let columns = self.check_columns(batch)?;
            rows += self.stage_inserts(
                &columns,
                &mut new_keys,
                &HashSet::new(),
                &mut write,
                &mut changes,
            )?;
        }
        self.commit(write, changes)?;
        Ok(WriteCount { rows })
    }

    /// Deletes the rows with the given storage keys.
    pub fn delete(&self, keys: &[Vec<u8>]) -> Result<WriteCount> {
        let _guard = self.write_lock.lock().expect("table write lock poisoned");
        let mut write = RowChanges::new();
        let mut changes = self.change_buffer();
        let unique: HashSet<&Vec<u8>> = keys.iter().collect();
        self.log_deleted(unique.iter().copied(), &mut changes)?;
        for key in &unique {
            write.push(((*key).clone(), None));
        }
        self.commit(write, changes)?;
        Ok(WriteCount {
            rows: unique.len() as u64,
        })
    }

    /// Replaces the rows with storage keys `keys` by the rows of `batches`,
    /// which has one row per key, in order.
    pub fn update(&self, keys: &[Vec<u8>], batches: &[RecordBatch]) -> Result<WriteCount> {
        let _guard = self.write_lock.lock().expect("table write lock poisoned");
        let mut write = RowChanges::new();
        let mut changes = self.change_buffer();
        let mut seen_old = HashSet::new();
        for key in keys {
            if !seen_old.insert(key.clone()) {
                return Err(CatalogError::RowUpdatedTwice);
            }
            write.push((key.clone(), None));
        }
        self.log_deleted(keys, &mut changes)?;
        let mut new_keys = HashSet::new();
        let mut rows = 0;
        for batch in batches {
            let columns = self.check_columns(batch)?;
            rows +=
                self.stage_inserts(&columns, &mut new_keys, &seen_old, &mut write, &mut changes)?;
        }
        self.commit(write, changes)?;
        Ok(WriteCount { rows })
    }

    /// Deletes every row.
    pub fn truncate(&self) -> Result<()> {
        let _guard = self.write_lock.lock().expect("table write lock poisoned");
        let mut changes = self.change_buffer();
        let (keys, values) = self.all_rows(true)?;
        if let Some(changes) = &mut changes {
            changes.extend(values.into_iter().map(|value| (-1, value)));
        }
        let write = keys.into_iter().map(|key| (key, None)).collect();
        self.commit(write, changes)
    }

    /// Stages rows ingested from a source, in order: each replaces the row
    /// with its primary key, or deletes it where `tombstone` is set.
    /// Returns the rows taken out and the rows put in; a row replaced by
    /// an equal one is in neither. A stream's rows are all put in, in the
    /// order of the blocks that store them, whose keys it returns too.
    pub fn stage_upserts(
        &self,
        batch: &RecordBatch,
        tombstone: &[bool],
        write: &mut WriteBatch,
    ) -> Result<Upserts> {
        let Some(converter) = &self.key_converter else {
            return Err(CatalogError::Internal(format!(
                "{} has no key to upsert by",
                self.def.name
            )));
        };
        let columns = self.check_columns(batch)?;
        let key_columns: Vec<ArrayRef> = self
            .def
            .primary_key
            .iter()
            .map(|&i| columns[i].clone())
            .collect();
        if self.is_stream() {
            // A stream's records are stored in blocks, by partition and
            // offset, which no stored record has: offsets commit with the
            // blocks, so a record is never absorbed twice. Every record is
            // new, but a null value, which a stream skips (as ksqlDB does).
            let added: Vec<u32> = (0..batch.num_rows())
                .filter(|&i| !tombstone.get(i).copied().unwrap_or(false))
                .map(|i| i as u32)
                .collect();
            let removed = RecordBatch::new_empty(self.schema.clone());
            let added = if added.len() == batch.num_rows() {
                RecordBatch::try_new(self.schema.clone(), columns)?
            } else {
                take_rows(&self.schema, &columns, added)?
            };
            let (blocks, added) =
                stream_blocks::stage_blocks(&self.prefix(), &added, now_micros(), write)?;
            return Ok(Upserts {
                removed,
                added,
                blocks,
            });
        }
        let keys = converter.convert_columns(&key_columns)?;
        let values = encode_rows(&columns)?;
        let mut touched: HashMap<Vec<u8>, Touched> = HashMap::new();
        let mut order = Vec::new();
        for (i, &deletes) in tombstone.iter().enumerate().take(batch.num_rows()) {
            let suffix = keys.row(i).as_ref().to_vec();
            let entry = match touched.entry(suffix) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    order.push(e.key().clone());
                    let stored = self.row(e.key())?;
                    e.insert((stored, None))
                }
            };
            entry.1 = (!deletes).then_some(i);
        }
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for suffix in order {
            let (stored, last) = touched.remove(&suffix).expect("touched key");
            let new_value = last.map(|i| &values[i]);
            if stored.as_ref() == new_value {
                continue;
            }
            let key = self.row_key(&suffix);
            match last {
                Some(i) => {
                    write.put(key, values[i].clone());
                    added.push(i as u32);
                }
                None => write.delete(key),
            }
            if let Some(old) = stored {
                removed.push(old);
            }
        }
        Ok(Upserts {
            removed: decode_batch(&self.schema, removed.iter().map(Vec::as_slice))?,
            added: take_rows(&self.schema, &columns, added)?,
            blocks: Vec::new(),
        })
    }

    /// Stages rows appended by Eddy itself (not a client), logging them for
    /// the views that read this table.
    pub fn stage_append(&self, batch: &RecordBatch, write: &mut WriteBatch) -> Result<bool> {
        if matches!(self.rows, Rows::Memory(_)) {
            return Err(CatalogError::Internal(format!(
                "{} takes rows from clients only",
                self.def.name
            )));
        }
        let columns = self.check_columns(batch)?;
        let mut changes = self.change_buffer();
        let mut rows = RowChanges::new();
        self.stage_inserts(
            &columns,
            &mut HashSet::new(),
            &HashSet::new(),
            &mut rows,
            &mut changes,
        )?;
        for (key, value) in rows {
            if let Some(value) = value {
                write.put(self.row_key(&key), value);
            }
        }
        Ok(match changes {
            Some(rows) if !rows.is_empty() => {
                self.changes.stage(write, self.def.id, &rows);
                true
            }
            _ => false,
        })
    }

    fn row_key(&self, suffix: &[u8]) -> Vec<u8> {
        let mut key = self.prefix();
        key.extend_from_slice(suffix);
        key
    }

    /// Checks NOT NULL and length limits, and pads `char(n)`; returns the
    /// columns to store.
    fn check_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        if batch.num_columns() != self.def.columns.len() {
            return Err(CatalogError::Internal(format!(
                "write to {} has {} columns, expected {}",
                self.def.name,
                batch.num_columns(),
                self.def.columns.len()
            )));
        }
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (column, def) in batch.columns().iter().zip(&self.def.columns) {
            let expected = def.column_type.to_arrow();
            let column = if column.data_type() == &expected {
                column.clone()
            } else {
                datafusion::arrow::compute::cast(column, &expected)?
            };
            if !def.nullable && column.null_count() > 0 {
                return Err(CatalogError::NotNullViolation {
                    table: self.def.name.clone(),
                    column: def.name.clone(),
                });
            }
            if def.column_type == ColumnType::Jsonb {
                check_json(&column)?;
            }
            columns.push(fit_to_length(column, &def.column_type)?);
        }
        Ok(columns)
    }

    /// Stages the rows of `columns` as inserts. A key may be reused only if
    /// it is in `freed` (deleted by the same statement).
    fn stage_inserts(
        &self,
        columns: &[ArrayRef],
        new_keys: &mut HashSet<Vec<u8>>,
        freed: &HashSet<Vec<u8>>,
        write: &mut RowChanges,
        changes: &mut Option<Vec<LoggedRow>>,
    ) -> Result<u64> {
        let values = encode_rows(columns)?;
        let num_rows = values.len();
        if let Some(changes) = changes {
            changes.extend(values.iter().map(|v| (1, v.clone())));
        }
        match &self.key_converter {
            Some(converter) => {
                let key_columns: Vec<ArrayRef> = self
                    .def
                    .primary_key
                    .iter()
                    .map(|&i| columns[i].clone())
                    .collect();
                let keys = converter.convert_columns(&key_columns)?;
                write.reserve(num_rows);
                for (i, value) in values.into_iter().enumerate() {
                    let suffix = keys.row(i).as_ref().to_vec();
                    let taken = !new_keys.insert(suffix.clone())
                        || (!freed.contains(&suffix) && self.has_row(&suffix)?);
                    if taken {
                        return Err(self.duplicate_key(&key_columns, i));
                    }
                    write.push((suffix, Some(value)));
                }
            }
            None => {
                let first = self
                    .next_row_id
                    .fetch_add(num_rows as u64, Ordering::SeqCst);
                write.extend(
                    values
                        .into_iter()
                        .enumerate()
                        .map(|(i, value)| ((first + i as u64).to_be_bytes().to_vec(), Some(value))),
                );
            }
        }
        Ok(num_rows as u64)
    }

    fn duplicate_key(&self, key_columns: &[ArrayRef], row: usize) -> CatalogError {
        let names: Vec<&str> = self
            .def
            .primary_key
            .iter()
            .map(|&i| self.def.columns[i].name.as_str())
            .collect();
        let options = FormatOptions::default();
        let values: Vec<String> = key_columns
            .iter()
            .map(|c| {
                ArrayFormatter::try_new(c.as_ref(), &options)
                    .map(|f| f.value(row).to_string())
                    .unwrap_or_default()
            })
            .collect();
        CatalogError::UniqueViolation {
            constraint: format!("{}_pkey", self.def.name),
            columns: names.join(", "),
            values: values.join(", "),
        }
    }
}

fn check_json(column: &ArrayRef) -> Result<()> {
    for text in column.as_string::<i32>().iter().flatten() {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            return Err(CatalogError::InvalidJson(e.to_string()));
        }
    }
    Ok(())
}

/// The wall clock, in microseconds since the epoch.
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Applies `changes` to `rows`, in order, keeping what the snapshots
/// being read need.
fn apply_rows(
    rows: &mut StateMap,
    snapshots: &Snapshots,
    changes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
) {
    let writing = snapshots.writing();
    let keep = writing.any();
    for (key, value) in changes {
        if keep {
            let current = || Ok::<_, std::convert::Infallible>(rows.get(&key).cloned());
            let Ok(()) = writing.before_change(&key, current);
        }
        match value {
            Some(value) => rows.insert(key, value),
            None => rows.remove(&key),
        };
    }
}

fn row_id_of(suffix: &[u8]) -> Option<u64> {
    suffix.try_into().ok().map(u64::from_be_bytes)
}

/// Checks a string column against `varchar(n)` / `char(n)`, padding `char(n)`
/// with blanks as Postgres does. Trailing blanks past the limit are dropped
/// rather than refused, also as Postgres does.
fn fit_to_length(column: ArrayRef, column_type: &ColumnType) -> Result<ArrayRef> {
    let Some(limit) = column_type.max_chars() else {
        return Ok(column);
    };
    let limit = limit as usize;
    let pad = matches!(column_type, ColumnType::Char(_));
    let strings = column.as_string::<i32>();
    let needs_work = strings.iter().flatten().any(|s| {
        let len = s.chars().count();
        len > limit || (pad && len < limit)
    });
    if !needs_work {
        return Ok(column);
    }
    let fitted: StringArray = strings
        .iter()
        .map(|value| {
            value
                .map(|s| {
                    let len = s.chars().count();
                    if len > limit {
                        let kept: String = s.chars().take(limit).collect();
                        if s.chars().skip(limit).all(|c| c == ' ') {
                            Ok(kept)
                        } else {
                            Err(CatalogError::StringTooLong {
                                type_name: column_type.to_string(),
                            })
                        }
                    } else if pad && len < limit {
                        Ok(format!("{s:<limit$}"))
                    } else {
                        Ok(s.to_owned())
                    }
                })
                .transpose()
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(fitted))
}

fn with_row_key(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(ROW_KEY_COLUMN, DataType::Binary, false));
    Arc::new(Schema::new(fields))
}

/// A scan of one in-memory batch, for table providers that read the store.
pub fn memory_scan(
    batch: RecordBatch,
    projection: Option<&Vec<usize>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = batch.schema();
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema,
        projection.cloned(),
    )?)
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        let index = self.def.columns.iter().position(|c| c.name == column)?;
        self.defaults[index].as_ref()
    }

    /// Filters that fix primary-key columns narrow the scan to key
    /// lookups; they are inexact, so DataFusion applies them again.
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

/// A table or view as a dataflow reads it: whole, with no filter pushed
/// into the scan, so that a view's plan keeps each filter once, above its
/// scan.
#[derive(Debug)]
pub struct WholeRelation(pub Arc<dyn TableProvider>);

#[async_trait]
impl TableProvider for WholeRelation {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.0.constraints()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.0.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.0.scan(state, projection, &[], limit).await
    }
}

/// A table seen with its hidden row-key column last. UPDATE and DELETE are
/// planned against it, so that their plans yield the key of each row to
/// change alongside its new values.
#[derive(Debug)]
pub struct RowKeyedTable {
    table: Arc<StoredTable>,
    schema: SchemaRef,
}

impl RowKeyedTable {
    pub fn new(table: Arc<StoredTable>) -> Self {
        let schema = with_row_key(&table.schema);
        RowKeyedTable { table, schema }
    }

    pub fn table(&self) -> &Arc<StoredTable> {
        &self.table
    }
}

#[async_trait]
impl TableProvider for RowKeyedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .table
            .read_all(true)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        memory_scan(batch, projection)
    }
}

/// Splits a batch planned against a [`RowKeyedTable`] into the row keys
/// (its last column) and the table's columns.
pub fn split_row_keys(batch: &RecordBatch) -> Result<(Vec<Vec<u8>>, RecordBatch)> {
    let last = batch
        .num_columns()
        .checked_sub(1)
        .ok_or_else(|| CatalogError::Internal("row-keyed batch has no columns".into()))?;
    let keys = batch
        .column(last)
        .as_binary_opt::<i32>()
        .ok_or_else(|| CatalogError::Internal("row key column is not binary".into()))?
        .iter()
        .map(|k| k.map(<[u8]>::to_vec))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| CatalogError::Internal("row key is null".into()))?;
    let mut rest = batch.clone();
    rest.remove_column(last);
    Ok((keys, rest))
}

/// The rows at `indices` of `columns`, as a batch of `schema`.
fn take_rows(schema: &SchemaRef, columns: &[ArrayRef], indices: Vec<u32>) -> Result<RecordBatch> {
    let indices = datafusion::arrow::array::UInt32Array::from(indices);
    let columns = columns
        .iter()
        .map(|c| datafusion::arrow::compute::take(c, &indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;

    use super::*;
    use crate::Catalog;

    fn def() -> TableDef {
        TableDef {
            owner: None,
            id: 0,
            name: "t".into(),
            columns: vec![
                ColumnDef {
                    nullable: false,
                    ..ColumnDef::nullable("k", ColumnType::BigInt)
                },
                ColumnDef::nullable("v", ColumnType::Text),
            ],
            primary_key: vec![0],
            kafka: None,
            generator: None,
            watermark: None,
            processing_time: None,
        }
    }

    fn batch(table: &StoredTable, keys: std::ops::Range<i64>, tag: &str) -> RecordBatch {
        let values: Vec<String> = keys.clone().map(|k| format!("{tag}{k}")).collect();
        RecordBatch::try_new(
            table.arrow_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(keys)),
                Arc::new(StringArray::from(values)),
            ],
        )
        .unwrap()
    }

    fn contents(table: &StoredTable) -> Vec<(i64, String)> {
        let rows = table.read_all(false).unwrap();
        let keys = rows
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let values = rows.column(1).as_string::<i32>();
        (0..rows.num_rows())
            .map(|i| (keys.value(i), values.value(i).to_owned()))
            .collect()
    }

    fn key_of(table: &StoredTable, k: i64) -> Vec<u8> {
        let converter = table.key_converter.as_ref().unwrap();
        let column: ArrayRef = Arc::new(Int64Array::from(vec![k]));
        converter
            .convert_columns(&[column])
            .unwrap()
            .row(0)
            .as_ref()
            .to_vec()
    }

    /// A table's large stored values are files; dropping it removes them.
    #[test]
    fn dropping_a_table_removes_its_value_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = || {
            std::fs::read_dir(dir.path().join("values"))
                .unwrap()
                .count()
        };
        let store = Store::open(dir.path()).unwrap();
        let catalog = Catalog::open(store).unwrap();
        let table = catalog.create_table(def(), false).unwrap().unwrap();
        // 8 MB: each of the state log's 64 parts gets more than 64 KiB.
        let tag = "y".repeat(400);
        table.insert(&[batch(&table, 0..20_000, &tag)]).unwrap();
        assert!(files() > 0, "an 8 MB write is stored in files");
        assert_eq!(contents(&table).len(), 20_000);
        assert!(catalog.drop_table("t").unwrap());
        assert_eq!(files(), 0);
    }

    #[test]
    fn local_rows_survive_a_reopen_through_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let store = Store::open(dir.path()).unwrap();
            let catalog = Catalog::open(store).unwrap();
            let table = catalog.create_table(def(), false).unwrap().unwrap();
            // Enough rewrites to compact the log several times.
            for round in 0..40 {
                let tag = format!("round {round} {} ", "x".repeat(64));
                if round > 0 {
                    table
                        .insert(&[batch(&table, 0..20_000, "new")])
                        .unwrap_err();
                }
                table.truncate().unwrap();
                table.insert(&[batch(&table, 0..20_000, &tag)]).unwrap();
            }
            let gone: Vec<Vec<u8>> = (0..10).map(|k| key_of(&table, k)).collect();
            table.delete(&gone).unwrap();
            let updated = vec![key_of(&table, 10)];
            table
                .update(&updated, &[batch(&table, 10..11, "updated")])
                .unwrap();
            contents(&table)
        };
        assert_eq!(expected.len(), 19_990);
        assert_eq!(expected[0], (10, "updated10".to_owned()));
        let store = Store::open(dir.path()).unwrap();
        let stored: usize = store
            .scan_blobs(&Keyspace::TableRows.key(&[]))
            .map(|item| item.unwrap().1.len())
            .sum();
        assert!(stored < 64 << 20, "{stored} bytes stored");
        let catalog = Catalog::open(store).unwrap();
        assert_eq!(contents(&catalog.table("t").unwrap()), expected);
    }

    fn rows_of(batches: impl Iterator<Item = Result<RecordBatch>>) -> Vec<(i64, String)> {
        let mut rows = Vec::new();
        for batch in batches {
            let batch = batch.unwrap();
            let keys = batch
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let values = batch.column(1).as_string::<i32>();
            rows.extend((0..batch.num_rows()).map(|i| (keys.value(i), values.value(i).to_owned())));
        }
        rows
    }

    /// A scan reads the rows as they were when it was planned, whatever
    /// is written while it reads, without copying them first.
    #[test]
    fn a_scan_reads_its_point_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(Store::open(dir.path()).unwrap()).unwrap();
        let table = catalog.create_table(def(), false).unwrap().unwrap();
        table.insert(&[batch(&table, 0..20_000, "a")]).unwrap();
        let point = contents(&table);
        let chunks = table.chunks(None).unwrap();
        let limited = table.chunks(Some(10_000)).unwrap();
        let mut batches = chunks.batches();
        let first = batches.next().unwrap();
        // Ahead of the scan and behind it: deletes, an update, inserts,
        // then every row gone.
        let gone: Vec<Vec<u8>> = (10_000..10_010)
            .chain(0..5)
            .map(|k| key_of(&table, k))
            .collect();
        table.delete(&gone).unwrap();
        table
            .update(
                &[key_of(&table, 15_000)],
                &[batch(&table, 15_000..15_001, "b")],
            )
            .unwrap();
        table.insert(&[batch(&table, 20_000..20_100, "c")]).unwrap();
        let mut rows = rows_of(std::iter::once(first));
        rows.extend(rows_of(batches.by_ref().take(1)));
        table.truncate().unwrap();
        rows.extend(rows_of(batches));
        assert_eq!(rows, point);
        assert_eq!(rows_of(limited.batches()), point[..10_000]);
        // A scan planned now sees the writes.
        table.insert(&[batch(&table, 7..9, "d")]).unwrap();
        let now = rows_of(table.chunks(None).unwrap().batches());
        assert_eq!(now, vec![(7, "d7".to_owned()), (8, "d8".to_owned())]);
    }

    #[test]
    fn a_failed_write_leaves_the_rows_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let catalog = Catalog::open(store.clone()).unwrap();
        let table = catalog.create_table(def(), false).unwrap().unwrap();
        table.insert(&[batch(&table, 0..100, "a")]).unwrap();
        let before = contents(&table);
        store.refuse_commits(2);
        assert!(table.truncate().is_err());
        assert!(table.insert(&[batch(&table, 100..200, "b")]).is_err());
        assert_eq!(contents(&table), before);
        // A duplicate key is refused before anything is written.
        assert!(matches!(
            table.insert(&[batch(&table, 99..101, "c")]),
            Err(CatalogError::UniqueViolation { .. })
        ));
        table.insert(&[batch(&table, 100..101, "d")]).unwrap();
        drop((table, catalog));
        let catalog = Catalog::open(store).unwrap();
        let after = contents(&catalog.table("t").unwrap());
        assert_eq!(after.len(), 101);
        assert_eq!(after[..100], before[..]);
    }
}
