//! Reading the configuration out of a parsed JSON value field by field, keeping the path of
//! every field for error messages. (serde's derived readers do the same with several times the
//! code in the module: measured in issue 6, module size.) The modules that own a part of the
//! configuration (each fault kind, `match`, the rule) read their part with these.

use super::json::{Number, Value};
use super::ConfigError;
use std::time::Duration;

/// Longest accepted duration in a rule.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses a duration such as `"250ms"`, `"1s"` or `"1m30s"`. Zero is refused: every duration in
/// the configuration is a period or a delay for which zero would be a mistake (the few offsets
/// that may be zero are read with [`Fields::offset`]).
pub fn parse_duration(path: &str, text: &str) -> Result<Duration, ConfigError> {
    match super::duration::parse(text) {
        Some(d) if d.is_zero() => Err(ConfigError::new(
            path,
            format!(
                "invalid duration {}: must be greater than zero",
                quote(text)
            ),
        )),
        Some(d) => Ok(d),
        None => Err(ConfigError::new(
            path,
            format!(
                "invalid duration {} (expected e.g. \"250ms\", \"1s\", \"1m30s\")",
                quote(text)
            ),
        )),
    }
}

/// A rule duration: greater than zero, at most 30 days.
fn rule_duration(path: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(path, text)?;
    if d > MAX_DURATION {
        return Err(ConfigError::new(
            path,
            format!("{} is too long (at most 30 days)", quote(text)),
        ));
    }
    Ok(d)
}

/// A number as JSON would write it, without pulling float formatting into the module:
/// integers exactly, other values with up to six decimals.
pub fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64();
    if !f.is_finite() || f.abs() >= 1e15 {
        return if f < 0.0 {
            "-huge".into()
        } else {
            "huge".into()
        };
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let scaled = (f.abs() * 1e6).round() as u64;
    let (int, frac) = (scaled / 1_000_000, scaled % 1_000_000);
    let frac = format!("{frac:06}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// `s` in double quotes, with `"`, `\` and control characters escaped. (`{:?}` would do it,
/// at the price of Unicode tables in the module.)
pub fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

/// `s` with `"`, `\` and control characters escaped, so that an error stays on one line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                // `\u{1f}`, written by hand: hex formatting is not otherwise in the module.
                out.push_str("\\u{");
                let code = u32::from(c);
                let digits = (32 - code.leading_zeros()).div_ceil(4).max(1);
                for i in (0..digits).rev() {
                    let nibble = (code >> (4 * i)) & 0xf;
                    out.push(char::from_digit(nibble, 16).unwrap_or('0'));
                }
                out.push('}');
            }
            c => out.push(c),
        }
    }
    out
}

