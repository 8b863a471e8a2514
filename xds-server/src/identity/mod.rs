//! The keys that verify callers' tokens. Each `jwt` issuer of the configuration has one key
//! source ([`KeySource`]); the [`manager::KeyManager`] reads them (one refresh task per
//! issuer, in `entry`), keeps them fresh and hands them to the filter over `GetIdentityKeys`. Pure parts: JWK conversion ([`jwk`]), the
//! refresh schedule ([`schedule`]), token minting ([`mint`]); IO: [`fetch`], [`dev_key`].

pub mod dev_key;
mod entry;
pub mod fetch;
pub mod jwk;
pub mod key;
pub mod manager;
pub mod mint;
pub mod schedule;
pub mod signatures;
pub mod source;

pub use key::{Curve, KeyMaterial, VerifyingKey};
pub use manager::KeyManager;
pub use source::{IssuerKeySource, KeySource};
