//! Cursors: `DECLARE`, `FETCH`, `MOVE` and `CLOSE`, as in Postgres, over
//! any query.
//!
//! Each connection is a session with cursors of its own, dropped when it
//! ends. A cursor's query fixes what it reads at DECLARE: one consistent
//! point across every view. FETCH and MOVE take rows from it, forward
//! only, computing them as they ask. Without `WITH HOLD`, DECLARE needs a transaction block and
//! the cursor ends with it; with it, the cursor lives until CLOSE or the
//! end of the session.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, Declare, FetchDirection, Ident, Statement, Value, ValueWithSpan,
};
use eddy_dataflow::{PushEvent, PushReceiver};
use eddy_sql::ast::Subscribe;
use eddy_sql::{EddyQuery, QueryClauses};
use futures::StreamExt;
use pgwire::api::results::Tag;

use super::push::Form;
use super::Output;
use crate::engine::Engine;
use crate::error::{EddyError, Result};

/// The client metadata key that holds the connection's session id.
pub const SESSION_KEY: &str = "eddy.session";

struct Cursor {
    schema: SchemaRef,
    /// The rows not fetched yet.
    rows: VecDeque<RecordBatch>,
    /// A query's rows still to compute, as FETCH asks for them; taken out
    /// while a FETCH computes them.
    query: Option<SendableRecordBatchStream>,
    hold: bool,
    /// A push query's rows still to come (`DECLARE ... FOR SUBSCRIBE` or
    /// `FOR SELECT ... EMIT CHANGES`); taken out while a FETCH waits on it.
    feed: Option<Feed>,
    /// The session's [`Session::clock`] when it was declared, so that
    /// ROLLBACK TO a savepoint set before it closes it.
    declared_at: u64,
}

/// Where a push query cursor's (or row-limited portal's) rows come from.
pub(crate) struct Feed {
    receiver: PushReceiver,
    form: Form,
    /// Rows still to take before the query ends (its `LIMIT`).
    remaining: Option<u64>,
}

impl Feed {
    pub(crate) fn new(receiver: PushReceiver, form: Form, limit: Option<u64>) -> Self {
        Feed {
            receiver,
            form,
            remaining: limit,
        }
    }

    /// Whether the query has reached its LIMIT: nothing more comes.
    pub(crate) fn ended(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Waits for changes (until `deadline`, if any) until `wanted` rows are
    /// queued on `rows` or the query has ended, then queues whatever else
    /// has come.
    pub(crate) async fn fill(
        &mut self,
        schema: &SchemaRef,
        rows: &mut VecDeque<RecordBatch>,
        wanted: usize,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<()> {
        let mut queued: usize = rows.iter().map(RecordBatch::num_rows).sum();
        while queued < wanted && !self.ended() {
            let event = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                        Ok(event) => event,
                        Err(_) => break,
                    }
                }
                None => self.receiver.recv().await,
            };
            match event {
                Some(event) => self.absorb(event, schema, rows)?,
                None => return Err(EddyError::ShuttingDown),
            }
            queued = rows.iter().map(RecordBatch::num_rows).sum();
        }
        while !self.ended() {
            let Some(event) = self.receiver.try_recv() else {
                break;
            };
            self.absorb(event, schema, rows)?;
        }
        Ok(())
    }

    /// Queues the rows of `event` on `rows`.
    fn absorb(
        &mut self,
        event: PushEvent,
        schema: &SchemaRef,
        rows: &mut VecDeque<RecordBatch>,
    ) -> Result<()> {
        match event {
            PushEvent::Changes { epoch, changes } => {
                let mut batch = self.form.rows(epoch, &changes, schema)?;
                if let Some(remaining) = &mut self.remaining {
                    batch = batch.slice(0, batch.num_rows().min(*remaining as usize));
                    *remaining -= batch.num_rows() as u64;
                }
                if batch.num_rows() > 0 {
                    rows.push_back(batch);
                }
                Ok(())
            }
            PushEvent::Failed(reason) => Err(EddyError::PushFailed(reason)),
            PushEvent::FellBehind => Err(EddyError::ClientTooSlow),
            PushEvent::Dropped(name) => Err(EddyError::PushRelationDropped(name)),
        }
    }
}

