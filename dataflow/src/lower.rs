//! Lowering: DataFusion's optimized logical plan of a view's query becomes a
//! tree of incremental operators. Expressions become DataFusion physical
//! expressions, evaluated a batch at a time. Whatever cannot be maintained
//! incrementally is refused here, naming the construct.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{concat, SortOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, JoinType, NullEquality, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::expr::{AggregateFunction, NullTreatment, WindowFunction};
use datafusion::logical_expr::logical_plan::{
    Aggregate, Distinct, FetchType, Join as JoinPlan, Limit, SkipType, Sort, TableScan, Window,
};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator as BinaryOp, SortExpr, Volatility,
};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::PhysicalExpr;
use eddy_catalog::{column_types, Catalog, Relation};

use crate::change::nullable_schema;
use crate::graph::Node;
use crate::operators::aggregate::{AggFunction, AggSpec, WindowClose};
use crate::operators::join::{JoinKind, JoinSpec, StreamTime, TimeBound, TimeInterval};
use crate::operators::session::SessionWindows;
use crate::operators::topn::TopNSpec;
use crate::plan::{AggregatePlan, PlanExpr, PlanNode, PlanOp, PlanRows, SortKey};
use crate::watermark::EventTimeColumns;
use crate::{DataflowError, Result};

/// A view's dataflow, ready to run, and the plan it was built from.
pub struct Lowered {
    pub root: Node,
    /// The typed plan, as stored with the view (see [`crate::plan`]).
    pub plan: serde_json::Value,
    /// The tables and views it reads, by id.
    pub depends_on: Vec<u64>,
    /// The plain views expanded into its query before planning, by id:
    /// it depends on them too, though it never reads them.
    pub plain_views: Vec<u64>,
}

/// Refuses functions whose results change over time (`now()`, `random()`).
/// Check the plan before optimization, which folds some of them away.
pub fn check_deterministic(plan: &LogicalPlan) -> Result<()> {
    let mut found = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.func.signature().volatility != Volatility::Immutable {
                        found = Some(f.func.name().to_owned());
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    match found {
        Some(name) => Err(DataflowError::Unsupported(format!(
            "function {name}(), whose result changes over time,"
        ))),
        None => Ok(()),
    }
}

/// A window over event time in a view's query, as the SQL layer made it
/// (see `eddy_sql::windows`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowHint {
    /// The alias of the windowed relation, which qualifies its
    /// `window_start` and `window_end` columns.
    pub alias: String,
    /// The relation windowed, by id.
    pub relation: u64,
    /// Whether the window's time column is the relation's event time (or
    /// its processing time), so its watermark closes the windows.
    pub on_event_time: bool,
    /// Whether the window's time column is the relation's processing-time
    /// column (`AS PROCTIME()`), whose watermark is the ingest clock.
    pub processing_time: bool,
    /// A tumbling or hopping window's size; a session window's gap.
    pub size_us: i64,
    /// How long a window takes late rows after it ends.
    pub grace_us: i64,
    /// A session window (see `operators::session`).
    pub session: bool,
    /// ksqlDB's `RETENTION`: how long after its start (a session's end) a
    /// window's row stays in the output.
    pub retention_us: Option<i64>,
}

/// A stream-stream join's grace period (ksqlDB's `WITHIN ... GRACE
/// PERIOD`), by the relations it joins, left then right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGrace {
    pub relations: [u64; 2],
    pub grace_us: i64,
}

/// The windows of a view's query, and when it emits their results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Windowing {
    pub windows: Vec<WindowHint>,
    /// `EMIT FINAL`: one row per window, when it closes.
    pub emit_final: bool,
    /// Grace periods of joins bounded in time; others have none.
    pub join_graces: Vec<JoinGrace>,
    /// Joins of a stream (on the left) to a table are ksqlDB's: each
    /// stream row joins the table as it is when the row is processed, and
    /// later table changes emit nothing, so the result is a stream. For
    /// queries whose output is a stream.
    pub lookup_joins: bool,
}

/// The column names a windowed relation adds.
const WINDOW_START: &str = "window_start";
const WINDOW_END: &str = "window_end";

/// Lowers an optimized plan to a typed plan, and builds from it a dataflow
/// run by `workers` workers. The dataflow is built from the plan as stored,
/// read back, just as a restart builds it; `ctx` finds the functions its
/// expressions call.
pub fn lower(
    plan: &LogicalPlan,
    catalog: &Catalog,
    workers: usize,
    windowing: &Windowing,
    ctx: &TaskContext,
) -> Result<Lowered> {
    let (typed, depends_on) = lower_to_plan(plan, catalog, windowing)?;
    let stored = typed.to_stored()?;
    let mut root = PlanNode::from_stored(&stored)?.build(ctx, catalog, workers)?;
    root.schema = with_field_metadata(&root.schema, plan.schema().fields());
    Ok(Lowered {
        root,
        plan: stored,
        depends_on,
        plain_views: Vec::new(),
    })
}

