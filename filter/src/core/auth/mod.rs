//! Caller authentication with JWTs: which issuer, which key, signature and registered claims
//! (jwt-simple), the tenant context, a cache of verified tokens, and why a token is refused
//! (`error`). Time is passed in.

pub mod cache;
pub mod claims;
pub mod error;
pub mod keys;
pub mod policy;
pub mod token;

use std::collections::HashSet;
use std::rc::Rc;

use gateway_common::auth_config::JwtAuthentication;
use gateway_common::proto::IdentityKeys;
use jwt_simple::JWTError;
use jwt_simple::prelude::{Duration, UnixTimeStamp, VerificationOptions};

use cache::{TokenCache, token_key};
pub use claims::Identity;
pub use error::AuthError;
use keys::{KeyStore, Lookup};

/// The result of authenticating a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Authenticated(Rc<Identity>),
    /// Keys are needed before the token can be checked: issuer `issuer` (index in the
    /// configuration) has no key `kid`, or (`kid` `None`) no keys have arrived yet. Ask the
    /// control service (one lookup per issuer at a time: requests needing the same one wait
    /// for it), then authenticate again without refreshing.
    NeedKeys {
        issuer: usize,
        kid: Option<String>,
    },
    Refused(AuthError),
}

pub struct Authenticator {
    pub config: JwtAuthentication,
    keys: Option<KeyStore>,
    cache: TokenCache,
    /// Per issuer: until when (unix seconds) unknown kids are refused without asking, after a
    /// lookup for one of them was answered.
    quiet_until: Vec<u64>,
    max_token_bytes: usize,
    /// Verifications in the second `budget.0`.
    budget: (u64, u32),
}

impl Authenticator {
    pub fn new(config: JwtAuthentication) -> Self {
        let max_token_bytes = config
            .issuers
            .iter()
            .map(|i| i.max_token_bytes)
            .max()
            .unwrap_or_default();
        Self {
            cache: TokenCache::new(config.cache_max_entries),
            quiet_until: vec![0; config.issuers.len()],
            keys: None,
            max_token_bytes,
            budget: (0, 0),
            config,
        }
    }

    pub fn keys_version(&self) -> Option<u64> {
        self.keys.as_ref().map(|k| k.version)
    }

    /// Verified tokens in the cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    pub fn key_count(&self) -> usize {
        self.keys.as_ref().map_or(0, KeyStore::key_count)
    }

    /// Installs keys from the control service. A new version drops every cached
    /// verification. Returns descriptions of keys that could not be used.
    pub fn set_keys(&mut self, message: &IdentityKeys) -> Vec<String> {
        if self.keys_version() == Some(message.version) {
            return Vec::new();
        }
        let (store, skipped) = KeyStore::build(&self.config, message);
        self.keys = Some(store);
        self.cache.clear();
        skipped
    }

    /// A key lookup for `issuer` (index) was answered (or gave up) at `now`: further unknown
    /// kids of that issuer are refused without asking for `unknown_kid_refresh_seconds`.
    pub fn lookup_done(&mut self, issuer: usize, now: u64) {
        if let Some(until) = self.quiet_until.get_mut(issuer) {
            *until = now.saturating_add(self.config.unknown_kid_refresh_seconds);
        }
    }

    /// Authenticates the request carrying `headers` at `now` (unix seconds). With
    /// `may_refresh`, an unknown key id answers `NeedKeys` unless a lookup for its issuer was
    /// answered within `unknown_kid_refresh_seconds`: whatever a caller sends, a worker asks
    /// the control service about unknown kids at most once per issuer in that time.
    pub fn authenticate(
        &mut self,
        headers: &[(String, Vec<u8>)],
        now: u64,
        may_refresh: bool,
    ) -> Outcome {
        let Some(token) = token::extract(&self.config, headers) else {
            return Outcome::Refused(AuthError::MissingToken);
        };
        if token.len() > self.max_token_bytes {
            return Outcome::Refused(AuthError::TooLarge);
        }
        let key = token_key(token);
        if let Some(identity) = self.cache.get(&key, now) {
            return Outcome::Authenticated(identity);
        }
        match self.verify(token, now, may_refresh) {
            Ok((identity, valid_until)) => {
                let identity = Rc::new(identity);
                self.cache.insert(key, Rc::clone(&identity), valid_until);
                Outcome::Authenticated(identity)
            }
            Err(outcome) => outcome,
        }
    }

    fn verify(
        &mut self,
        token: &str,
        now: u64,
        may_refresh: bool,
    ) -> Result<(Identity, u64), Outcome> {
        let refuse = |e: AuthError| Outcome::Refused(e);
        let unverified = token::inspect(token, self.max_token_bytes).map_err(refuse)?;
        let index = self
            .config
            .issuers
            .iter()
            .position(|i| i.issuer == unverified.issuer)
            .ok_or(refuse(AuthError::UnknownIssuer))?;
        let issuer = &self.config.issuers[index];
        if token.len() > issuer.max_token_bytes {
            return Err(refuse(AuthError::TooLarge));
        }
        if !issuer.algorithms.contains(&unverified.algorithm) {
            return Err(refuse(AuthError::AlgorithmNotAllowed));
        }
        let Some(store) = self.keys.as_ref() else {
            // Keys not fetched yet (a fresh worker or a reloaded configuration): wait for them.
            return Err(if may_refresh {
                Outcome::NeedKeys {
                    issuer: index,
                    kid: None,
                }
            } else {
                refuse(AuthError::NoKeys)
            });
        };
        let verifier = match store.find(index, unverified.kid.as_deref(), unverified.algorithm) {
            Lookup::Found(verifier) => verifier,
            Lookup::UnknownKey => {
                return Err(match unverified.kid {
                    Some(kid) if may_refresh && now >= self.quiet_until[index] => {
                        Outcome::NeedKeys {
                            issuer: index,
                            kid: Some(kid),
                        }
                    }
                    _ => refuse(AuthError::UnknownKey),
                });
            }
        };
        if self.budget.0 != now {
            self.budget = (now, 0);
        }
        if self.budget.1 >= self.config.max_verifications_per_second {
            return Err(refuse(AuthError::Busy));
        }
        self.budget.1 += 1;
        let skew = issuer.clock_skew_seconds;
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([issuer.issuer.clone()])),
            allowed_audiences: Some(issuer.audiences.iter().cloned().collect()),
            time_tolerance: Some(Duration::from_secs(skew)),
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            max_token_length: Some(issuer.max_token_bytes),
            ..VerificationOptions::default()
        };
        let claims = verifier
            .verify(token, options)
            .map_err(|e| refuse(classify(&e)))?;
        let expires_at = claims
            .expires_at
            .map(|t| t.as_secs())
            .ok_or(refuse(AuthError::NoExpiry))?;
        let identity = claims::identity(issuer, &claims, expires_at).map_err(refuse)?;
        Ok((identity, expires_at.saturating_add(skew)))
    }
}

fn classify(error: &jwt_simple::Error) -> AuthError {
    match error.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature | JWTError::InvalidAuthenticationTag) => {
            AuthError::BadSignature
        }
        Some(JWTError::TokenHasExpired | JWTError::TokenIsTooOld) => AuthError::Expired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => AuthError::NotYetValid,
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => {
            AuthError::WrongAudience
        }
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => {
            AuthError::UnknownIssuer
        }
        Some(JWTError::AlgorithmMismatch) => AuthError::AlgorithmNotAllowed,
        Some(JWTError::TokenTooLong | JWTError::HeaderTooLarge) => AuthError::TooLarge,
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests;
