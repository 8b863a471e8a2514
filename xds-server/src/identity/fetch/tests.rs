use std::{collections::HashMap, sync::Mutex};

use jwt_simple::prelude::*;
use serde_json::json;

use super::*;
use gateway_common::auth_config::Algorithm;

use crate::{identity::KeyMaterial, util::Secret};

/// Answers from a map and remembers what was asked.
#[derive(Default)]
struct FakeHttp {
    documents: HashMap<String, Vec<u8>>,
    requests: Mutex<Vec<String>>,
}

impl HttpGet for FakeHttp {
    fn get<'a>(
        &'a self,
        url: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchError>> + Send + 'a>> {
        self.requests.lock().unwrap().push(url.to_string());
        let answer = self
            .documents
            .get(url)
            .cloned()
            .ok_or_else(|| FetchError::Status {
                url: url.to_string(),
                status: 404,
            });
        Box::pin(async move { answer })
    }
}

fn ed25519_jwks(kid: &str) -> Vec<u8> {
    let public = Ed25519KeyPair::generate().public_key().to_bytes();
    let x = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, public);
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x}]})
        .to_string()
        .into_bytes()
}

#[test]
fn fetchable_urls() {
    for ok in [
        "https://idp.example.com/.well-known/jwks.json",
        "https://idp.example.com:8443/keys",
        "http://127.0.0.1:8080/jwks",
        "http://127.8.0.1/jwks",
        "http://[::1]:9000/jwks",
        "http://localhost/jwks",
        "http://LOCALHOST:1/jwks",
    ] {
        assert!(is_fetchable_url(ok), "{ok}");
    }
    for bad in [
        "http://idp.example.com/jwks",
        "http://10.0.0.1/jwks",
        "http://localhost.example.com/jwks",
        "ftp://idp.example.com/jwks",
        "file:///etc/jwks.json",
        "https://",
        "https://user:secret@idp.example.com/jwks",
        "idp.example.com/jwks",
        "",
    ] {
        assert!(!is_fetchable_url(bad), "{bad}");
    }
}

#[test]
fn discovery_documents() {
    assert_eq!(
        discovery_url("https://idp.example.com/realms/corp/"),
        "https://idp.example.com/realms/corp/.well-known/openid-configuration"
    );
    assert_eq!(
        discovery_url("https://idp.example.com"),
        "https://idp.example.com/.well-known/openid-configuration"
    );
    let issuer = "https://idp.example.com/";
    let doc = |value: serde_json::Value| value.to_string().into_bytes();
    assert_eq!(
        parse_discovery(
            &doc(
                json!({"issuer": "https://idp.example.com/", "jwks_uri": "https://idp.example.com/keys"})
            ),
            issuer
        ),
        Ok("https://idp.example.com/keys".to_string())
    );
    // One trailing slash more or less is the same issuer.
    assert!(
        parse_discovery(
            &doc(json!({"issuer": "https://idp.example.com", "jwks_uri": "https://idp.example.com/keys"})),
            issuer
        )
        .is_ok()
    );
    assert_eq!(
        parse_discovery(
            &doc(json!({"issuer": "https://evil.example.com/", "jwks_uri": "https://evil.example.com/keys"})),
            issuer
        ),
        Err("the document is for issuer \"https://evil.example.com/\", not \"https://idp.example.com/\"".to_string())
    );
    assert_eq!(
        parse_discovery(&doc(json!({"issuer": issuer})), issuer),
        Err("the document has no `jwks_uri`".to_string())
    );
    assert!(
        parse_discovery(
            &doc(json!({"issuer": issuer, "jwks_uri": "http://idp.example.com/keys"})),
            issuer
        )
        .unwrap_err()
        .contains("neither https://")
    );
    assert!(parse_discovery(b"<html>", issuer).is_err());
}

#[tokio::test]
async fn discovery_finds_the_jwks_once() {
    let issuer = "https://idp.example.com";
    let http = FakeHttp {
        documents: HashMap::from([
            (
                discovery_url(issuer),
                json!({"issuer": issuer, "jwks_uri": "https://keys.example.com/jwks"})
                    .to_string()
                    .into_bytes(),
            ),
            (
                "https://keys.example.com/jwks".to_string(),
                ed25519_jwks("k1"),
            ),
        ]),
        ..Default::default()
    };
    let source = KeySource::Discovery {
        issuer: issuer.into(),
        url: discovery_url(issuer),
    };
    let loaded = load(&source, &http, None).await.unwrap();
    assert_eq!(loaded.keys[0].kid, "k1");
    assert_eq!(
        loaded.jwks_uri.as_deref(),
        Some("https://keys.example.com/jwks")
    );
    // With the URL remembered, only the JWKS is fetched.
    load(&source, &http, loaded.jwks_uri.clone()).await.unwrap();
    assert_eq!(
        *http.requests.lock().unwrap(),
        [
            discovery_url(issuer),
            "https://keys.example.com/jwks".to_string(),
            "https://keys.example.com/jwks".to_string()
        ]
    );
}

#[tokio::test]
async fn a_set_without_usable_keys_is_an_error() {
    let url = "https://idp.example.com/jwks";
    let http = FakeHttp {
        documents: HashMap::from([(
            url.to_string(),
            json!({"keys": [{"kty": "RSA", "kid": "enc1", "use": "enc", "n": "AQAB", "e": "AQAB"}]})
                .to_string()
                .into_bytes(),
        )]),
        ..Default::default()
    };
    let error = load(&KeySource::JwksUri(url.into()), &http, None)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "https://idp.example.com/jwks: no usable signing key (keys[0] kid \"enc1\": `use` is \"enc\", not \"sig\")"
    );
    assert_eq!(error.kind(), "no_usable_keys");
    let missing = load(
        &KeySource::JwksUri("https://idp.example.com/nope".into()),
        &http,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "GET https://idp.example.com/nope: HTTP status 404"
    );
}

#[tokio::test]
async fn files_static_keys_and_the_shared_secret() {
    let dir = tempfile::tempdir().unwrap();
    let http = FakeHttp::default();
    let file = dir.path().join("corp.jwks.json");
    std::fs::write(&file, ed25519_jwks("from-file")).unwrap();
    let loaded = load(&KeySource::JwksFile(file.clone()), &http, None)
        .await
        .unwrap();
    assert_eq!(loaded.keys[0].kid, "from-file");

    std::fs::write(&file, vec![b' '; MAX_DOCUMENT_BYTES + 1]).unwrap();
    let error = load(&KeySource::JwksFile(file.clone()), &http, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "too_large");
    let missing = dir.path().join("missing.json");
    let error = load(&KeySource::JwksFile(missing), &http, None)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("missing.json: cannot read the JWKS file: "),
        "{error}"
    );

    let secret = Secret::new("0123456789abcdef0123456789abcdef");
    let loaded = load(&KeySource::SharedSecret(secret.clone()), &http, None)
        .await
        .unwrap();
    assert_eq!(loaded.keys[0].material, KeyMaterial::Oct { k: secret });
    assert_eq!(loaded.keys[0].alg, Some(Algorithm::HS256));

    let dev = dir.path().join("dev/issuer.pem");
    let loaded = load(&KeySource::DevSigningKey(dev.clone()), &http, None)
        .await
        .unwrap();
    assert!(dev.exists());
    assert_eq!(loaded.keys[0].kid.len(), 16);
    assert!(http.requests.lock().unwrap().is_empty());
}
