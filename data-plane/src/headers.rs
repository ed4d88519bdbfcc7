//! Which headers cross the proxy. Hop-by-hop headers are connection-specific (and illegal in
//! HTTP/2); the client's credentials must never reach a backend.

use std::cell::RefCell;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::per_worker::PerWorker;

/// Connection-specific headers: they describe one hop and must not be forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // One `match` on the name (dispatched on its length) rather than comparing it with each
    // name in a list: this runs for every header of every request and response (profiled).
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
    )
}

/// Client headers that never go upstream, besides the hop-by-hop ones: credentials, host,
/// cookies, what claims to say where the request came from (a client could spoof it to a
/// backend that trusts it), and the codings the client accepts (the proxy asks for its own).
/// `Content-Length` is [`for_upstream`]'s own decision.
fn is_client_only(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization"
            | "api-key"
            | "host"
            | "expect"
            | "proxy-authenticate"
            | "cookie"
            | "forwarded"
            | "x-real-ip"
            | "accept-encoding"
            | "content-length"
    ) || name.as_str().starts_with("x-forwarded-")
}

/// Whether the message's `Connection` header names `name` (making it hop-by-hop too).
fn named_by_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|named| named.trim().eq_ignore_ascii_case(name.as_str()))
}

/// Headers a response map has room for without growing: Azure's own (about 15 on a chat
/// completion) with the proxy's `x-sluice-*` and a limited key's six `x-ratelimit-*`. Growing
/// a map rehashes it (1.4k instructions per call with limits on, profiled); room that is not
/// used is never touched.
const RESPONSE_ROOM: usize = 24;

/// How many emptied maps a thread keeps: enough for the calls whose heads are in flight on a
/// busy worker at once, few enough that a burst leaves at most a few hundred KB behind.
const SPARE_MAPS: usize = 32;

thread_local! {
    /// Maps the thread's finished calls gave back, emptied, for its next requests to backends.
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// A map for a request to a backend, with room for the response hyper parses into it: one a
/// finished call on this thread gave back, or a new one. hyper passes a connection's maps on
/// from message to message; without this the proxy would make one per call (two allocations)
/// and free the client's.
pub fn spare_map() -> HeaderMap {
    SPARE
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| HeaderMap::with_capacity(RESPONSE_ROOM))
}

/// Keeps `map`, emptied, for this thread's next [`spare_map`] when it has room for a response
/// and the thread keeps fewer than [`SPARE_MAPS`]; otherwise it is freed.
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() < RESPONSE_ROOM {
        return;
    }
    // Its values (the client's credentials among them) are dropped here, not kept.
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

