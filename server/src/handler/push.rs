//! Push queries, in the simple query protocol: ksqlDB's `SELECT ... FROM
//! <stream | table | view> [WHERE ...] [GROUP BY ...] EMIT CHANGES [LIMIT
//! n]`, and Materialize's `SUBSCRIBE [TO] <relation | (query)> [WITH
//! (SNAPSHOT, PROGRESS)]`, which starts with the query's current rows and
//! shows each change with its epoch and diff.
//!
//! In the extended protocol, a push query is parsed, bound, described and
//! executed like any query (`connection.rs` keeps its statements and
//! portals): Execute streams its rows in the formats Bind asked for, and
//! the client's Sync, which drivers send right behind Execute, is answered
//! once the query ends.
//!
//! The query runs as a dataflow of its own from the next epoch on (as
//! ksqlDB's push queries start at the latest offset). Each committed
//! epoch's rows go to the socket at once, flushed: an inserted row of a
//! stream, or the new state of a key of a table, view or aggregate (rows
//! taken back are not shown). `LIMIT n` ends the query after n rows; a
//! cancel request, the client leaving or a client too slow to keep up end
//! it too, and free its dataflow.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{Expr, LimitClause, Value};
use eddy_dataflow::ChangeBatch;
use eddy_dataflow::{PushEvent, PushReceiver};
use eddy_sql::ast::Emit;
use eddy_sql::{EddyQuery, EddyStatement};
use futures::{SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, Tag};
use pgwire::api::{ClientInfo, ConnectionHandle, PgWireConnectionState};
use pgwire::error::PgWireError;
use pgwire::messages::copy::{CopyData, CopyOutResponse};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::response::{CommandComplete, ReadyForQuery};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::engine::Engine;
use crate::error::{EddyError, Result};
use crate::subscription_slots::SubscriptionSlot;

/// A push query, with its LIMIT taken out of the query.
#[derive(Clone)]
pub struct PushQuery {
    /// The statement as the client sent it, for SHOW QUERIES.
    statement: String,
    source: Source,
    limit: Option<u64>,
    /// How its rows look: ksqlDB's or Materialize's.
    form: Form,
    /// `COPY (SUBSCRIBE ...) TO STDOUT`: rows go as COPY data.
    copy: bool,
}

/// What a push query shows.
#[derive(Clone)]
enum Source {
    /// A query's changes.
    Query(EddyQuery),
    /// `PRINT topic`: a topic's records.
    Print(eddy_sql::ast::Print),
}

/// How a push query shows changes.
#[derive(Clone, Copy)]
pub enum Form {
    /// `EMIT CHANGES`: each row added, as the query's columns.
    EmitChanges,
    /// `SUBSCRIBE`: the current rows first (if `snapshot`), then each
    /// change, as `mz_timestamp` (the epoch), `mz_progressed` (with
    /// `progress`), `mz_diff` and the query's columns.
    Subscribe { snapshot: bool, progress: bool },
}

/// The push query `sql` is, if it is one statement that is one.
pub fn parse(sql: &str) -> Option<Result<PushQuery>> {
    // Every query passes here: parse only those that may be push queries.
    if !contains_word(sql, "emit")
        && !contains_word(sql, "subscribe")
        && !contains_word(sql, "print")
    {
        return None;
    }
    let mut statements = eddy_sql::parse_sql(sql).ok()?;
    let (Some(statement), None) = (statements.pop(), statements.pop()) else {
        return None;
    };
    let copy = matches!(statement, EddyStatement::CopySubscribe(_));
    if let EddyStatement::Print(print) = statement {
        let statement = sql.trim().trim_end_matches(';').trim().to_owned();
        return Some(Ok(PushQuery {
            statement,
            limit: print.limit,
            source: Source::Print(print),
            form: Form::EmitChanges,
            copy: false,
        }));
    }
    let (mut query, form) = match statement {
        EddyStatement::Query(query) if query.clauses.emit == Some(Emit::Changes) => {
            (*query, Form::EmitChanges)
        }
        EddyStatement::Subscribe(subscribe) | EddyStatement::CopySubscribe(subscribe) => {
            let query = EddyQuery {
                query: subscribe.query,
                clauses: Default::default(),
            };
            let form = Form::Subscribe {
                snapshot: subscribe.snapshot,
                progress: subscribe.progress,
            };
            (query, form)
        }
        _ => return None,
    };
    // SUBSCRIBE's query keeps its LIMIT (a top-N); EMIT CHANGES's ends it.
    let limit = match form {
        Form::EmitChanges => take_limit(&mut query),
        Form::Subscribe { .. } => Ok(None),
    };
    let statement = sql.trim().trim_end_matches(';').trim().to_owned();
    Some(limit.map(|limit| PushQuery {
        statement,
        source: Source::Query(query),
        limit,
        form,
        copy,
    }))
}

