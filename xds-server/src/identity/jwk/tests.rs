use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::json;

use super::*;

/// RFC 7517, appendix A.1: a 2048-bit RSA key and a P-256 key.
const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
const P256_X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
const P256_Y: &str = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_jwk() -> Value {
    json!({"kty": "RSA", "kid": "2011-04-29", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB"})
}

fn p256_jwk() -> Value {
    json!({"kty": "EC", "crv": "P-256", "kid": "1", "x": P256_X, "y": P256_Y})
}

fn p384_jwk() -> Value {
    let sec1 = ES384KeyPair::generate()
        .public_key()
        .public_key()
        .to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-384", "kid": "p384", "alg": "ES384", "x": b64(&sec1[1..49]), "y": b64(&sec1[49..])})
}

fn ed25519_jwk() -> (Value, Vec<u8>) {
    let public = Ed25519KeyPair::generate().public_key().to_bytes();
    (
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(&public), "key_ops": ["verify"]}),
        public,
    )
}

fn with(mut jwk: Value, member: &str, value: Value) -> Value {
    jwk[member] = value;
    jwk
}

fn without(mut jwk: Value, member: &str) -> Value {
    jwk.as_object_mut().unwrap().remove(member);
    jwk
}

#[test]
fn each_supported_key_type_converts() {
    let rsa = convert_jwk(&rsa_jwk()).unwrap();
    assert_eq!(rsa.kid, "2011-04-29");
    assert_eq!(rsa.alg, Some(Algorithm::RS256));
    let KeyMaterial::Rsa { n, e } = &rsa.material else {
        panic!("{rsa:?}");
    };
    assert_eq!((n.len(), e.as_slice()), (256, &[1u8, 0, 1][..]));

    let p256 = convert_jwk(&p256_jwk()).unwrap();
    assert_eq!((p256.kid.as_str(), p256.alg), ("1", None));
    assert!(
        matches!(&p256.material, KeyMaterial::Ec { curve: Curve::P256, x, y } if x.len() == 32 && y.len() == 32)
    );

    let p384 = convert_jwk(&p384_jwk()).unwrap();
    assert!(
        matches!(&p384.material, KeyMaterial::Ec { curve: Curve::P384, x, y } if x.len() == 48 && y.len() == 48)
    );

    let (jwk, public) = ed25519_jwk();
    let ed = convert_jwk(&jwk).unwrap();
    assert_eq!(ed.material, KeyMaterial::Ed25519 { x: public });

    // Padding and a leading zero byte of the modulus are tolerated.
    let padded = with(p256_jwk(), "x", json!(format!("{P256_X}=")));
    assert!(convert_jwk(&padded).is_ok());
    let mut n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(RSA_N)
        .unwrap();
    n.insert(0, 0);
    let zero_led = convert_jwk(&with(rsa_jwk(), "n", json!(b64(&n)))).unwrap();
    assert!(matches!(zero_led.material, KeyMaterial::Rsa { n, .. } if n.len() == 256));
}

