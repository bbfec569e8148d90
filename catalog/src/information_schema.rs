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

const TABLES: [&str; 6] = [
    "tables",
    "columns",
    "schemata",
    "views",
    "table_constraints",
    "key_column_usage",
];

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
        ColumnType::Jsonb | ColumnType::Map(..) => "jsonb",
        ColumnType::Array(_) => "ARRAY",
        // An anonymous composite; Postgres names composite types this way.
        ColumnType::Struct(_) => "USER-DEFINED",
    }
}

/// Postgres's `information_schema.columns.udt_name`: the type's name in
/// `pg_type` (`int4`, `_text` for `text[]`).
fn udt_name(t: &ColumnType) -> String {
    match t {
        ColumnType::Boolean => "bool".into(),
        ColumnType::SmallInt => "int2".into(),
        ColumnType::Int => "int4".into(),
        ColumnType::BigInt => "int8".into(),
        ColumnType::Real => "float4".into(),
        ColumnType::Double => "float8".into(),
        ColumnType::Numeric { .. } => "numeric".into(),
        ColumnType::Text => "text".into(),
        ColumnType::Varchar(_) => "varchar".into(),
        ColumnType::Char(_) => "bpchar".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => "time".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Interval => "interval".into(),
        ColumnType::Bytea => "bytea".into(),
        ColumnType::Jsonb | ColumnType::Map(..) => "jsonb".into(),
        ColumnType::Array(element) => match element.as_ref() {
            nested @ ColumnType::Array(_) => udt_name(nested),
            element => format!("_{}", udt_name(element)),
        },
        ColumnType::Struct(_) => "record".into(),
    }
}

/// Postgres's `information_schema.columns.data_type` for a view column's
/// Arrow type.
fn arrow_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Interval(_) | DataType::Duration(_) => "interval",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => "ARRAY",
        DataType::Map(..) => "jsonb",
        DataType::Struct(_) => "USER-DEFINED",
        _ => "text",
    }
}

/// One row of `information_schema.columns`.
struct ColumnRow {
    table: String,
    position: i32,
    name: String,
    default: Option<String>,
    nullable: bool,
    data_type: &'static str,
    udt_name: String,
    max_length: Option<i32>,
    precision: Option<i32>,
    scale: Option<i32>,
}

impl ColumnRow {
    fn of_table(table: &str, position: usize, c: &crate::ColumnDef) -> ColumnRow {
        ColumnRow {
            table: table.to_owned(),
            position: position as i32 + 1,
            name: c.name.clone(),
            default: c.default.clone(),
            nullable: c.nullable,
            data_type: data_type_name(&c.column_type),
            udt_name: udt_name(&c.column_type),
            max_length: c.column_type.max_chars().map(|n| n as i32),
            precision: match c.column_type {
                ColumnType::SmallInt => Some(16),
                ColumnType::Int => Some(32),
                ColumnType::BigInt => Some(64),
                ColumnType::Real => Some(24),
                ColumnType::Double => Some(53),
                ColumnType::Numeric { precision, .. } => Some(precision.into()),
                _ => None,
            },
            scale: match c.column_type {
                ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => Some(0),
                ColumnType::Numeric { scale, .. } => Some(scale.into()),
                _ => None,
            },
        }
    }

