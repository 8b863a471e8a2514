//! Tokens of every supported algorithm, signed for real with jwt-simple, against the
//! authenticator; and every way a token must be refused.

use super::*;
use gateway_common::auth_config::{Algorithm, ClaimMapping, Issuer};
use gateway_common::proto::{IssuerKeys, VerificationKey};
use jwt_simple::prelude::*;
use serde_json::json;

const ISS: &str = "https://idp.example.com";
const NOW: u64 = 1_800_000_000;

fn issuer(algorithms: &[Algorithm]) -> Issuer {
    Issuer {
        name: "corp".into(),
        issuer: ISS.into(),
        audiences: vec!["bedrock-gateway".into(), "other".into()],
        algorithms: algorithms.to_vec(),
        token_header: None,
        claims: ClaimMapping {
            tenant: "custom:tenant".into(),
            ..ClaimMapping::default()
        },
        required_claims: vec![],
        clock_skew_seconds: 30,
        max_token_bytes: 8192,
        tenants: None,
        roles: None,
    }
}

fn config(issuers: Vec<Issuer>) -> JwtAuthentication {
    JwtAuthentication {
        issuers,
        access: Default::default(),
        cache_max_entries: 100,
        unknown_kid_refresh_seconds: 10,
        keys_refresh_seconds: 60,
        max_verifications_per_second: 1000,
        signature_checks: Default::default(),
    }
}

fn rsa_pair() -> RS256KeyPair {
    RS256KeyPair::from_pem(include_str!("testdata/rsa-2048.pem")).unwrap()
}

fn rsa_key(kid: &str) -> VerificationKey {
    let components = rsa_pair().public_key().to_components();
    VerificationKey {
        kid: kid.into(),
        kty: "RSA".into(),
        n: components.n,
        e: components.e,
        ..Default::default()
    }
}

fn ec_key(kid: &str, crv: &str, uncompressed: Vec<u8>) -> VerificationKey {
    let half = (uncompressed.len() - 1) / 2;
    VerificationKey {
        kid: kid.into(),
        kty: "EC".into(),
        crv: crv.into(),
        x: uncompressed[1..1 + half].to_vec(),
        y: uncompressed[1 + half..].to_vec(),
        ..Default::default()
    }
}

fn keys(version: u64, keys: Vec<VerificationKey>) -> IdentityKeys {
    IdentityKeys {
        version,
        issuers: vec![IssuerKeys {
            issuer: ISS.into(),
            keys,
        }],
        refresh_after_seconds: 60,
    }
}

fn claims(extra: serde_json::Value) -> JWTClaims<serde_json::Value> {
    Claims::with_custom_claims(extra, Duration::from_secs(3600))
        .with_issuer(ISS)
        .with_audience("bedrock-gateway")
        .with_subject("alice")
}

fn at(mut c: JWTClaims<serde_json::Value>, issued: u64) -> JWTClaims<serde_json::Value> {
    c.issued_at = Some(UnixTimeStamp::from_secs(issued));
    c.invalid_before = Some(UnixTimeStamp::from_secs(issued));
    c.expires_at = Some(UnixTimeStamp::from_secs(issued + 3600));
    c
}

fn tenant() -> JWTClaims<serde_json::Value> {
    at(claims(json!({"custom:tenant": "team-a"})), NOW)
}

fn bearer(token: &str) -> Vec<(String, Vec<u8>)> {
    vec![(
        "authorization".into(),
        format!("Bearer {token}").into_bytes(),
    )]
}

fn check(auth: &mut Authenticator, token: &str) -> Outcome {
    authenticate(auth, &bearer(token), NOW, true)
}

