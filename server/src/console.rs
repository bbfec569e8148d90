//! The web console's page and the JSON it polls: sources, views and
//! queries with their status and rates, each view's operator graph with
//! its counters, a view's rows for charting, and dead letters. The page
//! is one file, built into the binary.

use std::collections::HashMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use eddy_sql::EddyStatement;
use serde_json::{json, Value};

use eddy_catalog::kafka::DEAD_LETTERS as DEAD_LETTERS_TABLE;

use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::handler::{self, queries};
use crate::http::Reply;

const PAGE: &str = include_str!("console.html");

/// Rows of a view the console shows and charts at most.
const VIEW_ROWS: usize = 200;

/// Dead letters the console lists, newest first.
const DEAD_LETTERS: usize = 20;

pub async fn route(engine: &Engine, path: &str, params: &HashMap<String, String>) -> Reply {
    let name = params.get("name").map(String::as_str).unwrap_or("");
    let answer = match path {
        "/" | "/index.html" => return Reply::ok("text/html; charset=utf-8", PAGE.to_owned()),
        "/api/overview" => Ok(overview(engine)),
        "/api/graph" => graph(engine, name).await,
        "/api/rows" => view_rows(engine, name).await,
        "/api/dead_letters" => dead_letters(engine).await,
        _ => return Reply::not_found(path),
    };
    match answer {
        Ok(value) => Reply::json(&value),
        Err(EddyError::UndefinedTable(name)) => Reply::not_found(&name),
        Err(error) => Reply::json(&json!({ "error": error.to_string() })),
    }
}

/// Sources, running queries (views among them) and server figures.
fn overview(engine: &Engine) -> Value {
    let progress = engine.dataflow.source_progress();
    let mut sources: Vec<Value> = engine
        .catalog
        .source_relations()
        .iter()
        .map(|table| {
            let def = table.def();
            let feed = match (&def.kafka, &def.generator) {
                (Some(kafka), _) => format!("topic {}", kafka.topic),
                (None, Some(generator)) => generator.label(),
                (None, None) => String::new(),
            };
            let p = progress.get(&def.id).cloned().unwrap_or_default();
            let lag: i64 = p
                .fetched_ends
                .iter()
                .map(|(partition, end)| {
                    (end - p.offsets.get(partition).copied().unwrap_or(0)).max(0)
                })
                .sum();
            json!({
                "name": table.name(),
                "kind": if table.is_stream() { "stream" } else { "table" },
                "feed": feed,
                "records": p.records,
                "rate": p.rate,
                "dead_letters": p.dead_letters,
                "lag": lag,
                "status": p.fault.map_or("RUNNING".to_owned(), |f| format!("RUNNING ({f})")),
            })
        })
        .collect();
    sources.sort_by_key(|s| s["name"].as_str().unwrap_or("").to_owned());
    let queries: Vec<Value> = queries::query_rows(engine)
        .into_iter()
        .map(|row| {
            let fields = queries::QUERY_COLUMNS
                .iter()
                .zip(row)
                .map(|(name, value)| ((*name).to_owned(), Value::String(value)));
            Value::Object(fields.collect())
        })
        .collect();
    let counters = engine.dataflow.counters();
    let load = std::sync::atomic::Ordering::Relaxed;
    json!({
        "sources": sources,
        "queries": queries,
        "server": {
            "connections": crate::metrics::connections(),
            "epochs": counters.epochs.load(load),
            "checkpoints": counters.checkpoints.load(load),
        },
    })
}

