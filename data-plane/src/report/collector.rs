//! Turns the counters and the backends' states into [`Report`]s.

use std::sync::Arc;

use sluice_model::proto::{BackendReport, BackendState, Report, UsageReport};

use super::ledger::{BackendKey, ReportLedger};
use super::state::wire_state;
use crate::clock::Nanos;
use crate::config::RuntimeConfig;

/// The backends' states as last reported, to tell when one changed.
#[derive(Debug, PartialEq, Eq)]
struct ReportedStates {
    revision: u64,
    /// In the config's iteration order, which is fixed for one config.
    states: Vec<BackendState>,
}

/// Builds reports from the ledger's counters. It outlives streams: counts it has not taken
/// stay in the counters, and the next stream's first report covers them.
pub struct ReportCollector {
    ledger: Arc<ReportLedger>,
    /// Where the next report's span starts: the end of the last one handed to a stream.
    since_unix_ms: u64,
    reported: Option<ReportedStates>,
}

impl ReportCollector {
    pub fn new(ledger: Arc<ReportLedger>, now_unix_ms: u64) -> Self {
        Self {
            ledger,
            since_unix_ms: now_unix_ms,
            reported: None,
        }
    }

    /// Whether a backend's state differs from the last report's (or the config changed).
    pub fn states_changed(&self, config: Option<&RuntimeConfig>, now: Nanos) -> bool {
        let Some(config) = config else {
            return false;
        };
        let Some(reported) = &self.reported else {
            return true;
        };
        if reported.revision != config.revision {
            return true;
        }
        let mut last = reported.states.iter();
        let now_states = backends(config).map(|(_, endpoint)| wire_state(endpoint.state(now), 0).0);
        for state in now_states {
            if last.next() != Some(&state) {
                return true;
            }
        }
        last.next().is_some()
    }

    /// Takes the counts since the last report. Call it only when the report can be handed
    /// to the stream: what it takes is gone from the counters.
    pub fn build(
        &mut self,
        config: Option<&RuntimeConfig>,
        sequence: u64,
        now: Nanos,
        now_unix_ms: u64,
    ) -> Report {
        let mut taken = self.ledger.take();
        let mut backend_rows = Vec::new();
        let mut states = Vec::new();
        if let Some(config) = config {
            for (pool, endpoint) in backends(config) {
                let (state, until_unix_ms) = wire_state(endpoint.state(now), now_unix_ms);
                let key = BackendKey {
                    pool: pool.clone(),
                    backend: endpoint.spec.name.clone(),
                };
                let totals = taken.attempts.remove(&key).unwrap_or_default();
                states.push(state);
                backend_rows.push(BackendReport {
                    pool: key.pool.to_string(),
                    backend: key.backend.to_string(),
                    state: state.into(),
                    until_unix_ms,
                    requests: totals.requests,
                    errors: totals.errors,
                });
            }
        }
        // Backends no longer configured: their last attempts, with no state to tell.
        backend_rows.extend(
            taken
                .attempts
                .into_iter()
                .map(|(key, totals)| BackendReport {
                    pool: key.pool.to_string(),
                    backend: key.backend.to_string(),
                    state: BackendState::Unspecified.into(),
                    until_unix_ms: 0,
                    requests: totals.requests,
                    errors: totals.errors,
                }),
        );
        let usage = taken
            .usage
            .into_iter()
            .map(|(key, counts)| UsageReport {
                client_key: key.client_key.map(|id| id.to_string()).unwrap_or_default(),
                pool: key.pool.to_string(),
                requests: counts.requests,
                input_tokens: counts.input_tokens,
                output_tokens: counts.output_tokens,
                cost_micro_usd: counts.cost_micro_usd,
                rate_limited: counts.rate_limited,
            })
            .collect();
        let revision = config.map_or(0, |c| c.revision);
        self.reported = config.map(|_| ReportedStates { revision, states });
        let from_unix_ms = std::mem::replace(&mut self.since_unix_ms, now_unix_ms);
        Report {
            sequence,
            from_unix_ms,
            to_unix_ms: now_unix_ms,
            revision,
            backends: backend_rows,
            usage,
        }
    }
}

