//! The ksqlDB pre-pass: rewrites ksqlDB statements into the Postgres forms
//! Eddy carries them in, before the Postgres-dialect parser sees them.
//!
//! - `CREATE STREAM` parses as `CREATE TABLE` with the option
//!   `eddy_kind = 'stream'`, and a stream's `KEY` columns as `PRIMARY KEY`.
//! - `EMIT CHANGES` after `CREATE ... AS SELECT` becomes the option
//!   `eddy_emit_changes = 'true'`.
//! - `DROP STREAM|TABLE ... DELETE TOPIC` parses as `DROP ... PURGE`.
//! - `TERMINATE id` and `TERMINATE ALL` travel as `DROP STAGE id`, a
//!   statement Postgres does not have.
//! - `LIST x` is `SHOW x`; `DESCRIBE EXTENDED` is parsed as it stands.

use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr, Ident, ObjectName, ObjectType, SqlOption, Statement, Value,
};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Word};

use crate::{Result, SqlError};

/// Option naming what `CREATE TABLE` declares: `stream` or `table`.
pub const KIND_OPTION: &str = "eddy_kind";
/// Option set on `CREATE ... AS SELECT ... EMIT CHANGES`.
pub const EMIT_CHANGES_OPTION: &str = "eddy_emit_changes";

/// What the pre-pass learned that the Postgres tokens no longer show.
#[derive(Debug, Default)]
pub struct Rewrite {
    stream: bool,
    emit_changes: bool,
    delete_topic: bool,
    /// `TERMINATE`: the query id, or `None` for `TERMINATE ALL`.
    terminate: Option<Option<String>>,
}

fn word(token: &Token) -> Option<&Word> {
    match token {
        Token::Word(w) => Some(w),
        _ => None,
    }
}

fn is_keyword(token: &Token, keyword: &str) -> bool {
    word(token).is_some_and(|w| w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
}

fn is_blank(token: &Token) -> bool {
    matches!(token, Token::Whitespace(_))
}

fn new_word(value: &str) -> Token {
    Token::make_keyword(value)
}

/// Rewrites one statement's tokens (no trailing semicolon).
pub fn rewrite(tokens: &mut Vec<TokenWithSpan>) -> Result<Rewrite> {
    let mut rewrite = Rewrite::default();
    // Positions of the tokens that are not whitespace or comments.
    let words: Vec<usize> = (0..tokens.len())
        .filter(|&i| !is_blank(&tokens[i].token))
        .collect();
    let at = |n: usize| words.get(n).map(|&i| &tokens[i].token);
    let first_is = |n: usize, keyword: &str| at(n).is_some_and(|t| is_keyword(t, keyword));

    if first_is(0, "TERMINATE") {
        let target = match (at(1), at(2)) {
            (Some(t), None) if is_keyword(t, "ALL") => None,
            (Some(Token::Word(w)), None) => Some(w.value.clone()),
            _ => {
                return Err(SqlError::InvalidDefinition(
                    "TERMINATE takes one query id, or ALL".into(),
                ))
            }
        };
        rewrite.terminate = Some(target);
        tokens.clear();
        return Ok(rewrite);
    }
    if first_is(0, "LIST")
        && at(1).is_some_and(|t| {
            ["STREAMS", "TABLES", "QUERIES", "TOPICS"]
                .iter()
                .any(|k| is_keyword(t, k))
        })
    {
        tokens[words[0]].token = new_word("SHOW");
        return Ok(rewrite);
    }

    let mut remove = Vec::new();
    let last = words.len();
    // A trailing `EMIT CHANGES`.
    if last >= 2 && first_is(last - 2, "EMIT") && first_is(last - 1, "CHANGES") {
        if !first_is(0, "CREATE") {
            return Err(SqlError::Unsupported(
                "push queries (SELECT ... EMIT CHANGES); create a materialized view and query it"
                    .into(),
            ));
        }
        rewrite.emit_changes = true;
        remove.extend([words[last - 2], words[last - 1]]);
    }
    // A trailing `DELETE TOPIC` on DROP.
    if first_is(0, "DROP")
        && last >= 2
        && first_is(last - 2, "DELETE")
        && first_is(last - 1, "TOPIC")
    {
        rewrite.delete_topic = true;
        remove.extend([words[last - 2], words[last - 1]]);
    }
    // CREATE [OR REPLACE] STREAM.
    if first_is(0, "CREATE") {
        let name_at = if first_is(1, "OR") && first_is(2, "REPLACE") {
            3
        } else {
            1
        };
        if first_is(name_at, "STREAM") {
            rewrite.stream = true;
            tokens[words[name_at]].token = new_word("TABLE");
            mark_stream_keys(tokens, &words);
        }
        join_dotted_option_names(tokens);
    }
    remove.sort_unstable();
    for i in remove.into_iter().rev() {
        tokens.remove(i);
    }
    Ok(rewrite)
}

/// In `WITH (...)`, a dotted option name (datagen's `fields.id.kind`)
/// becomes one quoted name, as the Postgres parser takes only single words.
fn join_dotted_option_names(tokens: &mut Vec<TokenWithSpan>) {
    let significant = |tokens: &[TokenWithSpan], from: usize| {
        (from..tokens.len()).find(|&i| !is_blank(&tokens[i].token))
    };
    let mut i = 0;
    while let Some(at) = significant(tokens, i) {
        i = at + 1;
        if !is_keyword(&tokens[at].token, "WITH") {
            continue;
        }
        let Some(open) = significant(tokens, at + 1) else {
            return;
        };
        if tokens[open].token != Token::LParen {
            continue;
        }
        let mut depth = 0;
        let mut n = open;
        while n < tokens.len() {
            match &tokens[n].token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                Token::Word(first)
                    if depth == 1
                        && tokens.get(n + 1).is_some_and(|t| t.token == Token::Period) =>
                {
                    let mut name = first.value.clone();
                    let mut end = n + 1;
                    while let (Some(Token::Period), Some(Token::Word(part))) = (
                        tokens.get(end).map(|t| &t.token),
                        tokens.get(end + 1).map(|t| &t.token),
                    ) {
                        name.push('.');
                        name.push_str(&part.value);
                        end += 2;
                    }
                    tokens[n].token = Token::Word(Word {
                        value: name,
                        quote_style: Some('"'),
                        keyword: datafusion::sql::sqlparser::keywords::Keyword::NoKeyword,
                    });
                    tokens.drain(n + 1..end);
                }
                _ => {}
            }
            n += 1;
        }
        i = n;
    }
}

