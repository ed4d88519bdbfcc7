//! One module per `sluice` command: its flags (each with a `SLUICE_*` variable) and how it
//! starts the library pieces.

mod control_plane;
mod dev;
mod proxy;

pub use control_plane::ControlPlaneArgs;
pub use dev::DevArgs;
pub use proxy::ProxyArgs;

/// Reads a PEM file named by a flag, saying which flag when it cannot.
fn read_pem(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
}
