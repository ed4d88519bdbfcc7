//! Which requests are traced, decided before any span exists.
//!
//! Left to the OpenTelemetry SDK, the decision is made on a span that is already built: every
//! request would pay for its spans (the tracing registry, the OpenTelemetry layer recording
//! each attribute, the JSON log layer formatting them) and at 10 % sampling nine in ten of
//! them would be thrown away. Measured with `bench/run`: 3.9× the CPU per JSON call with
//! export on. So the proxy reads `OTEL_TRACES_SAMPLER[_ARG]` itself, with the SDK's meaning,
//! decides from the client's `traceparent` and a random draw, and builds spans only for the
//! requests it keeps; the SDK is then told to keep every span it is given.

use std::sync::OnceLock;

use opentelemetry::trace::TraceId;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadSampler {
    /// A request that continues a client's trace is traced when the client's is
    /// (`parentbased_*`); otherwise the ratio decides for it too.
    follow_parent: bool,
    /// The share of requests traced, from 0 to 1.
    ratio: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error(
        "OTEL_TRACES_SAMPLER={0:?} is not supported: use always_on, always_off, traceidratio, \
         parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Unknown(String),
    #[error("OTEL_TRACES_SAMPLER_ARG={0:?} is not a ratio between 0 and 1 (e.g. 0.1)")]
    BadRatio(String),
}

/// The client's trace, as its `traceparent` says.
#[derive(Clone, Copy, Debug)]
pub struct Parent {
    pub trace_id: TraceId,
    pub sampled: bool,
}

static SAMPLER: OnceLock<HeadSampler> = OnceLock::new();

impl Default for HeadSampler {
    /// The SDK's default, `parentbased_always_on`: every request.
    fn default() -> Self {
        Self {
            follow_parent: true,
            ratio: 1.0,
        }
    }
}

impl HeadSampler {
    /// The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name; the SDK's default
    /// when the first is unset, and a ratio of 1 when a ratio sampler has no argument.
    pub fn from_env(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, SamplerError> {
        let ratio = || match arg {
            None => Ok(1.0),
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .ok_or_else(|| SamplerError::BadRatio(text.to_owned())),
        };
        let (follow_parent, ratio) = match sampler.map(str::trim) {
            None | Some("") | Some("parentbased_always_on") => (true, 1.0),
            Some("always_on") => (false, 1.0),
            Some("always_off") => (false, 0.0),
            Some("parentbased_always_off") => (true, 0.0),
            Some("traceidratio") => (false, ratio()?),
            Some("parentbased_traceidratio") => (true, ratio()?),
            Some(other) => return Err(SamplerError::Unknown(other.to_owned())),
        };
        Ok(Self {
            follow_parent,
            ratio,
        })
    }

    /// Makes this the sampler of every request in the process (the first call wins). This is
    /// what turns the proxy's request spans on: the binary installs a sampler when, and only
    /// when, it exports traces. Asking the subscriber instead (`tracing::enabled!`) walked the
    /// log filter's directives on every request: about 280 instructions.
    pub fn install(self) {
        let _ = SAMPLER.set(self);
    }

    /// The installed sampler: none while traces are not exported.
    pub fn installed() -> Option<Self> {
        SAMPLER.get().copied()
    }

    /// Whether to trace a request with this parent (or none).
    pub fn samples(&self, parent: Option<Parent>) -> bool {
        match parent {
            Some(parent) if self.follow_parent => parent.sampled,
            // As the SDK's `TraceIdRatioBased`: the same trace is kept or dropped by every
            // service that samples on its id at the same ratio.
            Some(parent) => self.keeps(trace_id_draw(parent.trace_id)),
            None => self.keeps(crate::random::draw::<u64>() >> 1),
        }
    }

    /// Whether a draw from `0..2^63` falls under the ratio.
    fn keeps(&self, draw: u64) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        let bound = (self.ratio.max(0.0) * (1u64 << 63) as f64) as u64;
        draw < bound
    }
}

/// The low 63 bits of the trace id's second half: the SDK's draw for a trace.
fn trace_id_draw(trace_id: TraceId) -> u64 {
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    u64::from_be_bytes(low) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(name: &str, arg: Option<&str>) -> HeadSampler {
        HeadSampler::from_env(Some(name), arg).unwrap()
    }

    fn parent(sampled: bool, low: u64) -> Option<Parent> {
        let mut bytes = [0u8; 16];
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        Some(Parent {
            trace_id: TraceId::from_bytes(bytes),
            sampled,
        })
    }

    #[test]
    fn reads_the_samplers_the_sdk_knows() {
        assert_eq!(
            HeadSampler::from_env(None, None).unwrap(),
            HeadSampler::default()
        );
        let always_off = sampler("always_off", None);
        assert!(!always_off.samples(None));
        assert!(!always_off.samples(parent(true, 0)), "ignores the parent");
        let always_on = sampler("always_on", None);
        assert!(always_on.samples(None));
        assert!(always_on.samples(parent(false, u64::MAX)));
        let follows = sampler("parentbased_always_off", None);
        assert!(!follows.samples(None));
        assert!(follows.samples(parent(true, u64::MAX)));
        assert!(!sampler("parentbased_always_on", None).samples(parent(false, 0)));
        assert_eq!(sampler(" traceidratio ", None).ratio, 1.0, "no argument: 1");
    }

    #[test]
    fn a_ratio_keeps_about_its_share_of_new_traces() {
        let tenth = sampler("parentbased_traceidratio", Some("0.1"));
        let kept = (0..100_000).filter(|_| tenth.samples(None)).count();
        assert!((9_000..11_000).contains(&kept), "{kept} of 100,000");
        assert!(
            tenth.samples(parent(true, u64::MAX)),
            "follows a sampled parent"
        );
        assert!(!tenth.samples(parent(false, 0)), "and an unsampled one");
    }

    #[test]
    fn traceidratio_decides_on_the_parents_trace_id_as_the_sdk_does() {
        let half = sampler("traceidratio", Some("0.5"));
        // The draw is the id's low 64 bits shifted right once, against 2^63 × ratio.
        assert!(half.samples(parent(false, (1 << 63) - 2)));
        assert!(!half.samples(parent(true, 1 << 63)));
        assert!(!sampler("traceidratio", Some("0")).samples(parent(true, 0)));
    }

    #[test]
    fn bad_samplers_and_ratios_are_refused_by_name() {
        assert_eq!(
            HeadSampler::from_env(Some("jaeger_remote"), None),
            Err(SamplerError::Unknown("jaeger_remote".into()))
        );
        for bad in ["", "lots", "1.5", "-0.1", "NaN"] {
            let error = HeadSampler::from_env(Some("traceidratio"), Some(bad)).unwrap_err();
            assert_eq!(error, SamplerError::BadRatio(bad.into()));
            assert!(
                error.to_string().contains("OTEL_TRACES_SAMPLER_ARG"),
                "{error}"
            );
        }
        assert!(
            HeadSampler::from_env(Some("always_on"), Some("lots")).is_ok(),
            "the argument only matters to ratio samplers"
        );
    }
}
