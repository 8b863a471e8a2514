use super::*;
use crate::identity::jwk::convert_jwk;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;

/// A check of `token` against the key of the JWK `jwk` for its header's algorithm.
fn check(token: &str, jwk: &str, algorithm: &str) -> SignatureCheck {
    let jwk: serde_json::Value = serde_json::from_str(jwk).unwrap();
    let key = proto_key(&jwk);
    let (input, signature) = token.rsplit_once('.').unwrap();
    SignatureCheck {
        id: 7,
        algorithm: algorithm.to_string(),
        key: Some(key),
        signing_input: input.as_bytes().to_vec(),
        signature: URL_SAFE_NO_PAD.decode(signature).unwrap(),
    }
}

fn proto_key(jwk: &serde_json::Value) -> VerificationKey {
    (&convert_jwk(jwk).unwrap()).into()
}

fn claims() -> JWTClaims<NoCustomClaims> {
    Claims::create(Duration::from_mins(5)).with_issuer("https://idp")
}

/// Every algorithm family, as jwt-simple signs it: valid as signed, invalid once any byte
/// of the input or the signature changes, and never for another key or algorithm.
#[test]
fn verdicts_for_every_algorithm() {
    let rsa = RS256KeyPair::from_pem(include_str!(
        "../../../../filter/src/core/auth/testdata/rsa-2048.pem"
    ))
    .unwrap();
    let rsa_jwk = rsa.public_key().to_jwk();
    let ps = PS384KeyPair::from_pem(include_str!(
        "../../../../filter/src/core/auth/testdata/rsa-2048.pem"
    ))
    .unwrap();
    let es256 = ES256KeyPair::generate();
    let es384 = ES384KeyPair::generate();
    let ed = Ed25519KeyPair::generate();
    let rs512 = RS512KeyPair::from_pem(include_str!(
        "../../../../filter/src/core/auth/testdata/rsa-2048.pem"
    ))
    .unwrap();
    let cases = [
        (rsa.sign(claims()).unwrap(), rsa_jwk.clone(), "RS256"),
        (rs512.sign(claims()).unwrap(), rsa_jwk.clone(), "RS512"),
        (ps.sign(claims()).unwrap(), rsa_jwk.clone(), "PS384"),
        (
            es256.sign(claims()).unwrap(),
            es256.public_key().to_jwk(),
            "ES256",
        ),
        (
            es384.sign(claims()).unwrap(),
            es384.public_key().to_jwk(),
            "ES384",
        ),
        (
            ed.sign(claims()).unwrap(),
            ed.public_key().to_jwk(),
            "EdDSA",
        ),
    ];
    let checker = SignatureChecker::new(2);
    for (token, jwk, algorithm) in &cases {
        let good = check(token, jwk, algorithm);
        assert_eq!(checker.check(&good), Verdict::Valid, "{algorithm}");
        // Twice: the second time with the parsed key kept.
        assert_eq!(checker.check(&good), Verdict::Valid, "{algorithm}");
        let mut input = good.clone();
        input.signing_input.push(b'x');
        assert_eq!(checker.check(&input), Verdict::Invalid, "{algorithm}");
        let mut signature = good.clone();
        let last = signature.signature.len() - 1;
        signature.signature[last] ^= 1;
        assert_eq!(checker.check(&signature), Verdict::Invalid, "{algorithm}");
        let mut short = good.clone();
        short.signature.truncate(10);
        assert_eq!(checker.check(&short), Verdict::Invalid, "{algorithm}");
    }
    // The RS256 token is no PS256 or RS384 signature, and no other key's.
    let (rs256, _, _) = &cases[0];
    for algorithm in ["PS256", "RS384"] {
        assert_eq!(
            checker.check(&check(rs256, &rsa_jwk, algorithm)),
            Verdict::Invalid
        );
    }
    let other = RS256KeyPair::generate(2048).unwrap().public_key().to_jwk();
    assert_eq!(
        checker.check(&check(rs256, &other, "RS256")),
        Verdict::Invalid
    );
}

#[test]
fn keys_that_do_not_fit_are_unsupported() {
    let ed = Ed25519KeyPair::generate();
    let token = ed.sign(claims()).unwrap();
    let jwk = ed.public_key().to_jwk();
    let checker = SignatureChecker::new(1);
    for algorithm in ["RS256", "ES256", "HS256", "none", ""] {
        assert_eq!(
            checker.check(&check(&token, &jwk, algorithm)),
            Verdict::Unsupported,
            "{algorithm}"
        );
    }
    let mut no_key = check(&token, &jwk, "EdDSA");
    no_key.key = None;
    assert_eq!(checker.check(&no_key), Verdict::Unsupported);
    let mut short = check(&token, &jwk, "EdDSA");
    if let Some(key) = short.key.as_mut() {
        key.x.pop();
    }
    assert_eq!(checker.check(&short), Verdict::Unsupported);
}

#[tokio::test]
async fn beyond_the_waiting_bound_checks_are_busy() {
    let ed = Ed25519KeyPair::generate();
    let good = check(
        &ed.sign(claims()).unwrap(),
        &ed.public_key().to_jwk(),
        "EdDSA",
    );
    let checker = Arc::new(SignatureChecker::new(1));
    assert_eq!(checker.verdict(&good).await, Verdict::Valid);
    // The one core is taken: checks wait, up to the bound; the next one is busy.
    let held = checker.cores.acquire().await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..MAX_WAITING {
        let checker = Arc::clone(&checker);
        let good = good.clone();
        waiting.push(tokio::spawn(async move { checker.verdict(&good).await }));
    }
    while checker.waiting.load(Ordering::Acquire) < MAX_WAITING {
        tokio::task::yield_now().await;
    }
    assert_eq!(checker.verdict(&good).await, Verdict::Busy);
    drop(held);
    for waiter in waiting {
        assert_eq!(waiter.await.unwrap(), Verdict::Valid);
    }
    assert_eq!(checker.counts(), [MAX_WAITING as u64 + 1, 0, 0, 1]);
}
