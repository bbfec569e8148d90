//! The PostgreSQL wire protocol, through pgwire: simple and extended query
//! handlers, result encoding, cancel requests.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Cast, Expr, LogicalPlan, TryCast};
use datafusion::sql::sqlparser::ast::{Ident, Statement};
use eddy_sql::EddyStatement;
use futures::stream::BoxStream;
use futures::{stream, Sink, SinkExt, StreamExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::PortalExecutionState;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    send_describe_response, send_execution_response, send_query_response, ExtendedQueryHandler,
    SimpleQueryHandler,
};
use pgwire::api::results::{
    DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, ErrorHandler,
    PgWireConnectionState, PgWireServerHandlers, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::{DataRow, NoData, ParameterDescription};
use pgwire::messages::extendedquery::{
    Describe, Execute, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::TlsAcceptor;
use pgwire::types::format::FormatOptions;
use tracing::Instrument;

use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::handler::lookup::Lookup;
use crate::handler::{self, Kind, Output};
use crate::login::{AuthMethod, LoginPolicy};
use crate::security::ServerTls;

/// A statement prepared by Parse: the SQL, its parsed form, and for planned
/// statements the DataFusion plan with its parameters still open.
#[derive(Debug, Clone)]
pub struct Prepared {
    statement: EddyStatement,
    plan: Option<LogicalPlan>,
    /// The rows' schema where the plan does not give it: a FETCH's, from
    /// its cursor when the statement was parsed.
    schema: Option<SchemaRef>,
    /// Parameters described as Postgres types the plan cannot tell apart
    /// (`$1::jsonb`, `$1::oid[]`), by placeholder id.
    described_as: HashMap<String, Type>,
    /// The key lookup a query is, found once for all its executions.
    lookup: Option<Lookup>,
}

pub struct Handlers {
    parser: Arc<Parser>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
    login: LoginPolicy,
    tls: Option<TlsAcceptor>,
}

impl Handlers {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.parser.engine
    }

    pub fn new(
        engine: Arc<Engine>,
        auth: AuthMethod,
        tls: Option<ServerTls>,
        tls_required: bool,
    ) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        let (tls, end_point) = match tls {
            Some(tls) => (Some(tls.acceptor), tls.end_point),
            None => (None, None),
        };
        Handlers {
            parser: Arc::new(Parser { engine }),
            startup: Arc::new(Startup),
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            login: LoginPolicy::new(auth, tls_required, end_point, connections),
            tls,
        }
    }

    pub fn login_policy(&self) -> &LoginPolicy {
        &self.login
    }

    /// The TLS acceptor, when the server has a certificate.
    pub fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.clone()
    }
}

/// pgwire's startup hook, which does nothing: logging in is
/// [`crate::login`]'s, before pgwire sees a message.
pub struct Startup;

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        _client: &mut C,
        _message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(())
    }
}

