//! Sends reports on the config stream: every interval, and soon after a backend changes
//! state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use sluice_model::proto::proxy_message::Kind;
use sluice_model::proto::{ProxyMessage, Report};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{Instant, MissedTickBehavior};

use super::collector::ReportCollector;
use super::ledger::ReportLedger;
use crate::clock::{Nanos, UnixTime};
use crate::metrics::ProxyMetrics;
use crate::proxy::Proxy;

/// How often backend states are looked at between reports, which is also the least time
/// between two reports a state change sends: a backend flapping cannot flood the stream.
pub const STATE_POLL: Duration = Duration::from_millis(250);

pub struct Reporter {
    interval: Duration,
    collector: Mutex<ReportCollector>,
    metrics: Arc<ProxyMetrics>,
}

/// Whether a report went to the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Handed {
    Sent,
    /// The stream's queue is full: the counts stay in the counters for the next report.
    Deferred,
    /// The stream is gone.
    Closed,
}

impl Reporter {
    /// `None` when `interval` is zero: reports are off.
    pub fn new(
        interval: Duration,
        ledger: Arc<ReportLedger>,
        metrics: Arc<ProxyMetrics>,
    ) -> Option<Self> {
        (!interval.is_zero()).then(|| Self {
            interval,
            collector: Mutex::new(ReportCollector::new(ledger, unix_ms())),
            metrics,
        })
    }

    /// Reports on one stream until it closes; `sequence` counts from 1 on each.
    pub async fn run(&self, proxy: Arc<Proxy>, outbound: mpsc::Sender<ProxyMessage>) {
        let mut ticks = tokio::time::interval(self.interval.min(STATE_POLL));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first report goes out at once: the control plane learns the backends' states
        // without waiting an interval after each reconnect.
        let mut next_due = Instant::now();
        let mut sequence = 1;
        loop {
            ticks.tick().await;
            let config = proxy.current();
            let now = Nanos::now();
            let due = Instant::now() >= next_due
                || self.collector().states_changed(config.as_deref(), now);
            if !due {
                continue;
            }
            match self.hand_over(&outbound, |collector| {
                collector.build(config.as_deref(), sequence, now, unix_ms())
            }) {
                Handed::Sent => {
                    sequence += 1;
                    next_due = Instant::now() + self.interval;
                }
                Handed::Deferred => next_due = Instant::now() + self.interval,
                Handed::Closed => return,
            }
        }
    }