/// `schema` with the field metadata (a jsonb column's mark) of the plan's
/// output `fields`, which the typed plan does not carry.
fn with_field_metadata(
    schema: &SchemaRef,
    fields: &datafusion::arrow::datatypes::Fields,
) -> SchemaRef {
    if fields.len() != schema.fields().len() || fields.iter().all(|f| f.metadata().is_empty()) {
        return schema.clone();
    }
    let marked: Vec<Field> = schema
        .fields()
        .iter()
        .zip(fields)
        .map(
            |(field, planned)| match field.data_type() == planned.data_type() {
                true => field
                    .as_ref()
                    .clone()
                    .with_metadata(planned.metadata().clone()),
                false => field.as_ref().clone(),
            },
        )
        .collect();
    Arc::new(Schema::new_with_metadata(marked, schema.metadata().clone()))
}

/// The typed plan of an optimized plan, and the relations it reads.
pub(crate) fn lower_to_plan(
    plan: &LogicalPlan,
    catalog: &Catalog,
    windowing: &Windowing,
) -> Result<(PlanNode, Vec<u64>)> {
    let mut lowerer = Lowerer {
        catalog,
        depends_on: Vec::new(),
        next_id: 0,
        props: ExecutionProps::new(),
        windowing,
        closes_windows: false,
        watermarked: Vec::new(),
    };
    let root = lowerer.lower(plan, &HashMap::new())?;
    if windowing.emit_final && !lowerer.closes_windows {
        return unsupported(
            "EMIT FINAL without an aggregate that groups by window_start or window_end of a \
             window over event time",
        );
    }
    Ok((root, lowerer.depends_on))
}

/// Upper bounds on row-number columns, by column name, from filters above.
type Bounds = HashMap<String, usize>;

struct Lowerer<'a> {
    catalog: &'a Catalog,
    depends_on: Vec<u64>,
    next_id: u32,
    props: ExecutionProps,
    windowing: &'a Windowing,
    /// Whether an aggregate closes windows by the watermark.
    closes_windows: bool,
    /// Relations whose watermarks a join bounded in time follows.
    watermarked: Vec<u64>,
}

fn schema_of(plan: &LogicalPlan) -> SchemaRef {
    nullable_schema(plan.schema().as_arrow())
}

fn unsupported<T>(what: impl Into<String>) -> Result<T> {
    Err(DataflowError::Unsupported(what.into()))
}