/// The headers of the request to a backend, from the client's (`client`) and the body the
/// backend gets (`body_len` bytes), added to `upstream`: no hop-by-hop headers (including
/// those the client's `Connection` names), none of the client-only ones, no `x-forwarded-*`.
/// The client's `Content-Length` stays when it is the body's length (HTTP/1 then sends it as
/// it came, without formatting a new one); otherwise HTTP/1 states the body's own.
///
/// The backend is asked for an uncompressed body: the proxy reads token usage from every
/// response, and a compressed one would hide it. (Without `Accept-Encoding` a server may pick
/// any coding, so `identity` is said explicitly.)
///
/// Built afresh for each attempt, in one pass over the client's headers: removing the
/// client-only ones from the client's map cost a reshuffle of the map per removal, and the
/// map then grew again for the credential (profiled).
pub fn for_upstream(client: &HeaderMap, body_len: usize, upstream: &mut HeaderMap) {
    // Room for what the proxy adds (the coding, the credential, `Host`, `traceparent`), and
    // for the response: over HTTP/1, hyper parses the backend's answer into the map the
    // request went out in, and the proxy then adds its own headers to that.
    upstream.reserve((client.len() + 4).max(RESPONSE_ROOM));
    // Looked up once: most requests have no `Connection` header to read names from.
    let has_connection = client.contains_key(header::CONNECTION);
    for (name, value) in client {
        if is_hop_by_hop(name)
            || is_client_only(name)
            || (has_connection && named_by_connection(client, name))
        {
            continue;
        }
        upstream.append(name.clone(), value.clone());
    }
    let mut lengths = client.get_all(header::CONTENT_LENGTH).iter();
    if let (Some(length), None) = (lengths.next(), lengths.next())
        && states_length(length, body_len)
        && !(has_connection && named_by_connection(client, &header::CONTENT_LENGTH))
    {
        upstream.insert(header::CONTENT_LENGTH, length.clone());
    }
    upstream.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// A value every call puts on a message, one copy per worker, each in a buffer of its own. A
/// clone of one shared value would share its buffer, and every call's clone and drop would
/// write the buffer's reference count from every core, moving its cache line between them.
pub fn copied_per_worker(value: &HeaderValue) -> PerWorker<HeaderValue> {
    PerWorker::new(|_| {
        // The bytes were a valid value already.
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        copy
    })
}

/// Whether `value` is `len` in plain decimal digits, as a `Content-Length` must be.
fn states_length(value: &HeaderValue, len: usize) -> bool {
    let digits = value.as_bytes();
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(digits).is_ok_and(|digits| digits.parse() == Ok(len))
}

/// Upstream response headers to send to the client: no hop-by-hop headers (including those
/// its `Connection` names), no `Proxy-Authenticate`. Removed in place: a response usually
/// has none of them, so nothing is collected or moved.
pub fn strip_for_client(headers: &mut HeaderMap) {
    let has_connection = headers.contains_key(header::CONNECTION);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name)
                || *name == header::PROXY_AUTHENTICATE
                || (has_connection && named_by_connection(headers, name))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_given_back_are_handed_out_again_empty() {
        // A thread of its own: the spare maps are per thread.
        std::thread::spawn(|| {
            let mut map = spare_map();
            assert!(map.is_empty() && map.capacity() >= RESPONSE_ROOM);
            map.insert("api-key", HeaderValue::from_static("sk-client"));
            let room = map.capacity();
            give_back(map);
            let again = spare_map();
            assert!(again.is_empty(), "the client's headers are gone");
            assert_eq!(again.capacity(), room, "the same map, not a new one");
            // A map too small for a response would be grown at once: it is not kept.
            give_back(HeaderMap::with_capacity(2));
            assert!(SPARE.with_borrow(Vec::is_empty));
            // A burst gives back more than is kept.
            for _ in 0..SPARE_MAPS + 10 {
                give_back(HeaderMap::with_capacity(RESPONSE_ROOM));
            }
            assert_eq!(SPARE.with_borrow(Vec::len), SPARE_MAPS);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_value_copied_per_worker_has_a_buffer_of_its_own_in_each() {
        // Only ever raises the process's count: other tests here then get two slots, which
        // none of them depends on.
        crate::per_worker::declare_workers(2);
        let mut secret = HeaderValue::from_static("the-backend-key");
        secret.set_sensitive(true);
        let copies = copied_per_worker(&secret);
        let values: Vec<&HeaderValue> = copies.iter().collect();
        assert!(values.len() >= 2, "one per declared worker");
        assert!(values.iter().all(|v| **v == secret && v.is_sensitive()));
        assert_ne!(
            values[0].as_bytes().as_ptr(),
            values[1].as_bytes().as_ptr(),
            "a shared buffer's reference count would be written by every worker"
        );
        assert_eq!(copies, copied_per_worker(&secret));
    }

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
        let mut upstream = HeaderMap::new();
        for_upstream(&client, 5, &mut upstream);
        let mut names: Vec<_> = upstream.keys().map(HeaderName::as_str).collect();
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
        assert_eq!(upstream["accept-encoding"], "identity");
        assert_eq!(upstream.len(), names.len(), "one value each");
    }

    #[test]
    fn keeps_the_clients_content_length_only_when_it_is_the_bodys() {
        let upstream = |lengths: &[&str], body_len| {
            let mut headers = HeaderMap::new();
            for length in lengths {
                headers.append(header::CONTENT_LENGTH, length.parse().unwrap());
            }
            let mut upstream = HeaderMap::new();
            for_upstream(&headers, body_len, &mut upstream);
            upstream
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

    #[test]
    fn the_client_gets_no_hop_by_hop_response_headers() {
        let mut response = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("x-ratelimit-remaining-tokens", "99"),
            ("apim-request-id", "abc"),
        ] {
            response.append(HeaderName::from_static(name), value.parse().unwrap());
        }
        strip_for_client(&mut response);
        let mut names: Vec<_> = response.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "apim-request-id",
                "content-type",
                "x-ratelimit-remaining-tokens"
            ]
        );
    }

    #[test]
    fn names_are_matched_as_the_standard_constants_spell_them() {
        for name in [
            header::CONNECTION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::PROXY_AUTHORIZATION,
        ] {
            assert!(is_hop_by_hop(&name), "{name}");
        }
        for name in [
            header::AUTHORIZATION,
            header::HOST,
            header::EXPECT,
            header::PROXY_AUTHENTICATE,
            header::COOKIE,
            header::FORWARDED,
            header::ACCEPT_ENCODING,
            header::CONTENT_LENGTH,
        ] {
            assert!(is_client_only(&name), "{name}");
        }
        assert!(!is_client_only(&header::CONTENT_TYPE));
        assert!(!is_hop_by_hop(&header::CONTENT_TYPE));
    }
}
