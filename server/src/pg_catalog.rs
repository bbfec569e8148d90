//! Eddy's layer over datafusion-pg-catalog's `pg_catalog` schema:
//! - `pg_class` reports materialized views with relkind `m` (which psql's
//!   `\dm` and `\d` look for), and `pg_matviews` lists them;
//! - information_schema's relations are views (relkind `v`), as in
//!   Postgres, and not visible: `pg_table_is_visible` is true only for
//!   relations on the search path (`public`, `pg_catalog`), so ORMs that
//!   list visible tables find only the user's;
//! - tables' primary keys appear as indexes and constraints (`pg_keys`);
//! - columns show their declared types and defaults (`pg_columns`).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    new_null_array, Array, AsArray, BooleanArray, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{create_udf, ColumnarValue, Expr, ScalarUDF, Volatility};
use datafusion::physical_plan::{collect, ExecutionPlan};
use eddy_catalog::{memory_scan, Catalog, SCHEMA_NAME};

use crate::pg_columns::{ColumnCatalog, ColumnCatalogTable};
use crate::pg_keys::{
    key_functions, primary_keys, public_relation_oids, remember, with_index_relations, KeyCatalog,
    KeyCatalogTable, KeyDefs,
};
use crate::pg_sizes::RelationOids;

/// The oids of relations off the search path, as `pg_class` last listed
/// them (datafusion-pg-catalog keeps a relation's oid for its lifetime).
type HiddenOids = Arc<RwLock<HashSet<i32>>>;

/// `pg_catalog`, with materialized views filled in.
#[derive(Debug)]
pub struct PgCatalogWithViews {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
    hidden: HiddenOids,
    keys: KeyDefs,
    relations: RelationOids,
}

impl PgCatalogWithViews {
    pub fn new(inner: Arc<dyn SchemaProvider>, catalog: Arc<Catalog>) -> Self {
        PgCatalogWithViews {
            inner,
            catalog,
            hidden: HiddenOids::default(),
            keys: KeyDefs::default(),
            relations: RelationOids::default(),
        }
    }

    /// The size functions, for the relations this catalog lists.
    pub fn size_functions(&self) -> Vec<ScalarUDF> {
        crate::pg_sizes::size_functions(&self.catalog, &self.relations)
    }

    /// `current_user`, `pg_get_userbyid` and the relations' ACLs.
    pub fn role_functions(&self) -> Vec<ScalarUDF> {
        crate::pg_roles::role_functions(&self.catalog, &self.relations)
    }

    /// The functions that describe the keys this catalog lists.
    pub fn key_functions(&self) -> [ScalarUDF; 2] {
        key_functions(&self.keys)
    }

