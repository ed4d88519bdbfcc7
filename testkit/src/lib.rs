//! Sluice test and demo kit.
