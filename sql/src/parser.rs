//! Statement parsing, in the Postgres dialect.

use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{FlushType, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::{ksql, Result, SqlError};

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

/// Most operators one statement may hold. Chains of binary operators parse
/// into trees as deep as they are long, and planning walks them
/// recursively; this keeps that depth well inside a worker's stack.
pub const MAX_OPERATORS: usize = 4_000;

/// Refuses statements with more than [`MAX_OPERATORS`] operators, before
/// they are parsed into trees too deep to handle (or even to drop).
fn check_complexity(sql: &str) -> Result<()> {
    // A statement that does not tokenize fails in the parser, with its error.
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let mut operators = 0;
    for token in &tokens {
        match token {
            Token::SemiColon => operators = 0,
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::NOT) => {
                operators += 1
            }
            Token::Word(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::Whitespace(_)
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::Placeholder(_)
            | Token::DoubleColon => {}
            _ => operators += 1,
        }
        if operators > MAX_OPERATORS {
            return Err(SqlError::TooComplex(MAX_OPERATORS));
        }
    }
    Ok(())
}

/// Parses a query string into its statements. Each statement's tokens go
/// through the ksqlDB pre-pass ([`crate::ksql`]) first.
pub fn parse_sql(sql: &str) -> Result<Vec<Statement>> {
    check_complexity(sql)?;
    if reads_pg_catalog(sql) {
        return Ok(CATALOG_QUERY_PARSER.parse(sql)?);
    }
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Syntax(e.into()))?;
    let mut statements = Vec::new();
    for mut tokens in split_statements(tokens) {
        let rewrite = ksql::rewrite(&mut tokens)?;
        if let Some(terminate) = ksql::terminate_statement(&rewrite) {
            statements.push(terminate);
            continue;
        }
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
        let mut statement = if parser.parse_keyword(Keyword::FLUSH) {
            flush_statement()
        } else {
            parser.parse_statement()?
        };
        if parser.peek_token_ref().token != Token::EOF {
            return Ok(parser.expected("end of statement", parser.peek_token())?);
        }
        ksql::annotate(&mut statement, rewrite)?;
        statements.push(statement);
    }
    Ok(statements)
}

/// Splits tokens at semicolons, dropping statements that are only blanks.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut statements = Vec::new();
    let mut current = Vec::new();
    for token in tokens {
        match token.token {
            Token::SemiColon => statements.push(std::mem::take(&mut current)),
            Token::EOF => {}
            _ => current.push(token),
        }
    }
    statements.push(current);
    statements.retain(|s| s.iter().any(|t| !matches!(t.token, Token::Whitespace(_))));
    statements
}

/// `FLUSH`: wait until every acknowledged write is in every view. Parsed
/// by Eddy and carried as the (otherwise MySQL-only) FLUSH statement.
fn flush_statement() -> Statement {
    Statement::Flush {
        object_type: FlushType::Tables,
        location: None,
        channel: None,
        read_lock: false,
        export: false,
        tables: Vec::new(),
    }
}

/// Whether `statement` is Eddy's `FLUSH`.
pub fn is_flush(statement: &Statement) -> bool {
    matches!(statement, Statement::Flush { tables, .. } if tables.is_empty())
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
    fn flush_is_a_statement() {
        let stmts = parse_sql("INSERT INTO t VALUES (1); flush; SELECT 1").unwrap();
        assert_eq!(stmts.len(), 3);
        assert!(is_flush(&stmts[1]));
        assert!(parse_sql("FLUSH TABLES").is_err());
    }

    #[test]
    fn long_operator_chains_are_refused_before_parsing() {
        let sql = format!("SELECT {}1", "1 + ".repeat(100_000));
        assert!(matches!(parse_sql(&sql), Err(SqlError::TooComplex(_))));
        let ok = format!("SELECT {}1", "1 + ".repeat(1_000));
        assert!(parse_sql(&ok).is_ok());
    }

    #[test]
    fn ksql_statements_parse() {
        let stmts = parse_sql(
            "CREATE STREAM s (id BIGINT KEY, name VARCHAR) WITH (kafka_topic='t', value_format='JSON');\
             CREATE TABLE u (id BIGINT PRIMARY KEY, n INT) WITH (kafka_topic='u', value_format='JSON');\
             CREATE STREAM s2 AS SELECT * FROM s WHERE id > 1 EMIT CHANGES;\
             CREATE TABLE t2 WITH (kafka_topic='x') AS SELECT id, count(*) FROM s GROUP BY id;\
             DROP STREAM s2 DELETE TOPIC; TERMINATE CSAS_S2_1; TERMINATE ALL;\
             SHOW STREAMS; LIST QUERIES; DESCRIBE s; DESCRIBE EXTENDED s",
        )
        .unwrap();
        assert_eq!(stmts.len(), 11);
        let Statement::CreateTable(stream) = &stmts[0] else {
            panic!("{:?}", stmts[0]);
        };
        assert!(stream.to_string().contains("eddy_kind = 'stream'"));
        assert!(stream.to_string().contains("id BIGINT PRIMARY KEY"));
        let Statement::CreateTable(csas) = &stmts[2] else {
            panic!("{:?}", stmts[2]);
        };
        assert!(csas.query.is_some());
        assert!(csas.to_string().contains("eddy_emit_changes = 'true'"));
        assert!(matches!(&stmts[3], Statement::CreateTable(c) if c.query.is_some()));
        assert!(matches!(&stmts[4], Statement::Drop { purge: true, .. }));
        assert_eq!(
            crate::as_terminate(&stmts[5]),
            Some(Some("CSAS_S2_1".into()))
        );
        assert_eq!(crate::as_terminate(&stmts[6]), Some(None));
        assert!(matches!(&stmts[7], Statement::ShowVariable { .. }));
        assert!(matches!(&stmts[8], Statement::ShowVariable { .. }));
        assert!(matches!(
            &stmts[10],
            Statement::ExplainTable {
                hive_format: Some(_),
                ..
            }
        ));
        assert!(matches!(
            parse_sql("SELECT * FROM s EMIT CHANGES"),
            Err(SqlError::Unsupported(_))
        ));
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
