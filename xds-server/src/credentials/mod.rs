//! The AWS credentials the filter signs upstream requests with. They never appear in Envoy's
//! configuration nor in logs: [`refresher`] keeps the current ones in memory and [`grpc`]
//! hands them to the filter over the control API.

pub mod aws;
pub mod configured;
pub mod grpc;
pub mod refresher;
pub mod source;

pub use configured::configured_source;
pub use refresher::CredentialStore;
pub use source::{
    CredentialSource, Credentials, CredentialsError, FetchFuture, StaticCredentialSource,
};
