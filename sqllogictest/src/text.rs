//! Binary result values to PostgreSQL text output.
//!
//! tokio-postgres asks for every result column in binary format, so in
//! extended mode the runner turns each value back into what Postgres's own
//! output function (`int4out`, `float8out`, `numeric_out`, `interval_out`,
//! `array_out`, ...) would print with the default settings (DateStyle ISO,
//! IntervalStyle postgres, extra_float_digits 1, TimeZone UTC). The `.slt`
//! files can then expect the same text in both protocols.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use tokio_postgres::types::{FromSql, Kind, Type};

/// The raw bytes of any value, whatever its type.
pub struct Raw<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// Why a value could not be shown as text.
#[derive(Debug)]
pub struct FormatError(pub String);

type Result<T> = std::result::Result<T, FormatError>;

fn bad(ty: &Type, why: impl std::fmt::Display) -> FormatError {
    FormatError(format!("bad binary value for type {ty}: {why}"))
}

/// Reads big-endian fixed-size values off the front of a slice.
struct Reader<'a> {
    ty: &'a Type,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(bad(self.ty, format!("needs {n} more bytes")));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// The value must have been consumed exactly.
    fn done<T>(&self, value: T) -> Result<T> {
        if self.buf.is_empty() {
            Ok(value)
        } else {
            Err(bad(self.ty, format!("{} trailing bytes", self.buf.len())))
        }
    }
}

/// Text output of a binary value of type `ty`.
pub fn to_text(ty: &Type, raw: &[u8]) -> Result<String> {
    let mut r = Reader { ty, buf: raw };
    let text = match *ty {
        Type::BOOL => match r.array::<1>()? {
            [0] => "f".to_string(),
            _ => "t".to_string(),
        },
        Type::INT2 => r.i16()?.to_string(),
        Type::INT4 => r.i32()?.to_string(),
        Type::INT8 => r.i64()?.to_string(),
        Type::OID | Type::REGCLASS | Type::REGPROC | Type::REGTYPE | Type::XID => {
            r.u32()?.to_string()
        }
        Type::FLOAT4 => float4(f32::from_be_bytes(r.array()?)),
        Type::FLOAT8 => float8(f64::from_be_bytes(r.array()?)),
        Type::NUMERIC => numeric(&mut r)?,
        Type::DATE => date(r.i32()?),
        Type::TIME => time(r.i64()?),
        Type::TIMESTAMP => timestamp(r.i64()?, ""),
        // The runner's sessions are in UTC (see main.rs).
        Type::TIMESTAMPTZ => timestamp(r.i64()?, "+00"),
        Type::INTERVAL => {
            let micros = r.i64()?;
            let days = r.i32()?;
            let months = r.i32()?;
            interval(months, days, micros)
        }
        Type::BYTEA => {
            let mut s = String::with_capacity(2 + 2 * raw.len());
            s.push_str("\\x");
            for b in r.take(raw.len())? {
                let _ = write!(s, "{b:02x}");
            }
            s
        }
        Type::UUID => {
            let b = r.array::<16>()?;
            let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            )
        }
        Type::JSONB => {
            // Version byte 1, then the JSON text.
            match r.take(1)? {
                [1] => utf8(ty, r.take(raw.len() - 1)?)?,
                [v] => return Err(bad(ty, format!("jsonb version {v}"))),
                _ => unreachable!("took one byte"),
            }
        }
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::JSON
        | Type::XML
        | Type::CHAR => utf8(ty, r.take(raw.len())?)?,
        Type::RECORD => record(&mut r)?,
        _ => match ty.kind() {
            Kind::Array(element) => array(&mut r, element)?,
            Kind::Composite(_) => record(&mut r)?,
            Kind::Domain(base) => return to_text(base, raw),
            Kind::Enum(_) => utf8(ty, r.take(raw.len())?)?,
            _ => {
                return Err(FormatError(format!(
                    "the runner cannot show type {ty} (oid {}) in extended mode; \
                     cast it to text in the query, or mark the record `onlyif simple`",
                    ty.oid()
                )))
            }
        },
    };
    r.done(text)
}

fn utf8(ty: &Type, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| bad(ty, e))
}

