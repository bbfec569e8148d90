//! `CREATE STREAM|TABLE name [WITH (...)] AS SELECT ...`: a persistent
//! query writing a topic, read back as a Kafka relation, as in ksqlDB. A
//! plain `CREATE TABLE name AS SELECT` over local tables is Postgres's: a
//! local table filled once with the query's rows.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{ObjectName, Query, Statement};
use eddy_catalog::dead_letters_def;
use eddy_catalog::kafka::{Format, SourceKind, WindowType, PSEUDO_COLUMNS};
use eddy_catalog::{
    CatalogError, ColumnDef, ColumnType, StoredTable, TableDef, ViewColumn, ViewDef,
};
use eddy_sql::ast::{CreateRelation, Emit, WindowKind};
use eddy_sql::create_table::object_name;
use eddy_sql::{EddyQuery, SourceOptions, SqlError};
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::privileges::Actor;

pub async fn handle_create_as(
    engine: &Engine,
    create: &CreateRelation,
    options: &SourceOptions,
    query: &EddyQuery,
) -> Result<Output> {
    eddy_sql::check_query_clauses(&query.clauses, true)?;
    if options.window.is_some() {
        return Err(SqlError::InvalidDefinition(
            "window_type declares a relation over a windowed topic; a query's relation is \
             windowed by the query's WINDOW clause"
                .into(),
        )
        .into());
    }
    // A windowed aggregate's records are keyed by its key and window, as
    // ksqlDB writes them.
    let mut options = options.clone();
    options.window = query.clauses.window.as_ref().map(|w| match w.kind {
        WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => WindowType::Time {
            size_ms: size.millis,
        },
        WindowKind::Session { .. } => WindowType::Session,
    });
    let options = &options;
    let clauses = &query.clauses;
    let query = query.query.as_ref();
    let name = object_name(&create.name)?;
    if !create.columns.is_empty() {
        return Err(EddyError::Unsupported(
            "a column list in CREATE ... AS SELECT; name the columns in the select list".into(),
        ));
    }
    let kind = options.kind;
    let tag = Tag::new(&format!("CREATE {}", kind.as_str()));
    let replacing = match create.or_replace {
        true => engine.catalog.table(&name),
        false => None,
    };
    if replacing.is_none() && engine.catalog.relation(&name).is_some() {
        if create.if_not_exists {
            return Ok(Output::Command(tag));
        }
        return Err(CatalogError::DuplicateTable(name).into());
    }
    if let Some(existing) = &replacing {
        let existing_kind = existing.def().source_kind();
        if existing.def().kafka.is_some() && existing_kind != Some(kind) {
            let was = existing_kind.map_or("table", |k| k.as_str()).to_lowercase();
            return Err(EddyError::WrongObjectType(format!(
                "{name} is a {was}; CREATE OR REPLACE {} cannot make it a {}",
                kind.as_str(),
                kind.as_str().to_lowercase()
            )));
        }
    }
    let statement = Statement::Query(Box::new(query.clone()));
    let plan = engine.plan(&statement).await?;
    if !options.is_source() && !reads_kafka(engine, &plan) {
        if replacing.is_some() {
            return Err(EddyError::Unsupported(format!(
                "CREATE OR REPLACE TABLE {name} AS SELECT over local tables, where {name} \
                 exists: drop the table and create it again"
            )));
        }
        if let Some(emit @ (Emit::Final | Emit::OnWindowClose)) = clauses.emit {
            return Err(EddyError::Unsupported(format!(
                "{emit} in CREATE TABLE ... AS SELECT over local tables, which fills the table \
                 once; create a materialized view"
            )));
        }
        return create_local_table_as(engine, name, plan).await;
    }
    let kafka = engine.kafka()?.clone();
    let mut query = query.clone();
    name_ksql_columns(&mut query, engine);
    let query = &query;
    let lowered = engine
        .plan_view(query, clauses, kind == SourceKind::Stream)
        .await?;
    let schema = lowered.root.schema.clone();
    let catalog = &engine.catalog;
    let read: Vec<Arc<StoredTable>> = lowered
        .depends_on
        .iter()
        .filter_map(|id| catalog.table_by_id(*id))
        .collect();
    let (columns, query_columns) = output_columns(&schema)?;
    let mut key_columns = match kind {
        SourceKind::Stream => {
            let append_only = lowered
                .root
                .append_only(&|id| catalog.table_by_id(id).is_some_and(|t| t.is_stream()));
            if !append_only {
                return Err(SqlError::InvalidDefinition(format!(
                    "the query of stream {name} can change or take back rows it has produced \
                     (it aggregates, reads a table, or outer-joins), so its result is a table; \
                     use CREATE TABLE {name} AS SELECT ... or a materialized view"
                ))
                .into());
            }
            match (options.window, clauses.partition_by.is_empty()) {
                (Some(_), true) => table_key(query, &name, &read, &columns, &query_columns, None)?,
                (Some(_), false) => {
                    return Err(SqlError::InvalidDefinition(
                        "PARTITION BY with WINDOW: a windowed aggregate's records are keyed by \
                         its GROUP BY and window"
                            .into(),
                    )
                    .into())
                }
                (None, true) => stream_key(query, &read, &columns, &query_columns),
                (None, false) => partition_key(query, clauses, &columns, &query_columns)?,
            }
        }
        SourceKind::Table if !clauses.partition_by.is_empty() => {
            return Err(SqlError::InvalidDefinition(format!(
                "PARTITION BY re-keys a stream; table {name} is keyed by its GROUP BY or its \
                 source's primary key"
            ))
            .into())
        }
        SourceKind::Table => {
            let plan_key = lowered.root.unique_key(&|id| {
                catalog
                    .table_by_id(id)
                    .map(|t| t.def().primary_key.clone())
                    .or_else(|| catalog.view_by_id(id).map(|v| v.def().key_columns.clone()))
            });
            table_key(query, &name, &read, &columns, &query_columns, plan_key)?
        }
    };
    if kind == SourceKind::Table {
        key_columns.sort_unstable();
    }
    let mut columns = columns;
    if kind == SourceKind::Table {
        for &k in &key_columns {
            columns[k].nullable = false;
        }
    }
    let inherited = read
        .iter()
        .find_map(|t| t.def().kafka.as_ref())
        .map_or((Format::Kafka, Format::Json), |k| {
            (k.key_format, k.value_format)
        });
    let mut def =
        eddy_sql::bind_query_relation(name.clone(), columns, key_columns, options, inherited)?;
    def.owner = Actor::current(engine)?.owner_field();
    if let Some(existing) = replacing {
        let sql = eddy_sql::query_with_clauses(query, clauses);
        upgrade_query(engine, &existing, def, sql, lowered).await?;
        return Ok(Output::Command(tag));
    }
    let topic = def
        .kafka
        .as_ref()
        .map(|k| k.topic.clone())
        .unwrap_or_default();
    // A topic another relation reads would mix records of two schemas, or
    // feed the query its own output.
    if let Some(reader) = catalog
        .kafka_relations()
        .iter()
        .find(|t| t.def().kafka.as_ref().is_some_and(|k| k.topic == topic))
    {
        return Err(SqlError::InvalidDefinition(format!(
            "topic {topic} is already the topic of {}; name another with kafka_topic",
            reader.name()
        ))
        .into());
    }
    let partitions = match options.partitions {
        Some(n) => n,
        None => source_partitions(&kafka, &read).await?,
    };
    kafka
        .ensure_topic(&topic, Some(partitions), options.replicas)
        .await?;
    catalog.create_table(dead_letters_def(), true)?;
    let table = catalog
        .create_table(def, false)?
        .ok_or_else(|| CatalogError::DuplicateTable(name.clone()))?;
    let relation_id = table.def().id;
    let id = catalog.reserve_id();
    let prefix = match kind {
        SourceKind::Stream => "CSAS",
        SourceKind::Table => "CTAS",
    };
    let sql = eddy_sql::query_with_clauses(query, clauses);
    let query_name = format!("{prefix}_{}_{id}", name.to_uppercase());
    let owner = Actor::current(engine)?.owner_field();
    let (query_def, root) = query_def(id, query_name, sql, lowered, relation_id, owner);
    let started = match engine.dataflow.start_source(relation_id).await {
        Ok(()) => {
            engine
                .dataflow
                .create_view(query_def, root, crate::notice::backfill_reporter())
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        engine.dataflow.drop_source(relation_id).await?;
        catalog.drop_table(&name)?;
        return Err(e.into());
    }
    Ok(Output::Command(tag))
}

/// `CREATE OR REPLACE STREAM|TABLE name AS SELECT ...` over the relation
/// a `CREATE ... AS SELECT` query writes: ksqlDB's in-place upgrade. The
/// query keeps its id, topic and written records, and its new version
/// reads the records the old one has not; nothing is read again. As in
/// ksqlDB, the new query must read the same relations; Eddy also asks for
/// the same columns and key, and a query that keeps no state.
async fn upgrade_query(
    engine: &Engine,
    existing: &StoredTable,
    new: TableDef,
    sql: String,
    lowered: eddy_dataflow::Lowered,
) -> Result<()> {
    let old = existing.def();
    let name = &old.name;
    let old_kind = old.source_kind().map_or("TABLE", |k| k.as_str());
    let writer = engine
        .catalog
        .queries_writing(old.id)
        .into_iter()
        .find(|q| q.name().starts_with("CSAS_") || q.name().starts_with("CTAS_"))
        .ok_or_else(|| {
            EddyError::Unsupported(format!(
                "CREATE OR REPLACE {old_kind} {name} AS SELECT: {name} is not written by a \
                 CREATE {old_kind} ... AS SELECT query, whose query this would replace"
            ))
        })?;
    let listed = |def: &TableDef| {
        def.declared_columns()
            .iter()
            .map(|c| format!("{} {}", c.name, c.column_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if new.columns != old.columns || new.primary_key != old.primary_key {
        return Err(EddyError::Unsupported(format!(
            "CREATE OR REPLACE {old_kind} {name} AS SELECT with other columns ({}) than \
             {name}'s ({}): a query is upgraded in place only when its columns and key stay \
             as they are; DROP {old_kind} {name} and create it again",
            listed(&new),
            listed(old)
        )));
    }
    if new.kafka != old.kafka {
        return Err(EddyError::Unsupported(format!(
            "CREATE OR REPLACE {old_kind} {name} AS SELECT with other topic options than \
             {name}'s: a query is upgraded in place only when its topic and formats stay as \
             they are"
        )));
    }
    let query = writer.def();
    let mut reads = lowered.depends_on.clone();
    let mut read = query.depends_on.clone();
    reads.sort_unstable();
    read.sort_unstable();
    if reads != read {
        return Err(EddyError::Unsupported(format!(
            "CREATE OR REPLACE {old_kind} {name} AS SELECT reading other relations than query \
             {} does: as in ksqlDB, an upgrade in place keeps a query's sources",
            query.name
        )));
    }
    let (def, root) = query_def(
        query.id,
        query.name.clone(),
        sql,
        lowered,
        old.id,
        query.owner,
    );
    engine.dataflow.upgrade_query(def, root).await?;
    Ok(())
}

/// `INSERT INTO stream SELECT ...` over a Kafka relation: a persistent
/// query appending the query's rows to an existing stream, as in ksqlDB.
/// Its columns are the stream's, by name.
pub async fn handle_insert_query(
    engine: &Engine,
    target: &ObjectName,
    query: &EddyQuery,
) -> Result<Output> {
    eddy_sql::check_query_clauses(&query.clauses, true)?;
    if query.clauses.window.is_some() || !query.clauses.partition_by.is_empty() {
        return Err(SqlError::InvalidDefinition(
            "INSERT INTO ... SELECT appends to a stream as it is keyed; WINDOW and PARTITION BY \
             belong in CREATE STREAM|TABLE ... AS SELECT"
                .into(),
        )
        .into());
    }
    let name = object_name(target)?;
    let catalog = &engine.catalog;
    let stream = catalog
        .table(&name)
        .ok_or_else(|| EddyError::UndefinedTable(name.clone()))?;
    let def = stream.def().clone();
    if !def
        .kafka
        .as_ref()
        .is_some_and(|k| k.kind == SourceKind::Stream)
    {
        return Err(SqlError::InvalidDefinition(format!(
            "INSERT INTO {name} SELECT ... runs as a persistent query, which appends to a \
             stream over a Kafka topic; {name} is not one"
        ))
        .into());
    }
    let kafka = engine.kafka()?.clone();
    let mut select = query.query.as_ref().clone();
    name_ksql_columns(&mut select, engine);
    let lowered = engine.plan_view(&select, &query.clauses, true).await?;
    if lowered.depends_on.contains(&def.id) {
        return Err(SqlError::InvalidDefinition(format!(
            "INSERT INTO {name} SELECT ... FROM {name} would feed the query its own output"
        ))
        .into());
    }
    let append_only = lowered
        .root
        .append_only(&|id| catalog.table_by_id(id).is_some_and(|t| t.is_stream()));
    if !append_only {
        return Err(SqlError::InvalidDefinition(format!(
            "the query can change or take back rows it has produced (it aggregates, reads a \
             table, or outer-joins), so it cannot append to stream {name}"
        ))
        .into());
    }
    let schema = lowered.root.schema.clone();
    // ksqlDB's rule, which Postgres's fill-by-position agrees with: the
    // query's columns are the stream's, in order (pseudo-columns aside).
    let selected: Vec<&Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref())
        .filter(|f| !PSEUDO_COLUMNS.contains(&f.name().as_str()))
        .collect();
    let declared = def.declared_columns();
    let names = |names: Vec<&str>| names.join(", ");
    if selected.len() != declared.len()
        || selected
            .iter()
            .zip(declared)
            .any(|(f, c)| *f.name() != c.name)
    {
        return Err(SqlError::InvalidDefinition(format!(
            "the query's columns ({}) are not stream {name}'s ({}): INSERT INTO ... SELECT fills \
             them by name and in order, so select them so, aliased as needed",
            names(selected.iter().map(|f| f.name().as_str()).collect()),
            names(declared.iter().map(|c| c.name.as_str()).collect()),
        ))
        .into());
    }
    for (field, column) in selected.iter().zip(declared) {
        let data_type = column.column_type.to_arrow();
        if !datafusion::arrow::compute::can_cast_types(field.data_type(), &data_type) {
            return Err(SqlError::InvalidDefinition(format!(
                "column {} of the query is {}, which does not fit {name}'s {} column",
                field.name(),
                field.data_type(),
                column.column_type
            ))
            .into());
        }
    }
    let topic = def
        .kafka
        .as_ref()
        .map(|k| k.topic.clone())
        .unwrap_or_default();
    kafka.ensure_topic(&topic, None, None).await?;
    let id = catalog.reserve_id();
    let sql = eddy_sql::query_with_clauses(&select, &query.clauses);
    let owner = Actor::current(engine)?.owner_field();
    let (query_def, root) = query_def(id, format!("INSERTQUERY_{id}"), sql, lowered, def.id, owner);
    engine
        .dataflow
        .create_view(query_def, root, crate::notice::backfill_reporter())
        .await?;
    Ok(Output::Command(Tag::new("INSERT").with_rows(0)))
}

/// A persistent query's definition, writing relation `sink`, and the
/// dataflow it starts with.
fn query_def(
    id: u64,
    name: String,
    sql: String,
    lowered: eddy_dataflow::Lowered,
    sink: u64,
    owner: Option<u32>,
) -> (ViewDef, eddy_dataflow::Node) {
    let def = ViewDef {
        owner,
        id,
        name,
        sql,
        columns: lowered
            .root
            .schema
            .fields()
            .iter()
            .map(|f| ViewColumn::of_field(f))
            .collect(),
        depends_on: lowered.depends_on,
        plain_views: lowered.plain_views,
        explain: lowered.root.explain().join("\n"),
        plan: lowered.plan,
        error: None,
        sink_relation: Some(sink),
        key_columns: Vec::new(),
    };
    (def, lowered.root)
}

/// An `INSERT INTO stream SELECT ...` that reads a Kafka relation, as the
/// persistent query ksqlDB makes of it: its target and query.
pub fn persistent_insert(
    engine: &Engine,
    insert: &datafusion::sql::sqlparser::ast::Insert,
    dml: &datafusion::logical_expr::DmlStatement,
) -> Option<(ObjectName, EddyQuery)> {
    use datafusion::sql::sqlparser::ast::TableObject;
    let target = engine.catalog.table(dml.table_name.table())?;
    if !target
        .def()
        .kafka
        .as_ref()
        .is_some_and(|k| k.kind == SourceKind::Stream)
    {
        return None;
    }
    let query = insert.source.as_ref()?;
    if !insert.columns.is_empty() || !reads_kafka(engine, &dml.input) {
        return None;
    }
    let TableObject::TableName(name) = &insert.table else {
        return None;
    };
    Some((
        name.clone(),
        EddyQuery {
            query: query.clone(),
            clauses: Default::default(),
        },
    ))
}

/// Whether a plan reads a Kafka relation.
fn reads_kafka(engine: &Engine, plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let table = engine.catalog.table(scan.table_name.table());
            if table.is_some_and(|t| t.def().kafka.is_some()) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Names a persistent query's columns as ksqlDB does: an expression
/// without an alias is `KSQL_COL_<n>`, counted from 0 (lower case here, as Postgres
/// folds names; its records carry it upper-cased), and over a join `*`
/// stands for every source's columns named `<source>_<column>`, as does a
/// column whose name two sources share.
fn name_ksql_columns(query: &mut Query, engine: &Engine) {
    use datafusion::sql::sqlparser::ast::{Expr, Ident, SelectItem, SetExpr};
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let read = read_sources(select, engine);
    // Generated names count from past any the sources have.
    let mut next_generated = read
        .iter()
        .flat_map(|(_, columns)| columns)
        .filter_map(|c| c.strip_prefix("ksql_col_")?.parse::<usize>().ok())
        .max()
        .map_or(0, |n| n + 1);
    let sources = if read.len() > 1 { read } else { Vec::new() };
    let shared: Vec<&String> = sources
        .iter()
        .flat_map(|(_, columns)| columns)
        .filter(|c| sources.iter().filter(|(_, cols)| cols.contains(c)).count() > 1)
        .collect();
    let ident = |name: &str| match name.chars().any(|c| !c.is_ascii_lowercase() && c != '_') {
        true => Ident::with_quote('"', name),
        false => Ident::new(name),
    };
    let prefixed = |source: &str, column: &str| SelectItem::ExprWithAlias {
        expr: Expr::CompoundIdentifier(vec![ident(source), ident(column)]),
        alias: ident(&format!("{source}_{column}")),
    };
    let mut projection = Vec::with_capacity(select.projection.len());
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) if !sources.is_empty() => {
                for (source, columns) in &sources {
                    projection.extend(columns.iter().map(|c| prefixed(source, c)));
                }
            }
            SelectItem::QualifiedWildcard(kind, options) if !sources.is_empty() => {
                let qualifier = kind.to_string().to_lowercase();
                match sources.iter().find(|(source, _)| *source == qualifier) {
                    Some((source, columns)) => {
                        projection.extend(columns.iter().map(|c| prefixed(source, c)))
                    }
                    None => projection.push(SelectItem::QualifiedWildcard(kind, options)),
                }
            }
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts))
                if parts.len() == 2
                    && shared.contains(&&eddy_sql::create_table::normalize(&parts[1])) =>
            {
                let source = eddy_sql::create_table::normalize(&parts[0]);
                let column = eddy_sql::create_table::normalize(&parts[1]);
                projection.push(SelectItem::ExprWithAlias {
                    expr: Expr::CompoundIdentifier(parts),
                    alias: ident(&format!("{source}_{column}")),
                });
            }
            SelectItem::UnnamedExpr(expr)
                if !matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) =>
            {
                projection.push(SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::new(format!("ksql_col_{next_generated}")),
                });
                next_generated += 1;
            }
            item => projection.push(item),
        }
    }
    select.projection = projection;
}