/// One connection's cursors and transaction state.
#[derive(Default)]
pub(super) struct Session {
    cursors: HashMap<String, Cursor>,
    pub(super) in_transaction: bool,
    /// The open transaction's savepoints, oldest first.
    pub(super) savepoints: Vec<Savepoint>,
    /// Statements that wrote in the open transaction.
    pub(super) writes: u64,
    /// Ticks at each savepoint and cursor, to order them.
    pub(super) clock: u64,
}

pub(super) struct Savepoint {
    pub(super) name: String,
    /// [`Session::writes`] when it was set.
    pub(super) writes: u64,
    /// [`Session::clock`] when it was set.
    pub(super) at: u64,
}

impl Session {
    pub(super) fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// ROLLBACK TO a savepoint set at `at`: cursors declared since close.
    pub(super) fn close_cursors_since(&mut self, at: u64) {
        self.cursors.retain(|_, c| c.declared_at < at);
    }
}

static SESSIONS: LazyLock<Mutex<HashMap<u64, Session>>> = LazyLock::new(Default::default);

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Starts a session; its id goes into the connection's metadata under
/// [`SESSION_KEY`].
pub fn start_session() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// Ends a session, dropping its cursors.
pub fn end_session(id: u64) {
    if let Ok(mut sessions) = SESSIONS.lock() {
        sessions.remove(&id);
    }
}

pub(super) fn with_session<T>(
    vars: &mut HashMap<String, String>,
    f: impl FnOnce(&mut Session) -> T,
) -> T {
    let id = match vars.get(SESSION_KEY).and_then(|id| id.parse().ok()) {
        Some(id) => id,
        None => {
            let id = start_session();
            vars.insert(SESSION_KEY.into(), id.to_string());
            id
        }
    };
    let mut sessions = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    f(sessions.entry(id).or_default())
}

/// BEGIN: cursors declared from now on may live without HOLD.
pub fn begin(vars: &mut HashMap<String, String>) {
    with_session(vars, |s| s.in_transaction = true);
}

/// COMMIT or ROLLBACK: cursors without HOLD end.
pub fn end_transaction(vars: &mut HashMap<String, String>) {
    with_session(vars, |s| {
        s.in_transaction = false;
        s.savepoints.clear();
        s.writes = 0;
        s.cursors.retain(|_, c| c.hold);
    });
}

/// A cursor's name as Postgres folds it: unquoted names are lower case.
fn cursor_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The schema of the rows `FETCH` returns from cursor `name`, if it is open.
pub fn fetch_schema(vars: &HashMap<String, String>, statement: &Statement) -> Option<SchemaRef> {
    let Statement::Fetch { name, .. } = statement else {
        return None;
    };
    cursor_schema(vars, &cursor_name(name))
}

/// The schema of open cursor `name`'s rows (the name as stored: folded
/// to lower case unless it was quoted).
pub fn cursor_schema(vars: &HashMap<String, String>, name: &str) -> Option<SchemaRef> {
    let id: u64 = vars.get(SESSION_KEY)?.parse().ok()?;
    let sessions = SESSIONS.lock().ok()?;
    let cursor = sessions.get(&id)?.cursors.get(name)?;
    Some(cursor.schema.clone())
}

