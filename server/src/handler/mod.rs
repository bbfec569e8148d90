//! Statement dispatch: one `match` sends each statement kind to its handler,
//! one file per kind.

mod create_query;
mod create_table;
mod create_view;
mod describe;
mod dml;
mod drop;
mod explain_view;
mod flush;
mod queries;
mod query;
mod set;
mod show_sources;
mod show_tables;
mod transaction;
mod truncate;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{DescribeAlias, Statement};
use pgwire::api::results::Tag;

use crate::engine::Engine;
use crate::error::{EddyError, Result};

/// What a statement produced, before it is encoded for the wire.
pub enum Output {
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        tag: &'static str,
    },
    Command(Tag),
    TransactionStart(Tag),
    TransactionEnd(Tag),
}

/// How a statement is run: planned by DataFusion, or handled by Eddy.
pub enum Kind {
    /// Queries, EXPLAIN, INSERT, UPDATE and DELETE.
    Planned,
    /// Everything else.
    Direct,
}

pub fn kind(statement: &Statement) -> Kind {
    match statement {
        Statement::Explain { statement, .. } if matches!(**statement, Statement::CreateView(_)) => {
            Kind::Direct
        }
        Statement::Query(_)
        | Statement::Explain { .. }
        | Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_) => Kind::Planned,
        _ => Kind::Direct,
    }
}

/// Runs one statement. `plan` is the statement's DataFusion plan, with any
/// parameters already bound, for statements of kind [`Kind::Planned`].
#[tracing::instrument(level = "debug", skip_all)]
pub async fn execute(
    engine: &Engine,
    vars: &mut HashMap<String, String>,
    statement: &Statement,
    plan: Option<LogicalPlan>,
) -> Result<Output> {
    if let Kind::Planned = kind(statement) {
        let plan = match plan {
            Some(plan) => plan,
            None => engine.plan(statement).await?,
        };
        return match plan {
            LogicalPlan::Dml(dml) => dml::handle_dml(engine, dml).await,
            plan => query::handle_query(engine, statement, plan).await,
        };
    }
    match statement {
        Statement::CreateTable(create) => create_table::handle_create_table(engine, create).await,
        Statement::CreateView(create) => create_view::handle_create_view(engine, create).await,
        Statement::Explain { statement, .. } => match statement.as_ref() {
            Statement::CreateView(create) => {
                explain_view::handle_explain_create(engine, create).await
            }
            _ => Err(EddyError::Internal("EXPLAIN dispatched wrongly".into())),
        },
        Statement::ExplainTable {
            describe_alias: DescribeAlias::Explain,
            table_name,
            ..
        } => explain_view::handle_explain_view(engine, table_name).await,
        Statement::ExplainTable {
            table_name,
            hive_format,
            ..
        } => describe::handle_describe(engine, table_name, hive_format.is_some()),
        statement if eddy_sql::as_terminate(statement).is_some() => {
            queries::handle_terminate(engine, eddy_sql::as_terminate(statement).flatten()).await
        }
        statement if eddy_sql::is_flush(statement) => flush::handle_flush(engine).await,
        Statement::ShowViews {
            materialized: true, ..
        } => show_tables::handle_show_views(engine),
        Statement::Drop {
            object_type,
            if_exists,
            names,
            cascade,
            purge,
            ..
        } => drop::handle_drop(engine, *object_type, *if_exists, names, *cascade, *purge).await,
        Statement::Truncate(truncate) => truncate::handle_truncate(engine, truncate),
        Statement::ShowTables { .. } => show_tables::handle_show_tables(engine),
        Statement::Set(set) => set::handle_set(vars, set),
        Statement::ShowVariable { variable } => match show_sources::listing(variable) {
            Some(listing) => show_sources::handle_show(engine, listing),
            None => set::handle_show(vars, variable),
        },
        Statement::Reset(reset) => set::handle_reset(vars, reset),
        Statement::StartTransaction { .. } => Ok(transaction::handle_begin()),
        Statement::Commit { .. } => Ok(transaction::handle_commit()),
        Statement::Rollback { .. } => Ok(transaction::handle_rollback()),
        Statement::Discard { .. } => Ok(Output::Command(Tag::new("DISCARD ALL"))),
        other => Err(EddyError::Unsupported(format!(
            "statement \"{}\"",
            statement_head(other)
        ))),
    }
}

/// The schema of the rows a statement returns, if any, without running it.
pub fn result_schema(statement: &Statement, plan: Option<&LogicalPlan>) -> Option<SchemaRef> {
    match (statement, plan) {
        (_, Some(LogicalPlan::Dml(_))) => None,
        (_, Some(plan)) => Some(Arc::new(plan.schema().as_arrow().clone())),
        (Statement::ShowTables { .. }, _) => Some(show_tables::schema()),
        (Statement::ShowViews { .. }, _) => Some(show_tables::schema()),
        (
            Statement::ExplainTable {
                describe_alias: DescribeAlias::Describe | DescribeAlias::Desc,
                hive_format,
                ..
            },
            None,
        ) => Some(describe::schema(hive_format.is_some())),
        (Statement::Explain { .. } | Statement::ExplainTable { .. }, None) => {
            Some(explain_view::schema())
        }
        (Statement::ShowVariable { variable }, _) => Some(
            show_sources::listing(variable)
                .map(show_sources::schema)
                .unwrap_or_else(|| set::show_schema(variable)),
        ),
        _ => None,
    }
}

/// A one-column text schema.
fn text_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// A result of text rows (one `Vec` per row) in `schema`, whose columns
/// are all text.
fn text_rows(schema: SchemaRef, rows: &[Vec<String>], tag: &'static str) -> Result<Output> {
    let columns: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|i| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r[i]))) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(datafusion::error::DataFusionError::from)?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
        tag,
    })
}

/// The first words of a statement, to name it in errors.
fn statement_head(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    words.join(" ")
}
