//! Constructs refused before planning because the planner would get them
//! wrong.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Query, SetExpr, SetOperator, SetQuantifier, Statement, Visit, Visitor,
};

use crate::ast::{Emit, QueryClauses};
use crate::{Result, SqlError};

/// Checks the ksqlDB clauses of a query: refuses the ones Eddy parses but
/// does not run yet, and EMIT modes that do not fit. Windows are applied
/// by [`crate::apply_windows`], and a final EMIT is checked against them. A `persistent` query
/// keeps running (CREATE ... AS SELECT, a materialized view); otherwise the
/// query is answered once.
pub fn check_query_clauses(clauses: &QueryClauses, persistent: bool) -> Result<()> {
    match clauses.emit {
        Some(emit @ (Emit::Final | Emit::OnWindowClose)) if !persistent => {
            return Err(SqlError::Unsupported(format!(
                "{emit} in a one-off query; create a materialized view to have each window's \
                 final result as it closes"
            )))
        }
        Some(Emit::Changes) if !persistent => {
            return Err(SqlError::Unsupported(
                "push queries (SELECT ... EMIT CHANGES) together with other statements; send \
                 one alone"
                    .into(),
            ))
        }
        _ => {}
    }
    Ok(())
}

/// Refuses `PARTITION BY` where it has no records to key: it re-keys the
/// stream a `CREATE STREAM ... AS SELECT` writes.
pub fn check_no_partition_by(clauses: &QueryClauses, what: &str) -> Result<()> {
    if clauses.partition_by.is_empty() {
        return Ok(());
    }
    Err(SqlError::InvalidDefinition(format!(
        "PARTITION BY in {what}: it re-keys the records of a stream written by CREATE STREAM \
         ... AS SELECT"
    )))
}

/// Refuses `EXCEPT ALL` and `INTERSECT ALL`: DataFusion plans them as semi
/// and anti joins, which drop the duplicate counts these operators keep.
pub fn check_query_support(statement: &Statement) -> Result<()> {
    struct Finder(Option<&'static str>);

    impl Visitor for Finder {
        type Break = ();

        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(found) = bag_operation(&query.body) {
                self.0 = Some(found);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }

    let mut finder = Finder(None);
    let _ = statement.visit(&mut finder);
    match finder.0 {
        Some(op) => Err(SqlError::Unsupported(op.to_owned())),
        None => Ok(()),
    }
}

fn bag_operation(body: &SetExpr) -> Option<&'static str> {
    match body {
        SetExpr::SetOperation {
            op,
            set_quantifier,
            left,
            right,
        } => {
            let all = matches!(set_quantifier, SetQuantifier::All);
            match op {
                SetOperator::Except | SetOperator::Minus if all => Some("EXCEPT ALL"),
                SetOperator::Intersect if all => Some("INTERSECT ALL"),
                _ => bag_operation(left).or_else(|| bag_operation(right)),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str) -> Result<()> {
        check_query_support(&crate::parser::sql_statement(sql))
    }

    #[test]
    fn bag_except_and_intersect_are_refused() {
        assert!(check("SELECT 1 EXCEPT ALL SELECT 2").is_err());
        assert!(check("SELECT * FROM (SELECT 1 INTERSECT ALL SELECT 1) q").is_err());
        assert!(check("SELECT 1 UNION ALL SELECT 1 EXCEPT SELECT 2").is_ok());
        assert!(check("SELECT 1 INTERSECT SELECT 1").is_ok());
    }
}
