//! Issuers' keys through the real server: a local JWKS server on 127.0.0.1:0 whose keys the
//! tests change, `GetIdentityKeys` over gRPC, configuration reloads, the status page, and
//! `mint-token` tokens verified against the served keys.

mod support;

use std::{path::Path, process::Command, time::Duration};

use gateway_common::proto::{GetIdentityKeysRequest, IdentityKeys};
use jwt_simple::prelude::{
    Ed25519PublicKey, EdDSAPublicKeyLike as _, HS256Key, HashSet, MACLike as _, Token,
    VerificationOptions,
};
use serde_json::{Map, Value};
use support::{
    Server, WAIT,
    issuer::{DISCOVERED_JWKS_PATH, DISCOVERY_PATH, Issuer, JWKS_PATH, TestKey},
};
use xds_server::control_api::gateway_control_client::GatewayControlClient;

const BINARY: &str = env!("CARGO_BIN_EXE_xds-server");
const HEAD: &str = "upstream:\n  region: us-east-1\nfilter:\n  wasm_path: /opt/gateway/filter.wasm\nauth:\n  issuers:\n";

fn config(issuers: &[String]) -> String {
    format!("{HEAD}{}", issuers.concat())
}

fn remote_issuer(issuer: &Issuer, extra: &str) -> String {
    format!(
        "    - name: corp\n      issuer: {}\n      audiences: [bedrock-gateway]\n      jwks_uri: {}\n{extra}",
        issuer.base(),
        issuer.url(JWKS_PATH)
    )
}

