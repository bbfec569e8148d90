//! Statement parsing: Eddy's statements and ksqlDB's clauses on top of
//! sqlparser's `Parser`, as DataFusion's `DFParser` adds its own statements.
//! Everything Postgres has is parsed by sqlparser in the Postgres dialect.

use std::ops::ControlFlow;
use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, visit_relations, ColumnOption, ColumnOptionDef, DataType, DescribeAlias,
    Expr, GeneratedAs, Ident, ObjectName, SqlOption, Statement, TimezoneInfo,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::ast::{
    CreateRelation, DropRelation, Duration, EddyQuery, EddyStatement, Emit, JoinWithin, Listing,
    QueryClauses, RelationKind, Subscribe, Watermark, WindowKind, WindowSpec,
};
use crate::catalog_lookup::keep_catalog_lookups;
use crate::{Result, SqlError};

/// Rewrites the catalog queries that psql and drivers send into forms
/// DataFusion can plan (e.g. `'t'::regclass`). Some of its rewrites change
/// meaning (it drops subqueries from projections), so it only sees queries
/// that read the Postgres catalog.
static CATALOG_QUERY_PARSER: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

const DIALECT: PostgreSqlDialect = PostgreSqlDialect {};

/// Most operators one statement may hold. Chains of binary operators parse
/// into trees as deep as they are long, and planning walks them
/// recursively; this keeps that depth well inside a worker's stack.
pub const MAX_OPERATORS: usize = 4_000;

/// Refuses statements with more than [`MAX_OPERATORS`] operators, before
/// they are parsed into trees too deep to handle (or even to drop).
fn check_complexity(tokens: &[TokenWithSpan]) -> Result<()> {
    let mut operators = 0;
    for token in tokens {
        match &token.token {
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
            | Token::DoubleColon
            | Token::EOF => {}
            _ => operators += 1,
        }
        if operators > MAX_OPERATORS {
            return Err(SqlError::TooComplex(MAX_OPERATORS));
        }
    }
    Ok(())
}

/// Parses a query string into its statements.
pub fn parse_sql(sql: &str) -> Result<Vec<EddyStatement>> {
    let lines = LineStarts::new(sql);
    let tokens = Tokenizer::new(&DIALECT, sql)
        .tokenize_with_location()
        .map_err(|e| at_position(SqlError::Syntax(e.into()), sql, &lines))?;
    check_complexity(&tokens)?;
    let tokens = backquoted_identifiers(tokens).map_err(|e| at_position(e, sql, &lines))?;
    let mut statements = Vec::new();
    for (tokens, end) in split_statements(tokens) {
        let start = tokens
            .iter()
            .find(|t| !is_blank(&t.token))
            .map(|t| t.span.start);
        let mut statement = parse_statement(tokens).map_err(|e| at_position(e, sql, &lines))?;
        crate::expr_rewrites::rewrite_expressions(&mut statement);
        let statement = match (statement, start) {
            (EddyStatement::Sql(statement), Some(start)) if reads_pg_catalog(&statement) => {
                let text =
                    &sql[lines.offset(sql, start)..end.map_or(sql.len(), |e| lines.offset(sql, e))];
                catalog_query(text)?
            }
            (statement, _) => statement,
        };
        statements.push(statement);
    }
    Ok(statements)
}

