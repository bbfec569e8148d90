//! DROP TABLE, DROP STREAM, DROP VIEW and DROP MATERIALIZED VIEW, with
//! CASCADE; and ksqlDB's `DELETE TOPIC` for Kafka relations.

use datafusion::sql::sqlparser::ast::ObjectType;
use eddy_catalog::CatalogError;
use eddy_sql::ast::DropRelation;
use eddy_sql::create_table::object_name;
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

pub async fn handle_drop(engine: &Engine, drop: &DropRelation) -> Result<Output> {
    let DropRelation {
        object_type,
        if_exists,
        ref names,
        cascade,
        delete_topic,
    } = *drop;
    let (kind, tag) = match object_type {
        ObjectType::Table => ("table", "DROP TABLE"),
        ObjectType::Stream => ("stream", "DROP STREAM"),
        ObjectType::MaterializedView => ("materialized view", "DROP MATERIALIZED VIEW"),
        ObjectType::View => ("view", "DROP VIEW"),
        other => return Err(EddyError::Unsupported(format!("DROP {other}"))),
    };
    let names = names
        .iter()
        .map(object_name)
        .collect::<Result<Vec<_>, _>>()?;
    // Check every name first, so a failing DROP drops nothing.
    let mut targets = Vec::new();
    for name in &names {
        let plain_view = engine.catalog.plain_view(name).map(|v| v.id);
        let id = match (object_type, engine.catalog.relation(name)) {
            (ObjectType::View, _) if plain_view.is_some() => plain_view.unwrap_or_default(),
            (_, None) if plain_view.is_some() => {
                return Err(EddyError::WrongObjectType(format!(
                    "\"{name}\" is not a {kind}"
                )))
            }
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
                "\"{name}\" reads no topic, so there is no topic to delete"
            )));
        }
        targets.push((name.clone(), id));
    }
    // The queries writing a dropped relation's topic stop with it, as in
    // ksqlDB; views and queries reading a target need CASCADE.
    let mut dependents: Vec<u64> = Vec::new();
    if matches!(object_type, ObjectType::Table | ObjectType::Stream) {
        for (_, id) in &targets {
            dependents.extend(
                engine
                    .catalog
                    .queries_writing(*id)
                    .iter()
                    .map(|q| q.def().id),
            );
        }
    }
    let target_ids: Vec<u64> = targets.iter().map(|(_, id)| *id).collect();
    let mut plain_views: Vec<String> = Vec::new();
    if object_type == ObjectType::View {
        plain_views.extend(targets.iter().map(|(name, _)| name.clone()));
    }
    let mut frontier: Vec<(String, u64)> = targets.clone();
    while let Some((name, id)) = frontier.pop() {
        let refuse = |detail: String| -> EddyError {
            CatalogError::DependentObjects {
                action: "drop",
                kind,
                name: name.clone(),
                detail,
            }
            .into()
        };
        let kind_of_name = kind_of(engine, &name);
        for view in engine.catalog.plain_dependents(id) {
            if target_ids.contains(&view.id) || plain_views.contains(&view.name) {
                continue;
            }
            if !cascade {
                return Err(refuse(view.dependency_text(kind_of_name, &name)));
            }
            plain_views.push(view.name.clone());
            frontier.push((view.name.clone(), view.id));
        }
        for view in engine.catalog.dependents(id) {
            let view_id = view.def().id;
            if target_ids.contains(&view_id) || dependents.contains(&view_id) {
                continue;
            }
            if !cascade {
                return Err(refuse(view.dependency_text(kind_of_name, &name)));
            }
            dependents.push(view_id);
            frontier.push((view.name().to_owned(), view_id));
        }
    }
    // Push queries over any of them end too.
    let mut views = dependents;
    if object_type != ObjectType::View {
        views.extend(target_ids);
    }
    // Later views may read earlier ones: drop the newest first.
    views.sort_by_key(|id| std::cmp::Reverse(*id));
    engine.dataflow.drop_views(views).await?;
    for name in &plain_views {
        engine.catalog.drop_plain_view(name)?;
    }
    if matches!(object_type, ObjectType::Table | ObjectType::Stream) {
        for (name, id) in &targets {
            let table = engine.catalog.table(name);
            let topic = table
                .as_ref()
                .and_then(|t| t.def().kafka.as_ref().map(|k| k.topic.clone()));
            if table.is_some_and(|t| t.def().source_kind().is_some()) {
                engine.dataflow.drop_source(*id).await?;
            }
            tokio::task::block_in_place(|| engine.catalog.drop_table(name))?;
            if let (Some(topic), true) = (topic, delete_topic) {
                engine.kafka()?.delete_topic(&topic).await?;
            }
        }
    }
    Ok(Output::Command(Tag::new(tag)))
}

fn kind_of(engine: &Engine, name: &str) -> &'static str {
    if engine.catalog.plain_view(name).is_some() {
        return "view";
    }
    match engine.catalog.relation(name) {
        Some(eddy_catalog::Relation::View(_)) => "materialized view",
        Some(eddy_catalog::Relation::Table(t)) if t.is_stream() => "stream",
        _ => "table",
    }
}
