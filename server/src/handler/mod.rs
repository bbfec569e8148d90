//! Statement dispatch: one `match` sends each statement kind to its handler,
//! one file per kind.

mod access;
mod create_query;
mod create_table;
mod create_view;
pub mod cursor;
mod describe;
mod dml;
mod drop;
mod explain_view;
mod flush;
mod functions;
pub mod lookup;
mod print;
pub mod push;
pub mod queries;
mod query;
pub mod set;
mod show_sources;
mod show_tables;
mod transaction;
mod truncate;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{DescribeAlias, SetExpr, Statement};
use eddy_sql::EddyStatement;
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
    /// A query's rows, computed as the client reads them.
    Stream {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        tag: &'static str,
    },
    Command(Tag),
    TransactionStart(Tag),
    TransactionEnd(Tag),
}

impl Output {
    /// This output with a query's rows computed to the end.
    pub async fn collected(self) -> Result<Output> {
        match self {
            Output::Stream {
                schema,
                stream,
                tag,
            } => Ok(Output::Rows {
                schema,
                batches: datafusion::physical_plan::common::collect(stream).await?,
                tag,
            }),
            other => Ok(other),
        }
    }
}

/// How a statement is run: planned by DataFusion, or handled by Eddy.
pub enum Kind {
    /// Queries, EXPLAIN, INSERT, UPDATE and DELETE.
    Planned,
    /// Everything else.
    Direct,
}

pub fn kind(statement: &EddyStatement) -> Kind {
    let EddyStatement::Sql(statement) = statement else {
        return Kind::Direct;
    };
    match statement.as_ref() {
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
    statement: &EddyStatement,
    plan: Option<LogicalPlan>,
) -> Result<Output> {
    crate::metrics::statement(&statement_kind(statement));
    crate::privileges::authorize(engine, vars, statement)?;
    let session = Arc::new(vars.clone());
    let output = set::in_session(session.clone(), run(engine, vars, statement, plan)).await?;
    // Rows computed as the client reads them see the session too.
    let output = match output {
        Output::Stream {
            schema,
            stream,
            tag,
        } => Output::Stream {
            schema,
            stream: set::in_session_stream(session, stream),
            tag,
        },
        other => other,
    };
    // Only once the statement has run, so a failed one changes nothing.
    if let EddyStatement::Sql(sql) = statement {
        set::apply_set_config(sql, vars)?;
    }
    if writes(statement) {
        transaction::note_write(vars);
    }
    Ok(output)
}

/// Runs a prepared key lookup with its parameters; `None` when it must run
/// as a query after all.
pub async fn execute_lookup(
    engine: &Engine,
    vars: &HashMap<String, String>,
    statement: &EddyStatement,
    lookup: &lookup::Lookup,
    params: &ParamValues,
) -> Result<Option<Output>> {
    crate::privileges::authorize(engine, vars, statement)?;
    let output = lookup.run(engine, Some(params)).await?;
    if output.is_some() {
        crate::metrics::statement("SELECT");
    }
    Ok(output)
}

/// The statement's kind, as metrics count it. A plain SELECT, which may
/// run thousands of times a second, is named without formatting it.
fn statement_kind(statement: &EddyStatement) -> String {
    if let EddyStatement::Sql(sql) = statement {
        if let Statement::Query(query) = sql.as_ref() {
            if query.with.is_none() && matches!(*query.body, SetExpr::Select(_)) {
                return "SELECT".into();
            }
        }
    }
    crate::metrics::statement_kind(&statement_prefix(statement))
}

/// Whether a statement changes data or the catalog, which no ROLLBACK TO
/// can undo.
fn writes(statement: &EddyStatement) -> bool {
    match statement {
        EddyStatement::CreateRelation(_)
        | EddyStatement::Access(_)
        | EddyStatement::InsertQuery { .. }
        | EddyStatement::CreateView { .. }
        | EddyStatement::Drop(_)
        | EddyStatement::Terminate(_) => true,
        EddyStatement::Sql(sql) => matches!(
            sql.as_ref(),
            Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Delete(_)
                | Statement::Truncate(_)
        ),
        _ => false,
    }
}

async fn run(
    engine: &Engine,
    vars: &mut HashMap<String, String>,
    statement: &EddyStatement,
    plan: Option<LogicalPlan>,
) -> Result<Output> {
    let sql = match statement {
        EddyStatement::Sql(sql) => sql.as_ref(),
        EddyStatement::Query(query) => {
            let plan = match plan {
                Some(plan) => plan,
                None => engine.plan_clause_query(query).await?,
            };
            let statement = Statement::Query(query.query.clone());
            return query::handle_query(engine, &statement, plan).await;
        }
        EddyStatement::Access(access) => return access::handle_access(engine, vars, access),
        EddyStatement::CreateRelation(create) => {
            return create_table::handle_create_relation(engine, create).await
        }
        EddyStatement::CreateView { create, clauses } => {
            return create_view::handle_create_view(engine, create, clauses).await
        }
        EddyStatement::Drop(drop) => return drop::handle_drop(engine, drop).await,
        EddyStatement::Terminate(id) => {
            return queries::handle_terminate(engine, id.as_ref().map(|id| id.value.clone())).await
        }
        EddyStatement::Flush => return flush::handle_flush(engine).await,
        EddyStatement::Show { listing, extended } => {
            return show_sources::handle_show(engine, *listing, *extended)
        }
        EddyStatement::Describe { name, extended } => {
            return describe::handle_describe(engine, name, *extended)
        }
        EddyStatement::DescribeFunction(name) => {
            return functions::handle_describe_function(engine, name)
        }
        EddyStatement::ExplainAnalyze(name) => {
            return explain_view::handle_explain_view(engine, name, true).await
        }
        EddyStatement::Move(fetch) => return cursor::handle_fetch(vars, fetch, true, None).await,
        EddyStatement::FetchWithTimeout { fetch, timeout } => {
            return cursor::handle_fetch(vars, fetch, false, Some(*timeout)).await
        }
        EddyStatement::DeclareSubscribe {
            name,
            hold,
            subscribe,
        } => return cursor::handle_declare_subscribe(engine, vars, name, *hold, subscribe).await,
        EddyStatement::DeclareEmitChanges { name, hold, query } => {
            return cursor::handle_declare_emit_changes(engine, vars, name, *hold, query).await
        }
        EddyStatement::InsertQuery { target, query } => {
            return create_query::handle_insert_query(engine, target, query).await
        }
        EddyStatement::Subscribe(_) | EddyStatement::CopySubscribe(_) => {
            return Err(EddyError::Unsupported(
                "SUBSCRIBE together with other statements; send it alone".into(),
            ))
        }
        EddyStatement::Print(_) => {
            return Err(EddyError::Unsupported(
                "PRINT together with other statements; send it alone".into(),
            ))
        }
    };
    if let Kind::Planned = kind(statement) {
        let plan = match plan {
            Some(plan) => plan,
            None => engine.plan(sql).await?,
        };
        if let (Statement::Insert(insert), LogicalPlan::Dml(dml)) = (sql, &plan) {
            if let Some(query) = create_query::persistent_insert(engine, insert, dml) {
                return create_query::handle_insert_query(engine, &query.0, &query.1).await;
            }
        }
        return match plan {
            LogicalPlan::Dml(dml) => dml::handle_dml(engine, dml).await,
            plan => query::handle_query(engine, sql, plan).await,
        };
    }
    match sql {
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
        } => explain_view::handle_explain_view(engine, table_name, false).await,
        Statement::ShowViews {
            materialized: true, ..
        } => show_tables::handle_show_views(engine),
        Statement::Truncate(truncate) => truncate::handle_truncate(engine, truncate),
        Statement::Set(set) => set::handle_set(vars, set),
        Statement::ShowVariable { variable } => set::handle_show(vars, variable),
        Statement::Reset(reset) => set::handle_reset(vars, reset),
        Statement::StartTransaction { .. } => Ok(transaction::handle_begin(vars)),
        Statement::Commit { .. } => Ok(transaction::handle_commit(vars)),
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => transaction::handle_rollback_to(vars, name),
        Statement::Rollback { .. } => Ok(transaction::handle_rollback(vars)),
        Statement::Savepoint { name } => transaction::handle_savepoint(vars, name),
        Statement::ReleaseSavepoint { name } => transaction::handle_release(vars, name),
        Statement::Declare { stmts } => cursor::handle_declare(engine, vars, stmts, plan).await,
        Statement::Fetch { .. } => cursor::handle_fetch(vars, sql, false, None).await,
        Statement::Close { cursor } => cursor::handle_close(vars, cursor),
        Statement::Discard { .. } => Ok(Output::Command(Tag::new("DISCARD ALL"))),
        other => Err(EddyError::Unsupported(format!(
            "statement \"{}\"",
            statement_head(other)
        ))),
    }
}