/// ksqlDB's backquoted identifiers (`` `my col` ``), which keep their case:
/// each becomes the identifier Postgres writes `"my col"`.
fn backquoted_identifiers(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let backquote = |t: &TokenWithSpan| t.token == Token::Char('`');
    if !tokens.iter().any(backquote) {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut tokens = tokens.into_iter();
    while let Some(t) = tokens.next() {
        if !backquote(&t) {
            out.push(t);
            continue;
        }
        let mut name = String::new();
        let closed = loop {
            match tokens.next() {
                Some(inner) if backquote(&inner) => break true,
                Some(inner) => name.push_str(&inner.token.to_string()),
                None => break false,
            }
        };
        if !closed || name.is_empty() {
            return Err(SqlError::Syntax(ParserError::ParserError(
                "a backquoted identifier needs its closing backquote and a name".into(),
            )));
        }
        out.push(TokenWithSpan::new(
            Token::Word(datafusion::sql::sqlparser::tokenizer::Word {
                value: name,
                quote_style: Some('"'),
                keyword: Keyword::NoKeyword,
            }),
            t.span,
        ));
    }
    Ok(out)
}

/// Parses a catalog query with the compatibility rewrites.
fn catalog_query(text: &str) -> Result<EddyStatement> {
    let mut statements = CATALOG_QUERY_PARSER.parse(text)?;
    let compatible = match (statements.pop(), statements.pop()) {
        (Some(statement), None) => statement,
        _ => return Err(SqlError::Unsupported(format!("catalog query {text}"))),
    };
    // Where no whole-query substitution applied (the rules alone give the
    // same statement), catalog lookups in projections are kept.
    let statement = match Parser::parse_sql(&DIALECT, text).as_deref() {
        Ok([plain]) if CATALOG_QUERY_PARSER.rewrite(plain.clone()) == compatible => {
            let mut kept = plain.clone();
            keep_catalog_lookups(&mut kept);
            CATALOG_QUERY_PARSER.rewrite(kept)
        }
        _ => compatible,
    };
    Ok(EddyStatement::Sql(Box::new(statement)))
}

/// Whether a query reads the Postgres catalog: a `pg_` relation or
/// function, or a cast to a `reg` type such as `regclass`.
fn reads_pg_catalog(statement: &Statement) -> bool {
    if !matches!(statement, Statement::Query(_)) {
        return false;
    }
    let is_pg = |name: &ObjectName| {
        name.0.iter().any(|part| {
            part.as_ident()
                .is_some_and(|i| i.value.to_ascii_lowercase().starts_with("pg_"))
        })
    };
    let relation = visit_relations(statement, |name| {
        if is_pg(name) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let expression = visit_expressions(statement, |expr| match expr {
        Expr::Function(f) if is_pg(&f.name) => ControlFlow::Break(()),
        Expr::Cast { data_type, .. } if is_reg_type(data_type) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    relation.is_break() || expression.is_break()
}

fn is_reg_type(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Regclass)
        || matches!(data_type, DataType::Custom(name, _) if name.to_string().to_ascii_lowercase().starts_with("reg"))
}

/// A syntax error with where it is in `sql`, from the line and column
/// its message ends with (sqlparser's "at Line: 2, Column: 7").
fn at_position(error: SqlError, sql: &str, lines: &LineStarts) -> SqlError {
    let SqlError::Syntax(error) = error else {
        return error;
    };
    let message = error.to_string();
    let number = |label: &str| -> Option<u64> {
        let rest = &message[message.rfind(label)? + label.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    match (number("Line: "), number("Column: ")) {
        (Some(line), Some(column)) if line > 0 && column > 0 => {
            let offset = lines.offset(sql, Location { line, column });
            SqlError::SyntaxAt {
                error,
                position: sql[..offset].chars().count() + 1,
            }
        }
        _ => SqlError::Syntax(error),
    }
}

/// Byte offsets of line starts, to turn token locations into offsets.
struct LineStarts(Vec<usize>);

impl LineStarts {
    fn new(sql: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineStarts(starts)
    }

    /// The byte offset of `at` (line and column count from 1; columns
    /// count characters).
    fn offset(&self, sql: &str, at: Location) -> usize {
        let Some(&line) = self.0.get((at.line as usize).saturating_sub(1)) else {
            return sql.len();
        };
        sql[line..]
            .char_indices()
            .nth((at.column as usize).saturating_sub(1))
            .map_or(sql.len(), |(i, _)| line + i)
    }
}

/// Splits tokens at semicolons, dropping statements that are only blanks.
/// Each statement comes with where its semicolon is, if it has one.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<(Vec<TokenWithSpan>, Option<Location>)> {
    let mut statements = Vec::new();
    let mut current = Vec::new();
    for token in tokens {
        match token.token {
            Token::SemiColon => {
                statements.push((std::mem::take(&mut current), Some(token.span.start)))
            }
            Token::EOF => {}
            _ => current.push(token),
        }
    }
    statements.push((current, None));
    statements.retain(|(s, _)| s.iter().any(|t| !is_blank(&t.token)));
    statements
}

fn is_blank(token: &Token) -> bool {
    matches!(token, Token::Whitespace(_))
}

/// Whether `token` is the unquoted word `word` (any case).
fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn parser(tokens: Vec<TokenWithSpan>) -> Parser<'static> {
    Parser::new(&DIALECT).with_tokens_with_locations(tokens)
}

/// Consumes the word `word` if it is next.
fn parse_word(parser: &mut Parser, word: &str) -> bool {
    if is_word(&parser.peek_token_ref().token, word) {
        parser.next_token();
        true
    } else {
        false
    }
}

fn expect_word(parser: &mut Parser, word: &str) -> Result<()> {
    if parse_word(parser, word) {
        Ok(())
    } else {
        Ok(parser.expected(word, parser.peek_token())?)
    }
}

fn expect_end(parser: &mut Parser) -> Result<()> {
    if parser.peek_token_ref().token == Token::EOF {
        Ok(())
    } else {
        Ok(parser.expected("end of statement", parser.peek_token())?)
    }
}

/// The `n`th token that is not whitespace.
fn significant(tokens: &[TokenWithSpan], n: usize) -> Option<&Token> {
    tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !is_blank(t))
        .nth(n)
}

/// Entries COLLECT_LIST and COLLECT_SET keep at most, as ksqlDB's
/// `ksql.functions.collect_list.limit` and `collect_set.limit` default to.
const COLLECT_LIMIT: u32 = 1_000;

/// A ksqlDB aggregate the parser writes as one DataFusion plans.
#[derive(Clone, Copy)]
enum AggregateRewrite {
    /// One argument, ordered: `name([DISTINCT] x ORDER BY ...)`.
    Ordered {
        name: &'static str,
        distinct: bool,
        /// ORDER BY the argument itself, else by offset.
        by_argument: bool,
        ignore_nulls: bool,
        /// At most this many entries (ksqlDB's COLLECT_LIST and
        /// COLLECT_SET stop at 1,000).
        limit: Option<u32>,
    },
    /// `TOPK(x, k)` and `TOPKDISTINCT(x, k)`: the `k` greatest values.
    TopK { distinct: bool },
    /// `HISTOGRAM(x)`: `histogram(array_agg(x ORDER BY x))`, a map of each
    /// distinct value to its count, which Eddy's `histogram` counts from
    /// the sorted values.
    Histogram,
}

impl AggregateRewrite {
    fn of(t: &Token) -> Option<Self> {
        let Token::Word(w) = t else { return None };
        if w.quote_style.is_some() {
            return None;
        }
        let ordered =
            |name, distinct, by_argument, ignore_nulls, limit| AggregateRewrite::Ordered {
                name,
                distinct,
                by_argument,
                ignore_nulls,
                limit,
            };
        Some(match w.value.to_ascii_uppercase().as_str() {
            "LATEST_BY_OFFSET" => ordered("last_value", false, false, true, None),
            "EARLIEST_BY_OFFSET" => ordered("first_value", false, false, true, None),
            "COLLECT_LIST" => ordered("array_agg", false, false, false, Some(COLLECT_LIMIT)),
            "COLLECT_SET" => ordered("array_agg", true, true, false, Some(COLLECT_LIMIT)),
            "TOPK" => AggregateRewrite::TopK { distinct: false },
            "TOPKDISTINCT" => AggregateRewrite::TopK { distinct: true },
            "HISTOGRAM" => AggregateRewrite::Histogram,
            _ => return None,
        })
    }
}

/// A call being rewritten: the paren depth inside it, where it starts in
/// the output, where its arguments start, and where its second argument
/// starts (after the comma), if it has one.
struct OpenCall {
    depth: usize,
    at: usize,
    arguments: usize,
    second: Option<usize>,
    rewrite: AggregateRewrite,
}

/// ksqlDB's aggregates of records in order:
/// - `LATEST_BY_OFFSET(x)`: `last_value(x ORDER BY rowoffset, rowpartition)
///   IGNORE NULLS`, and `EARLIEST_BY_OFFSET` with `first_value`;
/// - `COLLECT_LIST(x)`: `array_agg(x ORDER BY rowoffset, rowpartition)`,
///   and `COLLECT_SET(x)`: `array_agg(DISTINCT x ORDER BY x)`, each cut to
///   its first [`COLLECT_LIMIT`] entries;
/// - `TOPK(x, k)`: `array_slice(array_agg(x ORDER BY x DESC NULLS LAST),
///   1, least(k, count(x)))`, and `TOPKDISTINCT` with `DISTINCT` in both:
///   the non-NULL values, `[]` when every value is NULL, as in ksqlDB;
/// - `HISTOGRAM(x)`: `histogram(array_agg(x ORDER BY x))`.
///
/// Records of different partitions are ordered by offset, then partition.
fn rewrite_ksql_aggregates(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    if !tokens
        .iter()
        .any(|t| AggregateRewrite::of(&t.token).is_some())
    {
        return Ok(tokens);
    }
    let word = |w: &str| TokenWithSpan::wrap(Token::make_word(w, None));
    let token = |t: Token| TokenWithSpan::wrap(t);
    let number = |n: u32| TokenWithSpan::wrap(Token::Number(n.to_string(), false));
    let mut out = Vec::with_capacity(tokens.len() + 8);
    let mut calls: Vec<OpenCall> = Vec::new();
    let mut opening: Option<(usize, AggregateRewrite)> = None;
    let mut depth = 0usize;
    // A name after these is a relation's or a column's, not a call's.
    let names_relation = |t: Option<&Token>| {
        t.is_some_and(|t| {
            *t == Token::Period
                || ["TABLE", "STREAM", "INTO", "VIEW", "FROM", "JOIN", "UPDATE"]
                    .iter()
                    .any(|w| is_word(t, w))
        })
    };
    for (i, t) in tokens.iter().enumerate() {
        let before = tokens[..i].iter().rev().find(|t| !is_blank(&t.token));
        if let Some(found) = AggregateRewrite::of(&t.token) {
            if significant(&tokens[i + 1..], 0) == Some(&Token::LParen)
                && !names_relation(before.map(|t| &t.token))
            {
                opening = Some((out.len(), found));
                out.push(t.clone());
                continue;
            }
        }
        let closes = calls.last().is_some_and(|c| c.depth == depth);
        match &t.token {
            Token::LParen => {
                depth += 1;
                out.push(t.clone());
                if let Some((at, rewrite)) = opening.take() {
                    calls.push(OpenCall {
                        depth,
                        at,
                        arguments: out.len(),
                        second: None,
                        rewrite,
                    });
                }
                continue;
            }
            Token::Comma if closes => {
                let call = calls.last_mut().expect("an open call");
                match (call.rewrite, call.second) {
                    (AggregateRewrite::TopK { .. }, None) => {
                        out.push(t.clone());
                        call.second = Some(out.len());
                        continue;
                    }
                    (AggregateRewrite::TopK { .. }, Some(_)) => {
                        return Err(SqlError::Unsupported(
                            "TOPK or TOPKDISTINCT with more than two arguments".into(),
                        ))
                    }
                    (AggregateRewrite::Ordered { .. } | AggregateRewrite::Histogram, _) => {
                        return Err(SqlError::Unsupported(
                            "LATEST_BY_OFFSET, EARLIEST_BY_OFFSET, COLLECT_LIST, COLLECT_SET or \
                             HISTOGRAM with more than one argument"
                                .into(),
                        ))
                    }
                }
            }
            Token::RParen if closes => {
                let call = calls.pop().expect("an open call");
                depth -= 1;
                let arguments = out.split_off(call.at);
                let argument = |end: usize| arguments[call.arguments - call.at..end].to_vec();
                match call.rewrite {
                    AggregateRewrite::Ordered {
                        name,
                        distinct,
                        by_argument,
                        ignore_nulls,
                        limit,
                    } => {
                        let x = argument(arguments.len());
                        if limit.is_some() {
                            out.extend([word("array_slice"), token(Token::LParen)]);
                        }
                        out.extend([word(name), token(Token::LParen)]);
                        if distinct {
                            out.push(word("DISTINCT"));
                        }
                        out.extend(x.iter().cloned());
                        out.extend([word("ORDER"), word("BY")]);
                        if by_argument {
                            out.extend(x);
                        } else {
                            out.extend([
                                word("rowoffset"),
                                token(Token::Comma),
                                word("rowpartition"),
                            ]);
                        }
                        out.push(t.clone());
                        if ignore_nulls {
                            out.extend([word("IGNORE"), word("NULLS")]);
                        }
                        if let Some(limit) = limit {
                            out.extend([token(Token::Comma), number(1), token(Token::Comma)]);
                            out.extend([number(limit), token(Token::RParen)]);
                        }
                    }
                    AggregateRewrite::Histogram => {
                        let x = argument(arguments.len());
                        out.extend([word("histogram"), token(Token::LParen)]);
                        out.extend([word("array_agg"), token(Token::LParen)]);
                        out.extend(x.iter().cloned());
                        out.extend([word("ORDER"), word("BY")]);
                        out.extend(x);
                        out.push(token(Token::RParen));
                        out.push(t.clone());
                    }
                    AggregateRewrite::TopK { distinct } => {
                        let Some(second) = call.second else {
                            return Err(SqlError::Unsupported(
                                "TOPK and TOPKDISTINCT take a column and a count, as TOPK(x, 3)"
                                    .into(),
                            ));
                        };
                        let x = argument(second - call.at - 1);
                        let k = arguments[second - call.at..].to_vec();
                        out.extend([word("array_slice"), token(Token::LParen)]);
                        out.extend([word("array_agg"), token(Token::LParen)]);
                        if distinct {
                            out.push(word("DISTINCT"));
                        }
                        out.extend(x.iter().cloned());
                        out.extend([word("ORDER"), word("BY")]);
                        out.extend(x.iter().cloned());
                        out.extend([word("DESC"), word("NULLS"), word("LAST")]);
                        out.push(token(Token::RParen));
                        out.extend([token(Token::Comma), number(1), token(Token::Comma)]);
                        // The non-NULL values come first: at most that many.
                        out.extend([word("least"), token(Token::LParen)]);
                        out.extend(k);
                        out.extend([token(Token::Comma), word("count"), token(Token::LParen)]);
                        if distinct {
                            out.push(word("DISTINCT"));
                        }
                        out.extend(x);
                        out.extend([token(Token::RParen), token(Token::RParen)]);
                        out.push(t.clone());
                    }
                }
                continue;
            }
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(t.clone());
    }
    Ok(out)
}

fn parse_statement(tokens: Vec<TokenWithSpan>) -> Result<EddyStatement> {
    let mut tokens = rewrite_ksql_aggregates(tokens)?;
    let word = |n: usize, word: &str| significant(&tokens, n).is_some_and(|t| is_word(t, word));
    let after_create = if word(0, "CREATE") {
        Some(if word(1, "OR") && word(2, "REPLACE") {
            3
        } else {
            1
        })
    } else {
        None
    };
    let word_at = |n: usize| match significant(&tokens, n) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.as_str()),
        _ => None,
    };
    if let Some(first) = word_at(0) {
        if crate::access::is_access(first, word_at(1), word_at(2)) {
            let mut p = parser(tokens);
            let statement = crate::access::parse_access(&mut p)?;
            expect_end(&mut p)?;
            return Ok(EddyStatement::Access(Box::new(statement)));
        }
    }
    if word(0, "TERMINATE") {
        return parse_terminate(parser(tokens));
    }
    if word(0, "PRINT") {
        return parse_print(parser(tokens));
    }
    if word(0, "FLUSH") {
        let mut p = parser(tokens);
        p.next_token();
        expect_end(&mut p)?;
        return Ok(EddyStatement::Flush);
    }
    if (word(0, "SHOW") || word(0, "LIST")) && listing(significant(&tokens, 1)).is_some() {
        return parse_show(parser(tokens));
    }
    if word(0, "FETCH") || word(0, "MOVE") {
        return parse_fetch(tokens);
    }
    if word(0, "SUBSCRIBE") {
        return parse_subscribe(parser(tokens));
    }
    if word(0, "COPY") && significant(&tokens, 1) == Some(&Token::LParen) && word(2, "SUBSCRIBE") {
        return parse_copy_subscribe(parser(tokens));
    }
    if word(0, "DECLARE") && (0..tokens.len()).any(|n| word(n, "FOR") && word(n + 1, "SUBSCRIBE")) {
        return parse_declare_subscribe(parser(tokens));
    }
    if word(0, "DECLARE") && (0..tokens.len()).any(|n| word(n, "EMIT") && word(n + 1, "CHANGES")) {
        return parse_declare_emit_changes(tokens);
    }
    if word(0, "DESCRIBE") || word(0, "DESC") {
        return parse_describe(parser(tokens));
    }
    if let Some(n) = after_create {
        if word(n, "STREAM") || word(n, "TABLE") {
            return parse_create_relation(tokens);
        }
        if word(n, "VIEW") || (word(n, "MATERIALIZED") && word(n + 1, "VIEW")) {
            let clauses = take_query_clauses(&mut tokens)?;
            let mut p = parser(tokens);
            let statement = p.parse_statement()?;
            expect_end(&mut p)?;
            let Statement::CreateView(create) = statement else {
                return Err(SqlError::Unsupported(format!("statement {statement}")));
            };
            return Ok(EddyStatement::CreateView {
                create: Box::new(create),
                clauses,
            });
        }
    }
    if word(0, "DROP") {
        return parse_drop(parser(tokens));
    }
    if word(0, "INSERT") {
        return parse_insert(tokens);
    }
    let is_query = word(0, "SELECT")
        || word(0, "WITH")
        || word(0, "VALUES")
        || significant(&tokens, 0) == Some(&Token::LParen);
    let analyze = word(0, "EXPLAIN") && word(1, "ANALYZE");
    let clauses = if is_query {
        take_query_clauses(&mut tokens)?
    } else {
        QueryClauses::default()
    };
    let mut p = parser(tokens);
    let statement = p.parse_statement()?;
    expect_end(&mut p)?;
    match statement {
        Statement::Query(query) if !clauses.is_empty() => {
            Ok(EddyStatement::Query(Box::new(EddyQuery { query, clauses })))
        }
        // sqlparser reads `EXPLAIN ANALYZE name` as `EXPLAIN name`.
        Statement::ExplainTable {
            describe_alias: DescribeAlias::Explain,
            table_name,
            ..
        } if analyze => Ok(EddyStatement::ExplainAnalyze(table_name)),
        statement => Ok(EddyStatement::Sql(Box::new(statement))),
    }
}

/// `INSERT ...`: Postgres's, unless its query has ksqlDB clauses (`EMIT
/// CHANGES`, ...), which make it a persistent query into a stream.
fn parse_insert(mut tokens: Vec<TokenWithSpan>) -> Result<EddyStatement> {
    let emits = (0..tokens.len()).any(|n| {
        significant(&tokens, n).is_some_and(|t| is_word(t, "EMIT"))
            && significant(&tokens, n + 1)
                .is_some_and(|t| ["CHANGES", "FINAL"].iter().any(|w| is_word(t, w)))
    });
    let clauses = match emits {
        true => take_query_clauses(&mut tokens)?,
        false => QueryClauses::default(),
    };
    let mut p = parser(tokens);
    let statement = p.parse_statement()?;
    expect_end(&mut p)?;
    if clauses.is_empty() {
        return Ok(EddyStatement::Sql(Box::new(statement)));
    }
    match statement {
        Statement::Insert(insert) => match (insert.source, insert.columns.is_empty()) {
            (Some(query), true) => Ok(EddyStatement::InsertQuery {
                target: match insert.table {
                    datafusion::sql::sqlparser::ast::TableObject::TableName(name) => name,
                    other => return Err(SqlError::Unsupported(format!("INSERT INTO {other}"))),
                },
                query: Box::new(EddyQuery { query, clauses }),
            }),
            (Some(_), false) => Err(SqlError::Unsupported(
                "a column list in INSERT INTO ... SELECT ... EMIT CHANGES; name the columns in \
                 the select list"
                    .into(),
            )),
            (None, _) => Err(SqlError::InvalidDefinition(
                "EMIT CHANGES belongs to an INSERT INTO ... SELECT".into(),
            )),
        },
        other => Err(SqlError::Unsupported(format!("statement {other}"))),
    }
}

/// `DECLARE name [NO SCROLL] CURSOR [WITH HOLD | WITHOUT HOLD] FOR`:
/// the cursor's name and whether it is held.
fn parse_declare_header(p: &mut Parser) -> Result<(Ident, bool)> {
    p.next_token();
    let name = p.parse_identifier()?;
    if p.parse_keyword(Keyword::NO) {
        p.expect_keyword(Keyword::SCROLL)?;
    }
    p.expect_keyword(Keyword::CURSOR)?;
    let hold = if p.parse_keywords(&[Keyword::WITH, Keyword::HOLD]) {
        true
    } else {
        let _ = p.parse_keywords(&[Keyword::WITHOUT, Keyword::HOLD]);
        false
    };
    p.expect_keyword(Keyword::FOR)?;
    Ok((name, hold))
}

/// `DECLARE name ... CURSOR FOR SELECT ... EMIT CHANGES [LIMIT n]`: psql's
/// `FETCH_COUNT` over a push query.
fn parse_declare_emit_changes(tokens: Vec<TokenWithSpan>) -> Result<EddyStatement> {
    let at_for = tokens
        .iter()
        .position(|t| is_word(&t.token, "FOR"))
        .unwrap_or(tokens.len());
    let (header, query) = tokens.split_at((at_for + 1).min(tokens.len()));
    let mut p = parser(header.to_vec());
    let (name, hold) = parse_declare_header(&mut p)?;
    expect_end(&mut p)?;
    match parse_statement(query.to_vec())? {
        EddyStatement::Query(query) if query.clauses.emit == Some(Emit::Changes) => {
            Ok(EddyStatement::DeclareEmitChanges { name, hold, query })
        }
        other => Err(SqlError::Unsupported(format!(
            "DECLARE ... CURSOR FOR {other}"
        ))),
    }
}

/// `DECLARE name [NO SCROLL] CURSOR [WITH HOLD | WITHOUT HOLD] FOR SUBSCRIBE ...`.
fn parse_declare_subscribe(mut p: Parser) -> Result<EddyStatement> {
    let (name, hold) = parse_declare_header(&mut p)?;
    let EddyStatement::Subscribe(subscribe) = parse_subscribe(p)? else {
        return Err(SqlError::Unsupported("DECLARE ... FOR SUBSCRIBE".into()));
    };
    Ok(EddyStatement::DeclareSubscribe {
        name,
        hold,
        subscribe,
    })
}

/// `FETCH ...`'s trailing `WITH (timeout = '1s')`, taken off `tokens`.
fn take_fetch_timeout(tokens: &mut Vec<TokenWithSpan>) -> Result<Option<std::time::Duration>> {
    let Some(with) = tokens.iter().position(|t| is_word(&t.token, "WITH")) else {
        return Ok(None);
    };
    let mut p = parser(tokens.split_off(with));
    p.next_token();
    p.expect_token(&Token::LParen)?;
    let option = p.parse_identifier()?;
    if !option.value.eq_ignore_ascii_case("timeout") {
        return Err(SqlError::Unsupported(format!(
            "FETCH option {option} (FETCH takes timeout)"
        )));
    }
    p.expect_token(&Token::Eq)?;
    let text = match p.parse_expr()? {
        Expr::Value(v) => match v.value {
            datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s) => s,
            datafusion::sql::sqlparser::ast::Value::Number(n, _) => format!("{n}s"),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    p.expect_token(&Token::RParen)?;
    expect_end(&mut p)?;
    let timeout = parse_timeout(&text).ok_or_else(|| {
        SqlError::InvalidDefinition(format!(
            "FETCH timeout '{text}' is not a duration such as '1s' or '500ms'"
        ))
    })?;
    Ok(Some(timeout))
}

/// A number and the unit after it (`500ms`, `2 minutes`): the number and
/// the unit, trimmed and in lower case (empty when there is none).
pub fn number_and_unit(text: &str) -> Option<(f64, String)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim().to_ascii_lowercase()))
}

