//! How long a backend asked us to stay away, from the many header variants seen in the wild
//! (Azure and OpenAI send different ones, any of which may be missing or meaningless):
//! `retry-after-ms`, `retry-after` (seconds or HTTP date), `x-ratelimit-reset-{requests,tokens}`
//! (Go durations) and `x-rate-limit-reset-tokens`.

use std::time::{Duration, SystemTime};

use http::header::{HeaderName, RETRY_AFTER};
use http::{HeaderMap, StatusCode};

/// Used when a 429 carries no usable hint: never zero, never hammering.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);
/// Longest cooldown honoured; Azure says 86400 s when a quota is exhausted.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);

/// The cooldown a response asks for, if any: always for 429, and for other responses when a
/// rate-limit window is exhausted (`x-ratelimit-remaining-*: 0`).
pub fn cooldown(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Some(
            explicit_retry_after(headers)
                .or_else(|| window_reset(headers, |_| true))
                .unwrap_or(DEFAULT_COOLDOWN)
                .clamp(Duration::from_millis(1), MAX_COOLDOWN),
        );
    }
    // Every answer is checked, and nearly none has a window used up: one look at each value
    // for a "0" costs less than a hashed lookup of each window's name.
    if !headers
        .values()
        .any(|value| value.as_bytes().trim_ascii() == b"0")
    {
        return None;
    }
    window_reset(headers, |window| {
        header_str(headers, &window.remaining) == Some("0")
    })
    .map(|wait| wait.min(MAX_COOLDOWN))
}

/// The header names of one rate-limit window, as `HeaderName`s so that the check every
/// response goes through neither formats nor parses a name (a `&str` lookup validates and
/// lower-cases it first: profiled at half the cost of the check).
struct Window {
    remaining: HeaderName,
    reset: HeaderName,
    /// Azure's hyphenated variant, in integer seconds.
    reset_seconds: HeaderName,
}

static WINDOWS: [Window; 2] = [
    Window {
        remaining: HeaderName::from_static("x-ratelimit-remaining-requests"),
        reset: HeaderName::from_static("x-ratelimit-reset-requests"),
        reset_seconds: HeaderName::from_static("x-rate-limit-reset-requests"),
    },
    Window {
        remaining: HeaderName::from_static("x-ratelimit-remaining-tokens"),
        reset: HeaderName::from_static("x-ratelimit-reset-tokens"),
        reset_seconds: HeaderName::from_static("x-rate-limit-reset-tokens"),
    },
];

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn explicit_retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = header_str(headers, &RETRY_AFTER_MS).and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms > 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header_str(headers, &RETRY_AFTER)?;
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    date.duration_since(SystemTime::now()).ok()
}

/// The reset of an exhausted window, for the windows `applies` accepts.
fn window_reset(headers: &HeaderMap, applies: impl Fn(&Window) -> bool) -> Option<Duration> {
    WINDOWS
        .iter()
        .filter(|window| applies(window))
        .filter_map(|window| {
            header_str(headers, &window.reset)
                .and_then(parse_go_duration)
                .or_else(|| {
                    header_str(headers, &window.reset_seconds)
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs)
                })
        })
        .filter(|wait| !wait.is_zero())
        .max()
}

