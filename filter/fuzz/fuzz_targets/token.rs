//! Caller tokens: `auth::token::inspect` and a whole `Authenticator::authenticate` with real
//! keys (RSA, P-256, Ed25519, an HS256 secret) for two issuers, the input as
//! `authorization: Bearer <input>` and in the partner issuer's own header. Whatever the token,
//! the authenticator answers the same way twice, accepts only what inspection could read,
//! never asks for keys when it may not, and answers the same with its signatures checked by
//! the control service.

#![no_main]

use std::sync::LazyLock;

use bedrock_gateway_filter::core::auth::token::inspect;
use bedrock_gateway_filter::core::auth::{AuthError, Authenticator, Outcome, Verdict};
use bedrock_gateway_filter_fuzz::{NOW, PARTNER_HEADER, identity_keys, jwt_config};
use gateway_common::auth_config::{JwtAuthentication, glob_matches};
use gateway_common::proto::IdentityKeys;
use libfuzzer_sys::fuzz_target;

static FIXTURE: LazyLock<(JwtAuthentication, IdentityKeys)> =
    LazyLock::new(|| (jwt_config(), identity_keys()));

fn authenticator() -> Authenticator {
    let (config, keys) = &*FIXTURE;
    let mut auth = Authenticator::new(config.clone());
    let skipped = auth.set_keys(keys);
    assert!(skipped.is_empty(), "fixture keys skipped: {skipped:?}");
    auth
}

fn header(name: &str, prefix: &[u8], data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut value = prefix.to_vec();
    value.extend_from_slice(data);
    vec![(name.to_string(), value)]
}

fn check_accepted(outcome: &Outcome, token: Option<&str>) {
    let Outcome::Authenticated(identity) = outcome else {
        return;
    };
    let token = token.unwrap_or_else(|| panic!("accepted a token that is not UTF-8"));
    let unverified = inspect(token, usize::MAX)
        .unwrap_or_else(|e| panic!("accepted a token inspection refuses ({e:?}): {token:?}"));
    let (config, _) = &*FIXTURE;
    let issuer = config
        .issuers
        .iter()
        .find(|i| i.issuer == unverified.issuer)
        .unwrap_or_else(|| panic!("accepted a token of unknown issuer {:?}", unverified.issuer));
    assert_eq!(identity.issuer, issuer.name);
    assert!(issuer.algorithms.contains(&unverified.algorithm));
    assert!(!identity.tenant.is_empty());
    assert!(
        identity
            .expires_at
            .saturating_add(issuer.clock_skew_seconds)
            >= NOW
    );
    if let Some(tenants) = &issuer.tenants {
        assert!(tenants.iter().any(|p| glob_matches(p, &identity.tenant)));
    }
    if let Some(roles) = &issuer.roles {
        for role in &identity.roles {
            assert!(roles.iter().any(|p| glob_matches(p, role)), "role {role:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let token = std::str::from_utf8(data).ok();
    if let Some(token) = token {
        for max in [16, 8192] {
            let inspected = inspect(token, max);
            if token.len() > max {
                assert_eq!(inspected, Err(AuthError::TooLarge));
            }
        }
    }

    let bearer = header("authorization", b"Bearer ", data);
    let mut auth = authenticator();
    let first = auth.authenticate(&bearer, NOW, true);
    check_accepted(&first, token.map(str::trim));
    // Again: from the cache when accepted, verified the same way otherwise.
    assert_eq!(auth.authenticate(&bearer, NOW, true), first);

    // The same token in the partner's header reads the same (when there is one to read).
    if token.is_some_and(|t| !t.trim().is_empty()) {
        let partner = header(PARTNER_HEADER, b"Token ", data);
        assert_eq!(auth.authenticate(&partner, NOW, true), first);
    }

    // Signatures checked by the control service: without its verdict the token is verified
    // here, to the same outcome; a token verified here is accepted, the same, once the
    // service calls its signature valid.
    let remotely = |verdict: Verdict| {
        let mut auth = authenticator();
        match auth.authenticate_with(&bearer, NOW, true, true) {
            Outcome::NeedSignature(pending) => auth.signature_checked(*pending, verdict, NOW),
            other => other,
        }
    };
    assert_eq!(remotely(Verdict::Failed), first);
    if matches!(first, Outcome::Authenticated(_)) {
        assert_eq!(remotely(Verdict::Valid), first);
    }

    // A worker that may not ask for keys never does.
    let mut fresh = authenticator();
    let outcome = fresh.authenticate(&bearer, NOW, false);
    assert!(!matches!(outcome, Outcome::NeedKeys { .. }), "{outcome:?}");
    check_accepted(&outcome, token.map(str::trim));
});
