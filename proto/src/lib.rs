//! Generated protobuf types and gRPC service for Sluice's config distribution.

/// `sluice.config.v1`: the config snapshot model and the `ConfigDiscovery` stream.
pub mod config {
    pub mod v1 {
        tonic::include_proto!("sluice.config.v1");
    }
}
