//! CREATE MATERIALIZED VIEW.

use std::collections::HashSet;

use datafusion::sql::sqlparser::ast::CreateView;
use eddy_catalog::{CatalogError, ViewColumn, ViewDef};
use eddy_sql::create_table::object_name;
use eddy_sql::QueryClauses;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub async fn handle_create_view(
    engine: &Engine,
    create: &CreateView,
    clauses: &QueryClauses,
) -> Result<Output> {
    eddy_sql::check_query_clauses(clauses, true)?;
    if !create.materialized {
        return Err(EddyError::Unsupported(
            "CREATE VIEW (use CREATE MATERIALIZED VIEW)".into(),
        ));
    }
    if create.or_replace || create.or_alter {
        return Err(EddyError::Unsupported(
            "CREATE OR REPLACE MATERIALIZED VIEW".into(),
        ));
    }
    let name = object_name(&create.name)?;
    let tag = Output::Command(Tag::new("CREATE MATERIALIZED VIEW"));
    if engine.catalog.relation(&name).is_some() {
        return if create.if_not_exists {
            Ok(tag)
        } else {
            Err(CatalogError::DuplicateTable(name).into())
        };
    }
    let lowered = engine.plan_view(&create.query, clauses, false).await?;
    let schema = lowered.root.schema.clone();
    if !create.columns.is_empty() && create.columns.len() > schema.fields().len() {
        return Err(eddy_sql::SqlError::InvalidDefinition(
            "CREATE MATERIALIZED VIEW specifies too many column names".into(),
        )
        .into());
    }
    let mut columns = Vec::new();
    let mut seen = HashSet::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let name = match create.columns.get(i) {
            Some(column) => eddy_sql::create_table::normalize(&column.name),
            None => field.name().clone(),
        };
        if !seen.insert(name.clone()) {
            return Err(eddy_sql::SqlError::DuplicateColumn(name).into());
        }
        columns.push(ViewColumn {
            name,
            data_type: field.data_type().to_string(),
        });
    }
    let catalog = &engine.catalog;
    let key_columns = lowered
        .root
        .unique_key(&|id| match catalog.table_by_id(id) {
            Some(table) => Some(table.def().primary_key.clone()),
            None => catalog.view_by_id(id).map(|v| v.def().key_columns.clone()),
        })
        .unwrap_or_default();
    let id = engine.catalog.reserve_view(&name)?;
    let def = ViewDef {
        id,
        name,
        sql: eddy_sql::query_with_clauses(&create.query, clauses),
        columns,
        depends_on: lowered.depends_on,
        fingerprint: lowered.root.explain().join("\n"),
        error: None,
        sink_relation: None,
        postgres_literals: true,
        key_columns,
    };
    engine.dataflow.create_view(def, lowered.root).await?;
    Ok(tag)
}
