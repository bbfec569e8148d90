//! DROP TABLE.

use datafusion::sql::sqlparser::ast::{ObjectName, ObjectType};
use eddy_sql::create_table::object_name;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub fn handle_drop(
    engine: &Engine,
    object_type: ObjectType,
    if_exists: bool,
    names: &[ObjectName],
    _cascade: bool,
) -> Result<Output> {
    if object_type != ObjectType::Table {
        return Err(EddyError::Unsupported(format!("DROP {object_type}")));
    }
    let names = names
        .iter()
        .map(object_name)
        .collect::<Result<Vec<_>, _>>()?;
    // Check every name first, so a failing DROP drops nothing.
    if !if_exists {
        if let Some(missing) = names.iter().find(|n| engine.catalog.table(n).is_none()) {
            return Err(EddyError::UndefinedTable(missing.clone()));
        }
    }
    for name in &names {
        engine.catalog.drop_table(name)?;
    }
    Ok(Output::Command(Tag::new("DROP TABLE")))
}
