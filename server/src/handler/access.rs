//! `CREATE`, `ALTER` and `DROP ROLE|USER`; `GRANT` and `REVOKE`; `SET
//! ROLE` and `SET SESSION AUTHORIZATION`. Each checks Postgres's rules
//! for who may run it.

use std::collections::HashMap;

use eddy_catalog::roles::{
    Privileges, RoleOptions, BOOTSTRAP_ROLE_OID, DATABASE_OBJECT, PUBLIC_OID,
};
use eddy_catalog::CatalogError;
use eddy_sql::access::{AccessStatement, Grant, GrantOn, Grantee};
use pgwire::api::results::Tag;

use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::privileges::{require_owner, Actor};
use crate::scram::Verifier;

pub fn handle_access(
    engine: &Engine,
    vars: &mut HashMap<String, String>,
    statement: &AccessStatement,
) -> Result<Output> {
    let actor = Actor::of(engine, vars)?;
    let roles = engine.catalog.roles();
    let command = |tag: &str| Ok(Output::Command(Tag::new(tag)));
    match statement {
        AccessStatement::CreateRole {
            name,
            user,
            options,
        } => {
            may_manage_roles(&actor, options.superuser == Some(true), "create")?;
            if reserved(name) {
                return Err(EddyError::InvalidName(format!(
                    "role name \"{name}\" is reserved"
                )));
            }
            roles.create(name, &role_options(options)?, *user)?;
            command("CREATE ROLE")
        }
        AccessStatement::AlterRole {
            name,
            options,
            rename,
        } => {
            let target = roles
                .by_name(name)
                .ok_or_else(|| CatalogError::UndefinedRole(name.clone()))?;
            // A role may change its own password, and nothing else.
            let own_password = target.oid == actor.oid
                && rename.is_none()
                && RoleOptions {
                    password: None,
                    ..options.clone()
                }
                .is_empty();
            if !own_password {
                may_manage_roles(
                    &actor,
                    target.superuser || options.superuser.is_some(),
                    "alter",
                )?;
            }
            if let Some(new_name) = rename {
                if target.oid == session_role_oid(engine, vars) {
                    return Err(EddyError::Unsupported("renaming the session user".into()));
                }
                if reserved(new_name) {
                    return Err(EddyError::InvalidName(format!(
                        "role name \"{new_name}\" is reserved"
                    )));
                }
            }
            if target.oid == BOOTSTRAP_ROLE_OID && options.superuser == Some(false) {
                return Err(EddyError::InsufficientPrivilege(format!(
                    "the bootstrap superuser \"{name}\" must stay a superuser"
                )));
            }
            roles.alter(name, &role_options(options)?, rename.as_deref())?;
            command("ALTER ROLE")
        }
        AccessStatement::DropRole { names, if_exists } => {
            for name in names {
                let Some(target) = roles.by_name(name) else {
                    if *if_exists {
                        crate::notice::notice(format!("role \"{name}\" does not exist, skipping"));
                        continue;
                    }
                    return Err(CatalogError::UndefinedRole(name.clone()).into());
                };
                may_manage_roles(&actor, target.superuser, "drop")?;
                if target.oid == actor.oid {
                    return Err(EddyError::ObjectInUse(
                        "current user cannot be dropped".into(),
                    ));
                }
                if target.oid == session_role_oid(engine, vars) {
                    return Err(EddyError::ObjectInUse(
                        "session user cannot be dropped".into(),
                    ));
                }
                if target.oid == BOOTSTRAP_ROLE_OID {
                    return Err(CatalogError::RoleDependents {
                        name: name.clone(),
                        detail: "it is the bootstrap superuser, which the server needs".into(),
                    }
                    .into());
                }
                let owned = engine.catalog.owned_by(target.oid);
                if !owned.is_empty() {
                    return Err(CatalogError::RoleDependents {
                        name: name.clone(),
                        detail: owned.join("\n"),
                    }
                    .into());
                }
                let catalog = &engine.catalog;
                roles.drop(name, |id| {
                    catalog.relation_name(id).unwrap_or_else(|| id.to_string())
                })?;
            }
            command("DROP ROLE")
        }
        AccessStatement::Grant(grant) => {
            change_grants(engine, &actor, grant)?;
            command(if grant.grant { "GRANT" } else { "REVOKE" })
        }
        AccessStatement::SetRole(role) => {
            match role {
                None => {
                    vars.remove("role");
                }
                Some(name) => {
                    let target = roles
                        .by_name(name)
                        .ok_or_else(|| CatalogError::UndefinedRole(name.clone()))?;
                    let session = session_actor(engine, vars)?;
                    if !session.superuser && target.oid != session.oid {
                        return Err(EddyError::InsufficientPrivilege(format!(
                            "permission denied to set role \"{name}\""
                        )));
                    }
                    vars.insert("role".into(), name.clone());
                }
            }
            command("SET")
        }
        AccessStatement::SetSessionAuthorization(role) => {
            let logged_in = vars.get("user").cloned().unwrap_or_default();
            let authenticated = roles.by_name(&logged_in).map(Actor::from);
            let may = authenticated.as_ref().is_none_or(|a| a.superuser);
            match role {
                None => {
                    vars.remove("session_authorization");
                }
                Some(name) => {
                    roles
                        .by_name(name)
                        .ok_or_else(|| CatalogError::UndefinedRole(name.clone()))?;
                    if !may && *name != logged_in {
                        return Err(EddyError::InsufficientPrivilege(format!(
                            "permission denied to set session authorization \"{name}\""
                        )));
                    }
                    vars.insert("session_authorization".into(), name.clone());
                }
            }
            vars.remove("role");
            command("SET")
        }
    }
}