#[test]
fn each_unusable_key_is_skipped_with_its_reason() {
    let p256_y = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(P256_Y)
        .unwrap();
    let mut off_curve = p256_y.clone();
    off_curve[31] ^= 1;
    let short_n = {
        let mut n = vec![0xc3; 128];
        n[127] |= 1;
        b64(&n)
    };
    let long_n = {
        let mut n = vec![0xc3; 520];
        n[519] |= 1;
        b64(&n)
    };
    let (ed, _) = ed25519_jwk();
    let cases: Vec<(&str, Value, SkipReason)> = vec![
        ("not an object", json!("key"), SkipReason::NotAnObject),
        (
            "no kty",
            without(rsa_jwk(), "kty"),
            SkipReason::Missing("kty"),
        ),
        (
            "kid not a string",
            with(rsa_jwk(), "kid", json!(7)),
            SkipReason::NotAString("kid"),
        ),
        (
            "encryption key",
            with(rsa_jwk(), "use", json!("enc")),
            SkipReason::NotForSignatures("enc".into()),
        ),
        (
            "key_ops without verify",
            with(rsa_jwk(), "key_ops", json!(["encrypt"])),
            SkipReason::NotForVerification,
        ),
        (
            "unsupported alg",
            with(rsa_jwk(), "alg", json!("RSA-OAEP")),
            SkipReason::UnsupportedAlgorithm("RSA-OAEP".into()),
        ),
        (
            "alg none",
            with(rsa_jwk(), "alg", json!("none")),
            SkipReason::UnsupportedAlgorithm("none".into()),
        ),
        (
            "alg of another key type",
            with(rsa_jwk(), "alg", json!("ES256")),
            SkipReason::AlgorithmMismatch {
                alg: "ES256",
                kty: "RSA",
            },
        ),
        (
            "P-256 key with ES384",
            with(p256_jwk(), "alg", json!("ES384")),
            SkipReason::AlgorithmMismatch {
                alg: "ES384",
                kty: "EC",
            },
        ),
        (
            "unknown kty",
            with(rsa_jwk(), "kty", json!("AKP")),
            SkipReason::UnsupportedKeyType("AKP".into()),
        ),
        (
            "oct",
            json!({"kty": "oct", "k": "c2VjcmV0"}),
            SkipReason::SymmetricKey,
        ),
        (
            "P-521",
            with(p256_jwk(), "crv", json!("P-521")),
            SkipReason::UnsupportedCurve("P-521".into()),
        ),
        (
            "secp256k1",
            with(p256_jwk(), "crv", json!("secp256k1")),
            SkipReason::UnsupportedCurve("secp256k1".into()),
        ),
        (
            "X25519",
            with(ed.clone(), "crv", json!("X25519")),
            SkipReason::UnsupportedCurve("X25519".into()),
        ),
        (
            "EC without crv",
            without(p256_jwk(), "crv"),
            SkipReason::Missing("crv"),
        ),
        (
            "EC without y",
            without(p256_jwk(), "y"),
            SkipReason::Missing("y"),
        ),
        (
            "bad base64",
            with(rsa_jwk(), "n", json!("not base64!")),
            SkipReason::BadBase64("n"),
        ),
        (
            "short RSA",
            with(rsa_jwk(), "n", json!(short_n)),
            SkipReason::ShortRsaModulus(1024),
        ),
        (
            "long RSA",
            with(rsa_jwk(), "n", json!(long_n)),
            SkipReason::LongRsaModulus(4160),
        ),
        (
            "RSA exponent 3",
            with(rsa_jwk(), "e", json!("Aw")),
            SkipReason::UnsupportedRsaExponent,
        ),
        (
            "EC coordinate too long",
            with(p256_jwk(), "x", json!(b64(&[1; 33]))),
            SkipReason::WrongLength("x"),
        ),
        (
            "point off the curve",
            with(p256_jwk(), "y", json!(b64(&off_curve))),
            SkipReason::InvalidKey,
        ),
        (
            "Ed25519 of 31 bytes",
            with(ed, "x", json!(b64(&[9; 31]))),
            SkipReason::WrongLength("x"),
        ),
    ];
    for (what, jwk, reason) in cases {
        assert_eq!(convert_jwk(&jwk), Err(reason), "{what}");
    }
}

#[test]
fn a_set_keeps_the_good_keys_and_names_the_skipped_ones() {
    let set = json!({"keys": [
        rsa_jwk(),
        with(p256_jwk(), "use", json!("enc")),
        {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
        p256_jwk(),
    ]});
    let parsed = parse_jwks(set.to_string().as_bytes()).unwrap();
    let kids: Vec<&str> = parsed.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["2011-04-29", "1"]);
    assert_eq!(
        parsed.skipped,
        [
            SkippedKey {
                index: 1,
                kid: Some("1".into()),
                reason: SkipReason::NotForSignatures("enc".into())
            },
            SkippedKey {
                index: 2,
                kid: Some("shared".into()),
                reason: SkipReason::SymmetricKey
            },
        ]
    );
    assert_eq!(parsed.skipped[1].reason.kind(), "unsupported_key_type");
}

#[test]
fn documents_that_are_not_a_jwks() {
    assert!(matches!(parse_jwks(b"<html>"), Err(JwksError::NotJson(_))));
    assert_eq!(parse_jwks(b"[]"), Err(JwksError::NotAJwks));
    assert_eq!(parse_jwks(br#"{"keys": {}}"#), Err(JwksError::NotAJwks));
    assert_eq!(parse_jwks(br#"{"keys": []}"#), Ok(ParsedJwks::default()));
}
