//! Where the report's counters live across config revisions.
//!
//! A config hands its request path counters it got from here, by identity: the same key on
//! the same pool, or the same backend of the same pool, gets the same counter in the next
//! config. Calls still in flight on an old config therefore count into the cells the next
//! report reads, and nothing is lost when a snapshot is applied. The lock is taken when a
//! config is built and when a report is made, never per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_model::Name;

use super::attempts::{AttemptCounts, AttemptTotals};
use super::usage::{UsageCells, UsageCounts};

/// Whose traffic on which pool; no client key when the proxy serves anonymous clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub client_key: Option<Name>,
    pub pool: Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub pool: Name,
    pub backend: Name,
}

/// The non-zero counts taken for one report.
#[derive(Debug, Default)]
pub struct Taken {
    pub usage: Vec<(UsageKey, UsageCounts)>,
    pub attempts: HashMap<BackendKey, AttemptTotals>,
}

#[derive(Default)]
struct Cells {
    usage: HashMap<UsageKey, UsageCells>,
    attempts: HashMap<BackendKey, Arc<AttemptCounts>>,
}

pub struct ReportLedger {
    /// `None` when no report is ever made: cells are handed out but not kept, so counters of
    /// keys and backends that left the config do not pile up.
    cells: Option<Mutex<Cells>>,
}

impl ReportLedger {
    /// Keeps every counter handed out until a report has taken its last counts.
    pub fn tracking() -> Self {
        Self {
            cells: Some(Mutex::default()),
        }
    }

    /// Hands out counters without keeping them (reports are off).
    pub fn untracked() -> Self {
        Self { cells: None }
    }

    pub fn usage_cells(&self, client_key: Option<&Name>, pool: &Name) -> UsageCells {
        let Some(cells) = &self.cells else {
            return UsageCells::default();
        };
        let key = UsageKey {
            client_key: client_key.cloned(),
            pool: pool.clone(),
        };
        lock(cells).usage.entry(key).or_default().clone()
    }

    pub fn attempt_counts(&self, pool: &Name, backend: &Name) -> Arc<AttemptCounts> {
        let Some(cells) = &self.cells else {
            return Arc::default();
        };
        let key = BackendKey {
            pool: pool.clone(),
            backend: backend.clone(),
        };
        lock(cells).attempts.entry(key).or_default().clone()
    }

    /// Takes every counter's counts (non-zero ones only) and forgets the counters that no
    /// config and no call in flight holds any more, after taking their last counts.
    pub fn take(&self) -> Taken {
        let Some(cells) = &self.cells else {
            return Taken::default();
        };
        let mut cells = lock(cells);
        let mut taken = Taken::default();
        // Only the ledger holds a counter with a strong count of 1, and handing it out again
        // needs this lock: nothing can count into it after its final take.
        cells.usage.retain(|key, cells| {
            let counts = cells.take();
            if !counts.is_zero() {
                taken.usage.push((key.clone(), counts));
            }
            cells.held_elsewhere()
        });
        cells.attempts.retain(|key, counts| {
            let totals = counts.take();
            if !totals.is_zero() {
                taken.attempts.insert(key.clone(), totals);
            }
            Arc::strong_count(counts) > 1
        });
        taken
    }

    #[cfg(test)]
    pub fn tracked(&self) -> (usize, usize) {
        self.cells.as_ref().map_or((0, 0), |cells| {
            let cells = lock(cells);
            (cells.usage.len(), cells.attempts.len())
        })
    }
}

fn lock(cells: &Mutex<Cells>) -> std::sync::MutexGuard<'_, Cells> {
    cells
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::try_from(text).unwrap()
    }

    #[test]
    fn the_same_identity_gets_the_same_counter_and_only_non_zero_rows_are_taken() {
        let ledger = ReportLedger::tracking();
        let (a, p, q) = (name("team-a"), name("gpt-4o"), name("mini"));
        let first = ledger.usage_cells(Some(&a), &p);
        let again = ledger.usage_cells(Some(&a), &p);
        assert!(Arc::ptr_eq(first.current(), again.current()));
        let _idle = ledger.usage_cells(Some(&a), &q);
        let anonymous = ledger.usage_cells(None, &p);
        first.current().admitted();
        anonymous.current().rate_limited();
        let backend = ledger.attempt_counts(&p, &name("eastus"));
        let _quiet = ledger.attempt_counts(&p, &name("westus"));
        backend.record(true);

        let mut taken = ledger.take();
        taken.usage.sort_by(|x, y| x.0.cmp(&y.0));
        let rows: Vec<_> = taken
            .usage
            .iter()
            .map(|(key, counts)| {
                (
                    key.client_key.as_ref().map(Name::as_str),
                    key.pool.as_str(),
                    counts.requests,
                    counts.rate_limited,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [(None, "gpt-4o", 0, 1), (Some("team-a"), "gpt-4o", 1, 0)]
        );
        assert_eq!(taken.attempts.len(), 1, "the quiet backend has no row");
        assert!(ledger.take().usage.is_empty());
    }

    /// A counter that left the config is reported once more with what in-flight calls added,
    /// then forgotten.
    #[test]
    fn counters_outlive_their_config_until_their_last_counts_are_taken() {
        let ledger = ReportLedger::tracking();
        let (a, p) = (name("team-a"), name("gpt-4o"));
        let in_flight = Arc::clone(ledger.usage_cells(Some(&a), &p).current());
        let backend = ledger.attempt_counts(&p, &name("eastus"));
        assert_eq!(ledger.tracked(), (1, 1));
        // The config that held them is replaced; calls still running finish on them.
        in_flight.admitted();
        backend.record(false);
        drop((in_flight, backend));
        let taken = ledger.take();
        assert_eq!(taken.usage[0].1.requests, 1);
        assert_eq!(taken.attempts.values().next().unwrap().requests, 1);
        assert_eq!(ledger.tracked(), (0, 0));
    }

    #[test]
    fn an_untracked_ledger_keeps_nothing() {
        let ledger = ReportLedger::untracked();
        let cells = ledger.usage_cells(None, &name("p"));
        cells.current().admitted();
        assert!(ledger.take().usage.is_empty());
        assert_eq!(ledger.tracked(), (0, 0));
    }
}
