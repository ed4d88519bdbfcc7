//! What a proxy tells the control plane about itself on the config stream: each backend's
//! state and attempts, and each client key's traffic per pool (see docs/fleet.md).
//!
//! The request path only adds to relaxed atomics handed out when a config is built
//! ([`ledger`]): no lock, no allocation, no I/O per request. A task per stream
//! ([`reporter`]) swaps them to zero into a report ([`collector`]).
//!
//! # Size
//!
//! A report grows with the backends configured and the (key, pool) pairs that saw traffic
//! since the last one. Measured by `tests::report_sizes_stay_bounded`:
//!
//! | report (12-character names, counters at 50,000)              | encoded   |
//! |--------------------------------------------------------------|-----------|
//! | 10 pools × 5 backends                                        | ~2.0 KiB  |
//! | the same plus 100 keys × 10 pools, every usage row non-zero  | ~51 KiB   |
//! | the same with 63-character names, every counter `u64::MAX`   | ~192 KiB  |
//!
//! About 50 bytes per usage row and 40 per backend in practice, some 190 and 170 at worst: far
//! below gRPC's default 4 MiB message limit (some 20,000 busy pairs at worst).

pub mod attempts;
pub mod collector;
pub mod ledger;
pub mod reporter;
pub mod state;
pub mod usage;

pub use attempts::AttemptCounts;
pub use ledger::ReportLedger;
pub use reporter::Reporter;
pub use usage::{CallUsage, UsageCell, UsageCells};

/// Configs for the report's tests: pools of backends that nothing listens behind, and keys.
#[cfg(test)]
pub(crate) mod fixture {
    use std::sync::Arc;

    use sluice_model::{KeyHash, Snapshot};

    use crate::config::ConfigBuilder;
    use crate::metrics::ProxyMetrics;

    /// Names of `len` characters (at least the index's), distinct per index.
    pub fn name(prefix: &str, index: usize, len: usize) -> String {
        let index = index.to_string();
        let fill = len.saturating_sub(prefix.len() + index.len());
        format!("{prefix}{}{index}", "0".repeat(fill))
    }