/// `'1s'`, `'500ms'`, `'2 minutes'`, `'0'`: a FETCH timeout.
fn parse_timeout(text: &str) -> Option<std::time::Duration> {
    let (number, unit) = number_and_unit(text)?;
    let seconds = match unit.as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => number,
        "ms" | "millisecond" | "milliseconds" => number / 1_000.0,
        "min" | "mins" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3_600.0,
        _ => return None,
    };
    std::time::Duration::try_from_secs_f64(seconds).ok()
}

/// `COPY (SUBSCRIBE ...) TO STDOUT [WITH (FORMAT text)]`.
fn parse_copy_subscribe(mut p: Parser) -> Result<EddyStatement> {
    p.next_token();
    p.expect_token(&Token::LParen)?;
    let subscribe = parse_subscribe_body(&mut p)?;
    p.expect_token(&Token::RParen)?;
    p.expect_keyword(Keyword::TO)?;
    p.expect_keyword(Keyword::STDOUT)?;
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        let option = p.parse_identifier()?;
        let format = p.parse_identifier()?;
        if !option.value.eq_ignore_ascii_case("format")
            || !format.value.eq_ignore_ascii_case("text")
        {
            return Err(SqlError::Unsupported(format!(
                "COPY (SUBSCRIBE ...) option {option} {format} (it writes FORMAT text)"
            )));
        }
        p.expect_token(&Token::RParen)?;
    }
    expect_end(&mut p)?;
    Ok(EddyStatement::CopySubscribe(Box::new(subscribe)))
}

