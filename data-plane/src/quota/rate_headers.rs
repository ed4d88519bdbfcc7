//! OpenAI's rate-limit headers, so clients that pace themselves on them keep working:
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as Go durations (`1s`,
//! `6m0s`, `250ms`), from the tightest per-minute limit of each kind.

use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::{Counter, LimitKind, Rule};
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

/// A rule's limit as its `x-ratelimit-limit-*` value, made once when a config is applied
/// rather than formatted and allocated on every call. A clone is a copy, not a share: rules
/// are copied once per worker, and a shared value's reference count, written by every call
/// on every worker, would move its cache line between cores on each call.
pub struct LimitValue {
    limit: u64,
    value: HeaderValue,
}

impl LimitValue {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            value: HeaderValue::from(limit),
        }
    }

    /// The value for `limit`, the counter's now: the one made for it, unless the limit changed
    /// since (a call admitted under the config before), which is formatted afresh.
    fn of(&self, limit: u64) -> HeaderValue {
        if limit == self.limit {
            self.value.clone()
        } else {
            HeaderValue::from(limit)
        }
    }
}

impl Clone for LimitValue {
    fn clone(&self) -> Self {
        Self::new(self.limit)
    }
}

/// What a call tells its client of its key's per-minute limits: the tightest limit of each
/// kind (the fewest remaining), read at one moment. An admitted call reads it as it is taken
/// from its counters, while their lines are in its core's cache, and writes it as headers
/// when its response goes out, against the limit then (a config may have changed it). Small,
/// as it travels with the call: each limit's rule (its place among the rules read) and its
/// use.
#[derive(Clone, Copy, Debug)]
pub struct RateSnapshot {
    /// Requests, then tokens; `NO_RULE` where no rule of that kind applies.
    rules: [u32; 2],
    used: [u64; 2],
}

const NO_RULE: u32 = u32::MAX;

impl RateSnapshot {
    /// Reads `rules`, each counter's use as `used` tells it.
    pub fn read<'a>(rules: impl Iterator<Item = &'a Rule>, used: impl Fn(&Counter) -> u64) -> Self {
        let mut snapshot = Self {
            rules: [NO_RULE; 2],
            used: [0; 2],
        };
        let mut fewest = [u64::MAX; 2];
        for (index, rule) in (0..NO_RULE).zip(rules) {
            let kind = match rule.kind {
                LimitKind::RequestsPerMinute => 0,
                LimitKind::TokensPerMinute => 1,
                LimitKind::TokenQuota | LimitKind::Budget => continue,
            };
            let used = used(&rule.counter);
            let remaining = rule.counter.limit().saturating_sub(used);
            if snapshot.rules[kind] == NO_RULE || remaining < fewest[kind] {
                snapshot.rules[kind] = index;
                snapshot.used[kind] = used;
                fewest[kind] = remaining;
            }
        }
        snapshot
    }

    /// Every response to a limited key carries these; `rules` are the ones read, in the same
    /// order. Each value that changes from call to call is formatted on the stack and copied
    /// once into a `Bytes` of its exact size: a small allocation that needs no atomic
    /// reference count, which a buffer shared by the values needs for every share.
    pub fn insert<'a>(
        &self,
        headers: &mut HeaderMap,
        rules: impl Iterator<Item = &'a Rule> + Clone,
    ) {
        for ((names, index), used) in NAMES.iter().zip(self.rules).zip(self.used) {
            let Some(rule) = rules.clone().nth(index as usize) else {
                continue;
            };
            let limit = rule.counter.limit();
            let used = used.min(limit);
            let remaining = limit - used;
            // As the window slides, capacity comes back at about the limit per minute.
            let reset_ms = match used.checked_mul(60_000) {
                Some(scaled) => scaled.checked_div(limit).unwrap_or(0),
                // Past 3×10¹⁴ used: only a limit above that gets here, so not zero.
                None => (u128::from(used) * 60_000 / u128::from(limit)) as u64,
            };
            set(headers, &names[0], rule.limit_value.of(limit));
            set_text(
                headers,
                &names[1],
                itoa::Buffer::new().format(remaining).as_bytes(),
            );
            let mut text = DurationText::default();
            write_go_duration(&mut text, Duration::from_millis(reset_ms));
            set_text(headers, &names[2], text.as_bytes());
        }
    }
}

/// The headers as `rules` stand at `now`, every worker's count included.
pub fn insert<'a>(
    headers: &mut HeaderMap,
    rules: impl Iterator<Item = &'a Rule> + Clone,
    now: UnixTime,
) {
    RateSnapshot::read(rules.clone(), |counter| counter.used(now.secs)).insert(headers, rules);
}

