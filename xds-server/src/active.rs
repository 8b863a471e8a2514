//! The configuration in force, as the subsystems that follow reloads receive it. Its own
//! module, above config and snapshot and below everything that follows it, so those
//! subsystems need not import the server that wires them.

use crate::{config::GatewayConfig, snapshot::Snapshot};

/// The configuration in force and its rendering, published to every ADS stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveConfig {
    pub config: GatewayConfig,
    pub snapshot: Snapshot,
}
