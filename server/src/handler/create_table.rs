//! CREATE TABLE.

use datafusion::sql::sqlparser::ast::CreateTable;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub fn handle_create_table(engine: &Engine, create: &CreateTable) -> Result<Output> {
    if !matches!(
        create.table_options,
        datafusion::sql::sqlparser::ast::CreateTableOptions::None
    ) {
        return Err(EddyError::Unsupported(
            "CREATE TABLE with WITH (...) options (Kafka-backed tables)".into(),
        ));
    }
    let def = eddy_sql::bind_create_table(create)?;
    engine.catalog.create_table(def, create.if_not_exists)?;
    Ok(Output::Command(Tag::new("CREATE TABLE")))
}