pub struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!(peer = %client.socket_addr(), %error, "statement failed");
        // Postgres's code and wording for a missing portal.
        if let PgWireError::PortalNotFound(name) = error {
            let name = match name.as_str() {
                pgwire::api::DEFAULT_NAME => "",
                name => name,
            };
            let message = format!("portal \"{name}\" does not exist");
            let info = pgwire::error::ErrorInfo::new("ERROR".into(), "34000".into(), message);
            *error = PgWireError::UserError(Box::new(info));
        }
        match error {
            PgWireError::UserError(info) => crate::metrics::error(&info.code),
            _ => crate::metrics::error("XX000"),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.parser.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.parser.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

/// `schema` with the names clients see: columns that share a Postgres
/// name were planned under unique ones (see
/// [`eddy_sql::disambiguate_output_names`]).
/// The row description of `schema`'s columns, named and typed as clients
/// see them.
pub fn pg_fields(
    schema: &SchemaRef,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    let schema = crate::pg_text::wire_schema(&display_schema(schema));
    let fields = arrow_schema_to_pg_fields(&schema, format, options)?;
    // jsonb travels as text, marked by its field's metadata.
    Ok(fields
        .into_iter()
        .zip(schema.fields())
        .map(|(info, field)| match eddy_catalog::is_jsonb(field) {
            true => {
                let options = info.format_options().clone();
                FieldInfo::new(
                    info.name().to_owned(),
                    info.table_id(),
                    info.column_id(),
                    Type::JSONB,
                    info.format(),
                )
                .with_format_options(options)
            }
            false => info,
        })
        .collect())
}

pub fn display_schema(schema: &SchemaRef) -> SchemaRef {
    let separator = eddy_sql::DUPLICATE_NAME_SEPARATOR;
    if !schema.fields().iter().any(|f| f.name().contains(separator)) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = eddy_sql::display_name(f.name()).to_owned();
            f.as_ref().clone().with_name(name)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `portal` with its json and jsonb parameters as text, or None when it
/// has none. arrow-pg reads them into a String, which postgres-types
/// refuses for those types; the binary form of jsonb is a version byte (1)
/// then the text, of json the text itself.
fn json_parameters_as_text<S: Clone>(
    portal: &Portal<S>,
    described_as: &HashMap<String, Type>,
) -> Option<Portal<S>> {
    let sent = &portal.statement.parameter_types;
    // The type the client sent the parameter as: its own, else ours.
    let sent_type = |i: usize| -> Option<Type> {
        match sent.get(i) {
            Some(Some(t)) => Some(t.clone()),
            _ => described_as.get(&format!("${}", i + 1)).cloned(),
        }
    };
    let is_json = |i: usize| matches!(sent_type(i), Some(t) if t == Type::JSON || t == Type::JSONB);
    if !(0..portal.parameters.len()).any(is_json) {
        return None;
    }
    let mut parameters = portal.parameters.clone();
    let mut formats = Vec::with_capacity(parameters.len());
    for (i, parameter) in parameters.iter_mut().enumerate() {
        let binary = portal.parameter_format.is_binary(i);
        if !is_json(i) {
            formats.push(i16::from(binary));
            continue;
        }
        formats.push(0);
        if let (true, Some(bytes)) = (binary, parameter.as_mut()) {
            if sent_type(i) == Some(Type::JSONB) && bytes.first() == Some(&1) {
                *bytes = bytes.slice(1..);
            }
        }
    }
    let parameter_types = (0..portal.parameters.len().max(sent.len()))
        .map(|i| match sent.get(i) {
            _ if is_json(i) => Some(Type::TEXT),
            Some(t) => t.clone(),
            None => None,
        })
        .collect();
    let statement = pgwire::api::stmt::StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        parameter_types,
    );
    let mut text = Portal::new_cursor(portal.name.clone(), Arc::new(statement));
    text.parameter_format = Format::Individual(formats);
    text.parameters = parameters;
    text.result_column_format = portal.result_column_format.clone();
    Some(text)
}

/// Parses statements and runs them; serves both query protocols.
pub struct Parser {
    engine: Arc<Engine>,
}

fn encode(
    output: Output,
    format: &Format,
    vars: &HashMap<String, String>,
    cancel: Option<Arc<ConnectionHandle>>,
) -> PgWireResult<Response> {
    Ok(match output {
        Output::Command(tag) => Response::Execution(tag),
        Output::TransactionStart(tag) => Response::TransactionStart(tag),
        Output::TransactionEnd(tag) => Response::TransactionEnd(tag),
        Output::Rows {
            schema,
            batches,
            tag,
        } => {
            let batches = stream::iter(batches.into_iter().map(Ok)).boxed();
            query_response(&schema, batches, tag, format, vars)?
        }
        Output::Stream {
            schema,
            stream,
            tag,
        } => {
            let batches = match cancel {
                Some(handle) => until_canceled(stream, handle).boxed(),
                None => stream.boxed(),
            };
            query_response(&schema, batches, tag, format, vars)?
        }
    })
}

/// A query's batches, ended by the client's cancel request. pgwire's own
/// cancel covers running the statement; the rows are computed after it, as
/// they are sent, so the stream listens for one from its first batch on.
fn until_canceled(
    batches: SendableRecordBatchStream,
    handle: Arc<ConnectionHandle>,
) -> impl futures::Stream<Item = datafusion::error::Result<RecordBatch>> + Send {
    let canceled: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
        // A sender replaced by the next statement's is no cancel.
        if handle.start_query().await.await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    stream::unfold(
        (batches, canceled, false),
        |(mut batches, mut canceled, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                biased;
                () = &mut canceled => {
                    let error = datafusion::error::DataFusionError::External(Box::new(EddyError::Canceled));
                    Some((Err(error), (batches, canceled, true)))
                }
                batch = batches.next() => batch.map(|b| (b, (batches, canceled, false))),
            }
        },
    )
}

