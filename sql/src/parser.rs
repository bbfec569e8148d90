//! Statement parsing, in the Postgres dialect.

use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::Result;

/// Rewrites the catalog queries that psql and drivers send into forms
/// DataFusion can plan (e.g. `'t'::regclass`). Some of its rewrites change
/// meaning (it drops subqueries from projections), so it only sees queries
/// that read the Postgres catalog.
static CATALOG_QUERY_PARSER: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

fn reads_pg_catalog(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.contains("pg_") || lower.contains("::reg")
}

/// Parses a query string into its statements.
pub fn parse_sql(sql: &str) -> Result<Vec<Statement>> {
    if reads_pg_catalog(sql) {
        return Ok(CATALOG_QUERY_PARSER.parse(sql)?);
    }
    Ok(Parser::parse_sql(&PostgreSqlDialect {}, sql)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_statements() {
        let stmts =
            parse_sql("CREATE TABLE t (a int); INSERT INTO t VALUES (1); SELECT * FROM t").unwrap();
        assert_eq!(stmts.len(), 3);
    }

    #[test]
    fn user_queries_keep_their_subqueries() {
        let stmts = parse_sql("SELECT (SELECT count(*) FROM e WHERE e.d = d.id) FROM d").unwrap();
        assert!(stmts[0].to_string().contains("count(*)"));
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        assert!(matches!(
            parse_sql("SELEC 1"),
            Err(crate::SqlError::Syntax(_))
        ));
        assert!(parse_sql("SELECT 'unterminated").is_err());
    }
}
