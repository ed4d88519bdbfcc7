//! The usage page's charts as data: one series per client key (or per pool) over every
//! bucket of the span, zeros included, in the shape the chart script hands to uPlot.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{UsageFilter, UsageRow};

/// More series than this make a chart unreadable: the smallest are added up as "others".
const MAX_SERIES: usize = 8;

/// What each series of the charts stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SplitBy {
    Key,
    Pool,
}

impl SplitBy {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "" | "key" => Some(Self::Key),
            "pool" => Some(Self::Pool),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Pool => "pool",
        }
    }

    fn label(self, row: &UsageRow) -> String {
        match self {
            Self::Key if row.client_key.is_empty() => "(no key)".to_owned(),
            Self::Key => row.client_key.clone(),
            Self::Pool => row.pool.clone(),
        }
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub(crate) struct Series {
    pub label: String,
    pub values: Vec<u64>,
}

/// One chart: bucket starts in Unix seconds (uPlot's time unit) and a series per label.
#[derive(Serialize, Debug, PartialEq)]
pub(crate) struct Chart {
    pub x: Vec<i64>,
    pub series: Vec<Series>,
}

/// A series' totals over the span: the charts' text alternative.
pub(crate) struct SeriesTotal {
    pub label: String,
    pub requests: u64,
    pub tokens: u64,
}

pub(crate) struct Charts {
    pub requests: Chart,
    pub tokens: Chart,
    pub totals: Vec<SeriesTotal>,
}

pub(crate) fn charts(filter: &UsageFilter, rows: &[UsageRow], split: SplitBy) -> Charts {
    let starts: Vec<i64> = (filter.from_unix_ms..filter.to_unix_ms)
        .step_by(usize::try_from(filter.bucket_ms).unwrap_or(usize::MAX))
        .collect();
    let slot = |start: i64| usize::try_from((start - filter.from_unix_ms) / filter.bucket_ms).ok();
    // label -> (requests per bucket, tokens per bucket)
    let mut by_label: BTreeMap<String, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for row in rows {
        let Some(i) = slot(row.start_unix_ms).filter(|i| *i < starts.len()) else {
            continue;
        };
        let (requests, tokens) = by_label
            .entry(split.label(row))
            .or_insert_with(|| (vec![0; starts.len()], vec![0; starts.len()]));
        requests[i] += row.counts.requests;
        tokens[i] += row
            .counts
            .input_tokens
            .saturating_add(row.counts.output_tokens);
    }
    let mut labelled: Vec<(String, Vec<u64>, Vec<u64>)> = by_label
        .into_iter()
        .map(|(label, (requests, tokens))| (label, requests, tokens))
        .collect();
    labelled.sort_by_key(|(label, requests, _)| {
        (
            std::cmp::Reverse(requests.iter().sum::<u64>()),
            label.clone(),
        )
    });
    if labelled.len() > MAX_SERIES {
        let rest = labelled.split_off(MAX_SERIES - 1);
        let mut others = (
            format!("{} others", rest.len()),
            vec![0; starts.len()],
            vec![0; starts.len()],
        );
        for (_, requests, tokens) in rest {
            for i in 0..starts.len() {
                others.1[i] += requests[i];
                others.2[i] += tokens[i];
            }
        }
        labelled.push(others);
    }
    let x: Vec<i64> = starts.iter().map(|ms| ms / 1000).collect();
    Charts {
        totals: labelled
            .iter()
            .map(|(label, requests, tokens)| SeriesTotal {
                label: label.clone(),
                requests: requests.iter().sum(),
                tokens: tokens.iter().sum(),
            })
            .collect(),
        requests: Chart {
            x: x.clone(),
            series: labelled
                .iter()
                .map(|(label, requests, _)| Series {
                    label: label.clone(),
                    values: requests.clone(),
                })
                .collect(),
        },
        tokens: Chart {
            x,
            series: labelled
                .into_iter()
                .map(|(label, _, tokens)| Series {
                    label,
                    values: tokens,
                })
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::usage::HOUR_MS;
    use crate::store::UsageCounts;

    const FROM: i64 = 1_764_590_400_000;

    fn row(hour: i64, key: &str, pool: &str, requests: u64) -> UsageRow {
        UsageRow {
            start_unix_ms: FROM + hour * HOUR_MS,
            client_key: key.into(),
            pool: pool.into(),
            counts: UsageCounts {
                requests,
                input_tokens: requests * 10,
                output_tokens: requests,
                ..UsageCounts::default()
            },
        }
    }

    fn filter(hours: i64) -> UsageFilter {
        UsageFilter {
            client_key: None,
            pool: None,
            from_unix_ms: FROM,
            to_unix_ms: FROM + hours * HOUR_MS,
            bucket_ms: HOUR_MS,
            max_rows: 100,
        }
    }

    #[test]
    fn every_bucket_has_a_value_and_series_follow_the_split() {
        let rows = [
            row(0, "team-a", "gpt-4o", 2),
            row(0, "team-b", "gpt-4o", 5),
            row(2, "team-a", "mini", 1),
            row(2, "", "mini", 1),
        ];
        let by_key = charts(&filter(3), &rows, SplitBy::Key);
        assert_eq!(
            by_key.requests.x,
            [FROM / 1000, FROM / 1000 + 3600, FROM / 1000 + 7200]
        );
        let labels: Vec<_> = by_key
            .requests
            .series
            .iter()
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(labels, ["team-b", "team-a", "(no key)"]);
        assert_eq!(by_key.requests.series[1].values, [2, 0, 1]);
        assert_eq!(by_key.tokens.series[1].values, [22, 0, 11]);
        assert_eq!(by_key.totals[0].requests, 5);
        let by_pool = charts(&filter(3), &rows, SplitBy::Pool);
        assert_eq!(by_pool.requests.series[0].label, "gpt-4o");
        assert_eq!(by_pool.requests.series[1].values, [0, 0, 2]);
    }

    #[test]
    fn small_series_are_added_up_past_the_limit() {
        let rows: Vec<_> = (0..10u64)
            .map(|i| row(0, &format!("key-{i}"), "p", 100 - i))
            .collect();
        let chart = charts(&filter(1), &rows, SplitBy::Key);
        assert_eq!(chart.requests.series.len(), MAX_SERIES);
        let others = chart.requests.series.last().unwrap();
        assert_eq!(others.label, "3 others");
        assert_eq!(others.values, [93 + 92 + 91]);
    }
}
