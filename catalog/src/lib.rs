//! Eddy's catalog: the definitions of tables (and, later, streams and views),
//! persisted in the store and exposed to DataFusion as a schema provider.
//!
//! The catalog owns each table's rows too: [`StoredTable`] reads them for
//! DataFusion scans and writes them, checking keys and constraints, for
//! INSERT, UPDATE and DELETE.

mod codec;
mod information_schema;
mod schema;
mod table;
mod types;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use eddy_storage::{Keyspace, StorageError, Store, WriteBatch};
use serde::{Deserialize, Serialize};

pub use codec::{is_storable, CodecError};
pub use information_schema::InformationSchemaProvider;
pub use schema::{EddySchemaProvider, SchemaMode};
pub use table::{
    split_row_keys, ColumnDef, RowKeyedTable, StoredTable, TableDef, WriteCount, ROW_KEY_COLUMN,
};
pub use types::{ColumnType, DEFAULT_NUMERIC_PRECISION, DEFAULT_NUMERIC_SCALE};

/// The one database and schema Eddy serves.
pub const DATABASE_NAME: &str = "eddy";
pub const SCHEMA_NAME: &str = "public";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    #[error("duplicate key value violates unique constraint \"{constraint}\": Key ({columns})=({values}) already exists.")]
    UniqueViolation {
        constraint: String,
        columns: String,
        values: String,
    },
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNullViolation { table: String, column: String },
    #[error("invalid input syntax for type json: {0}")]
    InvalidJson(String),
    #[error("value too long for type {type_name}")]
    StringTooLong { type_name: String },
    #[error("UPDATE changed the same row twice; make the FROM clause match each row once")]
    RowUpdatedTwice,
    #[error("invalid DEFAULT for column \"{column}\": {source}")]
    InvalidDefault {
        column: String,
        source: datafusion::error::DataFusionError,
    },
    #[error("catalog entry is damaged: {0}")]
    Damaged(#[from] serde_json::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// A catalog object as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum CatalogObject {
    Table(TableDef),
}

struct CatalogState {
    tables: BTreeMap<String, Arc<StoredTable>>,
    next_id: u64,
}

/// Every object Eddy knows, by name.
pub struct Catalog {
    store: Store,
    state: RwLock<CatalogState>,
    write_lock: Arc<Mutex<()>>,
    /// Plans DEFAULT expressions; holds no tables.
    expr_context: SessionContext,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// Loads the catalog from `store`.
    pub fn open(store: Store) -> Result<Arc<Self>> {
        let catalog = Catalog {
            store: store.clone(),
            state: RwLock::new(CatalogState {
                tables: BTreeMap::new(),
                next_id: 1,
            }),
            write_lock: Arc::new(Mutex::new(())),
            expr_context: SessionContext::new(),
        };
        let mut tables = BTreeMap::new();
        let mut next_id = 1;
        for item in store.scan_prefix(&[Keyspace::Catalog as u8]) {
            let (_, value) = item?;
            match serde_json::from_slice::<CatalogObject>(&value)? {
                CatalogObject::Table(def) => {
                    next_id = next_id.max(def.id + 1);
                    let table = catalog.build_table(def)?;
                    tables.insert(table.name().to_owned(), Arc::new(table));
                }
            }
        }
        {
            let mut state = catalog.state.write().expect("catalog lock poisoned");
            state.tables = tables;
            state.next_id = next_id;
        }
        Ok(Arc::new(catalog))
    }

    fn build_table(&self, def: TableDef) -> Result<StoredTable> {
        let defaults = def
            .columns
            .iter()
            .map(|c| {
                c.default
                    .as_deref()
                    .map(|sql| self.plan_default(&c.name, sql))
                    .transpose()
            })
            .collect::<Result<Vec<Option<Expr>>>>()?;
        StoredTable::new(def, defaults, self.store.clone(), self.write_lock.clone())
    }

    fn plan_default(&self, column: &str, sql: &str) -> Result<Expr> {
        self.expr_context
            .parse_sql_expr(sql, &DFSchema::empty())
            .map_err(|source| CatalogError::InvalidDefault {
                column: column.to_owned(),
                source,
            })
    }

    pub fn table(&self, name: &str) -> Option<Arc<StoredTable>> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .tables
            .get(name)
            .cloned()
    }

    pub fn table_names(&self) -> Vec<String> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .tables
            .keys()
            .cloned()
            .collect()
    }

    /// Creates a table. The id in `def` is ignored; a fresh one is assigned.
    /// Returns `Ok(None)` if the table exists and `if_not_exists` is set.
    pub fn create_table(
        &self,
        mut def: TableDef,
        if_not_exists: bool,
    ) -> Result<Option<Arc<StoredTable>>> {
        let mut state = self.state.write().expect("catalog lock poisoned");
        if state.tables.contains_key(&def.name) {
            return if if_not_exists {
                Ok(None)
            } else {
                Err(CatalogError::DuplicateTable(def.name))
            };
        }
        def.id = state.next_id;
        let table = Arc::new(self.build_table(def.clone())?);
        let mut batch = WriteBatch::new();
        batch.put(
            Keyspace::Catalog.object_prefix(def.id),
            serde_json::to_vec(&CatalogObject::Table(def.clone()))?,
        );
        self.store.commit(batch)?;
        state.next_id += 1;
        state.tables.insert(def.name, table.clone());
        Ok(Some(table))
    }

    /// Drops a table and its rows. Returns whether it existed.
    pub fn drop_table(&self, name: &str) -> Result<bool> {
        let mut state = self.state.write().expect("catalog lock poisoned");
        let Some(table) = state.tables.get(name).cloned() else {
            return Ok(false);
        };
        let _guard = self.write_lock.lock().expect("table write lock poisoned");
        let id = table.def().id;
        let mut batch = WriteBatch::new();
        batch.delete(Keyspace::Catalog.object_prefix(id));
        for item in self
            .store
            .scan_prefix(&Keyspace::TableRows.object_prefix(id))
        {
            batch.delete(item?.0);
        }
        self.store.commit(batch)?;
        state.tables.remove(name);
        Ok(true)
    }
}
