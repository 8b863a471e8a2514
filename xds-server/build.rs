//! Generates the tonic server (and a client, for tests and tools) of the control API from
//! `proto/bedrock_gateway/v1/control.proto`. The message types are gateway-common's, so the
//! filter and this server share one definition.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../proto";
    let proto = "bedrock_gateway/v1/control.proto";
    println!("cargo:rerun-if-changed={proto_dir}/{proto}");
    let descriptors = protox::compile([proto], [proto_dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".bedrock_gateway.v1", "::gateway_common::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
