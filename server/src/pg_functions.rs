//! Postgres catalog and information functions that drivers, ORMs and psql
//! call while they introspect: `to_regtype`, `pg_typeof`, the
//! `pg_*_is_visible` family, comments, `pg_get_serial_sequence`,
//! `pg_size_pretty` and `current_setting`.
//!
//! Eddy has no comments, sequences or user-defined types, so the functions
//! about them answer as Postgres does for an object without one: NULL.

use std::sync::Arc;

use arrow_pg::datatypes::into_pg_type;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int32Array, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    create_udf, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

/// Postgres's built-in types: name, oid, and the name `format_type` and
/// `regtype` print. Arrays are the element's name with `[]`.
const TYPES: &[(&str, i32, &str)] = &[
    ("bool", 16, "boolean"),
    ("bytea", 17, "bytea"),
    ("char", 18, "\"char\""),
    ("name", 19, "name"),
    ("int8", 20, "bigint"),
    ("int2", 21, "smallint"),
    ("int4", 23, "integer"),
    ("text", 25, "text"),
    ("oid", 26, "oid"),
    ("json", 114, "json"),
    ("float4", 700, "real"),
    ("float8", 701, "double precision"),
    ("bpchar", 1042, "character"),
    ("varchar", 1043, "character varying"),
    ("date", 1082, "date"),
    ("time", 1083, "time without time zone"),
    ("timestamp", 1114, "timestamp without time zone"),
    ("timestamptz", 1184, "timestamp with time zone"),
    ("interval", 1186, "interval"),
    ("timetz", 1266, "time with time zone"),
    ("numeric", 1700, "numeric"),
    ("regclass", 2205, "regclass"),
    ("regtype", 2206, "regtype"),
    ("uuid", 2950, "uuid"),
    ("jsonb", 3802, "jsonb"),
    ("_bool", 1000, "boolean[]"),
    ("_bytea", 1001, "bytea[]"),
    ("_int2", 1005, "smallint[]"),
    ("_int4", 1007, "integer[]"),
    ("_text", 1009, "text[]"),
    ("_bpchar", 1014, "character[]"),
    ("_varchar", 1015, "character varying[]"),
    ("_int8", 1016, "bigint[]"),
    ("_float4", 1021, "real[]"),
    ("_float8", 1022, "double precision[]"),
    ("_timestamp", 1115, "timestamp without time zone[]"),
    ("_date", 1182, "date[]"),
    ("_timestamptz", 1185, "timestamp with time zone[]"),
    ("_numeric", 1231, "numeric[]"),
    ("_jsonb", 3807, "jsonb[]"),
];

/// Names Postgres's type parser accepts for built-in types besides
/// `typname` and the printed name.
const ALIASES: &[(&str, &str)] = &[
    ("boolean", "bool"),
    ("int", "int4"),
    ("integer", "int4"),
    ("smallint", "int2"),
    ("bigint", "int8"),
    ("real", "float4"),
    ("float", "float8"),
    ("double precision", "float8"),
    ("decimal", "numeric"),
    ("character", "bpchar"),
    ("character varying", "varchar"),
    ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"),
    ("time without time zone", "time"),
    ("time with time zone", "timetz"),
];

/// The oid of the type a name such as `integer`, `pg_catalog.int4`,
/// `varchar(20)` or `text[]` denotes, as `to_regtype` finds it.
fn type_oid(name: &str) -> Option<i32> {
    let name = name.trim().to_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let (name, array) = match name.strip_suffix("[]") {
        Some(element) => (element.trim_end(), true),
        None => (name, false),
    };
    // A type modifier does not change the type: varchar(20) is varchar.
    let name = match name.find('(') {
        Some(open) if name.ends_with(')') => name[..open].trim_end(),
        _ => name,
    };
    let name = name.trim_matches('"');
    let typname = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, typname)| typname);
    let typname = if array {
        format!("_{typname}")
    } else {
        typname.to_owned()
    };
    TYPES
        .iter()
        .find(|(n, _, _)| *n == typname)
        .map(|(_, oid, _)| *oid)
}

/// The name Postgres prints for a value of Arrow type `data_type`.
fn printed_type_name(data_type: &DataType) -> String {
    let Ok(pg_type) = into_pg_type(data_type) else {
        return "unknown".into();
    };
    let oid = pg_type.oid() as i32;
    TYPES
        .iter()
        .find(|(_, o, _)| *o == oid)
        .map_or_else(|| pg_type.name().to_owned(), |(_, _, n)| (*n).to_owned())
}

