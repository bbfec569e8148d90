//! Windows over event time, in both syntaxes, lowered to one plan.
//!
//! SQL's table functions `TUMBLE(rel, ts, size)` and
//! `HOP(rel, ts, slide, size)` (RisingWave's forms) and ksqlDB's
//! `WINDOW TUMBLING|HOPPING (...)` clause all become the same relation: the
//! rows of `rel`, each with the `window_start` and `window_end` of every
//! window it falls in. A tumbling window is one `date_bin`; a hopping
//! window of `size` sliding by `slide` is a `UNION ALL` of the
//! `ceil(size / slide)` windows a row can be in. A window aggregate groups
//! by both columns, so it is an ordinary aggregate to plan and maintain.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, GroupByExpr, Ident, ObjectName, Query, Select, SelectItem,
    SetExpr, TableAlias, TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::{GenericDialect, PostgreSqlDialect};
use datafusion::sql::sqlparser::parser::Parser;

use crate::ast::{Duration, WindowKind, WindowSpec};
use crate::create_table::normalize;
use crate::parser::unit_millis;
use crate::{Result, SqlError};

/// Most windows a hopping window's row can fall in: `size / slide`.
pub const MAX_WINDOWS_PER_ROW: u64 = 100;

/// The window columns a windowed relation adds.
pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";

/// A window a query applies, for the dataflow to close by the watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowUse {
    /// The name the windowed rows go by, which qualifies their
    /// `window_start` and `window_end`.
    pub alias: String,
    pub relation: ObjectName,
    /// The column windowed by, folded as Postgres folds names.
    pub time_column: String,
    /// A tumbling or hopping window's size; a session window's gap.
    pub size: Duration,
    pub grace: Option<Duration>,
    /// Whether it is a session window: the aggregate over it puts rows in
    /// sessions, and its `window_start` and `window_end` arrive holding
    /// each row's time.
    pub session: bool,
    /// ksqlDB's `RETENTION`: how long a window stays after its start (a
    /// session after its end).
    pub retention: Option<Duration>,
}

/// Applies a query's windows: its `TUMBLE`/`HOP` table functions, and the
/// ksqlDB `window` clause over its one relation. `event_time` names the
/// event-time column of a relation, or says why it has none. Returns the
/// windows applied.
pub fn apply_windows(
    query: &mut Query,
    window: Option<&WindowSpec>,
    event_time: &dyn Fn(&ObjectName) -> Result<String>,
) -> Result<Vec<WindowUse>> {
    let mut functions = TableFunctions {
        error: None,
        uses: Vec::new(),
    };
    let _ = query.visit(&mut functions);
    if let Some(error) = functions.error {
        return Err(error);
    }
    let mut uses = functions.uses;
    if let Some(window) = window {
        uses.push(ksql_window(query, window, event_time)?);
    }
    Ok(uses)
}

/// Makes a one-off query's session windows batch SQL: each row's session
/// is found with window functions over the rows of its key (the GROUP BY
/// columns other than the bounds), ordered by time. A view's sessions are
/// the session aggregate's instead (see `apply_windows`).
pub fn sessions_as_batch(query: &mut Query, uses: &[WindowUse]) -> Result<()> {
    let sessions: Vec<&WindowUse> = uses.iter().filter(|u| u.session).collect();
    if sessions.is_empty() {
        return Ok(());
    }
    let mut batch = BatchSessions {
        sessions,
        error: None,
    };
    let _ = query.visit(&mut batch);
    match batch.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct BatchSessions<'a> {
    sessions: Vec<&'a WindowUse>,
    error: Option<SqlError>,
}

impl VisitorMut for BatchSessions<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        match self.set_expr(&mut query.body) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