/// `float8out`: shortest text that reads back exactly; exponent notation
/// outside 1e-4 <= |v| < 1e15, as `%g` with precision DBL_DIG would.
pub fn float8(v: f64) -> String {
    float(
        v.is_nan(),
        v.is_infinite(),
        v > 0.0,
        format!("{v:e}"),
        v.to_string(),
        15,
    )
}

/// `float4out`: as [`float8`], with FLT_DIG = 6.
pub fn float4(v: f32) -> String {
    float(
        v.is_nan(),
        v.is_infinite(),
        v > 0.0,
        format!("{v:e}"),
        v.to_string(),
        6,
    )
}

fn float(nan: bool, inf: bool, pos: bool, sci: String, fixed: String, digits: i32) -> String {
    if nan {
        return "NaN".to_string();
    }
    if inf {
        return if pos { "Infinity" } else { "-Infinity" }.to_string();
    }
    // Rust prints both forms with the shortest round-trip digits, like
    // Postgres 12+; only the choice of form and the exponent style differ.
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return fixed;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if fixed == "0" || fixed == "-0" || (-4..digits).contains(&exp) {
        fixed
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// `numeric_out` from the binary form: base-10000 digits, a weight, a sign
/// and the display scale.
fn numeric(r: &mut Reader<'_>) -> Result<String> {
    let ndigits = r.i16()?;
    let weight = i32::from(r.i16()?);
    let sign = r.u16()?;
    let dscale = usize::from(r.u16()?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".to_string()),
        0xD000 => return Ok("Infinity".to_string()),
        0xF000 => return Ok("-Infinity".to_string()),
        other => return Err(bad(r.ty, format!("numeric sign {other:#x}"))),
    }
    let ndigits = usize::try_from(ndigits).map_err(|_| bad(r.ty, "negative ndigits"))?;
    let digits = (0..ndigits).map(|_| r.i16()).collect::<Result<Vec<_>>>()?;
    let digit = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };

    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(s, "{}", digit(i));
            } else {
                let _ = write!(s, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(dscale);
        s.push_str(&frac);
    }
    Ok(s)
}

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("2000-01-01 is a date")
}

/// ISO date; years before 1 are shown `BC` like Postgres.
fn ymd(year: i32, month: u32, day: u32) -> String {
    if year <= 0 {
        format!("{:04}-{month:02}-{day:02} BC", 1 - year)
    } else {
        format!("{year:04}-{month:02}-{day:02}")
    }
}

fn date(days: i32) -> String {
    match days {
        i32::MAX => return "infinity".to_string(),
        i32::MIN => return "-infinity".to_string(),
        _ => {}
    }
    match epoch().checked_add_signed(chrono::Duration::days(i64::from(days))) {
        Some(d) => ymd(d.year(), d.month(), d.day()),
        None => format!("<date out of range: {days}>"),
    }
}

/// `HH:MM:SS` with fractional seconds, trailing zeros dropped.
fn clock(hours: i64, minutes: i64, micros_in_minute: i64) -> String {
    let mut s = format!(
        "{hours:02}:{minutes:02}:{:02}",
        micros_in_minute / USECS_PER_SEC
    );
    let frac = micros_in_minute % USECS_PER_SEC;
    if frac != 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

fn time(micros: i64) -> String {
    clock(
        micros / (3600 * USECS_PER_SEC),
        micros / (60 * USECS_PER_SEC) % 60,
        micros % (60 * USECS_PER_SEC),
    )
}

fn timestamp(micros: i64, zone: &str) -> String {
    match micros {
        i64::MAX => return "infinity".to_string(),
        i64::MIN => return "-infinity".to_string(),
        _ => {}
    }
    let base = epoch().and_hms_opt(0, 0, 0).expect("midnight");
    let Some(ts): Option<NaiveDateTime> =
        base.checked_add_signed(chrono::Duration::microseconds(micros))
    else {
        return format!("<timestamp out of range: {micros}>");
    };
    let micros_of_day = micros.rem_euclid(USECS_PER_DAY);
    let d = ts.date();
    let mut s = if d.year() <= 0 {
        // "0044-03-15 12:00:00 BC": the era goes after the time.
        format!("{:04}-{:02}-{:02}", 1 - d.year(), d.month(), d.day())
    } else {
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    };
    s.push(' ');
    s.push_str(&clock(
        i64::from(ts.hour()),
        i64::from(ts.minute()),
        micros_of_day % (60 * USECS_PER_SEC),
    ));
    s.push_str(zone);
    if d.year() <= 0 {
        s.push_str(" BC");
    }
    s
}

/// `interval_out` with IntervalStyle `postgres`, e.g.
/// `1 year 2 mons -3 days +04:05:06.5`.
pub fn interval(months: i32, days: i32, micros: i64) -> String {
    let mut s = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        let _ = write!(
            s,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value != 1 { "s" } else { "" }
        );
        is_before = value < 0;
        is_zero = false;
    };
    part(i64::from(months / 12), "year");
    part(i64::from(months % 12), "mon");
    part(i64::from(days), "day");
    if is_zero || micros != 0 {
        let minus = micros < 0;
        let abs = micros.unsigned_abs() as i64;
        let _ = write!(
            s,
            "{}{}",
            if is_zero { "" } else { " " },
            if minus {
                "-"
            } else if is_before {
                "+"
            } else {
                ""
            }
        );
        s.push_str(&clock(
            abs / (3600 * USECS_PER_SEC),
            abs / (60 * USECS_PER_SEC) % 60,
            abs % (60 * USECS_PER_SEC),
        ));
    }
    s
}