/// `SUBSCRIBE [TO] relation | (query) [WITH (SNAPSHOT [= b], PROGRESS [= b])]`.
fn parse_subscribe(mut p: Parser) -> Result<EddyStatement> {
    let subscribe = parse_subscribe_body(&mut p)?;
    expect_end(&mut p)?;
    Ok(EddyStatement::Subscribe(Box::new(subscribe)))
}

fn parse_subscribe_body(p: &mut Parser) -> Result<Subscribe> {
    p.next_token();
    parse_word(p, "TO");
    let query = if p.consume_token(&Token::LParen) {
        let query = p.parse_query()?;
        p.expect_token(&Token::RParen)?;
        query
    } else {
        let name = p.parse_object_name(false)?;
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("SELECT * FROM {name}"))?
            .parse_query()?
    };
    let mut subscribe = Subscribe {
        query,
        snapshot: true,
        progress: false,
    };
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        loop {
            let option = p.parse_identifier()?;
            let value = if p.consume_token(&Token::Eq) {
                match p.parse_expr()? {
                    Expr::Value(v) => match v.value {
                        datafusion::sql::sqlparser::ast::Value::Boolean(b) => b,
                        datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s)
                            if s.eq_ignore_ascii_case("true")
                                || s.eq_ignore_ascii_case("false") =>
                        {
                            s.eq_ignore_ascii_case("true")
                        }
                        other => {
                            return Err(SqlError::InvalidDefinition(format!(
                                "SUBSCRIBE option {option} is true or false, not {other}"
                            )))
                        }
                    },
                    other => {
                        return Err(SqlError::InvalidDefinition(format!(
                            "SUBSCRIBE option {option} is true or false, not {other}"
                        )))
                    }
                }
            } else {
                true
            };
            match option.value.to_ascii_uppercase().as_str() {
                "SNAPSHOT" => subscribe.snapshot = value,
                "PROGRESS" => subscribe.progress = value,
                _ => {
                    return Err(SqlError::Unsupported(format!(
                        "SUBSCRIBE option {option} (the options are SNAPSHOT and PROGRESS)"
                    )))
                }
            }
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen)?;
    }
    Ok(subscribe)
}

/// `FETCH` or `MOVE` in all of Postgres's forms, written as sqlparser
/// parses them: a direction (`NEXT` when there is none, `FORWARD` alone),
/// then `FROM` and the cursor. A `MOVE` is that `FETCH`, held apart.
fn parse_fetch(tokens: Vec<TokenWithSpan>) -> Result<EddyStatement> {
    let mut significant: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !is_blank(&t.token) && t.token != Token::SemiColon)
        .collect();
    let timeout = take_fetch_timeout(&mut significant)?;
    let moving = significant
        .first()
        .is_some_and(|t| is_word(&t.token, "MOVE"));
    let keyword = |word: &str| TokenWithSpan::wrap(Token::make_keyword(word));
    let normalized = match significant.as_slice() {
        [_, rest @ .., cursor] if !rest.is_empty() || !is_word(&cursor.token, "ALL") => {
            let from = matches!(rest.last(), Some(t) if is_word(&t.token, "FROM") || is_word(&t.token, "IN"));
            let direction = if from { &rest[..rest.len() - 1] } else { rest };
            let direction = match direction {
                [] => vec![keyword("NEXT")],
                [only] if is_word(&only.token, "FORWARD") => vec![keyword("NEXT")],
                [only] if is_word(&only.token, "BACKWARD") => vec![keyword("PRIOR")],
                other => other.to_vec(),
            };
            let mut tokens = vec![keyword("FETCH")];
            tokens.extend(direction);
            tokens.push(keyword("FROM"));
            tokens.push(cursor.clone());
            tokens
        }
        _ => significant,
    };
    let mut p = parser(normalized);
    let statement = p.parse_statement()?;
    expect_end(&mut p)?;
    match (statement, timeout) {
        (Statement::Fetch { .. }, Some(_)) if moving => {
            Err(SqlError::Unsupported("MOVE ... WITH (timeout)".into()))
        }
        (fetch @ Statement::Fetch { .. }, Some(timeout)) => Ok(EddyStatement::FetchWithTimeout {
            fetch: Box::new(fetch),
            timeout,
        }),
        (fetch @ Statement::Fetch { .. }, None) if moving => {
            Ok(EddyStatement::Move(Box::new(fetch)))
        }
        (fetch @ Statement::Fetch { .. }, None) => Ok(EddyStatement::Sql(Box::new(fetch))),
        (other, _) => Err(SqlError::Unsupported(format!("statement {other}"))),
    }
}

/// `TERMINATE query_id | ALL`.
fn parse_terminate(mut p: Parser) -> Result<EddyStatement> {
    p.next_token();
    let target = if parse_word(&mut p, "ALL") {
        None
    } else {
        Some(p.parse_identifier()?)
    };
    expect_end(&mut p)?;
    Ok(EddyStatement::Terminate(target))
}

/// `PRINT topic | 'topic' [FROM BEGINNING] [INTERVAL | SAMPLE n] [LIMIT n]`.
fn parse_print(mut p: Parser) -> Result<EddyStatement> {
    p.next_token();
    let topic = match p.next_token().token {
        Token::Word(w) => w.value,
        Token::SingleQuotedString(s) => s,
        other => {
            return Err(SqlError::Syntax(ParserError::ParserError(format!(
                "Expected: a topic name after PRINT, found: {other}"
            ))))
        }
    };
    let from_beginning = p.parse_keyword(Keyword::FROM);
    if from_beginning && !parse_word(&mut p, "BEGINNING") {
        return Err(SqlError::Syntax(ParserError::ParserError(
            "Expected: BEGINNING after PRINT topic FROM".into(),
        )));
    }
    let count = |p: &mut Parser, what: &str| -> Result<u64> {
        match p.next_token().token {
            Token::Number(n, _) => n.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                SqlError::Syntax(ParserError::ParserError(format!(
                    "{what} {n}: a count of records, 1 or more"
                )))
            }),
            other => Err(SqlError::Syntax(ParserError::ParserError(format!(
                "Expected: a count after {what}, found: {other}"
            )))),
        }
    };
    let mut interval = 1;
    if parse_word(&mut p, "INTERVAL") || parse_word(&mut p, "SAMPLE") {
        interval = count(&mut p, "INTERVAL")?;
    }
    let limit = match p.parse_keyword(Keyword::LIMIT) {
        true => Some(count(&mut p, "LIMIT")?),
        false => None,
    };
    expect_end(&mut p)?;
    Ok(EddyStatement::Print(crate::ast::Print {
        topic,
        from_beginning,
        interval,
        limit,
    }))
}