/// Go's `time.Duration` text: `1s`, `6m0s`, `12ms`, `1h2m3.5s`; a bare number means seconds.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    fn on_429(pairs: &[(&'static str, &str)]) -> Duration {
        cooldown(StatusCode::TOO_MANY_REQUESTS, &headers(pairs)).unwrap()
    }

    #[test]
    fn prefers_retry_after_ms_then_retry_after() {
        assert_eq!(
            on_429(&[("retry-after-ms", "2000"), ("retry-after", "9")]),
            Duration::from_secs(2)
        );
        assert_eq!(on_429(&[("retry-after", "3")]), Duration::from_secs(3));
        assert_eq!(
            on_429(&[("retry-after", "1.5")]),
            Duration::from_millis(1500)
        );
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let wait = on_429(&[("retry-after", &in_a_minute)]);
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
    }

    #[test]
    fn falls_back_to_rate_limit_resets_and_then_a_default() {
        assert_eq!(
            on_429(&[("x-ratelimit-reset-requests", "6m0s")]),
            Duration::from_secs(360)
        );
        assert_eq!(
            on_429(&[
                ("x-ratelimit-reset-requests", "12ms"),
                ("x-ratelimit-reset-tokens", "1m30.5s")
            ]),
            Duration::from_secs_f64(90.5)
        );
        assert_eq!(
            on_429(&[("x-rate-limit-reset-tokens", "55")]),
            Duration::from_secs(55)
        );
        assert_eq!(on_429(&[]), DEFAULT_COOLDOWN);
        assert_eq!(
            on_429(&[("retry-after", "0"), ("x-ratelimit-reset-tokens", "0")]),
            DEFAULT_COOLDOWN
        );
        assert_eq!(on_429(&[("retry-after", "soon")]), DEFAULT_COOLDOWN);
        assert_eq!(on_429(&[("retry-after", "999999")]), MAX_COOLDOWN);
    }

    #[test]
    fn successful_responses_cool_down_only_when_a_window_is_exhausted() {
        let ok = StatusCode::OK;
        assert_eq!(
            cooldown(ok, &headers(&[("x-ratelimit-reset-requests", "1s")])),
            None
        );
        assert_eq!(
            cooldown(
                ok,
                &headers(&[
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1s")
                ])
            ),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            cooldown(
                ok,
                &headers(&[
                    ("x-ratelimit-remaining-tokens", "-1"),
                    ("x-ratelimit-reset-tokens", "0")
                ])
            ),
            None,
            "the Responses API's -1/0 means nothing"
        );
        // A "0" elsewhere is not an exhausted window; a padded one is.
        assert_eq!(
            cooldown(
                ok,
                &headers(&[
                    ("x-ratelimit-remaining-requests", "5"),
                    ("x-ratelimit-reset-requests", "2s"),
                    ("x-retries", "0"),
                ])
            ),
            None
        );
        assert_eq!(
            cooldown(
                ok,
                &headers(&[
                    ("x-ratelimit-remaining-tokens", " 0 "),
                    ("x-ratelimit-reset-tokens", "2s"),
                ])
            ),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn parses_go_durations() {
        for (text, seconds) in [
            ("1s", 1.0),
            ("6m0s", 360.0),
            ("12ms", 0.012),
            ("1h2m3.5s", 3723.5),
            ("7", 7.0),
        ] {
            assert_eq!(
                parse_go_duration(text),
                Some(Duration::from_secs_f64(seconds)),
                "{text}"
            );
        }
        for bad in ["", "s", "1x", "-1s", "1.2.3s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Go durations as upstreams print them parse back to the same length.
            #[test]
            fn go_durations_round_trip(hours in 0u64..48, minutes in 0u64..60, millis in 0u64..60_000) {
                let text = format!("{hours}h{minutes}m{}.{:03}s", millis / 1000, millis % 1000);
                let expected = Duration::from_millis(((hours * 60 + minutes) * 60_000) + millis);
                let parsed = parse_go_duration(&text).unwrap();
                prop_assert!(parsed.abs_diff(expected) < Duration::from_micros(1), "{} => {:?}", text, parsed);
            }

            /// `retry-after-ms` is honoured as given, up to the cap.
            #[test]
            fn retry_after_ms_is_honoured(ms in 1u64..200_000_000) {
                let wait = on_429(&[("retry-after-ms", &ms.to_string())]);
                prop_assert_eq!(wait, Duration::from_millis(ms).min(MAX_COOLDOWN));
            }

            /// Whatever a 429's headers say, the cooldown is positive and bounded, never a panic.
            #[test]
            fn any_429_cools_down_within_bounds(
                ms in "\\PC{0,12}", after in "\\PC{0,40}", reset in "\\PC{0,12}", legacy in "\\PC{0,8}",
            ) {
                let mut headers = HeaderMap::new();
                for (name, value) in [("retry-after-ms", ms), ("retry-after", after), ("x-ratelimit-reset-tokens", reset), ("x-rate-limit-reset-tokens", legacy)] {
                    if let Ok(value) = http::HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                }
                let wait = cooldown(StatusCode::TOO_MANY_REQUESTS, &headers).unwrap();
                prop_assert!(wait >= Duration::from_millis(1) && wait <= MAX_COOLDOWN, "{:?}", wait);
            }
        }
    }
}