/// What a value is, in the words serde uses (`integer `5``, `string "x"`, `sequence`...).
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{}`", number_text(n)),
        Value::Number(n) => format!("integer `{}`", number_text(n)),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(_) => "sequence".into(),
        Value::Object(_) => "map".into(),
    }
}

pub fn type_error(path: &str, v: &Value, expected: &str) -> ConfigError {
    ConfigError::new(
        path,
        format!("invalid type: {}, expected {expected}", describe(v)),
    )
}

/// Appends `items` separated by ", " (`[T]::join` would add its own generic code to the module).
pub fn push_list(out: &mut String, items: &[&str]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(item);
    }
}

/// `path` joined with `key`; the document itself has the empty path.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The fields of one JSON object, checked against the keys it may have.
pub struct Fields<'a> {
    members: &'a [(String, Value)],
    path: String,
}

impl<'a> Fields<'a> {
    /// `v` must be an object whose keys are all in `known`.
    pub fn of(v: &'a Value, path: &str, known: &[&str]) -> Result<Fields<'a>, ConfigError> {
        let Value::Object(members) = v else {
            let at = if path.is_empty() {
                "configuration"
            } else {
                path
            };
            return Err(type_error(at, v, "an object"));
        };
        if let Some((key, _)) = members.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            // The key is the user's text: escaped, so that the error stays on one line (found
            // by fuzzing).
            let key = escape(key);
            let mut message = format!("unknown field `{key}`");
            if known.is_empty() {
                message.push_str(" (this object takes no fields: write {})");
            } else {
                message.push_str(" (expected one of: ");
                push_list(&mut message, known);
                message.push(')');
            }
            return Err(ConfigError::new(join(path, &key), message));
        }
        Ok(Fields {
            members,
            path: path.to_owned(),
        })
    }

    /// The document's root object with whatever keys it has (after its unknown keys were
    /// reported), so that the rest can still be checked.
    pub fn unchecked(v: &'a Value) -> Result<Fields<'a>, ConfigError> {
        match v {
            Value::Object(members) => Ok(Fields {
                members,
                path: String::new(),
            }),
            _ => Err(type_error("configuration", v, "an object")),
        }
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The path of this object itself (`configuration` for the document).
    pub fn at(&self) -> &str {
        if self.path.is_empty() {
            "configuration"
        } else {
            &self.path
        }
    }

    /// A rule duration under `key` (greater than zero, at most 30 days).
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.str(key)?
            .map(|text| rule_duration(&self.path(key), text))
            .transpose()
    }

    /// An RFC 3339 instant as nanoseconds since the Unix epoch (`expiresAt`, `window.start`).
    pub fn instant(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.str(key)? {
            None => Ok(None),
            Some(text) => super::time::parse(text).map(Some).ok_or_else(|| {
                ConfigError::new(
                    self.path(key),
                    format!(
                        "invalid time {}: expected RFC 3339, as in \"2026-11-26T15:00:00Z\"",
                        super::quote(text)
                    ),
                )
            }),
        }
    }

    /// Like [`Fields::duration`], but zero is accepted (`window.after`, `delay.jitter`).
    pub fn offset(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.str(key)? {
            Some(text) if super::duration::parse(text).is_some_and(|d| d.is_zero()) => {
                Ok(Some(Duration::ZERO))
            }
            _ => self.duration(key),
        }
    }

    /// The value of `key`; absent and `null` both mean "not set".
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        // The last of repeated keys wins, as serde_json's own map would have it.
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(type_error(&self.path(key), v, "a boolean")),
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_str(v, &self.path(key)).map(Some),
        }
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_u64(v, &self.path(key)).map(Some),
        }
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(n.as_f64())),
            Some(v) => Err(type_error(&self.path(key), v, "a number")),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a [Value]>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(v) => Err(type_error(&self.path(key), v, "a sequence")),
        }
    }

    /// The object under `key`, checked against `known`.
    pub fn object(&self, key: &str, known: &[&str]) -> Result<Option<Fields<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Fields::of(v, &self.path(key), known).map(Some),
        }
    }
}

pub fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, ConfigError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(type_error(path, v, "a string")),
    }
}

pub fn as_u64(v: &Value, path: &str) -> Result<u64, ConfigError> {
    match v {
        Value::Number(n) if n.is_f64() => Err(type_error(path, v, "an integer")),
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            ConfigError::new(
                path,
                format!(
                    "invalid value: {}, expected a non-negative integer",
                    describe(v)
                ),
            )
        }),
        _ => Err(type_error(path, v, "an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn numbers_print_without_float_formatting() {
        let n = |text: &str| match crate::config::json::parse(text.as_bytes()).unwrap() {
            Value::Number(n) => number_text(&n),
            _ => unreachable!(),
        };
        assert_eq!(n("5"), "5");
        assert_eq!(n("-1"), "-1");
        assert_eq!(n("1.5"), "1.5");
        assert_eq!(n("-0.25"), "-0.25");
        assert_eq!(n("100.000001"), "100.000001");
        assert_eq!(n("1e300"), "huge");
        assert_eq!(n("18446744073709551615"), "18446744073709551615");
    }
}
