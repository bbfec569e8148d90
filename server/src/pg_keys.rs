//! Primary keys in the Postgres catalog. Each table with a primary key
//! gets what Postgres would make for it: an index relation `<table>_pkey`
//! in `pg_class`, its `pg_index` row and a `p` constraint in
//! `pg_constraint`, so psql's `\d`, SQLAlchemy's `get_pk_constraint` and
//! pgjdbc's `getPrimaryKeys` find the key. Key columns (`indkey`,
//! `conkey`) are `smallint` arrays, as in Postgres, so clients can unnest
//! them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int16Builder, ListBuilder, RecordBatch};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableProvider;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use eddy_catalog::{Catalog, SCHEMA_NAME};

use crate::pg_catalog::{classes_and_namespaces, namespace_oid, read_all, DerivedCatalog};

/// Oids of key indexes and constraints: the table's oid past these bases,
/// far above the oids datafusion-pg-catalog hands out.
const INDEX_OID_BASE: i32 = 1_000_000_000;
const CONSTRAINT_OID_BASE: i32 = 1_500_000_000;
/// `pg_am`'s btree.
const BTREE_AM_OID: i32 = 403;

/// A table's primary key, as the catalog shows it.
#[derive(Debug, Clone)]
pub struct PrimaryKey {
    table_oid: i32,
    namespace_oid: i32,
    table: String,
    /// 1-based column numbers, as `pg_attribute.attnum`.
    attnums: Vec<i16>,
    columns: Vec<String>,
}

/// The keys the catalog last listed, by index oid, for
/// `pg_get_indexdef` and `pg_get_constraintdef`.
pub type KeyDefs = Arc<RwLock<HashMap<i32, PrimaryKey>>>;

/// Records `keys` in `defs`.
pub fn remember(defs: &KeyDefs, keys: &[PrimaryKey]) {
    let mut defs = defs.write().unwrap_or_else(|e| e.into_inner());
    for key in keys {
        defs.insert(key.index_oid(), key.clone());
    }
}

impl PrimaryKey {
    fn index_oid(&self) -> i32 {
        INDEX_OID_BASE.saturating_add(self.table_oid)
    }

    fn constraint_oid(&self) -> i32 {
        CONSTRAINT_OID_BASE.saturating_add(self.table_oid)
    }

    fn name(&self) -> String {
        format!("{}_pkey", self.table)
    }
}

/// The oids of the relations in Eddy's schema, by name, as `classes`
/// (datafusion-pg-catalog's `pg_class` rows) gives them.
pub fn public_relation_oids(
    classes: &RecordBatch,
    namespaces: &RecordBatch,
) -> HashMap<String, i32> {
    let Some(public) = namespace_oid(namespaces, SCHEMA_NAME) else {
        return HashMap::new();
    };
    let (Some(oids), Some(names), Some(spaces)) = (
        classes.column_by_name("oid"),
        classes.column_by_name("relname"),
        classes.column_by_name("relnamespace"),
    ) else {
        return HashMap::new();
    };
    let (Some(oids), Some(names), Some(spaces)) = (
        oids.as_primitive_opt::<Int32Type>(),
        names.as_string_opt::<i32>(),
        spaces.as_primitive_opt::<Int32Type>(),
    ) else {
        return HashMap::new();
    };
    (0..classes.num_rows())
        .filter(|&i| names.is_valid(i) && spaces.value(i) == public)
        .map(|i| (names.value(i).to_owned(), oids.value(i)))
        .collect()
}

/// The primary keys of the catalog's tables (not streams), by the oids
/// that `classes` gives them.
pub fn primary_keys(
    classes: &RecordBatch,
    namespaces: &RecordBatch,
    catalog: &Catalog,
) -> Vec<PrimaryKey> {
    let Some(public) = namespace_oid(namespaces, SCHEMA_NAME) else {
        return vec![];
    };
    let oids = public_relation_oids(classes, namespaces);
    let mut keys = Vec::new();
    for name in catalog.table_names() {
        let (Some(table), Some(&table_oid)) = (catalog.table(&name), oids.get(&name)) else {
            continue;
        };
        let def = table.def();
        if table.is_stream() || def.primary_key.is_empty() {
            continue;
        }
        let attnums = def.primary_key.iter().map(|&c| c as i16 + 1).collect();
        let columns = def
            .primary_key
            .iter()
            .map(|&c| def.columns[c].name.clone())
            .collect();
        keys.push(PrimaryKey {
            table_oid,
            namespace_oid: public,
            table: name,
            attnums,
            columns,
        });
    }
    keys
}

