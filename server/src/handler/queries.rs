//! Running queries: SHOW QUERIES and TERMINATE. Each materialized view is
//! a query that runs until it is dropped; each persistent query (`CREATE
//! STREAM|TABLE ... AS SELECT`) runs until it is terminated.

use std::collections::BTreeMap;

use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

/// Offsets as `partition:offset` pairs.
pub fn offsets_text(offsets: &BTreeMap<i32, i64>) -> String {
    offsets
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of `SHOW QUERIES`.
pub const QUERY_COLUMNS: [&str; 12] = [
    "query_id",
    "kind",
    "status",
    "sources",
    "sink",
    "offsets",
    "records",
    "records_per_second",
    "dead_letters",
    "records_written",
    "broker_faults",
    "late_records",
];

/// One row per running query, in the columns of `SHOW QUERIES`.
pub fn query_rows(engine: &Engine) -> Vec<Vec<String>> {
    let progress = engine.dataflow.source_progress();
    let written = engine.dataflow.query_progress();
    let late = engine.dataflow.late_rows();
    let mut rows = Vec::new();
    for view in engine
        .catalog
        .views()
        .into_iter()
        .chain(engine.catalog.queries())
    {
        let def = view.def();
        let output = def
            .sink_relation
            .map(|_| written.get(&def.id).cloned().unwrap_or_default());
        let mut sources = Vec::new();
        let mut offsets = Vec::new();
        let mut faults = Vec::new();
        let (mut records, mut rate, mut dead, mut broker_faults) = (0u64, 0f64, 0u64, 0u64);
        for id in &def.depends_on {
            let Some(name) = engine.catalog.relation_name(*id) else {
                continue;
            };
            if let Some(p) = progress.get(id) {
                offsets.push(format!("{name}[{}]", offsets_text(&p.offsets)));
                records += p.records;
                rate += p.rate;
                dead += p.dead_letters;
                broker_faults += p.broker_faults;
                if let Some(fault) = &p.fault {
                    faults.push(format!("{name}: {fault}"));
                }
            }
            sources.push(name);
        }
        let write_error = output.as_ref().and_then(|o| o.error.as_ref());
        let status = match (&def.error, write_error, faults.is_empty()) {
            (Some(error), _, _) => format!("ERROR: {error}"),
            (None, Some(error), _) => format!("RUNNING (retrying a write: {error})"),
            (None, None, false) => format!("RUNNING ({})", faults.join("; ")),
            (None, None, true) => "RUNNING".to_owned(),
        };
        let (kind, sink) = match def.sink_relation {
            Some(id) => (
                "PERSISTENT",
                engine.catalog.relation_name(id).unwrap_or_default(),
            ),
            None => ("MATERIALIZED VIEW", def.name.clone()),
        };
        rows.push(vec![
            def.name.clone(),
            kind.to_owned(),
            status,
            sources.join(", "),
            sink,
            offsets.join(" "),
            records.to_string(),
            format!("{rate:.1}"),
            dead.to_string(),
            output.map_or(String::new(), |o| o.written.to_string()),
            broker_faults.to_string(),
            late.get(&def.id).copied().unwrap_or(0).to_string(),
        ]);
    }
    // A view or query being created shows how far its backfill is.
    for backfill in engine.dataflow.backfills() {
        let sources: Vec<String> = backfill
            .depends_on
            .iter()
            .filter_map(|id| engine.catalog.relation_name(*id))
            .collect();
        let kind = match backfill.persistent {
            true => "PERSISTENT",
            false => "MATERIALIZED VIEW",
        };
        let mut row = vec![
            backfill.name.clone(),
            kind.to_owned(),
            format!("BACKFILLING {}", backfill.describe()),
            sources.join(", "),
            String::new(),
            String::new(),
            backfill.rows_done.to_string(),
            format!("{:.1}", backfill.rate()),
        ];
        row.resize(QUERY_COLUMNS.len(), String::new());
        rows.push(row);
    }
    // Push queries run while their client reads them.
    for push in engine.dataflow.push_queries() {
        let sources: Vec<String> = push
            .depends_on
            .iter()
            .filter_map(|id| engine.catalog.relation_name(*id))
            .collect();
        let mut row = vec![
            format!("push_{}", push.id),
            "PUSH".to_owned(),
            "RUNNING".to_owned(),
            sources.join(", "),
            push.statement,
        ];
        row.resize(QUERY_COLUMNS.len(), String::new());
        rows.push(row);
    }
    rows
}

/// `TERMINATE id` stops one persistent query, `TERMINATE ALL` every one.
/// The relations they wrote stay, with their topics.
pub async fn handle_terminate(engine: &Engine, query: Option<String>) -> Result<Output> {
    let ids = match query {
        None => engine
            .catalog
            .queries()
            .iter()
            .map(|q| q.def().id)
            .collect(),
        Some(query) => match engine.catalog.query(&query) {
            Some(found) => vec![found.def().id],
            None => {
                let name = query.to_lowercase();
                if engine.catalog.view(&name).is_some() {
                    return Err(EddyError::WrongObjectType(format!(
                        "{query} is a materialized view; DROP MATERIALIZED VIEW {name} stops it"
                    )));
                }
                return Err(EddyError::UndefinedQuery(query));
            }
        },
    };
    engine.dataflow.drop_views(ids).await?;
    Ok(Output::Command(Tag::new("TERMINATE")))
}
