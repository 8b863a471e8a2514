//! Generates the prost message types of the control API from `proto/` with a
//! pure-Rust protobuf compiler, so no `protoc` is needed on the build machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../proto";
    let file = "bedrock_gateway/v1/control.proto";
    println!("cargo:rerun-if-changed={proto_root}/{file}");
    let descriptors = protox::compile([file], [proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
