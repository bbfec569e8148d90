//! ksqlDB's stream-stream joins bounded in time, lowered to SQL's form.
//!
//! `FROM a JOIN b WITHIN (1 SECOND, 10 SECONDS) ON a.id = b.id` is the
//! join `ON a.id = b.id AND b.et BETWEEN a.et - INTERVAL '1 second' AND
//! a.et + INTERVAL '10 seconds'`, `et` being each stream's event time. The
//! dataflow finds the bounds in the condition either way (see the
//! dataflow's `TimeBound`), so a join is bounded whichever syntax said so.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, ObjectName, Query, SetExpr, TableFactor,
    TableWithJoins, Visit, Visitor,
};
use std::ops::ControlFlow;

use crate::ast::{Duration, JoinWithin};
use crate::windows::{interval, parse_expr};
use crate::{Result, SqlError};

/// A join `WITHIN` bounds, for the dataflow to find its grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithinUse {
    /// The streams joined: the one bounded against, then the joined one.
    pub relations: [ObjectName; 2],
    pub grace: Option<Duration>,
}

/// Writes each `WITHIN` of a query into its join's condition.
/// `event_time` names the event-time column of a stream, or says why a
/// relation cannot be joined within a time.
pub fn apply_within(
    query: &mut Query,
    within: &[JoinWithin],
    event_time: &dyn Fn(&ObjectName) -> Result<String>,
) -> Result<Vec<WithinUse>> {
    if within.is_empty() {
        return Ok(Vec::new());
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(invalid("WITHIN in a query with UNION, EXCEPT or INTERSECT"));
    };
    let mut uses = Vec::new();
    for bound in within {
        let (from, join) = nth_join(&mut select.from, bound.join)?;
        let right = stream_of(&join.relation)?;
        let constraint = match &mut join.join_operator {
            JoinOperator::Join(c)
            | JoinOperator::Inner(c)
            | JoinOperator::Left(c)
            | JoinOperator::LeftOuter(c)
            | JoinOperator::Right(c)
            | JoinOperator::RightOuter(c)
            | JoinOperator::FullOuter(c) => c,
            _ => {
                return Err(invalid(
                    "WITHIN bounds an inner, left, right or full outer join",
                ))
            }
        };
        let JoinConstraint::On(on) = constraint else {
            return Err(invalid("WITHIN needs the join's ON condition"));
        };
        let left = bounded_against(&from, on, &right.0)?;
        let (left_time, right_time) = (event_time(&left.1)?, event_time(&right.1)?);
        let condition = parse_expr(&format!(
            "{}.\"{right_time}\" BETWEEN {}.\"{left_time}\" - {} AND {}.\"{left_time}\" + {}",
            right.0,
            left.0,
            interval(bound.before),
            left.0,
            interval(bound.after),
        ))?;
        *on = Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(on.clone()))),
            op: BinaryOperator::And,
            right: Box::new(condition),
        };
        uses.push(WithinUse {
            relations: [left.1, right.1],
            grace: bound.grace,
        });
    }
    Ok(uses)
}

fn invalid(message: impl Into<String>) -> SqlError {
    SqlError::InvalidDefinition(message.into())
}

/// A relation of a FROM clause: the name it goes by, and the stream.
type Named = (String, ObjectName);

/// Join `n` of the FROM clause, counting across its items, with the
/// relations before it.
fn nth_join(
    from: &mut [TableWithJoins],
    n: usize,
) -> Result<(Vec<Named>, &mut datafusion::sql::sqlparser::ast::Join)> {
    let mut before = Vec::new();
    let mut seen = 0;
    for item in from.iter_mut() {
        before.extend(stream_of(&item.relation));
        if n < seen + item.joins.len() {
            for join in &item.joins[..n - seen] {
                before.extend(stream_of(&join.relation));
            }
            return Ok((before, &mut item.joins[n - seen]));
        }
        for join in &item.joins {
            before.extend(stream_of(&join.relation));
        }
        seen += item.joins.len();
    }
    Err(invalid("WITHIN belongs after the relation of a JOIN"))
}

/// The stream a FROM item names, and what it goes by.
fn stream_of(factor: &TableFactor) -> Result<Named> {
    match factor {
        TableFactor::Table { name, alias, .. } => {
            let by = match alias {
                Some(alias) => alias.name.to_string(),
                None => name.0.last().map(ToString::to_string).unwrap_or_default(),
            };
            Ok((by, name.clone()))
        }
        other => Err(invalid(format!(
            "WITHIN joins two streams by name, not {other}"
        ))),
    }
}

