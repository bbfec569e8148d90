//! SET, SHOW and RESET of session settings.
//!
//! Settings live in the connection's metadata, under lower-case names;
//! that is also where the result encoder reads DateStyle and
//! extra_float_digits from.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Reset, ResetStatement, Set,
    Statement, Value, VisitMut, VisitorMut,
};
use pgwire::api::results::Tag;

use super::{text_schema, Output};
use crate::engine::PG_VERSION;
use crate::error::{EddyError, Result};

/// Settings a client may read, with their defaults.
const SETTINGS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_table_access_method", "heap"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "on"),
    // Eddy compiles no queries to machine code.
    ("jit", "off"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("lc_messages", "C"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("max_index_keys", "32"),
    ("search_path", "\"$user\", public"),
    ("query_memory_limit", "1GB"),
    ("server_encoding", "UTF8"),
    ("server_version", PG_VERSION),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// Settings a client may change. The rest are read-only.
const WRITABLE: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "default_transaction_isolation",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "intervalstyle",
    "jit",
    "lock_timeout",
    "query_memory_limit",
    "search_path",
    "statement_timeout",
    "timezone",
];

fn canonical_name(words: &str) -> String {
    // ksqlDB quotes its property names: SET 'auto.offset.reset' = '...'.
    let words = words.trim_matches('\'');
    match words.to_lowercase().as_str() {
        "time zone" => "timezone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        "session authorization" => "session_authorization".into(),
        other => other.to_owned(),
    }
}

/// Defaults the server was started with (`--statement-timeout`), over the
/// built-in ones.
static SERVER_DEFAULTS: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();

/// Sets the server's own defaults for some settings, once, at startup.
pub fn set_server_defaults(defaults: &[(&'static str, &str)]) {
    let defaults = defaults
        .iter()
        .map(|&(name, value)| (name, &*Box::leak(value.to_owned().into_boxed_str())))
        .collect();
    let _ = SERVER_DEFAULTS.set(defaults);
}

/// A setting's value where no session set it.
fn server_default(name: &str) -> Option<&'static str> {
    if let Some(value) = SERVER_DEFAULTS.get().and_then(|d| d.get(name)) {
        return Some(value);
    }
    SETTINGS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn lookup(vars: &HashMap<String, String>, name: &str) -> Option<String> {
    if let Some(value) = session_value(vars, name) {
        return Some(value);
    }
    server_default(name).map(str::to_owned)
}

/// Parses a memory size as Postgres's settings write it: a number of
/// bytes, or a number with kB, MB, GB or TB (each 1024 of the one
/// before; KiB, MiB, GiB and TiB are accepted too).
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a memory size such as 256MB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kb" | "kib" => 10,
        "mb" | "mib" => 20,
        "gb" | "gib" => 30,
        "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown memory unit \"{other}\": use kB, MB, GB or TB"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

/// A memory size as Postgres shows one: in the largest unit that holds
/// it whole (`1GB`, `64MB`, `1536kB`).
pub fn format_memory_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TB"), (30, "GB"), (20, "MB"), (10, "kB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// The session's `query_memory_limit`, in bytes.
pub fn memory_limit(vars: &HashMap<String, String>) -> usize {
    lookup(vars, "query_memory_limit")
        .and_then(|v| parse_memory_size(&v).ok())
        .map_or(usize::MAX, |bytes| bytes as usize)
}

/// A time setting's value in Postgres's units: a number of milliseconds,
/// or a number with `us`, `ms`, `s`, `min`, `h` or `d`.
pub fn parse_time_setting(text: &str) -> Option<Duration> {
    let (number, unit) = eddy_sql::number_and_unit(text)?;
    let millis = match unit.as_str() {
        "" | "ms" => number,
        "us" => number / 1_000.0,
        "s" => number * 1_000.0,
        "min" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        "d" => number * 86_400_000.0,
        _ => return None,
    };
    // Postgres's bound: INT_MAX milliseconds.
    (millis.is_finite() && millis <= i32::MAX as f64).then(|| Duration::from_secs_f64(millis / 1e3))
}

/// The session's limit in the time setting `name` (`statement_timeout`,
/// `idle_session_timeout`, ...); `None` when there is none (0).
pub fn time_limit(vars: &HashMap<String, String>, name: &str) -> Option<Duration> {
    lookup(vars, name)
        .and_then(|v| parse_time_setting(&v))
        .filter(|d| !d.is_zero())
}

/// The value the session itself set for `name`, if any.
fn session_value(vars: &HashMap<String, String>, name: &str) -> Option<String> {
    vars.get(name)
        .or_else(|| {
            vars.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .cloned()
}

fn value_text(expr: &Expr) -> Result<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(s.clone()),
            Value::Number(n, _) => Ok(n.to_string()),
            Value::Boolean(b) => Ok(if *b { "on" } else { "off" }.to_owned()),
            other => Ok(other.to_string()),
        },
        Expr::Identifier(ident) => Ok(ident.value.clone()),
        Expr::UnaryOp { op, expr } => Ok(format!("{op}{}", value_text(expr)?)),
        other => Err(EddyError::InvalidParameter(format!(
            "invalid value for a setting: {other}"
        ))),
    }
}

fn assign(vars: &mut HashMap<String, String>, name: &str, values: &[Expr]) -> Result<()> {
    if values.len() == 1
        && matches!(&values[0], Expr::Identifier(Ident { value, quote_style: None, .. }) if value.eq_ignore_ascii_case("default"))
    {
        vars.remove(name);
        return Ok(());
    }
    let value = values
        .iter()
        .map(value_text)
        .collect::<Result<Vec<_>>>()?
        .join(", ");
    set_value(vars, name, value)
}

fn set_value(vars: &mut HashMap<String, String>, name: &str, value: String) -> Result<()> {
    if name == super::cursor::SESSION_KEY {
        return Err(EddyError::Unsupported(format!("changing \"{name}\"")));
    }
    if !WRITABLE.contains(&name) {
        return if SETTINGS.iter().any(|(n, _)| *n == name) || name.contains('.') {
            if name.contains('.') {
                vars.insert(name.to_owned(), value);
                Ok(())
            } else {
                Err(EddyError::Unsupported(format!("changing \"{name}\"")))
            }
        } else {
            Err(EddyError::UnknownSetting(name.to_owned()))
        };
    }
    match name {
        "timezone" if !is_utc(&value) => {
            return Err(EddyError::Unsupported(format!(
                "time zone \"{value}\" (Eddy sessions run in UTC)"
            )))
        }
        "client_encoding"
            if !matches!(value.to_uppercase().as_str(), "UTF8" | "UTF-8" | "UNICODE") =>
        {
            return Err(EddyError::Unsupported(format!(
                "client encoding \"{value}\" (only UTF8)"
            )))
        }
        "statement_timeout"
        | "idle_in_transaction_session_timeout"
        | "idle_session_timeout"
        | "lock_timeout"
            if parse_time_setting(&value).is_none() =>
        {
            return Err(EddyError::InvalidParameter(format!(
                "invalid value for parameter \"{name}\": \"{value}\""
            )))
        }
        "query_memory_limit" if parse_memory_size(&value).map_or(true, |b| b < 1 << 20) => {
            return Err(EddyError::InvalidParameter(format!(
                "invalid value for parameter \"query_memory_limit\": \"{value}\" (a size of at \
                 least 1MB, such as 64MB or 1GB)"
            )))
        }
        "extra_float_digits"
            if value
                .parse::<i8>()
                .map_or(true, |v| !(-15..=3).contains(&v)) =>
        {
            return Err(EddyError::InvalidParameter(format!(
                "invalid value for parameter \"extra_float_digits\": \"{value}\""
            )))
        }
        _ => {}
    }
    vars.insert(name.to_owned(), value);
    Ok(())
}

fn is_utc(zone: &str) -> bool {
    matches!(
        zone.to_uppercase().as_str(),
        "UTC" | "GMT" | "Z" | "ETC/UTC" | "UCT" | "ZULU" | "0" | "+00:00" | "UNIVERSAL" | "LOCAL"
    )
}

pub fn handle_set(vars: &mut HashMap<String, String>, set: &Set) -> Result<Output> {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => assign(vars, &canonical_name(&variable.to_string()), values)?,
        Set::MultipleAssignments { assignments } => {
            for a in assignments {
                assign(
                    vars,
                    &canonical_name(&a.name.to_string()),
                    std::slice::from_ref(&a.value),
                )?;
            }
        }
        Set::SetTimeZone { value, .. } => assign(vars, "timezone", std::slice::from_ref(value))?,
        Set::SetNames { charset_name, .. } => {
            set_value(vars, "client_encoding", charset_name.value.clone())?
        }
        Set::SetTransaction { .. } => {}
        other => return Err(EddyError::Unsupported(format!("\"{other}\""))),
    }
    Ok(Output::Command(Tag::new("SET")))
}

pub fn handle_reset(vars: &mut HashMap<String, String>, reset: &ResetStatement) -> Result<Output> {
    match &reset.reset {
        Reset::ALL => {
            for name in WRITABLE {
                vars.remove(*name);
            }
        }
        Reset::ConfigurationParameter(name) => {
            let name = canonical_name(&name.to_string());
            // Only what SET may change: never the user that logged in.
            let custom = name.contains('.') && name != super::cursor::SESSION_KEY;
            if !WRITABLE.contains(&name.as_str()) && !custom {
                return Err(match SETTINGS.iter().any(|(n, _)| *n == name) {
                    true => EddyError::Unsupported(format!("changing \"{name}\"")),
                    false => EddyError::UnknownSetting(name),
                });
            }
            vars.remove(&name);
        }
    }
    Ok(Output::Command(Tag::new("RESET")))
}

fn variable_name(variable: &[Ident]) -> String {
    let words: Vec<&str> = variable.iter().map(|i| i.value.as_str()).collect();
    let name = canonical_name(&words.join(" "));
    // A dotted name (`auto.offset.reset`) comes as several identifiers.
    if words.len() > 1 && !SETTINGS.iter().any(|(n, _)| *n == name) {
        return canonical_name(&words.join("."));
    }
    name
}

tokio::task_local! {
    /// The settings of the session whose statement is running.
    static SESSION: Arc<HashMap<String, String>>;
}

/// `stream`, polled with `session`'s settings visible, as [`in_session`]
/// runs a statement.
pub fn in_session_stream(
    session: Arc<HashMap<String, String>>,
    stream: datafusion::execution::SendableRecordBatchStream,
) -> datafusion::execution::SendableRecordBatchStream {
    struct Scoped {
        session: Arc<HashMap<String, String>>,
        inner: datafusion::execution::SendableRecordBatchStream,
    }
    impl futures::Stream for Scoped {
        type Item = datafusion::error::Result<RecordBatch>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            let this = &mut *self;
            SESSION.sync_scope(this.session.clone(), || this.inner.as_mut().poll_next(cx))
        }
    }
    impl datafusion::physical_plan::RecordBatchStream for Scoped {
        fn schema(&self) -> SchemaRef {
            self.inner.schema()
        }
    }
    Box::pin(Scoped {
        session,
        inner: stream,
    })
}

