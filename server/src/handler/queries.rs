//! Running queries: SHOW QUERIES and TERMINATE. Each materialized view is
//! a query that runs until it is dropped.

use super::show_sources::offsets_text;
use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

/// One row per running query, in the columns of `SHOW QUERIES`.
pub fn query_rows(engine: &Engine) -> Vec<Vec<String>> {
    let progress = engine.dataflow.source_progress();
    let mut rows = Vec::new();
    for view in engine.catalog.views() {
        let def = view.def();
        let status = match &def.error {
            Some(error) => format!("ERROR: {error}"),
            None => "RUNNING".to_owned(),
        };
        let mut sources = Vec::new();
        let mut offsets = Vec::new();
        let (mut records, mut rate, mut dead) = (0u64, 0f64, 0u64);
        for id in &def.depends_on {
            let Some(name) = engine.catalog.relation_name(*id) else {
                continue;
            };
            if let Some(p) = progress.get(id) {
                offsets.push(format!("{name}[{}]", offsets_text(&p.offsets)));
                records += p.records;
                rate += p.rate;
                dead += p.dead_letters;
            }
            sources.push(name);
        }
        rows.push(vec![
            def.name.clone(),
            "MATERIALIZED VIEW".to_owned(),
            status,
            sources.join(", "),
            def.name.clone(),
            offsets.join(" "),
            records.to_string(),
            format!("{rate:.1}"),
            dead.to_string(),
        ]);
    }
    rows
}

pub async fn handle_terminate(engine: &Engine, query: Option<String>) -> Result<Output> {
    let Some(query) = query else {
        return Ok(Output::Command(pgwire::api::results::Tag::new("TERMINATE")));
    };
    let name = query.to_lowercase();
    if engine.catalog.view(&name).is_some() {
        return Err(EddyError::WrongObjectType(format!(
            "{query} is a materialized view; DROP MATERIALIZED VIEW {name} stops it"
        )));
    }
    Err(EddyError::UndefinedQuery(query))
}
