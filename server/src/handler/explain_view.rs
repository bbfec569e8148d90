//! EXPLAIN CREATE MATERIALIZED VIEW ... and EXPLAIN <view>: the operator
//! tree of a view's dataflow, one operator a line, inputs indented below.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast::{CreateView, ObjectName};
use eddy_dataflow::OperatorStats;
use eddy_sql::create_table::object_name;

use super::{text_schema, Output};
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub fn schema() -> SchemaRef {
    text_schema(&["QUERY PLAN"])
}

pub async fn handle_explain_create(engine: &Engine, create: &CreateView) -> Result<Output> {
    let name = object_name(&create.name)?;
    let lowered = engine
        .plan_view(&create.query, &Default::default(), false)
        .await?;
    let mut lines = vec![format!("Materialized view {name}")];
    lines.extend(lowered.root.explain().iter().map(|l| format!("  {l}")));
    rows(lines)
}

/// EXPLAIN of a materialized view, or of a persistent query by its id
/// (`EXPLAIN CSAS_ENRICHED_7`, as in ksqlDB). With `analyze`, each
/// operator also shows the changes it has output and its time since the
/// server started.
pub async fn handle_explain_view(
    engine: &Engine,
    name: &ObjectName,
    analyze: bool,
) -> Result<Output> {
    let name = object_name(name)?;
    let (view, mut lines) = match engine.catalog.view(&name) {
        Some(view) => (view, vec![format!("Materialized view {name}")]),
        None => {
            let query = engine.catalog.query(&name).ok_or_else(|| {
                if engine.catalog.table(&name).is_some() {
                    EddyError::Unsupported(format!(
                        "EXPLAIN of table \"{name}\" (EXPLAIN shows a query, a materialized \
                         view or a persistent query)"
                    ))
                } else {
                    EddyError::UndefinedTable(name.clone())
                }
            })?;
            let def = query.def();
            let sink = def
                .sink_relation
                .and_then(|id| engine.catalog.relation_name(id))
                .unwrap_or_default();
            let lines = vec![
                format!("Persistent query {}", def.name),
                format!("  SQL: {}", def.sql),
                format!("  Writes: {sink}"),
            ];
            (query, lines)
        }
    };
    let name = view.name().to_owned();
    let def = view.def();
    if let Some(error) = &def.error {
        lines.push(format!("  (not maintained: {error})"));
    }
    let stats = engine.dataflow.stats(&name).await?;
    let operators = stats
        .as_ref()
        .map(|s| s.operators.as_slice())
        .unwrap_or(&[]);
    for (i, line) in def.explain.lines().enumerate() {
        let figures = operators
            .get(i)
            .map(|op| operator_figures(op, analyze))
            .unwrap_or_default();
        lines.push(match figures.is_empty() {
            true => format!("  {line}"),
            false => format!("  {line}  [{}]", figures.join("; ")),
        });
    }
    if !def.key_columns.is_empty() {
        let names: Vec<&str> = def
            .key_columns
            .iter()
            .filter_map(|&c| def.columns.get(c).map(|c| c.name.as_str()))
            .collect();
        lines.push(format!(
            "Key: {} (a filter fixing it is a lookup)",
            names.join(", ")
        ));
    }
    if let Some(stats) = stats {
        lines.push(format!(
            "Rows: {}, about {} bytes; operator state: {} entries, about {} bytes",
            stats.rows, stats.row_bytes, stats.state_entries, stats.state_bytes
        ));
        if analyze {
            let busy: std::time::Duration = stats.operators.iter().map(|op| op.busy).sum();
            lines.push(format!(
                "Time in operators since the server started: {:.3} ms",
                busy.as_secs_f64() * 1e3
            ));
        }
    }
    rows(lines)
}

/// What EXPLAIN shows beside one operator: its state, and with `analyze`
/// its output and time.
fn operator_figures(op: &OperatorStats, analyze: bool) -> Vec<String> {
    let mut figures = Vec::new();
    if analyze {
        figures.push(format!("rows out: {}", op.rows_out));
        figures.push(format!("time: {:.3} ms", op.busy.as_secs_f64() * 1e3));
    }
    if op.state_entries > 0 || analyze {
        figures.push(format!(
            "state: {} entries, about {} bytes",
            op.state_entries, op.state_bytes
        ));
    }
    figures
}

fn rows(lines: Vec<String>) -> Result<Output> {
    let schema = schema();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(lines))])
        .map_err(datafusion::error::DataFusionError::from)?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
        tag: "EXPLAIN",
    })
}