thread_local! {
    /// The test runs with signatures checked by the "control service" ([`oracle`]).
    static REMOTE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Authenticates as the filter would, with the signature checked remotely when the test
/// runs so: every test of this file then holds for both ways of checking.
fn authenticate(
    auth: &mut Authenticator,
    headers: &[(String, Vec<u8>)],
    now: u64,
    may_refresh: bool,
) -> Outcome {
    if !REMOTE.get() {
        return auth.authenticate(headers, now, may_refresh);
    }
    match auth.authenticate_with(headers, now, may_refresh, true) {
        Outcome::NeedSignature(pending) => {
            let verdict = oracle(&pending);
            auth.signature_checked(*pending, verdict, now)
        }
        other => other,
    }
}

/// The control service's verdict on a check, from an independent verification of the
/// signature alone (jwt-simple with the check's key, accepting any claims and times).
fn oracle(pending: &PendingCheck) -> Verdict {
    let check = &pending.check;
    let algorithm = Algorithm::from_name(&check.algorithm).expect("an algorithm");
    let key = check.key.as_ref().expect("a key");
    let verifier = keys::verifier(key, algorithm).expect("the key fits the algorithm");
    // Whatever the token's times, this is within them.
    let options = VerificationOptions {
        artificial_time: Some(UnixTimeStamp::from_secs(2_000_000_000)),
        time_tolerance: Some(Duration::from_secs(1_999_999_999)),
        ..VerificationOptions::default()
    };
    let (input, _) = pending.token.rsplit_once('.').unwrap();
    assert_eq!(check.signing_input, input.as_bytes());
    // jwt-simple checks the signature before the claims: anything it refuses after (claims
    // that do not even parse) had a valid signature.
    match verifier.verify(&pending.token, options) {
        Err(e)
            if matches!(
                e.downcast_ref::<JWTError>(),
                Some(JWTError::InvalidSignature)
            ) =>
        {
            Verdict::Invalid
        }
        _ => Verdict::Valid,
    }
}

/// Each test of this file again, with signatures checked remotely.
macro_rules! remotely {
    ($($test:ident),* $(,)?) => {
        mod remotely {
            $(
                #[test]
                fn $test() {
                    super::REMOTE.set(true);
                    super::$test();
                }
            )*
        }
    };
}

remotely!(
    every_algorithm_family_is_accepted,
    bad_tokens_are_refused_for_the_right_reason,
    algorithm_confusion_with_hs256_allowed_still_fails,
    unknown_kids_ask_for_keys_at_a_bounded_rate,
    cache_honours_expiry_and_key_removal,
    verifications_per_second_are_bounded_but_cached_tokens_pass,
    no_keys_yet,
    negative_timestamps_are_refused_even_when_signed,
);

fn tenant_of(outcome: Outcome) -> String {
    match outcome {
        Outcome::Authenticated(identity) => identity.tenant.clone(),
        other => panic!("not authenticated: {other:?}"),
    }
}

#[test]
fn every_algorithm_family_is_accepted() {
    let rsa = rsa_pair();
    let es256 = ES256KeyPair::generate();
    let es384 = ES384KeyPair::generate();
    let ed = Ed25519KeyPair::generate();
    let hs = HS256Key::from_bytes(b"0123456789abcdef0123456789abcdef-dev");
    let mut all = Algorithm::ASYMMETRIC.to_vec();
    all.push(Algorithm::HS256);
    let mut auth = Authenticator::new(config(vec![issuer(&all)]));
    auth.set_keys(&keys(
        1,
        vec![
            rsa_key("rsa"),
            ec_key(
                "p256",
                "P-256",
                es256.public_key().public_key().to_bytes_uncompressed(),
            ),
            ec_key(
                "p384",
                "P-384",
                es384.public_key().public_key().to_bytes_uncompressed(),
            ),
            VerificationKey {
                kid: "ed".into(),
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: ed.public_key().to_bytes(),
                ..Default::default()
            },
            VerificationKey {
                kid: "hs".into(),
                kty: "oct".into(),
                k: b"0123456789abcdef0123456789abcdef-dev".to_vec(),
                ..Default::default()
            },
        ],
    ));
    let pem = include_str!("testdata/rsa-2048.pem");
    let tokens = [
        rsa.clone().with_key_id("rsa").sign(tenant()).unwrap(),
        RS384KeyPair::from_pem(pem)
            .unwrap()
            .with_key_id("rsa")
            .sign(tenant())
            .unwrap(),
        RS512KeyPair::from_pem(pem)
            .unwrap()
            .with_key_id("rsa")
            .sign(tenant())
            .unwrap(),
        PS256KeyPair::from_pem(pem)
            .unwrap()
            .with_key_id("rsa")
            .sign(tenant())
            .unwrap(),
        PS384KeyPair::from_pem(pem)
            .unwrap()
            .with_key_id("rsa")
            .sign(tenant())
            .unwrap(),
        PS512KeyPair::from_pem(pem)
            .unwrap()
            .with_key_id("rsa")
            .sign(tenant())
            .unwrap(),
        es256.with_key_id("p256").sign(tenant()).unwrap(),
        es384.with_key_id("p384").sign(tenant()).unwrap(),
        ed.with_key_id("ed").sign(tenant()).unwrap(),
        hs.with_key_id("hs").authenticate(tenant()).unwrap(),
    ];
    for token in tokens {
        assert_eq!(tenant_of(check(&mut auth, &token)), "team-a", "{token}");
    }
}

#[test]
fn bad_tokens_are_refused_for_the_right_reason() {
    let rsa = rsa_pair().with_key_id("rsa");
    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::RS256, Algorithm::ES256])]));
    auth.set_keys(&keys(1, vec![rsa_key("rsa")]));
    let good = rsa.sign(tenant()).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |s: &str| Base64UrlSafeNoPadding::encode_to_string(s).unwrap();

    let mut other_sig = parts.clone();
    let forged = rsa
        .sign(at(claims(json!({"custom:tenant": "team-b"})), NOW))
        .unwrap();
    other_sig[2] = forged.split('.').nth(2).unwrap();
    // HS256 signed with the RSA public key as the secret: the classic confusion attack.
    let confused = HS256Key::from_bytes(&rsa_pair().public_key().to_components().n)
        .with_key_id("rsa")
        .authenticate(tenant())
        .unwrap();
    let cases = [
        (
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                parts[1],
                ""
            ),
            AuthError::Malformed,
        ),
        (
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                parts[1],
                "AA"
            ),
            AuthError::AlgorithmNotAllowed,
        ),
        (confused, AuthError::AlgorithmNotAllowed),
        (other_sig.join("."), AuthError::BadSignature),
        (
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            AuthError::Malformed,
        ),
        (format!("{}.{}", parts[0], parts[1]), AuthError::Malformed),
        (
            rsa.sign(at(claims(json!({"custom:tenant": "t"})), NOW - 7200))
                .unwrap(),
            AuthError::Expired,
        ),
        (
            rsa.sign(at(claims(json!({"custom:tenant": "t"})), NOW + 600))
                .unwrap(),
            AuthError::NotYetValid,
        ),
        (
            rsa.sign(at(claims(json!({"custom:tenant": "t"})), NOW).with_audience("someone-else"))
                .unwrap(),
            AuthError::WrongAudience,
        ),
        (
            rsa.sign(at(claims(json!({"custom:tenant": "t"})), NOW).with_issuer("https://evil"))
                .unwrap(),
            AuthError::UnknownIssuer,
        ),
        (
            rsa.sign(at(claims(json!({"no": "tenant"})), NOW)).unwrap(),
            AuthError::MissingClaim,
        ),
        (
            rsa.sign({
                let mut c = tenant();
                c.expires_at = None;
                c
            })
            .unwrap(),
            AuthError::NoExpiry,
        ),
        (
            ES256KeyPair::generate()
                .with_key_id("rsa")
                .sign(tenant())
                .unwrap(),
            AuthError::UnknownKey,
        ),
        ("x".repeat(9000), AuthError::TooLarge),
    ];
    for (token, reason) in cases {
        assert_eq!(
            authenticate(&mut auth, &bearer(&token), NOW, false),
            Outcome::Refused(reason),
            "{token}"
        );
    }
    assert_eq!(
        authenticate(&mut auth, &[], NOW, true),
        Outcome::Refused(AuthError::MissingToken)
    );
    // Within the skew an expired token still passes; beyond it, not.
    let nearly = rsa
        .sign(at(claims(json!({"custom:tenant": "t"})), NOW - 3600 - 20))
        .unwrap();
    assert!(matches!(
        check(&mut auth, &nearly),
        Outcome::Authenticated(_)
    ));
}

