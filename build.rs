//! Generates the Rust types of `proto/event.proto` with prost, compiling the schema with protox (pure Rust), so no
//! system `protoc` is needed to build Vigil.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/event.proto");
    let descriptors = protox::compile(["proto/event.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
