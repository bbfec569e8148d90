//! Roles and privileges: who may log in, with which SCRAM-SHA-256
//! verifier, and what each role may do with each relation.
//!
//! Roles are keyed by oid, so renaming one leaves what it owns and what it
//! was granted in place. Grants are keyed by the object's id; the database
//! itself is [`DATABASE_OBJECT`].

use std::collections::{BTreeMap, HashSet};
use std::sync::RwLock;

use eddy_storage::{Keyspace, Store, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::{CatalogError, Result};

/// The oid of the role created first, which owns what predates roles.
pub const BOOTSTRAP_ROLE_OID: u32 = 10;
/// The grantee `PUBLIC`: every role.
pub const PUBLIC_OID: u32 = 0;
/// Grants on the database (`CREATE`) are kept under this object id, which
/// no relation has.
pub const DATABASE_OBJECT: u64 = 0;
const FIRST_ROLE_OID: u32 = 16384;

/// A set of privileges on one object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Privileges(u8);

impl Privileges {
    pub const SELECT: Privileges = Privileges(1);
    pub const INSERT: Privileges = Privileges(2);
    pub const UPDATE: Privileges = Privileges(4);
    pub const DELETE: Privileges = Privileges(8);
    pub const TRUNCATE: Privileges = Privileges(16);
    /// On the database: creating relations.
    pub const CREATE: Privileges = Privileges(32);
    pub const NONE: Privileges = Privileges(0);
    /// `ALL` on a relation.
    pub const ALL_RELATION: Privileges = Privileges(1 | 2 | 4 | 8 | 16);

    /// Each privilege with its ACL letter and name, in Postgres's order.
    const LETTERS: [(Privileges, char, &'static str); 6] = [
        (Privileges::INSERT, 'a', "INSERT"),
        (Privileges::SELECT, 'r', "SELECT"),
        (Privileges::UPDATE, 'w', "UPDATE"),
        (Privileges::DELETE, 'd', "DELETE"),
        (Privileges::TRUNCATE, 'D', "TRUNCATE"),
        (Privileges::CREATE, 'C', "CREATE"),
    ];

    pub fn contains(self, other: Privileges) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Privileges) -> Privileges {
        Privileges(self.0 | other.0)
    }

    pub fn without(self, other: Privileges) -> Privileges {
        Privileges(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The privilege named `name` (`SELECT`, `insert`, ...).
    pub fn named(name: &str) -> Option<Privileges> {
        Self::LETTERS
            .iter()
            .find(|(_, _, n)| n.eq_ignore_ascii_case(name))
            .map(|(p, _, _)| *p)
    }

    /// Postgres's ACL letters for these privileges (`arwdD`).
    pub fn letters(self) -> String {
        Self::LETTERS
            .iter()
            .filter(|(p, _, _)| self.contains(*p))
            .map(|(_, l, _)| *l)
            .collect()
    }
}

/// A role, as `pg_authid` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub oid: u32,
    pub name: String,
    pub superuser: bool,
    pub login: bool,
    #[serde(default)]
    pub create_role: bool,
    #[serde(default)]
    pub create_db: bool,
    /// A SCRAM-SHA-256 verifier (`SCRAM-SHA-256$iterations:salt$stored:server`);
    /// never the password itself.
    #[serde(default)]
    pub password: Option<String>,
}

/// The attributes `CREATE ROLE` or `ALTER ROLE` sets; `None` leaves one as
/// it is (or at its default for a new role).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleOptions {
    pub superuser: Option<bool>,
    pub login: Option<bool>,
    pub create_role: Option<bool>,
    pub create_db: Option<bool>,
    /// `Some(None)` is `PASSWORD NULL`.
    pub password: Option<Option<String>>,
}

impl RoleOptions {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        self.superuser.is_none()
            && self.login.is_none()
            && self.create_role.is_none()
            && self.create_db.is_none()
            && self.password.is_none()
    }

    fn apply(&self, role: &mut Role) {
        if let Some(superuser) = self.superuser {
            role.superuser = superuser;
        }
        if let Some(login) = self.login {
            role.login = login;
        }
        if let Some(create_role) = self.create_role {
            role.create_role = create_role;
        }
        if let Some(create_db) = self.create_db {
            role.create_db = create_db;
        }
        if let Some(password) = &self.password {
            role.password.clone_from(password);
        }
    }
}

