//! Postgres's text input for `bytea`.
//!
//! DataFusion casts a string to binary by taking its UTF-8 bytes, while
//! Postgres reads `'\x0102'` as hex (and `'a\\b'` as escape format). After
//! planning, every cast from a string to binary is replaced by
//! `pg_bytea_in`, which reads the string as Postgres does.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BinaryBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
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
        if digits.len() % 2 != 0 {
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

#[derive(Debug, PartialEq, Eq, Hash)]
struct ByteaIn {
    signature: Signature,
}

impl ScalarUDFImpl for ByteaIn {
    fn name(&self) -> &str {
        "pg_bytea_in"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Scalar(value) => {
                let decoded = match value {
                    ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                        s.as_deref().map(decode_bytea).transpose()?
                    }
                    other => {
                        return Err(DataFusionError::Internal(format!("pg_bytea_in({other})")))
                    }
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Binary(decoded)))
            }
            ColumnarValue::Array(array) => {
                let strings = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut builder = BinaryBuilder::with_capacity(strings.len(), 0);
                for value in strings.iter() {
                    match value {
                        Some(s) => builder.append_value(decode_bytea(s)?),
                        None => builder.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(builder.finish())))
            }
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

/// Replaces casts from strings to binary in `plan` by `pg_bytea_in`.
pub fn rewrite_bytea_casts(plan: LogicalPlan) -> Result<LogicalPlan> {
    let udf = Arc::new(ScalarUDF::new_from_impl(ByteaIn {
        signature: Signature::any(1, Volatility::Immutable),
    }));
    let rewritten = plan.transform_up_with_subqueries(|node| {
        // Expressions read their input's schema; VALUES reads none.
        let schema: Arc<DFSchema> = match node.inputs().as_slice() {
            [] => Arc::new(DFSchema::empty()),
            [input] => input.schema().clone(),
            _ => return Ok(Transformed::no(node)),
        };
        let result = node.map_expressions(|expr| {
            expr.transform_up(|e| match e {
                Expr::Cast(Cast { expr, field })
                    if is_binary(field.data_type())
                        && expr.get_type(&schema).is_ok_and(|t| is_string(&t)) =>
                {
                    let call = udf.call(vec![*expr]);
                    let call = if field.data_type() == &DataType::Binary {
                        call
                    } else {
                        Expr::Cast(Cast::new_from_field(Box::new(call), field))
                    };
                    Ok(Transformed::yes(call))
                }
                other => Ok(Transformed::no(other)),
            })
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
    fn decodes_hex_and_escape_forms() {
        assert_eq!(decode_bytea("\\x0102ff").unwrap(), vec![1, 2, 255]);
        assert_eq!(decode_bytea("ab\\\\c\\001").unwrap(), b"ab\\c\x01".to_vec());
        assert!(decode_bytea("\\x0").is_err());
        assert!(decode_bytea("\\xzz").is_err());
        assert!(decode_bytea("a\\9").is_err());
    }
}
