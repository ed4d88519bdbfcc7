//! The standard `OTEL_*` variables, read once into a value so configuration can be tested
//! without touching the process environment.

use std::collections::BTreeMap;
use std::fmt;

/// A snapshot of `OTEL_*` variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OtelEnv {
    vars: BTreeMap<String, String>,
}

impl OtelEnv {
    /// The process' `OTEL_*` variables (those that are valid UTF-8).
    pub fn from_process() -> Self {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(name, value)| {
                    Some((name.into_string().ok()?, value.into_string().ok()?))
                })
                .filter(|(name, _)| name.starts_with("OTEL_")),
        )
    }

    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        }
    }

    /// The variable's value, trimmed; `None` when it is unset or blank, which the OpenTelemetry
    /// spec treats alike.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }

    /// Whether a signal goes out over OTLP: its exporter variable (`OTEL_TRACES_EXPORTER`,
    /// `OTEL_METRICS_EXPORTER`) names `otlp`, or it is unset and one of `endpoints` is set.
    /// Never with `OTEL_SDK_DISABLED=true`.
    pub fn exports_otlp(&self, exporter_var: &str, endpoints: &[&'static str]) -> bool {
        if self
            .get(super::config::SDK_DISABLED)
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
        {
            return false;
        }
        match self.get(exporter_var) {
            Some(exporters) => exporters
                .split(',')
                .any(|exporter| exporter.trim().eq_ignore_ascii_case("otlp")),
            None => self.first(endpoints).is_some(),
        }
    }

    /// The first of `names` that is set, with its name (for error messages).
    pub fn first<'a>(&'a self, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
        names
            .iter()
            .find_map(|name| self.get(name).map(|value| (*name, value)))
    }
}

/// Names only: header and resource variables may carry credentials.
impl fmt::Debug for OtelEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyValueError {
    #[error("entry {0:?} is not key=value")]
    NotKeyValue(String),
    #[error("a key is empty")]
    EmptyKey,
    /// The text is left out: a header value may be a credential.
    #[error("the entry for {key:?} has an invalid percent-encoding")]
    BadPercentEncoding { key: String },
}

/// Parses the `key1=value1,key2=value2` lists of `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_EXPORTER_OTLP_HEADERS` (W3C Baggage style: values percent-encoded, blanks around
/// keys and values ignored).
pub fn parse_key_values(list: &str) -> Result<Vec<(String, String)>, KeyValueError> {
    list.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| KeyValueError::NotKeyValue(entry.trim().to_owned()))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(KeyValueError::EmptyKey);
            }
            let bad = || KeyValueError::BadPercentEncoding {
                key: key.to_owned(),
            };
            Ok((
                percent_decode(key).ok_or_else(bad)?,
                percent_decode(value.trim()).ok_or_else(bad)?,
            ))
        })
        .collect()
}

/// `%XX` escapes to bytes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn blank_variables_count_as_unset() {
        let env = OtelEnv::from_vars([("OTEL_A", "  "), ("OTEL_B", " x ")]);
        assert_eq!(env.get("OTEL_A"), None);
        assert_eq!(env.get("OTEL_B"), Some("x"));
        assert_eq!(env.first(&["OTEL_A", "OTEL_B"]), Some(("OTEL_B", "x")));
        assert_eq!(env.get("OTEL_C"), None);
    }

    #[test]
    fn debug_shows_names_but_not_values() {
        let env = OtelEnv::from_vars([("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn parses_percent_encoded_key_value_lists() {
        assert_eq!(
            parse_key_values(
                " service.namespace = llm , deployment.environment=prod%2Ceu,note=a%20b%3Dc ,"
            )
            .unwrap(),
            pairs(&[
                ("service.namespace", "llm"),
                ("deployment.environment", "prod,eu"),
                ("note", "a b=c"),
            ])
        );
        assert_eq!(parse_key_values("").unwrap(), pairs(&[]));
        assert_eq!(parse_key_values("k=").unwrap(), pairs(&[("k", "")]));
    }

    #[test]
    fn rejects_malformed_lists() {
        assert_eq!(
            parse_key_values("a=1,oops"),
            Err(KeyValueError::NotKeyValue("oops".into()))
        );
        assert_eq!(parse_key_values("=1"), Err(KeyValueError::EmptyKey));
        for bad in ["k=%zz", "k=%4", "k=%ff"] {
            assert_eq!(
                parse_key_values(bad),
                Err(KeyValueError::BadPercentEncoding { key: "k".into() }),
                "{bad}"
            );
        }
    }
}