impl BatchSessions<'_> {
    /// Rewrites the session windows of each SELECT of a set expression;
    /// the visitor reaches nested queries itself.
    fn set_expr(&self, body: &mut SetExpr) -> Result<()> {
        match body {
            SetExpr::Select(select) => self.select(select),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left)?;
                self.set_expr(right)
            }
            _ => Ok(()),
        }
    }

    fn select(&self, select: &mut Select) -> Result<()> {
        let keys: Vec<Expr> = match &select.group_by {
            GroupByExpr::Expressions(exprs, _) => exprs
                .iter()
                .filter(|e| !is_window_bound(e))
                .cloned()
                .collect(),
            GroupByExpr::All(_) => Vec::new(),
        };
        let factors = select.from.iter_mut().flat_map(|t| {
            std::iter::once(&mut t.relation).chain(t.joins.iter_mut().map(|j| &mut j.relation))
        });
        for factor in factors {
            let TableFactor::Derived {
                subquery,
                alias: Some(alias),
                ..
            } = factor
            else {
                continue;
            };
            // The batch form's own derived tables share the alias.
            let placeholder = matches!(
                subquery.body.as_ref(),
                SetExpr::Select(s) if matches!(s.projection.first(), Some(SelectItem::Wildcard(_)))
            );
            let name = normalize(&alias.name);
            if !placeholder {
                continue;
            }
            if let Some(used) = self.sessions.iter().find(|u| u.alias == name) {
                *subquery = batch_sessions(used, &alias.name, &keys)?;
            }
        }
        Ok(())
    }
}

/// Whether `expr` names a window's `window_start` or `window_end`.
fn is_window_bound(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Identifier(ident) => ident,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(ident) => ident,
            None => return false,
        },
        _ => return false,
    };
    let name = normalize(name);
    name == WINDOW_START || name == WINDOW_END
}

/// The rows of a session window's relation with their sessions' bounds,
/// computed whole.
fn batch_sessions(used: &WindowUse, alias: &Ident, keys: &[Expr]) -> Result<Box<Query>> {
    let time = Ident::new(&used.time_column);
    let gap = interval(used.size);
    let by_key = match keys {
        [] => String::new(),
        keys => format!(
            "PARTITION BY {}",
            keys.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let by_session = match keys {
        [] => "PARTITION BY __eddy_session".to_string(),
        _ => format!("{by_key}, __eddy_session"),
    };
    let relation = &used.relation;
    let sql = format!(
        "SELECT {alias}.* EXCLUDE (__eddy_starts, __eddy_session), \
           min({time}) OVER ({by_session}) AS {WINDOW_START}, \
           max({time}) OVER ({by_session}) AS {WINDOW_END} \
         FROM (SELECT {alias}.*, \
                 sum(__eddy_starts) OVER ({by_key} ORDER BY {time} ROWS UNBOUNDED PRECEDING) \
                   AS __eddy_session \
               FROM (SELECT {alias}.*, \
                       CASE WHEN {time} - lag({time}) OVER ({by_key} ORDER BY {time}) <= {gap} \
                         THEN 0 ELSE 1 END AS __eddy_starts \
                     FROM {relation} AS {alias}) AS {alias}) AS {alias}"
    );
    Ok(Parser::new(&GenericDialect {})
        .try_with_sql(&sql)?
        .parse_query()?)
}

fn invalid(message: impl Into<String>) -> SqlError {
    SqlError::InvalidDefinition(message.into())
}

fn parse_query(sql: &str) -> Result<Box<Query>> {
    Ok(Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)?
        .parse_query()?)
}

pub(crate) fn parse_expr(sql: &str) -> Result<Expr> {
    Ok(Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)?
        .parse_expr()?)
}

pub(crate) fn interval(duration: Duration) -> String {
    format!("INTERVAL '{} milliseconds'", duration.millis)
}

