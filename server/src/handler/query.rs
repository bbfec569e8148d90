//! SELECT and EXPLAIN: run by DataFusion against the catalog.

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;

use super::Output;
use crate::engine::Engine;
use crate::error::Result;

pub async fn handle_query(
    engine: &Engine,
    statement: &Statement,
    plan: LogicalPlan,
) -> Result<Output> {
    if let Some(output) = super::lookup::try_lookup(engine, &plan).await? {
        return Ok(output);
    }
    // Before analysis a schema may hold a type coercion later changes
    // (`CASE WHEN c THEN 1 ELSE 2.5 END` is not a bigint).
    let plan = engine.analyze(plan)?;
    let schema = Arc::new(plan.schema().as_arrow().clone());
    let stream = engine.stream(plan).await?;
    let tag = match statement {
        Statement::Explain { .. } => "EXPLAIN",
        _ => "SELECT",
    };
    Ok(Output::Stream {
        schema,
        stream,
        tag,
    })
}
