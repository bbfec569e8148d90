//! Postgres's text input for `bytea`, `interval` and timestamps.
//!
//! Arrow casts a string to binary by taking its UTF-8 bytes, while Postgres
//! reads `'\\x0102'` as hex; and Arrow's interval parser does not read
//! Postgres's `'1 day 02:03:04'`, nor timestamps without seconds
//! (`'2024-01-01 10:00'`). After planning, casts from strings to these
//! types are replaced by `pg_bytea_in`, `pg_interval_in` and
//! `pg_timestamp_in`, which read the string as Postgres does.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, IntervalMonthDayNanoBuilder, StringArray,
};
use datafusion::arrow::datatypes::{
    DataType, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

/// Decodes Postgres bytea text input: `\x` hex, or escape format.
pub fn decode_bytea(text: &str) -> Result<Vec<u8>> {
    let bad = || {
        DataFusionError::Execution(format!(
            "Cannot cast string '{text}' to bytea: invalid input syntax for type bytea"
        ))
    };
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(bad());
        }
        return digits
            .chunks(2)
            .map(|pair| {
                let s = std::str::from_utf8(pair).map_err(|_| bad())?;
                u8::from_str_radix(s, 16).map_err(|_| bad())
            })
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4).ok_or_else(bad)?;
            let s = std::str::from_utf8(octal).map_err(|_| bad())?;
            out.push(u8::from_str_radix(s, 8).map_err(|_| bad())?);
            i += 4;
        }
    }
    Ok(out)
}

/// Parses Postgres interval input, e.g. `1 day 02:03:04`, `3 hours ago`,
/// `1.5 days`, `10` (seconds). Returns `None` for forms it does not know.
pub fn parse_interval(text: &str) -> Option<IntervalMonthDayNano> {
    let mut months = 0f64;
    let mut days = 0f64;
    let mut micros = 0f64;
    let mut tokens = text.split_whitespace().peekable();
    let mut negate = false;
    let mut any = false;
    while let Some(token) = tokens.next() {
        let lower = token.to_ascii_lowercase();
        match lower.as_str() {
            "@" => continue,
            "ago" => {
                negate = true;
                continue;
            }
            _ => {}
        }
        if lower.contains(':') {
            let (sign, rest) = match lower.strip_prefix('-') {
                Some(rest) => (-1.0, rest),
                None => (1.0, lower.trim_start_matches('+')),
            };
            let parts: Vec<&str> = rest.split(':').collect();
            if parts.len() < 2 || parts.len() > 3 {
                return None;
            }
            let hours: f64 = parts[0].parse().ok()?;
            let minutes: f64 = parts[1].parse().ok()?;
            let seconds: f64 = parts.get(2).map_or(Some(0.0), |s| s.parse().ok())?;
            micros += sign * ((hours * 60.0 + minutes) * 60.0 + seconds) * 1e6;
            any = true;
            continue;
        }
        let value: f64 = lower.parse().ok()?;
        let unit = match tokens.peek() {
            Some(next)
                if next.starts_with(|c: char| c.is_ascii_alphabetic())
                    && !next.eq_ignore_ascii_case("ago") =>
            {
                tokens.next().map(str::to_ascii_lowercase)
            }
            _ => None,
        };
        match unit.as_deref() {
            None | Some("s" | "sec" | "secs" | "second" | "seconds") => micros += value * 1e6,
            Some("millennium" | "millennia" | "millenniums") => months += value * 12000.0,
            Some("century" | "centuries") => months += value * 1200.0,
            Some("decade" | "decades") => months += value * 120.0,
            Some("y" | "yr" | "yrs" | "year" | "years") => months += value * 12.0,
            Some("mon" | "mons" | "month" | "months") => months += value,
            Some("w" | "week" | "weeks") => days += value * 7.0,
            Some("d" | "day" | "days") => days += value,
            Some("h" | "hr" | "hrs" | "hour" | "hours") => micros += value * 3.6e9,
            Some("m" | "min" | "mins" | "minute" | "minutes") => micros += value * 6e7,
            Some("ms" | "millisecond" | "milliseconds") => micros += value * 1e3,
            Some("us" | "microsecond" | "microseconds") => micros += value,
            Some(_) => return None,
        }
        any = true;
    }
    if !any {
        return None;
    }
    // Postgres carries fractions down: of a month into 30-day days, of a
    // day into hours.
    let whole_months = months.trunc();
    days += (months - whole_months) * 30.0;
    let whole_days = days.trunc();
    micros += (days - whole_days) * 8.64e10;
    let sign = if negate { -1.0 } else { 1.0 };
    Some(IntervalMonthDayNano::new(
        (sign * whole_months) as i32,
        (sign * whole_days) as i32,
        (sign * micros).round() as i64 * 1000,
    ))
}

