//! Privilege checks, with Postgres's rules: superusers may do anything;
//! an object's owner may do anything with it; anyone else needs a grant
//! (to them or to PUBLIC), or gets 42501. Creating relations takes
//! `CREATE` on the database.
//!
//! A statement's needs come from its text, before plain views are
//! expanded: reading a plain view takes `SELECT` on the view, and the
//! view's owner must be able to read what the view reads.

use std::collections::HashMap;

use datafusion::sql::sqlparser::ast::{
    FromTable, ObjectName, Statement, TableFactor, TableObject, TableWithJoins,
};
use eddy_catalog::roles::{Privileges, Role, BOOTSTRAP_ROLE_OID, DATABASE_OBJECT};
use eddy_catalog::Relation;
use eddy_sql::access::relations_named;
use eddy_sql::EddyStatement;

use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::login::{current_role, INTERNAL_SESSION};

/// The role a statement runs as.
#[derive(Debug, Clone)]
pub struct Actor {
    pub oid: u32,
    pub superuser: bool,
    pub create_role: bool,
}

impl Actor {
    /// The session's current role. Internal sessions (the console's) act
    /// as the bootstrap superuser.
    pub fn of(engine: &Engine, vars: &HashMap<String, String>) -> Result<Actor> {
        let roles = engine.catalog.roles();
        let role = match current_role(vars) {
            Some(name) => roles.by_name(name).ok_or_else(|| {
                EddyError::InvalidAuthorization(format!("role \"{name}\" does not exist"))
            })?,
            None if vars.contains_key(INTERNAL_SESSION) => roles
                .by_oid(BOOTSTRAP_ROLE_OID)
                .ok_or_else(|| EddyError::Internal("no bootstrap superuser".into()))?,
            None => {
                return Err(EddyError::InvalidAuthorization(
                    "the session has no role".into(),
                ))
            }
        };
        Ok(Actor::from(role))
    }

    /// The running statement's role, from its session's settings.
    pub fn current(engine: &Engine) -> Result<Actor> {
        match crate::handler::set::current_session() {
            Some(session) => Actor::of(engine, &session),
            None => Actor::of(engine, &internal_session()),
        }
    }

    /// What a new object records as its owner: `None` for the bootstrap
    /// superuser.
    pub fn owner_field(&self) -> Option<u32> {
        (self.oid != BOOTSTRAP_ROLE_OID).then_some(self.oid)
    }
}

/// The settings of a server-internal session.
pub fn internal_session() -> HashMap<String, String> {
    HashMap::from([(INTERNAL_SESSION.to_owned(), String::new())])
}

impl From<Role> for Actor {
    fn from(role: Role) -> Self {
        Actor {
            oid: role.oid,
            superuser: role.superuser,
            create_role: role.create_role,
        }
    }
}

/// What `actor` holds on object `id`: everything if it is a superuser or
/// the owner, else what was granted.
pub fn held(engine: &Engine, oid: u32, superuser: bool, id: u64) -> Privileges {
    if superuser {
        return Privileges::ALL_RELATION.union(Privileges::CREATE);
    }
    if id != DATABASE_OBJECT && engine.catalog.owner_of(id) == Some(oid) {
        return Privileges::ALL_RELATION;
    }
    engine.catalog.roles().granted(id, oid)
}

/// A relation by name, with its id and the noun errors use for it.
fn object(engine: &Engine, name: &str) -> Option<(u64, &'static str)> {
    match engine.catalog.relation(name) {
        Some(Relation::Table(t)) => {
            Some((t.def().id, if t.is_stream() { "stream" } else { "table" }))
        }
        Some(Relation::View(v)) => Some((v.def().id, "materialized view")),
        None => engine.catalog.plain_view(name).map(|v| (v.id, "view")),
    }
}

fn denied(kind: &str, name: &str) -> EddyError {
    EddyError::InsufficientPrivilege(format!("permission denied for {kind} {name}"))
}

