//! The catalog as a DataFusion schema provider.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;

use crate::table::{RowKeyedTable, WholeRelation};
use crate::{Catalog, PlainViewTable, Relation};

/// How tables are shown to DataFusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// As users see them.
    Query,
    /// With the hidden row-key column, for planning UPDATE and DELETE.
    RowKeyed,
    /// Read whole, for planning materialized views: no filter is pushed
    /// into a table's scan, so each stays once in the plan.
    Dataflow,
}

/// The `public` schema, backed by the catalog.
#[derive(Debug)]
pub struct EddySchemaProvider {
    catalog: Arc<Catalog>,
    mode: SchemaMode,
}

impl EddySchemaProvider {
    pub fn new(catalog: Arc<Catalog>, mode: SchemaMode) -> Self {
        EddySchemaProvider { catalog, mode }
    }

    /// A plain DataFusion context whose `public` schema is the catalog
    /// shown as `mode` says, for tests and benchmarks that plan SQL.
    pub fn context(catalog: Arc<Catalog>, mode: SchemaMode) -> SessionContext {
        let ctx = SessionContext::new();
        ctx.catalog("datafusion")
            .expect("the default catalog")
            .register_schema("public", Arc::new(EddySchemaProvider::new(catalog, mode)))
            .expect("a schema of that name may always be registered");
        ctx
    }
}

#[async_trait]
impl SchemaProvider for EddySchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.catalog.relation_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(view) = self.catalog.plain_view(name) {
            let table =
                PlainViewTable::new(&view).map_err(|e| DataFusionError::External(e.into()))?;
            return Ok(Some(Arc::new(table)));
        }
        Ok(self.catalog.relation(name).map(|r| match (r, self.mode) {
            (Relation::Table(t), SchemaMode::Query) => t as Arc<dyn TableProvider>,
            (Relation::Table(t), SchemaMode::RowKeyed) => {
                Arc::new(RowKeyedTable::new(t)) as Arc<dyn TableProvider>
            }
            (Relation::Table(t), SchemaMode::Dataflow) => {
                Arc::new(WholeRelation(t)) as Arc<dyn TableProvider>
            }
            (Relation::View(v), SchemaMode::Dataflow) => {
                Arc::new(WholeRelation(v)) as Arc<dyn TableProvider>
            }
            (Relation::View(v), _) => v as Arc<dyn TableProvider>,
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.relation(name).is_some() || self.catalog.plain_view(name).is_some()
    }
}