/// A string-to-type input function, applied to a column or a scalar.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgInput {
    name: &'static str,
    target: DataType,
    signature: Signature,
}

/// A timestamp's text with seconds where Postgres lets them be left out
/// (`2024-01-01 10:00`, `2024-01-01T10:00+02`), which Arrow's parser
/// requires.
fn with_seconds(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.trim().as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    let date = digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(7) == Some(&b'-')
        && digits(8..10);
    let time = matches!(bytes.get(10), Some(b' ' | b'T'))
        && digits(11..13)
        && bytes.get(13) == Some(&b':')
        && digits(14..16);
    if date && time && bytes.get(16) != Some(&b':') {
        let text = text.trim();
        return format!("{}:00{}", &text[..16], &text[16..]).into();
    }
    text.into()
}

/// Arrow's cast, failing on a value it cannot read rather than making it
/// NULL.
fn strict_cast(
    array: &dyn Array,
    target: &DataType,
) -> std::result::Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    let options = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    datafusion::arrow::compute::cast_with_options(array, target, &options)
}

impl PgInput {
    fn udf(name: &'static str, target: DataType) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(PgInput {
            name,
            target,
            signature: Signature::any(1, Volatility::Immutable),
        }))
    }

    fn convert(&self, strings: &ArrayRef) -> Result<ArrayRef> {
        let strings = datafusion::arrow::compute::cast(strings, &DataType::Utf8)?;
        let strings = strings.as_string::<i32>();
        if self.target == DataType::Binary {
            let mut builder = BinaryBuilder::with_capacity(strings.len(), 0);
            for value in strings.iter() {
                match value {
                    Some(s) => builder.append_value(decode_bytea(s)?),
                    None => builder.append_null(),
                }
            }
            return Ok(Arc::new(builder.finish()));
        }
        if matches!(self.target, DataType::Timestamp(..)) {
            let normalized: StringArray = strings.iter().map(|v| v.map(with_seconds)).collect();
            return Ok(strict_cast(&normalized, &self.target)?);
        }
        let mut builder = IntervalMonthDayNanoBuilder::with_capacity(strings.len());
        for value in strings.iter() {
            match value.map(|s| (s, parse_interval(s))) {
                None => builder.append_null(),
                Some((_, Some(v))) => builder.append_value(v),
                Some((s, None)) => {
                    // Forms we do not read (e.g. ISO 8601) go to Arrow's parser.
                    let one: ArrayRef = Arc::new(StringArray::from(vec![s]));
                    let parsed = strict_cast(&one, &self.target)?;
                    builder
                        .append_value(parsed.as_primitive::<IntervalMonthDayNanoType>().value(0));
                }
            }
        }
        Ok(Arc::new(builder.finish()))
    }
}

