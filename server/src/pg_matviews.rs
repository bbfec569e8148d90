//! Materialized views in the Postgres catalog. datafusion-pg-catalog knows
//! only tables and plain views, so Eddy wraps its `pg_catalog` schema:
//! `pg_class` reports materialized views with relkind `m` (which psql's
//! `\dm` and `\d` look for), and `pg_matviews` lists them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{collect, ExecutionPlan};
use eddy_catalog::{memory_scan, Catalog, SCHEMA_NAME};

/// `pg_catalog`, with materialized views filled in.
#[derive(Debug)]
pub struct PgCatalogWithViews {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
}

impl PgCatalogWithViews {
    pub fn new(inner: Arc<dyn SchemaProvider>, catalog: Arc<Catalog>) -> Self {
        PgCatalogWithViews { inner, catalog }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogWithViews {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match name {
            "pg_class" => Ok(self.inner.table(name).await?.map(|inner| {
                Arc::new(PgClass {
                    inner,
                    catalog: self.catalog.clone(),
                }) as Arc<dyn TableProvider>
            })),
            "pg_matviews" => Ok(Some(Arc::new(PgMatviews {
                catalog: self.catalog.clone(),
            }))),
            _ => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_class`, with relkind `m` for materialized views.
#[derive(Debug)]
struct PgClass {
    inner: Arc<dyn TableProvider>,
    catalog: Arc<Catalog>,
}

#[async_trait]
impl TableProvider for PgClass {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = collect(plan, state.task_ctx()).await?;
        let schema = self.inner.schema();
        let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
        let (Ok(name_index), Ok(kind_index)) =
            (schema.index_of("relname"), schema.index_of("relkind"))
        else {
            return memory_scan(batch, projection);
        };
        let views = self.catalog.view_names();
        let names = batch.column(name_index).as_string::<i32>();
        let kinds = batch.column(kind_index).as_string::<i32>();
        let relkind: StringArray = (0..batch.num_rows())
            .map(|i| {
                let kind = kinds.is_valid(i).then(|| kinds.value(i));
                match kind {
                    Some("v") if views.iter().any(|v| v == names.value(i)) => Some("m"),
                    other => other,
                }
            })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[kind_index] = Arc::new(relkind);
        memory_scan(RecordBatch::try_new(schema, columns)?, projection)
    }
}

/// `pg_matviews`: one row per materialized view.
#[derive(Debug)]
struct PgMatviews {
    catalog: Arc<Catalog>,
}

fn pg_matviews_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("schemaname", DataType::Utf8, true),
        Field::new("matviewname", DataType::Utf8, true),
        Field::new("matviewowner", DataType::Utf8, true),
        Field::new("tablespace", DataType::Utf8, true),
        Field::new("hasindexes", DataType::Boolean, true),
        Field::new("ispopulated", DataType::Boolean, true),
        Field::new("definition", DataType::Utf8, true),
    ]))
}

#[async_trait]
impl TableProvider for PgMatviews {
    fn schema(&self) -> SchemaRef {
        pg_matviews_schema()
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
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let views = self.catalog.views();
        let n = views.len();
        let text = |f: &dyn Fn(&eddy_catalog::ViewDef) -> Option<String>| -> Arc<dyn Array> {
            Arc::new(StringArray::from_iter(views.iter().map(|v| f(v.def()))))
        };
        let batch = RecordBatch::try_new(
            pg_matviews_schema(),
            vec![
                text(&|_| Some(SCHEMA_NAME.to_owned())),
                text(&|v| Some(v.name.clone())),
                text(&|_| Some("eddy".to_owned())),
                text(&|_| None),
                Arc::new(BooleanArray::from(vec![false; n])),
                Arc::new(BooleanArray::from_iter(
                    views.iter().map(|v| Some(v.def().error.is_none())),
                )),
                text(&|v| Some(format!(" {};", v.sql))),
            ],
        )
        .map_err(DataFusionError::from)?;
        memory_scan(batch, projection)
    }
}