/// Checks that `actor` holds `needed` on relation `name`. A name no
/// catalog knows passes: planning reports it.
pub fn require(engine: &Engine, actor: &Actor, name: &str, needed: Privileges) -> Result<()> {
    if actor.superuser {
        return Ok(());
    }
    let Some((id, kind)) = object(engine, name) else {
        return Ok(());
    };
    if !held(engine, actor.oid, false, id).contains(needed) {
        return Err(denied(kind, name));
    }
    // A plain view reads with its owner's privileges.
    if let Some(view) = engine.catalog.plain_view(name) {
        if needed.contains(Privileges::SELECT) {
            let owner = engine
                .catalog
                .roles()
                .by_oid(view.owner.unwrap_or(BOOTSTRAP_ROLE_OID))
                .map(Actor::from)
                .ok_or_else(|| EddyError::Internal(format!("view {name} has no owner")))?;
            for id in &view.depends_on {
                if let Some(read) = engine.catalog.relation_name(*id) {
                    require(engine, &owner, &read, Privileges::SELECT)?;
                }
            }
        }
    }
    Ok(())
}

/// Checks that `actor` owns relation (or query) `name`.
pub fn require_owner(engine: &Engine, actor: &Actor, name: &str) -> Result<()> {
    if actor.superuser {
        return Ok(());
    }
    let found =
        object(engine, name).or_else(|| engine.catalog.query(name).map(|q| (q.def().id, "query")));
    match found {
        Some((id, kind)) if engine.catalog.owner_of(id) != Some(actor.oid) => Err(
            EddyError::InsufficientPrivilege(format!("must be owner of {kind} {name}")),
        ),
        _ => Ok(()),
    }
}

/// Checks that `actor` may create relations.
pub fn require_create(engine: &Engine, actor: &Actor) -> Result<()> {
    match held(engine, actor.oid, actor.superuser, DATABASE_OBJECT).contains(Privileges::CREATE) {
        true => Ok(()),
        false => Err(EddyError::InsufficientPrivilege(format!(
            "permission denied for database {}",
            eddy_catalog::DATABASE_NAME
        ))),
    }
}

fn require_reads<V: datafusion::sql::sqlparser::ast::Visit>(
    engine: &Engine,
    actor: &Actor,
    node: &V,
    except: Option<&str>,
) -> Result<()> {
    for name in relations_named(node) {
        if Some(name.as_str()) != except {
            require(engine, actor, &name, Privileges::SELECT)?;
        }
    }
    Ok(())
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(eddy_sql::normalize)
        .unwrap_or_else(|| name.to_string())
}

fn table_name(table: &TableWithJoins) -> Option<String> {
    match &table.relation {
        TableFactor::Table { name, .. } => Some(object_name(name)),
        _ => None,
    }
}

/// Checks that the session's role may run `statement`. Statements about
/// roles and grants check their own rules when they run.
pub fn authorize(
    engine: &Engine,
    vars: &HashMap<String, String>,
    statement: &EddyStatement,
) -> Result<()> {
    let actor = Actor::of(engine, vars)?;
    if actor.superuser {
        return Ok(());
    }
    match statement {
        EddyStatement::Sql(sql) => authorize_sql(engine, &actor, sql),
        EddyStatement::Query(query) => require_reads(engine, &actor, &query.query, None),
        EddyStatement::CreateRelation(create) => {
            require_create(engine, &actor)?;
            if create.or_replace {
                require_owner(engine, &actor, &object_name(&create.name))?;
            }
            match &create.query {
                Some(query) => require_reads(engine, &actor, &query.query, None),
                None => Ok(()),
            }
        }
        EddyStatement::CreateView { create, .. } => {
            require_create(engine, &actor)?;
            if create.or_replace {
                require_owner(engine, &actor, &object_name(&create.name))?;
            }
            require_reads(engine, &actor, &create.query, None)
        }
        EddyStatement::InsertQuery { target, query } => {
            require_create(engine, &actor)?;
            require(engine, &actor, &object_name(target), Privileges::INSERT)?;
            require_reads(engine, &actor, &query.query, None)
        }
        EddyStatement::Drop(drop) => drop
            .names
            .iter()
            .try_for_each(|name| require_owner(engine, &actor, &object_name(name))),
        EddyStatement::Terminate(Some(id)) => require_owner(engine, &actor, &id.value),
        EddyStatement::Terminate(None) => Err(EddyError::InsufficientPrivilege(
            "must be superuser to terminate all queries".into(),
        )),
        EddyStatement::DeclareSubscribe { subscribe, .. } => {
            require_reads(engine, &actor, &subscribe.query, None)
        }
        EddyStatement::Subscribe(subscribe) | EddyStatement::CopySubscribe(subscribe) => {
            require_reads(engine, &actor, &subscribe.query, None)
        }
        EddyStatement::DeclareEmitChanges { query, .. } => {
            require_reads(engine, &actor, &query.query, None)
        }
        EddyStatement::Print(print) => authorize_print(engine, &actor, &print.topic),
        EddyStatement::Access(_)
        | EddyStatement::Flush
        | EddyStatement::Show { .. }
        | EddyStatement::Describe { .. }
        | EddyStatement::DescribeFunction(_)
        | EddyStatement::ExplainAnalyze(_)
        | EddyStatement::Move(_)
        | EddyStatement::FetchWithTimeout { .. } => Ok(()),
    }
}

