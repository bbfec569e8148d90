//! Roles as Postgres's catalogs show them: `pg_roles` and `pg_authid`
//! from the catalog's roles, `current_user`, `pg_get_userbyid`, and each
//! relation's access privileges as `relacl` lists them (psql's `\du` and
//! `\dp`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use eddy_catalog::roles::{Privileges, Role, BOOTSTRAP_ROLE_OID, PUBLIC_OID};
use eddy_catalog::Catalog;

use crate::pg_catalog::{rows_by_column_name, DerivedCatalog};
use crate::pg_sizes::RelationOids;

/// `pg_roles` (`authid` false: passwords masked) or `pg_authid`, whose
/// verifiers only superusers see.
#[derive(Debug)]
pub struct RolesTable {
    pub inner: Arc<dyn TableProvider>,
    pub catalog: Arc<Catalog>,
    pub authid: bool,
}

#[async_trait]
impl DerivedCatalog for RolesTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    async fn rows(&self, _state: &dyn Session) -> Result<RecordBatch> {
        let roles = self.catalog.roles().all();
        let reader_is_superuser = current_role(&self.catalog).superuser;
        rows_by_column_name(&self.schema(), roles.len(), |column, i| {
            let role = &roles[i];
            let flag = |on: bool| Some(ScalarValue::Boolean(Some(on)));
            match column {
                "oid" => Some(ScalarValue::Int32(Some(role.oid as i32))),
                "rolname" => Some(ScalarValue::Utf8(Some(role.name.clone()))),
                "rolsuper" => flag(role.superuser),
                "rolinherit" => flag(true),
                "rolcreaterole" => flag(role.create_role || role.superuser),
                "rolcreatedb" => flag(role.create_db || role.superuser),
                "rolcanlogin" => flag(role.login),
                "rolreplication" | "rolbypassrls" => flag(role.superuser),
                "rolconnlimit" => Some(ScalarValue::Int32(Some(-1))),
                "rolpassword" => match (self.authid, &role.password) {
                    (_, None) => None,
                    (false, Some(_)) => Some(ScalarValue::Utf8(Some("********".into()))),
                    (true, Some(v)) => {
                        reader_is_superuser.then(|| ScalarValue::Utf8(Some(v.clone())))
                    }
                },
                _ => None,
            }
        })
    }
}

/// `pg_tables`, with each relation's owner in `tableowner`.
#[derive(Debug)]
pub struct TableOwners {
    pub inner: Arc<dyn TableProvider>,
    pub catalog: Arc<Catalog>,
}

#[async_trait]
impl DerivedCatalog for TableOwners {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let batch = crate::pg_catalog::read_all(self.inner.as_ref(), state).await?;
        let schema = batch.schema();
        let (Ok(name_index), Ok(owner_index)) =
            (schema.index_of("tablename"), schema.index_of("tableowner"))
        else {
            return Ok(batch);
        };
        let names = datafusion::arrow::compute::cast(batch.column(name_index), &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let owners: StringArray = (0..batch.num_rows())
            .map(|i| {
                let id = names
                    .is_valid(i)
                    .then(|| self.catalog.relation(names.value(i)).map(|r| r.id()))
                    .flatten();
                let owner = id.and_then(|id| self.catalog.owner_of(id));
                Some(
                    self.catalog
                        .roles()
                        .name_of(owner.unwrap_or(BOOTSTRAP_ROLE_OID)),
                )
            })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[owner_index] =
            datafusion::arrow::compute::cast(&owners, schema.field(owner_index).data_type())?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// The running statement's role (the bootstrap superuser outside a
/// session).
pub fn current_role(catalog: &Catalog) -> Role {
    let roles = catalog.roles();
    let session = crate::handler::set::current_session();
    session
        .as_deref()
        .and_then(crate::login::current_role)
        .and_then(|name| roles.by_name(name))
        .or_else(|| roles.by_oid(BOOTSTRAP_ROLE_OID))
        .unwrap_or_else(|| Role {
            oid: BOOTSTRAP_ROLE_OID,
            name: "eddy".into(),
            superuser: true,
            login: true,
            create_role: true,
            create_db: true,
            password: None,
        })
}

fn oid_at(array: &ArrayRef, i: usize) -> Option<i64> {
    if array.is_null(i) {
        return None;
    }
    let cast = datafusion::arrow::compute::cast(&array.slice(i, 1), &DataType::Int64).ok()?;
    let ints = cast.as_primitive::<Int64Type>();
    ints.is_valid(0).then(|| ints.value(0))
}

/// `session_user` (and `current_user` and `user`, which sqlparser's
/// rewrites name so): the role the session acts as.
fn session_user(catalog: Arc<Catalog>) -> ScalarUDF {
    create_udf(
        "session_user",
        vec![],
        DataType::Utf8,
        // Stable, as Postgres's: folded when the statement is planned for
        // running, in its session.
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                current_role(&catalog).name,
            ))))
        }),
    )
}

