//! Sluice test and demo kit.

pub mod azure;
pub mod mock_upstream;
pub mod otlp;
