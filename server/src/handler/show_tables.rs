//! SHOW TABLES.

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
    let names = engine.catalog.table_names();
    let schema = schema();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(names))])
        .map_err(datafusion::error::DataFusionError::from)?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
        tag: "SHOW",
    })
}
