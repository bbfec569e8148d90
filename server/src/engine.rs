//! The engine: the store, the catalog, and the DataFusion contexts that plan
//! queries against it. One engine serves every session.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::ObjectName;
use datafusion::sql::sqlparser::ast::{Query, Statement};
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::setup_pg_catalog;
use eddy_catalog::StoredTable;
use eddy_catalog::{
    Catalog, EddySchemaProvider, InformationSchemaProvider, SchemaMode, DATABASE_NAME, SCHEMA_NAME,
};
use eddy_dataflow::{DataflowError, DataflowHandle, Lowered, ViewBuilder};
use eddy_dataflow::{JoinGrace, WindowHint, Windowing};
use eddy_sql::ast::Emit;
use eddy_sql::{EddyQuery, QueryClauses, SqlError};
use eddy_storage::Store;
use tokio::sync::RwLock;

use crate::error::{EddyError, Result};
use crate::pg_catalog::PgCatalogWithViews;

/// The Postgres version we report, for drivers that branch on it.
pub const PG_VERSION: &str = "16.6";

pub struct Engine {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    /// Runs every materialized view's dataflow.
    pub dataflow: DataflowHandle,
    /// Held for reading while a statement reads views, and for writing
    /// while the dataflow commits an epoch: a statement sees one epoch.
    epoch_lock: Arc<RwLock<()>>,
    /// Plans queries and INSERT: tables as users see them.
    query_ctx: SessionContext,
    /// Plans materialized views: tables read whole, filters above scans.
    view_ctx: SessionContext,
    /// Plans UPDATE and DELETE: tables with their row-key column.
    row_keyed_ctx: SessionContext,
    /// Workers each view's dataflow runs on.
    workers: usize,
}

impl Engine {
    /// Opens the catalog and restarts every view's dataflow from its
    /// stored state.
    /// `timing`: the source idle timeout and the checkpoint interval.
    pub async fn open(
        store: Store,
        kafka_brokers: Option<&str>,
        workers: usize,
        timing: eddy_dataflow::Timing,
    ) -> Result<Arc<Self>> {
        let catalog = Catalog::open(store.clone())?;
        let query_ctx = new_context(&catalog, SchemaMode::Query)?;
        let view_ctx = new_context(&catalog, SchemaMode::Dataflow)?;
        let row_keyed_ctx = new_context(&catalog, SchemaMode::RowKeyed)?;
        // Each view runs the plan stored with it, not its query planned
        // again: what was made is what restarts.
        let builder = ViewBuilder {
            ctx: view_ctx.task_ctx(),
            workers,
        };
        let mut views = Vec::new();
        // Nothing reads a persistent query, so queries restore last.
        for view in catalog.views().into_iter().chain(catalog.queries()) {
            let def = view.def().clone();
            let root = if def.error.is_some() {
                Err(DataflowError::Internal("view failed before".into()))
            } else {
                builder.build(&def, &catalog)
            };
            views.push((def, root));
        }
        let epoch_lock = Arc::new(RwLock::new(()));
        let kafka = kafka_brokers
            .map(|brokers| eddy_dataflow::kafka::Kafka::new(brokers).map(Arc::new))
            .transpose()?;
        let dataflow = DataflowHandle::start(
            catalog.clone(),
            epoch_lock.clone(),
            views,
            kafka,
            builder,
            timing,
        )?;
        Ok(Arc::new(Engine {
            store,
            catalog,
            dataflow,
            epoch_lock,
            query_ctx,
            view_ctx,
            row_keyed_ctx,
            workers,
        }))
    }

    /// The Kafka connection, or the error that says how to configure one.
    /// The query planner's state: its functions, for SHOW FUNCTIONS.
    pub fn session_state(&self) -> datafusion::execution::SessionState {
        self.query_ctx.state()
    }

