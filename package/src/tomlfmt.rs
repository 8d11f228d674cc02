//! Writes JSON values as TOML values: the only way a template's output
//! reaches a job file, so that no option value can break (or inject into)
//! the TOML around it.

use serde_json::Value;

/// `value` as one TOML value: a basic string with every special character
/// escaped, an integer, a float, a bool, an array or an inline table.
/// `null` has no TOML form: the error says so.
pub fn to_toml_value(value: &Value) -> Result<String, String> {
    let mut out = String::new();
    write_value(&mut out, value)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value) -> Result<(), String> {
    match value {
        Value::Null => {
            return Err(
                "null has no TOML form: give the option a value, or test it with `is none` before writing it"
                    .to_owned(),
            );
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                if n.as_u64().is_some_and(|u| u > i64::MAX as u64) {
                    return Err(format!("{n} is larger than TOML's largest integer"));
                }
                out.push_str(&n.to_string());
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_nan() {
                    out.push_str("nan");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "inf" } else { "-inf" });
                } else {
                    let s = format!("{f:?}");
                    // Rust's Debug form always has a '.', 'e' or is inf/NaN.
                    out.push_str(&s);
                }
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                out.push_str(if i > 0 { ", " } else { " " });
                write_key(out, k);
                out.push_str(" = ");
                write_value(out, v)?;
            }
            out.push_str(if map.is_empty() { "}" } else { " }" });
        }
    }
    Ok(())
}

/// A key: bare when it can be, else quoted.
pub(crate) fn write_key(out: &mut String, key: &str) {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        out.push_str(key);
    } else {
        write_string(out, key);
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: Value) {
        let text = format!("v = {}", to_toml_value(&v).unwrap());
        let parsed: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let back = serde_json::to_value(&parsed["v"]).unwrap();
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn tricky_strings_round_trip() {
        for s in [
            "",
            "plain",
            "with \"quotes\" and 'single'",
            "back\\slash \\n not a newline",
            "two\nlines\r\nand a\ttab",
            "unicode: é 中文 🦀 \u{200b}",
            "controls \u{0} \u{1b}[31m \u{7f} \u{8} \u{c}",
            "\"\"\" triple",
            "x\" , injected = \"y",
            "]] [[task]] #",
        ] {
            round_trip(json!(s));
        }
    }

    #[test]
    fn other_values_round_trip() {
        round_trip(json!(0));
        round_trip(json!(-42));
        round_trip(json!(i64::MAX));
        round_trip(json!(1.5));
        round_trip(json!(1e300));
        round_trip(json!(true));
        round_trip(json!([1, "a", [false]]));
        round_trip(json!({"a": 1, "b c": "d", "": [], "é": {"x": "y"}}));
        round_trip(json!({}));
    }

    #[test]
    fn null_and_huge_numbers_are_refused() {
        assert!(to_toml_value(&json!(null)).unwrap_err().contains("null"));
        assert!(to_toml_value(&json!(u64::MAX)).is_err());
    }
}