/// The settings of the session whose statement is running, if any.
pub fn current_session() -> Option<Arc<HashMap<String, String>>> {
    SESSION.try_with(Arc::clone).ok()
}

/// Runs `statement` (a statement's future) with `session`'s settings
/// visible to what it reads of `pg_settings`.
pub async fn in_session<F: std::future::Future>(
    session: Arc<HashMap<String, String>>,
    statement: F,
) -> F::Output {
    SESSION.scope(session, statement).await
}

/// One row of `pg_settings`.
pub struct SettingRow {
    pub name: &'static str,
    /// The value in the running statement's session.
    pub value: String,
    /// The server default.
    pub default: &'static str,
    /// Whether a session may SET it.
    pub writable: bool,
    /// Whether the session set it (at startup or with SET).
    pub from_session: bool,
}

/// Every setting, as the running statement's session sees it (the server
/// defaults outside a statement), for `pg_settings`.
pub fn settings() -> Vec<SettingRow> {
    let session = SESSION.try_with(Arc::clone).unwrap_or_default();
    SETTINGS
        .iter()
        .map(|&(name, _)| {
            let default = server_default(name).unwrap_or_default();
            let set = session_value(&session, name);
            SettingRow {
                name,
                from_session: set.is_some(),
                value: set.unwrap_or_else(|| default.to_owned()),
                default,
                writable: WRITABLE.contains(&name),
            }
        })
        .collect()
}

