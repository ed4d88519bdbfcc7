//! Usage and backend traffic a replica received but has not written yet, added up per
//! database row so one flush writes each row once however many reports fed it.

use std::collections::HashMap;

use sluice_model::proto;

use crate::store::{TrafficRow, UsageCounts, UsageRow};

const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;

/// Traffic minutes older than this are dropped rather than kept for a database that has
/// been away: pool status shows only the last minutes anyway.
const TRAFFIC_KEPT_MS: i64 = 60 * MINUTE_MS;

type UsageKey = (i64, String, String);
type TrafficKey = (i64, String, String);

#[derive(Debug, Default)]
pub struct Pending {
    usage: HashMap<UsageKey, UsageCounts>,
    traffic: HashMap<TrafficKey, (u64, u64)>,
}

impl Pending {
    /// Adds a report's counts to the hour and minute it arrived in: the control plane's
    /// clock, not the proxy's, so skewed proxies still land in the same buckets.
    pub fn add_report(&mut self, report: &proto::Report, received_unix_ms: i64) {
        let hour = floor(received_unix_ms, HOUR_MS);
        for usage in &report.usage {
            let counts = UsageCounts {
                requests: usage.requests,
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cost_micro_usd: usage.cost_micro_usd,
                rate_limited: usage.rate_limited,
            };
            if counts.is_zero() {
                continue;
            }
            self.usage
                .entry((hour, usage.client_key.clone(), usage.pool.clone()))
                .or_default()
                .add(&counts);
        }
        let minute = floor(received_unix_ms, MINUTE_MS);
        for backend in &report.backends {
            if backend.requests == 0 && backend.errors == 0 {
                continue;
            }
            let cell = self
                .traffic
                .entry((minute, backend.pool.clone(), backend.backend.clone()))
                .or_default();
            cell.0 = cell.0.saturating_add(backend.requests);
            cell.1 = cell.1.saturating_add(backend.errors);
        }
    }

    /// Everything added so far, as rows; the accumulator is left empty.
    pub fn drain(&mut self) -> (Vec<UsageRow>, Vec<TrafficRow>) {
        let usage = self
            .usage
            .drain()
            .map(|((hour, client_key, pool), counts)| UsageRow {
                start_unix_ms: hour,
                client_key,
                pool,
                counts,
            })
            .collect();
        let traffic = self
            .traffic
            .drain()
            .map(|((minute, pool, backend), (requests, errors))| TrafficRow {
                minute_unix_ms: minute,
                pool,
                backend,
                requests,
                errors,
            })
            .collect();
        (usage, traffic)
    }

    /// Takes back rows whose write failed, to go out with the next flush.
    pub fn restore(&mut self, usage: Vec<UsageRow>, traffic: Vec<TrafficRow>, now_unix_ms: i64) {
        for row in usage {
            self.usage
                .entry((row.start_unix_ms, row.client_key, row.pool))
                .or_default()
                .add(&row.counts);
        }
        for row in traffic {
            if row.minute_unix_ms < now_unix_ms - TRAFFIC_KEPT_MS {
                continue;
            }
            let cell = self
                .traffic
                .entry((row.minute_unix_ms, row.pool, row.backend))
                .or_default();
            cell.0 = cell.0.saturating_add(row.requests);
            cell.1 = cell.1.saturating_add(row.errors);
        }
    }
}

fn floor(unix_ms: i64, step: i64) -> i64 {
    unix_ms - unix_ms.rem_euclid(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(requests: u64, tokens: u64) -> proto::Report {
        proto::Report {
            usage: vec![
                proto::UsageReport {
                    client_key: "team-a".into(),
                    pool: "gpt-4o".into(),
                    requests,
                    input_tokens: tokens,
                    output_tokens: 1,
                    cost_micro_usd: 7,
                    rate_limited: 0,
                },
                proto::UsageReport {
                    client_key: "idle".into(),
                    pool: "gpt-4o".into(),
                    ..Default::default()
                },
            ],
            backends: vec![proto::BackendReport {
                pool: "gpt-4o".into(),
                backend: "eastus".into(),
                requests,
                errors: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn reports_in_one_hour_add_up_into_one_row() {
        let mut pending = Pending::default();
        let hour = 1_764_000_000_000 - 1_764_000_000_000 % HOUR_MS;
        pending.add_report(&report(2, 10), hour + 1);
        pending.add_report(&report(3, 20), hour + HOUR_MS - 1);
        pending.add_report(&report(1, 5), hour + HOUR_MS);
        let (mut usage, traffic) = pending.drain();
        usage.sort_by_key(|row| row.start_unix_ms);
        assert_eq!(usage.len(), 2, "idle rows are not kept: {usage:?}");
        assert_eq!(usage[0].start_unix_ms, hour);
        assert_eq!(usage[0].counts.requests, 5);
        assert_eq!(usage[0].counts.input_tokens, 30);
        assert_eq!(usage[0].counts.cost_micro_usd, 14);
        assert_eq!(usage[1].start_unix_ms, hour + HOUR_MS);
        assert_eq!(traffic.iter().map(|t| t.requests).sum::<u64>(), 6);
        assert_eq!(pending.drain(), (vec![], vec![]));
    }

    #[test]
    fn a_failed_write_is_restored_without_counting_twice() {
        let mut pending = Pending::default();
        let now = 1_764_000_000_000;
        pending.add_report(&report(2, 10), now);
        let (usage, traffic) = pending.drain();
        pending.add_report(&report(1, 1), now);
        pending.restore(usage, traffic, now);
        let (usage, traffic) = pending.drain();
        assert_eq!(usage[0].counts.requests, 3);
        assert_eq!(traffic[0].requests, 3);

        // Traffic from long ago is no use to pool status; usage is kept whatever its age.
        pending.restore(usage, traffic, now + 2 * TRAFFIC_KEPT_MS);
        let (usage, traffic) = pending.drain();
        assert_eq!(usage.len(), 1);
        assert!(traffic.is_empty());
    }
}