    /// Builds a report only once the stream has room for it, so a full queue leaves every
    /// count where it was rather than in a report that would be dropped.
    pub fn hand_over(
        &self,
        outbound: &mpsc::Sender<ProxyMessage>,
        build: impl FnOnce(&mut ReportCollector) -> Report,
    ) -> Handed {
        let permit = match outbound.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => {
                self.metrics.reports_deferred.inc();
                return Handed::Deferred;
            }
            Err(TrySendError::Closed(())) => return Handed::Closed,
        };
        let message = ProxyMessage {
            kind: Some(Kind::Report(build(&mut self.collector()))),
        };
        self.metrics.reports_sent.inc();
        self.metrics
            .report_bytes
            .inc_by(u64::try_from(message.encoded_len()).unwrap_or(u64::MAX));
        permit.send(message);
        Handed::Sent
    }

    fn collector(&self) -> std::sync::MutexGuard<'_, ReportCollector> {
        self.collector
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn unix_ms() -> u64 {
    u64::try_from(UnixTime::now().millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use crate::proxy::ProxyOptions;
    use crate::report::fixture;

    use super::*;

    fn report_of(message: ProxyMessage) -> Report {
        match message.kind {
            Some(Kind::Report(report)) => report,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    fn requests(report: &Report) -> u64 {
        report.usage.iter().map(|u| u.requests).sum()
    }

    async fn proxy_with_config() -> (Arc<Proxy>, crate::config::ConfigBuilder) {
        let builder = fixture::builder();
        let proxy = Arc::new(Proxy::new(
            ProxyOptions {
                allow_anonymous: false,
                max_body_bytes: 1024,
            },
            builder.metrics.clone(),
        ));
        proxy.apply(builder.build(fixture::snapshot(3, 1, 2, 1, 4), None).await);
        (proxy, builder)
    }

    /// With the stream's queue full nothing is taken: the counts go out with the next report
    /// that finds room, on this stream or the next.
    #[tokio::test]
    async fn a_full_queue_defers_the_report_and_keeps_its_counts() {
        let (proxy, builder) = proxy_with_config().await;
        let reporter = Reporter::new(
            Duration::from_secs(5),
            builder.ledger.clone(),
            builder.metrics.clone(),
        )
        .unwrap();
        let config = proxy.current().unwrap();
        let cell = config.pools.values().next().unwrap().usage(0).unwrap();
        let (outbound, mut queued) = mpsc::channel(1);
        outbound.try_send(ProxyMessage::default()).unwrap();
        cell.admitted();
        let config = config.as_ref();
        let build = |sequence| {
            move |collector: &mut ReportCollector| {
                collector.build(Some(config), sequence, Nanos::now(), unix_ms())
            }
        };
        assert_eq!(reporter.hand_over(&outbound, build(1)), Handed::Deferred);
        assert_eq!(builder.metrics.reports_deferred.get(), 1);
        assert_eq!(builder.metrics.reports_sent.get(), 0);
        queued.recv().await.unwrap();
        cell.admitted();
        assert_eq!(reporter.hand_over(&outbound, build(1)), Handed::Sent);
        let report = report_of(queued.recv().await.unwrap());
        assert_eq!(
            requests(&report),
            2,
            "both calls, the deferred one included"
        );
        assert_eq!(builder.metrics.reports_sent.get(), 1);
        assert!(builder.metrics.report_bytes.get() > 0);

        // The stream ends; counts made meanwhile wait for the next one.
        drop(queued);
        cell.admitted();
        assert_eq!(reporter.hand_over(&outbound, build(2)), Handed::Closed);
        let (outbound, mut queued) = mpsc::channel(1);
        assert_eq!(reporter.hand_over(&outbound, build(1)), Handed::Sent);
        assert_eq!(requests(&report_of(queued.recv().await.unwrap())), 1);
    }

    #[test]
    fn a_zero_interval_turns_reports_off() {
        let builder = fixture::builder();
        let off = Reporter::new(
            Duration::ZERO,
            builder.ledger.clone(),
            builder.metrics.clone(),
        );
        assert!(off.is_none());
    }

    /// The first report goes out on connecting; the next comes early, at the next state
    /// poll, because a backend was ejected, long before the interval is up.
    #[tokio::test]
    async fn reports_at_once_on_connecting_and_soon_after_a_state_change() {
        let (proxy, builder) = proxy_with_config().await;
        let reporter = Arc::new(
            Reporter::new(
                Duration::from_secs(60),
                builder.ledger.clone(),
                builder.metrics.clone(),
            )
            .unwrap(),
        );
        let (outbound, mut queued) = mpsc::channel(8);
        let running = tokio::spawn({
            let (reporter, proxy) = (reporter.clone(), proxy.clone());
            async move { reporter.run(proxy, outbound).await }
        });
        let first = report_of(queued.recv().await.unwrap());
        let first_at = Instant::now();
        assert_eq!((first.sequence, first.revision), (1, 3));
        assert!(
            first
                .backends
                .iter()
                .all(|b| b.state() == sluice_model::proto::BackendState::Available)
        );
        let config = proxy.current().unwrap();
        let backend = &config.pools.values().next().unwrap().backends[1];
        backend.health.record_failure(Nanos::now());
        let second = tokio::time::timeout(Duration::from_secs(5), queued.recv())
            .await
            .expect("a state change is reported before the interval")
            .map(report_of)
            .unwrap();
        assert_eq!(second.sequence, 2);
        assert_eq!(
            second.backends[1].state(),
            sluice_model::proto::BackendState::Ejected
        );
        assert!(
            first_at.elapsed() >= STATE_POLL - Duration::from_millis(50),
            "state changes are debounced: {:?}",
            first_at.elapsed()
        );
        drop(queued);
        // The stream is gone: the reporter stops on its next try, here the state change back.
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the reporter stops with its stream")
            .unwrap();
    }
}