/// A setting's server default, for `current_setting` where no session is
/// at hand.
pub fn default_setting(name: &str) -> Option<String> {
    lookup(&HashMap::new(), &canonical_name(name))
}

/// Applies each `set_config('name', 'value', false)` in `statement` to the
/// session, as SET does; the function itself returns the value. Only
/// literal arguments are supported, and not `is_local = true`.
pub fn apply_set_config(statement: &Statement, vars: &mut HashMap<String, String>) -> Result<()> {
    let mut calls = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(statement, |expr| {
        if let Expr::Function(f) = expr {
            let named = f.name.0.last().and_then(|p| p.as_ident());
            if named.is_some_and(|i| i.value.eq_ignore_ascii_case("set_config")) {
                calls.push(f.clone());
            }
        }
        ControlFlow::<()>::Continue(())
    });
    for call in calls {
        let FunctionArguments::List(list) = &call.args else {
            continue;
        };
        let literal = |i: usize| match list.args.get(i) {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => {
                Some(v.value.clone())
            }
            _ => None,
        };
        match (literal(0), literal(1), literal(2)) {
            (
                Some(Value::SingleQuotedString(name)),
                Some(Value::SingleQuotedString(value)),
                Some(Value::Boolean(false)),
            ) => set_value(vars, &canonical_name(&name), value)?,
            (_, _, Some(Value::Boolean(true))) => {
                return Err(EddyError::Unsupported(
                    "set_config with is_local = true (use SET)".into(),
                ))
            }
            _ => {
                return Err(EddyError::Unsupported(
                    "set_config with arguments other than literals".into(),
                ))
            }
        }
    }
    Ok(())
}

