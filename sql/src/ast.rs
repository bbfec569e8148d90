//! Eddy's statements: ksqlDB's statements and clauses as their own types,
//! beside sqlparser's [`Statement`] for everything Postgres has.

use std::fmt;

use datafusion::sql::sqlparser::ast::{
    ColumnDef, CreateView, Expr, Ident, ObjectName, ObjectType, Query, SqlOption, Statement,
    TableConstraint,
};

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum EddyStatement {
    /// A statement of Postgres's SQL, as sqlparser parses it.
    Sql(Box<Statement>),
    /// Roles and privileges: `CREATE ROLE`, `GRANT`, `SET ROLE`, ...
    Access(Box<crate::access::AccessStatement>),
    /// A query with ksqlDB clauses (`WINDOW`, `EMIT CHANGES`, ...).
    Query(Box<EddyQuery>),
    /// `CREATE [OR REPLACE] STREAM|TABLE`, in ksqlDB's or Postgres's form.
    CreateRelation(Box<CreateRelation>),
    /// `CREATE [MATERIALIZED] VIEW`, with any ksqlDB clauses of its query.
    CreateView {
        create: Box<CreateView>,
        clauses: QueryClauses,
    },
    /// `DROP STREAM|TABLE|MATERIALIZED VIEW ... [DELETE TOPIC]`.
    Drop(DropRelation),
    /// `TERMINATE query_id`, or `TERMINATE ALL` (`None`).
    Terminate(Option<Ident>),
    /// `FLUSH`: wait until every acknowledged write is in every view.
    Flush,
    /// `SHOW|LIST STREAMS|TABLES|QUERIES|TOPICS [EXTENDED]`.
    Show { listing: Listing, extended: bool },
    /// `DESCRIBE [EXTENDED] name`.
    Describe { name: ObjectName, extended: bool },
    /// `DESCRIBE FUNCTION name`.
    DescribeFunction(Ident),
    /// `EXPLAIN ANALYZE name`: a running view's or query's operators with
    /// their figures.
    ExplainAnalyze(ObjectName),
    /// `MOVE [direction] [FROM | IN] cursor`: a `FETCH` (held here) that
    /// returns no rows.
    Move(Box<Statement>),
    /// `SUBSCRIBE [TO] relation | (query) [WITH (SNAPSHOT = b, PROGRESS = b)]`.
    Subscribe(Box<Subscribe>),
    /// `COPY (SUBSCRIBE ...) TO STDOUT`: the subscription's rows as COPY
    /// data, streamed.
    CopySubscribe(Box<Subscribe>),
    /// `DECLARE name [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR SUBSCRIBE ...`.
    DeclareSubscribe {
        name: Ident,
        hold: bool,
        subscribe: Box<Subscribe>,
    },
    /// `DECLARE name [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR SELECT ...
    /// EMIT CHANGES [LIMIT n]`.
    DeclareEmitChanges {
        name: Ident,
        hold: bool,
        query: Box<EddyQuery>,
    },
    /// `PRINT topic ...`, a push query of a topic's records.
    Print(Print),
    /// `INSERT INTO stream SELECT ... EMIT CHANGES` (or any clause of a
    /// ksqlDB query): a persistent query appending to an existing stream.
    /// Without clauses it is an `Sql` insert, persistent when it reads a
    /// Kafka relation.
    InsertQuery {
        target: ObjectName,
        query: Box<EddyQuery>,
    },
    /// `FETCH ... WITH (timeout = '1s')`: waits at most that long for rows
    /// of a subscription.
    FetchWithTimeout {
        fetch: Box<Statement>,
        timeout: std::time::Duration,
    },
}

/// A `SUBSCRIBE`, as Materialize takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    /// The query, or `SELECT * FROM relation`.
    pub query: Box<Query>,
    /// Whether the current contents come first (the default).
    pub snapshot: bool,
    /// Whether progress rows say when each epoch is complete.
    pub progress: bool,
}

/// ksqlDB's `PRINT topic [FROM BEGINNING] [INTERVAL | SAMPLE n] [LIMIT n]`:
/// a topic's records as they arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Print {
    /// The topic, as written (topic names keep their case).
    pub topic: String,
    /// From the first record kept, else from the next one produced.
    pub from_beginning: bool,
    /// Every `interval`-th record (1: each).
    pub interval: u64,
    /// Records to print before it ends.
    pub limit: Option<u64>,
}

