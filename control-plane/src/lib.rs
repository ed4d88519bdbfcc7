//! Sluice's control plane: the config store (Postgres or SQLite), the admin REST API, the admin
//! console and the fleet of proxies as they report.

pub mod admin;
mod admin_listener;
pub mod console;
mod database_health;
pub mod distribution;
pub mod fleet;
pub mod quota_usage;
pub mod server;
pub mod store;
pub mod tokens;

pub use server::{ControlPlane, ControlPlaneConfig, GrpcTls, StartError};