pub fn register(ctx: &mut SessionContext) {
    ctx.register_udf(to_regtype());
    ctx.register_udf(ScalarUDF::new_from_impl(PgTypeof::new()));
    for name in [
        "pg_function_is_visible",
        "pg_type_is_visible",
        "pg_collation_is_visible",
        "pg_operator_is_visible",
        "pg_opclass_is_visible",
        "pg_conversion_is_visible",
    ] {
        ctx.register_udf(is_visible(name));
    }
    for (name, args) in [
        (
            "col_description",
            vec![vec![DataType::Int64, DataType::Int64]],
        ),
        (
            "obj_description",
            vec![vec![DataType::Int64], vec![DataType::Int64, DataType::Utf8]],
        ),
        (
            "shobj_description",
            vec![vec![DataType::Int64, DataType::Utf8]],
        ),
        // Eddy's functions are all built in: none has an SQL body.
        ("pg_get_function_sqlbody", vec![vec![DataType::Int64]]),
        (
            "pg_get_serial_sequence",
            vec![vec![DataType::Utf8, DataType::Utf8]],
        ),
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(NullText::new(name, args)));
    }
    ctx.register_udf(pg_size_pretty());
    ctx.register_udf(ScalarUDF::new_from_impl(CurrentSetting::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(Format::new()));
    ctx.register_udf(format_oidvector());
    ctx.register_udf(jsonb_in());
    ctx.register_udf(set_config());
}

/// `set_config(name, value, is_local)`: the new value. The session takes
/// it when the statement runs (`handler::set::apply_set_config`).
fn set_config() -> ScalarUDF {
    let func = |args: &[ColumnarValue]| -> Result<ColumnarValue> { Ok(args[1].clone()) };
    create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(func),
    )
}

/// The function `x::jsonb` and `x::json` are rewritten into: the text,
/// checked to be JSON (22P02 otherwise), as Eddy keeps json as text.
pub const JSONB_IN: &str = "jsonb_in";

fn jsonb_in() -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonbIn {
        signature: datafusion::logical_expr::Signature::exact(
            vec![DataType::Utf8],
            Volatility::Immutable,
        ),
    })
}

/// [`JSONB_IN`]: its result is marked jsonb, so clients are told so.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonbIn {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonbIn {
    fn name(&self) -> &str {
        JSONB_IN
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(
        &self,
        _args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        let field = datafusion::arrow::datatypes::Field::new(JSONB_IN, DataType::Utf8, true);
        Ok(Arc::new(eddy_catalog::as_jsonb(field)))
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<ColumnarValue> {
        let texts = ColumnarValue::values_to_arrays(&args.args)?;
        let texts = texts[0].as_string::<i32>();
        for text in texts.iter().flatten() {
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return Err(datafusion::error::DataFusionError::ArrowError(
                    Box::new(datafusion::arrow::error::ArrowError::ParseError(format!(
                        "invalid input syntax for type json: {e}"
                    ))),
                    None,
                ));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(texts.clone())))
    }
}

/// `format_oidvector(text)`: the types of an oidvector (`pg_proc`'s
/// `proargtypes`, "25 1042") as `format_type` prints them, comma
/// separated. `pg_get_function_arguments` is rewritten into it.
fn format_oidvector() -> ScalarUDF {
    let format_type = datafusion_pg_catalog::pg_catalog::format_type::create_format_type_udf();
    let func = move |args: &[ColumnarValue]| -> Result<ColumnarValue> {
        let vectors = ColumnarValue::values_to_arrays(args)?;
        let vectors = vectors[0].as_string::<i32>();
        let oids: Vec<Vec<i32>> = vectors
            .iter()
            .map(|v| {
                v.unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|oid| oid.parse().ok())
                    .collect()
            })
            .collect();
        let all: Int32Array = oids.iter().flatten().map(|&oid| Some(oid)).collect();
        let n = all.len();
        let typmods = Int32Array::new_null(n);
        let names = format_type.invoke_with_args(ScalarFunctionArgs {
            arg_fields: vec![
                Arc::new(Field::new("oid", DataType::Int32, true)),
                Arc::new(Field::new("typmod", DataType::Int32, true)),
            ],
            args: vec![
                ColumnarValue::Array(Arc::new(all)),
                ColumnarValue::Array(Arc::new(typmods)),
            ],
            number_rows: n,
            return_field: Arc::new(Field::new("format_type", DataType::Utf8, true)),
            config_options: Default::default(),
        })?;
        let names = names.into_array(n)?;
        let names = names.as_string::<i32>();
        let mut next = 0;
        let out: StringArray = oids
            .iter()
            .enumerate()
            .map(|(row, vector)| {
                let text = (0..vector.len())
                    .map(|i| names.value(next + i))
                    .collect::<Vec<_>>()
                    .join(", ");
                next += vector.len();
                vectors.is_valid(row).then_some(text)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    };
    create_udf(
        "format_oidvector",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(func),
    )
}

/// `to_regtype(text)`: the type's oid, or NULL for a name that is not one.
fn to_regtype() -> ScalarUDF {
    let func = |args: &[ColumnarValue]| -> Result<ColumnarValue> {
        let names = ColumnarValue::values_to_arrays(args)?;
        let names = names[0].as_string::<i32>();
        let oids: Int32Array = names.iter().map(|n| n.and_then(type_oid)).collect();
        Ok(ColumnarValue::Array(Arc::new(oids)))
    };
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(func),
    )
}

