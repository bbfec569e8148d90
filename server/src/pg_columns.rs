//! Declared column types and defaults in the Postgres catalog.
//! datafusion-pg-catalog derives `pg_attribute` from Arrow types, which
//! lose what a table declared: `varchar(20)` is text, `numeric(10,2)` is
//! numeric, and no column has a default. For Eddy's tables this fills in
//! `atttypid` and `atttypmod` from the declared type, `atthasdef`, and one
//! `pg_attrdef` row per default (its expression as SQL text, which
//! `pg_get_expr` returns), so psql's `\d` and ORMs show the table as it
//! was created.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int16Array, Int32Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Int16Type, Int32Type, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::datasource::TableProvider;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use eddy_catalog::{
    Catalog, ColumnDef, ColumnType, DEFAULT_NUMERIC_PRECISION, DEFAULT_NUMERIC_SCALE,
};

use crate::pg_catalog::{classes_and_namespaces, read_all, DerivedCatalog};
use crate::pg_keys::public_relation_oids;

/// Oids of `pg_attrdef` rows: past this base, by table and column.
const ATTRDEF_OID_BASE: i64 = 1_900_000_000;
const MAX_COLUMNS: i64 = 1_600;

/// The type oid and modifier Postgres records for a declared column type,
/// where they differ from what its Arrow type gives.
fn declared_type(column_type: &ColumnType) -> Option<(i32, i32)> {
    // A modifier holds its value plus VARHDRSZ (4), as in Postgres.
    match *column_type {
        ColumnType::Varchar(length) => Some((1043, length.map_or(-1, |n| n as i32 + 4))),
        ColumnType::Char(length) => Some((1042, length as i32 + 4)),
        ColumnType::Numeric { precision, scale } => {
            let plain = precision == DEFAULT_NUMERIC_PRECISION && scale == DEFAULT_NUMERIC_SCALE;
            let typmod = ((i32::from(precision) << 16) | i32::from(scale as u8)) + 4;
            Some((1700, if plain { -1 } else { typmod }))
        }
        ColumnType::TimestampTz => Some((1184, -1)),
        ColumnType::Jsonb | ColumnType::Map(..) => Some((3802, -1)),
        ColumnType::Struct(_) => Some((2249, -1)),
        _ => None,
    }
}

