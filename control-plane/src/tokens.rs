//! Shared bearer tokens (admin tokens, proxy tokens). Kept only as SHA-256 digests, compared
//! in constant time; several may be valid at once so they can be rotated without downtime.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{kind} tokens must be at least {MIN_TOKEN_LEN} characters long")]
pub struct TokenTooShort {
    pub kind: &'static str,
}

struct Token {
    /// `<kind>:<first 8 hex digits of the digest>`: safe to log and audit.
    id: String,
    digest: [u8; 32],
}

pub struct TokenSet {
    tokens: Vec<Token>,
}

impl TokenSet {
    /// `kind` names the tokens in ids and errors, e.g. `admin` or `proxy`.
    pub fn new<S: AsRef<str>>(kind: &'static str, tokens: &[S]) -> Result<Self, TokenTooShort> {
        let tokens = tokens
            .iter()
            .map(|token| {
                let token = token.as_ref();
                if token.len() < MIN_TOKEN_LEN {
                    return Err(TokenTooShort { kind });
                }
                let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                let id = digest[..4].iter().fold(format!("{kind}:"), |mut id, b| {
                    let _ = write!(id, "{b:02x}");
                    id
                });
                Ok(Token { id, digest })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether a token with this id is still configured: a console session opened with a
    /// token dies when the token is rotated away.
    pub fn has_id(&self, id: &str) -> bool {
        self.tokens.iter().any(|token| token.id == id)
    }

    /// The id of the token `presented` is, if any. Every token is compared, so timing does
    /// not reveal which one matched.
    pub fn verify(&self, presented: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.tokens
            .iter()
            .fold(None, |found, token| {
                let matches: bool = token.digest.ct_eq(&digest).into();
                found.or(matches.then_some(token))
            })
            .map(|token| token.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_any_configured_token_and_names_it_safely() {
        let set =
            TokenSet::new("proxy", &["0123456789abcdef-one", "0123456789abcdef-two"]).unwrap();
        let one = set.verify(b"0123456789abcdef-one").unwrap();
        assert!(one.starts_with("proxy:") && one.len() == 14, "{one}");
        assert_ne!(Some(one), set.verify(b"0123456789abcdef-two"));
        assert_eq!(set.verify(b"0123456789abcdef-three"), None);
        assert_eq!(set.verify(b""), None);
    }

    #[test]
    fn refuses_short_tokens() {
        assert!(TokenSet::new("admin", &["short"]).is_err());
        assert!(TokenSet::new::<&str>("admin", &[]).unwrap().is_empty());
    }
}