/// `pg_*_is_visible(oid)`: every object Eddy has is on the search path.
/// Oids are taken as `bigint`, so both `pg_class.oid` and literals fit.
fn is_visible(name: &str) -> ScalarUDF {
    let func = |args: &[ColumnarValue]| -> Result<ColumnarValue> {
        let oids = ColumnarValue::values_to_arrays(args)?;
        let visible: BooleanArray = (0..oids[0].len())
            .map(|i| oids[0].is_valid(i).then_some(true))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(visible)))
    };
    create_udf(
        name,
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(func),
    )
}

/// `pg_size_pretty(bigint)`, rounded as Postgres rounds it.
fn pg_size_pretty() -> ScalarUDF {
    let func = |args: &[ColumnarValue]| -> Result<ColumnarValue> {
        let sizes = ColumnarValue::values_to_arrays(args)?;
        let sizes = sizes[0].as_primitive::<Int64Type>();
        let text: StringArray = sizes.iter().map(|s| s.map(size_pretty)).collect();
        Ok(ColumnarValue::Array(Arc::new(text)))
    };
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(func),
    )
}

/// Postgres's `pg_size_pretty`: each unit is used while the value stays
/// below its limit, halved and rounded away from zero past bytes.
fn size_pretty(bytes: i64) -> String {
    // (name, limit, rounds, bits)
    const UNITS: [(&str, u64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let half_rounded = |v: i64| (v + if v < 0 { -1 } else { 1 }) / 2;
    let mut size = bytes;
    for (i, &(name, limit, rounds, bits)) in UNITS.iter().enumerate() {
        let Some(&(_, _, next_rounds, next_bits)) = UNITS.get(i + 1) else {
            return format!("{} {name}", half_rounded(size));
        };
        if size.unsigned_abs() < limit {
            let size = if rounds { half_rounded(size) } else { size };
            return format!("{size} {name}");
        }
        let shift = next_bits - bits - u32::from(next_rounds) + u32::from(rounds);
        size /= 1_i64 << shift;
    }
    unreachable!("the last unit returns")
}

/// `pg_typeof(any)`: the name of its argument's type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
}

impl PgTypeof {
    fn new() -> Self {
        PgTypeof {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(field) = args.arg_fields.first() else {
            return exec_err!("pg_typeof takes one argument");
        };
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            printed_type_name(field.data_type()),
        ))))
    }
}

/// `current_setting(name [, missing_ok])` over the server's defaults;
/// calls with a literal name are bound to the session's values before
/// planning (`handler::set::bind_current_settings`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn new() -> Self {
        let signatures = vec![
            TypeSignature::Exact(vec![DataType::Utf8]),
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
            // Bound to the session: the value is the third argument.
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean, DataType::Utf8]),
        ];
        CurrentSetting {
            signature: Signature::one_of(signatures, Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(bound) = args.args.get(2) {
            return Ok(bound.clone());
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = arrays[0].as_string::<i32>();
        let missing_ok = arrays.get(1).map(|a| a.as_boolean().clone());
        let mut values = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let Some(name) = name else {
                values.push(None);
                continue;
            };
            match crate::handler::set::default_setting(name) {
                Some(value) => values.push(Some(value)),
                None if missing_ok
                    .as_ref()
                    .is_some_and(|m| m.is_valid(i) && m.value(i)) =>
                {
                    values.push(None)
                }
                None => {
                    return Err(datafusion::error::DataFusionError::Plan(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )))
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(values))))
    }
}

/// `json_build_object(key, value, ...)`, as JSON text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        JsonBuildObject {
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return exec_err!("argument list must have even number of elements");
        }
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let mut objects = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in columns.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return exec_err!("null value not allowed for object key");
                }
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                object.insert(scalar_text(&key), json_value(&value));
            }
            objects.push(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(objects))))
    }
}

/// Postgres's `format(fmt, args...)`: `%s` (the value as text, NULL as
/// nothing), `%I` (an identifier, quoted where it needs to be), `%L` (a
/// literal, quoted; NULL as `NULL`) and `%%`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Format {
    signature: Signature,
}