/// `classes` with an index relation per key, and `relhasindex` set on
/// keyed tables.
pub fn with_index_relations(classes: RecordBatch, keys: &[PrimaryKey]) -> Result<RecordBatch> {
    if keys.is_empty() {
        return Ok(classes);
    }
    let Some(oids) = classes
        .column_by_name("oid")
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
    else {
        return Ok(classes);
    };
    let rows: Vec<u32> = keys
        .iter()
        .filter_map(|k| (0..oids.len()).find(|&i| oids.value(i) == k.table_oid))
        .map(|i| i as u32)
        .collect();
    if rows.len() != keys.len() {
        return Ok(classes);
    }
    let has_index: Vec<ScalarValue> = (0..oids.len())
        .map(|i| ScalarValue::Boolean(Some(keys.iter().any(|k| k.table_oid == oids.value(i)))))
        .collect();
    let classes = set(&classes, "relhasindex", has_index)?;
    let indexes = take_rows(&classes, &rows)?;
    let text = |f: &dyn Fn(&PrimaryKey) -> String| {
        keys.iter()
            .map(|k| ScalarValue::Utf8(Some(f(k))))
            .collect::<Vec<_>>()
    };
    let int = |f: &dyn Fn(&PrimaryKey) -> i32| {
        keys.iter()
            .map(|k| ScalarValue::Int32(Some(f(k))))
            .collect::<Vec<_>>()
    };
    let mut indexes = set(&indexes, "oid", int(&|k| k.index_oid()))?;
    indexes = set(&indexes, "relname", text(&|k| k.name()))?;
    indexes = set(&indexes, "relkind", text(&|_| "i".into()))?;
    indexes = set(&indexes, "relnatts", int(&|k| k.attnums.len() as i32))?;
    indexes = set(&indexes, "relam", int(&|_| BTREE_AM_OID))?;
    indexes = set(
        &indexes,
        "relhasindex",
        vec![ScalarValue::Boolean(Some(false)); keys.len()],
    )?;
    Ok(concat_batches(&classes.schema(), &[classes, indexes])?)
}

/// `pg_index` or `pg_constraint`, with key rows for Eddy's tables and key
/// columns as `smallint` arrays.
#[derive(Debug)]
pub struct KeyCatalogTable {
    kind: KeyCatalog,
    inner: Arc<dyn TableProvider>,
    pg_catalog: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
    defs: KeyDefs,
}

#[derive(Debug, Clone, Copy)]
pub enum KeyCatalog {
    Index,
    Constraint,
}

impl KeyCatalog {
    /// The array columns, which datafusion-pg-catalog holds as text.
    fn array_columns(self) -> &'static [&'static str] {
        match self {
            KeyCatalog::Index => &["indkey", "indcollation", "indclass", "indoption"],
            KeyCatalog::Constraint => &["conkey", "confkey"],
        }
    }
}

impl KeyCatalogTable {
    pub fn new(
        kind: KeyCatalog,
        inner: Arc<dyn TableProvider>,
        pg_catalog: Arc<dyn SchemaProvider>,
        catalog: Arc<Catalog>,
        defs: KeyDefs,
    ) -> Self {
        KeyCatalogTable {
            kind,
            inner,
            pg_catalog,
            catalog,
            defs,
        }
    }

