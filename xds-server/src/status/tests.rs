use std::time::{Duration, UNIX_EPOCH};

use super::*;

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
    status
        .reloads
        .reload_rejected("gateway.yaml: upstream.region: expected ...".into(), at);
    let report = status.report(at);
    assert_eq!(report.config.rejected_reloads, 1);
    assert_eq!(
        report.config.last_error,
        Some(crate::watch::LastError {
            message: "gateway.yaml: upstream.region: expected ...".into(),
            at: "1970-01-01T00:01:00Z".into()
        })
    );
    assert_eq!(report.config.config_version, "v1");
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

    status.reloads.config_loaded("v2".into(), at);
    let report = status.report(at);
    assert_eq!(report.config.last_error, None);
    assert_eq!(report.config.rejected_reloads, 1);
    assert_eq!(report.config.config_version, "v2");
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
    let first = status.streams.stream_opened();
    let second = status.streams.stream_opened();
    status.streams.nack_received();
    assert_eq!(status.report(UNIX_EPOCH).streams.xds_streams, 2);
    drop(first);
    let report = status.report(UNIX_EPOCH);
    assert_eq!((report.streams.xds_streams, report.streams.nacks), (1, 1));
    drop(second);
    let text = status.prometheus(UNIX_EPOCH);
    assert!(text.contains("xds_server_xds_streams 0\n"), "{text}");
    assert!(
        text.contains("xds_server_xds_streams_opened_total 2\n"),
        "{text}"
    );
    assert!(text.contains("xds_server_xds_nacks_total 1\n"), "{text}");
}

#[test]
fn identity_is_reported_per_issuer_without_secrets() {
    let (status, identity) = with_shared_secret_issuer("dev \"shared\"");
    let report = status.report(UNIX_EPOCH);
    let dev = &report.identity.identity["dev \"shared\""];
    assert_eq!(dev.source, "hs256_secret_env");
    assert_eq!((dev.keys, dev.kids.as_slice()), (1, &[String::new()][..]));
    assert_eq!((dev.fetches, dev.next_fetch_at), (0, None));
    assert_eq!(
        report.identity.identity_keys_version,
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
        metrics.contains("# TYPE xds_server_identity_key_fetch_failures counter\n"),
        "{metrics}"
    );
}

/// `/status` keeps the shape it had when the server wrote it in one place: the same members,
/// in the same order, each component's report flattened where it was.
#[test]
fn status_document_keeps_its_members_and_order() {
    let (status, _) = with_shared_secret_issuer("dev");
    let report = status.report(UNIX_EPOCH);
    let top = members(&serde_json::to_string(&report).unwrap());
    assert_eq!(
        top,
        [
            "config_file",
            "config_version",
            "loaded_at",
            "last_error",
            "rejected_reloads",
            "xds_streams",
            "nacks",
            "credentials",
            "identity_keys_version",
            "identity",
            "quotas"
        ]
    );
    assert_eq!(
        members(&serde_json::to_string(&report.credentials).unwrap()),
        [
            "available",
            "access_key_id_prefix",
            "expires_at",
            "last_refresh_error"
        ]
    );
    assert_eq!(
        members(&serde_json::to_string(&report.identity.identity["dev"]).unwrap()),
        [
            "issuer",
            "source",
            "location",
            "keys",
            "kids",
            "last_fetch_at",
            "last_success_at",
            "next_fetch_at",
            "last_error",
            "fetches",
            "fetch_failures",
            "unknown_kid_refreshes"
        ]
    );
    let document = serde_json::to_value(&report).unwrap();
    assert_eq!(document["identity"]["dev"]["keys"], 1);
    assert_eq!(document["loaded_at"], "1970-01-01T00:00:00Z");
}

/// The member names of a JSON object's text, in the order written.
fn members(object: &str) -> Vec<String> {
    let (mut depth, mut in_string, mut escaped) = (0, false, false);
    let (mut current, mut names, mut last) = (String::new(), Vec::new(), None);
    for c in object.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    in_string = false;
                    last = Some(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ':' if depth == 1 => names.extend(last.take()),
            _ => last = None,
        }
    }
    names
}

/// A server status whose one issuer, `name`, has an HS256 development secret.
fn with_shared_secret_issuer(name: &str) -> (ServerStatus, Arc<crate::identity::KeyManager>) {
    use crate::{
        identity::{IssuerKeySource, KeySource},
        util::Secret,
    };
    let identity = crate::identity::KeyManager::for_tests();
    identity.apply(&[IssuerKeySource {
        name: name.into(),
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
    (status, identity)
}