    pub fn kafka(&self) -> Result<&Arc<eddy_dataflow::kafka::Kafka>> {
        self.dataflow.kafka().ok_or(EddyError::KafkaNotConfigured)
    }

    /// Plans a view's query, with its ksqlDB clauses, and lowers it to a
    /// dataflow. A query writing a stream joins streams to tables as
    /// ksqlDB does (see `Windowing::lookup_joins`).
    pub async fn plan_view(
        &self,
        query: &Query,
        clauses: &QueryClauses,
        writes_stream: bool,
    ) -> Result<Lowered> {
        plan_view_statement(
            &self.view_ctx,
            &self.catalog,
            Statement::Query(Box::new(query.clone())),
            clauses,
            writes_stream,
            self.workers,
        )
        .await
    }

    /// Plans a one-off query that has ksqlDB clauses.
    pub async fn plan_clause_query(&self, query: &EddyQuery) -> Result<LogicalPlan> {
        eddy_sql::check_query_clauses(&query.clauses, false)?;
        eddy_sql::check_no_partition_by(&query.clauses, "a one-off query")?;
        let mut statement = Statement::Query(query.query.clone());
        apply_windows(&self.catalog, &mut statement, &query.clauses, true)?;
        self.plan(&statement).await
    }

    /// Plans a statement DataFusion understands: queries, EXPLAIN and DML.
    pub async fn plan(&self, statement: &Statement) -> Result<LogicalPlan> {
        let ctx = match statement {
            Statement::Update(_) | Statement::Delete(_) => &self.row_keyed_ctx,
            _ => &self.query_ctx,
        };
        eddy_sql::check_query_support(statement)?;
        let mut statement = statement.clone();
        crate::plain_views::expand(&self.catalog, &mut statement)?;
        apply_windows(
            &self.catalog,
            &mut statement,
            &QueryClauses::default(),
            true,
        )?;
        match &mut statement {
            Statement::Query(query) => eddy_sql::disambiguate_output_names(query),
            // An insert's columns go by position, so their names only have
            // to be unique (`INSERT INTO t SELECT i, i FROM ...`).
            Statement::Insert(insert) => {
                if let Some(source) = &mut insert.source {
                    eddy_sql::disambiguate_output_names(source);
                }
            }
            _ => {}
        }
        // Columns are named after what the client wrote, not the rewrites.
        let original = &statement.clone();
        crate::pg_rewrites::rewrite(&mut statement);
        if let Statement::Insert(insert) = &mut statement {
            if let Some(table) =
                eddy_sql::insert_target(insert).and_then(|t| self.catalog.table(&t))
            {
                let columns: Vec<String> = table
                    .def()
                    .declared_columns()
                    .iter()
                    .map(|c| c.name.clone())
                    .collect();
                eddy_sql::name_leading_columns(insert, &columns);
                if table.def().kafka.is_some() {
                    eddy_sql::name_all_columns(insert, &columns);
                }
                if let Some(p) = table.def().processing_time {
                    let name = &table.def().columns[p].name;
                    let names_it = |c: &ObjectName| {
                        c.0.last()
                            .and_then(|part| part.as_ident())
                            .is_some_and(|i| eddy_sql::normalize(i) == *name)
                    };
                    if insert.columns.iter().any(names_it) {
                        return Err(SqlError::GeneratedAlways(name.clone()).into());
                    }
                }
            }
        }
        let query = matches!(statement, Statement::Query(_));
        if query {
            crate::pg_literals::numeric_literals(&mut statement);
        }
        let plan = ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await?;
        crate::pg_operators::check_operand_types(&plan)?;
        let plan = if query {
            crate::pg_literals::int4_literals(plan)?
        } else {
            plan
        };
        let plan = crate::pg_input::rewrite_input_casts(plan)?;
        with_postgres_names(plan, original)
    }