fn list(exprs: &[Expr]) -> String {
    exprs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Lowerer<'_> {
    fn node(&mut self, op: PlanOp, inputs: Vec<PlanNode>, schema: SchemaRef) -> PlanNode {
        let id = self.next_id;
        self.next_id += 1;
        PlanNode {
            id,
            op,
            inputs,
            schema,
        }
    }

    fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<PlanExpr> {
        self.physical_expr(expr, schema).map(PlanExpr::Built)
    }

    fn physical_expr(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        let mut subquery = false;
        expr.apply(|e| {
            if matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
            ) {
                subquery = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if subquery {
            return unsupported(format!(
                "the subquery in \"{expr}\" (it could not be turned into a join)"
            ));
        }
        Ok(create_physical_expr(
            expr,
            schema,
            &self.props,
            &PhysicalPlanningContext::default(),
        )?)
    }

    /// Expressions as physical expressions, and their types.
    fn physical_with_types(
        &self,
        exprs: &[Expr],
        schema: &DFSchema,
    ) -> Result<(Vec<PlanExpr>, Vec<DataType>)> {
        exprs
            .iter()
            .map(|e| Ok((self.physical(e, schema)?, e.get_type(schema)?)))
            .collect::<Result<Vec<_>>>()
            .map(|pairs| pairs.into_iter().unzip())
    }

    /// Sort expressions as physical expressions, with types and directions.
    fn sort_keys(&self, exprs: &[SortExpr], schema: &DFSchema) -> Result<Vec<SortKey<PlanExpr>>> {
        exprs
            .iter()
            .map(|s| {
                Ok((
                    self.physical(&s.expr, schema)?,
                    s.expr.get_type(schema)?,
                    SortOptions {
                        descending: !s.asc,
                        nulls_first: s.nulls_first,
                    },
                ))
            })
            .collect()
    }

    fn lower(&mut self, plan: &LogicalPlan, bounds: &Bounds) -> Result<PlanNode> {
        match plan {
            LogicalPlan::Projection(p) => {
                // Carry row-number bounds through renames.
                let mut inner = Bounds::new();
                for (i, expr) in p.expr.iter().enumerate() {
                    if let (Some(bound), Expr::Column(c)) =
                        (bounds.get(p.schema.field(i).name()), expr.clone().unalias())
                    {
                        inner.insert(c.name.clone(), *bound);
                    }
                }
                let input = self.lower(&p.input, &inner)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                let schema = schema_of(plan);
                let op = PlanOp::Project {
                    exprs,
                    text: list(&p.expr),
                };
                Ok(self.node(op, vec![input], schema))
            }
            LogicalPlan::Filter(f) => {
                let mut inner = bounds.clone();
                for conjunct in split_conjunction(&f.predicate) {
                    if let Some((name, bound)) = row_number_bound(conjunct) {
                        let entry = inner.entry(name).or_insert(bound);
                        *entry = (*entry).min(bound);
                    }
                }
                let input = self.lower(&f.input, &inner)?;
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                let schema = input.schema.clone();
                let op = PlanOp::Filter {
                    predicate,
                    text: f.predicate.to_string(),
                };
                Ok(self.node(op, vec![input], schema))
            }
            LogicalPlan::SubqueryAlias(s) => self.lower(&s.input, bounds),
            LogicalPlan::TableScan(scan) => self.scan(plan, scan),
            LogicalPlan::Aggregate(a) => self.aggregate(plan, a),
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let node = self.lower(input, &Bounds::new())?;
                self.distinct(node)
            }
            LogicalPlan::Distinct(Distinct::On(_)) => unsupported("DISTINCT ON"),
            LogicalPlan::Join(j) => self.join(plan, j),
            LogicalPlan::Union(u) => {
                let inputs = u
                    .inputs
                    .iter()
                    .map(|i| self.lower(i, &Bounds::new()))
                    .collect::<Result<Vec<_>>>()?;
                Ok(self.node(PlanOp::Union, inputs, schema_of(plan)))
            }
            LogicalPlan::Sort(sort) => match sort.fetch {
                Some(fetch) => self.top_n(plan, sort, 0, fetch),
                // A view is a set of rows: an ORDER BY without LIMIT orders
                // nothing. Read the view with ORDER BY instead.
                None => self.lower(&sort.input, &Bounds::new()),
            },
            LogicalPlan::Limit(limit) => self.limit(plan, limit),
            LogicalPlan::Window(w) => self.window(plan, w, bounds),
            LogicalPlan::EmptyRelation(e) => {
                let rows = usize::from(e.produce_one_row);
                let schema = schema_of(plan);
                let options = RecordBatchOptions::new().with_row_count(Some(rows));
                let columns = schema
                    .fields()
                    .iter()
                    .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), rows))
                    .collect();
                let batch = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
                let op = PlanOp::Constant {
                    rows: PlanRows(batch),
                };
                Ok(self.node(op, vec![], schema))
            }
            LogicalPlan::Values(v) => {
                let schema = schema_of(plan);
                let empty = DFSchema::empty();
                let one_row = RecordBatch::try_new_with_options(
                    Arc::new(Schema::empty()),
                    vec![],
                    &RecordBatchOptions::new().with_row_count(Some(1)),
                )?;
                let mut columns = Vec::new();
                for (c, field) in schema.fields().iter().enumerate() {
                    let mut cells = Vec::new();
                    for row in &v.values {
                        let value = self.physical_expr(&row[c], &empty)?.evaluate(&one_row)?;
                        let array = value.into_array(1)?;
                        cells.push(if array.data_type() == field.data_type() {
                            array
                        } else {
                            datafusion::arrow::compute::cast(&array, field.data_type())?
                        });
                    }
                    let refs: Vec<&dyn datafusion::arrow::array::Array> =
                        cells.iter().map(|a| a.as_ref()).collect();
                    columns.push(concat(&refs)?);
                }
                let batch = RecordBatch::try_new_with_options(
                    schema.clone(),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(v.values.len())),
                )?;
                let op = PlanOp::Constant {
                    rows: PlanRows(batch),
                };
                Ok(self.node(op, vec![], schema))
            }
            other => unsupported(format!("{} in a materialized view", plan_name(other))),
        }
    }

    fn scan(&mut self, plan: &LogicalPlan, scan: &TableScan) -> Result<PlanNode> {
        let name = scan.table_name.table();
        let in_public = scan
            .table_name
            .schema()
            .is_none_or(|s| s == eddy_catalog::SCHEMA_NAME);
        let relation = in_public.then(|| self.catalog.relation(name)).flatten();
        let Some(relation) = relation else {
            return unsupported(format!(
                "reading {} (only tables and materialized views can feed a materialized view)",
                scan.table_name
            ));
        };
        if scan.fetch.is_some() {
            return unsupported("LIMIT without ORDER BY");
        }
        let label = match &relation {
            Relation::Table(_) => format!("table {name}"),
            Relation::View(_) => format!("materialized view {name}"),
        };
        let id = relation.id();
        if !self.depends_on.contains(&id) {
            self.depends_on.push(id);
        }
        let schema = schema_of(plan);
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let label = format!("{label} [{}]", columns.join(", "));
        let mut event_time = None;
        let on_relation = |processing_time: bool| {
            self.windowing.windows.iter().any(|w| {
                w.relation == id && w.on_event_time && w.processing_time == processing_time
            })
        };
        let by_processing_time = on_relation(true);
        let windowed = self.watermarked.contains(&id) || on_relation(false);
        if by_processing_time && windowed {
            return unsupported(format!(
                "windows over both the event time and the processing time of {name} in one query"
            ));
        }
        if let (true, Relation::Table(table)) = (by_processing_time, &relation) {
            let time = table.def().processing_time.ok_or_else(|| {
                DataflowError::Internal(format!("{name} has no processing time to window by"))
            })?;
            // The ingest clock: one partition, no delay.
            event_time = Some(EventTimeColumns {
                time,
                partition: None,
                delay_us: 0,
            });
        }
        if let (true, Relation::Table(table)) = (windowed, &relation) {
            let def = table.def();
            let time = def.event_time_column().ok_or_else(|| {
                DataflowError::Internal(format!("{name} has no event time to window by"))
            })?;
            let partition = def
                .columns
                .iter()
                .position(|c| c.name == eddy_catalog::kafka::ROWPARTITION);
            event_time = Some(EventTimeColumns {
                time,
                partition,
                delay_us: def.watermark.map_or(0, |w| w.delay_us),
            });
        }
        let source = PlanOp::Source {
            relation: id,
            label,
            projection: scan.projection.clone(),
            event_time,
        };
        let mut node = self.node(source, vec![], schema.clone());
        if let Some(predicate) = scan.filters.iter().cloned().reduce(Expr::and) {
            let op = PlanOp::Filter {
                predicate: self.physical(&predicate, &scan.projected_schema)?,
                text: predicate.to_string(),
            };
            node = self.node(op, vec![node], schema);
        }
        Ok(node)
    }

    fn aggregate(&mut self, plan: &LogicalPlan, a: &Aggregate) -> Result<PlanNode> {
        if a.group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return unsupported("GROUPING SETS, ROLLUP and CUBE");
        }
        let input = self.lower(&a.input, &Bounds::new())?;
        let in_schema = a.input.schema();
        let out_schema = plan.schema();
        let (group_exprs, group_types) = self.physical_with_types(&a.group_expr, in_schema)?;
        let mut specs = Vec::new();
        for (k, expr) in a.aggr_expr.iter().enumerate() {
            let output_type = out_schema.field(a.group_expr.len() + k).data_type().clone();
            specs.push(self.agg_spec(expr, in_schema, output_type)?);
        }
        let schema = schema_of(plan);
        let text = format!(
            "group by [{}], aggregates [{}]",
            list(&a.group_expr),
            list(&a.aggr_expr)
        );
        let window_close = self.window_close(&a.group_expr);
        self.closes_windows |= window_close.is_some();
        let op = PlanOp::Aggregate(Box::new(AggregatePlan {
            group_by: group_exprs,
            group_types,
            aggregates: specs,
            text,
            sessions: self.session_windows(&a.group_expr, in_schema)?,
            window_close,
        }));
        let node = self.node(op, vec![input], schema.clone());
        match self.retire_after(&a.group_expr) {
            Some((relation, column, after_us)) => {
                let op = PlanOp::Retire {
                    relation,
                    column,
                    after_us,
                };
                Ok(self.node(op, vec![node], schema))
            }
            None => Ok(node),
        }
    }

    /// For an aggregate over a window with a retention: the relation whose
    /// watermark retires its rows, the group column and how long after its
    /// value a row leaves (ksqlDB's retention runs from a window's start, a
    /// session's from its end).
    fn retire_after(&self, group_expr: &[Expr]) -> Option<(u64, usize, i64)> {
        group_expr.iter().enumerate().find_map(|(k, expr)| {
            let (hint, column) = self.window_of(expr).filter(|(h, _)| h.on_event_time)?;
            let retention = hint.retention_us?;
            let after = match (hint.session, column.name.as_str()) {
                (true, WINDOW_END) => retention,
                (true, _) => return None,
                (false, WINDOW_END) => retention - hint.size_us,
                (false, _) => retention,
            };
            Some((hint.relation, k, after))
        })
    }

    /// The window whose `window_start` or `window_end` column `expr` is.
    fn window_of<'e>(&self, expr: &'e Expr) -> Option<(&WindowHint, &'e Column)> {
        let Expr::Column(column) = expr else {
            return None;
        };
        if column.name != WINDOW_START && column.name != WINDOW_END {
            return None;
        }
        let hint = self.windowing.windows.iter().find(|w| {
            column
                .relation
                .as_ref()
                .is_some_and(|r| r.table() == w.alias)
        })?;
        Some((hint, column))
    }

    /// Where a session window aggregate's bounds are, if it groups by a
    /// session window.
    fn session_windows(
        &self,
        group_expr: &[Expr],
        in_schema: &DFSchema,
    ) -> Result<Option<SessionWindows>> {
        let mut bounds = [None, None];
        let mut gap_us = 0;
        for (k, expr) in group_expr.iter().enumerate() {
            let Some((hint, column)) = self.window_of(expr).filter(|(h, _)| h.session) else {
                continue;
            };
            let input = in_schema.index_of_column(column)?;
            let bound = usize::from(column.name == WINDOW_END);
            if bounds[bound].is_some() {
                return unsupported("grouping by one session window twice");
            }
            bounds[bound] = Some((k, input));
            gap_us = hint.size_us;
        }
        match bounds {
            [None, None] => Ok(None),
            [Some((start_key, start_input)), Some((end_key, end_input))] => {
                Ok(Some(SessionWindows {
                    start_key,
                    end_key,
                    start_input,
                    end_input,
                    gap_us,
                }))
            }
            _ => unsupported(
                "a session window aggregate that does not group by both window_start and \
                 window_end",
            ),
        }
    }

    /// How an aggregate's groups close, if one of its group columns is the
    /// start or end of a window over event time. A session closes once no
    /// row on time can reach it: the gap and the grace after its end.
    fn window_close(&self, group_expr: &[Expr]) -> Option<WindowClose> {
        group_expr.iter().enumerate().find_map(|(k, expr)| {
            let (hint, column) = self.window_of(expr).filter(|(h, _)| h.on_event_time)?;
            let (after_value, late_after) = match (hint.session, column.name.as_str()) {
                (true, WINDOW_END) => (hint.size_us + hint.grace_us + 1, hint.grace_us + 1),
                (true, _) => return None,
                (false, WINDOW_END) => (hint.grace_us, hint.grace_us),
                (false, _) => (hint.size_us + hint.grace_us, hint.size_us + hint.grace_us),
            };
            Some(WindowClose {
                relation: hint.relation,
                key_column: k,
                after_value,
                late_after,
                emit_final: self.windowing.emit_final,
            })
        })
    }

    fn agg_spec(
        &self,
        expr: &Expr,
        in_schema: &DFSchema,
        output_type: DataType,
    ) -> Result<AggSpec<PlanExpr>> {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = expr.clone().unalias()
        else {
            return unsupported(format!("aggregate expression {expr}"));
        };
        let name = func.name().to_ascii_lowercase();
        let function =
            match (name.as_str(), params.distinct) {
                ("count", false) => AggFunction::Count,
                ("count", true) => AggFunction::CountDistinct,
                ("sum", false) => AggFunction::Sum,
                ("avg" | "mean", false) => AggFunction::Avg,
                ("min", _) => AggFunction::Min,
                ("max", _) => AggFunction::Max,
                ("bool_and", _) => AggFunction::BoolAnd,
                ("bool_or", _) => AggFunction::BoolOr,
                ("string_agg", false) => AggFunction::StringAgg,
                ("first_value" | "last_value", false)
                    if params.null_treatment == Some(NullTreatment::IgnoreNulls)
                        && !params.order_by.is_empty() =>
                {
                    if name == "first_value" {
                        AggFunction::FirstValue
                    } else {
                        AggFunction::LastValue
                    }
                }
                ("array_agg", distinct) if !params.order_by.is_empty() => {
                    if distinct {
                        AggFunction::ArrayAggDistinct
                    } else {
                        AggFunction::ArrayAgg
                    }
                }
                ("array_agg", _) => return unsupported(
                    "array_agg(...) in a view without ORDER BY (write array_agg(x ORDER BY ...))",
                ),
                ("first_value" | "last_value", false) => {
                    return unsupported(format!(
                        "{name}(...) in a view without ORDER BY and IGNORE NULLS \
                     (write {name}(x ORDER BY ...) IGNORE NULLS)"
                    ))
                }
                (_, distinct) => {
                    let distinct = if distinct { "DISTINCT " } else { "" };
                    return unsupported(format!("aggregate {name}({distinct}...)"));
                }
            };
        if function == AggFunction::CountDistinct && params.args.len() != 1 {
            return unsupported("count(DISTINCT ...) of several columns");
        }
        let constant_arg = match params.args.first() {
            None => true,
            Some(Expr::Literal(v, _)) => !v.is_null() && function == AggFunction::Count,
            _ => false,
        };
        let (arg, input_type) = if constant_arg {
            (None, DataType::Int64)
        } else {
            let first = &params.args[0];
            (
                Some(self.physical(first, in_schema)?),
                first.get_type(in_schema)?,
            )
        };
        let delimiter = if function == AggFunction::StringAgg {
            match params.args.get(1) {
                Some(Expr::Literal(value, _)) => match value {
                    ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                        s.clone().unwrap_or_default()
                    }
                    _ => return unsupported("string_agg with a non-text delimiter"),
                },
                _ => return unsupported("string_agg with a delimiter that is not a constant"),
            }
        } else {
            String::new()
        };
        let ordered = matches!(
            function,
            AggFunction::StringAgg
                | AggFunction::FirstValue
                | AggFunction::LastValue
                | AggFunction::ArrayAgg
                | AggFunction::ArrayAggDistinct
        );
        let order_by = if ordered {
            self.sort_keys(&params.order_by, in_schema)?
        } else {
            Vec::new()
        };
        let filter = params
            .filter
            .as_ref()
            .map(|f| self.physical(f, in_schema))
            .transpose()?;
        Ok(AggSpec {
            function,
            arg,
            filter,
            order_by,
            delimiter,
            input_type,
            output_type,
        })
    }

    /// DISTINCT: a group aggregate on every column, with no aggregates.
    fn distinct(&mut self, input: PlanNode) -> Result<PlanNode> {
        let schema = input.schema.clone();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let exprs = df_schema
            .columns()
            .into_iter()
            .map(|column| self.physical(&Expr::Column(column), &df_schema))
            .collect::<Result<Vec<_>>>()?;
        let op = PlanOp::Aggregate(Box::new(AggregatePlan {
            group_by: exprs,
            group_types: column_types(&schema),
            aggregates: vec![],
            text: "distinct".into(),
            sessions: None,
            window_close: None,
        }));
        Ok(self.node(op, vec![input], schema))
    }

    fn join(&mut self, plan: &LogicalPlan, j: &JoinPlan) -> Result<PlanNode> {
        let kind = match j.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            JoinType::LeftSemi => JoinKind::LeftSemi,
            JoinType::LeftAnti => JoinKind::LeftAnti,
            JoinType::RightSemi => JoinKind::RightSemi,
            JoinType::RightAnti => JoinKind::RightAnti,
            JoinType::LeftMark | JoinType::RightMark => {
                return unsupported("EXISTS or IN combined with OR");
            }
        };
        if j.null_aware {
            return unsupported("NOT IN (subquery)");
        }
        let bound = self.time_bound(j)?;
        if let Some(bound) = &bound {
            self.watermarked.extend(bound.relations);
        }
        let interval = match bound {
            Some(_) => None,
            None => self.time_interval(j)?,
        };
        let left = self.lower(&j.left, &Bounds::new())?;
        let right = self.lower(&j.right, &Bounds::new())?;
        let left_keys =
            j.on.iter()
                .map(|(l, _)| self.physical(l, j.left.schema()))
                .collect::<Result<Vec<_>>>()?;
        let right_keys =
            j.on.iter()
                .map(|(_, r)| self.physical(r, j.right.schema()))
                .collect::<Result<Vec<_>>>()?;
        let pairs = j.left.schema().join(j.right.schema())?;
        let condition = j
            .filter
            .as_ref()
            .map(|f| self.physical(f, &pairs))
            .transpose()?;
        let on: Vec<String> = j.on.iter().map(|(l, r)| format!("{l} = {r}")).collect();
        let mut text = format!("on [{}]", on.join(", "));
        if let Some(filter) = &j.filter {
            text.push_str(&format!(" filter {filter}"));
        }
        let lookup = self.windowing.lookup_joins
            && bound.is_none()
            && matches!(kind, JoinKind::Inner | JoinKind::Left)
            && self.append_only(&left)?
            && !self.append_only(&right)?;
        let schema = schema_of(plan);
        let op = PlanOp::Join(Box::new(JoinSpec {
            lookup,
            kind,
            left_keys,
            right_keys,
            condition,
            nulls_equal: j.null_equality == NullEquality::NullEqualsNull,
            left_schema: left.schema.clone(),
            right_schema: right.schema.clone(),
            pair_schema: nullable_schema(pairs.as_arrow()),
            schema: schema.clone(),
            text,
            bound,
            interval,
        }));
        Ok(self.node(op, vec![left, right], schema))
    }

    /// Whether a part of the plan only ever gains rows, as its operators
    /// tell once built.
    fn append_only(&self, node: &PlanNode) -> Result<bool> {
        let built = node.build(&TaskContext::default(), self.catalog, 1)?;
        let is_stream = |id| self.catalog.table_by_id(id).is_some_and(|t| t.is_stream());
        Ok(built.append_only(&is_stream))
    }

    /// The bounds a join of two streams' event times puts on them, if its
    /// condition bounds one's event time by the other's (`WITHIN`, or
    /// `b.ts BETWEEN a.ts - INTERVAL ... AND a.ts + INTERVAL ...`).
    fn time_bound(&self, j: &JoinPlan) -> Result<Option<TimeBound>> {
        let Some(TimeInterval {
            columns: [l, r],
            lower,
            upper,
        }) = self.time_interval(j)?
        else {
            return Ok(None);
        };
        let (Some(left), Some(right)) = (
            self.event_time_relation(&j.left, l),
            self.event_time_relation(&j.right, r),
        ) else {
            return Ok(None);
        };
        // WITHIN joins take ksqlDB's stream time; a condition in SQL, the
        // earlier watermark, so the view keeps its query's rows.
        let within = self
            .windowing
            .join_graces
            .iter()
            .find(|g| g.relations == [left, right] || g.relations == [right, left]);
        Ok(Some(TimeBound {
            columns: [l, r],
            relations: [left, right],
            lower,
            upper,
            grace_us: within.map_or(0, |g| g.grace_us),
            stream_time: match within {
                Some(_) => StreamTime::Later,
                None => StreamTime::Earlier,
            },
        }))
    }

    /// The bounds a join's condition puts on the difference of a column of
    /// each side (right minus left), if it bounds one by the other.
    fn time_interval(&self, j: &JoinPlan) -> Result<Option<TimeInterval>> {
        let Some(filter) = &j.filter else {
            return Ok(None);
        };
        let pairs = j.left.schema().join(j.right.schema())?;
        let left_len = j.left.schema().fields().len();
        let mut columns = None;
        let (mut lower, mut upper) = (None, None);
        for conjunct in split_conjunction(filter) {
            for difference in time_differences(conjunct, &pairs, left_len) {
                if *columns.get_or_insert(difference.columns) != difference.columns {
                    continue;
                }
                if let Some(low) = difference.lower {
                    lower = Some(lower.map_or(low, |l: i64| l.max(low)));
                }
                if let Some(up) = difference.upper {
                    upper = Some(upper.map_or(up, |u: i64| u.min(up)));
                }
            }
        }
        let Some([l, r]) = columns else {
            return Ok(None);
        };
        if lower.is_none() && upper.is_none() {
            return Ok(None);
        }
        Ok(Some(TimeInterval {
            columns: [l, r - left_len],
            lower,
            upper,
        }))
    }

    /// The stream whose event time column `index` of `plan`'s output is,
    /// passed through unchanged.
    fn event_time_relation(&self, plan: &LogicalPlan, index: usize) -> Option<u64> {
        match plan {
            LogicalPlan::Projection(p) => match p.expr.get(index)?.clone().unalias() {
                Expr::Column(c) => {
                    let inner = p.input.schema().index_of_column(&c).ok()?;
                    self.event_time_relation(&p.input, inner)
                }
                _ => None,
            },
            LogicalPlan::Filter(f) => self.event_time_relation(&f.input, index),
            LogicalPlan::SubqueryAlias(s) => self.event_time_relation(&s.input, index),
            LogicalPlan::TableScan(scan) => {
                let column = match &scan.projection {
                    Some(projection) => *projection.get(index)?,
                    None => index,
                };
                let Some(Relation::Table(table)) = self.catalog.relation(scan.table_name.table())
                else {
                    return None;
                };
                let def = table.def();
                (table.is_stream() && def.event_time_column() == Some(column)).then_some(def.id)
            }
            _ => None,
        }
    }

    fn limit(&mut self, plan: &LogicalPlan, limit: &Limit) -> Result<PlanNode> {
        let (SkipType::Literal(skip), FetchType::Literal(fetch)) =
            (limit.get_skip_type()?, limit.get_fetch_type()?)
        else {
            return unsupported("LIMIT or OFFSET that is not a constant");
        };
        let Some(fetch) = fetch else {
            return unsupported("OFFSET without LIMIT");
        };
        match limit.input.as_ref() {
            LogicalPlan::Sort(sort) => {
                let fetch = sort
                    .fetch
                    .map_or(fetch, |f| f.saturating_sub(skip).min(fetch));
                self.top_n(plan, sort, skip, fetch)
            }
            _ => unsupported("LIMIT without ORDER BY"),
        }
    }

    fn top_n(
        &mut self,
        plan: &LogicalPlan,
        sort: &Sort,
        offset: usize,
        limit: usize,
    ) -> Result<PlanNode> {
        let input = self.lower(&sort.input, &Bounds::new())?;
        let in_schema = sort.input.schema();
        let order_by = self.sort_keys(&sort.expr, in_schema)?;
        let order: Vec<String> = sort.expr.iter().map(ToString::to_string).collect();
        let schema = schema_of(plan);
        let op = PlanOp::TopN(Box::new(TopNSpec {
            partition_by: vec![],
            partition_types: vec![],
            order_by,
            input_types: column_types(&input.schema),
            offset,
            limit,
            row_number: false,
            schema: schema.clone(),
            text: format!(
                "order by [{}] offset {offset} limit {limit}",
                order.join(", ")
            ),
        }));
        Ok(self.node(op, vec![input], schema))
    }

    fn window(&mut self, plan: &LogicalPlan, w: &Window, bounds: &Bounds) -> Result<PlanNode> {
        let [expr] = w.window_expr.as_slice() else {
            return unsupported("several window functions in one SELECT");
        };
        let Expr::WindowFunction(function) = expr.clone().unalias() else {
            return unsupported(format!("window expression {expr}"));
        };
        let WindowFunction { fun, params } = *function;
        let name = fun.name().to_ascii_lowercase();
        if name != "row_number" {
            return unsupported(format!("window function {name}()"));
        }
        let column = w.schema.field(w.input.schema().fields().len()).name();
        let Some(&bound) = bounds.get(column) else {
            return unsupported(
                "ROW_NUMBER() without an outer filter bounding it (such as WHERE rn <= 10)",
            );
        };
        if params.order_by.is_empty() {
            return unsupported("ROW_NUMBER() without ORDER BY");
        }
        let input = self.lower(&w.input, &Bounds::new())?;
        let in_schema = w.input.schema();
        let (partition_by, partition_types) =
            self.physical_with_types(&params.partition_by, in_schema)?;
        let order_by = self.sort_keys(&params.order_by, in_schema)?;
        let schema = schema_of(plan);
        let op = PlanOp::TopN(Box::new(TopNSpec {
            partition_by,
            partition_types,
            order_by,
            input_types: column_types(&input.schema),
            offset: 0,
            limit: bound,
            row_number: true,
            schema: schema.clone(),
            text: format!(
                "row_number() partition by [{}] order by [{}] <= {bound}",
                list(&params.partition_by),
                params
                    .order_by
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }));
        Ok(self.node(op, vec![input], schema))
    }
}

