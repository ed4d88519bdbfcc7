//! OTLP attribute lists and ids flattened into plain Rust values, so tests compare with `==`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::Value;

/// Attributes by key; strings, booleans, numbers, arrays and maps become their JSON
/// counterparts, bytes become lowercase hex.
pub type Attributes = BTreeMap<String, Value>;

pub(crate) fn flatten(attributes: &[KeyValue]) -> Attributes {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, to_json),
            )
        })
        .collect()
}

fn to_json(value: &AnyValue) -> Value {
    match &value.value {
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        // NaN and infinities have no JSON number: they become null.
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(to_json).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(
            list.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map_or(Value::Null, to_json),
                    )
                })
                .collect(),
        ),
        Some(any_value::Value::BytesValue(bytes)) => Value::String(hex(bytes)),
    }
}

/// Lowercase hex, as trace and span ids appear in `traceparent`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            // Writing into a String cannot fail.
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }

    #[test]
    fn flattens_every_value_kind() {
        let attributes = flatten(&[
            kv("s", any_value::Value::StringValue("x".into())),
            kv("b", any_value::Value::BoolValue(true)),
            kv("i", any_value::Value::IntValue(-3)),
            kv("d", any_value::Value::DoubleValue(0.5)),
            kv("bytes", any_value::Value::BytesValue(vec![0x0a, 0xff])),
            kv(
                "a",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::IntValue(1)),
                    }],
                }),
            ),
            kv(
                "m",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", any_value::Value::StringValue("v".into()))],
                }),
            ),
        ]);
        assert_eq!(attributes["s"], "x");
        assert_eq!(attributes["b"], true);
        assert_eq!(attributes["i"], -3);
        assert_eq!(attributes["d"], 0.5);
        assert_eq!(attributes["bytes"], "0aff");
        assert_eq!(attributes["a"], serde_json::json!([1]));
        assert_eq!(attributes["m"], serde_json::json!({"k": "v"}));
    }
}