/// The relations a select reads, each by its name (or alias), with its
/// declared columns; empty when it reads anything else too (a subquery, a
/// function).
fn read_sources(
    select: &datafusion::sql::sqlparser::ast::Select,
    engine: &Engine,
) -> Vec<(String, Vec<String>)> {
    use datafusion::sql::sqlparser::ast::TableFactor;
    let factors: Vec<&TableFactor> = select
        .from
        .iter()
        .flat_map(|from| {
            std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
        })
        .collect();
    let mut sources = Vec::new();
    for factor in factors {
        let TableFactor::Table { name, alias, .. } = factor else {
            return Vec::new();
        };
        let Ok(table) = object_name(name) else {
            return Vec::new();
        };
        let columns: Vec<String> = match engine.catalog.relation(&table) {
            Some(eddy_catalog::Relation::Table(t)) => t
                .def()
                .declared_columns()
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            Some(eddy_catalog::Relation::View(v)) => {
                v.def().columns.iter().map(|c| c.name.clone()).collect()
            }
            None => return Vec::new(),
        };
        let source = match alias {
            Some(alias) => eddy_sql::create_table::normalize(&alias.name),
            None => table,
        };
        sources.push((source, columns));
    }
    sources
}

/// The relation's columns for a query's output (pseudo-columns left out:
/// the relation gets its own), and the query column behind each.
fn output_columns(schema: &SchemaRef) -> Result<(Vec<ColumnDef>, Vec<usize>)> {
    let mut columns: Vec<ColumnDef> = Vec::new();
    let mut query_columns = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if PSEUDO_COLUMNS.contains(&field.name().as_str()) {
            continue;
        }
        let column_type = ColumnType::from_arrow(field.data_type()).ok_or_else(|| {
            EddyError::Unsupported(format!(
                "column {} of type {} in a Kafka relation",
                field.name(),
                field.data_type()
            ))
        })?;
        if columns.iter().any(|c| c.name == *field.name()) {
            return Err(SqlError::DuplicateColumn(field.name().clone()).into());
        }
        columns.push(ColumnDef::nullable(field.name(), column_type));
        query_columns.push(i);
    }
    if columns.is_empty() {
        return Err(SqlError::InvalidDefinition(
            "the query selects no columns but pseudo-columns".into(),
        )
        .into());
    }
    Ok((columns, query_columns))
}

