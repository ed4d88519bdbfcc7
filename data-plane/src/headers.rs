//! Which headers cross the proxy. Hop-by-hop headers are connection-specific (and illegal in
//! HTTP/2); the client's credentials must never reach a backend.

use http::HeaderMap;
use http::header::{self, HeaderName};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Copies `from` without hop-by-hop headers (including those `Connection` names) and
/// without any header in `also_drop`.
fn copy_end_to_end(from: &HeaderMap, also_drop: &[HeaderName]) -> HeaderMap {
    let named_by_connection: Vec<&str> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut to = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let dropped = HOP_BY_HOP.contains(name)
            || also_drop.contains(name)
            || named_by_connection
                .iter()
                .any(|n| name.as_str().eq_ignore_ascii_case(n));
        if !dropped {
            to.append(name.clone(), value.clone());
        }
    }
    to
}

/// Client request headers to send upstream: no credentials, no host, no framing headers
/// (the client to the backend sets its own).
pub fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    copy_end_to_end(
        client,
        &[
            header::AUTHORIZATION,
            HeaderName::from_static("api-key"),
            header::HOST,
            header::CONTENT_LENGTH,
            header::EXPECT,
            header::PROXY_AUTHENTICATE,
        ],
    )
}

/// Upstream response headers to send to the client.
pub fn client_response_headers(upstream: &HeaderMap) -> HeaderMap {
    copy_end_to_end(upstream, &[header::PROXY_AUTHENTICATE])
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
        ] {
            client.append(HeaderName::from_static(name), value.parse().unwrap());
        }
        let upstream = upstream_request_headers(&client);
        let names: Vec<_> = upstream.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "traceparent",
                "openai-organization",
                "x-ms-client-request-id"
            ]
        );
    }
}
