//! Sluice test and demo kit.

pub mod mock_upstream;