    /// `pg_table_is_visible(oid)`, for relations `pg_class` lists.
    pub fn table_is_visible_udf(&self) -> ScalarUDF {
        let hidden = self.hidden.clone();
        let func = move |args: &[ColumnarValue]| -> Result<ColumnarValue> {
            let oids = ColumnarValue::values_to_arrays(args)?;
            let oids = oids[0].as_primitive::<Int64Type>();
            let hidden = hidden.read().unwrap_or_else(|e| e.into_inner());
            let visible: BooleanArray = oids
                .iter()
                .map(|oid| oid.map(|oid| !i32::try_from(oid).is_ok_and(|o| hidden.contains(&o))))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(visible)))
        };
        create_udf(
            "pg_table_is_visible",
            vec![DataType::Int64],
            DataType::Boolean,
            Volatility::Stable,
            Arc::new(func),
        )
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogWithViews {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let catalog = self.catalog.clone();
        match name {
            "pg_views" => return Ok(Derived::provider(PgViews { catalog })),
            "pg_matviews" => return Ok(Derived::provider(PgMatviews { catalog })),
            _ => {}
        }
        let Some(inner) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let pg_catalog = self.inner.clone();
        Ok(match name {
            "pg_class" => {
                let Some(namespaces) = self.inner.table("pg_namespace").await? else {
                    return Ok(None);
                };
                Derived::provider(PgClass {
                    inner,
                    namespaces,
                    catalog,
                    hidden: self.hidden.clone(),
                    keys: self.keys.clone(),
                    relations: self.relations.clone(),
                })
            }
            "pg_index" => Derived::provider(KeyCatalogTable::new(
                KeyCatalog::Index,
                inner,
                pg_catalog,
                catalog,
                self.keys.clone(),
            )),
            "pg_constraint" => Derived::provider(KeyCatalogTable::new(
                KeyCatalog::Constraint,
                inner,
                pg_catalog,
                catalog,
                self.keys.clone(),
            )),
            "pg_attribute" => Derived::provider(ColumnCatalogTable::new(
                ColumnCatalog::Attribute,
                inner,
                pg_catalog,
                catalog,
            )),
            "pg_attrdef" => Derived::provider(ColumnCatalogTable::new(
                ColumnCatalog::Attrdef,
                inner,
                pg_catalog,
                catalog,
            )),
            "pg_roles" | "pg_authid" | "pg_user" => {
                Derived::provider(crate::pg_roles::RolesTable {
                    inner,
                    catalog: catalog.clone(),
                    authid: name == "pg_authid",
                })
            }
            "pg_settings" => Derived::provider(PgSettings { inner }),
            "pg_tables" => Derived::provider(crate::pg_roles::TableOwners { inner, catalog }),
            _ => Some(inner),
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_class`, with relkind `m` for materialized views and `v` for
/// information_schema's relations.
#[derive(Debug)]
struct PgClass {
    inner: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    catalog: Arc<Catalog>,
    hidden: HiddenOids,
    keys: KeyDefs,
    relations: RelationOids,
}

/// `pg_class`'s schema with `reloptions` (a text array, NULL: Eddy's
/// relations take no storage options), which datafusion-pg-catalog lacks.
fn with_reloptions(schema: &SchemaRef) -> SchemaRef {
    if schema.index_of("reloptions").is_ok() {
        return schema.clone();
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let text = Arc::new(Field::new_list_field(DataType::Utf8, true));
    fields.push(Field::new("reloptions", DataType::List(text), true));
    Arc::new(Schema::new(fields))
}

/// A catalog relation whose rows Eddy derives, or amends from
/// datafusion-pg-catalog's: built whole on each scan (catalogs are small).
#[async_trait]
pub trait DerivedCatalog: std::fmt::Debug + Send + Sync {
    fn schema(&self) -> SchemaRef;
    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch>;
}

/// Serves a [`DerivedCatalog`] as a relation.
#[derive(Debug)]
pub struct Derived<T>(pub T);

impl<T: DerivedCatalog + 'static> Derived<T> {
    pub fn provider(inner: T) -> Option<Arc<dyn TableProvider>> {
        Some(Arc::new(Derived(inner)))
    }
}

#[async_trait]
impl<T: DerivedCatalog + 'static> TableProvider for Derived<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
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
        memory_scan(self.0.rows(state).await?, projection)
    }
}

/// `pg_class`'s and `pg_namespace`'s rows, read through `pg_catalog`.
pub async fn classes_and_namespaces(
    pg_catalog: &dyn SchemaProvider,
    state: &dyn Session,
) -> Result<Option<(RecordBatch, RecordBatch)>> {
    let (Some(classes), Some(namespaces)) = (
        pg_catalog.table("pg_class").await?,
        pg_catalog.table("pg_namespace").await?,
    ) else {
        return Ok(None);
    };
    Ok(Some((
        read_all(classes.as_ref(), state).await?,
        read_all(namespaces.as_ref(), state).await?,
    )))
}

/// Scans all of `table` into one batch.
pub async fn read_all(table: &dyn TableProvider, state: &dyn Session) -> Result<RecordBatch> {
    let plan = table.scan(state, None, &[], None).await?;
    let batches = collect(plan, state.task_ctx()).await?;
    Ok(datafusion::arrow::compute::concat_batches(
        &table.schema(),
        &batches,
    )?)
}

/// The oid of namespace `name` in `pg_namespace`'s rows.
pub fn namespace_oid(namespaces: &RecordBatch, name: &str) -> Option<i32> {
    let oids = namespaces
        .column_by_name("oid")?
        .as_primitive_opt::<Int32Type>()?;
    let names = namespaces
        .column_by_name("nspname")?
        .as_string_opt::<i32>()?;
    (0..namespaces.num_rows()).find_map(|i| (names.value(i) == name).then(|| oids.value(i)))
}

#[async_trait]
impl DerivedCatalog for PgClass {
    fn schema(&self) -> SchemaRef {
        with_reloptions(&self.inner.schema())
    }

    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let batch = read_all(self.inner.as_ref(), state).await?;
        let schema = batch.schema();
        let (Ok(oid_index), Ok(name_index), Ok(space_index), Ok(kind_index)) = (
            schema.index_of("oid"),
            schema.index_of("relname"),
            schema.index_of("relnamespace"),
            schema.index_of("relkind"),
        ) else {
            return Ok(batch);
        };
        let namespaces = read_all(self.namespaces.as_ref(), state).await?;
        let information_schema = namespace_oid(&namespaces, "information_schema");
        let views = self.catalog.view_names();
        let oids = batch.column(oid_index).as_primitive::<Int32Type>();
        let names = batch.column(name_index).as_string::<i32>();
        let spaces = batch.column(space_index).as_primitive::<Int32Type>();
        let kinds = batch.column(kind_index).as_string::<i32>();
        let mut hidden = HashSet::new();
        let relkind: StringArray = (0..batch.num_rows())
            .map(|i| {
                if spaces.is_valid(i) && Some(spaces.value(i)) == information_schema {
                    hidden.insert(oids.value(i));
                    return Some("v");
                }
                let kind = kinds.is_valid(i).then(|| kinds.value(i));
                match kind {
                    Some("v") if views.iter().any(|v| v == names.value(i)) => Some("m"),
                    other => other,
                }
            })
            .collect();
        *self.hidden.write().unwrap_or_else(|e| e.into_inner()) = hidden;
        *self.relations.write().unwrap_or_else(|e| e.into_inner()) =
            public_relation_oids(&batch, &namespaces)
                .into_iter()
                .map(|(name, oid)| (oid, name))
                .collect();
        let keys = primary_keys(&batch, &namespaces, &self.catalog);
        remember(&self.keys, &keys);
        let mut columns = batch.columns().to_vec();
        columns[kind_index] = Arc::new(relkind);
        if let Ok(owner_index) = schema.index_of("relowner") {
            let owners: datafusion::arrow::array::Int32Array = (0..batch.num_rows())
                .map(|i| {
                    let name = names.value(i);
                    let id = self
                        .catalog
                        .relation(name)
                        .map(|r| r.id())
                        .or_else(|| self.catalog.plain_view(name).map(|v| v.id));
                    let owner = id.and_then(|id| self.catalog.owner_of(id));
                    Some(owner.unwrap_or(eddy_catalog::roles::BOOTSTRAP_ROLE_OID) as i32)
                })
                .collect();
            columns[owner_index] = Arc::new(owners);
        }
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let batch = with_index_relations(batch, &keys)?;
        let mut columns = batch.columns().to_vec();
        let schema = with_reloptions(&schema);
        if columns.len() < schema.fields().len() {
            let field = schema.field(columns.len());
            columns.push(new_null_array(field.data_type(), batch.num_rows()));
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// `count` rows of `schema`, each column's value for row `i` from
/// `value(column, i)`, cast to the column's type; NULL where it gives none.
pub fn rows_by_column_name(
    schema: &SchemaRef,
    count: usize,
    value: impl Fn(&str, usize) -> Option<ScalarValue>,
) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let values = (0..count)
                .map(|i| match value(field.name(), i) {
                    Some(v) => v.cast_to(field.data_type()),
                    None => ScalarValue::try_from(field.data_type()),
                })
                .collect::<Result<Vec<_>>>()?;
            if values.is_empty() {
                return Ok(new_null_array(field.data_type(), 0));
            }
            ScalarValue::iter_to_array(values)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `pg_settings`: every setting Eddy knows, with its value in the session
/// that reads it and its server default.
#[derive(Debug)]
struct PgSettings {
    inner: Arc<dyn TableProvider>,
}

#[async_trait]
impl DerivedCatalog for PgSettings {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    async fn rows(&self, _state: &dyn Session) -> Result<RecordBatch> {
        let settings = crate::handler::set::settings();
        rows_by_column_name(&self.schema(), settings.len(), |column, i| {
            let setting = &settings[i];
            let text = |s: &str| Some(ScalarValue::Utf8(Some(s.to_owned())));
            match column {
                "name" => text(setting.name),
                "setting" => text(&setting.value),
                "reset_val" | "boot_val" => text(setting.default),
                "context" => text(if setting.writable { "user" } else { "internal" }),
                "vartype" => text("string"),
                "source" => text(if setting.from_session {
                    "session"
                } else {
                    "default"
                }),
                "pending_restart" => Some(ScalarValue::Boolean(Some(false))),
                _ => None,
            }
        })
    }
}

/// `pg_views`: one row per plain view.
#[derive(Debug)]
struct PgViews {
    catalog: Arc<Catalog>,
}

fn pg_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("schemaname", DataType::Utf8, true),
        Field::new("viewname", DataType::Utf8, true),
        Field::new("viewowner", DataType::Utf8, true),
        Field::new("definition", DataType::Utf8, true),
    ]))
}

#[async_trait]
impl DerivedCatalog for PgViews {
    fn schema(&self) -> SchemaRef {
        pg_views_schema()
    }

    async fn rows(&self, _state: &dyn Session) -> Result<RecordBatch> {
        let views = self.catalog.plain_views();
        let text = |f: &dyn Fn(&eddy_catalog::PlainViewDef) -> String| -> Arc<dyn Array> {
            Arc::new(StringArray::from_iter_values(views.iter().map(|v| f(v))))
        };
        Ok(RecordBatch::try_new(
            pg_views_schema(),
            vec![
                text(&|_| SCHEMA_NAME.to_owned()),
                text(&|v| v.name.clone()),
                text(&|v| {
                    let owner = v.owner.unwrap_or(eddy_catalog::roles::BOOTSTRAP_ROLE_OID);
                    self.catalog.roles().name_of(owner)
                }),
                text(&|v| format!(" {};", v.sql)),
            ],
        )?)
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
impl DerivedCatalog for PgMatviews {
    fn schema(&self) -> SchemaRef {
        pg_matviews_schema()
    }

    async fn rows(&self, _state: &dyn Session) -> Result<RecordBatch> {
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
                text(&|v| {
                    let owner = v.owner.unwrap_or(eddy_catalog::roles::BOOTSTRAP_ROLE_OID);
                    Some(self.catalog.roles().name_of(owner))
                }),
                text(&|_| None),
                Arc::new(BooleanArray::from(vec![false; n])),
                Arc::new(BooleanArray::from_iter(
                    views.iter().map(|v| Some(v.def().error.is_none())),
                )),
                text(&|v| Some(format!(" {};", v.sql))),
            ],
        )
        .map_err(DataFusionError::from)?;
        Ok(batch)
    }
}
