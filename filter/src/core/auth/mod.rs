//! Caller authentication with JWTs: which issuer, which key, signature and registered claims
//! (jwt-simple; the signature optionally checked by the control service, `remote`), the tenant
//! context, a cache of verified tokens, and why a token is refused (`error`). Time is passed
//! in.

pub mod cache;
pub mod claims;
pub mod error;
pub mod keys;
pub mod policy;
pub mod remote;
pub mod token;

use std::collections::HashSet;
use std::rc::Rc;

use gateway_common::auth_config::JwtAuthentication;
use gateway_common::proto::IdentityKeys;
use jwt_simple::JWTError;
use jwt_simple::prelude::{Duration, UnixTimeStamp, VerificationOptions};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway_common::auth_config::Algorithm;

use cache::{TokenCache, TokenKey};
pub use claims::Identity;
pub use error::AuthError;
use keys::{KeyStore, Lookup};
pub use remote::{PendingCheck, Verdict};

/// The result of authenticating a request.
#[derive(Debug, Clone, PartialEq)]
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
    /// The token's signature goes to the control service (`check`); its verdict goes to
    /// [`Authenticator::signature_checked`].
    NeedSignature(Box<PendingCheck>),
}

/// Where a token's signature is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checking {
    /// Here (the verification budget is charged).
    Here,
    /// By the control service when it can (the budget is charged).
    Remote,
    /// Here, for a token whose remote check gave no verdict (already charged).
    HereCharged,
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
        self.authenticate_with(headers, now, may_refresh, false)
    }

    /// As [`Self::authenticate`]; with `remote`, the signature of an asymmetric token this
    /// worker has not verified yet is checked by the control service
    /// ([`Outcome::NeedSignature`]).
    pub fn authenticate_with(
        &mut self,
        headers: &[(String, Vec<u8>)],
        now: u64,
        may_refresh: bool,
        remote: bool,
    ) -> Outcome {
        let Some(token) = token::extract(&self.config, headers) else {
            return Outcome::Refused(AuthError::MissingToken);
        };
        if token.len() > self.max_token_bytes {
            return Outcome::Refused(AuthError::TooLarge);
        }
        let key = self.cache.key(token);
        if let Some(identity) = self.cache.get(&key, now) {
            return Outcome::Authenticated(identity);
        }
        let checking = if remote {
            Checking::Remote
        } else {
            Checking::Here
        };
        match self.verify(token, key, now, may_refresh, checking) {
            Ok((identity, valid_until)) => self.verified(key, identity, valid_until),
            Err(outcome) => outcome,
        }
    }

    /// The control service's verdict on a token's signature (`Failed`: none came).
    pub fn signature_checked(
        &mut self,
        pending: PendingCheck,
        verdict: Verdict,
        now: u64,
    ) -> Outcome {
        let here = |auth: &mut Self| match auth.verify(
            &pending.token,
            pending.cache_key,
            now,
            false,
            Checking::HereCharged,
        ) {
            Ok((identity, valid_until)) => auth.verified(pending.cache_key, identity, valid_until),
            Err(outcome) => outcome,
        };
        match verdict {
            // Keys that changed meanwhile may no longer have this key: check again here.
            Verdict::Valid if self.keys_version() != pending.keys_version => here(self),
            Verdict::Valid => match pending.if_valid {
                Ok((identity, valid_until)) => {
                    self.verified(pending.cache_key, identity, valid_until)
                }
                Err(error) => Outcome::Refused(error),
            },
            Verdict::Invalid => Outcome::Refused(AuthError::BadSignature),
            Verdict::Busy => Outcome::Refused(AuthError::Busy),
            Verdict::Unsupported | Verdict::Failed => here(self),
        }
    }

    fn verified(&mut self, key: TokenKey, identity: Identity, valid_until: u64) -> Outcome {
        let identity = Rc::new(identity);
        self.cache.insert(key, Rc::clone(&identity), valid_until);
        Outcome::Authenticated(identity)
    }

    fn verify(
        &mut self,
        token: &str,
        cache_key: TokenKey,
        now: u64,
        may_refresh: bool,
        checking: Checking,
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
        let (verifier, key) =
            match store.find(index, unverified.kid.as_deref(), unverified.algorithm) {
                Lookup::Found(verifier, key) => (verifier, key),
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
        if checking != Checking::HereCharged {
            if self.budget.0 != now {
                self.budget = (now, 0);
            }
            if self.budget.1 >= self.config.max_verifications_per_second {
                return Err(refuse(AuthError::Busy));
            }
            self.budget.1 += 1;
        }
        let skew = issuer.clock_skew_seconds;
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([issuer.issuer.clone()])),
            allowed_audiences: Some(issuer.audiences.iter().cloned().collect()),
            time_tolerance: Some(Duration::from_secs(skew)),
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            max_token_length: Some(issuer.max_token_bytes),
            ..VerificationOptions::default()
        };
        // jwt-simple's `salt` header member is checked by its MAC keys only: such a token is
        // verified here, where it is ignored as before.
        let remote = checking == Checking::Remote
            && unverified.algorithm != Algorithm::HS256
            && !unverified.salted;
        if remote {
            let (signing_input, signature) =
                token.rsplit_once('.').ok_or(refuse(AuthError::Malformed))?;
            let signature = URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| refuse(AuthError::Malformed))?;
            // The header is judged now, before the signature, as jwt-simple does; the claims
            // after it: a forged token is a bad signature whatever it claims.
            let if_valid = match remote::judge(
                unverified.algorithm,
                token,
                signing_input,
                &signature,
                options,
            ) {
                remote::Judged::Before(e) => return Err(refuse(classify(&e))),
                remote::Judged::After(claims) => match *claims {
                    Err(e) => Err(classify(&e)),
                    Ok(claims) => identity_of(issuer, &claims),
                },
            };
            let check =
                remote::signature_check(unverified.algorithm, key, signing_input, signature);
            return Err(Outcome::NeedSignature(Box::new(PendingCheck {
                check,
                token: token.to_string(),
                cache_key,
                keys_version: self.keys_version(),
                if_valid,
            })));
        }
        let claims = verifier
            .verify(token, options)
            .map_err(|e| refuse(classify(&e)))?;
        identity_of(issuer, &claims).map_err(refuse)
    }
}

/// The identity verified claims give, and until when they are accepted (`exp` plus the
/// issuer's clock skew).
fn identity_of(
    issuer: &gateway_common::auth_config::Issuer,
    claims: &keys::Claims,
) -> Result<(Identity, u64), AuthError> {
    let expires_at = claims
        .expires_at
        .map(|t| t.as_secs())
        .ok_or(AuthError::NoExpiry)?;
    let identity = claims::identity(issuer, claims, expires_at)?;
    Ok((
        identity,
        expires_at.saturating_add(issuer.clock_skew_seconds),
    ))
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