/// Names Postgres keeps for itself (`pg_*`) or uses as keywords.
fn reserved(name: &str) -> bool {
    name.starts_with("pg_") || ["public", "none", "current_user", "session_user"].contains(&name)
}

/// Superusers manage any role; CREATEROLE roles manage roles that are not
/// superusers.
fn may_manage_roles(actor: &Actor, superuser_role: bool, verb: &str) -> Result<()> {
    if actor.superuser || (actor.create_role && !superuser_role) {
        return Ok(());
    }
    Err(EddyError::InsufficientPrivilege(match superuser_role {
        true => format!("permission denied to {verb} role: only superusers may {verb} superusers"),
        false => {
            format!("permission denied to {verb} role: only roles with CREATEROLE may {verb} roles")
        }
    }))
}

/// The statement's options for the catalog: a password becomes its
/// SCRAM-SHA-256 verifier, unless it is one already.
fn role_options(options: &RoleOptions) -> Result<RoleOptions> {
    let password = match &options.password {
        Some(Some(text)) if text.is_empty() => Some(None),
        Some(Some(text)) if text.starts_with("SCRAM-SHA-256$") => {
            let verifier = Verifier::parse(text).ok_or_else(|| {
                EddyError::InvalidParameter("the SCRAM-SHA-256 verifier is malformed".into())
            })?;
            Some(Some(verifier.to_string()))
        }
        Some(Some(text)) if text.starts_with("md5") && text.len() == 35 => {
            return Err(EddyError::Unsupported(
                "MD5 password hashes; give the password, or a SCRAM-SHA-256 verifier".into(),
            ))
        }
        Some(Some(text)) => Some(Some(Verifier::new(text).to_string())),
        other => other.clone(),
    };
    Ok(RoleOptions {
        password,
        ..options.clone()
    })
}

/// The role the session logged in as (or was set to with SET SESSION
/// AUTHORIZATION), whose privileges SET ROLE checks.
fn session_actor(engine: &Engine, vars: &HashMap<String, String>) -> Result<Actor> {
    let mut session = vars.clone();
    session.remove("role");
    Actor::of(engine, &session)
}