/// The query giving `relation`'s rows with their windows.
fn windowed_rows(relation: &ObjectName, time: &Ident, kind: WindowKind) -> Result<Box<Query>> {
    let start = |back: u64| {
        let bin = match kind {
            WindowKind::Tumbling { size } => format!("date_bin({}, {time})", interval(size)),
            WindowKind::Hopping { advance, .. } => {
                format!("date_bin({}, {time})", interval(advance))
            }
            WindowKind::Session { .. } => time.to_string(),
        };
        match back {
            0 => bin,
            back => format!("{bin} - {}", interval(Duration { millis: back })),
        }
    };
    let select = |back: u64, size: Duration, filter: bool| {
        let start = start(back);
        let mut sql = format!(
            "SELECT *, {start} AS {WINDOW_START}, {start} + {} AS {WINDOW_END} FROM {relation}",
            interval(size)
        );
        if filter {
            sql.push_str(&format!(" WHERE {start} + {} > {time}", interval(size)));
        }
        sql
    };
    let sql = match kind {
        WindowKind::Tumbling { size } => select(0, size, false),
        WindowKind::Hopping { size, advance } => {
            if advance.millis == 0 || advance > size {
                return Err(invalid(format!(
                    "a hopping window advances by more than nothing and at most its size, \
                     not {advance} for a size of {size}"
                )));
            }
            let windows = size.millis.div_ceil(advance.millis);
            if windows > MAX_WINDOWS_PER_ROW {
                return Err(SqlError::Unsupported(format!(
                    "a hopping window of {size} advancing by {advance}: each row would fall in \
                     {windows} windows, and at most {MAX_WINDOWS_PER_ROW} are supported"
                )));
            }
            // The last window a row falls in may end before it when the
            // size is not a multiple of the advance.
            let uneven = size.millis % advance.millis != 0;
            (0..windows)
                .map(|i| select(i * advance.millis, size, uneven && i + 1 == windows))
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        }
        WindowKind::Session { .. } => {
            format!("SELECT *, {time} AS {WINDOW_START}, {time} AS {WINDOW_END} FROM {relation}")
        }
    };
    parse_query(&sql)
}

fn check_size(size: Duration) -> Result<()> {
    if size.millis == 0 {
        return Err(invalid("a window's size must be more than nothing"));
    }
    Ok(())
}

/// Replaces `TUMBLE(...)` and `HOP(...)` in FROM clauses with the
/// windowed rows they stand for.
struct TableFunctions {
    error: Option<SqlError>,
    uses: Vec<WindowUse>,
}

impl VisitorMut for TableFunctions {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        match table_function(factor) {
            Ok(used) => {
                self.uses.extend(used);
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

fn table_function(factor: &mut TableFactor) -> Result<Option<WindowUse>> {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = factor
    else {
        return Ok(None);
    };
    let function = match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(|i| i.value.to_ascii_lowercase())
            .unwrap_or_default(),
        _ => return Ok(None),
    };
    let (arity, usage) = match function.as_str() {
        "tumble" => (3, "TUMBLE(relation, time_column, INTERVAL 'size')"),
        "hop" => (
            4,
            "HOP(relation, time_column, INTERVAL 'slide', INTERVAL 'size')",
        ),
        "session" => (3, "SESSION(relation, time_column, INTERVAL 'gap')"),
        _ => return Ok(None),
    };
    let session = function == "session";
    let function = function.to_uppercase();
    let exprs: Vec<&Expr> = args
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    if exprs.len() != arity || args.args.len() != arity {
        return Err(invalid(format!("{function} takes {usage}")));
    }
    let relation = match exprs[0] {
        Expr::Identifier(ident) => ObjectName::from(vec![ident.clone()]),
        Expr::CompoundIdentifier(parts) => ObjectName::from(parts.clone()),
        other => {
            return Err(invalid(format!(
                "{function} windows a relation named by its first argument, not {other}; \
                 it takes {usage}"
            )))
        }
    };
    let Expr::Identifier(time) = exprs[1] else {
        return Err(invalid(format!(
            "{function}'s second argument is the time column, not {}; it takes {usage}",
            exprs[1]
        )));
    };
    let (kind, size) = if session {
        let gap = interval_duration(exprs[2])?;
        check_size(gap)?;
        (WindowKind::Session { gap }, gap)
    } else if arity == 3 {
        let size = interval_duration(exprs[2])?;
        check_size(size)?;
        (WindowKind::Tumbling { size }, size)
    } else {
        let advance = interval_duration(exprs[2])?;
        let size = interval_duration(exprs[3])?;
        check_size(size)?;
        (WindowKind::Hopping { size, advance }, size)
    };
    let time = time.clone();
    let (windowed, alias) = windowed_factor(&relation, alias.take(), &time, kind)?;
    *factor = windowed;
    Ok(Some(WindowUse {
        alias,
        relation,
        time_column: normalize(&time),
        size,
        grace: None,
        session,
        retention: None,
    }))
}

/// The derived table of `relation`'s windowed rows, named as `relation`
/// unless it has an alias; and that name, folded.
fn windowed_factor(
    relation: &ObjectName,
    alias: Option<TableAlias>,
    time: &Ident,
    kind: WindowKind,
) -> Result<(TableFactor, String)> {
    let alias = alias.unwrap_or_else(|| TableAlias {
        explicit: true,
        name: relation
            .0
            .last()
            .and_then(|p| p.as_ident())
            .cloned()
            .unwrap_or_else(|| Ident::new("w")),
        columns: Vec::new(),
        at: None,
    });
    let name = normalize(&alias.name);
    let factor = TableFactor::Derived {
        lateral: false,
        subquery: windowed_rows(relation, time, kind)?,
        alias: Some(alias),
        sample: None,
    };
    Ok((factor, name))
}

/// A window bound as ksqlDB has it: epoch milliseconds.
fn epoch_millis(column: &str) -> Result<Expr> {
    parse_expr(&format!(
        "CAST(date_part('epoch', {column}) * 1000 AS BIGINT)"
    ))
}

/// A length of time written as an interval: `INTERVAL '1' MINUTE`,
/// `INTERVAL '90 seconds'`.
pub(crate) fn interval_duration(expr: &Expr) -> Result<Duration> {
    let not_a_length = || {
        invalid(format!(
            "{expr} is not a length of time; write it as INTERVAL '10' SECOND or INTERVAL '10 seconds'"
        ))
    };
    let Expr::Interval(interval) = expr else {
        return Err(not_a_length());
    };
    let text = match interval.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.clone(),
            _ => return Err(not_a_length()),
        },
        _ => return Err(not_a_length()),
    };
    let text = match &interval.leading_field {
        Some(field) => format!("{text} {field}"),
        None => text,
    };
    let mut words = text.split_whitespace();
    let (Some(number), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(not_a_length());
    };
    let number: u64 = number.parse().map_err(|_| not_a_length())?;
    let unit = unit_millis(unit).ok_or_else(not_a_length)?;
    let millis = number.checked_mul(unit).ok_or_else(not_a_length)?;
    Ok(Duration { millis })
}