fn set_text(headers: &mut HeaderMap, name: &HeaderName, value: &[u8]) {
    // Digits, letters and dots only: always a valid value.
    if let Ok(value) = HeaderValue::from_bytes(value) {
        set(headers, name, value);
    }
}

/// Sets `name` to `value` alone: the backend may have sent the header too (Azure and OpenAI
/// send `x-ratelimit-remaining-*`, OpenAI the other four), and the key's own limits are what
/// its client must pace on. One hashed lookup, whether or not it was sent.
fn set(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue) {
    headers.insert(name.clone(), value);
}

/// A duration the way Go prints it, as OpenAI sends it: `0s`, `250ms`, `1.5s`, `6m0s`.
pub fn go_duration(duration: Duration) -> String {
    let mut text = DurationText::default();
    write_go_duration(&mut text, duration);
    // Only ASCII digits and unit letters were written.
    String::from_utf8_lossy(text.as_bytes()).into_owned()
}

/// Room on the stack for the longest Go duration a `Duration` prints as: 18 digits of
/// minutes, `m`, `59.999s`.
#[derive(Default)]
struct DurationText {
    bytes: [u8; 32],
    len: usize,
}

impl DurationText {
    fn push(&mut self, text: &[u8]) {
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text);
        self.len += text.len();
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn write_go_duration(out: &mut DurationText, duration: Duration) {
    let millis = duration.as_millis();
    let mut itoa = itoa::Buffer::new();
    if millis == 0 {
        out.push(b"0s");
    } else if millis < 1_000 {
        out.push(itoa.format(millis).as_bytes());
        out.push(b"ms");
    } else {
        let (minutes, millis) = (millis / 60_000, millis % 60_000);
        if minutes > 0 {
            out.push(itoa.format(minutes).as_bytes());
            out.push(b"m");
        }
        out.push(itoa.format(millis / 1_000).as_bytes());
        write_fraction(out, millis % 1_000);
        out.push(b"s");
    }
}

/// `.25` for 250 ms: the milliseconds as a decimal fraction of a second, trailing zeros cut.
fn write_fraction(out: &mut DurationText, millis: u128) {
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
    out.push(b".");
    for digit in &digits[..kept] {
        out.push(&[b'0' + *digit as u8]);
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
            (u64::MAX, "307445734561825m51.615s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(millis)), text);
        }
        assert_eq!(go_duration(Duration::MAX), "307445734561825860m15.999s");
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
            Rule::new(kind, counter)
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

        // A zero limit (refused by validation, but a counter can hold one) resets at once.
        let mut zero = HeaderMap::new();
        insert(
            &mut zero,
            [rule(LimitKind::TokensPerMinute, 0, 0)].iter(),
            UnixTime {
                secs: NOW,
                fraction: 0.0,
            },
        );
        assert_eq!(zero[&NAMES[1][2]], "0s");
    }

    #[test]
    fn the_backends_remaining_counts_are_replaced_not_added_to() {
        use std::sync::Arc;

        use sluice_model::windows::Window;

        use crate::quota::Counter;

        const NOW: UnixTime = UnixTime {
            secs: 1_800_000_000,
            fraction: 0.0,
        };
        let rules = [LimitKind::RequestsPerMinute, LimitKind::TokensPerMinute].map(|kind| {
            let counter = Arc::new(Counter::new(Window::Minute, 100, NOW.secs, 100));
            assert!(counter.try_take(1, NOW.secs));
            Rule::new(kind, counter)
        });
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-region", HeaderValue::from_static("eastus"));
        headers.insert(&NAMES[0][1], HeaderValue::from_static("2999"));
        headers.append(&NAMES[1][1], HeaderValue::from_static("149000"));
        headers.append(&NAMES[1][1], HeaderValue::from_static("148000"));
        insert(&mut headers, rules.iter(), NOW);
        for names in &NAMES {
            let told: Vec<_> = headers.get_all(&names[1]).iter().collect();
            assert_eq!(told, ["99"], "{}", names[1]);
        }
        assert_eq!(headers.len(), 1 + RATE_HEADERS);
    }

    #[test]
    fn a_limits_value_is_copied_for_each_worker_not_shared() {
        let value = LimitValue::new(100_000);
        let copy = value.clone();
        assert_eq!(copy.value, "100000");
        assert_eq!(copy.limit, 100_000);
        assert_ne!(
            copy.value.as_bytes().as_ptr(),
            value.value.as_bytes().as_ptr(),
            "a shared buffer's reference count would be written by every worker"
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
