//! Plain views in queries: each reference to one becomes its query, as a
//! derived table under the view's name, before planning (Postgres's
//! rewriter does the same). Views over views expand in turn.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    FromTable, Ident, Query, Statement, TableAlias, TableAliasColumnDef, TableFactor, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use eddy_catalog::{Catalog, PlainViewDef};

use crate::error::{EddyError, Result};

/// How deep views over views may nest.
const MAX_DEPTH: usize = 32;

/// Expands the plain views `statement` reads; returns their ids. A view
/// cannot be written: INSERT, UPDATE and DELETE on one are refused.
pub fn expand(catalog: &Catalog, statement: &mut Statement) -> Result<Vec<u64>> {
    if !catalog.has_plain_views() {
        return Ok(vec![]);
    }
    if let Some((verb, target)) = written_relation(statement) {
        if catalog.plain_view(&target).is_some() {
            return Err(EddyError::Unsupported(format!(
                "{verb} view \"{target}\" (Eddy's views are not updatable: write to the tables it reads)"
            )));
        }
    }
    let mut expander = Expander {
        catalog,
        depth: 0,
        shadowed: vec![],
        expanded: vec![],
        error: None,
    };
    let _ = statement.visit(&mut expander);
    match expander.error {
        Some(error) => Err(error),
        None => Ok(expander.expanded),
    }
}

/// The relation an INSERT, UPDATE or DELETE writes, with its verb.
fn written_relation(statement: &Statement) -> Option<(&'static str, String)> {
    let name = |factor: &TableFactor| match factor {
        TableFactor::Table { name, .. } => eddy_sql::create_table::object_name(name).ok(),
        _ => None,
    };
    match statement {
        Statement::Insert(insert) => Some(("INSERT INTO", eddy_sql::insert_target(insert)?)),
        Statement::Update(update) => Some(("UPDATE", name(&update.table.relation)?)),
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            Some(("DELETE FROM", name(&from.first()?.relation)?))
        }
        _ => None,
    }
}

struct Expander<'a> {
    catalog: &'a Catalog,
    depth: usize,
    /// Names of common table expressions in scope, which hide views.
    shadowed: Vec<Vec<String>>,
    expanded: Vec<u64>,
    error: Option<EddyError>,
}

impl Expander<'_> {
    fn view_query(&mut self, view: &PlainViewDef) -> Result<Query> {
        if self.depth >= MAX_DEPTH {
            return Err(EddyError::Unsupported(format!(
                "views nested more than {MAX_DEPTH} deep (at view \"{}\")",
                view.name
            )));
        }
        let mut query = *Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&view.sql)
            .and_then(|mut p| p.parse_query())
            .map_err(|e| EddyError::Internal(format!("view {}: {e}", view.name)))?;
        let mut inner = Expander {
            catalog: self.catalog,
            depth: self.depth + 1,
            shadowed: vec![],
            expanded: vec![],
            error: None,
        };
        let _ = query.visit(&mut inner);
        if let Some(error) = inner.error {
            return Err(error);
        }
        self.expanded.extend(inner.expanded);
        Ok(query)
    }
}

impl VisitorMut for Expander<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let names = query.with.as_ref().map_or_else(Vec::new, |with| {
            with.cte_tables
                .iter()
                .map(|cte| eddy_sql::create_table::normalize(&cte.alias.name))
                .collect()
        });
        self.shadowed.push(names);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &mut Query) -> ControlFlow<()> {
        self.shadowed.pop();
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Ok(view_name) = eddy_sql::create_table::object_name(name) else {
            return ControlFlow::Continue(());
        };
        if name.0.len() == 1 && self.shadowed.iter().flatten().any(|n| *n == view_name) {
            return ControlFlow::Continue(());
        }
        let Some(view) = self.catalog.plain_view(&view_name) else {
            return ControlFlow::Continue(());
        };
        let query = match self.view_query(&view) {
            Ok(query) => query,
            Err(error) => {
                self.error = Some(error);
                return ControlFlow::Break(());
            }
        };
        self.expanded.push(view.id);
        let columns = view
            .columns
            .iter()
            .map(|c| TableAliasColumnDef {
                name: Ident::with_quote('"', c.name.clone()),
                data_type: None,
            })
            .collect();
        let alias = match alias.take() {
            // `FROM v AS x (a, b)` renames the view's columns again.
            Some(alias) if !alias.columns.is_empty() => alias,
            Some(alias) => TableAlias { columns, ..alias },
            None => TableAlias {
                explicit: false,
                name: Ident::with_quote('"', view.name.clone()),
                columns,
                at: None,
            },
        };
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: Box::new(query),
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}