/// The relation a join's time is bounded against: the one before it that
/// its ON condition names, or else the first of the FROM clause.
fn bounded_against(before: &[Named], on: &Expr, joined: &str) -> Result<Named> {
    struct Qualifiers(Vec<String>);
    impl Visitor for Qualifiers {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::CompoundIdentifier(parts) = expr {
                if let [qualifier, .., _] = parts.as_slice() {
                    self.0.push(qualifier.to_string());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut named = Qualifiers(Vec::new());
    let _ = on.visit(&mut named);
    let mut candidates = before
        .iter()
        .filter(|(by, _)| by != joined && named.0.iter().any(|q| q.eq_ignore_ascii_case(by)));
    match (candidates.next(), candidates.next()) {
        (Some(one), None) => Ok(one.clone()),
        (Some(_), Some(_)) => Err(invalid(
            "WITHIN after a join whose ON condition names several earlier streams; \
             bound it with a condition on the event times instead",
        )),
        (None, _) => before
            .first()
            .cloned()
            .ok_or_else(|| invalid("WITHIN belongs after the relation of a JOIN")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse_sql;
    use crate::EddyStatement;

    fn apply(sql: &str) -> Result<(String, Vec<WithinUse>)> {
        let mut statements = parse_sql(sql)?;
        let Some(EddyStatement::Query(mut query)) = statements.pop() else {
            panic!("not a query: {sql}");
        };
        let event_time = |name: &ObjectName| match name.to_string().as_str() {
            "t" => Err(invalid("t is a table")),
            _ => Ok("rowtime".to_owned()),
        };
        let uses = apply_within(&mut query.query, &query.clauses.within, &event_time)?;
        Ok((query.query.to_string(), uses))
    }

    #[test]
    fn within_becomes_a_condition_on_event_times() {
        let (sql, uses) = apply(
            "SELECT * FROM a JOIN b WITHIN (1 SECOND, 10 SECONDS) GRACE PERIOD 2 SECONDS \
             ON a.id = b.id EMIT CHANGES",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT * FROM a JOIN b ON (a.id = b.id) AND b.\"rowtime\" BETWEEN \
             a.\"rowtime\" - INTERVAL '1000 milliseconds' AND a.\"rowtime\" + \
             INTERVAL '10000 milliseconds'"
        );
        assert_eq!(uses[0].grace, Some(Duration { millis: 2_000 }));
    }

    #[test]
    fn a_later_join_is_bounded_against_the_stream_its_condition_names() {
        let (sql, uses) = apply(
            "SELECT * FROM a AS x LEFT JOIN b WITHIN 1 MINUTE ON x.id = b.id \
             FULL OUTER JOIN c WITHIN 5 SECONDS ON c.id = b.id",
        )
        .unwrap();
        assert!(
            sql.contains("c.\"rowtime\" BETWEEN b.\"rowtime\" -"),
            "{sql}"
        );
        assert!(
            sql.contains("b.\"rowtime\" BETWEEN x.\"rowtime\" -"),
            "{sql}"
        );
        assert_eq!(uses[0].relations[0].to_string(), "a");
        assert_eq!(uses[1].relations[0].to_string(), "b");
    }

    #[test]
    fn within_is_written_back_where_it_was() {
        for sql in [
            "SELECT * FROM a JOIN b WITHIN (1 SECOND, 10 SECONDS) GRACE PERIOD 2 SECONDS \
             ON a.id = b.id LEFT JOIN c WITHIN 1 HOUR USING (id) EMIT CHANGES",
            "CREATE MATERIALIZED VIEW v AS SELECT a.id FROM a FULL OUTER JOIN b WITHIN \
             5 SECONDS ON a.id = b.id WHERE a.id IN (SELECT id FROM c JOIN d ON c.x = d.x)",
        ] {
            let first = parse_sql(sql).unwrap();
            let again = parse_sql(&first[0].to_string()).unwrap();
            assert_eq!(first, again, "{}", first[0]);
        }
    }

    #[test]
    fn within_needs_two_streams_and_an_on_condition() {
        let error = |sql| apply(sql).unwrap_err().to_string();
        assert!(error("SELECT * FROM a JOIN t WITHIN 1 SECOND ON a.id = t.id").contains("table"));
        assert!(error("SELECT * FROM a JOIN b WITHIN 1 SECOND USING (id)").contains("ON"));
        assert!(
            error("SELECT * FROM a JOIN (SELECT * FROM b) s WITHIN 1 SECOND ON a.id = s.id")
                .contains("by name")
        );
    }
}
