//! Cross-site request forgery defences for state-changing requests: the `Origin` (or, when a
//! browser sends none, `Referer`) must be this very host, and a signed-in session's requests
//! must carry its synchronizer token. The origin check alone also protects sign-in, which has
//! no session yet (login CSRF).

use axum::http::{HeaderMap, Uri, header};
use subtle::ConstantTimeEq;

/// The form field (and `X-CSRF-Token` header, for htmx) carrying the session's token.
pub(crate) const FIELD: &str = "csrf";
pub(crate) const HEADER: &str = "x-csrf-token";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CsrfError {
    #[error("the request does not say where it comes from (no Origin or Referer header)")]
    NoOrigin,
    #[error("the request comes from another site")]
    ForeignOrigin,
    #[error("the form is missing its CSRF token or it does not match the session")]
    BadToken,
}

/// The request must come from a page served by the host it is addressed to.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), CsrfError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or(CsrfError::ForeignOrigin)?;
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .ok_or(CsrfError::NoOrigin)?
        .to_str()
        .map_err(|_| CsrfError::ForeignOrigin)?;
    // Browsers send `Origin: null` from sandboxed frames and some redirects: never ours.
    let uri: Uri = source.parse().map_err(|_| CsrfError::ForeignOrigin)?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(CsrfError::ForeignOrigin);
    };
    if !matches!(scheme, "http" | "https") {
        return Err(CsrfError::ForeignOrigin);
    }
    if normalise(scheme, authority.as_str()) == normalise(scheme, host) {
        Ok(())
    } else {
        Err(CsrfError::ForeignOrigin)
    }
}

/// Lower-cased host with the scheme's default port dropped, so `Host: x` matches
/// `Origin: https://x:443`.
fn normalise(scheme: &str, authority: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    authority
        .strip_suffix(default)
        .map_or(authority.clone(), str::to_owned)
}

/// The presented token must equal the session's; compared in constant time.
pub(crate) fn check_token(expected: &str, presented: Option<&str>) -> Result<(), CsrfError> {
    let presented = presented.ok_or(CsrfError::BadToken)?;
    let equal: bool = expected.as_bytes().ct_eq(presented.as_bytes()).into();
    if equal && !expected.is_empty() {
        Ok(())
    } else {
        Err(CsrfError::BadToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn same_host_origins_pass() {
        for origin in ["http://127.0.0.1:9090", "https://127.0.0.1:9090"] {
            let h = headers(&[("host", "127.0.0.1:9090"), ("origin", origin)]);
            assert_eq!(check_origin(&h), Ok(()), "{origin}");
        }
        let h = headers(&[
            ("host", "Sluice.Example"),
            ("origin", "https://sluice.example:443"),
        ]);
        assert_eq!(check_origin(&h), Ok(()));
        let h = headers(&[
            ("host", "sluice.example"),
            ("referer", "https://sluice.example/ui/keys"),
        ]);
        assert_eq!(check_origin(&h), Ok(()));
    }

    #[test]
    fn foreign_missing_and_opaque_origins_fail() {
        let cases = [
            (
                headers(&[
                    ("host", "127.0.0.1:9090"),
                    ("origin", "http://evil.example"),
                ]),
                CsrfError::ForeignOrigin,
            ),
            (
                headers(&[
                    ("host", "127.0.0.1:9090"),
                    ("origin", "http://127.0.0.1:9091"),
                ]),
                CsrfError::ForeignOrigin,
            ),
            (
                headers(&[("host", "127.0.0.1:9090"), ("origin", "null")]),
                CsrfError::ForeignOrigin,
            ),
            (
                headers(&[
                    ("host", "sluice.example"),
                    ("referer", "https://sluice.example.evil.example/"),
                ]),
                CsrfError::ForeignOrigin,
            ),
            (headers(&[("host", "127.0.0.1:9090")]), CsrfError::NoOrigin),
            (
                headers(&[("origin", "http://127.0.0.1:9090")]),
                CsrfError::ForeignOrigin,
            ),
        ];
        for (h, expected) in cases {
            assert_eq!(check_origin(&h), Err(expected), "{h:?}");
        }
    }

    #[test]
    fn tokens_must_match_exactly() {
        assert_eq!(check_token("abc", Some("abc")), Ok(()));
        assert_eq!(check_token("abc", Some("abd")), Err(CsrfError::BadToken));
        assert_eq!(check_token("abc", Some("ab")), Err(CsrfError::BadToken));
        assert_eq!(check_token("abc", None), Err(CsrfError::BadToken));
        assert_eq!(check_token("", Some("")), Err(CsrfError::BadToken));
    }
}
