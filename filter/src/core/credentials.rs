//! The filter's cache of signing credentials and when to ask the control service again.
//! Time is passed in (unix seconds), so the schedule is tested without waiting.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::SystemTime;

use gateway_common::proto::SigningCredentials;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::prefix::{BLOCK, PrefixStates};
use super::schedule::Schedule;

/// Credentials are not used during their last seconds: a request signed now may reach AWS a
/// little later. (The control service refreshes them well before that.)
const EXPIRY_MARGIN_SECS: u64 = 5;

/// Credentials ready to sign with, and the signing key derived from them for the current day
/// (the derivation is four HMACs; it is done once a day, not on every request).
pub struct SigningIdentity {
    pub access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    /// Unix seconds; `None` for long-term credentials.
    pub expires_at: Option<u64>,
    signing_key: RefCell<Option<DerivedKey>>,
    /// What recent canonical requests hashed (they contain the session token).
    prefixes: RefCell<PrefixStates>,
}

/// A SigV4 signing key and what it was derived for, and the HMAC keyed with it (its inner and
/// outer key blocks already absorbed: each signature costs only its own blocks).
struct DerivedKey {
    date: String,
    region: String,
    service: String,
    key: Vec<u8>,
    mac: Hmac<Sha256>,
    /// The HMAC after the first block of the last string to sign (algorithm, time and scope
    /// come first: the same for every request of a second), and that block.
    first_block: Option<([u8; BLOCK], Hmac<Sha256>)>,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a control-service answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidCredentials {
    MissingKey,
    AlreadyExpired,
}

impl SigningIdentity {
    pub fn from_proto(message: SigningCredentials, now: u64) -> Result<Self, InvalidCredentials> {
        if message.access_key_id.is_empty() || message.secret_access_key.is_empty() {
            return Err(InvalidCredentials::MissingKey);
        }
        let expires_at = u64::try_from(message.expires_at_unix_seconds)
            .ok()
            .filter(|t| *t > 0);
        if expires_at.is_some_and(|t| t <= now + EXPIRY_MARGIN_SECS) {
            return Err(InvalidCredentials::AlreadyExpired);
        }
        Ok(Self {
            access_key_id: message.access_key_id,
            secret_access_key: message.secret_access_key,
            session_token: Some(message.session_token).filter(|t| !t.is_empty()),
            expires_at,
            signing_key: RefCell::new(None),
            prefixes: RefCell::default(),
        })
    }

    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    /// The SHA-256 of a canonical request, from the state of an earlier one that began alike.
    pub fn canonical_digest(&self, canonical: &[u8]) -> [u8; 32] {
        self.prefixes.borrow_mut().digest(canonical)
    }

    /// The SigV4 signing key for `date` (`YYYYMMDD` of `now`), region and service.
    pub fn signing_key(&self, date: &str, region: &str, service: &str, now: SystemTime) -> Vec<u8> {
        self.derived(date, region, service, now, |d| d.key.clone())
    }

    /// The HMAC-SHA256 of `string_to_sign` keyed with [`Self::signing_key`]. Its first block
    /// is absorbed once for every string to sign that begins with the same 64 bytes.
    pub fn sign_string(
        &self,
        date: &str,
        region: &str,
        service: &str,
        now: SystemTime,
        string_to_sign: &[u8],
    ) -> [u8; 32] {
        self.derived(date, region, service, now, |d| {
            let mac = match string_to_sign.split_first_chunk::<BLOCK>() {
                Some((first, rest)) => {
                    let mut mac = match &d.first_block {
                        Some((block, mac)) if block == first => mac.clone(),
                        _ => {
                            let mut mac = d.mac.clone();
                            mac.update(first);
                            d.first_block = Some((*first, mac.clone()));
                            mac
                        }
                    };
                    mac.update(rest);
                    mac
                }
                None => {
                    let mut mac = d.mac.clone();
                    mac.update(string_to_sign);
                    mac
                }
            };
            mac.finalize().into_bytes().into()
        })
    }

    fn derived<T>(
        &self,
        date: &str,
        region: &str,
        service: &str,
        now: SystemTime,
        take: impl FnOnce(&mut DerivedKey) -> T,
    ) -> T {
        let mut cached = self.signing_key.borrow_mut();
        if let Some(derived) = cached.as_mut()
            && derived.date == date
            && derived.region == region
            && derived.service == service
        {
            return take(derived);
        }
        let key = aws_sigv4::sign::v4::generate_signing_key(
            &self.secret_access_key,
            now,
            region,
            service,
        )
        .as_ref()
        .to_vec();
        // HMAC takes a key of any length: the fallback is never taken.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        let derived = cached.insert(DerivedKey {
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            key,
            mac,
            first_block: None,
        });
        take(derived)
    }

    fn usable_at(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|t| now + EXPIRY_MARGIN_SECS < t)
    }
}

