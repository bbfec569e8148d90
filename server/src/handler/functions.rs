//! ksqlDB's `SHOW FUNCTIONS` and `DESCRIBE FUNCTION name`: the functions
//! queries can call, as the planner knows them.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::{Documentation, Signature};
use datafusion::sql::sqlparser::ast::Ident;

use super::{text_rows, text_schema, Output};
use crate::engine::Engine;
use crate::error::{EddyError, Result};

/// Aggregates the parser rewrites into others: name, arguments, what.
const REWRITTEN: [(&str, &str, &str); 7] = [
    (
        "LATEST_BY_OFFSET",
        "Any",
        "The value of the group's last record by offset, NULLs skipped: \
         last_value(x ORDER BY rowoffset, rowpartition) IGNORE NULLS.",
    ),
    (
        "EARLIEST_BY_OFFSET",
        "Any",
        "The value of the group's first record by offset, NULLs skipped: \
         first_value(x ORDER BY rowoffset, rowpartition) IGNORE NULLS.",
    ),
    (
        "COLLECT_LIST",
        "Any",
        "The group's values as an array, records in offset order, the first 1,000: \
         array_slice(array_agg(x ORDER BY rowoffset, rowpartition), 1, 1000).",
    ),
    (
        "COLLECT_SET",
        "Any",
        "The group's distinct values as an array, in order, the first 1,000: \
         array_slice(array_agg(DISTINCT x ORDER BY x), 1, 1000).",
    ),
    (
        "TOPK",
        "Any, Int64",
        "The group's k greatest values, greatest first, NULLs skipped ([] when all are): \
         array_slice(array_agg(x ORDER BY x DESC NULLS LAST), 1, least(k, count(x))).",
    ),
    (
        "TOPKDISTINCT",
        "Any, Int64",
        "The group's k greatest distinct values, greatest first, NULLs skipped ([] when all \
         are): array_slice(array_agg(DISTINCT x ORDER BY x DESC NULLS LAST), 1, \
         least(k, count(DISTINCT x))).",
    ),
    (
        "HISTOGRAM",
        "Any",
        "Each distinct non-NULL value of the group, as text, mapped to its count, the \
         first 1,000 values: histogram(array_agg(x ORDER BY x)).",
    ),
];

pub fn list_schema() -> SchemaRef {
    text_schema(&["name", "type"])
}

pub fn describe_schema() -> SchemaRef {
    text_schema(&["property", "value"])
}

/// Each function by name (its aliases too), with its kind.
pub fn handle_show_functions(engine: &Engine) -> Result<Output> {
    let state = engine.session_state();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut add = |names: Vec<&String>, kind: &str| {
        rows.extend(
            names
                .into_iter()
                .map(|n| vec![n.to_uppercase(), kind.to_owned()]),
        );
    };
    add(state.scalar_functions().keys().collect(), "SCALAR");
    add(state.aggregate_functions().keys().collect(), "AGGREGATE");
    add(state.window_functions().keys().collect(), "WINDOW");
    add(state.table_functions().keys().collect(), "TABLE");
    // A rewritten aggregate is one, whatever the scalar it is built on.
    rows.retain(|row| !REWRITTEN.iter().any(|(name, _, _)| *name == row[0]));
    for (name, _, _) in REWRITTEN {
        rows.push(vec![name.to_owned(), "AGGREGATE".to_owned()]);
    }
    rows.sort();
    rows.dedup();
    text_rows(list_schema(), &rows, "SHOW")
}

/// One function's kind, signatures, aliases and description.
pub fn handle_describe_function(engine: &Engine, name: &Ident) -> Result<Output> {
    if let Some((upper, arguments, description)) = REWRITTEN
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(&name.value))
    {
        let rows = [
            ["name", upper],
            ["type", "AGGREGATE"],
            ["arguments", arguments],
            ["description", description],
        ]
        .map(|r| r.map(str::to_owned).to_vec());
        return text_rows(describe_schema(), &rows, "DESCRIBE");
    }
    let state = engine.session_state();
    let key = name.value.to_lowercase();
    let (kind, canonical, aliases, signature, docs): (
        &str,
        String,
        Vec<String>,
        Option<&Signature>,
        Option<&Documentation>,
    ) = if let Some(f) = state.scalar_functions().get(&key) {
        let (n, a) = (f.name().to_owned(), f.aliases().to_vec());
        ("SCALAR", n, a, Some(f.signature()), f.documentation())
    } else if let Some(f) = state.aggregate_functions().get(&key) {
        let (n, a) = (f.name().to_owned(), f.aliases().to_vec());
        ("AGGREGATE", n, a, Some(f.signature()), f.documentation())
    } else if let Some(f) = state.window_functions().get(&key) {
        let (n, a) = (f.name().to_owned(), f.aliases().to_vec());
        ("WINDOW", n, a, Some(f.signature()), f.documentation())
    } else if state.table_functions().contains_key(&key) {
        ("TABLE", key.clone(), Vec::new(), None, None)
    } else {
        return Err(EddyError::UndefinedFunction(name.value.clone()));
    };
    let mut rows = vec![
        vec!["name".to_owned(), name.value.to_uppercase()],
        vec!["type".to_owned(), kind.to_owned()],
    ];
    if canonical != key {
        rows.push(vec!["alias of".to_owned(), canonical.to_uppercase()]);
    }
    let aliases: Vec<String> = aliases.iter().map(|a| a.to_uppercase()).collect();
    if !aliases.is_empty() {
        rows.push(vec!["aliases".to_owned(), aliases.join(", ")]);
    }
    for form in signature
        .map(|s| s.type_signature.to_string_repr())
        .unwrap_or_default()
    {
        rows.push(vec!["arguments".to_owned(), form]);
    }
    if let Some(docs) = docs {
        rows.push(vec!["description".to_owned(), docs.description.clone()]);
        rows.push(vec!["example".to_owned(), docs.syntax_example.clone()]);
    }
    text_rows(describe_schema(), &rows, "DESCRIBE")
}
