//! Compiles the protobuf files with protox, a pure-Rust compiler, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "sluice/config/v1/config.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