impl fmt::Display for Print {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PRINT '{}'", self.topic.replace('\'', "''"))?;
        if self.from_beginning {
            write!(f, " FROM BEGINNING")?;
        }
        if self.interval > 1 {
            write!(f, " INTERVAL {}", self.interval)?;
        }
        if let Some(limit) = self.limit {
            write!(f, " LIMIT {limit}")?;
        }
        Ok(())
    }
}

/// What `SHOW` or `LIST` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Streams,
    Tables,
    Queries,
    Topics,
    Functions,
}

impl Listing {
    pub fn as_str(self) -> &'static str {
        match self {
            Listing::Streams => "STREAMS",
            Listing::Tables => "TABLES",
            Listing::Queries => "QUERIES",
            Listing::Topics => "TOPICS",
            Listing::Functions => "FUNCTIONS",
        }
    }
}

/// A query and the ksqlDB clauses written with it.
#[derive(Debug, Clone, PartialEq)]
pub struct EddyQuery {
    pub query: Box<Query>,
    pub clauses: QueryClauses,
}

/// The ksqlDB clauses of a query, which Postgres's grammar does not have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryClauses {
    /// `WINDOW TUMBLING|HOPPING|SESSION (...)`.
    pub window: Option<WindowSpec>,
    /// `JOIN ... WITHIN ...`, one per bounded join.
    pub within: Vec<JoinWithin>,
    /// `PARTITION BY expr, ...`: the key of a stream a query writes.
    pub partition_by: Vec<Expr>,
    /// `EMIT CHANGES | FINAL`, or SQL's `EMIT ON WINDOW CLOSE`.
    pub emit: Option<Emit>,
}

impl QueryClauses {
    pub fn is_empty(&self) -> bool {
        *self == QueryClauses::default()
    }
}

/// A length of time, written as ksqlDB writes it (`10 SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration {
    pub millis: u64,
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 5] = [
            (86_400_000, "DAY"),
            (3_600_000, "HOUR"),
            (60_000, "MINUTE"),
            (1_000, "SECOND"),
            (1, "MILLISECOND"),
        ];
        let (unit, name) = UNITS
            .into_iter()
            .find(|(unit, _)| self.millis.is_multiple_of(*unit) && self.millis != 0)
            .unwrap_or((1, "MILLISECOND"));
        let count = self.millis / unit;
        let plural = if count == 1 { "" } else { "S" };
        write!(f, "{count} {name}{plural}")
    }
}

/// The shape of a ksqlDB window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: Duration },
    Hopping { size: Duration, advance: Duration },
    Session { gap: Duration },
}

/// `WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 1 HOUR, GRACE PERIOD 10 SECONDS)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub retention: Option<Duration>,
    pub grace: Option<Duration>,
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            WindowKind::Tumbling { size } => write!(f, "WINDOW TUMBLING (SIZE {size}")?,
            WindowKind::Hopping { size, advance } => {
                write!(f, "WINDOW HOPPING (SIZE {size}, ADVANCE BY {advance}")?
            }
            WindowKind::Session { gap } => write!(f, "WINDOW SESSION ({gap}")?,
        }
        if let Some(retention) = self.retention {
            write!(f, ", RETENTION {retention}")?;
        }
        if let Some(grace) = self.grace {
            write!(f, ", GRACE PERIOD {grace}")?;
        }
        write!(f, ")")
    }
}

/// `JOIN ... WITHIN 10 SECONDS` or `WITHIN (1 SECOND, 10 SECONDS)`, with
/// an optional `GRACE PERIOD`: a stream-stream join bounded in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWithin {
    /// Which join of the query's FROM clause, counting from 0.
    pub join: usize,
    /// How far the right record may be before the left one.
    pub before: Duration,
    /// How far the right record may be after the left one.
    pub after: Duration,
    pub grace: Option<Duration>,
}

/// When a query emits its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// `EMIT CHANGES`: every change to a result, as it happens.
    Changes,
    /// `EMIT FINAL`: one result per window, once the window closes.
    Final,
    /// `EMIT ON WINDOW CLOSE`: SQL's spelling of `EMIT FINAL`.
    OnWindowClose,
}