/// The current credentials, if any, and the refresh schedule.
#[derive(Debug, Default)]
pub struct CredentialCache {
    current: Option<Rc<SigningIdentity>>,
    schedule: Schedule,
}

impl CredentialCache {
    /// Credentials to sign with now, if valid.
    pub fn usable(&self, now: u64) -> Option<&Rc<SigningIdentity>> {
        self.current.as_ref().filter(|c| c.usable_at(now))
    }

    /// Whether to ask the control service now (nothing is already being asked).
    pub fn refresh_due(&self, now: u64) -> bool {
        !self.schedule.in_flight() && (self.schedule.due(now) || self.usable(now).is_none())
    }

    pub fn refresh_started(&mut self) {
        self.schedule.started();
    }

    /// The control service answered. `default_refresh_secs` applies when it gave no hint.
    pub fn refreshed(
        &mut self,
        message: SigningCredentials,
        now: u64,
        default_refresh_secs: u64,
    ) -> Result<(), InvalidCredentials> {
        let hint = u64::from(message.refresh_after_seconds);
        match SigningIdentity::from_proto(message, now) {
            Ok(identity) => {
                let mut after = if hint > 0 { hint } else { default_refresh_secs };
                if let Some(expires_at) = identity.expires_at {
                    // Ask again well before expiry even if told otherwise.
                    after = after.min((expires_at - now) / 2).max(1);
                }
                self.current = Some(Rc::new(identity));
                self.schedule.succeeded(now, after);
                Ok(())
            }
            Err(e) => {
                self.failed(now);
                Err(e)
            }
        }
    }

    /// The call failed or could not be made; keep the current credentials (until they expire)
    /// and retry with backoff.
    pub fn failed(&mut self, now: u64) {
        self.schedule.failed(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(expires_at: i64, refresh_after: u32) -> SigningCredentials {
        SigningCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expires_at_unix_seconds: expires_at,
            refresh_after_seconds: refresh_after,
        }
    }

    #[test]
    fn empty_cache_is_due_and_unusable() {
        let cache = CredentialCache::default();
        assert!(cache.refresh_due(1000));
        assert!(cache.usable(1000).is_none());
    }

    #[test]
    fn follows_server_hint_but_refreshes_before_expiry() {
        let mut cache = CredentialCache::default();
        cache.refresh_started();
        assert!(!cache.refresh_due(1000), "one call at a time");
        cache.refreshed(message(1000 + 100, 600), 1000, 60).unwrap();
        assert!(cache.usable(1000).is_some());
        assert!(!cache.refresh_due(1049));
        assert!(cache.refresh_due(1050), "half the remaining lifetime");
        // Long-term credentials: the hint, or the default without one.
        cache.refreshed(message(0, 0), 2000, 60).unwrap();
        assert!(!cache.refresh_due(2059));
        assert!(cache.refresh_due(2060));
        assert!(cache.usable(1_000_000).is_some());
    }

    #[test]
    fn keeps_credentials_through_failures_until_expiry() {
        let mut cache = CredentialCache::default();
        cache.refreshed(message(1000 + 300, 10), 1000, 60).unwrap();
        for (i, expected_delay) in [1, 2, 4, 8, 16, 30, 30].into_iter().enumerate() {
            let now = 1010 + i as u64;
            cache.refresh_started();
            cache.failed(now);
            assert!(!cache.refresh_due(now + expected_delay - 1));
            assert!(cache.refresh_due(now + expected_delay));
            assert!(cache.usable(now).is_some());
        }
        assert!(cache.usable(1300 - EXPIRY_MARGIN_SECS - 1).is_some());
        assert!(cache.usable(1300 - EXPIRY_MARGIN_SECS).is_none());
        assert!(
            cache.refresh_due(1300 - EXPIRY_MARGIN_SECS),
            "expired credentials are refreshed at once"
        );
    }

    #[test]
    fn rejects_unusable_answers() {
        let mut cache = CredentialCache::default();
        let mut empty = message(0, 0);
        empty.secret_access_key.clear();
        assert_eq!(
            cache.refreshed(empty, 1000, 60),
            Err(InvalidCredentials::MissingKey)
        );
        assert_eq!(
            cache.refreshed(message(1004, 0), 1000, 60),
            Err(InvalidCredentials::AlreadyExpired)
        );
        assert!(cache.usable(1000).is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let identity = SigningIdentity::from_proto(message(0, 0), 0).unwrap();
        let shown = format!("{identity:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("token"),
            "{shown}"
        );
        assert!(shown.contains("ASIAEXAMPLE"));
    }
}