    fn key_rows(&self, template: &RecordBatch, keys: &[PrimaryKey]) -> Result<RecordBatch> {
        let template = take_rows(template, &vec![0; keys.len()])?;
        let int = |f: &dyn Fn(&PrimaryKey) -> i64| -> Vec<ScalarValue> {
            keys.iter()
                .map(|k| ScalarValue::Int64(Some(f(k))))
                .collect()
        };
        let yes = vec![ScalarValue::Boolean(Some(true)); keys.len()];
        let text = |f: &dyn Fn(&PrimaryKey) -> String| -> Vec<ScalarValue> {
            keys.iter().map(|k| ScalarValue::Utf8(Some(f(k)))).collect()
        };
        let columns = keys.iter().map(|k| k.attnums.clone()).collect::<Vec<_>>();
        match self.kind {
            KeyCatalog::Index => {
                let mut rows = set(&template, "indexrelid", int(&|k| k.index_oid().into()))?;
                rows = set(&rows, "indrelid", int(&|k| k.table_oid.into()))?;
                rows = set(&rows, "indnatts", int(&|k| k.attnums.len() as i64))?;
                rows = set(&rows, "indnkeyatts", int(&|k| k.attnums.len() as i64))?;
                rows = set(&rows, "indisunique", yes.clone())?;
                rows = set(&rows, "indisprimary", yes)?;
                let zeros: Vec<Vec<i16>> = keys.iter().map(|k| vec![0; k.attnums.len()]).collect();
                rows = set_array(&rows, "indcollation", &zeros)?;
                rows = set_array(&rows, "indclass", &zeros)?;
                rows = set_array(&rows, "indoption", &zeros)?;
                set_array(&rows, "indkey", &columns)
            }
            KeyCatalog::Constraint => {
                let mut rows = set(&template, "oid", int(&|k| k.constraint_oid().into()))?;
                rows = set(&rows, "conname", text(&|k| k.name()))?;
                rows = set(&rows, "connamespace", int(&|k| k.namespace_oid.into()))?;
                rows = set(&rows, "contype", text(&|_| "p".into()))?;
                rows = set(&rows, "conrelid", int(&|k| k.table_oid.into()))?;
                rows = set(&rows, "conindid", int(&|k| k.index_oid().into()))?;
                set_array(&rows, "conkey", &columns)
            }
        }
    }
}

#[async_trait]
impl DerivedCatalog for KeyCatalogTable {
    fn schema(&self) -> SchemaRef {
        let inner = self.inner.schema();
        let fields: Vec<Field> = inner
            .fields()
            .iter()
            .map(|f| {
                if self.kind.array_columns().contains(&f.name().as_str()) {
                    Field::new(f.name(), int2_list_type(), true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let mut batch = read_all(self.inner.as_ref(), state).await?;
        for name in self.kind.array_columns() {
            batch = text_to_int2_lists(&batch, name)?;
        }
        let Some((classes, namespaces)) =
            classes_and_namespaces(self.pg_catalog.as_ref(), state).await?
        else {
            return Ok(batch);
        };
        let keys = primary_keys(&classes, &namespaces, &self.catalog);
        remember(&self.defs, &keys);
        let template = match self.kind {
            KeyCatalog::Index => Some(0),
            KeyCatalog::Constraint => batch
                .column_by_name("contype")
                .and_then(|c| c.as_string_opt::<i32>())
                .and_then(|kinds| (0..kinds.len()).find(|&i| kinds.value(i) == "p")),
        };
        let batch = match template {
            Some(row) if !keys.is_empty() && row < batch.num_rows() => {
                let template = batch.slice(row, 1);
                let rows = self.key_rows(&template, &keys)?;
                concat_batches(&batch.schema(), &[batch, rows])?
            }
            _ => batch,
        };
        let batch = RecordBatch::try_new(self.schema(), batch.columns().to_vec())?;
        Ok(batch)
    }
}

/// `pg_get_indexdef(oid [, column, pretty])` and
/// `pg_get_constraintdef(oid [, pretty])` for key indexes and constraints.
pub fn key_functions(defs: &KeyDefs) -> [ScalarUDF; 2] {
    [
        ScalarUDF::new_from_impl(KeyFunction::new("pg_get_indexdef", defs.clone())),
        ScalarUDF::new_from_impl(KeyFunction::new("pg_get_constraintdef", defs.clone())),
    ]
}

#[derive(Debug)]
struct KeyFunction {
    name: &'static str,
    signature: Signature,
    defs: KeyDefs,
}

impl PartialEq for KeyFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for KeyFunction {}

impl std::hash::Hash for KeyFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl KeyFunction {
    fn new(name: &'static str, defs: KeyDefs) -> Self {
        use DataType::{Boolean, Int64};
        let signatures = vec![
            TypeSignature::Exact(vec![Int64]),
            TypeSignature::Exact(vec![Int64, Boolean]),
            TypeSignature::Exact(vec![Int64, Int64, Boolean]),
        ];
        KeyFunction {
            name,
            signature: Signature::one_of(signatures, Volatility::Stable),
            defs,
        }
    }

    /// The definition of the key with index or constraint `oid`; with
    /// `column` above 0, that key column's name.
    fn definition(&self, oid: i64, column: i64) -> Option<String> {
        let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
        let index_oid = if self.name == "pg_get_indexdef" {
            oid
        } else {
            oid - i64::from(CONSTRAINT_OID_BASE) + i64::from(INDEX_OID_BASE)
        };
        let key = defs.get(&i32::try_from(index_oid).ok()?)?;
        let columns = key.columns.join(", ");
        if self.name == "pg_get_constraintdef" {
            return Some(format!("PRIMARY KEY ({columns})"));
        }
        match column {
            0 => Some(format!(
                "CREATE UNIQUE INDEX {} ON {SCHEMA_NAME}.{} USING btree ({columns})",
                key.name(),
                key.table
            )),
            n => key.columns.get(usize::try_from(n - 1).ok()?).cloned(),
        }
    }
}

impl ScalarUDFImpl for KeyFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let oid = ScalarValue::try_from_array(&arrays[0], row)?;
            let column = match (self.name, arrays.len()) {
                ("pg_get_indexdef", 3) => ScalarValue::try_from_array(&arrays[1], row)?,
                _ => ScalarValue::Int64(Some(0)),
            };
            out.push(match (oid, column) {
                (ScalarValue::Int64(Some(oid)), ScalarValue::Int64(Some(column))) => {
                    self.definition(oid, column)
                }
                _ => None,
            });
        }
        Ok(ColumnarValue::Array(Arc::new(
            datafusion::arrow::array::StringArray::from(out),
        )))
    }
}

fn int2_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int16, true)))
}

