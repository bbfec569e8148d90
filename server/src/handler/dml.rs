//! INSERT, UPDATE and DELETE on local tables.
//!
//! DataFusion plans each statement; its input plan yields the rows to write
//! (for INSERT), the new rows with their row keys (UPDATE), or the row keys
//! of the rows to delete (DELETE). The table then checks keys and
//! constraints and commits the change atomically.

use std::sync::Arc;

use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, WriteOp};
use eddy_catalog::split_row_keys;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub async fn handle_dml(engine: &Engine, dml: DmlStatement) -> Result<Output> {
    let name = dml.table_name.table().to_owned();
    if engine.catalog.view(&name).is_some() {
        return Err(EddyError::WrongObjectType(format!(
            "cannot change materialized view \"{name}\""
        )));
    }
    let table = engine
        .catalog
        .table(&name)
        .ok_or_else(|| EddyError::UndefinedTable(name.clone()))?;
    let op = dml.op.clone();
    if let WriteOp::Insert(insert_op) = &op {
        if *insert_op != InsertOp::Append {
            return Err(EddyError::Unsupported(format!("INSERT {insert_op}")));
        }
    }
    let batches = engine.collect(Arc::unwrap_or_clone(dml.input)).await?;
    let tag = match op {
        WriteOp::Insert(_) => {
            let count = table.insert(&batches)?;
            Tag::new("INSERT")
                .with_oid(0)
                .with_rows(count.rows as usize)
        }
        WriteOp::Update => {
            let mut keys = Vec::new();
            let mut rows = Vec::with_capacity(batches.len());
            for batch in &batches {
                let (batch_keys, batch_rows) = split_row_keys(batch)?;
                keys.extend(batch_keys);
                rows.push(batch_rows);
            }
            let count = table.update(&keys, &rows)?;
            Tag::new("UPDATE").with_rows(count.rows as usize)
        }
        WriteOp::Delete => {
            let mut keys = Vec::new();
            for batch in &batches {
                keys.extend(split_row_keys(batch)?.0);
            }
            let count = table.delete(&keys)?;
            Tag::new("DELETE").with_rows(count.rows as usize)
        }
        other => return Err(EddyError::Unsupported(format!("{other}"))),
    };
    Ok(Output::Command(tag))
}
