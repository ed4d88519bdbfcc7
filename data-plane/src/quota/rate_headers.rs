//! OpenAI's rate-limit headers, so clients that pace themselves on them keep working:
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as Go durations (`1s`,
//! `6m0s`, `250ms`), from the tightest per-minute limit of each kind.

use std::time::Duration;

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

pub fn insert<'a>(
    headers: &mut HeaderMap,
    rules: impl Iterator<Item = &'a Rule> + Clone,
    now: UnixTime,
) {
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
        let reset = Duration::from_secs_f64((limit - remaining) as f64 / limit as f64 * 60.0);
        headers.insert(names[0].clone(), HeaderValue::from(limit));
        headers.insert(names[1].clone(), HeaderValue::from(remaining));
        if let Ok(value) = HeaderValue::try_from(go_duration(reset)) {
            headers.insert(names[2].clone(), value);
        }
    }
}

/// A duration the way Go prints it, as OpenAI sends it: `0s`, `250ms`, `1.5s`, `6m0s`.
pub fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0 => "0s".to_owned(),
        1..=999 => format!("{millis}ms"),
        1_000..=59_999 => {
            let text = format!("{:.3}", millis as f64 / 1000.0);
            format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => {
            let seconds = millis / 1000;
            let rest = format!("{:.3}", (millis % 60_000) as f64 / 1000.0);
            format!(
                "{}m{}s",
                seconds / 60,
                rest.trim_end_matches('0').trim_end_matches('.')
            )
        }
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
        ] {
            assert_eq!(go_duration(Duration::from_millis(millis)), text);
        }
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