#[test]
fn algorithm_confusion_with_hs256_allowed_still_fails() {
    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::RS256, Algorithm::HS256])]));
    auth.set_keys(&keys(1, vec![rsa_key("rsa")]));
    let confused = HS256Key::from_bytes(&rsa_pair().public_key().to_components().n)
        .with_key_id("rsa")
        .authenticate(tenant())
        .unwrap();
    assert_eq!(
        authenticate(&mut auth, &bearer(&confused), NOW, false),
        Outcome::Refused(AuthError::UnknownKey)
    );
}

#[test]
fn unknown_kids_ask_for_keys_at_a_bounded_rate() {
    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::EdDSA])]));
    auth.set_keys(&keys(1, vec![]));
    let new = Ed25519KeyPair::generate().with_key_id("new");
    let token = new.sign(tenant()).unwrap();
    let need = |kid: &str| Outcome::NeedKeys {
        issuer: 0,
        kid: Some(kid.into()),
    };
    // Until a lookup is answered, unknown kids need keys (the host coalesces them into one
    // lookup per issuer).
    assert_eq!(check(&mut auth, &token), need("new"));
    assert_eq!(check(&mut auth, &token), need("new"));
    let other = Ed25519KeyPair::generate()
        .with_key_id("other")
        .sign(tenant())
        .unwrap();
    assert_eq!(check(&mut auth, &other), need("other"));
    // The lookup is answered without the key: every unknown kid of that issuer (the same one
    // included) is refused without asking, for unknown_kid_refresh_seconds.
    auth.lookup_done(0, NOW);
    for token in [&token, &other] {
        assert_eq!(
            check(&mut auth, token),
            Outcome::Refused(AuthError::UnknownKey)
        );
        assert_eq!(
            authenticate(&mut auth, &bearer(token), NOW + 9, true),
            Outcome::Refused(AuthError::UnknownKey)
        );
    }
    assert_eq!(
        authenticate(&mut auth, &bearer(&other), NOW + 10, true),
        need("other")
    );
    // The key arrives: accepted; without refresh a still-unknown kid is refused.
    auth.set_keys(&keys(
        2,
        vec![VerificationKey {
            kid: "new".into(),
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: new.public_key().to_bytes(),
            ..Default::default()
        }],
    ));
    assert_eq!(tenant_of(check(&mut auth, &token)), "team-a");
    assert_eq!(
        authenticate(&mut auth, &bearer(&other), NOW, false),
        Outcome::Refused(AuthError::UnknownKey)
    );
}

