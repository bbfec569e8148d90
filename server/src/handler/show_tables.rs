//! SHOW TABLES and SHOW MATERIALIZED VIEWS.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;

use super::{text_schema, Output};
use crate::engine::Engine;
use crate::error::Result;

pub fn schema() -> SchemaRef {
    text_schema(&["name"])
}

pub fn handle_show_tables(engine: &Engine) -> Result<Output> {
    // Streams are listed by SHOW STREAMS.
    let tables = engine
        .catalog
        .table_names()
        .into_iter()
        .filter(|name| engine.catalog.table(name).is_none_or(|t| !t.is_stream()))
        .collect();
    names(tables)
}

pub fn handle_show_views(engine: &Engine) -> Result<Output> {
    names(engine.catalog.view_names())
}

fn names(names: Vec<String>) -> Result<Output> {
    let schema = schema();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(names))])
        .map_err(datafusion::error::DataFusionError::from)?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
        tag: "SHOW",
    })
}
