//! The tonic server and client of the control API (`proto/bedrock_gateway/v1/control.proto`);
//! its messages are gateway-common's. In its own file rather than the crate root so that
//! control and server, which use it, do not import the root that re-exports server.
#![allow(clippy::all)]

tonic::include_proto!("bedrock_gateway.v1");