#[test]
fn cache_honours_expiry_and_key_removal() {
    let ed = Ed25519KeyPair::generate().with_key_id("k");
    let public = VerificationKey {
        kid: "k".into(),
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: ed.public_key().to_bytes(),
        ..Default::default()
    };
    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::EdDSA])]));
    auth.set_keys(&keys(1, vec![public.clone()]));
    let token = ed.sign(tenant()).unwrap();
    assert_eq!(tenant_of(check(&mut auth, &token)), "team-a");
    assert_eq!(auth.cache.len(), 1);
    // Cached: still accepted right up to exp + skew, refused after.
    assert!(matches!(
        authenticate(&mut auth, &bearer(&token), NOW + 3600 + 30, false),
        Outcome::Authenticated(_)
    ));
    assert_eq!(
        authenticate(&mut auth, &bearer(&token), NOW + 3600 + 31, false),
        Outcome::Refused(AuthError::Expired)
    );
    // Same version again: nothing changes. A new version without the key: refused at once.
    assert_eq!(tenant_of(check(&mut auth, &token)), "team-a");
    auth.set_keys(&keys(1, vec![public]));
    assert_eq!(auth.cache.len(), 1);
    auth.set_keys(&keys(2, vec![]));
    assert_eq!(
        authenticate(&mut auth, &bearer(&token), NOW, false),
        Outcome::Refused(AuthError::UnknownKey)
    );
}

