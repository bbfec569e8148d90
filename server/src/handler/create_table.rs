//! CREATE TABLE, and ksqlDB's CREATE STREAM|TABLE over Kafka topics.

use datafusion::sql::sqlparser::ast::CreateTable;
use eddy_catalog::kafka::{dead_letters_def, SourceKind};
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub async fn handle_create_table(engine: &Engine, create: &CreateTable) -> Result<Output> {
    let options = eddy_sql::source_options(&create.table_options)?;
    if let Some(query) = &create.query {
        return super::create_query::handle_create_as(engine, create, &options, query).await;
    }
    if !options.is_kafka() {
        let def = eddy_sql::bind_create_table(create)?;
        engine.catalog.create_table(def, create.if_not_exists)?;
        return Ok(Output::Command(Tag::new("CREATE TABLE")));
    }
    let def = eddy_sql::bind_create_source(create, &options)?;
    let kind = def.kafka.as_ref().map_or(SourceKind::Table, |k| k.kind);
    let tag = Tag::new(&format!("CREATE {}", kind.as_str()));
    if engine.catalog.relation(&def.name).is_some() {
        if create.if_not_exists {
            return Ok(Output::Command(tag));
        }
        return Err(eddy_catalog::CatalogError::DuplicateTable(def.name).into());
    }
    let kafka = engine.kafka()?;
    let topic = def
        .kafka
        .as_ref()
        .map(|k| k.topic.clone())
        .unwrap_or_default();
    kafka
        .ensure_topic(&topic, options.partitions, options.replicas)
        .await?;
    engine.catalog.create_table(dead_letters_def(), true)?;
    let Some(table) = engine.catalog.create_table(def, create.if_not_exists)? else {
        return Ok(Output::Command(tag));
    };
    if let Err(e) = engine.dataflow.start_source(table.def().id).await {
        engine.catalog.drop_table(table.name())?;
        return Err(e.into());
    }
    Ok(Output::Command(tag))
}

/// Refuses writes a Kafka relation cannot take from a client.
pub fn refuse_kafka_write(table: &eddy_catalog::StoredTable, what: &str) -> Result<()> {
    match &table.def().kafka {
        Some(kafka) => Err(EddyError::Unsupported(format!(
            "{what} on {} {}: its rows change only by records on topic {}",
            kafka.kind.as_str().to_lowercase(),
            table.name(),
            kafka.topic
        ))),
        None => Ok(()),
    }
}
