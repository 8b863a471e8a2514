//! Asking the control service for what every request of a worker needs, signing credentials
//! and token keys, and storing its answers. Requests that need the same thing wait for the one
//! lookup in flight (`lookups`); the root context wakes them when it is over.

use gateway_common::names::{CONTROL_SERVICE, GET_IDENTITY_KEYS, GET_SIGNING_CREDENTIALS};
use gateway_common::proto::{
    GetIdentityKeysRequest, GetSigningCredentialsRequest, IdentityKeys, SigningCredentials,
};
use log::{debug, info, warn};
use prost::Message;

use super::grpc::{self, unix_now};
use super::lookups::Want;
use super::request::Handle;
use super::shared::Shared;

impl Shared<Handle> {
    pub(super) fn ask_for_credentials(&self, now: u64) -> Result<u32, String> {
        let current = self
            .credentials
            .borrow()
            .usable(now)
            .map(|c| c.access_key_id.clone())
            .unwrap_or_default();
        let request = GetSigningCredentialsRequest {
            node_id: self.node_id.clone(),
            current_access_key_id: current,
        };
        self.call(GET_SIGNING_CREDENTIALS, &request.encode_to_vec())
    }

    pub(super) fn ask_for_keys(&self, unknown: Option<(String, String)>) -> Result<u32, String> {
        let (issuer, kid) = unknown.unwrap_or_default();
        let request = GetIdentityKeysRequest {
            node_id: self.node_id.clone(),
            unknown_kid_issuer: issuer,
            unknown_kid: kid,
        };
        self.call(GET_IDENTITY_KEYS, &request.encode_to_vec())
    }

    /// A request needs keys (of `issuer` with no key `kid`, or any keys when `kid` is
    /// `None`): it waits for the lookup in flight for the same thing, or starts one. The
    /// token of a call it started is returned (its answer reaches that request).
    pub(super) fn need_keys(
        &self,
        issuer: usize,
        kid: Option<String>,
        handle: &Handle,
        now_ms: u64,
    ) -> Result<Option<u32>, String> {
        let want = if kid.is_some() {
            Want::IssuerKeys(issuer)
        } else {
            Want::AnyKeys
        };
        self.need(want, handle, now_ms, || {
            let unknown = kid.and_then(|kid| {
                let auth = self.auth.as_ref()?.borrow();
                Some((auth.config.issuers.get(issuer)?.issuer.clone(), kid))
            });
            self.ask_for_keys(unknown)
        })
    }

    /// A request needs signing credentials: it waits for the lookup in flight, or starts
    /// one (its token is returned).
    pub(super) fn need_credentials(
        &self,
        handle: &Handle,
        now_ms: u64,
    ) -> Result<Option<u32>, String> {
        self.need(Want::Credentials, handle, now_ms, || {
            self.ask_for_credentials(unix_now())
        })
    }

    fn need(
        &self,
        want: Want,
        handle: &Handle,
        now_ms: u64,
        call: impl FnOnce() -> Result<u32, String>,
    ) -> Result<Option<u32>, String> {
        let token = if self.lookups.borrow().in_flight(want) {
            None
        } else {
            let token = call()?;
            self.lookup_started(token, want, now_ms);
            Some(token)
        };
        self.lookups.borrow_mut().wait(want, handle.clone());
        Ok(token)
    }

    pub(super) fn lookup_started(&self, token: u32, want: Want, now_ms: u64) {
        let deadline = now_ms.saturating_add(self.gateway.config.control.timeout_ms);
        self.lookups.borrow_mut().started(token, want, deadline);
    }

    /// A key lookup was answered: the keys are stored, and further unknown kids of the issuer
    /// it was for are refused without asking for a while.
    pub(super) fn keys_answered(&self, token: u32, status_code: u32, size: usize) {
        self.store_keys(status_code, size);
        let want = self.lookups.borrow_mut().answered(token);
        if let (Some(Want::IssuerKeys(issuer)), Some(auth)) = (want, &self.auth) {
            auth.borrow_mut().lookup_done(issuer, unix_now());
        }
    }

    /// A credentials lookup was answered.
    pub(super) fn credentials_answered(&self, token: u32, status_code: u32, size: usize) {
        self.store_credentials(status_code, size);
        self.lookups.borrow_mut().answered(token);
    }

    /// Gives up lookups past their deadline and hands every request whose lookup is over
    /// back to its way. Only from a root context callback.
    pub(super) fn wake_waiters(&self, now_ms: u64) {
        let (expired, ready) = self.lookups.borrow_mut().due(now_ms, Handle::alive);
        for want in expired {
            match (want, &self.auth) {
                (Want::IssuerKeys(issuer), Some(auth)) => {
                    auth.borrow_mut().lookup_done(issuer, unix_now());
                }
                (Want::Credentials, _) => self.credentials.borrow_mut().failed(unix_now()),
                _ => {}
            }
        }
        for handle in ready {
            handle.deliver(self, |state| state.lookup_over(self));
        }
    }

    /// The id of the next usage report batch.
    pub(super) fn call(&self, method: &str, message: &[u8]) -> Result<u32, String> {
        let control = &self.gateway.config.control;
        grpc::call(
            &control.cluster,
            CONTROL_SERVICE,
            method,
            message,
            control.timeout_ms,
        )
    }

    /// Reads a credentials answer into the cache (or records the failure).
    pub(super) fn store_credentials(&self, status_code: u32, size: usize) {
        let now = unix_now();
        let mut cache = self.credentials.borrow_mut();
        match grpc::answer::<SigningCredentials>(status_code, size) {
            Ok(message) => {
                let key = message.access_key_id.clone();
                let default_refresh = self.gateway.config.control.credentials_refresh_seconds;
                match cache.refreshed(message, now, default_refresh) {
                    Ok(()) => debug!("signing credentials refreshed ({key})"),
                    Err(e) => warn!("the control service sent unusable credentials: {e:?}"),
                }
            }
            Err(e) => {
                warn!("credentials refresh failed: {e}");
                cache.failed(now);
            }
        }
    }

    /// Reads a keys answer into the authenticator (or records the failure).
    pub(super) fn store_keys(&self, status_code: u32, size: usize) {
        let Some(auth) = &self.auth else { return };
        let now = unix_now();
        let mut schedule = self.keys_schedule.borrow_mut();
        match grpc::answer::<IdentityKeys>(status_code, size) {
            Ok(message) => {
                let mut auth = auth.borrow_mut();
                let changed = auth.keys_version() != Some(message.version);
                for skipped in auth.set_keys(&message) {
                    warn!("{skipped}");
                }
                if changed {
                    info!(
                        "token verification keys updated: {} keys (version {})",
                        auth.key_count(),
                        message.version
                    );
                }
                let after = match message.refresh_after_seconds {
                    0 => auth.config.keys_refresh_seconds,
                    hint => u64::from(hint),
                };
                schedule.succeeded(now, after);
            }
            Err(e) => {
                warn!("keys refresh failed: {e}");
                schedule.failed(now);
            }
        }
    }
}