/// `pg_get_userbyid(oid)`: a role's name, or `unknown (OID=n)` as in
/// Postgres.
fn get_userbyid(catalog: Arc<Catalog>) -> ScalarUDF {
    create_udf(
        "pg_get_userbyid",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names: StringArray = (0..arrays[0].len())
                .map(|i| {
                    oid_at(&arrays[0], i).map(|oid| {
                        match u32::try_from(oid)
                            .ok()
                            .and_then(|o| catalog.roles().by_oid(o))
                        {
                            Some(role) => role.name,
                            None => format!("unknown (OID={oid})"),
                        }
                    })
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(names)))
        }),
    )
}

/// A relation's access privileges as `relacl` shows them, one
/// `grantee=privileges/grantor` per line (PUBLIC's with no grantee),
/// owner first; NULL for a relation nothing was ever granted on.
pub fn acl_text(catalog: &Catalog, name: &str, separator: &str) -> Option<String> {
    let id = catalog
        .relation(name)
        .map(|r| r.id())
        .or_else(|| catalog.plain_view(name).map(|v| v.id))?;
    let roles = catalog.roles();
    let grants = roles.acl(id);
    if grants.is_empty() {
        return None;
    }
    let owner = catalog.owner_of(id).unwrap_or(BOOTSTRAP_ROLE_OID);
    let owner_name = roles.name_of(owner);
    let mut entries = vec![format!(
        "{owner_name}={}/{owner_name}",
        Privileges::ALL_RELATION.letters()
    )];
    for (grantee, privileges) in grants {
        if grantee == owner {
            continue;
        }
        let grantee = match grantee {
            PUBLIC_OID => String::new(),
            oid => roles.name_of(oid),
        };
        entries.push(format!("{grantee}={}/{owner_name}", privileges.letters()));
    }
    Some(entries.join(separator))
}

/// `eddy_relacl(oid, separator)`: [`acl_text`] for the relation `pg_class`
/// lists under `oid`; what `array_to_string(relacl, separator)` becomes.
fn relacl(catalog: Arc<Catalog>, oids: RelationOids) -> ScalarUDF {
    create_udf(
        RELACL,
        vec![DataType::Int64, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let separators = datafusion::arrow::compute::cast(&arrays[1], &DataType::Utf8)?;
            let separators = separators.as_string::<i32>();
            let names = oids.read().unwrap_or_else(|e| e.into_inner());
            let acls: StringArray = (0..arrays[0].len())
                .map(|i| {
                    let oid = i32::try_from(oid_at(&arrays[0], i)?).ok()?;
                    let name = names.get(&oid)?;
                    let separator = if separators.is_valid(i) {
                        separators.value(i)
                    } else {
                        ","
                    };
                    acl_text(&catalog, name, separator)
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(acls)))
        }),
    )
}

/// The name [`relacl`] is registered under.
pub const RELACL: &str = "eddy_relacl";

/// The functions above, over `catalog` and the oids `pg_class` lists.
pub fn role_functions(catalog: &Arc<Catalog>, oids: &RelationOids) -> Vec<ScalarUDF> {
    vec![
        session_user(catalog.clone()),
        get_userbyid(catalog.clone()),
        relacl(catalog.clone(), oids.clone()),
    ]
}
