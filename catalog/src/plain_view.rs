//! Plain (non-materialized) views: a stored query, expanded into the
//! queries that read it, as in Postgres. Nothing is maintained for them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};

use crate::view::{columns_schema, ViewColumn};
use crate::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlainViewDef {
    pub id: u64,
    pub name: String,
    /// The defining query, as SQL text.
    pub sql: String,
    /// Its column names, which may rename the query's.
    pub columns: Vec<ViewColumn>,
    /// Ids of the tables and views the query reads, plain views included.
    pub depends_on: Vec<u64>,
    /// The oid of the role that created it; `None` for the bootstrap
    /// superuser (and for what predates roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
}

impl PlainViewDef {
    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        columns_schema(&self.name, &self.columns)
    }

    pub fn dependency_text(&self, kind: &str, name: &str) -> String {
        format!("view {} depends on {kind} {name}", self.name)
    }
}

/// A plain view as a relation: its columns, for the catalogs that list
/// them. Queries never scan it; the planner expands the view first.
#[derive(Debug)]
pub struct PlainViewTable {
    name: String,
    schema: SchemaRef,
}

impl PlainViewTable {
    pub fn new(def: &PlainViewDef) -> Result<Self> {
        Ok(PlainViewTable {
            name: def.name.clone(),
            schema: def.arrow_schema()?,
        })
    }
}

#[async_trait]
impl TableProvider for PlainViewTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        Err(DataFusionError::Internal(format!(
            "view {} was not expanded before planning",
            self.name
        )))
    }
}