/// The schema of the rows a statement returns, if any, without running it.
pub fn result_schema(statement: &EddyStatement, plan: Option<&LogicalPlan>) -> Option<SchemaRef> {
    // DECLARE's plan is its cursor's: the statement itself returns no rows.
    if matches!(statement, EddyStatement::Sql(s) if matches!(**s, Statement::Declare { .. })) {
        return None;
    }
    if let Some(plan) = plan {
        return match plan {
            LogicalPlan::Dml(_) => None,
            plan => Some(Arc::new(plan.schema().as_arrow().clone())),
        };
    }
    match statement {
        EddyStatement::Show { listing, extended } => {
            Some(show_sources::schema(*listing, *extended))
        }
        EddyStatement::Describe { extended, .. } => Some(describe::schema(*extended)),
        EddyStatement::DescribeFunction(_) => Some(functions::describe_schema()),
        EddyStatement::ExplainAnalyze(_) => Some(explain_view::schema()),
        EddyStatement::Sql(sql) => match sql.as_ref() {
            Statement::ShowViews { .. } => Some(show_tables::schema()),
            Statement::Explain { .. } | Statement::ExplainTable { .. } => {
                Some(explain_view::schema())
            }
            Statement::ShowVariable { variable } => Some(set::show_schema(variable)),
            _ => None,
        },
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

/// The start of a statement's text (its first 64 bytes or so), without
/// formatting the rest of a long statement.
fn statement_prefix(statement: &EddyStatement) -> String {
    struct Prefix(String);
    impl std::fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.push_str(s);
            match self.0.len() >= 64 {
                true => Err(std::fmt::Error),
                false => Ok(()),
            }
        }
    }
    let mut prefix = Prefix(String::new());
    let _ = std::fmt::Write::write_fmt(&mut prefix, format_args!("{statement}"));
    prefix.0
}

/// The first words of a statement, to name it in errors.
fn statement_head(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    words.join(" ")
}
