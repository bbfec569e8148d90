//! Key lookups without DataFusion: a query that reads columns of one table
//! or view where every condition fixes a key column (`WHERE id = $1`, `WHERE
//! a = 1 AND b IN (2, 3)`) is answered by reading those keys, as
//! Materialize's fast-path peeks are. Planning and running such a query
//! through DataFusion costs far more than the lookup; anything else goes
//! there.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ParamValues;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan, TableScan};
use eddy_catalog::key_lookup::{allowed_keys, fixes_key_column};

use super::Output;
use crate::engine::Engine;
use crate::error::Result;

/// What a lookup-shaped plan reads: the scan, the conjuncts of its
/// condition, and for each output column its index in the scan's rows.
struct Shape<'a> {
    scan: &'a TableScan,
    conditions: Vec<Expr>,
    columns: Vec<usize>,
}

/// The plan's shape if it is projections of plain columns over one
/// filter over one scan.
fn shape(plan: &LogicalPlan) -> Option<Shape<'_>> {
    match plan {
        LogicalPlan::Projection(p) => {
            let inner = shape(&p.input)?;
            let columns = p
                .expr
                .iter()
                .map(|e| match e.clone().unalias() {
                    Expr::Column(c) => {
                        let at = p.input.schema().index_of_column(&c).ok()?;
                        inner.columns.get(at).copied()
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Shape { columns, ..inner })
        }
        LogicalPlan::SubqueryAlias(s) => shape(&s.input),
        LogicalPlan::Filter(f) => {
            let LogicalPlan::TableScan(scan) = strip_alias(&f.input) else {
                return None;
            };
            if !scan.filters.is_empty() || scan.fetch.is_some() {
                return None;
            }
            let width = scan.source.schema().fields().len();
            let columns = match &scan.projection {
                Some(projection) => projection.clone(),
                None => (0..width).collect(),
            };
            let conditions = split_conjunction(&f.predicate)
                .into_iter()
                .cloned()
                .collect();
            Some(Shape {
                scan,
                conditions,
                columns,
            })
        }
        _ => None,
    }
}

fn strip_alias(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::SubqueryAlias(s) => strip_alias(&s.input),
        plan => plan,
    }
}

/// A lookup-shaped query, found once (when a statement is prepared) and run
/// for each execution with its parameters bound into the conditions only.
#[derive(Debug, Clone)]
pub struct Lookup {
    table: String,
    conditions: Vec<Expr>,
    columns: Vec<usize>,
    /// The scanned relation's schema, as planned.
    source: SchemaRef,
    /// The query's output schema.
    schema: SchemaRef,
}

impl Lookup {
    /// The lookup `plan` asks for, if it has the shape of one.
    pub fn of(plan: &LogicalPlan) -> Option<Lookup> {
        let shape = shape(plan)?;
        let name = &shape.scan.table_name;
        if name.schema().is_some_and(|s| s != "public") {
            return None;
        }
        Some(Lookup {
            table: name.table().to_owned(),
            conditions: shape.conditions,
            columns: shape.columns,
            source: shape.scan.source.schema(),
            schema: Arc::new(plan.schema().as_arrow().clone()),
        })
    }

    /// Reads the keys the conditions fix, with `params` in place of their
    /// placeholders; `None` when the query must run as a query.
    pub async fn run(
        &self,
        engine: &Engine,
        params: Option<&ParamValues>,
    ) -> Result<Option<Output>> {
        let Some(relation) = engine.catalog.relation(&self.table) else {
            return Ok(None);
        };
        let keys = relation.key_column_names();
        let bound;
        let conditions = match params {
            Some(params) => {
                bound = self
                    .conditions
                    .iter()
                    .map(|c| bind(c.clone(), params))
                    .collect::<Result<Vec<_>>>()?;
                &bound
            }
            None => &self.conditions,
        };
        if keys.is_empty() || !conditions.iter().all(|c| fixes_key_column(c, &keys)) {
            return Ok(None);
        }
        let Some(allowed) = allowed_keys(conditions, &keys) else {
            return Ok(None);
        };
        let rows = {
            // One epoch, as every query sees.
            let _epoch = engine.read_epoch().await;
            relation.read_keys(&allowed)?
        };
        let Some(rows) = rows else {
            return Ok(None);
        };
        let same_columns = rows.num_columns() == self.source.fields().len()
            && rows
                .schema()
                .fields()
                .iter()
                .zip(self.source.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same_columns {
            return Ok(None);
        }
        let columns = self
            .columns
            .iter()
            .map(|&i| rows.column(i).clone())
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows.num_rows()));
        let Ok(batch) = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
        else {
            return Ok(None);
        };
        Ok(Some(Output::Rows {
            schema: self.schema.clone(),
            batches: vec![batch],
            tag: "SELECT",
        }))
    }
}

/// `condition` with its placeholders replaced by their values.
fn bind(condition: Expr, params: &ParamValues) -> Result<Expr> {
    let bound = condition.transform_up(|e| match e {
        Expr::Placeholder(Placeholder { id, .. }) => {
            let (value, metadata) = params.get_placeholders_with_values(&id)?.into_inner();
            Ok(Transformed::yes(Expr::Literal(value, metadata)))
        }
        e => Ok(Transformed::no(e)),
    })?;
    Ok(bound.data)
}

/// Answers `plan` by key lookups if it has their shape; `None` when it
/// must run as a query.
pub async fn try_lookup(engine: &Engine, plan: &LogicalPlan) -> Result<Option<Output>> {
    match Lookup::of(plan) {
        Some(lookup) => lookup.run(engine, None).await,
        None => Ok(None),
    }
}
