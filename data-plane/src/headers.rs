//! Which headers cross the proxy. Hop-by-hop headers are connection-specific (and illegal in
//! HTTP/2); the client's credentials must never reach a backend.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Client headers that never go upstream, besides the hop-by-hop ones: credentials, host,
/// cookies, and what claims to say where the request came from (a client could spoof it to a
/// backend that trusts it). `Content-Length` is [`strip_for_upstream`]'s own decision.
static CLIENT_ONLY: [HeaderName; 8] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    header::HOST,
    header::EXPECT,
    header::PROXY_AUTHENTICATE,
    header::COOKIE,
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
];

/// Removes hop-by-hop headers (including those `Connection` names), the names `also_drop`
/// lists and those `also_drop_when` matches, in place: the header maps are owned, so nothing
/// needs copying.
///
/// One pass over the headers present (a handful) decides what goes; looking up every name
/// that could be there instead cost a hash and a probe each, most for absent names.
fn keep_end_to_end(
    headers: &mut HeaderMap,
    also_drop: &[HeaderName],
    also_drop_when: impl Fn(&HeaderName) -> bool,
) {
    let named_by_connection = || {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
    };
    // Looked up once: most messages have no `Connection` header to read names from.
    let has_connection = headers.contains_key(header::CONNECTION);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            HOP_BY_HOP.contains(name)
                || also_drop.contains(name)
                || also_drop_when(name)
                || (has_connection
                    && named_by_connection().any(|named| named.eq_ignore_ascii_case(name.as_str())))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Client request headers to send upstream: no hop-by-hop headers, none of [`CLIENT_ONLY`],
/// no `x-forwarded-*`. The client's `Content-Length` stays when it is the length of the
/// `body` the proxy read (HTTP/1 then sends it as it came, without formatting a new one); the
/// request to each backend corrects it when that backend gets a rewritten body.
///
/// The backend is asked for an uncompressed body: the proxy reads token usage from every
/// response, and a compressed one would hide it. (Without `Accept-Encoding` a server may pick
/// any coding, so `identity` is said explicitly.)
pub fn strip_for_upstream(headers: &mut HeaderMap, body_len: usize) {
    keep_end_to_end(headers, &CLIENT_ONLY, |name| {
        name.as_str().starts_with("x-forwarded-")
    });
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let exact = matches!(
        (lengths.next(), lengths.next()),
        (Some(length), None) if states_length(length, body_len)
    );
    if !exact {
        headers.remove(header::CONTENT_LENGTH);
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// Whether `value` is `len` in plain decimal digits, as a `Content-Length` must be.
fn states_length(value: &HeaderValue, len: usize) -> bool {
    let digits = value.as_bytes();
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(digits).is_ok_and(|digits| digits.parse() == Ok(len))
}

/// Upstream response headers to send to the client.
pub fn strip_for_client(headers: &mut HeaderMap) {
    keep_end_to_end(headers, &[header::PROXY_AUTHENTICATE], |_| false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_credentials_and_hop_by_hop_headers() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("api-key", "client-key"),
            ("authorization", "Bearer client-key"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "sluice"),
            ("content-length", "12"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("openai-organization", "org"),
            ("x-ms-client-request-id", "abc"),
            ("accept-encoding", "gzip, br"),
            ("cookie", "session=1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "internal.example"),
            ("x-real-ip", "10.0.0.1"),
        ] {
            client.append(HeaderName::from_static(name), value.parse().unwrap());
        }
        // The body read was not 12 bytes long: the client's length goes.
        strip_for_upstream(&mut client, 5);
        let mut names: Vec<_> = client.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept-encoding",
                "openai-organization",
                "traceparent",
                "x-ms-client-request-id"
            ]
        );
        assert_eq!(client["accept-encoding"], "identity");
    }

    #[test]
    fn keeps_the_clients_content_length_only_when_it_is_the_bodys() {
        let upstream = |lengths: &[&str], body_len| {
            let mut headers = HeaderMap::new();
            for length in lengths {
                headers.append(header::CONTENT_LENGTH, length.parse().unwrap());
            }
            strip_for_upstream(&mut headers, body_len);
            headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(upstream(&["42"], 42), ["42"]);
        assert!(upstream(&["41"], 42).is_empty());
        assert!(upstream(&["+42"], 42).is_empty(), "only plain digits");
        assert!(upstream(&[" 42"], 42).is_empty());
        assert!(
            upstream(&["42", "42"], 42).is_empty(),
            "one value, not a list"
        );
        assert!(upstream(&[], 42).is_empty());
    }
}
