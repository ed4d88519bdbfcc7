//! The client listener's figures, summed over the workers' own counters when scraped.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::concurrency::Load;

#[derive(Clone, Copy, Debug)]
enum Figure {
    InFlight,
    Refused,
    Limit,
    Workers,
}

struct ListenerMetric {
    load: Arc<Load>,
    figure: Figure,
}

impl fmt::Debug for ListenerMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ListenerMetric").field(&self.figure).finish()
    }
}

impl EncodeMetric for ListenerMetric {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let load = &self.load;
        match self.figure {
            Figure::InFlight => encoder.encode_gauge(&load.in_flight()),
            Figure::Refused => encoder.encode_counter::<NoLabelSet, _, u64>(&load.refused(), None),
            Figure::Limit => encoder.encode_gauge(&load.limit()),
            Figure::Workers => encoder.encode_gauge(&load.worker_count()),
        }
    }

    fn metric_type(&self) -> MetricType {
        match self.figure {
            Figure::Refused => MetricType::Counter,
            _ => MetricType::Gauge,
        }
    }
}

pub(super) fn register(registry: &mut Registry, load: &Arc<Load>) {
    for (name, help, figure) in [
        (
            "sluice_inflight_requests",
            "Client requests being served, streamed response bodies included",
            Figure::InFlight,
        ),
        (
            "sluice_concurrency_rejected",
            "Client requests answered 503 because the proxy was at --max-concurrent-requests",
            Figure::Refused,
        ),
        (
            "sluice_concurrency_limit",
            "In-flight requests the proxy admits (its workers' shares of --max-concurrent-requests); 0 without a cap",
            Figure::Limit,
        ),
        (
            "sluice_proxy_workers",
            "Threads serving clients, each with its own listening socket (--workers)",
            Figure::Workers,
        ),
    ] {
        registry.register(
            name,
            help,
            ListenerMetric {
                load: load.clone(),
                figure,
            },
        );
    }
}