    /// Applies DataFusion's analyzer (type coercion above all), so the
    /// plan's schema has the types its rows will have.
    pub fn analyze(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let state = self.query_ctx.state();
        Ok(state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})?)
    }

    /// Holds epochs off, so that what is read is one epoch's.
    pub async fn read_epoch(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.epoch_lock.read().await
    }

    /// Starts a plan and returns its rows as a stream the client pulls.
    /// The relations' scans fix what they read while epochs are held off
    /// (one epoch's rows); the rows are then computed as they are read,
    /// with epochs free to go on.
    pub async fn stream(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream> {
        let (physical, task) = {
            let _epoch = self.epoch_lock.read().await;
            let df = self.query_ctx.execute_logical_plan(plan).await?;
            let task = Arc::new(query_task(df.task_ctx())?);
            (df.create_physical_plan().await?, task)
        };
        Ok(execute_stream(physical, task)?)
    }

    /// Runs a plan to completion.
    pub async fn collect(
        &self,
        plan: LogicalPlan,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        let _epoch = self.epoch_lock.read().await;
        let df = self.query_ctx.execute_logical_plan(plan).await?;
        Ok(df.collect().await?)
    }
}

/// A query's task context, with its own memory pool: the session's
/// `query_memory_limit`, drawn from the server's budget.
fn query_task(
    task: datafusion::execution::TaskContext,
) -> Result<datafusion::execution::TaskContext> {
    let session = crate::handler::set::current_session().unwrap_or_default();
    let limit = crate::handler::set::memory_limit(&session);
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::from_runtime_env(
        &task.runtime_env(),
    )
    .with_memory_pool(crate::query_memory::pool_for_query(limit))
    .build_arc()?;
    Ok(task.with_runtime(runtime))
}