/// `array_out`: `{1,2,NULL}`, nested braces per dimension, `[lo:hi]=`
/// prefix when a lower bound is not 1, and quotes where needed.
fn array(r: &mut Reader<'_>, element: &Type) -> Result<String> {
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let _element_oid = r.u32()?;
    if ndim == 0 {
        return Ok("{}".to_string());
    }
    let ndim = usize::try_from(ndim).map_err(|_| bad(r.ty, "negative ndim"))?;
    let mut dims = Vec::with_capacity(ndim);
    let mut bounds = String::new();
    let mut show_bounds = false;
    for _ in 0..ndim {
        let len = r.i32()?;
        let lower = r.i32()?;
        dims.push(usize::try_from(len).map_err(|_| bad(r.ty, "negative dimension"))?);
        let _ = write!(bounds, "[{}:{}]", lower, lower + len - 1);
        show_bounds |= lower != 1;
    }
    let mut out = if show_bounds {
        format!("{bounds}=")
    } else {
        String::new()
    };
    array_dim(r, element, &dims, &mut out)?;
    Ok(out)
}

/// A record's binary form (`record_send`: a field count, then each
/// field's type oid and value) as `record_out` writes it: `(1,,"a b")`.
fn record(r: &mut Reader<'_>) -> Result<String> {
    let fields = r.i32()?;
    let mut out = String::from("(");
    for i in 0..fields {
        if i > 0 {
            out.push(',');
        }
        let oid = r.u32()?;
        let len = r.i32()?;
        if len < 0 {
            continue;
        }
        let ty = Type::from_oid(oid).ok_or_else(|| bad(r.ty, format!("field type oid {oid}")))?;
        let text = to_text(&ty, r.take(len as usize)?)?;
        let needs_quotes = text.is_empty()
            || text
                .chars()
                .any(|c| matches!(c, '"' | '\\' | '(' | ')' | ',') || c.is_ascii_whitespace());
        if needs_quotes {
            out.push('"');
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    out.push(c);
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
    out.push(')');
    Ok(out)
}

fn array_dim(r: &mut Reader<'_>, element: &Type, dims: &[usize], out: &mut String) -> Result<()> {
    out.push('{');
    for i in 0..dims[0] {
        if i > 0 {
            out.push(',');
        }
        if dims.len() > 1 {
            array_dim(r, element, &dims[1..], out)?;
            continue;
        }
        let len = r.i32()?;
        if len < 0 {
            out.push_str("NULL");
            continue;
        }
        let bytes = r.take(len as usize)?;
        let text = to_text(element, bytes)?;
        let needs_quotes = text.is_empty()
            || text.eq_ignore_ascii_case("NULL")
            || text.chars().any(|c| {
                matches!(
                    c,
                    '{' | '}' | ',' | '"' | '\\' | ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}'
                )
            });
        if needs_quotes {
            out.push('"');
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
    out.push('}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_postgres() {
        assert_eq!(float8(1.5), "1.5");
        assert_eq!(float8(-0.25), "-0.25");
        assert_eq!(float8(0.0), "0");
        assert_eq!(float8(-0.0), "-0");
        assert_eq!(float8(1e14), "100000000000000");
        assert_eq!(float8(1e15), "1e+15");
        assert_eq!(float8(1e20), "1e+20");
        assert_eq!(float8(0.0001), "0.0001");
        assert_eq!(float8(0.00001), "1e-05");
        assert_eq!(float8(1.5e-5), "1.5e-05");
        assert_eq!(float8(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(float8(1.2345678901234568e17), "1.2345678901234568e+17");
        assert_eq!(float8(1e100), "1e+100");
        assert_eq!(float8(f64::NAN), "NaN");
        assert_eq!(float8(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(float4(123456.0), "123456");
        assert_eq!(float4(1e6), "1e+06");
        assert_eq!(float4(0.1), "0.1");
        assert_eq!(float4(3.4028235e38), "3.4028235e+38");
    }

    fn numeric_bytes(ndigits: &[i16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((ndigits.len() as i16).to_be_bytes());
        b.extend(weight.to_be_bytes());
        b.extend(sign.to_be_bytes());
        b.extend(dscale.to_be_bytes());
        for d in ndigits {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_like_postgres() {
        let n = |d: &[i16], w, s, sc| to_text(&Type::NUMERIC, &numeric_bytes(d, w, s, sc)).unwrap();
        assert_eq!(n(&[1, 5000], 0, 0, 2), "1.50");
        assert_eq!(n(&[123, 4500], 0, 0x4000, 2), "-123.45");
        assert_eq!(n(&[], 0, 0, 0), "0");
        assert_eq!(n(&[], 0, 0, 3), "0.000");
        assert_eq!(n(&[1], 2, 0, 0), "100000000");
        assert_eq!(n(&[5000], -1, 0, 1), "0.5");
        assert_eq!(n(&[12], -2, 0, 8), "0.00000012");
        assert_eq!(n(&[], 0, 0xC000, 0), "NaN");
    }

    #[test]
    fn intervals_like_postgres() {
        let h = 3600 * USECS_PER_SEC;
        assert_eq!(interval(0, 0, 0), "00:00:00");
        assert_eq!(
            interval(0, 1, 2 * h + 3 * 60 * USECS_PER_SEC + 4 * USECS_PER_SEC),
            "1 day 02:03:04"
        );
        assert_eq!(interval(14, 0, 0), "1 year 2 mons");
        assert_eq!(interval(-12, 0, 0), "-1 years");
        assert_eq!(interval(0, -1, h), "-1 days +01:00:00");
        assert_eq!(interval(0, 0, -h - 500_000), "-01:00:00.5");
        assert_eq!(interval(0, 3, 0), "3 days");
        assert_eq!(interval(0, 0, 30 * h), "30:00:00");
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        assert_eq!(date(i32::MAX), "infinity");
        assert_eq!(
            time(12 * 3600 * USECS_PER_SEC + 34 * 60 * USECS_PER_SEC + 56 * USECS_PER_SEC),
            "12:34:56"
        );
        assert_eq!(time(1), "00:00:00.000001");
        assert_eq!(timestamp(0, ""), "2000-01-01 00:00:00");
        assert_eq!(timestamp(-1, "+00"), "1999-12-31 23:59:59.999999+00");
        assert_eq!(timestamp(1_500_000, ""), "2000-01-01 00:00:01.5");
    }

    #[test]
    fn arrays() {
        let mut b = Vec::new();
        b.extend(1i32.to_be_bytes()); // ndim
        b.extend(1i32.to_be_bytes()); // has nulls
        b.extend(25u32.to_be_bytes()); // text
        b.extend(4i32.to_be_bytes()); // len
        b.extend(1i32.to_be_bytes()); // lower
        for v in [Some("a"), None, Some("b c"), Some("")] {
            match v {
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend(v.as_bytes());
                }
                None => b.extend((-1i32).to_be_bytes()),
            }
        }
        assert_eq!(
            to_text(&Type::TEXT_ARRAY, &b).unwrap(),
            r#"{a,NULL,"b c",""}"#
        );
    }
}