/// Rows are encoded a batch at a time as the client reads them: a
/// suspended portal encodes only what it sends, and a query's batches are
/// computed only as they are sent.
fn query_response(
    schema: &SchemaRef,
    batches: BoxStream<'static, datafusion::error::Result<RecordBatch>>,
    tag: &'static str,
    format: &Format,
    vars: &HashMap<String, String>,
) -> PgWireResult<Response> {
    let options = Arc::new(FormatOptions::from_client_metadata(vars));
    let fields = Arc::new(pg_fields(schema, format, Some(options))?);
    let format = format.clone();
    let row_fields = fields.clone();
    let rows = batches.flat_map(move |batch| {
        let rows = match batch {
            Ok(batch) => encode_rows(batch, &row_fields, &format),
            Err(datafusion::error::DataFusionError::External(e)) => match e.downcast::<EddyError>()
            {
                Ok(e) => vec![Err(e.into_pgwire())],
                Err(e) => vec![Err(EddyError::from(
                    datafusion::error::DataFusionError::External(e),
                )
                .into_pgwire())],
            },
            Err(e) => vec![Err(EddyError::from(e).into_pgwire())],
        };
        stream::iter(rows)
    });
    let mut response = QueryResponse::new(fields, rows);
    response.set_command_tag(tag);
    Ok(Response::Query(response))
}

/// One batch's rows as data rows in `format`; after an error, nothing
/// more.
pub fn encode_rows(
    batch: RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    format: &Format,
) -> Vec<PgWireResult<DataRow>> {
    let batch = crate::pg_text::nested_as_json(batch)
        .and_then(|batch| crate::pg_text::binary_jsonb(batch, fields))
        .and_then(|batch| crate::pg_text::rewrite_for_text(batch, format));
    let batch = match batch {
        Ok(batch) => batch,
        Err(e) => {
            let error = EddyError::from(datafusion::error::DataFusionError::from(e));
            return vec![Err(error.into_pgwire())];
        }
    };
    let null_intervals = crate::pg_text::binary_null_intervals(&batch, format);
    let num_rows = batch.num_rows();
    let mut rows = Vec::with_capacity(num_rows);
    // The encoder's iterator repeats a failing row forever: stop at the
    // first error.
    for (i, row) in encode_recordbatch(fields.clone(), batch)
        .take(num_rows)
        .enumerate()
    {
        match row {
            Ok(row) => rows.push(Ok(crate::pg_text::null_out(row, &null_intervals, i))),
            Err(e) => {
                rows.push(Err(e));
                break;
            }
        }
    }
    rows
}

