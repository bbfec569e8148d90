//! Postgres's size functions over what Eddy stores: `pg_table_size`,
//! `pg_relation_size`, `pg_total_relation_size`, `pg_indexes_size` and
//! `pg_database_size`, as psql's `\dt+` and `\l+` and BI tools call them.
//!
//! A relation's size is the bytes the store holds for it (see
//! [`Catalog::relation_bytes`]): a table's or stream's rows, a view's state
//! log. Eddy keeps no separate indexes, so their size is 0. The database's
//! size is the data directory's; every database name a client connects
//! with reaches the same one. A relation is
//! named by its oid, as `pg_class` last listed it, or by its name; an oid
//! that is not one of Eddy's relations gives NULL, and a name that is no
//! relation 42P01, as in Postgres.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use eddy_catalog::{Catalog, CatalogError};

/// Eddy's relations by oid, as `pg_class` last listed them.
pub type RelationOids = Arc<RwLock<HashMap<i32, String>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Measure {
    /// The relation's own bytes.
    Relation,
    /// Its indexes: Eddy keeps none apart from the rows.
    Indexes,
    /// The whole data directory.
    Database,
}

struct SizeFunction {
    name: &'static str,
    measure: Measure,
    signature: Signature,
    catalog: Arc<Catalog>,
    oids: RelationOids,
}

impl std::fmt::Debug for SizeFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SizeFunction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for SizeFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for SizeFunction {}

impl std::hash::Hash for SizeFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// The size functions, reading `catalog` and the oids in `oids`.
pub fn size_functions(catalog: &Arc<Catalog>, oids: &RelationOids) -> Vec<ScalarUDF> {
    let by_relation = vec![vec![DataType::Int64], vec![DataType::Utf8]];
    // pg_relation_size(oid, fork): Eddy's relations have the main fork only.
    let with_fork = vec![
        vec![DataType::Int64],
        vec![DataType::Utf8],
        vec![DataType::Int64, DataType::Utf8],
        vec![DataType::Utf8, DataType::Utf8],
    ];
    [
        ("pg_table_size", Measure::Relation, by_relation.clone()),
        (
            "pg_total_relation_size",
            Measure::Relation,
            by_relation.clone(),
        ),
        ("pg_relation_size", Measure::Relation, with_fork),
        ("pg_indexes_size", Measure::Indexes, by_relation.clone()),
        ("pg_database_size", Measure::Database, by_relation),
    ]
    .into_iter()
    .map(|(name, measure, signatures)| {
        ScalarUDF::new_from_impl(SizeFunction {
            name,
            measure,
            signature: Signature::one_of(
                signatures.into_iter().map(TypeSignature::Exact).collect(),
                Volatility::Volatile,
            ),
            catalog: catalog.clone(),
            oids: oids.clone(),
        })
    })
    .collect()
}

impl SizeFunction {
    /// The relation an argument names: by oid (`None` for an oid that is
    /// not one of Eddy's relations), or by name (as written, or folded to
    /// lower case as an unquoted name is, without `public.`; 42P01 for a
    /// name that is no relation).
    fn relation(&self, oid: Option<i64>, name: Option<&str>) -> Result<Option<String>> {
        if let Some(oid) = oid {
            let oids = self.oids.read().unwrap_or_else(|e| e.into_inner());
            return Ok(i32::try_from(oid)
                .ok()
                .and_then(|oid| oids.get(&oid).cloned()));
        }
        let Some(written) = name else {
            return Ok(None);
        };
        let name = written.strip_prefix("public.").unwrap_or(written);
        let found = [name.trim_matches('"').to_owned(), name.to_lowercase()]
            .into_iter()
            .find(|n| self.catalog.relation(n).is_some() || self.catalog.plain_view(n).is_some());
        match found {
            Some(found) => Ok(Some(found)),
            None => Err(DataFusionError::External(Box::new(
                CatalogError::UndefinedTable(written.to_owned()),
            ))),
        }
    }

    fn size(
        &self,
        oid: Option<i64>,
        name: Option<&str>,
        fork: Option<&str>,
    ) -> Result<Option<i64>> {
        let bytes = match self.measure {
            // One database, whatever name a client connects with.
            Measure::Database => Some(self.catalog.store().disk_bytes()),
            Measure::Indexes => self.relation(oid, name)?.map(|_| 0),
            Measure::Relation => match self.relation(oid, name)? {
                None => None,
                Some(_) if fork.is_some_and(|f| f != "main") => Some(0),
                Some(relation) => self
                    .catalog
                    .relation_bytes(&relation)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?,
            },
        };
        Ok(bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)))
    }
}

impl ScalarUDFImpl for SizeFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let relation = &arrays[0];
        let fork = arrays.get(1).map(|f| f.as_string::<i32>());
        let sizes = (0..args.number_rows)
            .map(|i| {
                if relation.is_null(i) {
                    return Ok(None);
                }
                let fork = fork.and_then(|f| f.is_valid(i).then(|| f.value(i)));
                match relation.data_type() {
                    DataType::Int64 => {
                        let oid = relation.as_primitive::<Int64Type>().value(i);
                        self.size(Some(oid), None, fork)
                    }
                    _ => self.size(None, Some(relation.as_string::<i32>().value(i)), fork),
                }
            })
            .collect::<Result<Int64Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(sizes)))
    }
}
