//! OpenAI's rate-limit headers, so clients that pace themselves on them keep working:
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as Go durations (`1s`,
//! `6m0s`, `250ms`), from the tightest per-minute limit of each kind.

use std::time::Duration;

use bytes::{BufMut as _, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::{LimitKind, Rule};
use crate::clock::UnixTime;

static NAMES: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

/// How many headers [`insert`] adds, at most.
pub const RATE_HEADERS: usize = 6;

/// Room for the six values: two 20-digit counts and a duration per kind.
const VALUES_CAPACITY: usize = 2 * (20 + 20 + 16);

/// Every response to a limited key carries these, so they are written without a `String` or
/// an allocation per value: all six values share one buffer.
pub fn insert<'a>(
    headers: &mut HeaderMap,
    rules: impl Iterator<Item = &'a Rule> + Clone,
    now: UnixTime,
) {
    let mut values = BytesMut::new();
    for (kind, names) in [LimitKind::RequestsPerMinute, LimitKind::TokensPerMinute]
        .into_iter()
        .zip(&NAMES)
    {
        let tightest = rules
            .clone()
            .filter(|rule| rule.kind == kind)
            .map(|rule| (rule.counter.remaining(now.secs), rule))
            .min_by_key(|(remaining, _)| *remaining);
        let Some((remaining, rule)) = tightest else {
            continue;
        };
        let limit = rule.counter.limit();
        // As the window slides, capacity comes back at about the limit per minute.
        let used = u128::from(limit - remaining);
        let reset_ms = (used * 60_000).checked_div(u128::from(limit)).unwrap_or(0);
        let reset = Duration::from_millis(reset_ms as u64);
        if values.capacity() == 0 {
            values.reserve(VALUES_CAPACITY);
        }
        let mut itoa = itoa::Buffer::new();
        values.put_slice(itoa.format(limit).as_bytes());
        insert_value(headers, &names[0], &mut values);
        values.put_slice(itoa.format(remaining).as_bytes());
        insert_value(headers, &names[1], &mut values);
        write_go_duration(&mut values, reset);
        insert_value(headers, &names[2], &mut values);
    }
}

/// Moves what `values` holds into a header value (no copy: it keeps a share of the buffer).
fn insert_value(headers: &mut HeaderMap, name: &HeaderName, values: &mut BytesMut) {
    // Digits, letters and dots only: always a valid value.
    if let Ok(value) = HeaderValue::from_maybe_shared(values.split().freeze()) {
        headers.insert(name.clone(), value);
    }
}

/// A duration the way Go prints it, as OpenAI sends it: `0s`, `250ms`, `1.5s`, `6m0s`.
pub fn go_duration(duration: Duration) -> String {
    let mut text = BytesMut::with_capacity(16);
    write_go_duration(&mut text, duration);
    // Only ASCII digits and unit letters were written.
    String::from_utf8_lossy(&text).into_owned()
}

fn write_go_duration(out: &mut BytesMut, duration: Duration) {
    let millis = duration.as_millis();
    let mut itoa = itoa::Buffer::new();
    if millis == 0 {
        out.put_slice(b"0s");
    } else if millis < 1_000 {
        out.put_slice(itoa.format(millis).as_bytes());
        out.put_slice(b"ms");
    } else {
        let (minutes, millis) = (millis / 60_000, millis % 60_000);
        if minutes > 0 {
            out.put_slice(itoa.format(minutes).as_bytes());
            out.put_u8(b'm');
        }
        out.put_slice(itoa.format(millis / 1_000).as_bytes());
        write_fraction(out, millis % 1_000);
        out.put_u8(b's');
    }
}

/// `.25` for 250 ms: the milliseconds as a decimal fraction of a second, trailing zeros cut.
fn write_fraction(out: &mut BytesMut, millis: u128) {
    if millis == 0 {
        return;
    }
    let digits = [millis / 100, millis / 10 % 10, millis % 10];
    let kept = if digits[2] != 0 {
        3
    } else if digits[1] != 0 {
        2
    } else {
        1
    };
    out.put_u8(b'.');
    for digit in &digits[..kept] {
        out.put_u8(b'0' + *digit as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openai_sends_them() {
        for (millis, text) in [
            (0, "0s"),
            (250, "250ms"),
            (1_000, "1s"),
            (1_500, "1.5s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
            (61_250, "1m1.25s"),
            (60_001, "1m0.001s"),
            (1_010, "1.01s"),
            (3_599_999, "59m59.999s"),
            (7_200_000, "120m0s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(millis)), text);
        }
    }

    #[test]
    fn the_tightest_limit_of_each_kind_is_told() {
        use std::sync::Arc;

        use sluice_model::windows::Window;

        use crate::quota::Counter;

        const NOW: i64 = 1_800_000_000;
        let rule = |kind, limit, used| {
            let counter = Arc::new(Counter::new(Window::Minute, limit, NOW, limit));
            assert!(counter.try_take(used, NOW));
            Rule { kind, counter }
        };
        let rules = [
            rule(LimitKind::RequestsPerMinute, 60, 15),
            rule(LimitKind::RequestsPerMinute, 1_000, 10),
            rule(LimitKind::TokensPerMinute, 10_000_000_000_000, 1),
            rule(LimitKind::TokenQuota, 5, 5),
        ];
        let mut headers = HeaderMap::new();
        insert(
            &mut headers,
            rules.iter(),
            UnixTime {
                secs: NOW,
                fraction: 0.5,
            },
        );
        let told: Vec<_> = NAMES
            .iter()
            .flatten()
            .map(|name| headers[name].to_str().unwrap())
            .collect();
        assert_eq!(
            told,
            ["60", "45", "15s", "10000000000000", "9999999999999", "0s"]
        );
        assert_eq!(headers.len(), RATE_HEADERS);

        let mut untouched = HeaderMap::new();
        insert(
            &mut untouched,
            rules[3..].iter(),
            UnixTime {
                secs: NOW,
                fraction: 0.0,
            },
        );
        assert!(
            untouched.is_empty(),
            "no per-minute limit, nothing to pace on"
        );
    }

    #[test]
    fn our_own_rate_limit_parser_reads_what_we_write() {
        for millis in [
            0u64, 7, 999, 1_000, 1_500, 59_999, 60_000, 61_250, 3_599_000,
        ] {
            let text = go_duration(Duration::from_millis(millis));
            let parsed = crate::backend::rate_limit::parse_go_duration(&text).unwrap();
            assert_eq!(parsed, Duration::from_millis(millis), "{text}");
        }
    }
}
