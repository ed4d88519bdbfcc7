use std::borrow::Borrow;
use std::fmt;

use crate::error::{InvalidValue, string_newtype_serde};

/// A resource name (pool, backend, client key id): `[a-z0-9][a-z0-9._-]{0,62}`.
///
/// Names end up in URLs, metric labels and deployment names, so they are kept short and plain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub const PATTERN: &'static str = "^[a-z0-9][a-z0-9._-]{0,62}$";
    const MAX_LEN: usize = 63;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(raw: &str) -> Result<(), InvalidValue> {
        let mut bytes = raw.bytes();
        let valid_first = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let valid_rest = bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if valid_first && valid_rest && raw.len() <= Self::MAX_LEN {
            Ok(())
        } else {
            Err(InvalidValue::new(
                "must be 1 to 63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
            ))
        }
    }
}

impl TryFrom<String> for Name {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::check(&raw)?;
        Ok(Self(raw))
    }
}

impl TryFrom<&str> for Name {
    type Error = InvalidValue;

    fn try_from(raw: &str) -> Result<Self, Self::Error> {
        Self::check(raw)?;
        Ok(Self(raw.to_owned()))
    }
}

string_newtype_serde!(Name);

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["gpt-4o", "a", "0", "east.us_2", &"a".repeat(63)] {
            assert!(Name::try_from(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_names_outside_the_pattern() {
        for bad in ["", "-a", ".a", "GPT", "a b", "a/b", "é", &"a".repeat(64)] {
            let err = Name::try_from(bad).unwrap_err();
            assert!(err.to_string().contains("1 to 63 characters"), "{bad}");
        }
    }
}