    /// `pools` pools of `backends` each and `keys` client keys, named `name_len` long.
    pub fn snapshot(
        revision: u64,
        pools: usize,
        backends: usize,
        keys: usize,
        name_len: usize,
    ) -> Snapshot {
        let pools: Vec<_> = (0..pools)
            .map(|p| {
                let backends: Vec<_> = (0..backends)
                    .map(|b| {
                        serde_json::json!({
                            "name": name("b", b, name_len), "url": "http://127.0.0.1:9",
                            "kind": "openai", "auth": {"type": "none"}
                        })
                    })
                    .collect();
                serde_json::json!({"name": name("p", p, name_len), "backends": backends})
            })
            .collect();
        let hash = KeyHash::new("k").to_string();
        let keys: Vec<_> = (0..keys)
            .map(|k| serde_json::json!({"id": name("k", k, name_len), "hash": hash}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "revision": revision, "pools": pools, "client_keys": keys
        }))
        .unwrap()
    }

    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::for_tests(Arc::new(ProxyMetrics::new()))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use sluice_model::proto::proxy_message::Kind;
    use sluice_model::proto::{Ack, Hello, Nack, ProxyMessage, Report};

    use super::collector::ReportCollector;
    use super::fixture;
    use crate::clock::Nanos;

    /// One call of every key on every pool, each with `value` prompt and completion tokens,
    /// and one failed attempt on every backend.
    fn make_busy(config: &crate::config::RuntimeConfig, keys: usize, value: u64) {
        let usage: crate::usage::Usage = serde_json::from_value(
            serde_json::json!({"prompt_tokens": value, "completion_tokens": value}),
        )
        .unwrap();
        for pool in config.pools.values() {
            for slot in 0..keys {
                let cell = pool.usage(slot).unwrap();
                cell.admitted();
                cell.rate_limited();
                cell.consumed(&usage, None);
            }
            for endpoint in &pool.backends {
                endpoint.attempts.record(true);
            }
        }
    }

    /// A report with every backend of `pools` × `backends` and every (key, pool) pair busy,
    /// with `value` in every counter.
    async fn full_report(keys: usize, name_len: usize, value: u64) -> Report {
        let builder = fixture::builder();
        let config = builder
            .build(fixture::snapshot(u64::MAX, 10, 5, keys, name_len), None)
            .await;
        make_busy(&config, keys, value);
        let mut collector = ReportCollector::new(builder.ledger.clone(), u64::MAX);
        let mut report = collector.build(Some(&config), u64::MAX, Nanos::now(), u64::MAX);
        // Counters cannot be set to arbitrary values through the request path's methods.
        for row in &mut report.usage {
            (row.requests, row.cost_micro_usd, row.rate_limited) = (value, value, value);
        }
        for row in &mut report.backends {
            (row.requests, row.errors) = (value, value);
            if value == u64::MAX {
                row.until_unix_ms = value;
            }
        }
        report
    }

    fn encoded(report: Report) -> usize {
        ProxyMessage {
            kind: Some(Kind::Report(report)),
        }
        .encoded_len()
    }

    /// The sizes in the module docs and docs/fleet.md. "Typical": names of 12 characters,
    /// counts of a busy interval (tens of thousands); "worst": 63-character names (the
    /// longest allowed) and every counter at `u64::MAX`.
    #[tokio::test]
    async fn report_sizes_stay_bounded() {
        let backends_only = encoded(full_report(0, 12, 50_000).await);
        let typical = full_report(100, 12, 50_000).await;
        assert_eq!((typical.usage.len(), typical.backends.len()), (1000, 50));
        let typical = encoded(typical);
        let worst = encoded(full_report(100, 63, u64::MAX).await);
        println!(
            "report sizes: 10 pools x 5 backends: {backends_only} B; + 100 keys x 10 pools: \
             {typical} B typical, {worst} B worst case"
        );
        assert!(backends_only <= 3 * 1024, "{backends_only}");
        assert!(typical <= 64 * 1024, "{typical}");
        // Per usage row at most 2 × 63-byte names and 5 ten-byte varints with their tags.
        assert!(worst <= 200 * 1024, "{worst}");
    }

    /// What reports cost a proxy at 100 keys × 10 pools with every pair busy: building one
    /// (taking 1,000 usage cells and 50 backends) and encoding it, per report and per minute
    /// at the default interval. Printed for docs/fleet.md; run it with `--release` for the
    /// figures there.
    #[tokio::test]
    async fn report_cpu_at_100_keys_by_10_pools() {
        let builder = fixture::builder();
        let config = builder
            .build(fixture::snapshot(1, 10, 5, 100, 12), None)
            .await;
        let mut collector = ReportCollector::new(builder.ledger.clone(), 1);
        let rounds = 50u32;
        let mut spent = std::time::Duration::ZERO;
        for round in 0..rounds {
            make_busy(&config, 100, 1_000);
            let started = std::time::Instant::now();
            let report = collector.build(Some(&config), 1, Nanos::now(), u64::from(round));
            let bytes = ProxyMessage {
                kind: Some(Kind::Report(report)),
            }
            .encode_to_vec();
            spent += started.elapsed();
            assert!(
                bytes.len() > 40_000,
                "every pair is in the report: {}",
                bytes.len()
            );
        }
        let per_report = spent / rounds;
        let per_minute = per_report * (60 / crate::DEFAULT_REPORT_INTERVAL.as_secs()) as u32;
        println!(
            "report CPU at 100 keys x 10 pools, all busy: {per_report:?} per report, \
             {per_minute:?} per minute at the default interval"
        );
    }

    /// The `ProxyMessage` of a control plane that predates reports.
    #[derive(Clone, PartialEq, prost::Message)]
    struct OldProxyMessage {
        #[prost(oneof = "OldKind", tags = "1, 2, 3")]
        kind: Option<OldKind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    enum OldKind {
        #[prost(message, tag = "1")]
        Hello(Hello),
        #[prost(message, tag = "2")]
        Ack(Ack),
        #[prost(message, tag = "3")]
        Nack(Nack),
    }

    /// An old control plane decodes a report as a message of no kind, which it ignores, and
    /// still reads the messages it knows.
    #[tokio::test]
    async fn an_old_control_plane_reads_a_report_as_a_message_of_no_kind() {
        let report = ProxyMessage {
            kind: Some(Kind::Report(full_report(3, 12, 7).await)),
        };
        let old = OldProxyMessage::decode(report.encode_to_vec().as_slice()).unwrap();
        assert_eq!(old.kind, None);
        let ack = ProxyMessage {
            kind: Some(Kind::Ack(Ack {
                revision: 4,
                nonce: "n".into(),
            })),
        };
        let old = OldProxyMessage::decode(ack.encode_to_vec().as_slice()).unwrap();
        assert!(matches!(
            old.kind,
            Some(OldKind::Ack(Ack { revision: 4, .. }))
        ));
    }
}