/// Eddy's tables' columns by relation oid.
fn declared_columns(
    classes: &RecordBatch,
    namespaces: &RecordBatch,
    catalog: &Catalog,
) -> HashMap<i32, Vec<ColumnDef>> {
    public_relation_oids(classes, namespaces)
        .into_iter()
        .filter_map(|(name, oid)| {
            let table = catalog.table(&name)?;
            Some((oid, table.def().columns.clone()))
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub enum ColumnCatalog {
    Attribute,
    Attrdef,
}

/// `pg_attribute` or `pg_attrdef`, with Eddy's declared types and defaults.
#[derive(Debug)]
pub struct ColumnCatalogTable {
    kind: ColumnCatalog,
    inner: Arc<dyn TableProvider>,
    pg_catalog: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
}

impl ColumnCatalogTable {
    pub fn new(
        kind: ColumnCatalog,
        inner: Arc<dyn TableProvider>,
        pg_catalog: Arc<dyn SchemaProvider>,
        catalog: Arc<Catalog>,
    ) -> Self {
        ColumnCatalogTable {
            kind,
            inner,
            pg_catalog,
            catalog,
        }
    }
}

#[async_trait]
impl DerivedCatalog for ColumnCatalogTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let batch = read_all(self.inner.as_ref(), state).await?;
        let Some((classes, namespaces)) =
            classes_and_namespaces(self.pg_catalog.as_ref(), state).await?
        else {
            return Ok(batch);
        };
        let columns = declared_columns(&classes, &namespaces, &self.catalog);
        let batch = match self.kind {
            ColumnCatalog::Attribute => with_declared_types(batch, &columns)?,
            ColumnCatalog::Attrdef => with_defaults(batch, &columns)?,
        };
        Ok(batch)
    }
}

fn with_declared_types(
    batch: RecordBatch,
    columns: &HashMap<i32, Vec<ColumnDef>>,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let (Ok(rel), Ok(num), Ok(typid), Ok(typmod), Ok(hasdef)) = (
        schema.index_of("attrelid"),
        schema.index_of("attnum"),
        schema.index_of("atttypid"),
        schema.index_of("atttypmod"),
        schema.index_of("atthasdef"),
    ) else {
        return Ok(batch);
    };
    let (Some(rels), Some(nums), Some(typids), Some(typmods), Some(hasdefs)) = (
        batch.column(rel).as_primitive_opt::<Int32Type>(),
        batch.column(num).as_primitive_opt::<Int16Type>(),
        batch.column(typid).as_primitive_opt::<Int32Type>(),
        batch.column(typmod).as_primitive_opt::<Int32Type>(),
        batch.column(hasdef).as_boolean_opt(),
    ) else {
        return Ok(batch);
    };
    let n = batch.num_rows();
    let (mut new_typids, mut new_typmods, mut new_hasdefs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in 0..n {
        let declared = columns
            .get(&rels.value(i))
            .zip(usize::try_from(nums.value(i) - 1).ok())
            .and_then(|(defs, index)| defs.get(index));
        let typed = declared.and_then(|c| declared_type(&c.column_type));
        new_typids.push(typed.map_or(typids.value(i), |(oid, _)| oid));
        new_typmods.push(typed.map_or(typmods.value(i), |(_, typmod)| typmod));
        new_hasdefs.push(declared.map_or(hasdefs.value(i), |c| c.default.is_some()));
    }
    let mut arrays = batch.columns().to_vec();
    arrays[typid] = Arc::new(Int32Array::from(new_typids));
    arrays[typmod] = Arc::new(Int32Array::from(new_typmods));
    arrays[hasdef] = Arc::new(BooleanArray::from(new_hasdefs));
    Ok(RecordBatch::try_new(schema, arrays)?)
}

fn with_defaults(
    batch: RecordBatch,
    columns: &HashMap<i32, Vec<ColumnDef>>,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names != ["oid", "adrelid", "adnum", "adbin"] {
        return Ok(batch);
    }
    let (mut oids, mut rels, mut nums, mut exprs) = (vec![], vec![], vec![], vec![]);
    for (&rel, defs) in columns {
        for (index, column) in defs.iter().enumerate() {
            let Some(default) = &column.default else {
                continue;
            };
            let oid = ATTRDEF_OID_BASE + (i64::from(rel) - 16_384) * MAX_COLUMNS + index as i64;
            let Ok(oid) = i32::try_from(oid) else {
                continue;
            };
            oids.push(oid);
            rels.push(rel);
            nums.push(index as i16 + 1);
            exprs.push(default.clone());
        }
    }
    let rows: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(oids)),
        Arc::new(Int32Array::from(rels)),
        Arc::new(Int16Array::from(nums)),
        Arc::new(StringArray::from(exprs)),
    ];
    let rows = RecordBatch::try_new(schema.clone(), rows)?;
    Ok(concat_batches(&schema, &[batch, rows])?)
}

/// `pg_get_expr(expr, relation [, pretty])`: Eddy keeps catalog
/// expressions (defaults) as SQL text, so the text is the expression.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgGetExpr {
    signature: Signature,
}

impl PgGetExpr {
    pub fn new() -> Self {
        use DataType::{Boolean, Int64, Utf8};
        let signatures = vec![
            TypeSignature::Exact(vec![Utf8, Int64]),
            TypeSignature::Exact(vec![Utf8, Int64, Boolean]),
        ];
        PgGetExpr {
            signature: Signature::one_of(signatures, Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for PgGetExpr {
    fn name(&self) -> &str {
        "pg_get_expr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(args.args[0].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_carry_postgres_modifiers() {
        assert_eq!(
            declared_type(&ColumnType::Varchar(Some(20))),
            Some((1043, 24))
        );
        assert_eq!(declared_type(&ColumnType::Varchar(None)), Some((1043, -1)));
        assert_eq!(declared_type(&ColumnType::Char(3)), Some((1042, 7)));
        let numeric = ColumnType::Numeric {
            precision: 10,
            scale: 2,
        };
        assert_eq!(declared_type(&numeric), Some((1700, (10 << 16 | 2) + 4)));
        let plain = ColumnType::Numeric {
            precision: DEFAULT_NUMERIC_PRECISION,
            scale: DEFAULT_NUMERIC_SCALE,
        };
        assert_eq!(declared_type(&plain), Some((1700, -1)));
        assert_eq!(declared_type(&ColumnType::Int), None);
    }
}
