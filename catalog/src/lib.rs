//! Eddy's catalog: the definitions of tables (and, later, streams and views),
//! persisted in the store and exposed to DataFusion as a schema provider.
//!
//! The catalog owns each table's rows too: [`StoredTable`] reads them for
//! DataFusion scans and writes them, checking keys and constraints, for
//! INSERT, UPDATE and DELETE.

mod changelog;
pub mod chunked_scan;
mod codec;
pub mod floats;
pub mod generator;
mod information_schema;
pub mod kafka;
pub mod key_lookup;
mod plain_view;
pub mod roles;
mod row_format;
mod schema;
pub mod stream_blocks;
mod table;
mod types;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use eddy_storage::{Keyspace, StorageError, Store, WriteBatch};
use serde::{Deserialize, Serialize};

pub use changelog::{ChangeLog, LogEntry, ABSORBED_SEQ_KEY};
pub use codec::{column_types, is_storable, CodecError};
pub use information_schema::InformationSchemaProvider;
pub use plain_view::{PlainViewDef, PlainViewTable};
pub use row_format::{EncodedRows, RowFormat};
pub use schema::{EddySchemaProvider, SchemaMode};
pub use table::{
    dead_letters_def, memory_scan, pseudo_columns, split_row_keys, ColumnDef, RowKeyedTable,
    StoredTable, TableDef, Upserts, WatermarkDef, WholeRelation, WriteCount, ROW_KEY_COLUMN,
};
pub use types::{
    as_jsonb, is_jsonb, ksql_field_name, map_type, ColumnType, StructField,
    DEFAULT_NUMERIC_PRECISION, DEFAULT_NUMERIC_SCALE, PG_TYPE_KEY,
};
pub use view::{
    view_key_format, RowChange, RowChanges, RowCounts, SharedRow, StoredView, ViewColumn, ViewDef,
    ViewRows,
};

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
    #[error("cannot {action} {kind} {name} because other objects depend on it")]
    DependentObjects {
        /// `drop`, or `replace` for CREATE OR REPLACE.
        action: &'static str,
        kind: &'static str,
        name: String,
        /// Each dependent, as "materialized view v depends on table t".
        detail: String,
    },
    #[error("role \"{0}\" already exists")]
    DuplicateRole(String),
    #[error("role \"{0}\" does not exist")]
    UndefinedRole(String),
    #[error("role \"{name}\" cannot be dropped because some objects depend on it")]
    RoleDependents { name: String, detail: String },
    #[error("materialized view \"{view}\" is not maintained since an error: {error}")]
    ViewFailed { view: String, error: String },
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
    View(ViewDef),
    PlainView(PlainViewDef),
}

struct CatalogState {
    tables: BTreeMap<String, Arc<StoredTable>>,
    views: BTreeMap<String, Arc<StoredView>>,
    /// Persistent queries, by query id; they are not relations.
    queries: BTreeMap<String, Arc<StoredView>>,
    plain_views: BTreeMap<String, Arc<PlainViewDef>>,
    next_id: u64,
}

impl CatalogState {
    fn name_taken(&self, name: &str) -> bool {
        self.tables.contains_key(name)
            || self.views.contains_key(name)
            || self.plain_views.contains_key(name)
    }

    /// The plain views that read object `id` directly, oldest first.
    fn plain_dependents_of(&self, id: u64) -> Vec<Arc<PlainViewDef>> {
        let mut dependents: Vec<Arc<PlainViewDef>> = self
            .plain_views
            .values()
            .filter(|v| v.depends_on.contains(&id))
            .cloned()
            .collect();
        dependents.sort_by_key(|v| v.id);
        dependents
    }

    /// The map a view or query definition belongs in.
    fn map_for(&mut self, def: &ViewDef) -> &mut BTreeMap<String, Arc<StoredView>> {
        if def.is_query() {
            &mut self.queries
        } else {
            &mut self.views
        }
    }

