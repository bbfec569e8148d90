//! CREATE MATERIALIZED VIEW, and CREATE [OR REPLACE] VIEW.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::Fields;

use datafusion::sql::sqlparser::ast::{visit_relations, CreateTableOptions, CreateView, Statement};
use eddy_catalog::{CatalogError, PlainViewDef, ViewColumn, ViewDef};
use eddy_sql::create_table::object_name;
use eddy_sql::QueryClauses;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::privileges::Actor;

pub async fn handle_create_view(
    engine: &Engine,
    create: &CreateView,
    clauses: &QueryClauses,
) -> Result<Output> {
    // A column list names the query's columns as aliases would, so that
    // columns it names alike (`(a, b) AS SELECT x, x`) plan.
    let named;
    let create = if create.columns.is_empty() {
        create
    } else {
        let mut copy = create.clone();
        let names: Vec<_> = copy.columns.iter().map(|c| c.name.clone()).collect();
        eddy_sql::alias_output_columns(&mut copy.query, &names);
        named = copy;
        &named
    };
    if !create.materialized {
        return handle_create_plain_view(engine, create, clauses).await;
    }
    eddy_sql::check_query_clauses(clauses, true)?;
    eddy_sql::check_no_partition_by(clauses, "a materialized view")?;
    if create.or_alter {
        return Err(EddyError::Unsupported(
            "CREATE OR ALTER MATERIALIZED VIEW".into(),
        ));
    }
    let name = object_name(&create.name)?;
    let tag = Output::Command(Tag::new("CREATE MATERIALIZED VIEW"));
    let replacing = match create.or_replace {
        true => replaced_view(engine, &name)?,
        false => None,
    };
    if replacing.is_none() && engine.catalog.relation(&name).is_some() {
        return if create.if_not_exists {
            Ok(tag)
        } else {
            Err(CatalogError::DuplicateTable(name).into())
        };
    }
    // As in Postgres, a view's columns need distinct names; DataFusion
    // would refuse them less clearly.
    if let Some(names) = eddy_sql::postgres_column_names(&create.query) {
        column_names(create, names)?;
    }
    let lowered = engine.plan_view(&create.query, clauses, false).await?;
    let schema = lowered.root.schema.clone();
    let columns = view_columns(create, schema.fields())?;
    let catalog = &engine.catalog;
    let key_columns = lowered
        .root
        .unique_key(&|id| match catalog.table_by_id(id) {
            Some(table) => Some(table.def().primary_key.clone()),
            None => catalog.view_by_id(id).map(|v| v.def().key_columns.clone()),
        })
        .unwrap_or_default();
    let id = match replacing {
        Some(_) => engine.catalog.reserve_id(),
        None => engine.catalog.reserve_view(&name)?,
    };
    let def = ViewDef {
        owner: Actor::current(engine)?.owner_field(),
        id,
        name,
        sql: eddy_sql::query_with_clauses(&create.query, clauses),
        columns,
        depends_on: lowered.depends_on,
        plain_views: lowered.plain_views,
        explain: lowered.root.explain().join("\n"),
        plan: lowered.plan,
        error: None,
        sink_relation: None,
        key_columns,
    };
    let report = crate::notice::backfill_reporter();
    match replacing {
        Some(old) => {
            engine
                .dataflow
                .replace_view(old, def, lowered.root, report)
                .await?
        }
        None => {
            engine
                .dataflow
                .create_view(def, lowered.root, report)
                .await?
        }
    }
    Ok(tag)
}

/// The id of the materialized view `CREATE OR REPLACE MATERIALIZED VIEW
/// name` replaces, if there is one. As in Materialize, the new view is
/// backfilled from its query, and the old one may not be read by another
/// view, query or plain view (2BP01): their columns would change under
/// them.
fn replaced_view(engine: &Engine, name: &str) -> Result<Option<u64>> {
    let Some(old) = engine.catalog.view(name) else {
        let taken =
            engine.catalog.relation(name).is_some() || engine.catalog.plain_view(name).is_some();
        return match taken {
            true => Err(EddyError::WrongObjectType(format!(
                "\"{name}\" is not a materialized view"
            ))),
            false => Ok(None),
        };
    };
    let id = old.def().id;
    let refuse = |detail: String| -> EddyError {
        CatalogError::DependentObjects {
            action: "replace",
            kind: "materialized view",
            name: name.to_owned(),
            detail,
        }
        .into()
    };
    if let Some(view) = engine.catalog.plain_dependents(id).first() {
        return Err(refuse(view.dependency_text("materialized view", name)));
    }
    if let Some(view) = engine.catalog.dependents(id).first() {
        return Err(refuse(view.dependency_text("materialized view", name)));
    }
    Ok(Some(id))
}

