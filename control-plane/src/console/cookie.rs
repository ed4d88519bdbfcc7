//! The session cookie: `HttpOnly`, `SameSite=Strict`, scoped to `/ui`, `Secure` when the
//! console is reached over TLS.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

pub(crate) const NAME: &str = "sluice_console";

/// The session id the browser sent, if any.
pub(crate) fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Whether a terminating proxy in front says the browser reached it over TLS, in
/// `X-Forwarded-Proto` or `Forwarded` (when the control plane serves TLS itself, the console
/// knows without asking). Trusting them only ever adds `Secure`, which cannot weaken the cookie.
pub(crate) fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("https")
        });
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').next().unwrap_or("").split(';').any(|pair| {
                pair.trim().split_once('=').is_some_and(|(k, v)| {
                    k.eq_ignore_ascii_case("proto")
                        && v.trim_matches('"').eq_ignore_ascii_case("https")
                })
            })
        });
    forwarded_proto || forwarded
}

fn attributes(secure: bool) -> &'static str {
    if secure {
        "; Path=/ui; HttpOnly; SameSite=Strict; Secure"
    } else {
        "; Path=/ui; HttpOnly; SameSite=Strict"
    }
}

/// `Set-Cookie` for a new session.
pub(crate) fn set(session_id: &str, ttl: Duration, secure: bool) -> HeaderValue {
    let value = format!(
        "{NAME}={session_id}; Max-Age={}{}",
        ttl.as_secs(),
        attributes(secure)
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| clear(secure))
}

/// `Set-Cookie` that makes the browser forget the session.
pub(crate) fn clear(secure: bool) -> HeaderValue {
    let value = format!("{NAME}=; Max-Age=0{}", attributes(secure));
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("sluice_console=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn finds_the_session_among_other_cookies() {
        let h = headers(&[("cookie", "a=1; sluice_console=abc; b=2")]);
        assert_eq!(session_id(&h), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "sluice_console=xyz")]);
        assert_eq!(session_id(&h), Some("xyz"));
        assert_eq!(session_id(&headers(&[("cookie", "sluice_console=")])), None);
        assert_eq!(
            session_id(&headers(&[("cookie", "x_sluice_console=1")])),
            None
        );
        assert_eq!(session_id(&HeaderMap::new()), None);
    }

    #[test]
    fn cookie_attributes_are_strict_and_secure_over_tls() {
        let plain = set("id", Duration::from_secs(3600), false);
        let plain = plain.to_str().unwrap();
        assert_eq!(
            plain,
            "sluice_console=id; Max-Age=3600; Path=/ui; HttpOnly; SameSite=Strict"
        );
        let tls = set("id", Duration::from_secs(60), true);
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
        assert!(clear(false).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn tls_is_read_from_the_forwarding_proxy() {
        assert!(!over_tls(&HeaderMap::new()));
        assert!(over_tls(&headers(&[("x-forwarded-proto", "https")])));
        assert!(!over_tls(&headers(&[("x-forwarded-proto", "http")])));
        assert!(over_tls(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https"
        )])));
        assert!(!over_tls(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=http"
        )])));
    }
}
