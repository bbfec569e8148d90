//! `information_schema`, worded as Postgres words it: `tables`, `columns`,
//! `schemata` and `views`, built from the catalog when a query reads them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::Result;

use crate::{Catalog, ColumnType, DATABASE_NAME, SCHEMA_NAME};

const TABLES: [&str; 4] = ["tables", "columns", "schemata", "views"];

#[derive(Debug)]
pub struct InformationSchemaProvider {
    catalog: Arc<Catalog>,
}

impl InformationSchemaProvider {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        InformationSchemaProvider { catalog }
    }
}

fn text(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

fn int(values: Vec<Option<i32>>) -> ArrayRef {
    Arc::new(Int32Array::from(values))
}

fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, ty)| Field::new(*name, ty.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Postgres's `information_schema.columns.data_type` for a column type.
fn data_type_name(t: &ColumnType) -> &'static str {
    match t {
        ColumnType::Boolean => "boolean",
        ColumnType::SmallInt => "smallint",
        ColumnType::Int => "integer",
        ColumnType::BigInt => "bigint",
        ColumnType::Real => "real",
        ColumnType::Double => "double precision",
        ColumnType::Numeric { .. } => "numeric",
        ColumnType::Text => "text",
        ColumnType::Varchar(_) => "character varying",
        ColumnType::Char(_) => "character",
        ColumnType::Date => "date",
        ColumnType::Time => "time without time zone",
        ColumnType::Timestamp => "timestamp without time zone",
        ColumnType::TimestampTz => "timestamp with time zone",
        ColumnType::Interval => "interval",
        ColumnType::Bytea => "bytea",
        ColumnType::Jsonb => "jsonb",
    }
}

impl InformationSchemaProvider {
    fn build(&self, name: &str) -> Result<Option<RecordBatch>> {
        let tables: Vec<_> = self
            .catalog
            .table_names()
            .into_iter()
            .filter_map(|n| self.catalog.table(&n))
            .collect();
        let names_of = |f: &dyn Fn(&str) -> String| -> Vec<String> {
            tables.iter().map(|t| f(t.name())).collect()
        };
        let batch = match name {
            "tables" => RecordBatch::try_new(
                schema(&[
                    ("table_catalog", DataType::Utf8),
                    ("table_schema", DataType::Utf8),
                    ("table_name", DataType::Utf8),
                    ("table_type", DataType::Utf8),
                ]),
                vec![
                    text(names_of(&|_| DATABASE_NAME.to_owned())),
                    text(names_of(&|_| SCHEMA_NAME.to_owned())),
                    text(names_of(&|n| n.to_owned())),
                    text(names_of(&|_| "BASE TABLE".to_owned())),
                ],
            )?,
            "columns" => {
                let rows: Vec<_> = tables
                    .iter()
                    .flat_map(|t| {
                        t.def()
                            .columns
                            .iter()
                            .enumerate()
                            .map(move |(i, c)| (t.name().to_owned(), i, c.clone()))
                    })
                    .collect();
                let col = |f: &dyn Fn(&(String, usize, crate::ColumnDef)) -> String| {
                    text(rows.iter().map(f).collect())
                };
                let num = |f: &dyn Fn(&crate::ColumnDef) -> Option<i32>| {
                    int(rows.iter().map(|r| f(&r.2)).collect())
                };
                RecordBatch::try_new(
                    schema(&[
                        ("table_catalog", DataType::Utf8),
                        ("table_schema", DataType::Utf8),
                        ("table_name", DataType::Utf8),
                        ("column_name", DataType::Utf8),
                        ("ordinal_position", DataType::Int32),
                        ("column_default", DataType::Utf8),
                        ("is_nullable", DataType::Utf8),
                        ("data_type", DataType::Utf8),
                        ("character_maximum_length", DataType::Int32),
                        ("numeric_precision", DataType::Int32),
                        ("numeric_scale", DataType::Int32),
                    ]),
                    vec![
                        col(&|_| DATABASE_NAME.to_owned()),
                        col(&|_| SCHEMA_NAME.to_owned()),
                        col(&|r| r.0.clone()),
                        col(&|r| r.2.name.clone()),
                        int(rows.iter().map(|r| Some(r.1 as i32 + 1)).collect()),
                        Arc::new(StringArray::from(
                            rows.iter().map(|r| r.2.default.clone()).collect::<Vec<_>>(),
                        )),
                        col(&|r| if r.2.nullable { "YES" } else { "NO" }.to_owned()),
                        col(&|r| data_type_name(&r.2.column_type).to_owned()),
                        num(&|c| c.column_type.max_chars().map(|n| n as i32)),
                        num(&|c| match c.column_type {
                            ColumnType::SmallInt => Some(16),
                            ColumnType::Int => Some(32),
                            ColumnType::BigInt => Some(64),
                            ColumnType::Real => Some(24),
                            ColumnType::Double => Some(53),
                            ColumnType::Numeric { precision, .. } => Some(precision.into()),
                            _ => None,
                        }),
                        num(&|c| match c.column_type {
                            ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => Some(0),
                            ColumnType::Numeric { scale, .. } => Some(scale.into()),
                            _ => None,
                        }),
                    ],
                )?
            }
            "schemata" => {
                let schemas = ["information_schema", "pg_catalog", SCHEMA_NAME];
                RecordBatch::try_new(
                    schema(&[
                        ("catalog_name", DataType::Utf8),
                        ("schema_name", DataType::Utf8),
                    ]),
                    vec![
                        text(schemas.iter().map(|_| DATABASE_NAME.to_owned()).collect()),
                        text(schemas.iter().map(|s| (*s).to_owned()).collect()),
                    ],
                )?
            }
            "views" => RecordBatch::new_empty(schema(&[
                ("table_catalog", DataType::Utf8),
                ("table_schema", DataType::Utf8),
                ("table_name", DataType::Utf8),
                ("view_definition", DataType::Utf8),
            ])),
            _ => return Ok(None),
        };
        Ok(Some(batch))
    }
}

#[async_trait]
impl SchemaProvider for InformationSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| (*t).to_owned()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(batch) = self.build(name)? else {
            return Ok(None);
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