/// `CREATE [OR REPLACE] VIEW`: the query is stored, and planned into each
/// query that reads the view. As in Postgres, a replacement keeps the
/// view's columns (it may add more after them).
async fn handle_create_plain_view(
    engine: &Engine,
    create: &CreateView,
    clauses: &QueryClauses,
) -> Result<Output> {
    if *clauses != QueryClauses::default() {
        return Err(EddyError::Unsupported(
            "ksqlDB clauses in CREATE VIEW (use CREATE MATERIALIZED VIEW)".into(),
        ));
    }
    if create.or_alter || create.temporary || create.options != CreateTableOptions::None {
        return Err(EddyError::Unsupported(format!(
            "CREATE VIEW with these options: {create}"
        )));
    }
    let name = object_name(&create.name)?;
    let existing = engine.catalog.plain_view(&name);
    if existing.is_none() && engine.catalog.relation(&name).is_some() {
        return if create.if_not_exists {
            Ok(Output::Command(Tag::new("CREATE VIEW")))
        } else if create.or_replace {
            Err(EddyError::WrongObjectType(format!(
                "\"{name}\" is not a view"
            )))
        } else {
            Err(CatalogError::DuplicateTable(name).into())
        };
    }
    if existing.is_some() && !create.or_replace {
        return if create.if_not_exists {
            Ok(Output::Command(Tag::new("CREATE VIEW")))
        } else {
            Err(CatalogError::DuplicateTable(name).into())
        };
    }
    let mut statement = Statement::Query(create.query.clone());
    let plain_views = crate::plain_views::expand(&engine.catalog, &mut statement)?;
    if let Some(existing) = &existing {
        if plain_views.contains(&existing.id) {
            return Err(EddyError::InvalidRecursion(format!(
                "infinite recursion detected: view \"{name}\" would read itself"
            )));
        }
    }
    let plan = engine.plan(&Statement::Query(create.query.clone())).await?;
    let columns = view_columns(create, plan.schema().fields())?;
    if let Some(existing) = &existing {
        check_replacement(&existing.columns, &columns)?;
    }
    let mut depends_on = plain_views;
    let _ = visit_relations(&statement, |relation| {
        if let Some(id) = object_name(relation)
            .ok()
            .and_then(|n| engine.catalog.relation(&n))
            .map(|r| r.id())
        {
            depends_on.push(id);
        }
        ControlFlow::<()>::Continue(())
    });
    depends_on.sort_unstable();
    depends_on.dedup();
    let def = PlainViewDef {
        owner: Actor::current(engine)?.owner_field(),
        id: 0,
        name,
        sql: create.query.to_string(),
        columns,
        depends_on,
    };
    engine.catalog.save_plain_view(def, create.or_replace)?;
    Ok(Output::Command(Tag::new("CREATE VIEW")))
}

/// Postgres's rule for `CREATE OR REPLACE VIEW`: the old columns stay, in
/// order, with their names and types.
fn check_replacement(old: &[ViewColumn], new: &[ViewColumn]) -> Result<()> {
    if new.len() < old.len() {
        return Err(
            eddy_sql::SqlError::InvalidDefinition("cannot drop columns from view".into()).into(),
        );
    }
    for (old, new) in old.iter().zip(new) {
        if old.name != new.name {
            return Err(eddy_sql::SqlError::InvalidDefinition(format!(
                "cannot change name of view column \"{}\" to \"{}\"",
                old.name, new.name
            ))
            .into());
        }
        if old.data_type != new.data_type {
            return Err(eddy_sql::SqlError::InvalidDefinition(format!(
                "cannot change data type of view column \"{}\"",
                old.name
            ))
            .into());
        }
    }
    Ok(())
}

/// A view's columns: its query's, renamed by the names the statement
/// lists, if any.
fn view_columns(create: &CreateView, fields: &Fields) -> Result<Vec<ViewColumn>> {
    let names = fields
        .iter()
        .map(|f| eddy_sql::display_name(f.name()).to_owned());
    Ok(column_names(create, names)?
        .into_iter()
        .zip(fields.iter())
        .map(|(name, field)| ViewColumn {
            name,
            ..ViewColumn::of_field(field)
        })
        .collect())
}

/// The names of a view's columns: the statement's list, then the query's
/// names, which must be distinct (42701), as Postgres requires.
fn column_names(
    create: &CreateView,
    query_names: impl IntoIterator<Item = String>,
) -> Result<Vec<String>> {
    let query_names: Vec<String> = query_names.into_iter().collect();
    if create.columns.len() > query_names.len() {
        let kind = if create.materialized {
            "CREATE MATERIALIZED VIEW"
        } else {
            "CREATE VIEW"
        };
        return Err(eddy_sql::SqlError::InvalidDefinition(format!(
            "{kind} specifies more column names than columns"
        ))
        .into());
    }
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(query_names.len());
    for (i, name) in query_names.into_iter().enumerate() {
        let name = match create.columns.get(i) {
            Some(column) => eddy_sql::create_table::normalize(&column.name),
            None => name,
        };
        if !seen.insert(name.clone()) {
            return Err(eddy_sql::SqlError::DuplicateColumn(name).into());
        }
        names.push(name);
    }
    Ok(names)
}