fn listing(token: Option<&Token>) -> Option<Listing> {
    let token = token?;
    [
        ("STREAMS", Listing::Streams),
        ("TABLES", Listing::Tables),
        ("QUERIES", Listing::Queries),
        ("TOPICS", Listing::Topics),
        ("FUNCTIONS", Listing::Functions),
    ]
    .into_iter()
    .find_map(|(word, listing)| is_word(token, word).then_some(listing))
}

/// `SHOW|LIST STREAMS|TABLES|QUERIES|TOPICS|FUNCTIONS [EXTENDED]`.
fn parse_show(mut p: Parser) -> Result<EddyStatement> {
    p.next_token();
    let listing = listing(Some(&p.next_token().token)).expect("checked by the caller");
    let extended = parse_word(&mut p, "EXTENDED");
    expect_end(&mut p)?;
    Ok(EddyStatement::Show { listing, extended })
}

/// `DESCRIBE [EXTENDED] name`.
fn parse_describe(mut p: Parser) -> Result<EddyStatement> {
    p.next_token();
    if parse_word(&mut p, "FUNCTION") {
        let name = p.parse_identifier()?;
        expect_end(&mut p)?;
        return Ok(EddyStatement::DescribeFunction(name));
    }
    let extended = parse_word(&mut p, "EXTENDED");
    let name = p.parse_object_name(false)?;
    expect_end(&mut p)?;
    Ok(EddyStatement::Describe { name, extended })
}

/// sqlparser's DROP, then ksqlDB's `DELETE TOPIC`.
fn parse_drop(mut p: Parser) -> Result<EddyStatement> {
    let statement = p.parse_statement()?;
    let delete_topic = parse_word(&mut p, "DELETE");
    if delete_topic {
        expect_word(&mut p, "TOPIC")?;
    }
    expect_end(&mut p)?;
    match statement {
        Statement::Drop {
            object_type,
            if_exists,
            names,
            cascade,
            ..
        } => Ok(EddyStatement::Drop(DropRelation {
            object_type,
            if_exists,
            names,
            cascade,
            delete_topic,
        })),
        _ if delete_topic => Err(SqlError::InvalidDefinition(
            "DELETE TOPIC belongs after DROP STREAM or DROP TABLE".into(),
        )),
        statement => Ok(EddyStatement::Sql(Box::new(statement))),
    }
}

/// `CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name [(elements)]
/// [WITH (options)] [AS query]`, where an element is a column (with
/// ksqlDB's `KEY` among its options), a table constraint, or
/// `WATERMARK FOR col AS expr`.
fn parse_create_relation(tokens: Vec<TokenWithSpan>) -> Result<EddyStatement> {
    let mut p = parser(tokens.clone());
    p.next_token();
    let or_replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    let kind = if parse_word(&mut p, "STREAM") {
        RelationKind::Stream
    } else {
        p.expect_keyword(Keyword::TABLE)?;
        RelationKind::Table
    };
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    let mut create = CreateRelation {
        kind,
        or_replace,
        if_not_exists,
        name,
        columns: Vec::new(),
        key_columns: Vec::new(),
        constraints: Vec::new(),
        watermark: None,
        options: Vec::new(),
        query: None,
    };
    if p.consume_token(&Token::LParen) {
        loop {
            parse_element(&mut p, &mut create)?;
            if p.consume_token(&Token::Comma) {
                continue;
            }
            p.expect_token(&Token::RParen)?;
            break;
        }
    }
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        create.options = p.parse_comma_separated(parse_option)?;
        p.expect_token(&Token::RParen)?;
    }
    if p.parse_keyword(Keyword::AS) {
        let mut rest = tokens;
        rest.drain(..p.index());
        create.query = Some(parse_query(rest)?);
    } else {
        expect_end(&mut p)?;
    }
    Ok(EddyStatement::CreateRelation(Box::new(create)))
}

/// One element of a CREATE's column list.
fn parse_element(p: &mut Parser, create: &mut CreateRelation) -> Result<()> {
    if is_word(&p.peek_token_ref().token, "WATERMARK") {
        p.next_token();
        p.expect_keyword(Keyword::FOR)?;
        let column = p.parse_identifier()?;
        p.expect_keyword(Keyword::AS)?;
        let expr = p.parse_expr()?;
        if create.watermark.is_some() {
            return Err(SqlError::InvalidDefinition(
                "a relation has one WATERMARK".into(),
            ));
        }
        create.watermark = Some(Watermark { column, expr });
        return Ok(());
    }
    if let Some(constraint) = p.parse_optional_table_constraint()? {
        create.constraints.push(constraint);
        return Ok(());
    }
    let name = p.parse_identifier()?;
    // `name [type] AS expr`: a computed column (Flink's and RisingWave's
    // `p_time AS PROCTIME()`); without a type it is a TIMESTAMPTZ.
    let data_type = if p.peek_keyword(Keyword::AS) {
        DataType::Timestamp(None, TimezoneInfo::WithTimeZone)
    } else {
        parse_column_type(p)?
    };
    let mut options = Vec::new();
    if p.parse_keyword(Keyword::AS) {
        let expr = match p.parse_expr()? {
            Expr::Nested(inner) => *inner,
            expr => expr,
        };
        options.push(ColumnOptionDef {
            name: None,
            option: ColumnOption::Generated {
                generated_as: GeneratedAs::Always,
                sequence_options: None,
                generation_expr: Some(expr),
                generation_expr_mode: None,
                generated_keyword: false,
            },
        });
    }
    loop {
        if p.parse_keyword(Keyword::CONSTRAINT) {
            let constraint = Some(p.parse_identifier()?);
            match p.parse_optional_column_option()? {
                Some(option) => options.push(ColumnOptionDef {
                    name: constraint,
                    option,
                }),
                None => return Ok(p.expected("constraint details", p.peek_token())?),
            }
        } else if is_word(&p.peek_token_ref().token, "KEY") {
            p.next_token();
            create.key_columns.push(name.clone());
        } else if let Some(option) = p.parse_optional_column_option()? {
            options.push(ColumnOptionDef { name: None, option });
        } else {
            break;
        }
    }
    create
        .columns
        .push(datafusion::sql::sqlparser::ast::ColumnDef {
            name,
            data_type,
            options,
        });
    Ok(())
}

/// A column's type: Postgres's types (with `[]` for arrays), and ksqlDB's
/// `ARRAY<T>`, `MAP<K, V>` and `STRUCT<name T, ...>`, nested to any depth.
fn parse_column_type(p: &mut Parser) -> Result<DataType> {
    let mut pending_close = false;
    let data_type = parse_nested_type(p, &mut pending_close)?;
    if pending_close {
        return Ok(p.expected("a type", p.peek_token())?);
    }
    Ok(data_type)
}

