//! The pending faults of one mock, consumed in FIFO order by the requests they match.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::faults::{Action, Fault, FaultError, FaultKind};
use super::routing::Operation;

/// What a fault can be matched against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultTarget<'a> {
    pub deployment: &'a str,
    pub operation: Operation,
    pub stream: bool,
}

#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    /// Lets requests skip the lock while nothing is injected, which is the benchmark case.
    armed: AtomicBool,
    pending: Mutex<VecDeque<Armed>>,
    applied: AtomicU64,
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    action: Action,
    remaining: Option<u32>,
}

impl Armed {
    fn matches(&self, target: &FaultTarget<'_>) -> bool {
        let fault = &self.fault;
        fault
            .deployment
            .as_deref()
            .is_none_or(|deployment| deployment == target.deployment)
            && fault.operation.is_none_or(|op| op == target.operation)
            // A stream cannot be cut short when the answer is a plain JSON body (one can
            // still hang half-way, so a stall applies to both).
            && (target.stream || !matches!(fault.kind, FaultKind::StreamAbortAfter { .. }))
    }
}

impl FaultQueue {
    /// Appends faults after the ones already pending; all or none are added.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) -> Result<usize, FaultError> {
        let armed = faults
            .into_iter()
            .map(|fault| {
                let action = fault.prepare()?;
                Ok(Armed {
                    remaining: fault.times,
                    fault,
                    action,
                })
            })
            .collect::<Result<Vec<_>, FaultError>>()?;
        let mut pending = self.lock();
        pending.extend(armed);
        self.armed.store(!pending.is_empty(), Ordering::Release);
        Ok(pending.len())
    }

    /// Drops every pending fault and says how many there were.
    pub fn clear(&self) -> usize {
        let mut pending = self.lock();
        let cleared = pending.len();
        pending.clear();
        self.armed.store(false, Ordering::Release);
        cleared
    }

    /// The oldest fault matching `target`, counted as used once.
    pub fn take(&self, target: &FaultTarget<'_>) -> Option<Action> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut pending = self.lock();
        let index = pending.iter().position(|armed| armed.matches(target))?;
        let armed = &mut pending[index];
        let action = armed.action.clone();
        if let Some(remaining) = &mut armed.remaining {
            *remaining -= 1;
            if *remaining == 0 {
                pending.remove(index);
                self.armed.store(!pending.is_empty(), Ordering::Release);
            }
        }
        self.applied.fetch_add(1, Ordering::Relaxed);
        Some(action)
    }

    /// Pending faults, `times` showing what is left of each.
    pub fn pending(&self) -> Vec<Fault> {
        self.lock()
            .iter()
            .map(|armed| Fault {
                times: armed.remaining,
                ..armed.fault.clone()
            })
            .collect()
    }

    /// Requests a fault has been applied to so far.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Armed>> {
        // The queue stays consistent even if a holder panicked: every update is one call.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CHAT: FaultTarget<'static> = FaultTarget {
        deployment: "gpt-4o",
        operation: Operation::ChatCompletions,
        stream: false,
    };

    fn kind(action: Option<Action>) -> &'static str {
        match action {
            None => "none",
            Some(Action::Status(_)) => "status",
            Some(Action::Reset) => "reset",
            Some(Action::Latency(_)) => "latency",
            Some(Action::StreamAbortAfter(_)) => "abort",
            Some(Action::StallAfter(_)) => "stall",
        }
    }

    #[test]
    fn applies_faults_in_order_for_their_count() {
        let queue = FaultQueue::default();
        let pushed = queue.push([Fault::status(500).times(2), Fault::reset().once()]);
        assert_eq!(pushed, Ok(2));
        let seen: Vec<_> = (0..4).map(|_| kind(queue.take(&CHAT))).collect();
        assert_eq!(seen, ["status", "status", "reset", "none"]);
        assert_eq!(queue.applied(), 3);
        assert!(queue.pending().is_empty());
    }

    #[test]
    fn faults_without_times_last_until_cleared() {
        let queue = FaultQueue::default();
        assert_eq!(
            queue.push([Fault::latency(Duration::from_millis(1))]),
            Ok(1)
        );
        for _ in 0..5 {
            assert_eq!(kind(queue.take(&CHAT)), "latency");
        }
        assert_eq!(queue.clear(), 1);
        assert_eq!(kind(queue.take(&CHAT)), "none");
    }

    #[test]
    fn skips_faults_that_do_not_match() {
        let queue = FaultQueue::default();
        let faults = [
            Fault::stream_abort_after(1).once(),
            Fault::status(429).deployment("other").once(),
            Fault::status(503).operation(Operation::Embeddings).once(),
            Fault::reset().deployment("gpt-4o").once(),
        ];
        assert_eq!(queue.push(faults), Ok(4));
        assert_eq!(kind(queue.take(&CHAT)), "reset");
        let stream = FaultTarget {
            stream: true,
            ..CHAT
        };
        assert_eq!(kind(queue.take(&stream)), "abort");
        assert_eq!(queue.pending().len(), 2);
    }

    #[test]
    fn stalls_apply_to_streams_and_plain_answers() {
        let queue = FaultQueue::default();
        assert_eq!(queue.push([Fault::stall_after(2).times(2)]), Ok(1));
        let stream = FaultTarget {
            stream: true,
            ..CHAT
        };
        let seen = [queue.take(&CHAT), queue.take(&stream), queue.take(&CHAT)].map(kind);
        assert_eq!(seen, ["stall", "stall", "none"]);
    }

    #[test]
    fn pending_shows_what_is_left() {
        let queue = FaultQueue::default();
        assert_eq!(queue.push([Fault::status(500).times(3)]), Ok(1));
        queue.take(&CHAT);
        assert_eq!(queue.pending()[0].times, Some(2));
    }

    #[test]
    fn refuses_a_batch_with_one_bad_fault() {
        let queue = FaultQueue::default();
        let result = queue.push([Fault::reset(), Fault::status(1000)]);
        assert_eq!(result, Err(FaultError::Status(1000)));
        assert!(queue.pending().is_empty());
    }
}
