//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), read from Linux `/proc` each time the
//! registry is read: a scrape of either plane's `/metrics`, or an OTLP push.
//!
//! A figure that cannot be read (no `/proc`: another OS, a sandbox without it) has no series
//! at all rather than a zero, which would look like a real reading.

mod proc_files;
mod sample;

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use sample::ProcDirs;

/// Adds the process metrics to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector {
        dirs: ProcDirs::this_process(),
    }));
}

/// Reads the process' figures when the registry is encoded.
#[derive(Debug)]
struct ProcessCollector {
    dirs: ProcDirs,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let sample = self.dirs.read();
        let mut family = |name, help, unit, metric: &dyn EncodeMetric| {
            let metric_encoder =
                encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
            metric.encode(metric_encoder)
        };
        if let Some(seconds) = sample.cpu_seconds {
            family(
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(&Unit::Seconds),
                &ConstCounter::new(seconds),
            )?;
        }
        if let Some(bytes) = sample.resident_bytes {
            family(
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(&Unit::Bytes),
                &gauge(bytes),
            )?;
        }
        if let Some(bytes) = sample.virtual_bytes {
            family(
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(&Unit::Bytes),
                &gauge(bytes),
            )?;
        }
        if let Some(count) = sample.open_fds {
            family(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                &gauge(count),
            )?;
        }
        if let Some(count) = sample.max_fds {
            family(
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit)",
                None,
                &gauge(count),
            )?;
        }
        if let Some(seconds) = sample.start_time_seconds {
            family(
                "process_start_time",
                "Start time of the process since unix epoch in seconds",
                Some(&Unit::Seconds),
                &ConstGauge::new(seconds),
            )?;
        }
        Ok(())
    }
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
        text
    }

    /// The Prometheus names and types, as client libraries in other languages export them.
    #[test]
    fn registers_the_standard_families() {
        let mut registry = Registry::default();
        register(&mut registry);
        let text = text(&registry);
        for family in [
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_virtual_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
        let sample = |name: &str| -> f64 {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .parse()
                .unwrap()
        };
        assert!(sample("process_resident_memory_bytes") > 0.0);
        assert!(sample("process_open_fds") > 0.0);
        assert!(sample("process_start_time_seconds") > 1.0e9);
    }

    /// Without `/proc` the registry still encodes, with no process series.
    #[test]
    fn without_proc_there_are_no_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector {
            dirs: ProcDirs {
                proc: dir.path().join("proc"),
                process: dir.path().join("proc/self"),
            },
        }));
        assert!(!text(&registry).contains("process_"), "{}", text(&registry));
    }
}
