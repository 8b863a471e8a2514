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
    auth.authenticate(&bearer(token), NOW, true)
}

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
            auth.authenticate(&bearer(&token), NOW, false),
            Outcome::Refused(reason),
            "{token}"
        );
    }
    assert_eq!(
        auth.authenticate(&[], NOW, true),
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
        auth.authenticate(&bearer(&confused), NOW, false),
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
            auth.authenticate(&bearer(token), NOW + 9, true),
            Outcome::Refused(AuthError::UnknownKey)
        );
    }
    assert_eq!(
        auth.authenticate(&bearer(&other), NOW + 10, true),
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
        auth.authenticate(&bearer(&other), NOW, false),
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
        auth.authenticate(&bearer(&token), NOW + 3600 + 30, false),
        Outcome::Authenticated(_)
    ));
    assert_eq!(
        auth.authenticate(&bearer(&token), NOW + 3600 + 31, false),
        Outcome::Refused(AuthError::Expired)
    );
    // Same version again: nothing changes. A new version without the key: refused at once.
    assert_eq!(tenant_of(check(&mut auth, &token)), "team-a");
    auth.set_keys(&keys(1, vec![public]));
    assert_eq!(auth.cache.len(), 1);
    auth.set_keys(&keys(2, vec![]));
    assert_eq!(
        auth.authenticate(&bearer(&token), NOW, false),
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
        auth.authenticate(&bearer(&tokens[2]), NOW + 1, true),
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
        auth.authenticate(&bearer(&token), NOW, false),
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
            let outcome = auth.authenticate(&bearer(&token), NOW, true);
            prop_assert!(!matches!(outcome, Outcome::Authenticated(_)));
        }

        #[test]
        fn random_jwt_shaped_tokens(header in "[A-Za-z0-9_-]{0,80}", payload in "[A-Za-z0-9_-]{0,200}", signature in "[A-Za-z0-9_-]{0,120}") {
            let (mut auth, _) = authenticator();
            let outcome = auth.authenticate(&bearer(&format!("{header}.{payload}.{signature}")), NOW, true);
            prop_assert!(!matches!(outcome, Outcome::Authenticated(_)));
        }

        #[test]
        fn mutated_valid_tokens(position in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let (mut auth, token) = authenticator();
            let mut bytes = token.clone().into_bytes();
            let at = position.index(bytes.len());
            bytes[at] = byte;
            let mutated = String::from_utf8_lossy(&bytes).into_owned();
            let outcome = auth.authenticate(&bearer(&mutated), NOW, false);
            if mutated != token {
                // A change may only be accepted if it decodes to the same signed bytes
                // (base64url's unused trailing bits).
                if let Outcome::Authenticated(_) = outcome {
                    let decode = |t: &str| t.split('.').map(|p| Base64UrlSafeNoPadding::decode_to_vec(p, None).ok()).collect::<Vec<_>>();
                    prop_assert_eq!(decode(&mutated), decode(&token));
                }
            }
            let truncated = &token[..cut.index(token.len())];
            let outcome = auth.authenticate(&bearer(truncated), NOW, false);
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
            auth.authenticate(&bearer(&token), NOW, false),
            Outcome::Refused(AuthError::Malformed),
            "{field}: -1"
        );
    }
}