/// `rn <= 3`, `rn < 4`, `rn = 1`, `3 >= rn`: the column and its bound.
fn row_number_bound(expr: &Expr) -> Option<(String, usize)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    let (column, op, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
        (Expr::Literal(v, _), Expr::Column(c)) => (c, op.swap()?, v),
        _ => return None,
    };
    let value = match value {
        ScalarValue::Int64(Some(v)) => *v,
        ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok()?,
        ScalarValue::Int32(Some(v)) => *v as i64,
        _ => return None,
    };
    let bound = match op {
        BinaryOp::LtEq | BinaryOp::Eq => value,
        BinaryOp::Lt => value - 1,
        _ => return None,
    };
    Some((column.name.clone(), bound.max(0) as usize))
}

/// What one comparison says of the difference between a right and a left
/// column (`right - left`), in microseconds.
struct TimeDifference {
    /// The columns, in the join's pairs (left columns, then right).
    columns: [usize; 2],
    lower: Option<i64>,
    upper: Option<i64>,
}

/// The bounds `conjunct` puts on the difference of a right column and a
/// left one: `r.t >= l.t - INTERVAL '5' SECOND`, `l.t < r.t`,
/// `r.t BETWEEN l.t AND l.t + INTERVAL '1' HOUR`.
fn time_differences(conjunct: &Expr, pairs: &DFSchema, left_len: usize) -> Vec<TimeDifference> {
    let comparisons = match conjunct {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => vec![(left, *op, right)],
        Expr::Between(between) if !between.negated => vec![
            (&between.expr, BinaryOp::GtEq, &between.low),
            (&between.expr, BinaryOp::LtEq, &between.high),
        ],
        _ => return Vec::new(),
    };
    let mut differences = Vec::new();
    for (x, op, y) in comparisons {
        let (Some((cx, ox)), Some((cy, oy))) = (offset_column(x, pairs), offset_column(y, pairs))
        else {
            continue;
        };
        // cx + ox op cy + oy, so cx - cy op oy - ox.
        let Some(difference) = oy.checked_sub(ox) else {
            continue;
        };
        let (columns, op, difference) = match (cx < left_len, cy < left_len) {
            (false, true) => ([cy, cx], op, difference),
            (true, false) => match op.swap() {
                Some(swapped) => ([cx, cy], swapped, -difference),
                None => continue,
            },
            _ => continue,
        };
        let (lower, upper) = match op {
            BinaryOp::Lt | BinaryOp::LtEq => (None, Some(difference)),
            BinaryOp::Gt | BinaryOp::GtEq => (Some(difference), None),
            BinaryOp::Eq => (Some(difference), Some(difference)),
            _ => continue,
        };
        differences.push(TimeDifference {
            columns,
            lower,
            upper,
        });
    }
    differences
}