impl Format {
    fn new() -> Self {
        Format {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let rows = columns.iter().map(|c| c.len()).max().unwrap_or(0);
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let value = |i: usize| -> Result<ScalarValue> {
                let column = &columns[i];
                ScalarValue::try_from_array(column, if column.len() == 1 { 0 } else { row })
            };
            let template = value(0)?;
            if template.is_null() {
                out.push(None);
                continue;
            }
            let template = scalar_text(&template);
            let mut text = String::with_capacity(template.len());
            let mut next = 1;
            let mut chars = template.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    text.push(c);
                    continue;
                }
                let kind = chars.next();
                if kind == Some('%') {
                    text.push('%');
                    continue;
                }
                if next >= columns.len() {
                    return Err(datafusion::error::DataFusionError::Configuration(
                        "too few arguments for format()".into(),
                    ));
                }
                let arg = value(next)?;
                next += 1;
                match kind {
                    Some('s') if arg.is_null() => {}
                    Some('s') => text.push_str(&scalar_text(&arg)),
                    Some('I') if arg.is_null() => {
                        return Err(datafusion::error::DataFusionError::Configuration(
                            "null values cannot be formatted as an SQL identifier".into(),
                        ))
                    }
                    Some('I') => text.push_str(&quote_ident(&scalar_text(&arg))),
                    Some('L') if arg.is_null() => text.push_str("NULL"),
                    Some('L') => {
                        text.push('\'');
                        text.push_str(&scalar_text(&arg).replace('\'', "''"));
                        text.push('\'');
                    }
                    other => {
                        return Err(datafusion::error::DataFusionError::Configuration(format!(
                            "unrecognized format() type specifier \"{}\"",
                            other.map(String::from).unwrap_or_default()
                        )))
                    }
                }
            }
            out.push(Some(text));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `quote_ident`: the name as is if it is a plain lower-case identifier,
/// else in double quotes with quotes doubled.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn scalar_text(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        other => other.to_string(),
    }
}

fn json_value(value: &ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if value.is_null() {
        return Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Float32(_)
        | ScalarValue::Float64(_)
        | ScalarValue::Decimal128(..) => {
            let text = value.to_string();
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        other => Value::String(scalar_text(other)),
    }
}

/// A function whose answer for every object of Eddy's is NULL: no
/// comments, no sequences.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullText {
    name: &'static str,
    signature: Signature,
    returns: DataType,
}

impl NullText {
    fn new(name: &'static str, signatures: Vec<Vec<DataType>>) -> Self {
        let returns = DataType::Utf8;
        let signatures = signatures.into_iter().map(TypeSignature::Exact).collect();
        NullText {
            name,
            signature: Signature::one_of(signatures, Volatility::Stable),
            returns,
        }
    }
}

impl ScalarUDFImpl for NullText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let nulls: ArrayRef = new_null_array(&self.returns, args.number_rows);
        Ok(ColumnarValue::Array(nulls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_resolve_as_postgres_resolves_them() {
        assert_eq!(type_oid("integer"), Some(23));
        assert_eq!(type_oid("pg_catalog.int4"), Some(23));
        assert_eq!(type_oid("  Character Varying(20) "), Some(1043));
        assert_eq!(type_oid("text[]"), Some(1009));
        assert_eq!(type_oid("double precision"), Some(701));
        assert_eq!(type_oid("hstore"), None);
        assert_eq!(type_oid(""), None);
    }

    #[test]
    fn arrow_types_print_as_postgres_types() {
        assert_eq!(printed_type_name(&DataType::Int32), "integer");
        assert_eq!(printed_type_name(&DataType::Utf8), "text");
        assert_eq!(printed_type_name(&DataType::Float64), "double precision");
    }

    #[test]
    fn json_values_keep_their_kinds() {
        assert_eq!(
            json_value(&ScalarValue::Int64(Some(3))),
            serde_json::json!(3)
        );
        assert_eq!(
            json_value(&ScalarValue::Boolean(Some(true))),
            serde_json::json!(true)
        );
        assert_eq!(
            json_value(&ScalarValue::Utf8(None)),
            serde_json::Value::Null
        );
        assert_eq!(
            json_value(&ScalarValue::Utf8(Some("a\"b".into()))),
            serde_json::json!("a\"b")
        );
    }

    #[test]
    fn sizes_print_as_postgres_prints_them() {
        assert_eq!(size_pretty(0), "0 bytes");
        assert_eq!(size_pretty(10239), "10239 bytes");
        assert_eq!(size_pretty(10240), "10 kB");
        assert_eq!(size_pretty(1_000_000), "977 kB");
        assert_eq!(size_pretty(10_485_760), "10 MB");
        assert_eq!(size_pretty(1_234_567_890), "1177 MB");
        assert_eq!(size_pretty(-20480), "-20 kB");
    }
}