    /// The views and persistent queries that read object `id` directly,
    /// oldest first.
    fn dependents_of(&self, id: u64) -> Vec<Arc<StoredView>> {
        let mut dependents: Vec<Arc<StoredView>> = self
            .views
            .values()
            .chain(self.queries.values())
            .filter(|v| v.def().depends_on.contains(&id) || v.def().plain_views.contains(&id))
            .cloned()
            .collect();
        dependents.sort_by_key(|v| v.def().id);
        dependents
    }

    fn by_id(&self, id: u64) -> Option<&Arc<StoredView>> {
        self.views
            .values()
            .chain(self.queries.values())
            .find(|v| v.def().id == id)
    }
}

/// A relation a query can read, by kind.
#[derive(Debug, Clone)]
pub enum Relation {
    Table(Arc<StoredTable>),
    View(Arc<StoredView>),
}

impl Relation {
    pub fn id(&self) -> u64 {
        match self {
            Relation::Table(t) => t.def().id,
            Relation::View(v) => v.def().id,
        }
    }

    /// The columns that identify a row (a table's primary key, a view's
    /// GROUP BY columns), by name; none if rows have no key.
    pub fn key_column_names(&self) -> Vec<&str> {
        match self {
            Relation::Table(t) => t.key_column_names(),
            Relation::View(v) => v.key_column_names(),
        }
    }

    /// The rows whose key is one of `keys`, in the relation's schema; `None`
    /// when they cannot be read by key.
    pub fn read_keys(
        &self,
        keys: &[Vec<datafusion::common::ScalarValue>],
    ) -> Result<Option<datafusion::arrow::array::RecordBatch>> {
        match self {
            Relation::Table(t) => t.read_keys(keys),
            Relation::View(v) => v.read_keys(keys),
        }
    }
}

