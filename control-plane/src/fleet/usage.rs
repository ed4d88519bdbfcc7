//! Usage history as the admin API and the console both serve it: the query's bounds rounded
//! out to whole buckets, the row limit, and the CSV for chargeback.

use sluice_model::Name;

use crate::admin::rfc3339;
use crate::store::{Store, StoreError, UsageFilter, UsageRow};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest span one usage query may cover.
pub const MAX_SPAN_DAYS: i64 = 400;
const DEFAULT_SPAN_MS: i64 = 7 * DAY_MS;
/// Rows one usage answer may hold; past it, the caller narrows the query.
pub const MAX_USAGE_ROWS: u32 = 20_000;

/// A usage query as typed: every value as given, `None` where it was left out.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsageParams<'a> {
    pub key: Option<&'a str>,
    pub pool: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub group_by: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// A value of the query is wrong; `field` names it (`key`, `pool`, `from`, `to`,
    /// `group_by`).
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(
        "more than {MAX_USAGE_ROWS} rows: narrow from/to, group by day or filter by key or pool"
    )]
    TooManyRows,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> UsageError {
    UsageError::Invalid {
        field,
        message: message.into(),
    }
}

/// The filter a query asks for, `now` being the default end.
pub fn usage_filter(params: &UsageParams<'_>, now: i64) -> Result<UsageFilter, UsageError> {
    let bucket_ms = match params.group_by {
        None | Some("day") => DAY_MS,
        Some("hour") => HOUR_MS,
        Some(_) => return Err(invalid("group_by", "group_by must be hour or day")),
    };
    let name = |value: Option<&str>, field: &'static str| {
        value
            .map(|raw| {
                Name::try_from(raw)
                    .map(|name| name.to_string())
                    .map_err(|e| invalid(field, e.to_string()))
            })
            .transpose()
    };
    let client_key = name(params.key, "key")?;
    let pool = name(params.pool, "pool")?;
    let to = match params.to {
        Some(raw) => parse_time(raw, "to")?,
        None => now,
    };
    let from = match params.from {
        Some(raw) => parse_time(raw, "from")?,
        None => to.saturating_sub(DEFAULT_SPAN_MS),
    };
    let (from, to) = (floor(from, bucket_ms), ceil(to, bucket_ms));
    if from >= to {
        return Err(invalid("from", "from must be before to"));
    }
    if to - from > MAX_SPAN_DAYS * DAY_MS {
        return Err(invalid(
            "from",
            format!("from and to may be at most {MAX_SPAN_DAYS} days apart"),
        ));
    }
    Ok(UsageFilter {
        client_key,
        pool,
        from_unix_ms: from,
        to_unix_ms: to,
        bucket_ms,
        max_rows: MAX_USAGE_ROWS,
    })
}

/// The rows of `filter`, refused when there are more than one answer may hold.
pub async fn usage_rows(store: &Store, filter: &UsageFilter) -> Result<Vec<UsageRow>, UsageError> {
    let rows = store.usage_history(filter).await?;
    if rows.len() > MAX_USAGE_ROWS as usize {
        return Err(UsageError::TooManyRows);
    }
    Ok(rows)
}

/// `hour` or `day`.
pub fn group_name(filter: &UsageFilter) -> &'static str {
    if filter.bucket_ms == DAY_MS {
        "day"
    } else {
        "hour"
    }
}

/// An RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC), as Unix ms.
fn parse_time(raw: &str, field: &'static str) -> Result<i64, UsageError> {
    use time::format_description::well_known::Rfc3339;
    let wrong = || {
        invalid(
            field,
            format!(
                "{field} must be an RFC 3339 time (2026-12-01T00:00:00Z) or a date (2026-12-01)"
            ),
        )
    };
    let moment = match time::OffsetDateTime::parse(raw, &Rfc3339) {
        Ok(moment) => moment,
        Err(_) => {
            let date_format = time::format_description::parse_borrowed::<2>("[year]-[month]-[day]")
                .map_err(|_| wrong())?;
            time::Date::parse(raw, &date_format)
                .map_err(|_| wrong())?
                .midnight()
                .assume_utc()
        }
    };
    let millis = moment.unix_timestamp_nanos() / 1_000_000;
    // Before 1970 or past year 9999 there is no usage to find.
    i64::try_from(millis)
        .ok()
        .filter(|ms| (0..=253_402_300_799_999).contains(ms))
        .ok_or_else(wrong)
}