#[test]
fn keys_that_fit_no_algorithm_are_skipped() {
    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::ES256])]));
    let skipped = auth.set_keys(&keys(
        1,
        vec![
            rsa_key("rsa"),
            VerificationKey {
                kid: "bad".into(),
                kty: "EC".into(),
                crv: "P-256".into(),
                x: vec![1; 32],
                y: vec![2; 32],
                ..Default::default()
            },
            VerificationKey {
                kid: "alg".into(),
                kty: "EC".into(),
                crv: "P-256".into(),
                alg: "ES384".into(),
                ..Default::default()
            },
        ],
    ));
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert_eq!(auth.key_count(), 0);
}

#[test]
fn verifications_per_second_are_bounded_but_cached_tokens_pass() {
    let ed = Ed25519KeyPair::generate().with_key_id("k");
    let mut c = config(vec![issuer(&[Algorithm::EdDSA])]);
    c.max_verifications_per_second = 3;
    let mut auth = Authenticator::new(c);
    auth.set_keys(&keys(
        1,
        vec![VerificationKey {
            kid: "k".into(),
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: ed.public_key().to_bytes(),
            ..Default::default()
        }],
    ));
    let tokens: Vec<String> = (0..5)
        .map(|i| {
            ed.sign(at(claims(json!({"custom:tenant": format!("t{i}")})), NOW))
                .unwrap()
        })
        .collect();
    let (signed, _) = tokens[4].rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", tokens[3].rsplit_once('.').unwrap().1);
    assert!(matches!(
        check(&mut auth, &tokens[0]),
        Outcome::Authenticated(_)
    ));
    assert_eq!(
        check(&mut auth, &forged),
        Outcome::Refused(AuthError::BadSignature),
        "failures count too"
    );
    assert!(matches!(
        check(&mut auth, &tokens[1]),
        Outcome::Authenticated(_)
    ));
    assert_eq!(
        check(&mut auth, &tokens[2]),
        Outcome::Refused(AuthError::Busy)
    );
    // Cached tokens need no verification; the next second has a new budget.
    assert!(matches!(
        check(&mut auth, &tokens[0]),
        Outcome::Authenticated(_)
    ));
    assert!(matches!(
        authenticate(&mut auth, &bearer(&tokens[2]), NOW + 1, true),
        Outcome::Authenticated(_)
    ));
}

#[test]
fn no_keys_yet() {
    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::EdDSA])]));
    let token = Ed25519KeyPair::generate()
        .with_key_id("k")
        .sign(tenant())
        .unwrap();
    assert_eq!(
        check(&mut auth, &token),
        Outcome::NeedKeys {
            issuer: 0,
            kid: None
        }
    );
    assert_eq!(
        authenticate(&mut auth, &bearer(&token), NOW, false),
        Outcome::Refused(AuthError::NoKeys)
    );
}

mod fuzz {
    //! Random and mutated tokens: the authenticator answers (refuses) and never panics.

    use super::*;
    use proptest::prelude::*;

    fn authenticator() -> (Authenticator, String) {
        let ed = Ed25519KeyPair::generate().with_key_id("k");
        let mut auth = Authenticator::new(config(vec![issuer(&[
            Algorithm::EdDSA,
            Algorithm::RS256,
            Algorithm::ES256,
        ])]));
        auth.set_keys(&keys(
            1,
            vec![
                VerificationKey {
                    kid: "k".into(),
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: ed.public_key().to_bytes(),
                    ..Default::default()
                },
                rsa_key("rsa"),
            ],
        ));
        let token = ed.sign(tenant()).unwrap();
        (auth, token)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(800))]

        #[test]
        fn random_tokens(token in "\\PC{0,600}") {
            let (mut auth, _) = authenticator();
            let outcome = authenticate(&mut auth, &bearer(&token), NOW, true);
            prop_assert!(!matches!(outcome, Outcome::Authenticated(_)));
        }

        #[test]
        fn random_jwt_shaped_tokens(header in "[A-Za-z0-9_-]{0,80}", payload in "[A-Za-z0-9_-]{0,200}", signature in "[A-Za-z0-9_-]{0,120}") {
            let (mut auth, _) = authenticator();
            let outcome = authenticate(&mut auth, &bearer(&format!("{header}.{payload}.{signature}")), NOW, true);
            prop_assert!(!matches!(outcome, Outcome::Authenticated(_)));
        }

        #[test]
        fn mutated_valid_tokens(position in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let (mut auth, token) = authenticator();
            let mut bytes = token.clone().into_bytes();
            let at = position.index(bytes.len());
            bytes[at] = byte;
            let mutated = String::from_utf8_lossy(&bytes).into_owned();
            let outcome = authenticate(&mut auth, &bearer(&mutated), NOW, false);
            if mutated != token {
                // A change may only be accepted if it decodes to the same signed bytes
                // (base64url's unused trailing bits).
                if let Outcome::Authenticated(_) = outcome {
                    let decode = |t: &str| t.split('.').map(|p| Base64UrlSafeNoPadding::decode_to_vec(p, None).ok()).collect::<Vec<_>>();
                    prop_assert_eq!(decode(&mutated), decode(&token));
                }
            }
            let truncated = &token[..cut.index(token.len())];
            let outcome = authenticate(&mut auth, &bearer(truncated), NOW, false);
            prop_assert!(!matches!(outcome, Outcome::Authenticated(_)));
        }
    }
}