/// ksqlDB's `WINDOW` clause: the query's one relation is replaced with its
/// windowed rows, the aggregate also groups by the window, and
/// `WINDOWSTART`/`WINDOWEND` are the window's bounds in epoch milliseconds
/// (ksqlDB's BIGINT columns), added to the select list when it leaves them
/// out, as a windowed table's key holds them.
fn ksql_window(
    query: &mut Query,
    window: &WindowSpec,
    event_time: &dyn Fn(&ObjectName) -> Result<String>,
) -> Result<WindowUse> {
    let size = match window.kind {
        WindowKind::Tumbling { size }
        | WindowKind::Hopping { size, .. }
        | WindowKind::Session { gap: size } => size,
    };
    check_size(size)?;
    if let Some(retention) = window.retention {
        let least = Duration {
            millis: size.millis + window.grace.map_or(0, |g| g.millis),
        };
        if retention < least {
            return Err(invalid(format!(
                "RETENTION {retention} is shorter than the window's size and grace period \
                 ({least}); a window stays at least until it closes"
            )));
        }
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(invalid("WINDOW belongs to a SELECT ... GROUP BY"));
    };
    let select: &mut Select = select;
    let [from] = select.from.as_mut_slice() else {
        return Err(SqlError::Unsupported(
            "WINDOW over several relations; window one stream".into(),
        ));
    };
    if !from.joins.is_empty() {
        return Err(SqlError::Unsupported(
            "WINDOW over a join; window one stream".into(),
        ));
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = &mut from.relation
    else {
        return Err(SqlError::Unsupported(
            "WINDOW over a subquery or function; window a stream by name".into(),
        ));
    };
    let time = Ident::new(event_time(name)?);
    let relation = name.clone();
    let (windowed, alias) = windowed_factor(&relation, alias.take(), &time, window.kind)?;
    from.relation = windowed;
    let used = WindowUse {
        alias,
        relation,
        time_column: time.value.clone(),
        size,
        grace: window.grace,
        session: matches!(window.kind, WindowKind::Session { .. }),
        retention: window.retention,
    };
    match &mut select.group_by {
        GroupByExpr::Expressions(exprs, _) if !exprs.is_empty() => {
            exprs.push(Expr::Identifier(Ident::new(WINDOW_START)));
            exprs.push(Expr::Identifier(Ident::new(WINDOW_END)));
        }
        _ => {
            return Err(invalid(
                "a windowed query aggregates: add GROUP BY (ksqlDB windows group records)",
            ))
        }
    }
    // The bounds named alone keep their names; those not selected are added.
    const BOUNDS: [(&str, &str); 2] = [("windowstart", WINDOW_START), ("windowend", WINDOW_END)];
    let mut selected = [false, false];
    for item in &mut select.projection {
        let SelectItem::UnnamedExpr(Expr::Identifier(ident)) = item else {
            continue;
        };
        let Some(n) = BOUNDS
            .iter()
            .position(|(name, _)| ident.quote_style.is_none() && normalize(ident) == *name)
        else {
            continue;
        };
        selected[n] = true;
        *item = SelectItem::ExprWithAlias {
            expr: epoch_millis(BOUNDS[n].1)?,
            alias: Ident::new(BOUNDS[n].0),
        };
    }
    for (n, (name, column)) in BOUNDS.into_iter().enumerate() {
        if !selected[n] {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: epoch_millis(column)?,
                alias: Ident::new(name),
            });
        }
    }
    let mut bounds = WindowBounds { error: None };
    let _ = select.visit(&mut bounds);
    let _ = query.order_by.visit(&mut bounds);
    match bounds.error {
        Some(e) => Err(e),
        None => Ok(used),
    }
}