/// Every object Eddy knows, by name.
pub struct Catalog {
    store: Store,
    state: RwLock<CatalogState>,
    write_lock: Arc<Mutex<()>>,
    changes: Arc<ChangeLog>,
    /// Each view's rows in memory, by view id.
    view_rows: Mutex<HashMap<u64, Arc<ViewRows>>>,
    /// Plans DEFAULT expressions; holds no tables.
    expr_context: SessionContext,
    /// Roles and grants; loaded once the objects are.
    roles: std::sync::OnceLock<roles::Roles>,
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
                views: BTreeMap::new(),
                queries: BTreeMap::new(),
                plain_views: BTreeMap::new(),
                next_id: 1,
            }),
            write_lock: Arc::new(Mutex::new(())),
            changes: Arc::new(ChangeLog::open(&store)?),
            view_rows: Mutex::default(),
            expr_context: SessionContext::new(),
            roles: std::sync::OnceLock::new(),
        };
        let mut tables = BTreeMap::new();
        let mut views = BTreeMap::new();
        let mut queries = BTreeMap::new();
        let mut plain_views = BTreeMap::new();
        let mut next_id = 1;
        for item in store.scan_prefix(&[Keyspace::Catalog as u8]) {
            let (_, value) = item?;
            match serde_json::from_slice::<CatalogObject>(&value)? {
                CatalogObject::Table(def) => {
                    next_id = next_id.max(def.id + 1);
                    let table = catalog.build_table(def)?;
                    tables.insert(table.name().to_owned(), Arc::new(table));
                }
                CatalogObject::View(def) => {
                    next_id = next_id.max(def.id + 1);
                    let map = if def.is_query() {
                        &mut queries
                    } else {
                        &mut views
                    };
                    let rows = catalog.view_rows(def.id);
                    let view = StoredView::new(def, rows)?;
                    map.insert(view.name().to_owned(), Arc::new(view));
                }
                CatalogObject::PlainView(def) => {
                    next_id = next_id.max(def.id + 1);
                    plain_views.insert(def.name.clone(), Arc::new(def));
                }
            }
        }
        for view in views.values().chain(queries.values()) {
            for id in &view.def().depends_on {
                if let Some(table) = tables.values().find(|t| t.def().id == *id) {
                    table.add_dependent();
                }
            }
        }
        {
            let mut state = catalog.state.write().expect("catalog lock poisoned");
            state.tables = tables;
            state.views = views;
            state.queries = queries;
            state.plain_views = plain_views;
            state.next_id = next_id;
        }
        let objects = catalog.object_ids();
        let roles = roles::Roles::open(store, &objects)?;
        let _ = catalog.roles.set(roles);
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
        StoredTable::new(
            def,
            defaults,
            self.store.clone(),
            self.write_lock.clone(),
            self.changes.clone(),
        )
    }

    /// Roles and what they were granted.
    pub fn roles(&self) -> &roles::Roles {
        self.roles
            .get()
            .expect("roles are loaded when the catalog opens")
    }

    /// The ids of every table, view, query and plain view.
    fn object_ids(&self) -> std::collections::HashSet<u64> {
        let state = self.state.read().expect("catalog lock poisoned");
        state
            .tables
            .values()
            .map(|t| t.def().id)
            .chain(state.views.values().map(|v| v.def().id))
            .chain(state.queries.values().map(|v| v.def().id))
            .chain(state.plain_views.values().map(|v| v.id))
            .collect()
    }

    /// The owner of object `id` (a table, view, query or plain view), if it
    /// exists: the role that created it.
    pub fn owner_of(&self, id: u64) -> Option<u32> {
        let state = self.state.read().expect("catalog lock poisoned");
        let owner = |o: Option<u32>| o.unwrap_or(roles::BOOTSTRAP_ROLE_OID);
        if let Some(t) = state.tables.values().find(|t| t.def().id == id) {
            return Some(owner(t.def().owner));
        }
        if let Some(v) = state.by_id(id) {
            return Some(owner(v.def().owner));
        }
        state
            .plain_views
            .values()
            .find(|v| v.id == id)
            .map(|v| owner(v.owner))
    }

    /// The names of the objects role `oid` owns, as "table t".
    pub fn owned_by(&self, oid: u32) -> Vec<String> {
        let state = self.state.read().expect("catalog lock poisoned");
        let owns = |o: Option<u32>| o.unwrap_or(roles::BOOTSTRAP_ROLE_OID) == oid;
        let mut owned: Vec<String> = state
            .tables
            .values()
            .filter(|t| owns(t.def().owner))
            .map(|t| {
                format!(
                    "owner of {} {}",
                    if t.is_stream() { "stream" } else { "table" },
                    t.name()
                )
            })
            .collect();
        owned.extend(
            state
                .views
                .values()
                .filter(|v| owns(v.def().owner))
                .map(|v| format!("owner of materialized view {}", v.name())),
        );
        owned.extend(
            state
                .queries
                .values()
                .filter(|v| owns(v.def().owner))
                .map(|v| format!("owner of query {}", v.name())),
        );
        owned.extend(
            state
                .plain_views
                .values()
                .filter(|v| owns(v.owner))
                .map(|v| format!("owner of view {}", v.name)),
        );
        owned
    }

    /// The change log of local tables.
    pub fn changes(&self) -> &Arc<ChangeLog> {
        &self.changes
    }

    /// Holds off every table write while the guard lives.
    pub fn lock_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().expect("table write lock poisoned")
    }

    pub fn store(&self) -> &Store {
        &self.store
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

    pub fn view(&self, name: &str) -> Option<Arc<StoredView>> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .views
            .get(name)
            .cloned()
    }

    /// Bytes the store holds for relation `name`: a table's or stream's
    /// rows, a materialized view's state log (its rows and its operators'
    /// state) and outbox; a plain view holds none. `None` if there is no
    /// such relation.
    pub fn relation_bytes(&self, name: &str) -> Result<Option<u64>> {
        let under =
            |keyspace: Keyspace, id: u64| self.store.bytes_under(&keyspace.object_prefix(id));
        Ok(match self.relation(name) {
            Some(Relation::Table(table)) => Some(under(Keyspace::TableRows, table.def().id)?),
            Some(Relation::View(view)) => {
                let id = view.def().id;
                Some(under(Keyspace::OperatorState, id)? + under(Keyspace::Outbox, id)?)
            }
            None => self.plain_view(name).map(|_| 0),
        })
    }

    /// The table or view called `name`.
    pub fn relation(&self, name: &str) -> Option<Relation> {
        let state = self.state.read().expect("catalog lock poisoned");
        if let Some(t) = state.tables.get(name) {
            return Some(Relation::Table(t.clone()));
        }
        state.views.get(name).map(|v| Relation::View(v.clone()))
    }

    /// Marks the tables among `ids` as read by a dataflow outside the
    /// catalog (a push query), so their writes log changes, until the
    /// guard drops.
    pub fn read_guard(&self, ids: &[u64]) -> ReadGuard {
        let tables: Vec<Arc<StoredTable>> =
            ids.iter().filter_map(|id| self.table_by_id(*id)).collect();
        for table in &tables {
            table.add_dependent();
        }
        ReadGuard(tables)
    }

    pub fn table_by_id(&self, id: u64) -> Option<Arc<StoredTable>> {
        let state = self.state.read().expect("catalog lock poisoned");
        state.tables.values().find(|t| t.def().id == id).cloned()
    }

    /// The streams and tables fed by a source (a Kafka topic or a
    /// generator), by name.
    pub fn source_relations(&self) -> Vec<Arc<StoredTable>> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .tables
            .values()
            .filter(|t| t.def().source_kind().is_some())
            .cloned()
            .collect()
    }

    /// The streams and tables over Kafka topics, by name.
    pub fn kafka_relations(&self) -> Vec<Arc<StoredTable>> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .tables
            .values()
            .filter(|t| t.def().kafka.is_some())
            .cloned()
            .collect()
    }

    /// The name of the table or view with id `id`.
    pub fn relation_name(&self, id: u64) -> Option<String> {
        let state = self.state.read().expect("catalog lock poisoned");
        state
            .tables
            .values()
            .find(|t| t.def().id == id)
            .map(|t| t.name().to_owned())
            .or_else(|| {
                state
                    .views
                    .values()
                    .find(|v| v.def().id == id)
                    .map(|v| v.name().to_owned())
            })
    }

    /// Every materialized view, in creation order (which is also
    /// dependency order).
    pub fn views(&self) -> Vec<Arc<StoredView>> {
        let state = self.state.read().expect("catalog lock poisoned");
        let mut views: Vec<_> = state.views.values().cloned().collect();
        views.sort_by_key(|v| v.def().id);
        views
    }

    /// Every persistent query, in creation order.
    pub fn queries(&self) -> Vec<Arc<StoredView>> {
        let state = self.state.read().expect("catalog lock poisoned");
        let mut queries: Vec<_> = state.queries.values().cloned().collect();
        queries.sort_by_key(|v| v.def().id);
        queries
    }

    /// The persistent query with id `name`, matched case-insensitively.
    pub fn query(&self, name: &str) -> Option<Arc<StoredView>> {
        let state = self.state.read().expect("catalog lock poisoned");
        state
            .queries
            .values()
            .find(|q| q.name().eq_ignore_ascii_case(name))
            .cloned()
    }

    /// The persistent queries writing the topic of relation `id`.
    pub fn queries_writing(&self, id: u64) -> Vec<Arc<StoredView>> {
        self.queries()
            .into_iter()
            .filter(|q| q.def().sink_relation == Some(id))
            .collect()
    }

    /// The view or persistent query with id `id`.
    pub fn view_by_id(&self, id: u64) -> Option<Arc<StoredView>> {
        let state = self.state.read().expect("catalog lock poisoned");
        state.by_id(id).cloned()
    }

    /// The views and persistent queries that read object `id` directly,
    /// oldest first.
    pub fn dependents(&self, id: u64) -> Vec<Arc<StoredView>> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .dependents_of(id)
    }

    /// Reserves a new view's id and checks its name is free.
    pub fn reserve_view(&self, name: &str) -> Result<u64> {
        let mut state = self.state.write().expect("catalog lock poisoned");
        if state.name_taken(name) {
            return Err(CatalogError::DuplicateTable(name.to_owned()));
        }
        let id = state.next_id;
        state.next_id += 1;
        Ok(id)
    }

    /// Reserves an id for a persistent query, or a view that replaces
    /// another of its name.
    pub fn reserve_id(&self) -> u64 {
        let mut state = self.state.write().expect("catalog lock poisoned");
        let id = state.next_id;
        state.next_id += 1;
        id
    }

    /// Stages a view's definition; [`Catalog::install_view`] makes it
    /// visible once the batch is committed.
    pub fn stage_view(&self, def: &ViewDef, batch: &mut WriteBatch) -> Result<()> {
        batch.put(
            Keyspace::Catalog.object_prefix(def.id),
            serde_json::to_vec(&CatalogObject::View(def.clone()))?,
        );
        Ok(())
    }

    /// Makes a committed view definition visible, replacing the view of
    /// the same id if there is one.
    pub fn install_view(&self, def: ViewDef) -> Result<()> {
        let mut state = self.state.write().expect("catalog lock poisoned");
        self.install_locked(&mut state, def)
    }

    /// Makes committed view `def` visible in place of view `old`, at once:
    /// no reader finds neither.
    pub fn replace_view(&self, old: u64, def: ViewDef) -> Result<()> {
        let mut state = self.state.write().expect("catalog lock poisoned");
        self.uninstall_locked(&mut state, old);
        self.install_locked(&mut state, def)
    }

    fn install_locked(&self, state: &mut CatalogState, def: ViewDef) -> Result<()> {
        let existing = state.by_id(def.id).map(|v| v.name().to_owned());
        match existing {
            Some(old) => {
                state.map_for(&def).remove(&old);
            }
            None => {
                let taken = if def.is_query() {
                    state.queries.contains_key(&def.name)
                } else {
                    state.name_taken(&def.name)
                };
                if taken {
                    return Err(CatalogError::DuplicateTable(def.name));
                }
                for id in &def.depends_on {
                    if let Some(table) = state.tables.values().find(|t| t.def().id == *id) {
                        table.add_dependent();
                    }
                }
            }
        }
        let rows = self.view_rows(def.id);
        let view = Arc::new(StoredView::new(def, rows)?);
        state
            .map_for(view.def())
            .insert(view.name().to_owned(), view.clone());
        Ok(())
    }

    /// The rows of view `id` in memory, shared by the runtime and queries.
    pub fn view_rows(&self, id: u64) -> Arc<ViewRows> {
        self.view_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    /// Stages the removal of a view's definition, rows and state.
    pub fn stage_drop_view(&self, id: u64, batch: &mut WriteBatch) -> Result<()> {
        batch.delete(Keyspace::Catalog.object_prefix(id));
        self.roles().stage_drop_grants(id, batch);
        for item in self
            .store
            .scan_keys(&Keyspace::OperatorState.object_prefix(id))
        {
            batch.delete_blob(item?);
        }
        for item in self.store.scan_keys(&Keyspace::Outbox.object_prefix(id)) {
            batch.delete(item?);
        }
        Ok(())
    }

    /// Forgets a dropped view or query once its removal is committed.
    pub fn uninstall_view(&self, id: u64) {
        let mut state = self.state.write().expect("catalog lock poisoned");
        self.uninstall_locked(&mut state, id);
    }

    fn uninstall_locked(&self, state: &mut CatalogState, id: u64) {
        self.roles().forget_grants(id);
        self.view_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let Some(view) = state.by_id(id).cloned() else {
            return;
        };
        if state.map_for(view.def()).remove(view.name()).is_some() {
            for id in &view.def().depends_on {
                if let Some(table) = state.tables.values().find(|t| t.def().id == *id) {
                    table.remove_dependent();
                }
            }
        }
    }

    pub fn view_names(&self) -> Vec<String> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .views
            .keys()
            .cloned()
            .collect()
    }

    /// Tables and views.
    pub fn relation_names(&self) -> Vec<String> {
        let state = self.state.read().expect("catalog lock poisoned");
        state
            .tables
            .keys()
            .chain(state.views.keys())
            .chain(state.plain_views.keys())
            .cloned()
            .collect()
    }

    pub fn plain_view(&self, name: &str) -> Option<Arc<PlainViewDef>> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .plain_views
            .get(name)
            .cloned()
    }

    /// Whether any plain view exists (queries then expand them).
    pub fn has_plain_views(&self) -> bool {
        let state = self.state.read().expect("catalog lock poisoned");
        !state.plain_views.is_empty()
    }

    pub fn plain_views(&self) -> Vec<Arc<PlainViewDef>> {
        let state = self.state.read().expect("catalog lock poisoned");
        state.plain_views.values().cloned().collect()
    }

    /// The plain views that read object `id` directly, oldest first.
    pub fn plain_dependents(&self, id: u64) -> Vec<Arc<PlainViewDef>> {
        self.state
            .read()
            .expect("catalog lock poisoned")
            .plain_dependents_of(id)
    }

    /// Stores plain view `def` under a fresh id, or in place of the plain
    /// view of the same name when `replace` is set.
    pub fn save_plain_view(&self, mut def: PlainViewDef, replace: bool) -> Result<()> {
        let mut state = self.state.write().expect("catalog lock poisoned");
        match state.plain_views.get(&def.name) {
            Some(existing) if replace => def.id = existing.id,
            _ if state.name_taken(&def.name) => {
                return Err(CatalogError::DuplicateTable(def.name));
            }
            _ => {
                def.id = state.next_id;
                state.next_id += 1;
            }
        }
        let mut batch = WriteBatch::new();
        batch.put(
            Keyspace::Catalog.object_prefix(def.id),
            serde_json::to_vec(&CatalogObject::PlainView(def.clone()))?,
        );
        self.store.commit(batch)?;
        state.plain_views.insert(def.name.clone(), Arc::new(def));
        Ok(())
    }

    /// Drops plain view `name`; what depends on it is the caller's to
    /// check. Returns whether it existed.
    pub fn drop_plain_view(&self, name: &str) -> Result<bool> {
        let mut state = self.state.write().expect("catalog lock poisoned");
        let Some(view) = state.plain_views.get(name).cloned() else {
            return Ok(false);
        };
        let mut batch = WriteBatch::new();
        batch.delete(Keyspace::Catalog.object_prefix(view.id));
        self.roles().stage_drop_grants(view.id, &mut batch);
        self.store.commit(batch)?;
        self.roles().forget_grants(view.id);
        state.plain_views.remove(name);
        Ok(true)
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
        if state.name_taken(&def.name) {
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
        // Table writes first, then the catalog, in the order a new view's
        // backfill takes them (it installs the view holding off writes).
        let _guard = self.write_lock.lock().expect("table write lock poisoned");
        let mut state = self.state.write().expect("catalog lock poisoned");
        let Some(table) = state.tables.get(name).cloned() else {
            return Ok(false);
        };
        let kind = if table.is_stream() { "stream" } else { "table" };
        let detail: Vec<String> = state
            .dependents_of(table.def().id)
            .iter()
            .map(|v| v.dependency_text(kind, name))
            .chain(
                state
                    .plain_dependents_of(table.def().id)
                    .iter()
                    .map(|v| v.dependency_text(kind, name)),
            )
            .collect();
        if !detail.is_empty() {
            return Err(CatalogError::DependentObjects {
                action: "drop",
                kind,
                name: name.to_owned(),
                detail: detail.join("\n"),
            });
        }
        let id = table.def().id;
        let mut batch = WriteBatch::new();
        batch.delete(Keyspace::Catalog.object_prefix(id));
        self.roles().stage_drop_grants(id, &mut batch);
        for item in self.store.scan_keys(&Keyspace::TableRows.object_prefix(id)) {
            batch.delete_blob(item?);
        }
        self.store.commit(batch)?;
        self.roles().forget_grants(id);
        state.tables.remove(name);
        Ok(true)
    }
}

/// Tables a push query reads, marked so while it runs (see
/// [`Catalog::read_guard`]).
#[derive(Debug)]
pub struct ReadGuard(Vec<Arc<StoredTable>>);

impl Drop for ReadGuard {
    fn drop(&mut self) {
        for table in &self.0 {
            table.remove_dependent();
        }
    }
}