#[derive(Default)]
struct RolesState {
    roles: BTreeMap<u32, Role>,
    /// Object id, then grantee oid.
    grants: BTreeMap<u64, BTreeMap<u32, Privileges>>,
}

/// Every role and grant, held in memory and stored in
/// [`Keyspace::Security`].
pub struct Roles {
    store: Store,
    state: RwLock<RolesState>,
}

fn role_key(oid: u32) -> Vec<u8> {
    let mut suffix = vec![b'r'];
    suffix.extend_from_slice(&oid.to_be_bytes());
    Keyspace::Security.key(&suffix)
}

fn grants_key(object: u64) -> Vec<u8> {
    let mut suffix = vec![b'g'];
    suffix.extend_from_slice(&object.to_be_bytes());
    Keyspace::Security.key(&suffix)
}

impl Roles {
    /// Loads roles and grants. Grants on objects not in `objects` (dropped
    /// before their grants were) are removed, so a reused id starts bare.
    pub(crate) fn open(store: Store, objects: &HashSet<u64>) -> Result<Self> {
        let mut state = RolesState::default();
        let mut stale = WriteBatch::new();
        let mut any_stale = false;
        for item in store.scan_prefix(&[Keyspace::Security as u8]) {
            let (key, value) = item?;
            match key.get(1) {
                Some(b'r') => {
                    let role: Role = serde_json::from_slice(&value)?;
                    state.roles.insert(role.oid, role);
                }
                Some(b'g') => {
                    let object = key
                        .get(2..10)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes)
                        .ok_or_else(|| CatalogError::Internal("damaged grant key".into()))?;
                    if object != DATABASE_OBJECT && !objects.contains(&object) {
                        stale.delete(key);
                        any_stale = true;
                        continue;
                    }
                    state.grants.insert(object, serde_json::from_slice(&value)?);
                }
                _ => {}
            }
        }
        if any_stale {
            store.commit(stale)?;
        }
        Ok(Roles {
            store,
            state: RwLock::new(state),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RolesState> {
        self.state.read().expect("roles lock poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RolesState> {
        self.state.write().expect("roles lock poisoned")
    }

    /// Makes sure superuser `name` exists and may log in, setting its
    /// password verifier when one is given. The first role gets
    /// [`BOOTSTRAP_ROLE_OID`].
    pub fn bootstrap(&self, name: &str, password: Option<String>) -> Result<Role> {
        let mut state = self.write();
        let mut role = match state.roles.values().find(|r| r.name == name) {
            Some(role) => role.clone(),
            None => Role {
                oid: if state.roles.contains_key(&BOOTSTRAP_ROLE_OID) {
                    next_oid(&state)
                } else {
                    BOOTSTRAP_ROLE_OID
                },
                name: name.to_owned(),
                superuser: true,
                login: true,
                create_role: true,
                create_db: true,
                password: None,
            },
        };
        let before = role.clone();
        role.superuser = true;
        role.login = true;
        if password.is_some() {
            role.password = password;
        }
        if state.roles.get(&role.oid) != Some(&before) || role != before {
            self.save_role(&mut state, role.clone())?;
        }
        Ok(role)
    }

    fn save_role(&self, state: &mut RolesState, role: Role) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(role_key(role.oid), serde_json::to_vec(&role)?);
        self.store.commit(batch)?;
        state.roles.insert(role.oid, role);
        Ok(())
    }

    pub fn by_name(&self, name: &str) -> Option<Role> {
        self.read().roles.values().find(|r| r.name == name).cloned()
    }

    pub fn by_oid(&self, oid: u32) -> Option<Role> {
        self.read().roles.get(&oid).cloned()
    }

    /// The name of role `oid`, or its number if it is gone.
    pub fn name_of(&self, oid: u32) -> String {
        match oid {
            PUBLIC_OID => "PUBLIC".into(),
            oid => self
                .read()
                .roles
                .get(&oid)
                .map(|r| r.name.clone())
                .unwrap_or_else(|| oid.to_string()),
        }
    }

    /// Every role, by oid.
    pub fn all(&self) -> Vec<Role> {
        self.read().roles.values().cloned().collect()
    }

    /// `CREATE ROLE name`: `login` is the default for `LOGIN` (set for
    /// `CREATE USER`).
    pub fn create(&self, name: &str, options: &RoleOptions, login: bool) -> Result<Role> {
        let mut state = self.write();
        if state.roles.values().any(|r| r.name == name) {
            return Err(CatalogError::DuplicateRole(name.to_owned()));
        }
        let mut role = Role {
            oid: next_oid(&state),
            name: name.to_owned(),
            superuser: false,
            login,
            create_role: false,
            create_db: false,
            password: None,
        };
        options.apply(&mut role);
        self.save_role(&mut state, role.clone())?;
        Ok(role)
    }

    /// `ALTER ROLE name ...`; `rename` renames it.
    pub fn alter(&self, name: &str, options: &RoleOptions, rename: Option<&str>) -> Result<Role> {
        let mut state = self.write();
        let mut role = state
            .roles
            .values()
            .find(|r| r.name == name)
            .cloned()
            .ok_or_else(|| CatalogError::UndefinedRole(name.to_owned()))?;
        if let Some(new_name) = rename {
            if state.roles.values().any(|r| r.name == new_name) {
                return Err(CatalogError::DuplicateRole(new_name.to_owned()));
            }
            new_name.clone_into(&mut role.name);
        }
        options.apply(&mut role);
        self.save_role(&mut state, role.clone())?;
        Ok(role)
    }

    /// `DROP ROLE name`. What it owns is the caller's to check; grants to
    /// it keep it (2BP01), as in Postgres.
    pub fn drop(&self, name: &str, relation_name: impl Fn(u64) -> String) -> Result<bool> {
        let mut state = self.write();
        let Some(role) = state.roles.values().find(|r| r.name == name).cloned() else {
            return Ok(false);
        };
        let held: Vec<String> = state
            .grants
            .iter()
            .filter(|(_, acl)| acl.contains_key(&role.oid))
            .map(|(object, _)| match *object {
                DATABASE_OBJECT => "privileges for database eddy".to_owned(),
                id => format!("privileges for relation {}", relation_name(id)),
            })
            .collect();
        if !held.is_empty() {
            return Err(CatalogError::RoleDependents {
                name: name.to_owned(),
                detail: held.join("\n"),
            });
        }
        let mut batch = WriteBatch::new();
        batch.delete(role_key(role.oid));
        self.store.commit(batch)?;
        state.roles.remove(&role.oid);
        Ok(true)
    }

    /// What `role` holds on `object` through grants (to it or to PUBLIC);
    /// ownership and superuser are the caller's to add.
    pub fn granted(&self, object: u64, role: u32) -> Privileges {
        let state = self.read();
        let Some(acl) = state.grants.get(&object) else {
            return Privileges::NONE;
        };
        let own = acl.get(&role).copied().unwrap_or_default();
        own.union(acl.get(&PUBLIC_OID).copied().unwrap_or_default())
    }

    /// Each grantee's privileges on `object`, by grantee oid.
    pub fn acl(&self, object: u64) -> Vec<(u32, Privileges)> {
        self.read()
            .grants
            .get(&object)
            .map(|acl| acl.iter().map(|(r, p)| (*r, *p)).collect())
            .unwrap_or_default()
    }

    /// Adds (`grant`) or takes away privileges of `grantees` on `object`.
    pub fn change_grants(
        &self,
        object: u64,
        grantees: &[u32],
        privileges: Privileges,
        grant: bool,
    ) -> Result<()> {
        let mut state = self.write();
        let mut acl = state.grants.get(&object).cloned().unwrap_or_default();
        for grantee in grantees {
            let held = acl.get(grantee).copied().unwrap_or_default();
            let now = match grant {
                true => held.union(privileges),
                false => held.without(privileges),
            };
            match now.is_empty() {
                true => acl.remove(grantee),
                false => acl.insert(*grantee, now),
            };
        }
        let mut batch = WriteBatch::new();
        match acl.is_empty() {
            true => batch.delete(grants_key(object)),
            false => batch.put(grants_key(object), serde_json::to_vec(&acl)?),
        }
        self.store.commit(batch)?;
        match acl.is_empty() {
            true => state.grants.remove(&object),
            false => state.grants.insert(object, acl),
        };
        Ok(())
    }

    /// Stages the removal of `object`'s grants, for when it is dropped.
    pub(crate) fn stage_drop_grants(&self, object: u64, batch: &mut WriteBatch) {
        batch.delete(grants_key(object));
    }

    /// Forgets `object`'s grants once its drop has committed.
    pub(crate) fn forget_grants(&self, object: u64) {
        self.write().grants.remove(&object);
    }
}

fn next_oid(state: &RolesState) -> u32 {
    state
        .roles
        .keys()
        .next_back()
        .map_or(FIRST_ROLE_OID, |oid| (*oid + 1).max(FIRST_ROLE_OID))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(dir: &std::path::Path, objects: &[u64]) -> Roles {
        let store = Store::open(dir).unwrap();
        Roles::open(store, &objects.iter().copied().collect()).unwrap()
    }

    #[test]
    fn roles_and_grants_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let roles = roles(dir.path(), &[7]);
            let admin = roles.bootstrap("admin", Some("v1".into())).unwrap();
            assert_eq!(admin.oid, BOOTSTRAP_ROLE_OID);
            let options = RoleOptions {
                password: Some(Some("v2".into())),
                ..RoleOptions::default()
            };
            let alice = roles.create("alice", &options, true).unwrap();
            assert_eq!(alice.oid, FIRST_ROLE_OID);
            assert!(matches!(
                roles.create("alice", &options, true),
                Err(CatalogError::DuplicateRole(_))
            ));
            roles
                .change_grants(7, &[alice.oid], Privileges::SELECT, true)
                .unwrap();
            roles
                .change_grants(7, &[PUBLIC_OID], Privileges::INSERT, true)
                .unwrap();
        }
        let roles = roles(dir.path(), &[7]);
        let alice = roles.by_name("alice").unwrap();
        assert!(alice.login && !alice.superuser);
        assert_eq!(alice.password.as_deref(), Some("v2"));
        let held = roles.granted(7, alice.oid);
        assert!(held.contains(Privileges::SELECT) && held.contains(Privileges::INSERT));
        assert!(!held.contains(Privileges::DELETE));
        assert_eq!(held.letters(), "ar");
        // A grant keeps its grantee.
        assert!(matches!(
            roles.drop("alice", |id| id.to_string()),
            Err(CatalogError::RoleDependents { .. })
        ));
        roles
            .change_grants(7, &[alice.oid], Privileges::SELECT, false)
            .unwrap();
        assert!(roles.drop("alice", |id| id.to_string()).unwrap());
        assert!(roles.by_name("alice").is_none());
        // Bootstrapping again keeps the oid and sets the new password.
        let admin = roles.bootstrap("admin", Some("v3".into())).unwrap();
        assert_eq!(admin.oid, BOOTSTRAP_ROLE_OID);
        assert_eq!(admin.password.as_deref(), Some("v3"));
    }

    #[test]
    fn grants_on_dropped_objects_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        {
            let roles = roles(dir.path(), &[7]);
            roles
                .change_grants(7, &[PUBLIC_OID], Privileges::SELECT, true)
                .unwrap();
            roles
                .change_grants(DATABASE_OBJECT, &[PUBLIC_OID], Privileges::CREATE, true)
                .unwrap();
        }
        // Object 7 is gone; the database's grants stay.
        let roles = roles(dir.path(), &[]);
        assert!(roles.granted(7, 1).is_empty());
        assert!(roles
            .granted(DATABASE_OBJECT, 1)
            .contains(Privileges::CREATE));
    }
}