/// Whether `text` holds `word` (lower case), in any case.
fn contains_word(text: &str, word: &str) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

impl Form {
    /// The columns the client sees for a query with `schema`.
    pub fn schema(self, schema: &SchemaRef) -> SchemaRef {
        let Form::Subscribe { progress, .. } = self else {
            return schema.clone();
        };
        let mut fields = vec![Field::new(MZ_TIMESTAMP, DataType::Int64, false)];
        if progress {
            fields.push(Field::new(MZ_PROGRESSED, DataType::Boolean, false));
        }
        fields.push(Field::new(MZ_DIFF, DataType::Int64, true));
        fields.extend(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        Arc::new(Schema::new(fields))
    }

    /// The rows to send for an epoch's `changes`.
    pub fn rows(self, epoch: u64, changes: &ChangeBatch, out: &SchemaRef) -> Result<RecordBatch> {
        let Form::Subscribe { progress, .. } = self else {
            return inserted_rows(&changes.data, changes.weights.values(), out);
        };
        let n = changes.num_rows();
        let epoch = epoch as i64;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_value(epoch, n))];
        if progress {
            columns.push(Arc::new(BooleanArray::from(vec![false; n])));
        }
        columns.push(Arc::new(changes.weights.clone()));
        columns.extend(changes.data.columns().iter().cloned());
        let rows = RecordBatch::try_new(out.clone(), columns).map_err(arrow)?;
        if !progress {
            return Ok(rows);
        }
        // Every row before the next epoch has been sent.
        let mut marker: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_value(epoch + 1, 1)),
            Arc::new(BooleanArray::from(vec![true])),
        ];
        marker.extend(
            out.fields()
                .iter()
                .skip(2)
                .map(|f| new_null_array(f.data_type(), 1)),
        );
        let marker = RecordBatch::try_new(out.clone(), marker).map_err(arrow)?;
        concat_batches(out, [&rows, &marker]).map_err(arrow)
    }
}

const MZ_TIMESTAMP: &str = "mz_timestamp";
const MZ_PROGRESSED: &str = "mz_progressed";
const MZ_DIFF: &str = "mz_diff";

/// Takes `LIMIT n` (a count of rows to push) off the query.
pub fn take_limit(query: &mut EddyQuery) -> Result<Option<u64>> {
    let Some(clause) = query.query.limit_clause.take() else {
        return Ok(None);
    };
    let limit = match &clause {
        LimitClause::LimitOffset {
            limit,
            offset: None,
            limit_by,
        } if limit_by.is_empty() => limit.as_ref(),
        _ => {
            return Err(EddyError::Unsupported(format!(
                "{clause} in a push query (it takes LIMIT n, the rows to push before it ends)"
            )))
        }
    };
    match limit {
        None => Ok(None),
        Some(Expr::Value(v)) => match &v.value {
            Value::Number(n, _) => n.parse().map(Some).map_err(|_| {
                EddyError::InvalidParameter(format!("LIMIT {n}: a push query's limit is a count"))
            }),
            other => Err(EddyError::InvalidParameter(format!(
                "LIMIT {other}: a push query's limit is a count"
            ))),
        },
        Some(other) => Err(EddyError::InvalidParameter(format!(
            "LIMIT {other}: a push query's limit is a count"
        ))),
    }
}

/// A socket that serves pgwire messages.
pub trait PushSocket:
    futures::Sink<PgWireBackendMessage, Error = std::io::Error>
    + futures::Stream<Item = std::result::Result<PgWireFrontendMessage, PgWireError>>
    + ClientInfo
    + Unpin
{
}

impl<T> PushSocket for T where
    T: futures::Sink<PgWireBackendMessage, Error = std::io::Error>
        + futures::Stream<Item = std::result::Result<PgWireFrontendMessage, PgWireError>>
        + ClientInfo
        + Unpin
{
}

/// How a push query ended.
pub enum Ended {
    /// Its LIMIT was reached: the query completed.
    Complete,
    /// The client left; the connection is over.
    Disconnected,
    /// The client stopped reading while its changes piled up to the
    /// buffer's limit; the connection is to be closed.
    TooSlow,
}