/// `PRINT topic` reads a topic's raw records: it takes `SELECT` on a
/// stream or table over the topic.
pub fn authorize_print(engine: &Engine, actor: &Actor, topic: &str) -> Result<()> {
    if actor.superuser {
        return Ok(());
    }
    let readable = engine.catalog.kafka_relations().iter().any(|t| {
        t.def().kafka.as_ref().is_some_and(|k| k.topic == topic)
            && held(engine, actor.oid, false, t.def().id).contains(Privileges::SELECT)
    });
    match readable {
        true => Ok(()),
        false => Err(EddyError::InsufficientPrivilege(format!(
            "permission denied for topic {topic}: PRINT takes SELECT on a stream or table over it"
        ))),
    }
}

fn authorize_sql(engine: &Engine, actor: &Actor, sql: &Statement) -> Result<()> {
    match sql {
        Statement::Query(query) => require_reads(engine, actor, query, None),
        Statement::Explain { statement, .. } => authorize_sql(engine, actor, statement),
        Statement::CreateView(create) => {
            require_create(engine, actor)?;
            require_reads(engine, actor, &create.query, None)
        }
        Statement::Insert(insert) => {
            let target = match &insert.table {
                TableObject::TableName(name) => object_name(name),
                _ => return Ok(()),
            };
            require(engine, actor, &target, Privileges::INSERT)?;
            if insert.returning.is_some() {
                require(engine, actor, &target, Privileges::SELECT)?;
            }
            match &insert.source {
                Some(source) => require_reads(engine, actor, source, None),
                None => Ok(()),
            }
        }
        Statement::Update(update) => {
            let target = table_name(&update.table);
            if let Some(target) = &target {
                require(engine, actor, target, Privileges::UPDATE)?;
            }
            // Reading the target's rows (WHERE, RETURNING) takes SELECT
            // on it too, as in Postgres.
            let reads_target = update.selection.is_some() || update.returning.is_some();
            let except = target.as_deref().filter(|_| !reads_target);
            require_reads(engine, actor, sql, except)
        }
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => tables,
            };
            let target = tables.first().and_then(table_name);
            if let Some(target) = &target {
                require(engine, actor, target, Privileges::DELETE)?;
            }
            let reads_target = delete.selection.is_some() || delete.returning.is_some();
            let except = target.as_deref().filter(|_| !reads_target);
            require_reads(engine, actor, sql, except)
        }
        Statement::Truncate(truncate) => truncate
            .table_names
            .iter()
            .try_for_each(|t| require(engine, actor, &object_name(&t.name), Privileges::TRUNCATE)),
        Statement::Declare { stmts } => {
            stmts
                .iter()
                .try_for_each(|declare| match &declare.for_query {
                    Some(query) => require_reads(engine, actor, query, None),
                    None => Ok(()),
                })
        }
        _ => Ok(()),
    }
}