    fn of_view(view: &str, position: usize, name: &str, data_type: &DataType) -> ColumnRow {
        let (precision, scale) = match data_type {
            DataType::Int16 => (Some(16), Some(0)),
            DataType::Int32 => (Some(32), Some(0)),
            DataType::Int64 => (Some(64), Some(0)),
            DataType::Float32 => (Some(24), None),
            DataType::Float64 => (Some(53), None),
            DataType::Decimal128(p, s) => (Some(i32::from(*p)), Some(i32::from(*s))),
            _ => (None, None),
        };
        ColumnRow {
            table: view.to_owned(),
            position: position as i32 + 1,
            name: name.to_owned(),
            default: None,
            nullable: true,
            data_type: arrow_type_name(data_type),
            udt_name: ColumnType::from_arrow(data_type)
                .map_or_else(|| "text".into(), |t| udt_name(&t)),
            max_length: None,
            precision,
            scale,
        }
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
        let views = self.catalog.plain_views();
        let batch = match name {
            "tables" => {
                let rows: Vec<(String, &str)> = tables
                    .iter()
                    .map(|t| (t.name().to_owned(), "BASE TABLE"))
                    .chain(views.iter().map(|v| (v.name.clone(), "VIEW")))
                    .collect();
                RecordBatch::try_new(
                    schema(&[
                        ("table_catalog", DataType::Utf8),
                        ("table_schema", DataType::Utf8),
                        ("table_name", DataType::Utf8),
                        ("table_type", DataType::Utf8),
                    ]),
                    vec![
                        text(rows.iter().map(|_| DATABASE_NAME.to_owned()).collect()),
                        text(rows.iter().map(|_| SCHEMA_NAME.to_owned()).collect()),
                        text(rows.iter().map(|r| r.0.clone()).collect()),
                        text(rows.iter().map(|r| r.1.to_owned()).collect()),
                    ],
                )?
            }
            "columns" => {
                let mut rows: Vec<ColumnRow> = tables
                    .iter()
                    .flat_map(|t| {
                        t.def()
                            .columns
                            .iter()
                            .enumerate()
                            .map(move |(i, c)| ColumnRow::of_table(t.name(), i, c))
                    })
                    .collect();
                for view in &views {
                    let Ok(schema) = view.arrow_schema() else {
                        continue;
                    };
                    for (i, field) in schema.fields().iter().enumerate() {
                        rows.push(ColumnRow::of_view(
                            &view.name,
                            i,
                            field.name(),
                            field.data_type(),
                        ));
                    }
                }
                let col = |f: &dyn Fn(&ColumnRow) -> String| text(rows.iter().map(f).collect());
                let num = |f: &dyn Fn(&ColumnRow) -> Option<i32>| int(rows.iter().map(f).collect());
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
                        ("udt_catalog", DataType::Utf8),
                        ("udt_schema", DataType::Utf8),
                        ("udt_name", DataType::Utf8),
                        ("is_identity", DataType::Utf8),
                        ("is_generated", DataType::Utf8),
                    ]),
                    vec![
                        col(&|_| DATABASE_NAME.to_owned()),
                        col(&|_| SCHEMA_NAME.to_owned()),
                        col(&|r| r.table.clone()),
                        col(&|r| r.name.clone()),
                        num(&|r| Some(r.position)),
                        Arc::new(StringArray::from(
                            rows.iter().map(|r| r.default.clone()).collect::<Vec<_>>(),
                        )),
                        col(&|r| if r.nullable { "YES" } else { "NO" }.to_owned()),
                        col(&|r| r.data_type.to_owned()),
                        num(&|r| r.max_length),
                        num(&|r| r.precision),
                        num(&|r| r.scale),
                        col(&|_| DATABASE_NAME.to_owned()),
                        col(&|_| "pg_catalog".to_owned()),
                        col(&|r| r.udt_name.clone()),
                        col(&|_| "NO".to_owned()),
                        col(&|_| "NEVER".to_owned()),
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
            "views" => RecordBatch::try_new(
                schema(&[
                    ("table_catalog", DataType::Utf8),
                    ("table_schema", DataType::Utf8),
                    ("table_name", DataType::Utf8),
                    ("view_definition", DataType::Utf8),
                ]),
                vec![
                    text(views.iter().map(|_| DATABASE_NAME.to_owned()).collect()),
                    text(views.iter().map(|_| SCHEMA_NAME.to_owned()).collect()),
                    text(views.iter().map(|v| v.name.clone()).collect()),
                    text(views.iter().map(|v| format!(" {};", v.sql)).collect()),
                ],
            )?,
            "table_constraints" | "key_column_usage" => {
                // Each table's primary key, named `<table>_pkey` as Postgres
                // names it; streams have none.
                let keyed: Vec<_> = tables
                    .iter()
                    .filter(|t| !t.is_stream() && !t.def().primary_key.is_empty())
                    .collect();
                // One row per key (table_constraints) or per key column
                // (key_column_usage): (table, column, position in the key).
                let rows: Vec<(String, String, i32)> = if name == "table_constraints" {
                    keyed
                        .iter()
                        .map(|t| (t.name().to_owned(), String::new(), 0))
                        .collect()
                } else {
                    keyed
                        .iter()
                        .flat_map(|t| {
                            let def = t.def();
                            def.primary_key.iter().enumerate().map(move |(i, &c)| {
                                (
                                    t.name().to_owned(),
                                    def.columns[c].name.clone(),
                                    i as i32 + 1,
                                )
                            })
                        })
                        .collect()
                };
                let each = |f: &dyn Fn(&(String, String, i32)) -> String| {
                    text(rows.iter().map(f).collect())
                };
                let mut fields = vec![
                    ("constraint_catalog", DataType::Utf8),
                    ("constraint_schema", DataType::Utf8),
                    ("constraint_name", DataType::Utf8),
                    ("table_catalog", DataType::Utf8),
                    ("table_schema", DataType::Utf8),
                    ("table_name", DataType::Utf8),
                ];
                let mut columns = vec![
                    each(&|_| DATABASE_NAME.to_owned()),
                    each(&|_| SCHEMA_NAME.to_owned()),
                    each(&|r| format!("{}_pkey", r.0)),
                    each(&|_| DATABASE_NAME.to_owned()),
                    each(&|_| SCHEMA_NAME.to_owned()),
                    each(&|r| r.0.clone()),
                ];
                if name == "table_constraints" {
                    for (field, value) in [
                        ("constraint_type", "PRIMARY KEY"),
                        ("is_deferrable", "NO"),
                        ("initially_deferred", "NO"),
                        ("enforced", "YES"),
                    ] {
                        fields.push((field, DataType::Utf8));
                        columns.push(each(&|_| value.to_owned()));
                    }
                } else {
                    fields.extend([
                        ("column_name", DataType::Utf8),
                        ("ordinal_position", DataType::Int32),
                        ("position_in_unique_constraint", DataType::Int32),
                    ]);
                    columns.extend([
                        each(&|r| r.1.clone()),
                        int(rows.iter().map(|r| Some(r.2)).collect()),
                        int(rows.iter().map(|_| None).collect()),
                    ]);
                }
                RecordBatch::try_new(schema(&fields), columns)?
            }
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
