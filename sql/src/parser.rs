//! Statement parsing, in the Postgres dialect.

use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::Result;

/// Rewrites the catalog queries that psql and drivers send into forms
/// DataFusion can plan (e.g. `'t'::regclass`).
static PARSER: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// Parses a query string into its statements.
pub fn parse_sql(sql: &str) -> Result<Vec<Statement>> {
    Ok(PARSER.parse(sql)?)
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
    fn garbage_is_a_syntax_error() {
        assert!(matches!(
            parse_sql("SELEC 1"),
            Err(crate::SqlError::Syntax(_))
        ));
        assert!(parse_sql("SELECT 'unterminated").is_err());
    }
}