#[test]
fn negative_timestamps_are_refused_even_when_signed() {
    // jwt-simple 0.12 read a negative `exp` as a date in 2106 and let such a token through;
    // from 0.15 on a negative `exp`, `nbf` or `iat` does not parse.
    let rsa = rsa_pair().with_key_id("rsa");
    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::RS256])]));
    auth.set_keys(&keys(1, vec![rsa_key("rsa")]));
    for field in ["exp", "nbf", "iat"] {
        let mut c = at(claims(json!({"custom:tenant": "t", field: -1})), NOW);
        match field {
            "exp" => c.expires_at = None,
            "nbf" => c.invalid_before = None,
            _ => c.issued_at = None,
        }
        let token = rsa.sign(c).unwrap();
        assert_eq!(
            authenticate(&mut auth, &bearer(&token), NOW, false),
            Outcome::Refused(AuthError::Malformed),
            "{field}: -1"
        );
    }
}

/// What the remote check asks for, and what each verdict makes of it.
#[test]
fn remote_checks_send_the_signature_and_follow_the_verdict() {
    let rsa = rsa_pair().with_key_id("rsa");
    let mut c = config(vec![issuer(&[Algorithm::RS256, Algorithm::HS256])]);
    c.max_verifications_per_second = 5;
    let hs_secret = b"0123456789abcdef0123456789abcdef-dev";
    let mut auth = Authenticator::new(c);
    auth.set_keys(&keys(
        1,
        vec![
            rsa_key("rsa"),
            VerificationKey {
                kid: "hs".into(),
                kty: "oct".into(),
                k: hs_secret.to_vec(),
                ..Default::default()
            },
        ],
    ));
    let ask = |auth: &mut Authenticator, token: &str| {
        auth.authenticate_with(&bearer(token), NOW, true, true)
    };
    let token = rsa.sign(tenant()).unwrap();
    let Outcome::NeedSignature(pending) = ask(&mut auth, &token) else {
        panic!("not asked");
    };
    let (input, signature) = token.rsplit_once('.').unwrap();
    assert_eq!(pending.check.algorithm, "RS256");
    assert_eq!(pending.check.key, Some(rsa_key("rsa")));
    assert_eq!(pending.check.signing_input, input.as_bytes());
    assert_eq!(
        pending.check.signature,
        Base64UrlSafeNoPadding::decode_to_vec(signature, None).unwrap()
    );
    // The service's word is taken: even a good signature it calls invalid is refused, and
    // busy is 429; without a verdict the token is verified here, and then cached.
    assert_eq!(
        auth.signature_checked((*pending).clone(), Verdict::Invalid, NOW),
        Outcome::Refused(AuthError::BadSignature)
    );
    assert_eq!(
        auth.signature_checked((*pending).clone(), Verdict::Busy, NOW),
        Outcome::Refused(AuthError::Busy)
    );
    for verdict in [Verdict::Unsupported, Verdict::Failed, Verdict::Valid] {
        assert_eq!(
            tenant_of(auth.signature_checked((*pending).clone(), verdict, NOW)),
            "team-a"
        );
    }
    assert_eq!(auth.cached_tokens(), 1);
    assert_eq!(
        tenant_of(ask(&mut auth, &token)),
        "team-a",
        "cached: not asked"
    );
    // One verification of the budget per token however it was checked: 1 so far.
    for i in 0..4 {
        let fresh = rsa
            .sign(at(claims(json!({"custom:tenant": format!("t{i}")})), NOW))
            .unwrap();
        assert!(matches!(ask(&mut auth, &fresh), Outcome::NeedSignature(_)));
    }
    let sixth = rsa
        .sign(at(claims(json!({"custom:tenant": "t9"})), NOW))
        .unwrap();
    assert_eq!(ask(&mut auth, &sixth), Outcome::Refused(AuthError::Busy));

    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::RS256, Algorithm::HS256])]));
    auth.set_keys(&keys(1, vec![rsa_key("rsa")]));
    // The claims are judged after the signature: expired is told only of a valid one.
    let expired = rsa
        .sign(at(claims(json!({"custom:tenant": "t"})), NOW - 7200))
        .unwrap();
    let Outcome::NeedSignature(pending) = ask(&mut auth, &expired) else {
        panic!("not asked");
    };
    assert_eq!(
        auth.signature_checked((*pending).clone(), Verdict::Valid, NOW),
        Outcome::Refused(AuthError::Expired)
    );
    assert_eq!(
        auth.signature_checked(*pending, Verdict::Invalid, NOW),
        Outcome::Refused(AuthError::BadSignature)
    );
    // The header before: a critical extension is refused without asking.
    let b64 = |s: &str| Base64UrlSafeNoPadding::encode_to_string(s).unwrap();
    let (_, rest) = token.split_once('.').unwrap();
    let critical = format!(
        "{}.{rest}",
        b64(r#"{"alg":"RS256","kid":"rsa","crit":["exp"]}"#)
    );
    assert_eq!(
        ask(&mut auth, &critical),
        Outcome::Refused(AuthError::Malformed)
    );
    // Keys that changed while the check was out: the verdict is not enough, the token is
    // verified again with the keys there are now.
    let Outcome::NeedSignature(pending) = ask(
        &mut auth,
        &rsa.sign(at(claims(json!({"custom:tenant": "u"})), NOW))
            .unwrap(),
    ) else {
        panic!("not asked");
    };
    auth.set_keys(&keys(2, vec![]));
    assert_eq!(
        auth.signature_checked(*pending, Verdict::Valid, NOW),
        Outcome::Refused(AuthError::UnknownKey)
    );
}