/// In a stream's column list, a `KEY` column option (not `PRIMARY KEY`)
/// becomes `PRIMARY KEY`: the key columns, which the catalog reads back.
fn mark_stream_keys(tokens: &mut Vec<TokenWithSpan>, words: &[usize]) {
    let mut depth = 0;
    let mut inserts = Vec::new();
    for (n, &i) in words.iter().enumerate() {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 1 && is_keyword(t, "KEY") => {
                let after_primary = n > 0 && is_keyword(&tokens[words[n - 1]].token, "PRIMARY");
                if !after_primary {
                    inserts.push(i);
                }
            }
            _ => {}
        }
    }
    for i in inserts.into_iter().rev() {
        tokens.insert(
            i,
            TokenWithSpan::wrap(Token::Whitespace(
                datafusion::sql::sqlparser::tokenizer::Whitespace::Space,
            )),
        );
        tokens.insert(i, TokenWithSpan::wrap(new_word("PRIMARY")));
    }
}

fn option(key: &str, value: &str) -> SqlOption {
    SqlOption::KeyValue {
        key: Ident::new(key),
        value: Expr::value(Value::SingleQuotedString(value.into())),
    }
}

/// Carries what the pre-pass learned into the parsed statement.
pub fn annotate(statement: &mut Statement, rewrite: Rewrite) -> Result<()> {
    match statement {
        Statement::CreateTable(create) => {
            let mut extra = Vec::new();
            if rewrite.stream {
                extra.push(option(KIND_OPTION, "stream"));
            }
            if rewrite.emit_changes {
                if create.query.is_none() {
                    return Err(SqlError::InvalidDefinition(
                        "EMIT CHANGES belongs after CREATE ... AS SELECT".into(),
                    ));
                }
                extra.push(option(EMIT_CHANGES_OPTION, "true"));
            }
            if extra.is_empty() {
                return Ok(());
            }
            match &mut create.table_options {
                CreateTableOptions::With(options) => options.extend(extra),
                CreateTableOptions::None => create.table_options = CreateTableOptions::With(extra),
                _ => {
                    return Err(SqlError::InvalidDefinition(
                        "options of a stream go in WITH (...)".into(),
                    ))
                }
            }
        }
        Statement::Drop { purge, .. } if rewrite.delete_topic => *purge = true,
        _ if rewrite.emit_changes => {
            return Err(SqlError::Unsupported(
                "EMIT CHANGES outside CREATE ... AS SELECT".into(),
            ))
        }
        _ if rewrite.delete_topic => {
            return Err(SqlError::InvalidDefinition(
                "DELETE TOPIC belongs after DROP STREAM or DROP TABLE".into(),
            ))
        }
        _ => {}
    }
    Ok(())
}

/// The statement a `TERMINATE` travels as, if `rewrite` saw one.
pub fn terminate_statement(rewrite: &Rewrite) -> Option<Statement> {
    let target = rewrite.terminate.as_ref()?;
    Some(Statement::Drop {
        object_type: ObjectType::Stage,
        if_exists: false,
        names: target
            .iter()
            .map(|id| ObjectName::from(vec![Ident::new(id)]))
            .collect(),
        cascade: false,
        restrict: false,
        purge: false,
        temporary: false,
        table: None,
    })
}

/// `TERMINATE`: `Some(None)` for ALL, `Some(Some(id))` for one query.
pub fn as_terminate(statement: &Statement) -> Option<Option<String>> {
    match statement {
        Statement::Drop {
            object_type: ObjectType::Stage,
            names,
            ..
        } => Some(names.first().map(|n| n.to_string())),
        _ => None,
    }
}
