//! ksqlDB's scalar functions that DataFusion lacks or names otherwise:
//! `LEN`, `UCASE`, `LCASE`, `SPLIT` and `AS_MAP` (aliases of DataFusion's own),
//! `AS_VALUE`, `HISTOGRAM` (with the parser's help),
//! `TIMESTAMPTOSTRING`, `STRINGTOTIMESTAMP`, `EXTRACTJSONFIELD` and
//! `UNIX_TIMESTAMP`; and `+` between strings, which concatenates. Times
//! are epoch milliseconds, as in ksqlDB, and patterns are Java
//! `DateTimeFormatter` patterns.

use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, DocSection, Documentation, Expr, ExprSchemable, Operator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// Registers the functions and the string `+` on `ctx`.
pub fn register(ctx: &mut SessionContext) -> Result<()> {
    datafusion::execution::FunctionRegistry::register_expr_planner(ctx, Arc::new(StringPlus))?;
    use datafusion::functions::{string, unicode};
    let aliases = [
        (unicode::character_length(), "len"),
        (string::upper(), "ucase"),
        (string::lower(), "lcase"),
        (
            datafusion::functions_nested::string::string_to_array_udf(),
            "split",
        ),
        (datafusion::functions_nested::map::map_udf(), "as_map"),
    ];
    for (udf, alias) in aliases {
        ctx.register_udf(udf.as_ref().clone().with_aliases([alias]));
    }
    let utf8 = || DataType::Utf8;
    let functions = [
        KsqlFunction::new(
            "timestamptostring",
            vec![
                vec![DataType::Int64, utf8()],
                vec![DataType::Int64, utf8(), utf8()],
            ],
            DataType::Utf8,
            timestamp_to_string,
        )
        .documented(
            "Formats epoch milliseconds with a Java DateTimeFormatter pattern, in UTC.",
            "timestamptostring(epoch_ms, 'yyyy-MM-dd HH:mm:ss' [, 'UTC'])",
        ),
        KsqlFunction::new(
            "stringtotimestamp",
            vec![vec![utf8(), utf8()], vec![utf8(), utf8(), utf8()]],
            DataType::Int64,
            string_to_timestamp,
        )
        .documented(
            "Parses text with a Java DateTimeFormatter pattern, in UTC, into epoch milliseconds.",
            "stringtotimestamp(text, 'yyyy-MM-dd HH:mm:ss' [, 'UTC'])",
        ),
        KsqlFunction::new(
            "extractjsonfield",
            vec![vec![utf8(), utf8()]],
            DataType::Utf8,
            extract_json_field,
        )
        .documented(
            "The field at a JSONPath of a JSON text, as text; NULL if absent or not JSON.",
            "extractjsonfield(json, '$.a.b[0]')",
        ),
        KsqlFunction::new(
            "unix_timestamp",
            vec![vec![]],
            DataType::Int64,
            unix_timestamp,
        )
        .volatile()
        .documented(
            "The current time in epoch milliseconds.",
            "unix_timestamp()",
        ),
    ];
    ctx.register_udf(ScalarUDF::new_from_impl(AsValue::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(Histogram::new()));
    for function in functions {
        ctx.register_udf(ScalarUDF::new_from_impl(function));
    }
    Ok(())
}

/// `a + b` between two strings: ksqlDB's concatenation, planned as `||`.
#[derive(Debug)]
struct StringPlus;

impl ExprPlanner for StringPlus {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let is_string = |e: &Expr| {
            e.get_type(schema).is_ok_and(|t| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            })
        };
        if expr.op != BinaryOperator::Plus || !is_string(&expr.left) || !is_string(&expr.right) {
            return Ok(PlannerResult::Original(expr));
        }
        let concat = BinaryExpr::new(
            Box::new(expr.left),
            Operator::StringConcat,
            Box::new(expr.right),
        );
        Ok(PlannerResult::Planned(Expr::BinaryExpr(concat)))
    }
}

/// A function of whole columns (every argument as an array of the batch's
/// length) to a column.
type Body = fn(&[ArrayRef]) -> Result<ArrayRef>;

#[derive(Debug)]
struct KsqlFunction {
    name: &'static str,
    signature: Signature,
    output: DataType,
    body: Body,
    docs: Option<Documentation>,
}