/// How often a write the client does not take checks the query's buffer.
const SLOW_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Returns once `receiver`'s unread changes reach the buffer's limit.
async fn falls_behind(receiver: &PushReceiver) {
    loop {
        tokio::time::sleep(SLOW_CHECK).await;
        if receiver.lagging() {
            return;
        }
    }
}

/// ksqlDB's `SET 'auto.offset.reset' = 'earliest'`: a push query starts
/// with what is there.
pub fn starts_earliest(metadata: &std::collections::HashMap<String, String>) -> bool {
    metadata
        .get("auto.offset.reset")
        .is_some_and(|v| v.eq_ignore_ascii_case("earliest"))
}

/// How a push query's rows reach the client.
pub enum Protocol {
    /// A simple query: a row description first, ReadyForQuery at the end.
    Simple,
    /// An Execute of a bound portal: no row description (Describe gave
    /// it), rows in the formats Bind asked for.
    Extended { format: Format },
}

impl PushQuery {
    /// `COPY (SUBSCRIBE ...) TO STDOUT`.
    pub fn is_copy(&self) -> bool {
        self.copy
    }

    /// The columns the client sees, planned without starting the query.
    pub async fn describe(&self, engine: &Engine) -> Result<SchemaRef> {
        let query = match &self.source {
            Source::Query(query) => query,
            Source::Print(_) => return Ok(super::print::schema()),
        };
        let lowered = plan(engine, query, self.form).await?;
        Ok(self.form.schema(&lowered.root.schema))
    }
}

/// Plans a push query's dataflow.
async fn plan(engine: &Engine, query: &EddyQuery, form: Form) -> Result<eddy_dataflow::Lowered> {
    let lowered = engine
        .plan_view(&query.query, &query.clauses, false)
        .await?;
    if lowered.depends_on.is_empty() {
        let what = match form {
            Form::EmitChanges => "SELECT ... EMIT CHANGES",
            Form::Subscribe { .. } => "SUBSCRIBE to a query",
        };
        return Err(EddyError::Unsupported(format!(
            "{what} that reads no stream, table or view (nothing it shows would ever change)"
        )));
    }
    Ok(lowered)
}

/// Plans `query` and starts it as a push query shown in `form`, from its
/// current rows when `snapshot` is set; returns the columns the client
/// sees and the receiver of its changes. `statement` is what SHOW QUERIES
/// lists.
pub async fn start(
    engine: &Engine,
    session: &std::collections::HashMap<String, String>,
    statement: String,
    query: &EddyQuery,
    form: Form,
    snapshot: bool,
) -> Result<(SchemaRef, PushReceiver)> {
    let lowered = plan(engine, query, form).await?;
    let slot = subscription_slot(engine, session, &lowered.depends_on)?;
    let schema = form.schema(&lowered.root.schema);
    let mut receiver =
        engine
            .dataflow
            .push(statement, lowered.root, lowered.depends_on, snapshot)?;
    receiver.hold(slot);
    Ok((schema, receiver))
}

/// Counts a subscription of `session`'s connection reading `relations`.
fn subscription_slot(
    engine: &Engine,
    session: &std::collections::HashMap<String, String>,
    relations: &[u64],
) -> Result<SubscriptionSlot> {
    let id = session
        .get(super::cursor::SESSION_KEY)
        .map_or("", String::as_str);
    SubscriptionSlot::take(id, relations, |id| {
        engine
            .catalog
            .relation_name(id)
            .unwrap_or_else(|| id.to_string())
    })
}

/// Starts listening for the client's cancel request.
pub async fn cancel_receiver<S: ClientInfo>(
    socket: &S,
) -> Option<futures::channel::oneshot::Receiver<()>> {
    match socket.session_extensions().get::<Arc<ConnectionHandle>>() {
        Some(handle) => Some(handle.start_query().await),
        None => None,
    }
}