/// A view's or query's operators, parents before their inputs, each with
/// the index of the operator it feeds.
async fn graph(engine: &Engine, name: &str) -> Result<Value> {
    let view = engine
        .catalog
        .view(name)
        .or_else(|| engine.catalog.query(name))
        .ok_or_else(|| EddyError::UndefinedTable(name.to_owned()))?;
    let def = view.def();
    let stats = tokio::time::timeout(
        crate::metrics::STATS_WAIT,
        engine.dataflow.stats(view.name()),
    )
    .await
    .map_err(|_| EddyError::Internal("the runtime is busy".into()))??;
    let operators = stats.map(|s| s.operators).unwrap_or_default();
    let mut parents: Vec<usize> = Vec::new();
    let nodes: Vec<Value> = operators
        .iter()
        .enumerate()
        .map(|(i, op)| {
            parents.truncate(op.depth);
            let feeds = parents.last().copied();
            parents.push(i);
            json!({
                "id": i,
                "feeds": feeds,
                "describe": op.describe,
                "rows_out": op.rows_out,
                "busy_ms": op.busy.as_secs_f64() * 1e3,
                "state_entries": op.state_entries,
                "state_bytes": op.state_bytes,
            })
        })
        .collect();
    Ok(json!({ "name": def.name, "error": def.error, "operators": nodes }))
}

/// Up to [`VIEW_ROWS`] of a view's rows, as text, with which columns are
/// numbers.
async fn view_rows(engine: &Engine, name: &str) -> Result<Value> {
    if engine.catalog.view(name).is_none() && engine.catalog.table(name).is_none() {
        return Err(EddyError::UndefinedTable(name.to_owned()));
    }
    let sql = format!(
        "SELECT * FROM \"{}\" LIMIT {VIEW_ROWS}",
        name.replace('"', "\"\"")
    );
    let (columns, rows) = select(engine, &sql).await?;
    let total = select(
        engine,
        &format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")),
    )
    .await?
    .1
    .first()
    .and_then(|row| row.first().cloned().flatten())
    .and_then(|n| n.parse::<u64>().ok())
    .unwrap_or(0);
    Ok(json!({ "name": name, "columns": columns, "rows": rows, "row_count": total }))
}

/// The newest dead letters.
async fn dead_letters(engine: &Engine) -> Result<Value> {
    // The table is made when the first Kafka relation is.
    if engine.catalog.table(DEAD_LETTERS_TABLE).is_none() {
        return Ok(json!({ "columns": [], "rows": [] }));
    }
    let sql = format!(
        "SELECT source, topic, kafka_partition, kafka_offset, error, received_at \
         FROM {DEAD_LETTERS_TABLE} ORDER BY received_at DESC LIMIT {DEAD_LETTERS}"
    );
    let (columns, rows) = select(engine, &sql).await?;
    Ok(json!({ "columns": columns, "rows": rows }))
}

/// Runs a query as a session with default settings would; returns its
/// columns (name, type, whether a number) and rows as text.
async fn select(engine: &Engine, sql: &str) -> Result<(Vec<Value>, Vec<Vec<Option<String>>>)> {
    let statement: EddyStatement = eddy_sql::parse_sql(sql)?
        .into_iter()
        .next()
        .ok_or_else(|| EddyError::Internal("no statement".into()))?;
    let output = handler::execute(
        engine,
        &mut crate::privileges::internal_session(),
        &statement,
        None,
    )
    .await?
    .collected()
    .await?;
    let handler::Output::Rows {
        schema, batches, ..
    } = output
    else {
        return Err(EddyError::Internal(
            "the console's query returned no rows".into(),
        ));
    };
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            json!({
                "name": eddy_sql::display_name(f.name()),
                "type": f.data_type().to_string(),
                "numeric": is_number(f.data_type()),
            })
        })
        .collect();
    let mut rows = Vec::new();
    for batch in &batches {
        for r in 0..batch.num_rows() {
            let row = batch
                .columns()
                .iter()
                .map(|column| {
                    (!column.is_null(r))
                        .then(|| array_value_to_string(column, r).unwrap_or_default())
                })
                .collect();
            rows.push(row);
        }
    }
    Ok((columns, rows))
}

fn is_number(data_type: &DataType) -> bool {
    data_type.is_numeric()
}