/// Renames a query's output columns as Postgres would name them (see
/// `eddy_sql::postgres_column_names`). A name that several columns would
/// share (`SELECT 1, 2` are both `?column?`) is left as DataFusion has it,
/// since a plan's columns need distinct names.
fn with_postgres_names(plan: LogicalPlan, statement: &Statement) -> Result<LogicalPlan> {
    let Statement::Query(query) = statement else {
        return Ok(plan);
    };
    let Some(names) = eddy_sql::postgres_column_names(query) else {
        return Ok(plan);
    };
    let schema = plan.schema().clone();
    if names.len() != schema.fields().len() {
        return Ok(plan);
    }
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for name in &names {
        *uses.entry(name.as_str()).or_default() += 1;
    }
    let mut changed = false;
    let exprs: Vec<Expr> = schema
        .columns()
        .into_iter()
        .zip(&names)
        .map(|(column, name)| {
            if uses[name.as_str()] == 1 && column.name != *name {
                changed = true;
                Expr::Column(column).alias(name)
            } else {
                Expr::Column(column)
            }
        })
        .collect();
    if !changed {
        return Ok(plan);
    }
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// Applies the time clauses of a query: its joins' `WITHIN` (see
/// `eddy_sql::joins`), its `TUMBLE` and `HOP` relations and its ksqlDB
/// `WINDOW` clause (see `eddy_sql::windows`). Each relation's event-time
/// column comes from the catalog. Returns what the dataflow needs to close
/// windows and expire joined rows by the watermark. A `one_off` query
/// runs as a batch, so its session windows are found in batch SQL.
fn apply_windows(
    catalog: &Catalog,
    statement: &mut Statement,
    clauses: &QueryClauses,
    one_off: bool,
) -> Result<Windowing> {
    let Statement::Query(query) = statement else {
        return Ok(Windowing::default());
    };
    let table = |name: &ObjectName| -> eddy_sql::Result<Arc<StoredTable>> {
        let name = eddy_sql::create_table::object_name(name)?;
        match catalog.relation(&name) {
            Some(eddy_catalog::Relation::Table(table)) => Ok(table),
            Some(eddy_catalog::Relation::View(_)) => Err(SqlError::InvalidDefinition(format!(
                "materialized view {name} has no event time to window by; \
                 window the stream it reads"
            ))),
            None => Err(SqlError::UndefinedRelation(name)),
        }
    };
    let event_time = |name: &ObjectName| -> eddy_sql::Result<String> {
        let table = table(name)?;
        let def = table.def();
        def.event_time_column()
            .map(|i| def.columns[i].name.clone())
            .ok_or_else(|| {
                SqlError::InvalidDefinition(format!(
                    "table {} has no event time to window by: it is a local table; \
                     window a stream or table over a topic or a generator, or name the \
                     time column with TUMBLE({}, column, INTERVAL '1' MINUTE)",
                    def.name, def.name
                ))
            })
    };
    let stream_time = |name: &ObjectName| -> eddy_sql::Result<String> {
        let joined = table(name)?;
        if !joined.is_stream() {
            return Err(SqlError::InvalidDefinition(format!(
                "WITHIN joins two streams, and {} is a table; join a stream to a table \
                 without WITHIN",
                joined.name()
            )));
        }
        event_time(name)
    };
    let within = eddy_sql::apply_within(query, &clauses.within, &stream_time)?;
    let mut join_graces = Vec::new();
    for used in within {
        let [left, right] = &used.relations;
        join_graces.push(JoinGrace {
            relations: [table(left)?.def().id, table(right)?.def().id],
            grace_us: used.grace.map_or(0, micros),
        });
    }
    let uses = eddy_sql::apply_windows(query, clauses.window.as_ref(), &event_time)?;
    if one_off {
        eddy_sql::sessions_as_batch(query, &uses)?;
    }
    let emit_final = matches!(clauses.emit, Some(Emit::Final | Emit::OnWindowClose));
    if emit_final && uses.is_empty() {
        return Err(SqlError::InvalidDefinition(format!(
            "{} needs a window: only a window's result is ever final",
            clauses.emit.map(|e| e.to_string()).unwrap_or_default()
        ))
        .into());
    }
    let mut windows = Vec::new();
    for used in uses {
        let table = table(&used.relation)?;
        let def = table.def();
        let processing_time = def
            .processing_time
            .is_some_and(|i| def.columns[i].name == used.time_column);
        let on_event_time = processing_time
            || def
                .event_time_column()
                .is_some_and(|i| def.columns[i].name == used.time_column);
        if emit_final && !on_event_time {
            return Err(SqlError::InvalidDefinition(format!(
                "final results close windows by event time, and {} windows {} by {}, \
                 which is not its event time",
                used.alias, def.name, used.time_column
            ))
            .into());
        }
        if used.session && !table.is_stream() {
            return Err(SqlError::InvalidDefinition(format!(
                "session windows group the records of a stream, and {} is a table",
                def.name
            ))
            .into());
        }
        windows.push(WindowHint {
            alias: used.alias,
            relation: def.id,
            on_event_time,
            processing_time,
            size_us: micros(used.size),
            grace_us: used.grace.map_or(0, micros),
            session: used.session,
            retention_us: used.retention.map(micros),
        });
    }
    Ok(Windowing {
        windows,
        emit_final,
        join_graces,
        lookup_joins: false,
    })
}

fn micros(duration: eddy_sql::ast::Duration) -> i64 {
    i64::try_from(duration.millis.saturating_mul(1_000)).unwrap_or(i64::MAX)
}

/// Plans a view's query and lowers it to a dataflow. `writes_stream`: the
/// query writes a stream (`CREATE STREAM ... AS SELECT`).
async fn plan_view_statement(
    ctx: &SessionContext,
    catalog: &Catalog,
    mut statement: Statement,
    clauses: &QueryClauses,
    writes_stream: bool,
    workers: usize,
) -> Result<Lowered> {
    eddy_sql::check_query_support(&statement)?;
    let plain_views = crate::plain_views::expand(catalog, &mut statement)?;
    let mut windowing = apply_windows(catalog, &mut statement, clauses, false)?;
    windowing.lookup_joins = writes_stream;
    let state = ctx.state();
    let mut planned = statement.clone();
    crate::pg_rewrites::rewrite(&mut planned);
    crate::pg_literals::numeric_literals(&mut planned);
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(planned)))
        .await?;
    crate::pg_operators::check_operand_types(&plan)?;
    let plan = crate::pg_literals::int4_literals(plan)?;
    let plan = crate::pg_input::rewrite_input_casts(plan)?;
    let plan = with_postgres_names(plan, &statement)?;
    eddy_dataflow::check_deterministic(&plan)?;
    let optimized = state.optimize(&plan)?;
    let mut lowered =
        eddy_dataflow::lower(&optimized, catalog, workers, &windowing, &ctx.task_ctx())?;
    lowered.plain_views = plain_views;
    lowered.plain_views.sort_unstable();
    lowered.plain_views.dedup();
    Ok(lowered)
}