/// One type inside angle brackets. `>>` closes two lists at once; the
/// second `>` is left in `pending_close` for the caller.
fn parse_nested_type(p: &mut Parser, pending_close: &mut bool) -> Result<DataType> {
    use datafusion::sql::sqlparser::ast::{ArrayElemTypeDef, StructBracketKind, StructField};
    let word = match &p.peek_token_ref().token {
        Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let opens = matches!(p.peek_nth_token_ref(1).token, Token::Lt);
    let data_type = match word.as_str() {
        "ARRAY" if opens => {
            p.next_token();
            p.next_token();
            let element = parse_nested_type(p, pending_close)?;
            close_angle(p, pending_close)?;
            DataType::Array(ArrayElemTypeDef::AngleBracket(Box::new(element)))
        }
        "MAP" if opens => {
            p.next_token();
            p.next_token();
            let key = parse_nested_type(p, pending_close)?;
            if *pending_close {
                return Ok(p.expected(", and the value type", p.peek_token())?);
            }
            p.expect_token(&Token::Comma)?;
            let value = parse_nested_type(p, pending_close)?;
            close_angle(p, pending_close)?;
            DataType::Map(Box::new(key), Box::new(value))
        }
        "STRUCT" if opens => {
            p.next_token();
            p.next_token();
            let mut fields = Vec::new();
            if !p.consume_token(&Token::Gt) {
                loop {
                    let name = p.parse_identifier()?;
                    let field_type = parse_nested_type(p, pending_close)?;
                    fields.push(StructField {
                        field_name: Some(name),
                        field_type,
                        options: None,
                    });
                    if !*pending_close && p.consume_token(&Token::Comma) {
                        continue;
                    }
                    close_angle(p, pending_close)?;
                    break;
                }
            }
            DataType::Struct(fields, StructBracketKind::AngleBrackets)
        }
        _ => {
            // `>>` after a scalar type inside brackets: sqlparser would
            // read it as an operator, so stop the type before it.
            p.parse_data_type()?
        }
    };
    // Postgres's `T[]` (and `T[][]`) after any type.
    let mut data_type = data_type;
    while !*pending_close
        && p.peek_token_ref().token == Token::LBracket
        && p.peek_nth_token_ref(1).token == Token::RBracket
    {
        p.next_token();
        p.next_token();
        data_type = DataType::Array(ArrayElemTypeDef::SquareBracket(Box::new(data_type), None));
    }
    Ok(data_type)
}

/// The `>` that closes an angle-bracketed type; `>>` closes this one and
/// the enclosing one.
fn close_angle(p: &mut Parser, pending_close: &mut bool) -> Result<()> {
    if std::mem::take(pending_close) {
        return Ok(());
    }
    match p.next_token().token {
        Token::Gt => Ok(()),
        Token::ShiftRight => {
            *pending_close = true;
            Ok(())
        }
        _ => {
            p.prev_token();
            Ok(p.expected(">", p.peek_token())?)
        }
    }
}

/// `name = value`, where a name may be dotted (datagen's `fields.id.kind`).
fn parse_option(p: &mut Parser) -> Result<SqlOption, ParserError> {
    let mut key = p.parse_identifier()?;
    while p.consume_token(&Token::Period) {
        let part = p.parse_identifier()?;
        key = Ident::with_quote('"', format!("{}.{}", key.value, part.value));
    }
    p.expect_token(&Token::Eq)?;
    let value = p.parse_expr()?;
    Ok(SqlOption::KeyValue { key, value })
}

/// A query with any ksqlDB clauses, filling the rest of `tokens`.
fn parse_query(mut tokens: Vec<TokenWithSpan>) -> Result<EddyQuery> {
    let clauses = take_query_clauses(&mut tokens)?;
    let mut p = parser(tokens);
    let query = p.parse_query()?;
    expect_end(&mut p)?;
    Ok(EddyQuery { query, clauses })
}

/// Parses the ksqlDB clauses of a query (`WINDOW ...`, `WITHIN ...`,
/// `PARTITION BY ...`, `EMIT ...`) where they stand, outside parentheses,
/// and takes their tokens out, leaving Postgres's query for sqlparser.
fn take_query_clauses(tokens: &mut Vec<TokenWithSpan>) -> Result<QueryClauses> {
    let mut clauses = QueryClauses::default();
    let mut depth = 0usize;
    let mut joins = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let next = |n: usize| significant(&tokens[i..], n).cloned();
        let token = &tokens[i].token;
        match token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            t if is_word(t, "JOIN") => joins += 1,
            t if is_word(t, "WINDOW")
                && ["TUMBLING", "HOPPING", "SESSION"]
                    .iter()
                    .any(|k| next(1).is_some_and(|t| is_word(&t, k))) =>
            {
                let window = take_clause(tokens, i, parse_window)?;
                set_once(&mut clauses.window, Some(window), "WINDOW")?;
                continue;
            }
            t if is_word(t, "WITHIN") && !next(1).is_some_and(|t| is_word(&t, "GROUP")) => {
                let Some(join) = joins.checked_sub(1) else {
                    return Err(SqlError::InvalidDefinition(
                        "WITHIN belongs after the relation of a JOIN".into(),
                    ));
                };
                let within = take_clause(tokens, i, parse_within)?;
                clauses.within.push(JoinWithin { join, ..within });
                continue;
            }
            t if is_word(t, "PARTITION") && next(1).is_some_and(|t| is_word(&t, "BY")) => {
                let exprs = take_clause(tokens, i, |p| {
                    p.next_token();
                    p.next_token();
                    Ok(p.parse_comma_separated(Parser::parse_expr)?)
                })?;
                set_once(&mut clauses.partition_by, exprs, "PARTITION BY")?;
                continue;
            }
            t if is_word(t, "EMIT") => {
                let emit = take_clause(tokens, i, parse_emit)?;
                set_once(&mut clauses.emit, Some(emit), "EMIT")?;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(clauses)
}

/// Parses the clause at `tokens[at..]` with `parse` and takes out its tokens.
fn take_clause<T>(
    tokens: &mut Vec<TokenWithSpan>,
    at: usize,
    parse: impl FnOnce(&mut Parser) -> Result<T>,
) -> Result<T> {
    let mut p = parser(tokens[at..].to_vec());
    let value = parse(&mut p)?;
    let used = p.index().min(tokens.len() - at);
    tokens.drain(at..at + used);
    Ok(value)
}

/// Fills a clause's slot, which a query may fill once.
fn set_once<T: Default + PartialEq>(slot: &mut T, value: T, clause: &str) -> Result<()> {
    if *slot != T::default() {
        return Err(SqlError::InvalidDefinition(format!(
            "a query has one {clause} clause"
        )));
    }
    *slot = value;
    Ok(())
}

/// `EMIT CHANGES | FINAL | ON WINDOW CLOSE`.
fn parse_emit(p: &mut Parser) -> Result<Emit> {
    p.next_token();
    if parse_word(p, "CHANGES") {
        Ok(Emit::Changes)
    } else if parse_word(p, "FINAL") {
        Ok(Emit::Final)
    } else if parse_word(p, "ON") {
        expect_word(p, "WINDOW")?;
        expect_word(p, "CLOSE")?;
        Ok(Emit::OnWindowClose)
    } else {
        Ok(p.expected("CHANGES, FINAL or ON WINDOW CLOSE", p.peek_token())?)
    }
}

/// The milliseconds in a unit of time (`SECOND`, `minutes`, ...).
pub(crate) fn unit_millis(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_uppercase();
    match unit.strip_suffix('S').unwrap_or(&unit) {
        "MILLISECOND" => Some(1),
        "SECOND" => Some(1_000),
        "MINUTE" => Some(60_000),
        "HOUR" => Some(3_600_000),
        "DAY" => Some(86_400_000),
        _ => None,
    }
}

/// A number and a unit of time: `10 SECONDS`, `1 MINUTE`.
fn parse_duration(p: &mut Parser) -> Result<Duration> {
    let at = p.peek_token();
    let number = match &at.token {
        Token::Number(n, _) => n.clone(),
        _ => return Ok(p.expected("a length of time, such as 10 SECONDS", at)?),
    };
    p.next_token();
    let Ok(number) = number.parse::<u64>() else {
        return Ok(p.expected("a whole, positive number", at)?);
    };
    let unit = p.next_token();
    let unit_ms = match &unit.token {
        Token::Word(w) if w.quote_style.is_none() => unit_millis(&w.value),
        _ => None,
    };
    let Some(unit_ms) = unit_ms else {
        return Ok(p.expected("MILLISECONDS, SECONDS, MINUTES, HOURS or DAYS", unit)?);
    };
    match number.checked_mul(unit_ms) {
        Some(millis) => Ok(Duration { millis }),
        None => Ok(p.expected("a shorter length of time", at)?),
    }
}

/// `WINDOW TUMBLING (SIZE d [, RETENTION d] [, GRACE PERIOD d])`,
/// `WINDOW HOPPING (SIZE d, ADVANCE BY d [, ...])` or
/// `WINDOW SESSION (d [, ...])`.
fn parse_window(p: &mut Parser) -> Result<WindowSpec> {
    p.next_token();
    let kind_word = p.next_token();
    p.expect_token(&Token::LParen)?;
    let kind = if is_word(&kind_word.token, "TUMBLING") {
        expect_word(p, "SIZE")?;
        WindowKind::Tumbling {
            size: parse_duration(p)?,
        }
    } else if is_word(&kind_word.token, "HOPPING") {
        expect_word(p, "SIZE")?;
        let size = parse_duration(p)?;
        p.expect_token(&Token::Comma)?;
        expect_word(p, "ADVANCE")?;
        expect_word(p, "BY")?;
        WindowKind::Hopping {
            size,
            advance: parse_duration(p)?,
        }
    } else {
        WindowKind::Session {
            gap: parse_duration(p)?,
        }
    };
    let mut window = WindowSpec {
        kind,
        retention: None,
        grace: None,
    };
    while p.consume_token(&Token::Comma) {
        if parse_word(p, "RETENTION") {
            window.retention = Some(parse_duration(p)?);
        } else if parse_word(p, "GRACE") {
            expect_word(p, "PERIOD")?;
            window.grace = Some(parse_duration(p)?);
        } else {
            return Ok(p.expected("RETENTION or GRACE PERIOD", p.peek_token())?);
        }
    }
    p.expect_token(&Token::RParen)?;
    Ok(window)
}

/// `WITHIN d` or `WITHIN (before, after)`, then `[GRACE PERIOD d]`.
fn parse_within(p: &mut Parser) -> Result<JoinWithin> {
    p.next_token();
    let (before, after) = if p.consume_token(&Token::LParen) {
        let before = parse_duration(p)?;
        p.expect_token(&Token::Comma)?;
        let after = parse_duration(p)?;
        p.expect_token(&Token::RParen)?;
        (before, after)
    } else {
        let both = parse_duration(p)?;
        (both, both)
    };
    let grace = if parse_word(p, "GRACE") {
        expect_word(p, "PERIOD")?;
        Some(parse_duration(p)?)
    } else {
        None
    };
    Ok(JoinWithin {
        join: 0,
        before,
        after,
        grace,
    })
}

/// The one Postgres statement in `sql`, for tests.
#[cfg(test)]
pub(crate) fn sql_statement(sql: &str) -> Statement {
    match parse_sql(sql).unwrap().pop() {
        Some(EddyStatement::Sql(statement)) => *statement,
        other => panic!("not a Postgres statement: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> EddyStatement {
        let mut statements = parse_sql(sql).unwrap();
        assert_eq!(statements.len(), 1, "{sql}");
        statements.remove(0)
    }

    fn syntax_error(sql: &str) -> String {
        match parse_sql(sql) {
            Err(SqlError::Syntax(e) | SqlError::SyntaxAt { error: e, .. }) => e.to_string(),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_say_where_they_are() {
        for (sql, at) in [
            ("SELECT * FORM t", 15),
            ("SELECT 1;\nSELEC 2", 11),
            ("CREATE STREAM s (a INT) WITH (x='y' z)", 37),
            ("SELECT 'é' é é", 14),
        ] {
            match parse_sql(sql) {
                Err(SqlError::SyntaxAt { position, .. }) => assert_eq!(position, at, "{sql}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    /// The cursor statements psql, psycopg and pgjdbc send.
    #[test]
    fn cursor_statements_parse() {
        for sql in [
            "DECLARE _psql_cursor NO SCROLL CURSOR FOR SELECT * FROM t",
            "DECLARE \"c1\" CURSOR WITHOUT HOLD FOR SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT a FROM t ORDER BY a",
            "FETCH FORWARD 100 FROM _psql_cursor",
            "FETCH 5 IN c",
            "FETCH ALL FROM c",
            "FETCH NEXT FROM c",
            "FETCH FORWARD ALL FROM c",
            "CLOSE c",
            "CLOSE ALL",
        ] {
            assert!(matches!(one(sql), EddyStatement::Sql(_)), "{sql}");
        }
        // Postgres's forms without a count, or without FROM.
        for (sql, parsed) in [
            ("FETCH c", "FETCH NEXT FROM c"),
            ("FETCH FORWARD FROM c", "FETCH NEXT FROM c"),
            ("FETCH BACKWARD IN c", "FETCH PRIOR FROM c"),
            ("FETCH 10 c", "FETCH 10 FROM c"),
            ("FETCH ALL c;", "FETCH ALL FROM c"),
            ("MOVE c", "MOVE NEXT FROM c"),
        ] {
            assert_eq!(one(sql).to_string(), parsed, "{sql}");
        }
        for sql in ["MOVE FORWARD 10 FROM c", "MOVE 3 IN c", "move all from c"] {
            let statement = one(sql);
            assert!(
                matches!(&statement, EddyStatement::Move(f) if matches!(**f, Statement::Fetch { .. })),
                "{sql}"
            );
            assert!(statement.to_string().starts_with("MOVE "), "{statement}");
        }
    }

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
    fn catalog_queries_are_rewritten_and_the_rest_are_not() {
        let EddyStatement::Sql(statement) = one("SELECT 'orders'::regclass::oid; ") else {
            panic!()
        };
        assert!(!statement.to_string().contains("::REGCLASS"), "{statement}");
        // A relation named pg_... declared by a user is Eddy's to parse.
        assert!(matches!(
            one("CREATE STREAM pg_events (id BIGINT KEY) WITH (kafka_topic='e', value_format='JSON')"),
            EddyStatement::CreateRelation(_)
        ));
        // The catalog query is cut out of a multi-statement string by position.
        let stmts = parse_sql("SELECT 1;\n  SELECT relname FROM pg_class; SELECT 2").unwrap();
        assert_eq!(stmts.len(), 3);
        assert!(stmts[1].to_string().contains("pg_class"));
    }

    #[test]
    fn flush_is_a_statement() {
        let stmts = parse_sql("INSERT INTO t VALUES (1); flush; SELECT 1").unwrap();
        assert_eq!(stmts.len(), 3);
        assert_eq!(stmts[1], EddyStatement::Flush);
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
    fn subscribe_parses_in_materializes_forms() {
        let EddyStatement::Subscribe(plain) = one("SUBSCRIBE TO orders") else {
            panic!()
        };
        assert_eq!(plain.query.to_string(), "SELECT * FROM orders");
        assert!(plain.snapshot && !plain.progress);
        let EddyStatement::Subscribe(query) = one(
            "SUBSCRIBE (SELECT a, count(*) FROM t GROUP BY a) WITH (SNAPSHOT = false, PROGRESS)",
        ) else {
            panic!()
        };
        assert!(!query.snapshot && query.progress);
        let again = one(&EddyStatement::Subscribe(query.clone()).to_string());
        assert_eq!(again, EddyStatement::Subscribe(query));
        assert!(parse_sql("SUBSCRIBE t WITH (COLOUR = true)").is_err());
        assert!(parse_sql("SUBSCRIBE t WITH (SNAPSHOT = 3)").is_err());
        assert!(parse_sql("SUBSCRIBE t AS OF 3").is_err());

        let EddyStatement::DeclareSubscribe { name, hold, .. } =
            one("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SUBSCRIBE (SELECT * FROM t)")
        else {
            panic!()
        };
        assert_eq!((name.value.as_str(), hold), ("c", true));
        let declared = one("DECLARE _psql_cursor NO SCROLL CURSOR FOR\n\
             SELECT a FROM t WHERE a > 1 EMIT CHANGES LIMIT 3");
        let EddyStatement::DeclareEmitChanges { name, hold, query } = &declared else {
            panic!("{declared:?}")
        };
        assert_eq!((name.value.as_str(), *hold), ("_psql_cursor", false));
        assert_eq!(query.clauses.emit, Some(Emit::Changes));
        assert_eq!(one(&declared.to_string()), declared);
        assert!(parse_sql("DECLARE c CURSOR FOR SELECT 1 EMIT FINAL CHANGES").is_err());
        for (sql, millis) in [
            ("FETCH 10 c WITH (timeout = '1s')", 1_000),
            ("FETCH ALL FROM c WITH (TIMEOUT = '250ms')", 250),
            ("FETCH c WITH (timeout = '0s')", 0),
        ] {
            let EddyStatement::FetchWithTimeout { timeout, .. } = one(sql) else {
                panic!("{sql}")
            };
            assert_eq!(timeout.as_millis(), millis, "{sql}");
        }
        assert!(parse_sql("FETCH c WITH (timeout = 'soon')").is_err());
        assert!(parse_sql("FETCH c WITH (colour = '1s')").is_err());
        let EddyStatement::CopySubscribe(copied) =
            one("COPY (SUBSCRIBE t WITH (PROGRESS)) TO STDOUT WITH (FORMAT text)")
        else {
            panic!()
        };
        assert!(copied.progress);
        assert!(parse_sql("COPY (SUBSCRIBE t) TO STDOUT WITH (FORMAT binary)").is_err());
    }

    #[test]
    fn computed_columns_parse_with_or_without_a_type() {
        for sql in [
            "CREATE STREAM s (a INT, p AS PROCTIME()) WITH (connector='datagen')",
            "CREATE STREAM s (a INT, p TIMESTAMPTZ AS (proctime())) WITH (connector='datagen')",
        ] {
            let EddyStatement::CreateRelation(stream) = one(sql) else {
                panic!()
            };
            let p = &stream.columns[1];
            assert!(matches!(p.data_type, DataType::Timestamp(None, _)));
            assert!(matches!(
                &p.options[0].option,
                ColumnOption::Generated { generation_expr: Some(Expr::Function(f)), .. }
                    if f.name.to_string().eq_ignore_ascii_case("proctime")
            ));
            let again = one(&stream.to_string());
            assert_eq!(again, EddyStatement::CreateRelation(stream));
        }
    }

    #[test]
    fn streams_and_tables_parse_as_themselves() {
        let EddyStatement::CreateRelation(stream) = one(
            "CREATE STREAM s (id BIGINT KEY, name VARCHAR, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (kafka_topic='t', value_format='JSON', fields.id.kind='sequence')",
        ) else {
            panic!()
        };
        assert_eq!(stream.kind, RelationKind::Stream);
        assert_eq!(stream.columns.len(), 3);
        assert_eq!(stream.key_columns, vec![Ident::new("id")]);
        assert_eq!(stream.watermark.as_ref().unwrap().column, Ident::new("ts"));
        assert_eq!(stream.options.len(), 3);
        // Printed back, it parses to the same statement.
        let again = one(&stream.to_string());
        assert_eq!(again, EddyStatement::CreateRelation(stream));

        let EddyStatement::CreateRelation(table) = one(
            "CREATE OR REPLACE TABLE IF NOT EXISTS u (id BIGINT, n INT NOT NULL DEFAULT 0, \
             PRIMARY KEY (id)) WITH (kafka_topic='u', value_format='JSON')",
        ) else {
            panic!()
        };
        assert!(table.or_replace && table.if_not_exists);
        assert_eq!(table.kind, RelationKind::Table);
        assert_eq!(table.constraints.len(), 1);
        assert_eq!(table.columns[1].options.len(), 2);
    }

    #[test]
    fn persistent_queries_carry_their_clauses() {
        let EddyStatement::CreateRelation(csas) =
            one("CREATE STREAM s2 AS SELECT * FROM s WHERE id > 1 PARTITION BY name EMIT CHANGES")
        else {
            panic!()
        };
        let query = csas.query.as_ref().unwrap();
        assert_eq!(query.clauses.emit, Some(Emit::Changes));
        assert_eq!(query.clauses.partition_by.len(), 1);
        assert_eq!(query.query.to_string(), "SELECT * FROM s WHERE id > 1");

        let EddyStatement::CreateRelation(ctas) = one(
            "CREATE TABLE t2 WITH (kafka_topic='x') AS SELECT id, count(*) FROM s \
             WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 2 HOURS, GRACE PERIOD 10 SECONDS) \
             WHERE id > 0 GROUP BY id EMIT FINAL",
        ) else {
            panic!()
        };
        let clauses = &ctas.query.as_ref().unwrap().clauses;
        assert_eq!(
            clauses.window,
            Some(WindowSpec {
                kind: WindowKind::Tumbling {
                    size: Duration { millis: 60_000 }
                },
                retention: Some(Duration { millis: 7_200_000 }),
                grace: Some(Duration { millis: 10_000 }),
            })
        );
        assert_eq!(clauses.emit, Some(Emit::Final));
        let again = one(&ctas.to_string());
        assert_eq!(again, EddyStatement::CreateRelation(ctas));
    }

    #[test]
    fn windows_and_joins_parse() {
        let EddyStatement::Query(query) = one(
            "SELECT a.id, count(*) FROM a JOIN b WITHIN (1 SECOND, 10 SECONDS) GRACE PERIOD 1 MINUTE \
             ON a.id = b.id LEFT JOIN c WITHIN 2 HOURS ON c.id = a.id \
             WINDOW HOPPING (SIZE 5 MINUTES, ADVANCE BY 1 MINUTE) GROUP BY a.id EMIT CHANGES",
        ) else {
            panic!()
        };
        assert_eq!(query.clauses.within.len(), 2);
        assert_eq!(query.clauses.within[0].join, 0);
        assert_eq!(query.clauses.within[0].after, Duration { millis: 10_000 });
        assert_eq!(
            query.clauses.within[0].grace,
            Some(Duration { millis: 60_000 })
        );
        assert_eq!(query.clauses.within[1].join, 1);
        assert!(matches!(
            query.clauses.window.unwrap().kind,
            WindowKind::Hopping { .. }
        ));
        let EddyStatement::CreateView { clauses, .. } =
            one("CREATE MATERIALIZED VIEW v AS SELECT k, count(*) FROM s \
             WINDOW SESSION (30 SECONDS) GROUP BY k EMIT ON WINDOW CLOSE")
        else {
            panic!()
        };
        assert_eq!(clauses.emit, Some(Emit::OnWindowClose));
        // Postgres's own WINDOW and WITHIN GROUP are left to sqlparser.
        assert!(matches!(
            one(
                "SELECT sum(x) OVER w, percentile_cont(0.5) WITHIN GROUP (ORDER BY x) \
                 FROM t WINDOW w AS (PARTITION BY y)"
            ),
            EddyStatement::Sql(_)
        ));
    }

    #[test]
    fn ksql_statements_parse() {
        let stmts = parse_sql(
            "DROP STREAM s2 DELETE TOPIC; DROP TABLE IF EXISTS a, b CASCADE; \
             TERMINATE CSAS_S2_1; TERMINATE ALL; SHOW STREAMS; LIST QUERIES; \
             SHOW TABLES EXTENDED; DESCRIBE s; DESCRIBE EXTENDED s",
        )
        .unwrap();
        assert!(matches!(&stmts[0], EddyStatement::Drop(d) if d.delete_topic));
        assert!(
            matches!(&stmts[1], EddyStatement::Drop(d) if d.cascade && d.if_exists && d.names.len() == 2)
        );
        assert_eq!(
            stmts[2],
            EddyStatement::Terminate(Some(Ident::new("CSAS_S2_1")))
        );
        assert_eq!(stmts[3], EddyStatement::Terminate(None));
        assert_eq!(
            stmts[4],
            EddyStatement::Show {
                listing: Listing::Streams,
                extended: false
            }
        );
        assert!(matches!(
            &stmts[5],
            EddyStatement::Show {
                listing: Listing::Queries,
                ..
            }
        ));
        assert!(matches!(
            &stmts[6],
            EddyStatement::Show {
                listing: Listing::Tables,
                extended: true
            }
        ));
        assert!(matches!(
            &stmts[7],
            EddyStatement::Describe {
                extended: false,
                ..
            }
        ));
        assert!(matches!(
            &stmts[8],
            EddyStatement::Describe { extended: true, .. }
        ));
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let e = syntax_error("SELEC 1");
        assert!(e.contains("SELEC"), "{e}");
        let e = syntax_error("CREATE STREAM s (id BIGINT KEY) WITH (kafka_topic 't')");
        assert!(e.contains("found: 't' at Line: 1, Column: 51"), "{e}");
        let e = syntax_error("SELECT * FROM s WINDOW TUMBLING (SIZE -1 SECONDS)");
        assert!(e.contains("length of time"), "{e}");
        let e = syntax_error("SELECT * FROM s WINDOW TUMBLING (SIZE 1 FORTNIGHT)");
        assert!(e.contains("FORTNIGHT"), "{e}");
        let e = syntax_error("SELECT * FROM s EMIT SOMETIMES");
        assert!(e.contains("SOMETIMES"), "{e}");
        let e = syntax_error("TERMINATE");
        assert!(e.contains("EOF"), "{e}");
        let e = syntax_error("DROP STREAM s DELETE TOPICS");
        assert!(e.contains("TOPICS"), "{e}");
        assert!(parse_sql("SELECT 'unterminated").is_err());
    }

    #[test]
    fn print_takes_a_topic_as_written_and_its_options() {
        let EddyStatement::Print(print) = one("PRINT PageViews FROM BEGINNING SAMPLE 3 LIMIT 7")
        else {
            panic!("not a PRINT");
        };
        assert_eq!(print.topic, "PageViews");
        assert!(print.from_beginning);
        assert_eq!((print.interval, print.limit), (3, Some(7)));
        let EddyStatement::Print(print) = one("print 'my.topic'") else {
            panic!("not a PRINT");
        };
        assert_eq!(
            (print.topic.as_str(), print.from_beginning),
            ("my.topic", false)
        );
        assert_eq!(print.to_string(), "PRINT 'my.topic'");
        assert!(syntax_error("PRINT t LIMIT x").contains("a count after LIMIT"));
    }

    #[test]
    fn insert_with_ksql_clauses_is_a_persistent_query() {
        let EddyStatement::InsertQuery { target, query } =
            one("INSERT INTO merged SELECT * FROM a WHERE x > 1 EMIT CHANGES")
        else {
            panic!("not a persistent insert");
        };
        assert_eq!(target.to_string(), "merged");
        assert_eq!(query.clauses.emit, Some(Emit::Changes));
        assert!(matches!(
            one("INSERT INTO t SELECT * FROM a"),
            EddyStatement::Sql(_)
        ));
        assert!(matches!(
            one("INSERT INTO t VALUES (1)"),
            EddyStatement::Sql(_)
        ));
    }

    #[test]
    fn backquotes_quote_identifiers_outside_strings() {
        let EddyStatement::Sql(statement) = one("SELECT `My Col`, '`x`' FROM `T`") else {
            panic!("not SQL");
        };
        assert_eq!(statement.to_string(), "SELECT \"My Col\", '`x`' FROM \"T\"");
    }

    #[test]
    fn topk_becomes_a_slice_of_an_ordered_array_agg() {
        let EddyStatement::Sql(statement) = one("SELECT TOPK(a + 1, 3), TOPKDISTINCT(b, 2) FROM t")
        else {
            panic!("not SQL");
        };
        let text = statement.to_string();
        assert!(
            text.contains(
                "array_slice(array_agg(a + 1 ORDER BY a + 1 DESC NULLS LAST), 1, least(3, \
                 count(a + 1)))"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "array_slice(array_agg(DISTINCT b ORDER BY b DESC NULLS LAST), 1, least(2, \
                 count(DISTINCT b)))"
            ),
            "{text}"
        );
        // A relation called so is not a call.
        let EddyStatement::Sql(statement) = one("INSERT INTO topk (a) SELECT s.topk FROM s") else {
            panic!("not SQL");
        };
        assert_eq!(
            statement.to_string(),
            "INSERT INTO topk (a) SELECT s.topk FROM s"
        );
    }
}