/// The types placeholders are cast to, by placeholder id.
fn placeholder_cast_types(plan: &LogicalPlan) -> Result<HashMap<String, DataType>> {
    let mut types = HashMap::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                {
                    if let Expr::Placeholder(p) = expr.as_ref() {
                        types
                            .entry(p.id.clone())
                            .or_insert_with(|| field.data_type().clone());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(types)
}

/// Placeholders that are the text of `x::jsonb` (`jsonb_in($n)`): they are
/// described as jsonb, and read as drivers send jsonb.
fn json_placeholders(plan: &LogicalPlan) -> Result<HashSet<String>> {
    let mut ids = HashSet::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.name() == crate::pg_functions::JSONB_IN {
                        if let Some(Expr::Placeholder(p)) = f.args.first() {
                            ids.insert(p.id.clone());
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(ids)
}

/// Placeholders cast to `oid` or `oid[]` (`$1::oid[]`), which Eddy plans
/// as integers: they are described as Postgres describes them, so drivers
/// encode them with their oid codecs (asyncpg has no int4[] codec of its
/// own and looks one up with such a query).
fn oid_placeholders(statement: &Statement) -> HashMap<String, Type> {
    use datafusion::sql::sqlparser::ast::{
        visit_expressions, ArrayElemTypeDef, DataType as SqlType, Expr as SqlExpr, Value,
    };
    let is_oid = |t: &SqlType| matches!(t, SqlType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("oid"));
    let mut found = HashMap::new();
    let _ = visit_expressions(statement, |expr| {
        if let SqlExpr::Cast {
            expr, data_type, ..
        } = expr
        {
            if let SqlExpr::Value(v) = expr.as_ref() {
                if let Value::Placeholder(id) = &v.value {
                    let ty = match data_type {
                        t if is_oid(t) => Some(Type::OID),
                        SqlType::Array(
                            ArrayElemTypeDef::SquareBracket(inner, _)
                            | ArrayElemTypeDef::AngleBracket(inner),
                        ) if is_oid(inner) => Some(Type::OID_ARRAY),
                        _ => None,
                    };
                    if let Some(ty) = ty {
                        found.insert(id.clone(), ty);
                    }
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

/// Parameter types of a plan, in `$n` order.
fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types()?;
    let mut numbered: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(name, ty)| {
            name.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|n| (n, ty))
        })
        .collect();
    // `$1::BIGINT`: a placeholder DataFusion leaves untyped takes its cast's type.
    let cast_types = placeholder_cast_types(plan)?;
    for (n, ty) in &mut numbered {
        if ty.is_none() {
            *ty = cast_types.get(&format!("${n}")).cloned();
        }
    }
    numbered.sort_by_key(|(n, _)| *n);
    let count = numbered.last().map_or(0, |(n, _)| *n);
    let mut ordered = vec![None; count];
    for (n, ty) in numbered {
        ordered[n - 1] = ty;
    }
    Ok(ordered)
}

#[async_trait]
impl SimpleQueryHandler for Parser {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements =
            eddy_sql::parse_sql(query).map_err(|e| EddyError::from(e).into_pgwire())?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        let cancel = connection_handle(client);
        for (i, statement) in statements.iter().enumerate() {
            let mut statement = statement.clone();
            bind_session(&mut statement, client.metadata());
            let statement = &statement;
            let span = tracing::debug_span!("statement", sql = %statement);
            let mut result = match deallocated(statement) {
                Some(name) => deallocate(client.portal_store(), name),
                None => {
                    execute_with_notices(&self.engine, client, statement, None)
                        .instrument(span)
                        .await
                }
            };
            // A query's rows are computed as they are sent, after every
            // statement has run: one followed by others is run to the end
            // first, so that its error stops them, as in Postgres.
            if i + 1 < statements.len() {
                if let Ok(output) = result {
                    result = output.collected().await;
                }
            }
            match result
                .map_err(EddyError::into_pgwire)
                .and_then(|o| encode(o, &Format::UnifiedText, client.metadata(), cancel.clone()))
            {
                Ok(response) => responses.push(response),
                Err(err) => {
                    // Postgres stops at the first failing statement.
                    let info: pgwire::error::ErrorInfo = err.into();
                    crate::metrics::error(&info.code);
                    responses.push(Response::Error(Box::new(info)));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements =
            eddy_sql::parse_sql(sql).map_err(|e| EddyError::from(e).into_pgwire())?;
        match statements.len() {
            0 => Ok(None),
            1 => {
                let mut statement = statements.remove(0);
                bind_session(&mut statement, client.metadata());
                let plan = match (&statement, handler::kind(&statement)) {
                    (EddyStatement::Sql(sql), Kind::Planned) => Some(self.engine.plan(sql).await),
                    (EddyStatement::Query(query), _) => {
                        Some(self.engine.plan_clause_query(query).await)
                    }
                    // A cursor's query may take parameters.
                    (EddyStatement::Sql(sql), _) => match handler::cursor::declared_query(sql) {
                        Some(query) => Some(self.engine.plan(&query).await),
                        None => None,
                    },
                    _ => None,
                };
                let plan = plan.transpose().map_err(EddyError::into_pgwire)?;
                let schema = match &statement {
                    EddyStatement::Sql(sql)
                    | EddyStatement::FetchWithTimeout { fetch: sql, .. } => {
                        handler::cursor::fetch_schema(client.metadata(), sql)
                    }
                    _ => None,
                };
                let mut described_as = match &statement {
                    EddyStatement::Sql(sql) => oid_placeholders(sql),
                    _ => HashMap::new(),
                };
                if let Some(plan) = &plan {
                    let json = json_placeholders(plan).map_err(EddyError::into_pgwire)?;
                    described_as.extend(json.into_iter().map(|id| (id, Type::JSONB)));
                }
                let lookup = match (&statement, &plan) {
                    (EddyStatement::Sql(sql), Some(plan))
                        if matches!(sql.as_ref(), Statement::Query(_)) =>
                    {
                        Lookup::of(plan)
                    }
                    _ => None,
                };
                Ok(Some(Prepared {
                    statement,
                    plan,
                    schema,
                    described_as,
                    lookup,
                }))
            }
            _ => Err(EddyError::MultipleStatementsInPrepare.into_pgwire()),
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        let Some(plan) = &stmt.plan else {
            return Ok(vec![]);
        };
        parameter_types(plan)
            .map_err(EddyError::into_pgwire)?
            .iter()
            .enumerate()
            .map(
                |(i, ty)| match (stmt.described_as.get(&format!("${}", i + 1)), ty) {
                    (Some(described), _) => Ok(described.clone()),
                    (None, Some(ty)) => into_pg_type(ty),
                    (None, None) => Ok(Type::UNKNOWN),
                },
            )
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        // Describe the types the rows will have: after type coercion, if
        // the plan (with its parameters unbound) can be analyzed.
        let analyzed = stmt
            .plan
            .as_ref()
            .and_then(|plan| self.engine.analyze(plan.clone()).ok());
        let plan = analyzed.as_ref().or(stmt.plan.as_ref());
        match handler::result_schema(&stmt.statement, plan).or_else(|| stmt.schema.clone()) {
            Some(schema) => pg_fields(&schema, column_format.unwrap_or(&Format::UnifiedText), None),
            None => Ok(vec![]),
        }
    }
}

/// Answers Describe of a statement as Postgres does: its parameter types,
/// then its row description, or NoData when it returns no rows. (pgwire
/// sends an empty RowDescription for a statement with parameters and no
/// rows, which pgjdbc takes for a result set: `executeBatch` of an INSERT
/// then counts 0 rows.)
async fn describe_statement<C>(
    client: &mut C,
    response: &DescribeStatementResponse,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if !response.fields().is_empty() {
        return send_describe_response(client, response).await;
    }
    if let Some(types) = response.parameters() {
        let oids = types.iter().map(|t| t.oid()).collect();
        client
            .send(PgWireBackendMessage::ParameterDescription(
                ParameterDescription::new(oids),
            ))
            .await?;
    }
    client
        .send(PgWireBackendMessage::NoData(NoData::new()))
        .await?;
    Ok(())
}

#[async_trait]
impl ExtendedQueryHandler for Parser {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(Parser {
            engine: self.engine.clone(),
        })
    }

    /// pgwire gathers every row of an Execute without a row limit before it
    /// sends any; a query's rows go to the socket as they are computed
    /// instead, so a large result is never held whole.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal))
                if message.max_rows == 0 && is_query(&portal.statement.statement) =>
            {
                portal
            }
            _ => return self._on_execute(client, message).await,
        };
        let state = portal.state();
        let mut state = state.lock().await;
        if !matches!(*state, PortalExecutionState::Initial)
            || !matches!(client.state(), PgWireConnectionState::ReadyForQuery)
        {
            drop(state);
            return self._on_execute(client, message).await;
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        let response = match cancel {
            Some(cancel) => {
                tokio::select! {
                    response = ExtendedQueryHandler::do_query(self, client, &portal, 0) => response?,
                    _ = cancel => return Err(PgWireError::QueryCanceled),
                }
            }
            None => ExtendedQueryHandler::do_query(self, client, &portal, 0).await?,
        };
        *state = PortalExecutionState::Finished;
        match response {
            Response::Query(rows) => send_query_response(client, rows, false).await?,
            Response::Execution(tag) => send_execution_response(client, tag).await?,
            _ => {
                return Err(EddyError::Internal(
                    "a query answered with neither rows nor a command tag".into(),
                )
                .into_pgwire())
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    /// A cursor made by `DECLARE` is a portal too, as in Postgres: drivers
    /// (psycopg's named cursors) describe it by name.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            if let Some(Entry::Value(statement)) = client.portal_store().get_statement(name) {
                let response = self.do_describe_statement(client, &statement).await?;
                return describe_statement(client, &response).await;
            }
        }
        if message.target_type != TARGET_TYPE_BYTE_PORTAL
            || client.portal_store().get_portal(name).is_some()
        {
            return self._on_describe(client, message).await;
        }
        let Some(schema) = handler::cursor::cursor_schema(client.metadata(), name) else {
            return Err(EddyError::UndefinedCursor(name.to_owned()).into_pgwire());
        };
        let fields = pg_fields(&schema, &Format::UnifiedText, None)?;
        send_describe_response(client, &DescribePortalResponse::new(fields)).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let plan = match &prepared.plan {
            Some(plan) => {
                let types = parameter_types(plan).map_err(EddyError::into_pgwire)?;
                let sent = &portal.statement.parameter_types;
                // A number sent as another kind of number is read as sent,
                // then cast below, as Postgres's assignment casts do.
                let type_refs: Vec<Option<&DataType>> = types
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| {
                        let sent = sent.get(i).cloned().flatten();
                        ty.as_ref()
                            .filter(|ty| !needs_assignment_cast(sent.as_ref(), ty))
                    })
                    .collect();
                let json_as_text = json_parameters_as_text(portal, &prepared.described_as);
                let params =
                    deserialize_parameters(json_as_text.as_ref().unwrap_or(portal), &type_refs)?;
                let params = assignment_casts(params, &types).map_err(EddyError::into_pgwire)?;
                if let Some(lookup) = &prepared.lookup {
                    let answered = handler::execute_lookup(
                        &self.engine,
                        client.metadata(),
                        &prepared.statement,
                        lookup,
                        &params,
                    )
                    .await
                    .map_err(EddyError::into_pgwire)?;
                    if let Some(output) = answered {
                        let cancel = connection_handle(client);
                        return encode(
                            output,
                            &portal.result_column_format,
                            client.metadata(),
                            cancel,
                        );
                    }
                }
                Some(
                    plan.clone()
                        .replace_params_with_values(&params)
                        .map_err(|e| EddyError::from(e).into_pgwire())?,
                )
            }
            None => None,
        };
        let output = match deallocated(&prepared.statement) {
            Some(name) => deallocate(client.portal_store(), name),
            None => execute_with_notices(&self.engine, client, &prepared.statement, plan).await,
        }
        .map_err(EddyError::into_pgwire)?;
        let cancel = connection_handle(client);
        encode(
            output,
            &portal.result_column_format,
            client.metadata(),
            cancel,
        )
    }
}

/// Runs a statement; a statement that can report progress (one that
/// creates a view or query) sends its NOTICEs to the client as it runs.
async fn execute_with_notices<C>(
    engine: &Engine,
    client: &mut C,
    statement: &EddyStatement,
    plan: Option<LogicalPlan>,
) -> crate::error::Result<handler::Output>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
{
    let reports = match statement {
        EddyStatement::CreateView { .. }
        | EddyStatement::CreateRelation(_)
        | EddyStatement::InsertQuery { .. } => true,
        EddyStatement::Sql(sql) => matches!(sql.as_ref(), Statement::Rollback { .. }),
        _ => false,
    };
    if !reports {
        return handler::execute(engine, client.metadata_mut(), statement, plan).await;
    }
    // The statement runs on a copy of the settings, so that the client
    // stays free to take notices meanwhile.
    let mut vars = client.metadata().clone();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    let result = {
        // Boxed: a statement's future is large, and debug builds copy it.
        let run = Box::pin(handler::execute(engine, &mut vars, statement, plan));
        let run = crate::notice::scope(tx, run);
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => break result,
                Some(notice) = notices.recv() => send_notice(client, notice).await,
            }
        }
    };
    while let Ok(notice) = notices.try_recv() {
        send_notice(client, notice).await;
    }
    *client.metadata_mut() = vars;
    result
}

/// Sends `notice` unless the session's `client_min_messages` filters it.
async fn send_notice<C>(client: &mut C, notice: crate::notice::Notice)
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin,
{
    if !crate::notice::wanted(client.metadata(), notice.severity) {
        return;
    }
    let info =
        pgwire::error::ErrorInfo::new(notice.severity.into(), notice.code.into(), notice.message);
    let _ = client
        .send(PgWireBackendMessage::NoticeResponse(info.into()))
        .await;
}

/// The connection's handle, which cancel requests fire.
fn connection_handle<C: ClientInfo>(client: &C) -> Option<Arc<ConnectionHandle>> {
    client
        .session_extensions()
        .get::<Arc<ConnectionHandle>>()
        .map(|handle| handle.as_ref().clone())
}

/// Whether a prepared statement is a query, whose rows can be streamed.
fn is_query(prepared: &Prepared) -> bool {
    matches!(&prepared.statement, EddyStatement::Sql(s) if matches!(**s, Statement::Query(_)))
}

/// Binds what a statement reads of the session: `current_setting`.
fn bind_session(statement: &mut EddyStatement, vars: &HashMap<String, String>) {
    if let EddyStatement::Sql(sql) = statement {
        handler::set::bind_current_settings(sql, vars);
    }
}

/// Whether a parameter the client sent as `sent` is read as sent and cast
/// to `target` afterwards: an integer or float for a numeric, a float for
/// an integer (which Postgres rounds).
fn needs_assignment_cast(sent: Option<&Type>, target: &DataType) -> bool {
    let Some(sent) = sent else { return false };
    let integer = matches!(*sent, Type::INT2 | Type::INT4 | Type::INT8);
    let float = matches!(*sent, Type::FLOAT4 | Type::FLOAT8);
    match target {
        DataType::Decimal128(..) | DataType::Decimal256(..) => integer || float,
        t if t.is_integer() => float,
        _ => false,
    }
}

/// Casts parameters read as sent to the types the statement wants.
fn assignment_casts(params: ParamValues, types: &[Option<DataType>]) -> Result<ParamValues> {
    let ParamValues::List(mut values) = params else {
        return Ok(params);
    };
    for (param, target) in values.iter_mut().zip(types) {
        let Some(target) = target else { continue };
        if param.value.data_type() == *target || param.value.is_null() {
            continue;
        }
        let value = match &param.value {
            // Postgres rounds a float to the nearest integer, ties to even.
            ScalarValue::Float32(Some(v)) if target.is_integer() => {
                ScalarValue::Float64(Some(f64::from(v.round_ties_even())))
            }
            ScalarValue::Float64(Some(v)) if target.is_integer() => {
                ScalarValue::Float64(Some(v.round_ties_even()))
            }
            other => other.clone(),
        };
        if !needs_assignment_cast(
            Some(&match value.data_type() {
                DataType::Float32 | DataType::Float64 => Type::FLOAT8,
                DataType::Int16 | DataType::Int32 | DataType::Int64 => Type::INT8,
                _ => continue,
            }),
            target,
        ) {
            continue;
        }
        param.value = value.cast_to(target).map_err(|_| {
            EddyError::ParameterOutOfRange(format!("{} does not fit {target}", param.value))
        })?;
    }
    Ok(ParamValues::List(values))
}

/// The name a `DEALLOCATE [PREPARE] name | ALL` statement drops.
fn deallocated(statement: &EddyStatement) -> Option<&Ident> {
    match statement {
        EddyStatement::Sql(sql) => match sql.as_ref() {
            Statement::Deallocate { name, .. } => Some(name),
            _ => None,
        },
        _ => None,
    }
}

/// DEALLOCATE drops a prepared statement: SQL's and the protocol's named
/// statements share one namespace, as in Postgres. `ALL` drops nothing:
/// the store cannot list its statements, and each Parse replaces one of
/// the same name, so a client that prepares again gets its new statement.
fn deallocate<S: PortalStore>(store: &S, name: &Ident) -> Result<Output> {
    if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
        return Ok(Output::Command(Tag::new("DEALLOCATE ALL")));
    }
    if store.get_statement(&name.value).is_none() {
        return Err(EddyError::UndefinedPreparedStatement(name.value.clone()));
    }
    store.rm_statement(&name.value);
    Ok(Output::Command(Tag::new("DEALLOCATE")))
}
