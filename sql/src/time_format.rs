//! ksqlDB's `timestamp_format`: a Java `DateTimeFormatter` pattern, turned
//! into the strftime format the record decoder parses with.

use crate::{Result, SqlError};

/// The strftime format for a `DateTimeFormatter` pattern such as
/// `yyyy-MM-dd'T'HH:mm:ss.SSSX`.
pub fn strftime_of_java_pattern(pattern: &str) -> Result<String> {
    let invalid =
        |why: String| SqlError::InvalidDefinition(format!("timestamp_format '{pattern}': {why}"));
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A quoted literal; '' is a quote.
            let mut j = i + 1;
            if chars.get(j) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            loop {
                match chars.get(j) {
                    None => return Err(invalid("a quoted literal is not closed".into())),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        out.push('\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some(&other) => {
                        push_literal(&mut out, other);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let field = match (c, run) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M' | 'L', 1 | 2) => "%m",
            ('M' | 'L', 3) => "%b",
            ('M' | 'L', _) => "%B",
            ('d', 1 | 2) => "%d",
            ('D', _) => "%j",
            ('H' | 'k', 1 | 2) => "%H",
            ('h' | 'K', 1 | 2) => "%I",
            ('m', 1 | 2) => "%M",
            ('s', 1 | 2) => "%S",
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', 9) => "%9f",
            ('a', 1) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('X' | 'x' | 'Z', 1 | 2) => "%z",
            ('X' | 'x' | 'Z', 3) => "%:z",
            _ => {
                return Err(invalid(format!(
                    "pattern letters {} are not supported",
                    c.to_string().repeat(run)
                )))
            }
        };
        out.push_str(field);
        i += run;
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_patterns_become_strftime_formats() {
        for (java, strftime) in [
            ("yyyy-MM-dd HH:mm:ss", "%Y-%m-%d %H:%M:%S"),
            ("yyyy-MM-dd'T'HH:mm:ss.SSSX", "%Y-%m-%dT%H:%M:%S.%3f%z"),
            ("dd/MM/yy hh:mm a", "%d/%m/%y %I:%M %p"),
            ("EEE, d MMM yyyy HH:mm:ss XXX", "%a, %d %b %Y %H:%M:%S %:z"),
            ("yyyyMMdd'''x'''", "%Y%m%d'x'"),
            ("HH:mm 100%", "%H:%M 100%%"),
        ] {
            assert_eq!(strftime_of_java_pattern(java).unwrap(), strftime, "{java}");
        }
        for bad in ["yyyy-MM-dd'T", "yyyy QQQ", "HH:mm:ss.SS"] {
            assert!(strftime_of_java_pattern(bad).is_err(), "{bad}");
        }
    }
}