fn new_context(catalog: &Arc<Catalog>, mode: SchemaMode) -> Result<SessionContext> {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE_NAME, SCHEMA_NAME)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(false);
    config.options_mut().sql_parser.enable_ident_normalization = true;
    // Sessions run in UTC: `now()` and `::timestamptz` are timestamps with
    // a time zone, as in Postgres.
    config.options_mut().execution.time_zone = Some("+00:00".into());
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let physical_rules = crate::topk_floats::wrap(state.physical_optimizers());
    let state = SessionStateBuilder::new_from_existing(state)
        .with_physical_optimizer_rules(physical_rules)
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    ctx.add_optimizer_rule(Arc::new(crate::fixed_intervals::FixedIntervals));
    crate::float_extremes::register(&ctx);
    crate::one_nan::register(&ctx);
    let db = ctx
        .catalog(DATABASE_NAME)
        .ok_or_else(|| EddyError::Internal("default catalog missing".into()))?;
    db.register_schema(
        SCHEMA_NAME,
        Arc::new(EddySchemaProvider::new(catalog.clone(), mode)),
    )?;
    db.register_schema(
        "information_schema",
        Arc::new(InformationSchemaProvider::new(catalog.clone())),
    )?;
    setup_pg_catalog(&ctx, DATABASE_NAME, EmptyContextProvider)
        .map_err(|e| EddyError::DataFusion(*e))?;
    let pg_catalog = db
        .schema("pg_catalog")
        .ok_or_else(|| EddyError::Internal("pg_catalog missing".into()))?;
    let pg_catalog = PgCatalogWithViews::new(pg_catalog, catalog.clone());
    ctx.register_udf(pg_catalog.table_is_visible_udf());
    for udf in pg_catalog.key_functions() {
        ctx.register_udf(udf);
    }
    for udf in pg_catalog.size_functions() {
        ctx.register_udf(udf);
    }
    for udf in pg_catalog.role_functions() {
        ctx.register_udf(udf);
    }
    ctx.register_udf(ScalarUDF::new_from_impl(crate::pg_columns::PgGetExpr::new()));
    db.register_schema("pg_catalog", Arc::new(pg_catalog))?;
    ctx.register_udf(ScalarUDF::new_from_impl(VersionUdf::new()));
    crate::ksql_functions::register(&mut ctx)?;
    crate::pg_functions::register(&mut ctx);
    ctx.register_udf(crate::pg_rewrites::like_escape_udf());
    Ok(ctx)
}

/// `version()`, worded like Postgres's so drivers that parse it are happy.
#[derive(Debug, PartialEq, Eq, Hash)]
struct VersionUdf {
    signature: Signature,
}

impl VersionUdf {
    fn new() -> Self {
        VersionUdf {
            signature: Signature::exact(vec![], Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for VersionUdf {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(format!(
            "PostgreSQL {PG_VERSION} (Eddy {}), a streaming SQL database",
            env!("CARGO_PKG_VERSION")
        )))))
    }
}