fn take_rows(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
    let indices = datafusion::arrow::array::UInt32Array::from(rows.to_vec());
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// `batch` with column `name` (if it has one) set to `values`, cast to its
/// type.
fn set(batch: &RecordBatch, name: &str, values: Vec<ScalarValue>) -> Result<RecordBatch> {
    let Ok(index) = batch.schema().index_of(name) else {
        return Ok(batch.clone());
    };
    let data_type = batch.schema().field(index).data_type().clone();
    let values = values
        .into_iter()
        .map(|v| v.cast_to(&data_type))
        .collect::<Result<Vec<_>>>()?;
    let array = match values.is_empty() {
        true => datafusion::arrow::array::new_empty_array(&data_type),
        false => ScalarValue::iter_to_array(values)?,
    };
    replace_column(batch, index, array)
}

fn set_array(batch: &RecordBatch, name: &str, lists: &[Vec<i16>]) -> Result<RecordBatch> {
    let Ok(index) = batch.schema().index_of(name) else {
        return Ok(batch.clone());
    };
    let mut builder = ListBuilder::new(Int16Builder::new());
    for list in lists {
        builder.values().append_slice(list);
        builder.append(true);
    }
    replace_column(batch, index, Arc::new(builder.finish()))
}

fn replace_column(batch: &RecordBatch, index: usize, array: ArrayRef) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns[index] = array;
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    // A type change (text to array) makes the column nullable, as in the
    // schema the table reports; a value change keeps its nullability.
    let changed = fields[index].data_type() != columns[index].data_type();
    fields[index] = fields[index]
        .clone()
        .with_data_type(columns[index].data_type().clone());
    if changed {
        fields[index] = fields[index].clone().with_nullable(true);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Column `name` of text such as `1 2`, `{1,2}` or `[1]` as `smallint`
/// arrays (oid vectors too: catalog oids fit).
fn text_to_int2_lists(batch: &RecordBatch, name: &str) -> Result<RecordBatch> {
    let Ok(index) = batch.schema().index_of(name) else {
        return Ok(batch.clone());
    };
    let Some(texts) = batch.column(index).as_string_opt::<i32>() else {
        return Ok(batch.clone());
    };
    let mut builder = ListBuilder::new(Int16Builder::new());
    for text in texts.iter() {
        match text {
            Some(text) => {
                for n in int2_list(text) {
                    builder.values().append_value(n);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    replace_column(batch, index, Arc::new(builder.finish()))
}

fn int2_list(text: &str) -> Vec<i16> {
    text.trim_matches(|c| matches!(c, '[' | ']' | '{' | '}'))
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_number_lists_parse_in_every_spelling() {
        assert_eq!(int2_list("1 2"), vec![1, 2]);
        assert_eq!(int2_list("{1,3}"), vec![1, 3]);
        assert_eq!(int2_list("[1]"), vec![1]);
        assert_eq!(int2_list(""), Vec::<i16>::new());
    }
}
