//! INSERT, UPDATE and DELETE on local tables.
//!
//! DataFusion plans each statement; its input plan yields the rows to write
//! (for INSERT), the new rows with their row keys (UPDATE), or the row keys
//! of the rows to delete (DELETE). The table then checks keys and
//! constraints and commits the change atomically.

use std::sync::Arc;

use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, WriteOp};
use eddy_catalog::kafka::SourceKind;
use eddy_catalog::split_row_keys;
use eddy_dataflow::kafka::format::RecordCodec;
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
    if table.def().generator.is_some() {
        super::create_table::refuse_source_write(&table, &op.to_string().to_uppercase())?;
    }
    if table.def().kafka.is_some() {
        if !matches!(op, WriteOp::Insert(_)) {
            super::create_table::refuse_source_write(&table, &op.to_string().to_uppercase())?;
        }
        let batches = engine.collect(Arc::unwrap_or_clone(dml.input)).await?;
        let rows = produce(engine, &table, &batches).await?;
        return Ok(Output::Command(
            Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
        ));
    }
    let batches = engine.collect(Arc::unwrap_or_clone(dml.input)).await?;
    let tag = match op {
        WriteOp::Insert(_) => {
            // Table writes wait for a new view's snapshot, whose epoch may wait
            // for other statements: wait off the runtime's workers.
            let count = tokio::task::block_in_place(|| table.insert(&batches))?;
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
            let count = tokio::task::block_in_place(|| table.update(&keys, &rows))?;
            Tag::new("UPDATE").with_rows(count.rows as usize)
        }
        WriteOp::Delete => {
            let mut keys = Vec::new();
            for batch in &batches {
                keys.extend(split_row_keys(batch)?.0);
            }
            let count = tokio::task::block_in_place(|| table.delete(&keys))?;
            Tag::new("DELETE").with_rows(count.rows as usize)
        }
        other => return Err(EddyError::Unsupported(format!("{other}"))),
    };
    Ok(Output::Command(tag))
}

/// INSERT into a Kafka relation: produces each row to its topic, keyed and
/// formatted as the relation declares, and waits for the brokers to
/// acknowledge them. The rows show once the relation ingests them.
async fn produce(
    engine: &Engine,
    table: &eddy_catalog::StoredTable,
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Result<u64> {
    let kafka = engine.kafka()?;
    let codec = RecordCodec::new(table.def())
        .ok_or_else(|| EddyError::Internal("Kafka relation without a codec".into()))?;
    let topic = &codec.kafka().topic;
    let mut records = Vec::new();
    for batch in batches {
        if codec.kafka().kind == SourceKind::Table {
            for &k in &codec.kafka().key_columns {
                if batch.column(k).null_count() > 0 {
                    return Err(eddy_catalog::CatalogError::NotNullViolation {
                        table: table.name().to_owned(),
                        column: table.def().columns[k].name.clone(),
                    }
                    .into());
                }
            }
        }
        records.extend(
            codec
                .encode(batch, None)
                .map_err(|e| EddyError::InvalidParameter(format!("cannot encode row: {e}")))?,
        );
    }
    Ok(kafka.produce(topic, records).await?)
}