/// The positions in `columns` of the columns called `names`, if all are.
fn positions(columns: &[ColumnDef], names: &[&str]) -> Option<Vec<usize>> {
    names
        .iter()
        .map(|n| columns.iter().position(|c| c.name == *n))
        .collect()
}

/// The key `PARTITION BY` gives a stream: each expression's column in the
/// select list, or under `*` the column of that name.
fn partition_key(
    query: &Query,
    clauses: &eddy_sql::ast::QueryClauses,
    columns: &[ColumnDef],
    query_columns: &[usize],
) -> Result<Vec<usize>> {
    use datafusion::sql::sqlparser::ast::{Expr, SelectItem, SetExpr};
    let wildcard = matches!(query.body.as_ref(), SetExpr::Select(select)
    if select.projection.iter().any(|item| {
        matches!(item, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..))
    }));
    // Beside `*`, select-list positions are not column positions: a key
    // is found by its name, a column's or an alias's.
    let alias_of = |expr: &Expr| {
        let SetExpr::Select(select) = query.body.as_ref() else {
            return None;
        };
        select.projection.iter().find_map(|item| match item {
            SelectItem::ExprWithAlias { expr: e, alias }
                if e.to_string().eq_ignore_ascii_case(&expr.to_string()) =>
            {
                Some(alias.clone())
            }
            _ => None,
        })
    };
    let mut keys = Vec::new();
    for expr in &clauses.partition_by {
        let by_name = match expr {
            _ if !wildcard => None,
            Expr::Identifier(ident) => Some(ident.clone()),
            Expr::CompoundIdentifier(parts) => parts.last().cloned(),
            other => Some(alias_of(other).ok_or_else(|| {
                SqlError::InvalidDefinition(format!(
                    "PARTITION BY key {other} beside *: select it under an alias too, as in \
                     SELECT *, {other} AS k ... PARTITION BY {other}"
                ))
            })?),
        };
        let key = match by_name {
            Some(ident) => {
                let name = eddy_sql::create_table::normalize(&ident);
                columns.iter().position(|c| c.name == name).ok_or_else(|| {
                    EddyError::from(SqlError::InvalidDefinition(format!(
                        "PARTITION BY key {expr} is not a column of the query"
                    )))
                })?
            }
            None => {
                let [position] =
                    eddy_sql::partition_key_columns(query, std::slice::from_ref(expr))?[..]
                else {
                    return Err(EddyError::Internal("one position per expression".into()));
                };
                query_columns
                    .iter()
                    .position(|&q| q == position)
                    .ok_or_else(|| {
                        SqlError::InvalidDefinition(
                            "a pseudo-column cannot key a stream; select it under another name"
                                .into(),
                        )
                    })?
            }
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// A stream keeps the key of the one stream it reads, if it selects it.
fn stream_key(
    query: &Query,
    read: &[Arc<StoredTable>],
    columns: &[ColumnDef],
    query_columns: &[usize],
) -> Vec<usize> {
    let [source] = read else {
        // A join's records are keyed by its join columns, as ksqlDB keys
        // them, when they are selected.
        return eddy_sql::join_key_columns(query)
            .and_then(|keys| {
                keys.iter()
                    .map(|k| query_columns.iter().position(|q| q == k))
                    .collect()
            })
            .unwrap_or_default();
    };
    let Some(kafka) = &source.def().kafka else {
        return Vec::new();
    };
    let names: Vec<&str> = kafka
        .key_columns
        .iter()
        .map(|&k| source.def().columns[k].name.as_str())
        .collect();
    positions(columns, &names).unwrap_or_default()
}

/// A table is keyed by its GROUP BY keys, or else by the primary key of
/// the one table it reads, or else by the columns that identify its plan's
/// rows (`plan_key`, output positions): a table joined to others by their
/// primary keys is keyed as the first, as ksqlDB keys table-table joins.
fn table_key(
    query: &Query,
    name: &str,
    read: &[Arc<StoredTable>],
    columns: &[ColumnDef],
    query_columns: &[usize],
    plan_key: Option<Vec<usize>>,
) -> Result<Vec<usize>> {
    if let Some(keys) = eddy_sql::group_key_columns(query)? {
        return keys
            .iter()
            .map(|k| {
                query_columns.iter().position(|q| q == k).ok_or_else(|| {
                    SqlError::InvalidDefinition(
                        "a pseudo-column cannot key a table; select it under another name".into(),
                    )
                    .into()
                })
            })
            .collect();
    }
    let keyed = match read {
        [source] if !source.is_stream() && !source.def().primary_key.is_empty() => {
            let def: &TableDef = source.def();
            let names: Vec<&str> = def
                .primary_key
                .iter()
                .map(|&k| def.columns[k].name.as_str())
                .collect();
            if eddy_sql::keeps_columns(query, &names) {
                positions(columns, &names)
            } else {
                None
            }
        }
        _ => None,
    };
    let keyed = keyed.or_else(|| {
        plan_key?
            .iter()
            .map(|k| query_columns.iter().position(|q| q == k))
            .collect()
    });
    keyed.ok_or_else(|| {
        SqlError::InvalidDefinition(format!(
            "table {name} needs a key for its changelog: GROUP BY its key columns (and select \
             them), select the primary key of the one table it reads, or join tables by their \
             primary keys and select the first one's; a query whose rows only accumulate is \
             CREATE STREAM {name} AS SELECT ..."
        ))
        .into()
    })
}

/// The partitions of the first Kafka relation read, else 1.
async fn source_partitions(
    kafka: &Arc<eddy_dataflow::kafka::Kafka>,
    read: &[Arc<StoredTable>],
) -> Result<i32> {
    let Some(topic) = read
        .iter()
        .find_map(|t| t.def().kafka.as_ref().map(|k| k.topic.clone()))
    else {
        return Ok(1);
    };
    let kafka = kafka.clone();
    let partitions = tokio::task::spawn_blocking(move || kafka.partitions(&topic))
        .await
        .map_err(|e| EddyError::Internal(e.to_string()))??;
    Ok(partitions.unwrap_or(1))
}

/// Postgres's CREATE TABLE ... AS SELECT: a new local table holding the
/// query's rows now.
async fn create_local_table_as(engine: &Engine, name: String, plan: LogicalPlan) -> Result<Output> {
    // The column types are those the rows will have, after type coercion.
    let plan = engine.analyze(plan)?;
    let schema = plan.schema().inner().clone();
    let (columns, _) = output_columns(&schema)?;
    if columns.len() != schema.fields().len() {
        return Err(SqlError::InvalidDefinition(format!(
            "column names {} are kept for Kafka relations",
            PSEUDO_COLUMNS.join(", ")
        ))
        .into());
    }
    let def = TableDef {
        owner: Actor::current(engine)?.owner_field(),
        id: 0,
        name: name.clone(),
        columns,
        primary_key: Vec::new(),
        kafka: None,
        generator: None,
        watermark: None,
        processing_time: None,
    };
    let batches = engine.collect(plan).await?;
    let table = engine
        .catalog
        .create_table(def, false)?
        .ok_or(CatalogError::DuplicateTable(name))?;
    let count = match tokio::task::block_in_place(|| table.insert(&batches)) {
        Ok(count) => count,
        Err(e) => {
            engine.catalog.drop_table(table.name())?;
            return Err(e.into());
        }
    };
    Ok(Output::Command(
        Tag::new("SELECT").with_rows(count.rows as usize),
    ))
}