/// Replaces `WINDOWSTART` and `WINDOWEND` in expressions with the bounds.
struct WindowBounds {
    error: Option<SqlError>,
}

impl VisitorMut for WindowBounds {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Identifier(ident) = expr else {
            return ControlFlow::Continue(());
        };
        if ident.quote_style.is_some() {
            return ControlFlow::Continue(());
        }
        let column = match normalize(ident).as_str() {
            "windowstart" => WINDOW_START,
            "windowend" => WINDOW_END,
            _ => return ControlFlow::Continue(()),
        };
        match epoch_millis(column) {
            Ok(bound) => {
                *expr = bound;
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::EddyStatement;

    /// The query of `sql` with its windows applied; every relation's event
    /// time is `rowtime`, except `local`, which has none.
    fn windowed(sql: &str) -> Result<String> {
        let (mut query, window) = match crate::parse_sql(sql)?.pop() {
            Some(EddyStatement::Query(q)) => (q.query, q.clauses.window),
            Some(EddyStatement::Sql(s)) => match *s {
                datafusion::sql::sqlparser::ast::Statement::Query(q) => (q, None),
                other => panic!("not a query: {other}"),
            },
            other => panic!("not a query: {other:?}"),
        };
        let event_time = |name: &ObjectName| match name.to_string().as_str() {
            "local" => Err(invalid("local has no event time")),
            _ => Ok("rowtime".to_string()),
        };
        apply_windows(&mut query, window.as_ref(), &event_time)?;
        Ok(query.to_string())
    }

    #[test]
    fn tumble_is_one_bin_per_row() {
        let sql = windowed(
            "SELECT window_start, count(*) FROM TUMBLE(bids, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT window_start, count(*) FROM (SELECT *, date_bin(INTERVAL '60000 milliseconds', ts) \
             AS window_start, date_bin(INTERVAL '60000 milliseconds', ts) + INTERVAL '60000 milliseconds' \
             AS window_end FROM bids) AS bids GROUP BY window_start"
        );
    }

    #[test]
    fn hop_is_a_union_of_the_windows_a_row_is_in() {
        let even = windowed(
            "SELECT count(*) FROM HOP(bids, ts, INTERVAL '1 minute', INTERVAL '3 minutes') AS h GROUP BY h.window_end",
        )
        .unwrap();
        assert_eq!(even.matches("UNION ALL").count(), 2, "{even}");
        assert!(!even.contains("WHERE"), "{even}");
        assert!(even.contains("AS h GROUP BY"), "{even}");
        // 10 s advancing by 4 s: a row is in two or three windows.
        let uneven = windowed(
            "SELECT count(*) FROM HOP(bids, ts, INTERVAL '4' SECOND, INTERVAL '10' SECOND) GROUP BY window_start",
        )
        .unwrap();
        assert_eq!(uneven.matches("UNION ALL").count(), 2, "{uneven}");
        assert_eq!(uneven.matches("WHERE").count(), 1, "{uneven}");
    }

    #[test]
    fn ksql_windows_group_by_the_window_and_show_its_bounds() {
        let sql = windowed(
            "SELECT k, WINDOWSTART, count(*) FROM bids WINDOW HOPPING (SIZE 2 MINUTES, ADVANCE BY 1 MINUTE) \
             GROUP BY k HAVING WINDOWEND > 0",
        )
        .unwrap();
        assert!(sql.contains("FROM bids UNION ALL SELECT"), "{sql}");
        assert!(
            sql.contains("date_bin(INTERVAL '60000 milliseconds', rowtime)"),
            "{sql}"
        );
        assert!(
            sql.contains("GROUP BY k, window_start, window_end"),
            "{sql}"
        );
        assert!(
            sql.starts_with(
                "SELECT k, CAST(date_part('epoch', window_start) * 1000 AS BIGINT) AS windowstart, count(*), \
                 CAST(date_part('epoch', window_end) * 1000 AS BIGINT) AS windowend FROM"
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with("HAVING CAST(date_part('epoch', window_end) * 1000 AS BIGINT) > 0"),
            "{sql}"
        );
    }

    #[test]
    fn sessions_hand_each_row_its_time_as_both_bounds() {
        let sql = windowed("SELECT k, count(*) FROM bids WINDOW SESSION (30 SECONDS) GROUP BY k")
            .unwrap();
        assert!(
            sql.contains(
                "FROM (SELECT *, rowtime AS window_start, rowtime AS window_end FROM bids) AS bids \
                 GROUP BY k, window_start, window_end"
            ),
            "{sql}"
        );
        let sql = windowed(
            "SELECT k, window_start, count(*) FROM SESSION(bids, ts, INTERVAL '1' MINUTE) AS s \
             GROUP BY k, window_start, window_end",
        )
        .unwrap();
        assert!(
            sql.contains("(SELECT *, ts AS window_start, ts AS window_end FROM bids) AS s"),
            "{sql}"
        );
    }

    #[test]
    fn bad_windows_are_refused_with_their_reason() {
        for (sql, reason) in [
            (
                "SELECT count(*) FROM TUMBLE(bids, ts, INTERVAL '0' SECOND) GROUP BY window_start",
                "more than nothing",
            ),
            ("SELECT count(*) FROM TUMBLE(bids, ts) GROUP BY window_start", "TUMBLE takes"),
            (
                "SELECT count(*) FROM TUMBLE(bids, ts, 5) GROUP BY window_start",
                "not a length of time",
            ),
            (
                "SELECT count(*) FROM TUMBLE(bids, ts + 1, INTERVAL '1' SECOND) GROUP BY window_start",
                "time column",
            ),
            (
                "SELECT count(*) FROM HOP(bids, ts, INTERVAL '2' SECOND, INTERVAL '1' SECOND) GROUP BY window_start",
                "at most its size",
            ),
            (
                "SELECT count(*) FROM HOP(bids, ts, INTERVAL '1' SECOND, INTERVAL '1' HOUR) GROUP BY window_start",
                "3600 windows",
            ),
            (
                "SELECT count(*) FROM SESSION(bids, ts) GROUP BY window_start",
                "SESSION takes",
            ),
            ("SELECT count(*) FROM bids WINDOW TUMBLING (SIZE 1 SECOND)", "GROUP BY"),
            (
                "SELECT k, count(*) FROM local WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k",
                "no event time",
            ),
            (
                "SELECT k, count(*) FROM bids WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS, RETENTION 1 MINUTE) GROUP BY k",
                "shorter than the window's size and grace period",
            ),
            (
                "SELECT k, count(*) FROM bids WINDOW SESSION (0 SECONDS) GROUP BY k",
                "more than nothing",
            ),
            (
                "SELECT k, count(*) FROM bids JOIN local ON true WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k",
                "over a join",
            ),
        ] {
            match windowed(sql) {
                Err(e) => assert!(e.to_string().contains(reason), "{sql}: {e}"),
                Ok(rewritten) => panic!("{sql} was accepted as {rewritten}"),
            }
        }
    }
}