/// Key ids and pool names are names (letters, digits, `-`, `_`, `.`), so no field needs
/// quoting.
pub fn usage_csv(rows: &[UsageRow]) -> String {
    let mut csv = String::from(
        "start,key,pool,requests,input_tokens,output_tokens,cost_usd,rate_limited\r\n",
    );
    for row in rows {
        let c = &row.counts;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\r\n",
            rfc3339(row.start_unix_ms),
            row.client_key,
            row.pool,
            c.requests,
            c.input_tokens,
            c.output_tokens,
            usd_text(c.cost_micro_usd),
            c.rate_limited,
        ));
    }
    csv
}

/// The download's file name: the span it covers.
pub fn csv_filename(filter: &UsageFilter) -> String {
    format!(
        "sluice-usage-{}-{}.csv",
        date_of(filter.from_unix_ms),
        date_of(filter.to_unix_ms)
    )
}

pub fn usd(micro_usd: u64) -> f64 {
    micro_usd as f64 / 1e6
}

/// Exact dollars with six decimals: a spreadsheet adds these without float drift.
pub fn usd_text(micro_usd: u64) -> String {
    format!("{}.{:06}", micro_usd / 1_000_000, micro_usd % 1_000_000)
}

fn date_of(unix_ms: i64) -> String {
    rfc3339(unix_ms).chars().take(10).collect()
}

pub fn floor(unix_ms: i64, step: i64) -> i64 {
    unix_ms - unix_ms.rem_euclid(step)
}

pub fn ceil(unix_ms: i64, step: i64) -> i64 {
    let floored = floor(unix_ms, step);
    if floored == unix_ms {
        unix_ms
    } else {
        floored + step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UsageCounts;

    const NOW: i64 = 1_764_590_400_000; // 2025-12-01T12:00:00Z

    fn params<'a>(pairs: &[(&str, &'a str)]) -> UsageParams<'a> {
        let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        UsageParams {
            key: get("key"),
            pool: get("pool"),
            from: get("from"),
            to: get("to"),
            group_by: get("group_by"),
        }
    }

    #[test]
    fn bounds_round_out_to_whole_buckets() {
        let filter = usage_filter(
            &params(&[
                ("from", "2025-11-30T10:30:00Z"),
                ("to", "2025-12-01T10:30:00Z"),
                ("group_by", "hour"),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(rfc3339(filter.from_unix_ms), "2025-11-30T10:00:00Z");
        assert_eq!(rfc3339(filter.to_unix_ms), "2025-12-01T11:00:00Z");
        let days = usage_filter(&params(&[("from", "2025-11-30")]), NOW).unwrap();
        assert_eq!(rfc3339(days.from_unix_ms), "2025-11-30T00:00:00Z");
        assert_eq!(rfc3339(days.to_unix_ms), "2025-12-02T00:00:00Z");
        assert_eq!(days.bucket_ms, DAY_MS);
        assert_eq!(group_name(&days), "day");
        let default = usage_filter(&params(&[]), NOW).unwrap();
        assert_eq!(rfc3339(default.from_unix_ms), "2025-11-24T00:00:00Z");
        assert_eq!(
            csv_filename(&default),
            "sluice-usage-2025-11-24-2025-12-02.csv"
        );
    }

    #[test]
    fn bad_queries_name_their_field() {
        for (pairs, expected) in [
            (vec![("group_by", "week")], "group_by"),
            (vec![("from", "yesterday")], "from"),
            (vec![("to", "2025-13-01")], "to"),
            (vec![("from", "2025-12-02"), ("to", "2025-12-01")], "from"),
            (vec![("from", "2024-01-01"), ("to", "2025-12-01")], "from"),
            (vec![("key", "not a name")], "key"),
            (vec![("pool", "")], "pool"),
            (vec![("from", "1969-12-31")], "from"),
        ] {
            match usage_filter(&params(&pairs), NOW) {
                Err(UsageError::Invalid { field, .. }) => assert_eq!(field, expected, "{pairs:?}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn csv_is_exact_in_dollars() {
        let rows = [UsageRow {
            start_unix_ms: NOW,
            client_key: "team-a".into(),
            pool: "gpt-4o".into(),
            counts: UsageCounts {
                requests: 3,
                input_tokens: 1000,
                output_tokens: 20,
                cost_micro_usd: 1_234_567,
                rate_limited: 1,
            },
        }];
        assert_eq!(
            usage_csv(&rows),
            "start,key,pool,requests,input_tokens,output_tokens,cost_usd,rate_limited\r\n\
             2025-12-01T12:00:00Z,team-a,gpt-4o,3,1000,20,1.234567,1\r\n"
        );
    }
}
