//! Materialized views: their definition, and reading their stored rows.
//!
//! The dataflow runtime keeps each view's rows in the store, keyed by the
//! row in Arrow's row format with its multiplicity as the value. Queries
//! read them here.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use eddy_storage::{Keyspace, Store};
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

/// A materialized view as a relation queries read.
#[derive(Debug)]
pub struct StoredView {
    def: ViewDef,
    schema: SchemaRef,
    format: RowFormat,
    store: Store,
}

impl StoredView {
    pub(crate) fn new(def: ViewDef, store: Store) -> Result<Self> {
        let schema = def.arrow_schema()?;
        let format = RowFormat::for_schema(&schema)?;
        Ok(StoredView {
            def,
            schema,
            format,
            store,
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

    /// Reads every row of the view, as last committed.
    pub fn read_all(&self) -> Result<RecordBatch> {
        if let Some(error) = &self.def.error {
            return Err(CatalogError::ViewFailed {
                view: self.def.name.clone(),
                error: error.clone(),
            });
        }
        let prefix = Keyspace::ViewRows.object_prefix(self.def.id);
        let mut keys = Vec::new();
        let mut repeat = Vec::new();
        for item in self.store.scan_prefix(&prefix) {
            let (key, value) = item?;
            let count = value
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| CatalogError::Internal("view row count is damaged".into()))?;
            repeat.push(count.max(0) as u32);
            keys.push(key[prefix.len()..].to_vec());
        }
        let distinct = self.format.decode(keys.iter().map(Vec::as_slice))?;
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