#[test]
fn shared_secrets_and_salted_headers_are_checked_here() {
    let secret = b"0123456789abcdef0123456789abcdef-dev";
    let mut auth = Authenticator::new(config(vec![issuer(&[Algorithm::HS256, Algorithm::RS256])]));
    auth.set_keys(&keys(
        1,
        vec![
            rsa_key("rsa"),
            VerificationKey {
                kid: "hs".into(),
                kty: "oct".into(),
                k: secret.to_vec(),
                ..Default::default()
            },
        ],
    ));
    let hs = HS256Key::from_bytes(secret)
        .with_key_id("hs")
        .authenticate(tenant())
        .unwrap();
    assert_eq!(
        tenant_of(auth.authenticate_with(&bearer(&hs), NOW, true, true)),
        "team-a"
    );
    // jwt-simple's `salt` member: the RSA verification ignores it, as before.
    let b64 = |s: &str| Base64UrlSafeNoPadding::encode_to_string(s).unwrap();
    let header = b64(r#"{"alg":"RS256","kid":"rsa","salt":"c2FsdA"}"#);
    let (_, payload) = rsa_pair()
        .sign(tenant())
        .unwrap()
        .split_once('.')
        .map(|(h, r)| (h.to_string(), r.to_string()))
        .unwrap();
    let payload = payload.split_once('.').unwrap().0.to_string();
    let salted = format!("{header}.{payload}.c2ln");
    assert_eq!(
        auth.authenticate_with(&bearer(&salted), NOW, true, true),
        Outcome::Refused(AuthError::BadSignature)
    );
}