async fn identity_keys(server: &Server, unknown_kid_issuer: &str, kid: &str) -> IdentityKeys {
    let mut client = GatewayControlClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    client
        .get_identity_keys(GetIdentityKeysRequest {
            node_id: "test-envoy".into(),
            unknown_kid_issuer: unknown_kid_issuer.into(),
            unknown_kid: kid.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn kids(keys: &IdentityKeys) -> Vec<(String, Vec<String>)> {
    keys.issuers
        .iter()
        .map(|i| {
            (
                i.issuer.clone(),
                i.keys.iter().map(|k| k.kid.clone()).collect(),
            )
        })
        .collect()
}

/// Asks until the server hands out `expected` (issuer, kids) pairs.
async fn until_kids(server: &Server, expected: &[(&str, &[&str])]) -> IdentityKeys {
    let expected: Vec<(String, Vec<String>)> = expected
        .iter()
        .map(|(iss, kids)| {
            (
                iss.to_string(),
                kids.iter().map(|k| k.to_string()).collect(),
            )
        })
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let keys = identity_keys(server, "", "").await;
        if kids(&keys) == expected {
            return keys;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "keys are {:?}, expected {expected:?}",
            kids(&keys)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unknown_kid_finds_a_new_key_at_once_but_cannot_force_reads() {
    let issuer = Issuer::start().await;
    let (k1, k2) = (TestKey::new("k1"), TestKey::new("k2"));
    issuer.publish(&[&k1]);
    let server = Server::start(&config(&[remote_issuer(
        &issuer,
        "      jwks_min_refresh_seconds: 2\n",
    )]))
    .await;
    let iss = issuer.base();
    let first = until_kids(&server, &[(&iss, &["k1"])]).await;
    assert_eq!(issuer.hits(JWKS_PATH), 1);
    assert_eq!(first.refresh_after_seconds, 60, "keys_refresh_seconds");
    let key = &first.issuers[0].keys[0];
    assert_eq!(
        (key.kty.as_str(), key.crv.as_str(), key.alg.as_str()),
        ("OKP", "Ed25519", "EdDSA")
    );
    assert_eq!(key.x, k1.pair.public_key().to_bytes());

    issuer.publish(&[&k1, &k2]);
    // Past the minimum interval since the first read.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let keys = identity_keys(&server, &iss, "k2").await;
    assert_eq!(
        kids(&keys),
        [(iss.clone(), vec!["k1".to_string(), "k2".to_string()])]
    );
    assert_ne!(keys.version, first.version);
    assert_eq!(issuer.hits(JWKS_PATH), 2);

    // Another unknown kid right away: answered from what the server has, no read.
    let again = identity_keys(&server, &iss, "k3").await;
    assert_eq!(again.version, keys.version);
    assert_eq!(issuer.hits(JWKS_PATH), 2);

    let status = server.status().await;
    let corp = &status["identity"]["corp"];
    assert_eq!(corp["source"], "jwks_uri");
    assert_eq!(corp["keys"], 2);
    assert_eq!(corp["kids"], serde_json::json!(["k1", "k2"]));
    assert_eq!(corp["unknown_kid_refreshes"], 1);
    assert_eq!(corp["last_error"], Value::Null);
    assert!(corp["last_fetch_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        status["identity_keys_version"],
        format!("{:016x}", keys.version)
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("xds_server_identity_keys{issuer=\"corp\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("xds_server_identity_unknown_kid_refreshes_total{issuer=\"corp\"} 1\n"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_removed_key_is_gone_after_the_scheduled_read_and_failures_keep_the_last_keys() {
    let issuer = Issuer::start().await;
    let (k1, k2) = (TestKey::new("k1"), TestKey::new("k2"));
    issuer.publish(&[&k1, &k2]);
    let server = Server::start(&config(&[remote_issuer(
        &issuer,
        "      jwks_refresh_seconds: 1\n",
    )]))
    .await;
    let iss = issuer.base();
    until_kids(&server, &[(&iss, &["k1", "k2"])]).await;
    issuer.publish(&[&k2]);
    let keys = until_kids(&server, &[(&iss, &["k2"])]).await;
    assert!(
        keys.refresh_after_seconds <= 1,
        "{}",
        keys.refresh_after_seconds
    );

    // An unusable document: the last good keys stay, the error shows.
    issuer.publish(&[]);
    support::eventually("the failed read to show", || async {
        server.status().await["identity"]["corp"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no usable signing key"))
    })
    .await;
    assert_eq!(
        kids(&identity_keys(&server, "", "").await),
        [(iss.clone(), vec!["k2".to_string()])]
    );
    let status = server.status().await;
    assert!(
        status["identity"]["corp"]["fetch_failures"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(
        status["identity"]["corp"]["kids"],
        serde_json::json!(["k2"])
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn discovery_finds_the_jwks_through_the_openid_document() {
    let issuer = Issuer::start().await;
    let key = TestKey::new("d1");
    issuer.publish(&[&key]);
    let server = Server::start(&config(&[format!(
        "    - name: oidc\n      issuer: {}\n      audiences: [bedrock-gateway]\n      discovery: true\n",
        issuer.base()
    )]))
    .await;
    until_kids(&server, &[(&issuer.base(), &["d1"])]).await;
    assert_eq!(issuer.hits(DISCOVERY_PATH), 1);
    assert_eq!(issuer.hits(DISCOVERED_JWKS_PATH), 1);
    assert_eq!(issuer.hits(JWKS_PATH), 0);
    let status = server.status().await;
    assert_eq!(status["identity"]["oidc"]["source"], "discovery");
    assert_eq!(
        status["identity"]["oidc"]["location"],
        issuer.url(DISCOVERED_JWKS_PATH)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_changed_jwks_file_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("internal.jwks.json");
    let (k1, k2) = (TestKey::new("f1"), TestKey::new("f2"));
    std::fs::write(&file, support::issuer::jwks(&[&k1])).unwrap();
    let iss = "https://sts.internal.example/";
    let server = Server::start(&config(&[format!(
        "    - name: air-gapped\n      issuer: {iss}\n      audiences: [bedrock-gateway]\n      jwks_file: {}\n",
        file.display()
    )]))
    .await;
    until_kids(&server, &[(iss, &["f1"])]).await;
    // Replaced the way deployment tools do: write aside, then rename.
    let aside = dir.path().join("internal.jwks.json.tmp");
    std::fs::write(&aside, support::issuer::jwks(&[&k1, &k2])).unwrap();
    std::fs::rename(&aside, &file).unwrap();
    until_kids(&server, &[(iss, &["f1", "f2"])]).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reloads_add_and_remove_issuers_and_keep_the_unchanged_ones() {
    let issuer = Issuer::start().await;
    issuer.publish(&[&TestKey::new("k1")]);
    let dir = tempfile::tempdir().unwrap();
    let dev_key = dir.path().join("dev-issuer.pem");
    let corp = remote_issuer(&issuer, "      tenants: [\"team-*\"]\n");
    let dev = format!(
        "    - name: local-dev\n      issuer: http://127.0.0.1/local-dev\n      audiences: [bedrock-gateway]\n      dev_signing_key: {}\n      tenants: [\"dev-*\"]\n",
        dev_key.display()
    );
    let server = Server::start(&config(std::slice::from_ref(&corp))).await;
    let iss = issuer.base();
    until_kids(&server, &[(&iss, &["k1"])]).await;

    server.write_config(&config(&[corp.clone(), dev.clone()]));
    support::eventually("the development issuer and its key", || async {
        let keys = identity_keys(&server, "", "").await;
        keys.issuers.len() == 2 && keys.issuers[1].keys.len() == 1
    })
    .await;
    let keys = identity_keys(&server, "", "").await;
    assert_eq!(keys.issuers[0].keys[0].kid, "k1");
    assert_eq!(keys.issuers[1].issuer, "http://127.0.0.1/local-dev");
    assert_eq!(
        issuer.hits(JWKS_PATH),
        1,
        "the unchanged issuer was not read again"
    );

    server.write_config(&config(&[dev]));
    support::eventually("the removal", || async {
        identity_keys(&server, "", "").await.issuers.len() == 1
    })
    .await;
    let keys = identity_keys(&server, "", "").await;
    assert_eq!(keys.issuers[0].issuer, "http://127.0.0.1/local-dev");
    let status = server.status().await;
    let names: Vec<&String> = status["identity"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["local-dev"]);
    server.stop().await.unwrap();
}

fn mint(config: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BINARY);
    command
        .args(["mint-token", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn minted_tokens_verify_with_the_served_keys_and_carry_the_mapped_claims() {
    let dir = tempfile::tempdir().unwrap();
    let dev_key = dir.path().join("run/keys/dev-issuer.pem");
    let text = config(&[
        format!(
            "    - name: local-dev\n      issuer: http://127.0.0.1/local-dev\n      audiences: [bedrock-gateway, other]\n      dev_signing_key: {}\n      claims: {{tenant: \"custom:tenant\", role: realm_access.roles, tier: tier}}\n      tenants: [\"team-*\"]\n      roles: [\"*\"]\n",
            dev_key.display()
        ),
        "    - name: corp\n      issuer: https://idp.example.com/\n      audiences: [bedrock-gateway]\n      jwks_uri: https://idp.example.com/jwks\n      tenants: [corp]\n".to_string(),
    ]);
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, &text).unwrap();

    let output = mint(
        &config_path,
        &[
            "--tenant",
            "team-a",
            "--subject",
            "alice",
            "--role",
            "admin",
            "--role",
            "dev",
            "--tier",
            "gold",
            "--ttl",
            "15m",
            "--claim",
            "realm_access.region=eu",
            "--claim",
            "n=3",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let token = String::from_utf8(output.stdout).unwrap();
    let token = token.trim_end();
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert!(!token.contains('\n'));

    // The key was created, private.
    let pem = std::fs::read_to_string(&dev_key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dev_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // The server publishes that key; the token verifies with it.
    let server = Server::start(&text).await;
    support::eventually("the development key", || async {
        identity_keys(&server, "", "").await.issuers[0].keys.len() == 1
    })
    .await;
    let keys = identity_keys(&server, "", "").await;
    let served = &keys.issuers[0].keys[0];
    assert_eq!(
        Token::decode_metadata(token).unwrap().key_id(),
        Some(served.kid.as_str())
    );
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from(["http://127.0.0.1/local-dev".to_string()])),
        allowed_audiences: Some(HashSet::from(["bedrock-gateway".to_string()])),
        ..Default::default()
    };
    let claims = Ed25519PublicKey::from_bytes(&served.x)
        .unwrap()
        .verify_token::<Map<String, Value>>(token, Some(options))
        .unwrap();
    assert_eq!(claims.subject.as_deref(), Some("alice"));
    assert_eq!(claims.custom["custom:tenant"], "team-a");
    assert_eq!(
        claims.custom["realm_access"],
        serde_json::json!({"roles": ["admin", "dev"], "region": "eu"})
    );
    assert_eq!(claims.custom["tier"], "gold");
    assert_eq!(claims.custom["n"], 3);
    let lifetime = claims.expires_at.unwrap().as_secs() - claims.issued_at.unwrap().as_secs();
    assert_eq!(lifetime, 900);
    server.stop().await.unwrap();

    // An issuer without a local key is refused by name.
    let output = mint(&config_path, &["--tenant", "t", "--issuer", "corp"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        format!(
            "{}: issuer \"corp\" has no local signing key: mint-token signs only for issuers with dev_signing_key or hs256_secret_env",
            config_path.display()
        )
    );
}

#[test]
fn hs256_tokens_are_signed_with_the_secret_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(
        &config_path,
        config(&["    - name: shared\n      issuer: http://127.0.0.1/shared\n      audiences: [bedrock-gateway]\n      algorithms: [HS256]\n      hs256_secret_env: MINT_TEST_SECRET\n".to_string()]),
    )
    .unwrap();
    let secret = "a-development-secret-of-at-least-32-bytes";
    let output = mint(
        &config_path,
        &["--tenant", "team-b"],
        &[("MINT_TEST_SECRET", secret)],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    let claims = HS256Key::from_bytes(secret.as_bytes())
        .verify_token::<Map<String, Value>>(token.trim_end(), None)
        .unwrap();
    assert_eq!(claims.custom["tenant"], "team-b");
    assert_eq!(claims.subject.as_deref(), Some("developer"));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(secret));

    // Without the variable the configuration itself is refused.
    let output = mint(&config_path, &["--tenant", "team-b"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("\"MINT_TEST_SECRET\", which is not set"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
