//! TRUNCATE.

use datafusion::sql::sqlparser::ast::Truncate;
use eddy_catalog::Relation;
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
            match engine.catalog.relation(&name) {
                Some(Relation::Table(table)) => {
                    super::create_table::refuse_source_write(&table, "TRUNCATE")?;
                    Ok(table)
                }
                Some(Relation::View(_)) => Err(EddyError::WrongObjectType(format!(
                    "\"{name}\" is not a table"
                ))),
                None if engine.catalog.plain_view(&name).is_some() => Err(
                    EddyError::WrongObjectType(format!("\"{name}\" is not a table")),
                ),
                None => Err(EddyError::UndefinedTable(name)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    for table in tables {
        table.truncate()?;
    }
    Ok(Output::Command(Tag::new("TRUNCATE TABLE")))
}
