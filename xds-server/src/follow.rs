//! The tasks that apply each new configuration in force to the components that follow
//! reloads: the issuers' keys and the quotas; and the warning that `upstream.credentials`,
//! which does not follow reloads, changed. Apart from those components, so that they take
//! their settings as plain values and import neither the configuration nor its distribution.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    active::ActiveConfig,
    config::CredentialSettings,
    identity::manager::KeyManager,
    quota::engine::{HEALTH_INTERVAL, QuotaEngine},
};

/// Applies each new configuration's issuers until `shutdown`.
pub async fn follow_identity(
    manager: Arc<KeyManager>,
    config: watch::Receiver<Arc<ActiveConfig>>,
    shutdown: CancellationToken,
) {
    on_each_reload(config, shutdown, |active| {
        manager.apply(&active.config.identity)
    })
    .await;
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

/// Warns, at each reload until `shutdown`, while the file's `upstream.credentials` differs from
/// `started_with`: the credential source is built once, when xds-server starts, so the change
/// only applies after a restart. The rest of the reload applies as usual.
pub async fn warn_on_credentials_change(
    started_with: CredentialSettings,
    config: watch::Receiver<Arc<ActiveConfig>>,
    shutdown: CancellationToken,
) {
    on_each_reload(config, shutdown, |active| {
        let now = &active.config.upstream.credentials;
        if *now != started_with {
            warn!(
                in_force = started_with.source_name(),
                in_file = now.source_name(),
                "upstream.credentials changed: it applies only when xds-server restarts; signing goes on with the credentials source it started with"
            );
        }
    })
    .await;
}

/// Calls `apply` with each new configuration in force until `shutdown` or the publisher ends.
async fn on_each_reload(
    mut config: watch::Receiver<Arc<ActiveConfig>>,
    shutdown: CancellationToken,
    mut apply: impl FnMut(&ActiveConfig),
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                let active = Arc::clone(&config.borrow_and_update());
                apply(&active);
            }
        }
    }
}
