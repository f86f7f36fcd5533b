//! Reading configuration from the environment, with Go-compatible syntax.
//!
//! Knative's controller injects configuration as environment variables and
//! parses them with Go's `envconfig`; [`Strings`] is the source (the process
//! environment in production, a map in tests, so no test ever calls
//! `set_var`), and the `parse_*` helpers accept exactly what Go accepts.
//! Every error names the variable and the bad value; the binaries turn it
//! into exit code 64 before any port opens.

use std::collections::HashMap;
use std::time::Duration;

/// A source of configuration strings.
pub trait Strings {
    /// The value of `key`, or `None` when it is not set.
    fn get(&self, key: &str) -> Result<Option<String>, EnvError>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Env;

/// A configuration error that names the variable and the bad value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A required variable is not set.
    #[error("required environment variable {var} is not set")]
    Missing {
        /// The variable's name.
        var: String,
    },
    /// A variable is set to a value that does not parse.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        var: String,
        /// The value as found.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Exit code for bad configuration (`EX_USAGE` from sysexits.h).
pub const EX_USAGE: u8 = 64;

// === impl Env ===

impl Strings for Env {
    fn get(&self, key: &str) -> Result<Option<String>, EnvError> {
        match std::env::var(key) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(EnvError::Invalid {
                var: key.to_owned(),
                value: v.to_string_lossy().into_owned(),
                reason: "not valid UTF-8".to_owned(),
            }),
        }
    }
}

impl<K, V, S> Strings for HashMap<K, V, S>
where
    K: std::borrow::Borrow<str> + std::hash::Hash + Eq,
    V: AsRef<str>,
    S: std::hash::BuildHasher,
{
    fn get(&self, key: &str) -> Result<Option<String>, EnvError> {
        Ok(Self::get(self, key).map(|v| v.as_ref().to_owned()))
    }
}

// === impl EnvError ===

impl EnvError {
    /// Builds an [`EnvError::Invalid`].
    pub fn invalid(var: &str, value: &str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            var: var.to_owned(),
            value: value.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// The name of the offending variable.
    pub fn var(&self) -> &str {
        match self {
            Self::Missing { var } | Self::Invalid { var, .. } => var,
        }
    }
}

/// Reads a variable that must be present (an empty value counts as present).
pub fn required(env: &dyn Strings, var: &str) -> Result<String, EnvError> {
    env.get(var)?.ok_or_else(|| EnvError::Missing {
        var: var.to_owned(),
    })
}

/// Reads an optional variable, treating an empty value as absent.
pub fn optional(env: &dyn Strings, var: &str) -> Result<Option<String>, EnvError> {
    Ok(env.get(var)?.filter(|v| !v.is_empty()))
}

/// Reads and parses a required integer (Go `ParseInt(s, 0, 64)` syntax).
pub fn required_int(env: &dyn Strings, var: &str) -> Result<i64, EnvError> {
    let value = required(env, var)?;
    parse_go_int(&value).map_err(|reason| EnvError::invalid(var, &value, reason))
}

/// Reads an optional integer; absent gives `default`, present-but-empty is an error (as envconfig).
pub fn int_or(env: &dyn Strings, var: &str, default: i64) -> Result<i64, EnvError> {
    match env.get(var)? {
        None => Ok(default),
        Some(value) => {
            parse_go_int(&value).map_err(|reason| EnvError::invalid(var, &value, reason))
        }
    }
}

/// Reads an optional boolean; absent gives `default`, present-but-empty is an error (as envconfig).
pub fn bool_or(env: &dyn Strings, var: &str, default: bool) -> Result<bool, EnvError> {
    match env.get(var)? {
        None => Ok(default),
        Some(value) => {
            parse_go_bool(&value).map_err(|reason| EnvError::invalid(var, &value, reason))
        }
    }
}

/// Reads an optional Go duration (`300ms`, `1m30s`); absent or empty gives `default`.
pub fn duration_or(env: &dyn Strings, var: &str, default: Duration) -> Result<Duration, EnvError> {
    match optional(env, var)? {
        None => Ok(default),
        Some(value) => {
            parse_go_duration(&value).map_err(|reason| EnvError::invalid(var, &value, reason))
        }
    }
}

/// Reads an optional TCP port (1-65535); absent or empty gives `default`.
pub fn port_or(env: &dyn Strings, var: &str, default: u16) -> Result<u16, EnvError> {
    match optional(env, var)? {
        None => Ok(default),
        Some(value) => parse_port(&value).map_err(|reason| EnvError::invalid(var, &value, reason)),
    }
}

/// Parses a TCP port number (1-65535).
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err("not a port number between 1 and 65535".to_owned()),
        Ok(p) => Ok(p),
    }
}