fn backends(
    config: &RuntimeConfig,
) -> impl Iterator<Item = (&sluice_model::Name, &Arc<crate::backend::BackendEndpoint>)> {
    config.pools.values().flat_map(|pool| {
        pool.backends
            .iter()
            .map(move |endpoint| (&pool.name, endpoint))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::fixture;

    const NOW_MS: u64 = 1_700_000_000_000;

    /// Every configured backend has a row with its state; only (key, pool) pairs that saw
    /// traffic have one; what a report took is not in the next.
    #[tokio::test]
    async fn reports_every_backend_and_only_busy_keys_then_starts_from_zero() {
        let builder = fixture::builder();
        let config = builder.build(fixture::snapshot(7, 1, 2, 3, 4), None).await;
        let pool = config.pools.values().next().unwrap();
        let now = Nanos::now();
        pool.backends[1].health.record_failure(now);
        pool.backends[0].attempts.record(false);
        pool.backends[1].attempts.record(true);
        pool.usage(1).unwrap().admitted();
        pool.usage(1).unwrap().rate_limited();

        let mut collector = ReportCollector::new(builder.ledger.clone(), NOW_MS - 5_000);
        let report = collector.build(Some(&config), 1, now, NOW_MS);
        assert_eq!(
            (
                report.sequence,
                report.revision,
                report.from_unix_ms,
                report.to_unix_ms
            ),
            (1, 7, NOW_MS - 5_000, NOW_MS)
        );
        let rows: Vec<_> = report
            .backends
            .iter()
            .map(|b| {
                (
                    b.backend.as_str(),
                    b.state(),
                    b.until_unix_ms,
                    b.requests,
                    b.errors,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("b000", BackendState::Available, 0, 1, 0),
                ("b001", BackendState::Ejected, NOW_MS + 1_000, 1, 1),
            ]
        );
        assert_eq!(report.usage.len(), 1, "{:?}", report.usage);
        let row = &report.usage[0];
        assert_eq!(
            (
                row.client_key.as_str(),
                row.pool.as_str(),
                row.requests,
                row.rate_limited
            ),
            ("k001", "p000", 1, 1)
        );

        let next = collector.build(Some(&config), 2, now, NOW_MS + 5_000);
        assert_eq!(next.from_unix_ms, NOW_MS, "spans follow each other");
        assert!(next.usage.is_empty());
        assert!(
            next.backends
                .iter()
                .all(|b| b.requests == 0 && b.errors == 0)
        );
        assert_eq!(
            next.backends.len(),
            2,
            "states are sent even without traffic"
        );
    }

    #[tokio::test]
    async fn notices_a_backend_changing_state_or_a_new_config() {
        let builder = fixture::builder();
        let config = builder.build(fixture::snapshot(1, 2, 2, 0, 4), None).await;
        let mut collector = ReportCollector::new(builder.ledger.clone(), NOW_MS);
        let now = Nanos::now();
        assert!(!collector.states_changed(None, now));
        assert!(
            collector.states_changed(Some(&config), now),
            "never reported"
        );
        collector.build(Some(&config), 1, now, NOW_MS);
        assert!(!collector.states_changed(Some(&config), now));

        let backend = &config.pools.values().next().unwrap().backends[0];
        backend.health.cool_down(now, Duration::from_secs(2));
        assert!(collector.states_changed(Some(&config), now));
        collector.build(Some(&config), 2, now, NOW_MS);
        // A longer wait in the same state is no change; its end is reported with the next.
        backend.health.cool_down(now, Duration::from_secs(9));
        assert!(!collector.states_changed(Some(&config), now));
        let later = now.after(Duration::from_secs(10));
        assert!(
            collector.states_changed(Some(&config), later),
            "back to available"
        );

        let next = builder
            .build(fixture::snapshot(2, 2, 2, 0, 4), Some(&config))
            .await;
        collector.build(Some(&config), 3, later, NOW_MS);
        assert!(collector.states_changed(Some(&next), later), "new revision");
    }

    /// Calls still running on a replaced config count into cells the next report reads: a
    /// key and a backend kept by the new config share their counters with the old one, and
    /// a removed backend is reported once more, with no state.
    #[tokio::test]
    async fn counts_made_on_a_replaced_config_are_reported() {
        let builder = fixture::builder();
        let old = builder.build(fixture::snapshot(1, 1, 2, 2, 4), None).await;
        let mut collector = ReportCollector::new(builder.ledger.clone(), NOW_MS);
        let now = Nanos::now();
        collector.build(Some(&old), 1, now, NOW_MS);
        // Revision 2 drops the second backend and the second key.
        let new = builder
            .build(fixture::snapshot(2, 1, 1, 1, 4), Some(&old))
            .await;
        let old_pool = old.pools.values().next().unwrap();
        let (kept_cell, dropped_cell) = (
            old_pool.usage(0).unwrap().clone(),
            old_pool.usage(1).unwrap().clone(),
        );
        let dropped_backend = old_pool.backends[1].clone();
        drop(old);
        kept_cell.admitted();
        dropped_cell.admitted();
        dropped_backend.attempts.record(true);
        new.pools
            .values()
            .next()
            .unwrap()
            .usage(0)
            .unwrap()
            .admitted();
        drop((kept_cell, dropped_cell, dropped_backend));

        let report = collector.build(Some(&new), 2, now, NOW_MS + 1);
        let mut usage: Vec<_> = report
            .usage
            .iter()
            .map(|u| (u.client_key.as_str(), u.requests))
            .collect();
        usage.sort_unstable();
        assert_eq!(usage, [("k000", 2), ("k001", 1)]);
        let backends: Vec<_> = report
            .backends
            .iter()
            .map(|b| (b.backend.as_str(), b.state(), b.requests, b.errors))
            .collect();
        assert_eq!(
            backends,
            [
                ("b000", BackendState::Available, 0, 0),
                ("b001", BackendState::Unspecified, 1, 1),
            ]
        );
        assert_eq!(
            builder.ledger.tracked(),
            (2, 1),
            "the removed ones are forgotten"
        );
    }
}