/// Binds each `current_setting('name' [, missing_ok])` with a literal name
/// to the session's value, so it sees the session's SETs. Unknown names
/// are left to the function, which reports them.
pub fn bind_current_settings(statement: &mut Statement, vars: &HashMap<String, String>) {
    struct Binder<'a>(&'a HashMap<String, String>);
    impl VisitorMut for Binder<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            let Expr::Function(f) = expr else {
                return ControlFlow::Continue(());
            };
            let named = f.name.0.last().and_then(|p| p.as_ident());
            if !named.is_some_and(|i| i.value.eq_ignore_ascii_case("current_setting")) {
                return ControlFlow::Continue(());
            }
            let FunctionArguments::List(list) = &f.args else {
                return ControlFlow::Continue(());
            };
            let literal = |arg: Option<&FunctionArg>| match arg {
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => {
                    Some(v.value.clone())
                }
                _ => None,
            };
            let missing_ok = match list.args.len() {
                1 => false,
                2 => match literal(list.args.get(1)) {
                    Some(Value::Boolean(b)) => b,
                    _ => return ControlFlow::Continue(()),
                },
                _ => return ControlFlow::Continue(()),
            };
            let Some(Value::SingleQuotedString(name)) = literal(list.args.first()) else {
                return ControlFlow::Continue(());
            };
            // The bound value goes in as a third argument, which the
            // function returns, so the column keeps its name.
            let value = match lookup(self.0, &canonical_name(&name)) {
                Some(value) => Value::SingleQuotedString(value),
                None if missing_ok => Value::Null,
                None => return ControlFlow::Continue(()),
            };
            if let FunctionArguments::List(list) = &mut f.args {
                if list.args.len() == 1 {
                    let no = Expr::value(Value::Boolean(false));
                    list.args
                        .push(FunctionArg::Unnamed(FunctionArgExpr::Expr(no)));
                }
                let value = Expr::value(value);
                list.args
                    .push(FunctionArg::Unnamed(FunctionArgExpr::Expr(value)));
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Binder(vars));
}

