//! TRUNCATE.

use datafusion::sql::sqlparser::ast::Truncate;
use eddy_sql::create_table::object_name;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub fn handle_truncate(engine: &Engine, truncate: &Truncate) -> Result<Output> {
    let tables = truncate
        .table_names
        .iter()
        .map(|target| {
            let name = object_name(&target.name)?;
            engine
                .catalog
                .table(&name)
                .ok_or(EddyError::UndefinedTable(name))
        })
        .collect::<Result<Vec<_>>>()?;
    for table in tables {
        table.truncate()?;
    }
    Ok(Output::Command(Tag::new("TRUNCATE TABLE")))
}