/// Parses an integer the way Go's `strconv.ParseInt(s, 0, 64)` does: an
/// optional sign, then `0x`/`0o`/`0b`/leading-`0` prefixes select the base,
/// and `_` may separate digits after a prefix.
pub fn parse_go_int(s: &str) -> Result<i64, String> {
    let err = || "not an integer".to_owned();
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return Err(err());
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_owned(), true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_owned(), true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_owned(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned(), true)
    } else {
        (10, lower, false)
    };
    let digits = if prefixed {
        // Go allows underscores only with a base prefix, between digits.
        if digits.ends_with('_') || digits.contains("__") {
            return Err(err());
        }
        digits.replace('_', "")
    } else {
        digits
    };
    if digits.is_empty() {
        return Err(err());
    }
    let magnitude = u64::from_str_radix(&digits, radix).map_err(|_| err())?;
    if neg {
        if magnitude > i64::MAX as u64 + 1 {
            return Err("value out of range".to_owned());
        }
        Ok((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).map_err(|_| "value out of range".to_owned())
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("not a boolean (use true or false)".to_owned()),
    }
}

/// Parses a Go duration string (`time.ParseDuration`): a sequence of decimal
/// numbers with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, such as `300ms`
/// or `1h2m0.5s`. A bare `0` is allowed; negative durations are refused.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("not a duration (examples: 300ms, 1.5s, 2m): {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let number: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total += number * nanos_per_unit;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err("duration out of range".to_owned());
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "range checked above; sub-nanosecond fractions are dropped as Go does"
    )]
    let nanos = total as u64;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("10"), Ok(10));
        assert_eq!(parse_go_int("0x10"), Ok(16));
        assert_eq!(parse_go_int("010"), Ok(8));
        assert_eq!(parse_go_int("0o17"), Ok(15));
        assert_eq!(parse_go_int("0b101"), Ok(5));
        assert_eq!(parse_go_int("-3"), Ok(-3));
        assert_eq!(parse_go_int("+0"), Ok(0));
        assert_eq!(parse_go_int("0x_1_0"), Ok(16));
        assert!(parse_go_int("").is_err());
        assert!(parse_go_int("1_0").is_err());
        assert!(parse_go_int("ten").is_err());
        assert!(parse_go_int(" 1").is_err());
        assert!(parse_go_int("9223372036854775808").is_err());
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("True"), Ok(true));
        assert_eq!(parse_go_bool("0"), Ok(false));
        assert!(parse_go_bool("yes").is_err());
        assert!(parse_go_bool("").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn errors_name_the_variable() {
        let env = HashMap::from([("CONTAINER_CONCURRENCY", "many"), ("EMPTY", "")]);
        let err = required_int(&env, "CONTAINER_CONCURRENCY").unwrap_err();
        assert_eq!(err.var(), "CONTAINER_CONCURRENCY");
        assert!(err.to_string().contains("\"many\""), "{err}");
        let err = required(&env, "USER_PORT").unwrap_err();
        assert_eq!(
            err.to_string(),
            "required environment variable USER_PORT is not set"
        );
        assert_eq!(
            required(&env, "EMPTY").unwrap(),
            "",
            "empty counts as present"
        );
        assert!(
            int_or(&env, "EMPTY", 3).is_err(),
            "empty int is an error, as envconfig"
        );
        assert_eq!(int_or(&env, "ABSENT", 3), Ok(3));
        assert_eq!(port_or(&env, "ABSENT", 8022), Ok(8022));
        assert!(port_or(&HashMap::from([("P", "0")]), "P", 1).is_err());
    }
}