impl ScalarUDFImpl for PgInput {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.target.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Scalar(value) => {
                let array = self.convert(&value.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?))
            }
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(self.convert(array)?)),
        }
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// Replaces casts from strings to binary and intervals in `plan` by the
/// Postgres input functions.
pub fn rewrite_input_casts(plan: LogicalPlan) -> Result<LogicalPlan> {
    let bytea_in = PgInput::udf("pg_bytea_in", DataType::Binary);
    let interval_in = PgInput::udf(
        "pg_interval_in",
        DataType::Interval(IntervalUnit::MonthDayNano),
    );
    let rewritten = plan.transform_up_with_subqueries(|node| {
        // Expressions read their input's schema; VALUES reads none.
        let schema: Arc<DFSchema> = match node.inputs().as_slice() {
            [] => Arc::new(DFSchema::empty()),
            [input] => input.schema().clone(),
            _ => return Ok(Transformed::no(node)),
        };
        // Keep each expression's name: the nodes above refer to it.
        let names = NamePreserver::new(&node);
        let result = node.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| match e {
                Expr::Cast(Cast { expr, field })
                    if (is_binary(field.data_type())
                        || matches!(
                            field.data_type(),
                            DataType::Interval(_) | DataType::Timestamp(..)
                        ))
                        && expr.get_type(&schema).is_ok_and(|t| is_string(&t)) =>
                {
                    let timestamp_in;
                    let (udf, produced) = match field.data_type() {
                        t if is_binary(t) => (&bytea_in, DataType::Binary),
                        DataType::Timestamp(..) => {
                            timestamp_in =
                                PgInput::udf("pg_timestamp_in", field.data_type().clone());
                            (&timestamp_in, field.data_type().clone())
                        }
                        _ => (&interval_in, DataType::Interval(IntervalUnit::MonthDayNano)),
                    };
                    let call = udf.call(vec![*expr]);
                    let call = if field.data_type() == &produced {
                        call
                    } else {
                        Expr::Cast(Cast::new_from_field(Box::new(call), field))
                    };
                    Ok(Transformed::yes(call))
                }
                Expr::Cast(cast) => Ok(Transformed::no(Expr::Cast(cast))),
                other => Ok(Transformed::no(other)),
            })?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })?;
        if result.transformed {
            let plan = result.data.recompute_schema()?;
            Ok(Transformed::yes(plan))
        } else {
            Ok(result)
        }
    })?;
    Ok(rewritten.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_may_leave_out_seconds() {
        assert_eq!(with_seconds("2024-01-01 10:00"), "2024-01-01 10:00:00");
        assert_eq!(
            with_seconds("2024-01-01T10:00+02"),
            "2024-01-01T10:00:00+02"
        );
        assert_eq!(with_seconds("2024-01-01 10:00:05"), "2024-01-01 10:00:05");
        assert_eq!(with_seconds("2024-01-01"), "2024-01-01");
        assert_eq!(with_seconds("10:00"), "10:00");
    }

    #[test]
    fn reads_postgres_intervals() {
        let hour = 3_600_000_000_000i64;
        assert_eq!(
            parse_interval("1 day 02:03:04"),
            Some(IntervalMonthDayNano::new(
                0,
                1,
                2 * hour + 3 * 60_000_000_000 + 4_000_000_000
            ))
        );
        assert_eq!(
            parse_interval("1 year 2 mons"),
            Some(IntervalMonthDayNano::new(14, 0, 0))
        );
        assert_eq!(
            parse_interval("3 hours ago"),
            Some(IntervalMonthDayNano::new(0, 0, -3 * hour))
        );
        assert_eq!(
            parse_interval("1.5 days"),
            Some(IntervalMonthDayNano::new(0, 1, 12 * hour))
        );
        assert_eq!(
            parse_interval("10"),
            Some(IntervalMonthDayNano::new(0, 0, 10_000_000_000))
        );
        assert_eq!(parse_interval("2 fortnights"), None);
        assert_eq!(parse_interval(""), None);
    }

    #[test]
    fn decodes_hex_and_escape_forms() {
        assert_eq!(decode_bytea("\\x0102ff").unwrap(), vec![1, 2, 255]);
        assert_eq!(decode_bytea("ab\\\\c\\001").unwrap(), b"ab\\c\x01".to_vec());
        assert!(decode_bytea("\\x0").is_err());
        assert!(decode_bytea("\\xzz").is_err());
        assert!(decode_bytea("a\\9").is_err());
    }
}