pub fn show_schema(variable: &[Ident]) -> SchemaRef {
    match variable_name(variable).as_str() {
        "all" => text_schema(&["name", "setting"]),
        name => text_schema(&[name]),
    }
}

pub fn handle_show(vars: &HashMap<String, String>, variable: &[Ident]) -> Result<Output> {
    let name = variable_name(variable);
    let schema = show_schema(variable);
    let columns: Vec<Arc<dyn datafusion::arrow::array::Array>> = if name == "all" {
        let names: Vec<&str> = SETTINGS.iter().map(|(n, _)| *n).collect();
        let values: Vec<String> = names
            .iter()
            .map(|n| lookup(vars, n).unwrap_or_default())
            .collect();
        vec![
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(values)),
        ]
    } else {
        let value = lookup(vars, &name).ok_or_else(|| EddyError::UnknownSetting(name.clone()))?;
        vec![Arc::new(StringArray::from(vec![value]))]
    };
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(datafusion::error::DataFusionError::from)?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
        tag: "SHOW",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;
    use eddy_sql::{parse_sql, EddyStatement};

    fn run(vars: &mut HashMap<String, String>, sql: &str) -> Result<Output> {
        let Some(EddyStatement::Sql(statement)) = parse_sql(sql).unwrap().pop() else {
            panic!("not a SET or SHOW: {sql}");
        };
        match *statement {
            Statement::Set(set) => handle_set(vars, &set),
            Statement::ShowVariable { variable } => handle_show(vars, &variable),
            other => panic!("unexpected {other}"),
        }
    }

    fn show(vars: &mut HashMap<String, String>, sql: &str) -> String {
        match run(vars, sql).unwrap() {
            Output::Rows { batches, .. } => batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0)
                .to_owned(),
            _ => panic!("SHOW returned no rows"),
        }
    }

    #[test]
    fn set_then_show() {
        let mut vars = HashMap::new();
        run(&mut vars, "SET application_name = 'psql'").unwrap();
        assert_eq!(show(&mut vars, "SHOW application_name"), "psql");
        run(&mut vars, "SET DateStyle = 'ISO, MDY'").unwrap();
        assert_eq!(vars.get("datestyle").unwrap(), "ISO, MDY");
        run(&mut vars, "SET search_path TO public").unwrap();
        assert_eq!(show(&mut vars, "SHOW search_path"), "public");
        assert_eq!(
            show(&mut vars, "SHOW transaction isolation level"),
            "read committed"
        );
        run(&mut vars, "SET TIME ZONE 'UTC'").unwrap();
        assert_eq!(show(&mut vars, "SHOW TimeZone"), "UTC");
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut vars = HashMap::new();
        assert!(matches!(
            run(&mut vars, "SET no_such_thing = 1"),
            Err(EddyError::UnknownSetting(_))
        ));
        assert!(matches!(
            run(&mut vars, "SHOW no_such_thing"),
            Err(EddyError::UnknownSetting(_))
        ));
        assert!(run(&mut vars, "SET TimeZone = 'Europe/Paris'").is_err());
        assert!(run(&mut vars, "SET extra_float_digits = 9").is_err());
    }
}