impl fmt::Display for Emit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Emit::Changes => "EMIT CHANGES",
            Emit::Final => "EMIT FINAL",
            Emit::OnWindowClose => "EMIT ON WINDOW CLOSE",
        })
    }
}

/// Whether a relation is a stream (append-only records) or a table
/// (the latest row per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Stream,
    Table,
}

/// `WATERMARK FOR col AS expr`: the event-time column and how far the
/// watermark trails it.
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    pub column: Ident,
    pub expr: Expr,
}

/// `CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name [(columns)]
/// [WITH (options)] [AS query]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRelation {
    pub kind: RelationKind,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub name: ObjectName,
    pub columns: Vec<ColumnDef>,
    /// Columns marked `KEY` (ksqlDB's stream key), by name.
    pub key_columns: Vec<Ident>,
    pub constraints: Vec<TableConstraint>,
    pub watermark: Option<Watermark>,
    /// `WITH (...)`; dotted names (`fields.id.kind`) are joined into one.
    pub options: Vec<SqlOption>,
    pub query: Option<EddyQuery>,
}

/// `DROP <object type> [IF EXISTS] names [CASCADE] [DELETE TOPIC]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DropRelation {
    pub object_type: ObjectType,
    pub if_exists: bool,
    pub names: Vec<ObjectName>,
    pub cascade: bool,
    pub delete_topic: bool,
}

fn comma_separated<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl fmt::Display for QueryClauses {
    /// The clauses in the order Eddy's parser reads back after a query.
    /// `WITHIN` is written where its join is, so it is not shown here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(window) = &self.window {
            write!(f, " {window}")?;
        }
        if !self.partition_by.is_empty() {
            f.write_str(" PARTITION BY ")?;
            comma_separated(f, &self.partition_by)?;
        }
        if let Some(emit) = self.emit {
            write!(f, " {emit}")?;
        }
        Ok(())
    }
}

impl fmt::Display for EddyQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&query_with_clauses(&self.query, &self.clauses))
    }
}

impl fmt::Display for JoinWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WITHIN ({}, {})", self.before, self.after)?;
        if let Some(grace) = self.grace {
            write!(f, " GRACE PERIOD {grace}")?;
        }
        Ok(())
    }
}

/// A query with its ksqlDB clauses, as Eddy's parser reads it back: each
/// `WITHIN` before its join's `ON` or `USING`, the others after the query.
pub fn query_with_clauses(query: &Query, clauses: &QueryClauses) -> String {
    format!(
        "{}{clauses}",
        splice_within(&query.to_string(), &clauses.within)
    )
}

/// `text` with each `WITHIN` written before its join's `ON` or `USING`,
/// joins counted as the parser counts them.
fn splice_within(text: &str, within: &[JoinWithin]) -> String {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

    let tokens = match Tokenizer::new(&PostgreSqlDialect {}, text).tokenize() {
        Ok(tokens) if !within.is_empty() => tokens,
        _ => return text.to_owned(),
    };
    let is_word = |token: &Token, word: &str| matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    let mut out = String::with_capacity(text.len() + 64);
    let (mut depth, mut joins, mut pending) = (0usize, 0usize, None);
    for token in &tokens {
        match token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            t if is_word(t, "JOIN") => {
                pending = within.iter().find(|w| w.join == joins);
                joins += 1;
            }
            t if is_word(t, "ON") || is_word(t, "USING") => {
                if let Some(bound) = pending.take() {
                    out.push_str(&format!("{bound} "));
                }
            }
            _ => {}
        }
        out.push_str(&token.to_string());
    }
    out
}

