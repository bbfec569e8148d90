//! Materialized views: their definition, and reading their rows.
//!
//! The dataflow runtime keeps each view's rows in memory ([`ViewRows`]),
//! each row in Arrow's row format with its multiplicity, and changes them
//! at each epoch's commit; queries read them here. The store holds them in
//! the view's state log, from which a restart loads them.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};

use crate::row_format::RowFormat;
use crate::table::memory_scan;
use crate::{CatalogError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewColumn {
    pub name: String,
    /// The Arrow type, in Arrow's display form (parsed back by `FromStr`).
    pub data_type: String,
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
    /// The dataflow's shape; a restart checks it still plans the same way.
    pub fingerprint: String,
    /// Set when maintenance failed; the view then refuses reads.
    #[serde(default)]
    pub error: Option<String>,
    /// For a persistent query (`CREATE STREAM|TABLE ... AS SELECT`): the
    /// Kafka relation whose topic it writes. Its rows then go to that
    /// topic, not to the store.
    #[serde(default)]
    pub sink_relation: Option<u64>,
    /// Whether literals are typed as Postgres types them (`1.5` numeric,
    /// `1` integer), as in a query. Views made before this was so keep
    /// DataFusion's types, so that they still plan the same way.
    #[serde(default)]
    pub postgres_literals: bool,
}

impl ViewDef {
    /// Whether this is a persistent query writing a topic.
    pub fn is_query(&self) -> bool {
        self.sink_relation.is_some()
    }

    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        let fields = self
            .columns
            .iter()
            .map(|c| {
                let data_type = DataType::from_str(&c.data_type).map_err(|e| {
                    CatalogError::Internal(format!("view {} column {}: {e}", self.name, c.name))
                })?;
                Ok(Field::new(&c.name, data_type, true))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// A view's rows as of the last committed epoch, shared by the runtime,
/// which changes them as each epoch commits, and the queries that read
/// them: each row in the row format, with its multiplicity.
#[derive(Debug, Default)]
pub struct ViewRows {
    rows: RwLock<HashMap<Box<[u8]>, i64>>,
}

impl ViewRows {
    /// Runs `f` over the rows, with writers held off.
    pub fn read<R>(&self, f: impl FnOnce(&HashMap<Box<[u8]>, i64>) -> R) -> R {
        f(&self.rows.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Adds `changes` (row, weight) to the rows; a row whose
    /// multiplicity reaches zero is gone.
    pub fn apply(&self, changes: impl IntoIterator<Item = (Box<[u8]>, i64)>) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        for (row, weight) in changes {
            match rows.entry(row) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    *e.get_mut() += weight;
                    if *e.get() <= 0 {
                        e.remove();
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    if weight > 0 {
                        e.insert(weight);
                    }
                }
            }
        }
    }

    /// Replaces every row.
    pub fn replace(&self, rows: HashMap<Box<[u8]>, i64>) {
        *self.rows.write().unwrap_or_else(|e| e.into_inner()) = rows;
    }
}

/// A materialized view as a relation queries read.
#[derive(Debug)]
pub struct StoredView {
    def: ViewDef,
    schema: SchemaRef,
    format: RowFormat,
    rows: Arc<ViewRows>,
}

impl StoredView {
    pub(crate) fn new(def: ViewDef, rows: Arc<ViewRows>) -> Result<Self> {
        let schema = def.arrow_schema()?;
        let format = RowFormat::for_schema(&schema)?;
        Ok(StoredView {
            def,
            schema,
            format,
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

    /// Reads every row of the view, as of the last committed epoch.
    pub fn read_all(&self) -> Result<RecordBatch> {
        if let Some(error) = &self.def.error {
            return Err(CatalogError::ViewFailed {
                view: self.def.name.clone(),
                error: error.clone(),
            });
        }
        let (distinct, repeat) = self.rows.read(|rows| {
            let repeat: Vec<u32> = rows.values().map(|&n| n.max(0) as u32).collect();
            (self.format.decode(rows.keys().map(|k| &k[..])), repeat)
        });
        let distinct = distinct?;
        let indices: UInt32Array = repeat
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(i as u32, n as usize))
            .collect();
        let columns = distinct
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

#[async_trait]
impl TableProvider for StoredView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .read_all()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        memory_scan(batch, projection)
    }
}