/// Resolves when `cancel` fires; never, without one (a dropped sender,
/// replaced by the next query's, is no cancel).
pub async fn canceled(cancel: Option<futures::channel::oneshot::Receiver<()>>) {
    match cancel {
        Some(rx) => {
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl PushQuery {
    /// Starts the query for a session whose settings are `metadata`.
    pub async fn start(
        &self,
        engine: &Engine,
        metadata: &std::collections::HashMap<String, String>,
    ) -> Result<(SchemaRef, PushReceiver)> {
        let actor = crate::privileges::Actor::of(engine, metadata)?;
        match &self.source {
            Source::Query(query) => {
                for name in eddy_sql::access::relations_named(&query.query) {
                    crate::privileges::require(
                        engine,
                        &actor,
                        &name,
                        eddy_catalog::roles::Privileges::SELECT,
                    )?;
                }
            }
            Source::Print(print) => {
                crate::privileges::authorize_print(engine, &actor, &print.topic)?
            }
        }
        let snapshot = match self.form {
            Form::Subscribe { snapshot, .. } => snapshot,
            Form::EmitChanges => starts_earliest(metadata),
        };
        match &self.source {
            Source::Query(query) => {
                start(
                    engine,
                    metadata,
                    self.statement.clone(),
                    query,
                    self.form,
                    snapshot,
                )
                .await
            }
            Source::Print(print) => {
                let slot = subscription_slot(engine, metadata, &[])?;
                let (schema, mut receiver) =
                    super::print::start(engine, self.statement.clone(), print).await?;
                receiver.hold(slot);
                Ok((schema, receiver))
            }
        }
    }

    /// Starts the query as a feed of rows to fetch some at a time.
    pub async fn start_feed(
        &self,
        engine: &Engine,
        metadata: &std::collections::HashMap<String, String>,
    ) -> Result<(SchemaRef, super::cursor::Feed)> {
        let (schema, receiver) = self.start(engine, metadata).await?;
        Ok((
            schema,
            super::cursor::Feed::new(receiver, self.form, self.limit),
        ))
    }
}

/// Runs `push` and streams its rows to `socket` until it ends; an error
/// is the query's, for the caller to report. In the extended protocol,
/// `synced` is set when the client's Sync came while the query ran: the
/// query's end (or the caller, after an error) answers it. A message the
/// client sent meanwhile is left in `pending`, for the caller to take next.
pub async fn serve<S: PushSocket>(
    socket: &mut S,
    engine: &Engine,
    push: PushQuery,
    protocol: &Protocol,
    synced: &mut bool,
    pending: &mut Option<PgWireFrontendMessage>,
) -> Result<Ended> {
    // Listen for a cancel before the query is visible, so none is missed.
    let cancel = cancel_receiver(socket).await;
    let (schema, mut receiver) = push.start(engine, socket.metadata()).await?;
    let format = match protocol {
        Protocol::Simple => Format::UnifiedText,
        Protocol::Extended { format } => format.clone(),
    };
    let fields = Arc::new(crate::wire::pg_fields(&schema, &format, None)?);
    let described = if let Protocol::Extended { .. } = protocol {
        Ok(())
    } else if push.copy {
        let columns = fields.len() as i16;
        let response = CopyOutResponse::new(0, columns, vec![0; fields.len()]);
        socket
            .send(PgWireBackendMessage::CopyOutResponse(response))
            .await
    } else {
        let description = RowDescription::new(fields.iter().map(FieldDescription::from).collect());
        socket
            .send(PgWireBackendMessage::RowDescription(description))
            .await
    };
    if described.is_err() {
        return Ok(Ended::Disconnected);
    }
    let mut cancel = std::pin::pin!(canceled(cancel));
    let mut sent: u64 = 0;
    loop {
        tokio::select! {
            event = receiver.recv() => match event {
                Some(PushEvent::Changes { changes, epoch }) => {
                    let rows = push.form.rows(epoch, &changes, &schema)?;
                    let room = push.limit.map_or(u64::MAX, |limit| limit - sent);
                    let rows = rows.slice(0, rows.num_rows().min(room as usize));
                    sent += rows.num_rows() as u64;
                    let done = push.limit == Some(sent);
                    // A client that takes nothing while its changes pile up
                    // is cut off, so it holds no memory or task for long.
                    let end = done.then_some(End {
                        rows: sent,
                        ready: matches!(protocol, Protocol::Simple) || *synced,
                    });
                    let written = tokio::select! {
                        written = write_rows(socket, rows, &fields, &format, push.copy, end) => written,
                        () = falls_behind(&receiver) => return Ok(Ended::TooSlow),
                    };
                    match written {
                        Ok(()) if done => return Ok(Ended::Complete),
                        Ok(()) => {}
                        Err(Written::Closed) => return Ok(Ended::Disconnected),
                        Err(Written::Encode(e)) => return Err(EddyError::PushFailed(e)),
                    }
                }
                Some(PushEvent::Failed(reason)) => return Err(EddyError::PushFailed(reason)),
                Some(PushEvent::FellBehind) => return Err(EddyError::ClientTooSlow),
                Some(PushEvent::Dropped(name)) => {
                    return Err(EddyError::PushRelationDropped(name))
                }
                None => return Err(EddyError::ShuttingDown),
            },
            // A Sync after Execute is the protocol's, and waits for the
            // end. Anything else the client sends meanwhile (pipelined
            // statements) waits unread until the query ends, as in
            // Postgres; the client leaving ends the query.
            message = socket.next(), if pending.is_none() => match message {
                Some(Ok(PgWireFrontendMessage::Sync(_)))
                    if matches!(protocol, Protocol::Extended { .. }) && !*synced =>
                {
                    *synced = true;
                }
                Some(Ok(PgWireFrontendMessage::Flush(_)))
                    if matches!(protocol, Protocol::Extended { .. }) => {}
                Some(Ok(message)) if !matches!(message, PgWireFrontendMessage::Terminate(_)) => {
                    *pending = Some(message);
                }
                _ => return Ok(Ended::Disconnected),
            },
            () = &mut cancel => return Err(EddyError::Canceled),
        }
    }
}

/// Why rows were not written.
enum Written {
    Closed,
    Encode(String),
}

/// How a push query that reached its LIMIT ends.
struct End {
    /// The rows it sent.
    rows: u64,
    /// Whether to send ReadyForQuery: after a simple query, or once the
    /// extended protocol's Sync has come.
    ready: bool,
}

/// Writes `rows` as data rows (or COPY data) and flushes; with `end`,
/// then ends the query.
async fn write_rows<S: PushSocket>(
    socket: &mut S,
    rows: RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    format: &Format,
    copy: bool,
    end: Option<End>,
) -> std::result::Result<(), Written> {
    for row in crate::wire::encode_rows(rows, fields, format) {
        let row = row.map_err(|e| Written::Encode(e.to_string()))?;
        let message = if copy {
            PgWireBackendMessage::CopyData(CopyData::new(copy_line(&row).into()))
        } else {
            PgWireBackendMessage::DataRow(row)
        };
        socket.feed(message).await.map_err(|_| Written::Closed)?;
    }
    let flushed = match end {
        Some(end) => complete(socket, end).await,
        None => socket.flush().await,
    };
    flushed.map_err(|_| Written::Closed)
}

async fn complete<S: PushSocket>(socket: &mut S, end: End) -> std::io::Result<()> {
    let tag = Tag::new("SELECT").with_rows(end.rows as usize);
    socket
        .feed(PgWireBackendMessage::CommandComplete(
            CommandComplete::from(tag),
        ))
        .await?;
    if end.ready {
        ready_for_query(socket).await?;
    }
    socket.flush().await
}

/// Tells the client the connection is ready for its next query.
pub async fn ready_for_query<S: PushSocket>(socket: &mut S) -> std::io::Result<()> {
    socket.set_state(PgWireConnectionState::ReadyForQuery);
    let status = socket.transaction_status();
    socket
        .feed(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
            status,
        )))
        .await
}

/// A data row as a line of COPY's text format: tab-separated, `\N` for
/// NULL, with backslash escapes.
fn copy_line(row: &DataRow) -> Vec<u8> {
    let mut line = Vec::with_capacity(row.data.len() + 1);
    let mut data: &[u8] = &row.data;
    for i in 0..row.field_count {
        if i > 0 {
            line.push(b'\t');
        }
        let Some((len, rest)) = data.split_first_chunk::<4>() else {
            break;
        };
        let len = i32::from_be_bytes(*len);
        data = rest;
        if len < 0 {
            line.extend_from_slice(b"\\N");
            continue;
        }
        let (value, rest) = data.split_at((len as usize).min(data.len()));
        data = rest;
        for &byte in value {
            match byte {
                b'\\' => line.extend_from_slice(b"\\\\"),
                b'\t' => line.extend_from_slice(b"\\t"),
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                other => line.push(other),
            }
        }
    }
    line.push(b'\n');
    line
}

fn arrow(e: ArrowError) -> EddyError {
    EddyError::from(datafusion::error::DataFusionError::from(e))
}

/// The rows a change batch adds, each as many times as its weight.
fn inserted_rows(data: &RecordBatch, weights: &[i64], schema: &SchemaRef) -> Result<RecordBatch> {
    let mut indices = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        for _ in 0..w.max(0) {
            indices.push(i as u32);
        }
    }
    let rows = take_record_batch(data, &UInt32Array::from(indices)).map_err(arrow)?;
    RecordBatch::try_new(schema.clone(), rows.columns().to_vec()).map_err(arrow)
}
