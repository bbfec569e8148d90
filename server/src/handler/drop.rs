//! DROP TABLE, DROP STREAM and DROP MATERIALIZED VIEW, with CASCADE; and
//! ksqlDB's `DELETE TOPIC` (carried as PURGE) for Kafka relations.

use datafusion::sql::sqlparser::ast::{ObjectName, ObjectType};
use eddy_catalog::CatalogError;
use eddy_sql::create_table::object_name;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub async fn handle_drop(
    engine: &Engine,
    object_type: ObjectType,
    if_exists: bool,
    names: &[ObjectName],
    cascade: bool,
    delete_topic: bool,
) -> Result<Output> {
    let (kind, tag) = match object_type {
        ObjectType::Table => ("table", "DROP TABLE"),
        ObjectType::Stream => ("stream", "DROP STREAM"),
        ObjectType::MaterializedView => ("materialized view", "DROP MATERIALIZED VIEW"),
        other => return Err(EddyError::Unsupported(format!("DROP {other}"))),
    };
    let names = names
        .iter()
        .map(object_name)
        .collect::<Result<Vec<_>, _>>()?;
    // Check every name first, so a failing DROP drops nothing.
    let mut targets = Vec::new();
    for name in &names {
        let id = match (object_type, engine.catalog.relation(name)) {
            (ObjectType::Table, Some(eddy_catalog::Relation::Table(t))) if !t.is_stream() => {
                t.def().id
            }
            (ObjectType::Stream, Some(eddy_catalog::Relation::Table(t))) if t.is_stream() => {
                t.def().id
            }
            (ObjectType::MaterializedView, Some(eddy_catalog::Relation::View(v))) => v.def().id,
            (_, Some(_)) => {
                return Err(EddyError::WrongObjectType(format!(
                    "\"{name}\" is not a {kind}"
                )))
            }
            (_, None) if if_exists => continue,
            (_, None) => return Err(EddyError::UndefinedTable(name.clone())),
        };
        if delete_topic
            && engine
                .catalog
                .table(name)
                .is_some_and(|t| t.def().kafka.is_none())
        {
            return Err(EddyError::WrongObjectType(format!(
                "\"{name}\" is a local table, with no topic to delete"
            )));
        }
        targets.push((name.clone(), id));
    }
    // Views that depend on the targets, directly or not.
    let mut dependents: Vec<(String, u64)> = Vec::new();
    let mut frontier: Vec<(String, u64)> = targets.clone();
    while let Some((name, id)) = frontier.pop() {
        for dependent in engine.catalog.dependents(id) {
            let Some(view) = engine.catalog.view(&dependent) else {
                continue;
            };
            let entry = (dependent.clone(), view.def().id);
            if targets.contains(&entry) || dependents.contains(&entry) {
                continue;
            }
            if !cascade {
                return Err(CatalogError::DependentObjects {
                    kind,
                    name: name.clone(),
                    detail: format!(
                        "materialized view {dependent} depends on {} {name}",
                        kind_of(engine, &name)
                    ),
                }
                .into());
            }
            dependents.push(entry.clone());
            frontier.push(entry);
        }
    }
    let mut views: Vec<(String, u64)> = dependents;
    if object_type == ObjectType::MaterializedView {
        views.extend(targets.iter().cloned());
    }
    // Later views may read earlier ones: drop the newest first.
    views.sort_by_key(|(_, id)| std::cmp::Reverse(*id));
    engine
        .dataflow
        .drop_views(views.into_iter().map(|(name, _)| name).collect())
        .await?;
    if object_type != ObjectType::MaterializedView {
        for (name, id) in &targets {
            let topic = engine
                .catalog
                .table(name)
                .and_then(|t| t.def().kafka.as_ref().map(|k| k.topic.clone()));
            if topic.is_some() {
                engine.dataflow.drop_source(*id).await?;
            }
            engine.catalog.drop_table(name)?;
            if let (Some(topic), true) = (topic, delete_topic) {
                engine.kafka()?.delete_topic(&topic).await?;
            }
        }
    }
    Ok(Output::Command(Tag::new(tag)))
}

fn kind_of(engine: &Engine, name: &str) -> &'static str {
    match engine.catalog.relation(name) {
        Some(eddy_catalog::Relation::View(_)) => "materialized view",
        Some(eddy_catalog::Relation::Table(t)) if t.is_stream() => "stream",
        _ => "table",
    }
}