/// `column`, `column + constant` or `column - constant`: the column's
/// index and the constant in microseconds.
fn offset_column(expr: &Expr, pairs: &DFSchema) -> Option<(usize, i64)> {
    match expr {
        Expr::Column(c) => Some((pairs.index_of_column(c).ok()?, 0)),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (index, _) = offset_column(left, pairs)?;
            let Expr::Literal(value, _) = right.as_ref() else {
                return None;
            };
            let offset = constant_micros(value)?;
            match op {
                BinaryOp::Plus => Some((index, offset)),
                BinaryOp::Minus => Some((index, offset.checked_neg()?)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// An interval of fixed length, a duration, or an integer (event times
/// that are integers are taken as microseconds), in microseconds.
fn constant_micros(value: &ScalarValue) -> Option<i64> {
    const DAY_US: i64 = 86_400_000_000;
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => (v.days as i64)
            .checked_mul(DAY_US)?
            .checked_add(v.nanoseconds / 1_000),
        ScalarValue::IntervalDayTime(Some(v)) => (v.days as i64)
            .checked_mul(DAY_US)?
            .checked_add(v.milliseconds as i64 * 1_000),
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1_000_000),
        ScalarValue::DurationMillisecond(Some(v)) => v.checked_mul(1_000),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(*v),
        ScalarValue::DurationNanosecond(Some(v)) => Some(v / 1_000),
        ScalarValue::Int64(Some(v)) => Some(*v),
        ScalarValue::Int32(Some(v)) => Some(*v as i64),
        _ => None,
    }
}

fn plan_name(plan: &LogicalPlan) -> String {
    let display = plan.display().to_string();
    display
        .split(':')
        .next()
        .unwrap_or("this plan node")
        .trim()
        .to_owned()
}