fn session_role_oid(engine: &Engine, vars: &HashMap<String, String>) -> u32 {
    session_actor(engine, vars).map_or(BOOTSTRAP_ROLE_OID, |a| a.oid)
}

fn change_grants(engine: &Engine, actor: &Actor, grant: &Grant) -> Result<()> {
    let roles = engine.catalog.roles();
    let grantees = grant
        .grantees
        .iter()
        .map(|g| match g {
            Grantee::Public => Ok(PUBLIC_OID),
            Grantee::Role(name) => roles
                .by_name(name)
                .map(|r| r.oid)
                .ok_or_else(|| CatalogError::UndefinedRole(name.clone()).into()),
        })
        .collect::<Result<Vec<u32>>>()?;
    let (objects, privileges) = match &grant.on {
        GrantOn::Database(name) => {
            if name != eddy_catalog::DATABASE_NAME {
                return Err(EddyError::UndefinedDatabase(name.clone()));
            }
            (
                vec![DATABASE_OBJECT],
                database_privileges(grant, "database")?,
            )
        }
        GrantOn::Schema(name) => {
            if name != eddy_catalog::SCHEMA_NAME {
                return Err(EddyError::UndefinedSchema(name.clone()));
            }
            (vec![DATABASE_OBJECT], database_privileges(grant, "schema")?)
        }
        GrantOn::Relations(names) => {
            let ids = names
                .iter()
                .map(|name| {
                    let id = relation_id(engine, name)?;
                    require_owner(engine, actor, name)?;
                    Ok(id)
                })
                .collect::<Result<Vec<u64>>>()?;
            (ids, relation_privileges(grant)?)
        }
        GrantOn::AllRelations => {
            let names = engine.catalog.relation_names();
            let mut ids = Vec::new();
            for name in names {
                let id = relation_id(engine, &name)?;
                require_owner(engine, actor, &name)?;
                ids.push(id);
            }
            (ids, relation_privileges(grant)?)
        }
    };
    if objects.first() == Some(&DATABASE_OBJECT) && !actor.superuser {
        return Err(EddyError::InsufficientPrivilege(format!(
            "must be owner of database {}",
            eddy_catalog::DATABASE_NAME
        )));
    }
    if privileges.is_empty() {
        return Ok(());
    }
    for object in objects {
        roles.change_grants(object, &grantees, privileges, grant.grant)?;
    }
    Ok(())
}

fn relation_id(engine: &Engine, name: &str) -> Result<u64> {
    if let Some(relation) = engine.catalog.relation(name) {
        return Ok(relation.id());
    }
    engine
        .catalog
        .plain_view(name)
        .map(|v| v.id)
        .ok_or_else(|| EddyError::UndefinedTable(name.to_owned()))
}

fn relation_privileges(grant: &Grant) -> Result<Privileges> {
    let Some(names) = &grant.privileges else {
        return Ok(Privileges::ALL_RELATION);
    };
    names.iter().try_fold(Privileges::NONE, |all, name| {
        match Privileges::named(name).filter(|p| Privileges::ALL_RELATION.contains(*p)) {
            Some(p) => Ok(all.union(p)),
            None => Err(EddyError::InvalidGrant(format!(
                "invalid privilege type {name} for table"
            ))),
        }
    })
}

/// The database's and the public schema's `CREATE` are one privilege:
/// creating relations. `CONNECT`, `TEMPORARY` and the schema's `USAGE`
/// are everyone's already.
fn database_privileges(grant: &Grant, kind: &str) -> Result<Privileges> {
    let Some(names) = &grant.privileges else {
        return Ok(Privileges::CREATE);
    };
    names
        .iter()
        .try_fold(Privileges::NONE, |all, name| match (name.as_str(), kind) {
            ("CREATE", _) => Ok(all.union(Privileges::CREATE)),
            ("CONNECT", "database") | ("USAGE", "schema") => Ok(all),
            _ => Err(EddyError::InvalidGrant(format!(
                "invalid privilege type {name} for {kind}"
            ))),
        })
}