impl fmt::Display for EddyStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EddyStatement::Sql(statement) => write!(f, "{statement}"),
            EddyStatement::Access(access) => write!(f, "{access}"),
            EddyStatement::Query(query) => write!(f, "{query}"),
            EddyStatement::CreateRelation(create) => write!(f, "{create}"),
            EddyStatement::CreateView { create, clauses } => {
                write!(
                    f,
                    "{}{clauses}",
                    splice_within(&create.to_string(), &clauses.within)
                )
            }
            EddyStatement::Drop(drop) => {
                write!(f, "DROP {} ", drop.object_type)?;
                if drop.if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                comma_separated(f, &drop.names)?;
                if drop.cascade {
                    f.write_str(" CASCADE")?;
                }
                if drop.delete_topic {
                    f.write_str(" DELETE TOPIC")?;
                }
                Ok(())
            }
            EddyStatement::Terminate(Some(id)) => write!(f, "TERMINATE {id}"),
            EddyStatement::Terminate(None) => f.write_str("TERMINATE ALL"),
            EddyStatement::Flush => f.write_str("FLUSH"),
            EddyStatement::Show { listing, extended } => {
                write!(f, "SHOW {}", listing.as_str())?;
                if *extended {
                    f.write_str(" EXTENDED")?;
                }
                Ok(())
            }
            EddyStatement::DescribeFunction(name) => write!(f, "DESCRIBE FUNCTION {name}"),
            EddyStatement::ExplainAnalyze(name) => write!(f, "EXPLAIN ANALYZE {name}"),
            EddyStatement::Describe { name, extended } => {
                f.write_str("DESCRIBE ")?;
                if *extended {
                    f.write_str("EXTENDED ")?;
                }
                write!(f, "{name}")
            }
            EddyStatement::Move(fetch) => {
                let fetch = fetch.to_string();
                write!(f, "MOVE{}", fetch.strip_prefix("FETCH").unwrap_or(&fetch))
            }
            EddyStatement::Subscribe(subscribe) => write!(f, "{subscribe}"),
            EddyStatement::CopySubscribe(subscribe) => write!(f, "COPY ({subscribe}) TO STDOUT"),
            EddyStatement::DeclareSubscribe {
                name,
                hold,
                subscribe,
            } => {
                let hold = if *hold { "WITH HOLD" } else { "WITHOUT HOLD" };
                write!(f, "DECLARE {name} CURSOR {hold} FOR {subscribe}")
            }
            EddyStatement::DeclareEmitChanges { name, hold, query } => {
                let hold = if *hold { "WITH HOLD" } else { "WITHOUT HOLD" };
                write!(f, "DECLARE {name} CURSOR {hold} FOR {query}")
            }
            EddyStatement::FetchWithTimeout { fetch, timeout } => {
                write!(f, "{fetch} WITH (timeout = '{}ms')", timeout.as_millis())
            }
            EddyStatement::InsertQuery { target, query } => {
                write!(f, "INSERT INTO {target} {query}")
            }
            EddyStatement::Print(print) => write!(f, "{print}"),
        }
    }
}

impl fmt::Display for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SUBSCRIBE ({}) WITH (SNAPSHOT = {}, PROGRESS = {})",
            self.query, self.snapshot, self.progress
        )
    }
}

impl fmt::Display for CreateRelation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CREATE ")?;
        if self.or_replace {
            f.write_str("OR REPLACE ")?;
        }
        f.write_str(match self.kind {
            RelationKind::Stream => "STREAM ",
            RelationKind::Table => "TABLE ",
        })?;
        if self.if_not_exists {
            f.write_str("IF NOT EXISTS ")?;
        }
        write!(f, "{}", self.name)?;
        let elements = self.columns.len() + self.constraints.len();
        if elements > 0 || self.watermark.is_some() {
            f.write_str(" (")?;
            for (i, column) in self.columns.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{column}")?;
                if self.key_columns.contains(&column.name) {
                    f.write_str(" KEY")?;
                }
            }
            for (i, constraint) in self.constraints.iter().enumerate() {
                if i + self.columns.len() > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{constraint}")?;
            }
            if let Some(watermark) = &self.watermark {
                if elements > 0 {
                    f.write_str(", ")?;
                }
                write!(
                    f,
                    "WATERMARK FOR {} AS {}",
                    watermark.column, watermark.expr
                )?;
            }
            f.write_str(")")?;
        }
        if !self.options.is_empty() {
            f.write_str(" WITH (")?;
            comma_separated(f, &self.options)?;
            f.write_str(")")?;
        }
        if let Some(query) = &self.query {
            write!(f, " AS {query}")?;
        }
        Ok(())
    }
}
