use std::time::{Duration, UNIX_EPOCH};

use super::*;

#[test]
fn formats_rfc3339() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_000_000) + Duration::from_millis(900)),
        "2026-11-18T11:06:40Z"
    );
}

#[test]
fn reload_errors_are_reported_until_a_reload_succeeds() {
    let status = ServerStatus::new(
        "gateway.yaml".into(),
        "v1".into(),
        UNIX_EPOCH,
        Arc::new(CredentialStore::default()),
        crate::identity::KeyManager::for_tests(),
        crate::quota::QuotaEngine::for_tests(),
    );
    let at = UNIX_EPOCH + Duration::from_secs(60);
    status.reload_rejected("gateway.yaml: upstream.region: expected ...".into(), at);
    let report = status.report(at);
    assert_eq!(report.rejected_reloads, 1);
    assert_eq!(
        report.last_error,
        Some(LastError {
            message: "gateway.yaml: upstream.region: expected ...".into(),
            at: "1970-01-01T00:01:00Z".into()
        })
    );
    assert_eq!(report.config_version, "v1");
    assert!(
        status
            .prometheus(at)
            .contains("xds_server_config_rejected_reloads_total 1\n")
    );
    assert!(
        status
            .prometheus(at)
            .contains("xds_server_config_last_reload_failed 1\n")
    );

    status.config_loaded("v2".into(), at);
    let report = status.report(at);
    assert_eq!(report.last_error, None);
    assert_eq!(report.rejected_reloads, 1);
    assert_eq!(report.config_version, "v2");
    assert!(
        status
            .prometheus(at)
            .contains("xds_server_config_last_reload_failed 0\n")
    );
}

#[test]
fn counts_open_streams_and_nacks() {
    let status = Arc::new(ServerStatus::new(
        "f".into(),
        "v".into(),
        UNIX_EPOCH,
        Arc::new(CredentialStore::default()),
        crate::identity::KeyManager::for_tests(),
        crate::quota::QuotaEngine::for_tests(),
    ));
    let first = status.stream_opened();
    let second = status.stream_opened();
    status.nack_received();
    assert_eq!(status.report(UNIX_EPOCH).xds_streams, 2);
    drop(first);
    let report = status.report(UNIX_EPOCH);
    assert_eq!((report.xds_streams, report.nacks), (1, 1));
    drop(second);
    let text = status.prometheus(UNIX_EPOCH);
    assert!(text.contains("xds_server_xds_streams 0\n"), "{text}");
    assert!(text.contains("xds_server_xds_streams_total 2\n"), "{text}");
    assert!(text.contains("xds_server_xds_nacks_total 1\n"), "{text}");
}

#[test]
fn identity_is_reported_per_issuer_without_secrets() {
    use crate::{
        credentials::Secret,
        identity::{IssuerKeySource, KeySource},
    };
    let identity = crate::identity::KeyManager::for_tests();
    identity.apply(&[IssuerKeySource {
        name: "dev \"shared\"".into(),
        issuer: "http://127.0.0.1/dev".into(),
        source: KeySource::SharedSecret(Secret::new("a-development-secret-of-32-bytes!")),
        refresh: Duration::from_secs(300),
        min_refresh: Duration::from_secs(30),
    }]);
    let status = ServerStatus::new(
        "f".into(),
        "v".into(),
        UNIX_EPOCH,
        Arc::new(CredentialStore::default()),
        Arc::clone(&identity),
        crate::quota::QuotaEngine::for_tests(),
    );
    let report = status.report(UNIX_EPOCH);
    let dev = &report.identity["dev \"shared\""];
    assert_eq!(dev.source, "hs256_secret_env");
    assert_eq!((dev.keys, dev.kids.as_slice()), (1, &[String::new()][..]));
    assert_eq!((dev.fetches, dev.next_fetch_at.as_deref()), (0, None));
    assert_eq!(
        report.identity_keys_version,
        format!("{:016x}", identity.version())
    );
    let json = serde_json::to_string(&report).unwrap();
    let metrics = status.prometheus(UNIX_EPOCH);
    for text in [&json, &metrics] {
        assert!(!text.contains("development-secret"), "{text}");
    }
    assert!(
        metrics.contains("xds_server_identity_keys{issuer=\"dev \\\"shared\\\"\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE xds_server_identity_key_fetch_failures_total counter\n"),
        "{metrics}"
    );
}
