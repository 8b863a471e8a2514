//! The tasks that apply each new configuration in force to the components that follow
//! reloads: the issuers' keys and the quotas. Apart from those components, so that they take
//! their settings as plain values and import neither the configuration nor its distribution.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    active::ActiveConfig,
    identity::manager::KeyManager,
    quota::engine::{HEALTH_INTERVAL, QuotaEngine},
};

/// Applies each new configuration's issuers until `shutdown`.
pub async fn follow_identity(
    manager: Arc<KeyManager>,
    mut config: watch::Receiver<Arc<ActiveConfig>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                let sources = config.borrow_and_update().config.identity.clone();
                manager.apply(&sources);
            }
        }
    }
}

/// Applies each new configuration's quotas and checks the store's health until `shutdown`.
pub async fn follow_quotas(
    engine: Arc<QuotaEngine>,
    mut config: watch::Receiver<Arc<ActiveConfig>>,
    shutdown: CancellationToken,
) {
    let mut health = tokio::time::interval(HEALTH_INTERVAL);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = health.tick() => engine.check_health().await,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                let settings = config.borrow_and_update().config.quotas.clone();
                if let Err(error) = engine.apply(settings.as_ref()) {
                    warn!(%error, "cannot set up the new quota store; the previous quotas stay in force");
                }
            }
        }
    }
}
