//! SELECT and EXPLAIN: run by DataFusion against the catalog.

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;

use eddy_sql::EddyQuery;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

/// A one-off query with ksqlDB clauses: each is refused with its reason.
pub fn handle_clause_query(query: &EddyQuery) -> Result<Output> {
    eddy_sql::check_query_clauses(&query.clauses, false)?;
    Err(EddyError::Internal(format!(
        "query clauses passed their check: {query}"
    )))
}

pub async fn handle_query(
    engine: &Engine,
    statement: &Statement,
    plan: LogicalPlan,
) -> Result<Output> {
    // Before analysis a schema may hold a type coercion later changes
    // (`CASE WHEN c THEN 1 ELSE 2.5 END` is not a bigint).
    let plan = engine.analyze(plan)?;
    let schema = Arc::new(plan.schema().as_arrow().clone());
    let batches = engine.collect(plan).await?;
    let tag = match statement {
        Statement::Explain { .. } => "EXPLAIN",
        _ => "SELECT",
    };
    Ok(Output::Rows {
        schema,
        batches,
        tag,
    })
}