// Each name is registered once: it identifies the function.
impl PartialEq for KsqlFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for KsqlFunction {}

impl std::hash::Hash for KsqlFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl KsqlFunction {
    fn new(name: &'static str, forms: Vec<Vec<DataType>>, output: DataType, body: Body) -> Self {
        let forms = forms.into_iter().map(TypeSignature::Exact).collect();
        KsqlFunction {
            name,
            signature: Signature::one_of(forms, Volatility::Immutable),
            output,
            body,
            docs: None,
        }
    }

    fn volatile(mut self) -> Self {
        self.signature.volatility = Volatility::Volatile;
        self
    }

    fn documented(mut self, description: &str, example: &str) -> Self {
        let section = DocSection {
            include: true,
            label: "ksqlDB Functions",
            description: None,
        };
        self.docs = Some(Documentation::builder(section, description, example).build());
        self
    }
}

impl ScalarUDFImpl for KsqlFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.output.clone())
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.docs.as_ref()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let out = (self.body)(&arrays)?;
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// ksqlDB's `AS_VALUE(col)`: the column's value, so that a key column can
/// be copied into a record's value under another name.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AsValue {
    signature: Signature,
}

impl AsValue {
    fn new() -> Self {
        AsValue {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AsValue {
    fn name(&self) -> &str {
        "as_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(args.args.remove(0))
    }
}

/// Distinct values HISTOGRAM counts at most, as ksqlDB's does.
const HISTOGRAM_LIMIT: usize = 1_000;

/// The scalar half of ksqlDB's `HISTOGRAM(x)`, which the parser writes as
/// `histogram(array_agg(x ORDER BY x))`: each distinct non-NULL value of
/// the sorted list, as text, mapped to its count; the first 1,000 values.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Histogram {
    signature: Signature,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Histogram {
    fn name(&self) -> &str {
        "histogram"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match &args[0] {
            DataType::List(_) | DataType::LargeList(_) | DataType::Null => {
                Ok(eddy_catalog::map_type(DataType::Utf8, DataType::Int64))
            }
            other => Err(DataFusionError::Plan(format!(
                "histogram counts the values of an array_agg, not {other}"
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::{Int64Builder, MapBuilder, MapFieldNames, StringBuilder};
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let rows = if scalar { 1 } else { args.number_rows };
        let lists = args.args[0].to_array(rows)?;
        let names = MapFieldNames {
            entry: "entries".into(),
            key: "key".into(),
            value: "value".into(),
        };
        let mut maps = MapBuilder::new(Some(names), StringBuilder::new(), Int64Builder::new());
        let lists = match lists.data_type() {
            DataType::Null => None,
            _ => Some(cast(&lists, &DataType::new_list(DataType::Utf8, true))?),
        };
        for row in 0..rows {
            let values = lists
                .as_ref()
                .filter(|l| !l.is_null(row))
                .map(|l| l.as_list::<i32>().value(row));
            let Some(values) = values else {
                maps.append(false)?;
                continue;
            };
            let values = values.as_string::<i32>();
            let mut entries = 0;
            let mut run: Option<(&str, i64)> = None;
            for value in values.iter().flatten() {
                match &mut run {
                    Some((current, n)) if *current == value => *n += 1,
                    _ => {
                        if let Some((key, n)) = run.take() {
                            maps.keys().append_value(key);
                            maps.values().append_value(n);
                            entries += 1;
                        }
                        if entries == HISTOGRAM_LIMIT {
                            break;
                        }
                        run = Some((value, 1));
                    }
                }
            }
            if let Some((key, n)) = run {
                if entries < HISTOGRAM_LIMIT {
                    maps.keys().append_value(key);
                    maps.values().append_value(n);
                }
            }
            maps.append(true)?;
        }
        let out: ArrayRef = Arc::new(maps.finish());
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// `UNIX_TIMESTAMP()`: now, in epoch milliseconds.
fn unix_timestamp(_args: &[ArrayRef]) -> Result<ArrayRef> {
    let now = chrono::Utc::now().timestamp_millis();
    Ok(Arc::new(Int64Array::from(vec![now])))
}

fn strings(array: &ArrayRef) -> Result<StringArray> {
    Ok(cast(array, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn error(message: String) -> DataFusionError {
    DataFusionError::Execution(message)
}

/// The strftime format of a Java pattern, remembered while the pattern
/// repeats.
#[derive(Default)]
struct Patterns {
    last: Option<(String, String)>,
}

impl Patterns {
    fn strftime(&mut self, pattern: &str) -> Result<&str> {
        if self.last.as_ref().is_none_or(|(p, _)| p != pattern) {
            let format = eddy_sql::time_format::strftime_of_java_pattern(pattern)
                .map_err(|e| error(e.to_string()))?;
            self.last = Some((pattern.to_owned(), format));
        }
        Ok(self
            .last
            .as_ref()
            .map(|(_, f)| f.as_str())
            .unwrap_or_default())
    }
}

/// Only UTC is known as a time zone argument.
fn check_zone(args: &[ArrayRef], function: &str) -> Result<()> {
    let Some(zones) = args.get(2) else {
        return Ok(());
    };
    for zone in strings(zones)?.iter().flatten() {
        if !matches!(
            zone.to_ascii_uppercase().as_str(),
            "UTC" | "Z" | "GMT" | "ETC/UTC"
        ) {
            return Err(DataFusionError::External(Box::new(
                crate::error::EddyError::InvalidParameter(format!(
                    "{function}: time zone '{zone}' is not supported; only UTC is"
                )),
            )));
        }
    }
    Ok(())
}

/// `TIMESTAMPTOSTRING(epoch_ms, pattern [, 'UTC'])`.
fn timestamp_to_string(args: &[ArrayRef]) -> Result<ArrayRef> {
    check_zone(args, "TIMESTAMPTOSTRING")?;
    let millis = cast(&args[0], &DataType::Int64)?;
    let millis = millis.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let patterns = strings(&args[1])?;
    let mut cache = Patterns::default();
    let mut out = Vec::with_capacity(millis.len());
    for (ms, pattern) in millis.iter().zip(patterns.iter()) {
        let (Some(ms), Some(pattern)) = (ms, pattern) else {
            out.push(None);
            continue;
        };
        let time = DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| error(format!("TIMESTAMPTOSTRING: {ms} is out of range")))?;
        // Formatting reports a bad pattern instead of panicking in to_string.
        let mut text = String::new();
        write!(text, "{}", time.format(cache.strftime(pattern)?)).map_err(|_| {
            error(format!(
                "TIMESTAMPTOSTRING: pattern '{pattern}' cannot format a time"
            ))
        })?;
        out.push(Some(text));
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// `STRINGTOTIMESTAMP(text, pattern [, 'UTC'])`: epoch milliseconds.
fn string_to_timestamp(args: &[ArrayRef]) -> Result<ArrayRef> {
    check_zone(args, "STRINGTOTIMESTAMP")?;
    let texts = strings(&args[0])?;
    let patterns = strings(&args[1])?;
    let mut cache = Patterns::default();
    let mut out = Vec::with_capacity(texts.len());
    for (text, pattern) in texts.iter().zip(patterns.iter()) {
        let (Some(text), Some(pattern)) = (text, pattern) else {
            out.push(None);
            continue;
        };
        let format = cache.strftime(pattern)?;
        let parsed = NaiveDateTime::parse_from_str(text, format).or_else(|_| {
            NaiveDate::parse_from_str(text, format)
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        });
        // Postgres's to_timestamp says 22007 for text that does not fit.
        let time = parsed.map_err(|e| {
            DataFusionError::from(datafusion::arrow::error::ArrowError::ParseError(format!(
                "STRINGTOTIMESTAMP: '{text}' does not match pattern '{pattern}': {e}"
            )))
        })?;
        out.push(Some(time.and_utc().timestamp_millis()));
    }
    Ok(Arc::new(Int64Array::from(out)))
}

/// `EXTRACTJSONFIELD(json, '$.a.b[0]')`: the field as text (a string
/// without its quotes, anything else as JSON), or NULL where the text is
/// not JSON or has no such field.
fn extract_json_field(args: &[ArrayRef]) -> Result<ArrayRef> {
    let texts = strings(&args[0])?;
    let paths = strings(&args[1])?;
    let mut out = Vec::with_capacity(texts.len());
    for (text, path) in texts.iter().zip(paths.iter()) {
        let (Some(text), Some(path)) = (text, path) else {
            out.push(None);
            continue;
        };
        let steps = json_path(path)?;
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) else {
            out.push(None);
            continue;
        };
        let mut found = true;
        for step in &steps {
            let next = match step {
                PathStep::Field(name) => value.get_mut(name.as_str()),
                PathStep::Index(i) => value.get_mut(*i),
            };
            match next {
                Some(next) => value = next.take(),
                None => {
                    found = false;
                    break;
                }
            }
        }
        out.push(match value {
            _ if !found => None,
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            other => Some(other.to_string()),
        });
    }
    Ok(Arc::new(StringArray::from(out)))
}

enum PathStep {
    Field(String),
    Index(usize),
}

/// A JSONPath of fields and indexes: `$.a.b[0]`, `$['a']`.
fn json_path(path: &str) -> Result<Vec<PathStep>> {
    let bad = |why: &str| {
        error(format!(
            "EXTRACTJSONFIELD: invalid JSON path '{path}': {why}"
        ))
    };
    let mut rest = path
        .trim()
        .strip_prefix('$')
        .ok_or_else(|| bad("it starts with $"))?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return Err(bad("a field name is empty"));
            }
            steps.push(PathStep::Field(after[..end].to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or_else(|| bad("a [ is not closed"))?;
            let inside = after[..end].trim();
            let step = match inside.strip_prefix(['\'', '"']) {
                Some(quoted) => {
                    PathStep::Field(quoted[..quoted.len().saturating_sub(1)].to_owned())
                }
                None => PathStep::Index(
                    inside
                        .parse()
                        .map_err(|_| bad("an index is not a number"))?,
                ),
            };
            steps.push(step);
            rest = &after[end + 1..];
        } else {
            return Err(bad("expected . or ["));
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: Body, args: Vec<ArrayRef>) -> ArrayRef {
        body(&args).expect("runs")
    }

    fn text(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn timestamps_round_trip_through_java_patterns() {
        let millis: ArrayRef = Arc::new(Int64Array::from(vec![Some(1_600_000_000_123), None]));
        let pattern = text(&[Some("yyyy-MM-dd HH:mm:ss.SSS"), Some("yyyy")]);
        let shown = run(timestamp_to_string, vec![millis, pattern.clone()]);
        let shown = shown.as_string::<i32>();
        assert_eq!(shown.value(0), "2020-09-13 12:26:40.123");
        assert!(shown.is_null(1));
        let back = run(
            string_to_timestamp,
            vec![text(&[Some("2020-09-13 12:26:40.123"), None]), pattern],
        );
        let back = back.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(back.value(0), 1_600_000_000_123);
        let day = run(
            string_to_timestamp,
            vec![text(&[Some("2020-09-13")]), text(&[Some("yyyy-MM-dd")])],
        );
        let day = day.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(day.value(0), 1_599_955_200_000);
        assert!(string_to_timestamp(&[text(&[Some("x")]), text(&[Some("yyyy")])]).is_err());
        let zone = text(&[Some("America/New_York")]);
        let millis: ArrayRef = Arc::new(Int64Array::from(vec![0]));
        assert!(timestamp_to_string(&[millis, text(&[Some("yyyy")]), zone]).is_err());
    }

    #[test]
    fn json_fields_by_path() {
        let json = r#"{"a": {"b": [10, {"c": "x"}]}, "s": "plain", "n": null}"#;
        for (path, expected) in [
            ("$.a.b[0]", Some("10")),
            ("$.a.b[1].c", Some("x")),
            ("$['s']", Some("plain")),
            ("$.a.b", Some(r#"[10,{"c":"x"}]"#)),
            ("$.n", None),
            ("$.missing", None),
            ("$.a.b[5]", None),
        ] {
            let out = run(
                extract_json_field,
                vec![text(&[Some(json)]), text(&[Some(path)])],
            );
            let out = out.as_string::<i32>();
            assert_eq!((!out.is_null(0)).then(|| out.value(0)), expected, "{path}");
        }
        let out = run(
            extract_json_field,
            vec![text(&[Some("not json")]), text(&[Some("$.a")])],
        );
        assert!(out.is_null(0));
        assert!(extract_json_field(&[text(&[Some("{}")]), text(&[Some("a.b")])]).is_err());
    }
}