/// The query a `DECLARE ... CURSOR FOR` statement runs, as a statement.
pub fn declared_query(statement: &Statement) -> Option<Statement> {
    match statement {
        Statement::Declare { stmts } => match stmts.as_slice() {
            [declare] => declare
                .for_query
                .as_ref()
                .map(|q| Statement::Query(q.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// `plan` is the cursor query's plan with its parameters bound, when the
/// statement was prepared.
pub async fn handle_declare(
    engine: &Engine,
    vars: &mut HashMap<String, String>,
    declares: &[Declare],
    plan: Option<LogicalPlan>,
) -> Result<Output> {
    let [declare] = declares else {
        return Err(EddyError::Unsupported("DECLARE of several cursors".into()));
    };
    let (Some(query), [ident]) = (&declare.for_query, declare.names.as_slice()) else {
        return Err(EddyError::Unsupported(
            "DECLARE other than DECLARE name CURSOR FOR query".into(),
        ));
    };
    if declare.binary == Some(true) {
        return Err(EddyError::Unsupported("BINARY cursors".into()));
    }
    if declare.scroll == Some(true) {
        return Err(EddyError::Unsupported("SCROLL cursors".into()));
    }
    let name = cursor_name(ident);
    let hold = declare.hold == Some(true);
    check_declarable(vars, &name, hold)?;
    let statement = Statement::Query(query.clone());
    let plan = match plan {
        Some(plan) => plan,
        None => engine.plan(&statement).await?,
    };
    let (schema, rows, query) = match super::query::handle_query(engine, &statement, plan).await? {
        Output::Rows {
            schema, batches, ..
        } => (schema, batches, None),
        Output::Stream { schema, stream, .. } => (schema, Vec::new(), Some(stream)),
        _ => {
            return Err(EddyError::Internal(
                "a cursor's query returned no rows".into(),
            ))
        }
    };
    let cursor = Cursor {
        schema,
        rows: rows.into_iter().filter(|b| b.num_rows() > 0).collect(),
        query,
        hold,
        feed: None,
        declared_at: 0,
    };
    open_cursor(vars, name, cursor);
    Ok(Output::Command(Tag::new("DECLARE CURSOR")))
}

fn open_cursor(vars: &mut HashMap<String, String>, name: String, mut cursor: Cursor) {
    with_session(vars, |s| {
        cursor.declared_at = s.tick();
        s.cursors.insert(name, cursor);
    });
}

/// Refuses a DECLARE of cursor `name` that Postgres would refuse.
fn check_declarable(vars: &mut HashMap<String, String>, name: &str, hold: bool) -> Result<()> {
    let (open, in_transaction) =
        with_session(vars, |s| (s.cursors.contains_key(name), s.in_transaction));
    if !hold && !in_transaction {
        return Err(EddyError::NoActiveTransaction("DECLARE CURSOR"));
    }
    if open {
        return Err(EddyError::DuplicateCursor(name.to_owned()));
    }
    Ok(())
}

/// `DECLARE name CURSOR FOR SUBSCRIBE ...`: a cursor over a subscription,
/// whose FETCHes wait for its rows.
pub async fn handle_declare_subscribe(
    engine: &Engine,
    vars: &mut HashMap<String, String>,
    ident: &Ident,
    hold: bool,
    subscribe: &Subscribe,
) -> Result<Output> {
    let name = cursor_name(ident);
    check_declarable(vars, &name, hold)?;
    let form = Form::Subscribe {
        snapshot: subscribe.snapshot,
        progress: subscribe.progress,
    };
    let query = EddyQuery {
        query: subscribe.query.clone(),
        clauses: QueryClauses::default(),
    };
    let statement = format!("DECLARE {name} CURSOR FOR {subscribe}");
    let (schema, receiver) =
        super::push::start(engine, vars, statement, &query, form, subscribe.snapshot).await?;
    open_feed(vars, name, hold, schema, receiver, form, None)
}

/// `DECLARE name CURSOR FOR SELECT ... EMIT CHANGES [LIMIT n]`: a cursor
/// over a push query, whose FETCHes wait for as many rows as they ask for
/// (or for the query to end), as psql's `FETCH_COUNT` expects.
pub async fn handle_declare_emit_changes(
    engine: &Engine,
    vars: &mut HashMap<String, String>,
    ident: &Ident,
    hold: bool,
    query: &EddyQuery,
) -> Result<Output> {
    let name = cursor_name(ident);
    check_declarable(vars, &name, hold)?;
    let mut query = query.clone();
    let limit = super::push::take_limit(&mut query)?;
    let statement = format!("DECLARE {name} CURSOR FOR {query}");
    let snapshot = super::push::starts_earliest(vars);
    let form = Form::EmitChanges;
    let (schema, receiver) =
        super::push::start(engine, vars, statement, &query, form, snapshot).await?;
    open_feed(vars, name, hold, schema, receiver, form, limit)
}

/// Opens cursor `name` over a push query's rows.
fn open_feed(
    vars: &mut HashMap<String, String>,
    name: String,
    hold: bool,
    schema: SchemaRef,
    receiver: PushReceiver,
    form: Form,
    limit: Option<u64>,
) -> Result<Output> {
    let cursor = Cursor {
        schema,
        rows: VecDeque::new(),
        query: None,
        hold,
        feed: Some(Feed::new(receiver, form, limit)),
        declared_at: 0,
    };
    open_cursor(vars, name, cursor);
    Ok(Output::Command(Tag::new("DECLARE CURSOR")))
}

/// How many rows a FETCH direction asks for: `None` for all of them.
fn forward_count(direction: &FetchDirection) -> Result<Option<usize>> {
    let count = |limit: &ValueWithSpan| -> Result<Option<usize>> {
        match &limit.value {
            Value::Number(n, _) => match n.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(Some(n as usize)),
                Ok(_) => Err(EddyError::ForwardOnlyCursor),
                Err(_) => Err(EddyError::InvalidParameter(format!(
                    "FETCH count {n} is not an integer"
                ))),
            },
            other => Err(EddyError::InvalidParameter(format!(
                "FETCH count {other} is not an integer"
            ))),
        }
    };
    match direction {
        FetchDirection::Next => Ok(Some(1)),
        FetchDirection::Forward { limit: None } => Ok(Some(1)),
        FetchDirection::Forward { limit: Some(limit) } | FetchDirection::Count { limit } => {
            count(limit)
        }
        FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
        _ => Err(EddyError::ForwardOnlyCursor),
    }
}

/// Takes up to `count` rows (all with `None`) off the front of `rows`.
pub(crate) fn take_rows(
    rows: &mut VecDeque<RecordBatch>,
    count: Option<usize>,
) -> Vec<RecordBatch> {
    let mut wanted = count.unwrap_or(usize::MAX);
    let mut taken = Vec::new();
    while wanted > 0 {
        let Some(batch) = rows.pop_front() else {
            break;
        };
        if batch.num_rows() <= wanted {
            wanted -= batch.num_rows();
            taken.push(batch);
        } else {
            taken.push(batch.slice(0, wanted));
            rows.push_front(batch.slice(wanted, batch.num_rows() - wanted));
            wanted = 0;
        }
    }
    taken
}

/// FETCH, or MOVE (`moving`), which skips the rows instead. From a
/// subscription, it waits until a row is there (at most `timeout`), then
/// takes what is there, up to the count; from `EMIT CHANGES`, until the
/// count is there or the query has ended.
pub async fn handle_fetch(
    vars: &mut HashMap<String, String>,
    statement: &Statement,
    moving: bool,
    timeout: Option<Duration>,
) -> Result<Output> {
    let Statement::Fetch {
        name,
        direction,
        into,
        ..
    } = statement
    else {
        return Err(EddyError::Internal("FETCH dispatched wrongly".into()));
    };
    if into.is_some() {
        return Err(EddyError::Unsupported("FETCH ... INTO".into()));
    }
    let count = forward_count(direction)?;
    let name = cursor_name(name);
    if moving {
        if let Some(moved) = pull_rows(vars, &name, count, true).await? {
            return Ok(Output::Command(Tag::new("MOVE").with_rows(moved)));
        }
    }
    pull_rows(vars, &name, count, false).await?;
    wait_for_rows(vars, &name, count, timeout).await?;
    let (schema, batches) = with_session(vars, |s| {
        let cursor = s
            .cursors
            .get_mut(&name)
            .ok_or_else(|| EddyError::UndefinedCursor(name.clone()))?;
        Ok::<_, EddyError>((cursor.schema.clone(), take_rows(&mut cursor.rows, count)))
    })?;
    if moving {
        let moved: usize = batches.iter().map(RecordBatch::num_rows).sum();
        return Ok(Output::Command(Tag::new("MOVE").with_rows(moved)));
    }
    Ok(Output::Rows {
        schema,
        batches,
        tag: "FETCH",
    })
}

/// Computes a query cursor's rows until `count` of them (all for `None`)
/// are had: queued, for FETCH, or with `skip`, for MOVE, skipped along
/// with those queued before, keeping none. Returns how many were had, or
/// `None` for a cursor with no rows left to compute.
async fn pull_rows(
    vars: &mut HashMap<String, String>,
    name: &str,
    count: Option<usize>,
    skip: bool,
) -> Result<Option<usize>> {
    let wanted = count.unwrap_or(usize::MAX);
    let taken = with_session(vars, |s| {
        let cursor = s.cursors.get_mut(name)?;
        cursor.query.as_ref()?;
        let had: usize = if skip {
            let skipped = take_rows(&mut cursor.rows, count);
            skipped.iter().map(RecordBatch::num_rows).sum()
        } else {
            cursor.rows.iter().map(RecordBatch::num_rows).sum()
        };
        let query = if had < wanted {
            cursor.query.take()
        } else {
            None
        };
        Some((query, had))
    });
    let Some((query, mut had)) = taken else {
        return Ok(None);
    };
    let Some(mut query) = query else {
        return Ok(Some(had));
    };
    let mut rows = VecDeque::new();
    let mut result = Ok(());
    let mut ended = false;
    while had < wanted {
        match query.next().await {
            Some(Ok(batch)) => {
                let n = batch.num_rows();
                let used = if skip { n.min(wanted - had) } else { 0 };
                if used < n {
                    rows.push_back(batch.slice(used, n - used));
                }
                had += n.min(wanted - had);
            }
            Some(Err(e)) => {
                result = Err(EddyError::from(e));
                break;
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    with_session(vars, |s| {
        if let Some(cursor) = s.cursors.get_mut(name) {
            cursor.rows.extend(rows);
            if result.is_ok() && !ended {
                cursor.query = Some(query);
            }
        }
    });
    result.map(|()| Some(had))
}

/// For a push query cursor: waits for its next changes (at most
/// `timeout`) until it has rows queued (for `EMIT CHANGES`: `count` of
/// them, or all for `None`), then queues whatever else has come.
async fn wait_for_rows(
    vars: &mut HashMap<String, String>,
    name: &str,
    count: Option<usize>,
    timeout: Option<Duration>,
) -> Result<()> {
    let taken = with_session(vars, |s| {
        let cursor = s.cursors.get_mut(name)?;
        let feed = cursor.feed.as_ref()?;
        let wanted = match feed.form {
            Form::EmitChanges => count.unwrap_or(usize::MAX),
            Form::Subscribe { .. } => 1,
        };
        let queued: usize = cursor.rows.iter().map(RecordBatch::num_rows).sum();
        if queued >= wanted {
            return None;
        }
        Some((cursor.feed.take()?, cursor.schema.clone(), wanted - queued))
    });
    let Some((mut feed, schema, wanted)) = taken else {
        return Ok(());
    };
    let mut rows = VecDeque::new();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let result = feed.fill(&schema, &mut rows, wanted, deadline).await;
    with_session(vars, |s| {
        if let Some(cursor) = s.cursors.get_mut(name) {
            cursor.rows.extend(rows);
            // A query past its LIMIT has ended: its rows are all queued.
            if result.is_ok() && !feed.ended() {
                cursor.feed = Some(feed);
            }
        }
    });
    result
}

pub fn handle_close(vars: &mut HashMap<String, String>, close: &CloseCursor) -> Result<Output> {
    match close {
        CloseCursor::All => {
            with_session(vars, |s| s.cursors.clear());
            Ok(Output::Command(Tag::new("CLOSE CURSOR ALL")))
        }
        CloseCursor::Specific { name } => {
            let name = cursor_name(name);
            with_session(vars, |s| s.cursors.remove(&name))
                .ok_or(EddyError::UndefinedCursor(name))?;
            Ok(Output::Command(Tag::new("CLOSE CURSOR")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn rows_are_taken_forward_across_batches() {
        let mut rows: VecDeque<_> = [batch(0..3), batch(3..4), batch(4..9)].into();
        assert_eq!(values(&take_rows(&mut rows, Some(2))), vec![0, 1]);
        assert_eq!(values(&take_rows(&mut rows, Some(3))), vec![2, 3, 4]);
        assert_eq!(values(&take_rows(&mut rows, Some(0))), Vec::<i64>::new());
        assert_eq!(values(&take_rows(&mut rows, None)), vec![5, 6, 7, 8]);
        assert!(take_rows(&mut rows, Some(5)).is_empty());
    }

    #[test]
    fn cursors_end_with_their_transaction_unless_held_and_with_the_session() {
        let mut vars = HashMap::new();
        let schema = batch(0..1).schema();
        begin(&mut vars);
        with_session(&mut vars, |s| {
            for (name, hold) in [("plain", false), ("held", true)] {
                let cursor = Cursor {
                    schema: schema.clone(),
                    rows: VecDeque::new(),
                    query: None,
                    hold,
                    feed: None,
                    declared_at: s.tick(),
                };
                s.cursors.insert(name.into(), cursor);
            }
        });
        end_transaction(&mut vars);
        let names: Vec<String> = with_session(&mut vars, |s| s.cursors.keys().cloned().collect());
        assert_eq!(names, vec!["held".to_string()]);
        let id: u64 = vars[SESSION_KEY].parse().unwrap();
        end_session(id);
        assert!(with_session(&mut vars, |s| s.cursors.is_empty()));
        end_session(id);
    }
}
