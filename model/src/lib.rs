//! Sluice's config model: pools, backends, secret references and client keys.
//!
//! Both planes share these types. Every value that reaches a plane went through the same
//! validation whether it came from the admin API (JSON), a static file (YAML) or the config
//! stream (protobuf): newtypes check themselves on deserialisation, and the cross-field rules
//! live in one `validate` per aggregate.

mod backend;
mod client_key;
mod error;
pub mod exposition;
mod limits;
mod name;
mod pool;
mod proto_convert;
#[cfg(feature = "openapi")]
mod schema;
mod secret_ref;
mod snapshot;
pub mod windows;

pub use backend::{ApiVersion, Auth, Backend, BackendKind, BackendUrl, DeploymentName, Weight};
pub use client_key::{ClientKey, KeyHash, generate_client_secret};
pub use error::{FieldError, InvalidValue};
pub use limits::{
    Budget, Count, LimitEntry, LimitKind, LimitSet, Limits, MicroUsd, Period, Price, RequestRate,
    TokenCount, TokenQuota,
};
pub use name::Name;
pub use pool::{
    IdleTimeout, MaxAttempts, PerTryTimeout, Pool, RetryOn, RetryPolicy, RetryStatus, Strategy,
    TimeLimit,
};
pub use secret_ref::SecretRef;
pub use snapshot::Snapshot;

/// The generated protobuf types, re-exported so users of the model need no second import.
pub use sluice_proto::config::v1 as proto;
