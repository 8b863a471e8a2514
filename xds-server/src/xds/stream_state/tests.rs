use std::path::Path;

use super::*;
use crate::{
    config::{self, Overrides},
    snapshot::{ROUTE_CONFIG_NAME, Snapshot, listener::WASM_FILTER_NAME},
    xds::type_url::{CLUSTER, EXTENSION_CONFIG, LISTENER, ROUTE_CONFIGURATION},
};

fn snapshot(extra_upstream: &str) -> Snapshot {
    let text = format!(
        "upstream:\n  region: us-east-1\n{extra_upstream}filter: {{wasm_path: /f.wasm}}\nauth: {{mode: none}}\n"
    );
    Snapshot::build(&config::parse("g.yaml", &text, Path::new("/"), &Overrides::default()).unwrap())
}

/// Upstream settings that change every resource type.
const ALL_CHANGED: &str =
    "  max_request_body_bytes: 2000\n  connect_timeout_ms: 10\n  stream_idle_timeout_seconds: 60\n";

fn request(type_url: &str, version: &str, nonce: &str, names: &[&str]) -> Request {
    Request {
        type_url: type_url.to_string(),
        version_info: version.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.to_string(),
        error: None,
    }
}

fn version(snapshot: &Snapshot, type_url: &str) -> String {
    snapshot.get(type_url).unwrap().version.clone()
}

/// Subscribes to CDS, ECDS, LDS and RDS and acknowledges each response; returns the state and
/// the acknowledged responses.
fn subscribed_with_responses(snapshot: &Snapshot) -> (StreamState, Vec<Response>) {
    let mut state = StreamState::new();
    let mut acked = Vec::new();
    for (type_url, names) in [
        (CLUSTER, vec![]),
        (EXTENSION_CONFIG, vec![WASM_FILTER_NAME]),
        (LISTENER, vec![]),
        (ROUTE_CONFIGURATION, vec![ROUTE_CONFIG_NAME]),
    ] {
        let response = state
            .on_request(&request(type_url, "", "", &names), snapshot)
            .response
            .unwrap();
        let outcome = state.on_request(
            &request(type_url, &response.version, &response.nonce, &names),
            snapshot,
        );
        assert_eq!(
            outcome.event,
            RequestEvent::Ack {
                version: response.version.clone()
            }
        );
        assert_eq!(outcome.response, None);
        acked.push(response);
    }
    (state, acked)
}

fn subscribed(snapshot: &Snapshot) -> StreamState {
    subscribed_with_responses(snapshot).0
}

#[test]
fn first_request_gets_everything_of_a_wildcard_type() {
    let snapshot = snapshot("");
    let mut state = StreamState::new();
    let outcome = state.on_request(&request(CLUSTER, "", "", &[]), &snapshot);
    assert_eq!(outcome.event, RequestEvent::Subscribed);
    let response = outcome.response.unwrap();
    assert_eq!(response.type_url, CLUSTER);
    assert_eq!(response.version, version(&snapshot, CLUSTER));
    assert_eq!(response.resources.len(), 4);
    assert!(!response.nonce.is_empty());

    // LDS next: its own nonce.
    let listener = state
        .on_request(&request(LISTENER, "", "", &[]), &snapshot)
        .response
        .unwrap();
    assert_eq!(listener.resources.len(), 1);
    assert_ne!(listener.nonce, response.nonce);
}

#[test]
fn a_first_request_is_answered_whatever_it_carries() {
    // Envoy reconnecting (to this or another replica) sends what it had on the old stream.
    let snapshot = snapshot("");
    let mut state = StreamState::new();
    let outcome = state.on_request(&request(LISTENER, "old-version", "41", &[]), &snapshot);
    assert_eq!(outcome.event, RequestEvent::Subscribed);
    assert_eq!(
        outcome.response.unwrap().version,
        version(&snapshot, LISTENER)
    );
}

#[test]
fn ack_records_the_version_and_sends_nothing() {
    let snapshot = snapshot("");
    let mut state = StreamState::new();
    let response = state
        .on_request(&request(LISTENER, "", "", &[]), &snapshot)
        .response
        .unwrap();
    assert_eq!(state.acked_version(LISTENER), None);
    let outcome = state.on_request(
        &request(LISTENER, &response.version, &response.nonce, &[]),
        &snapshot,
    );
    assert_eq!(
        outcome.event,
        RequestEvent::Ack {
            version: response.version.clone()
        }
    );
    assert_eq!(outcome.response, None);
    assert_eq!(
        state.acked_version(LISTENER),
        Some(response.version.as_str())
    );
    assert!(state.on_snapshot(&snapshot).is_empty(), "nothing changed");
}

#[test]
fn nack_is_reported_and_that_version_is_not_sent_again() {
    let first = snapshot("");
    let mut state = subscribed(&first);
    let second = snapshot("  connect_timeout_ms: 100\n");
    let pushed = state.on_snapshot(&second);
    assert_eq!(pushed.len(), 1);
    let clusters = &pushed[0];
    assert_eq!(clusters.type_url, CLUSTER);

    let mut nack = request(CLUSTER, &version(&first, CLUSTER), &clusters.nonce, &[]);
    nack.error = Some("cluster bedrock.us-east-1: invalid".into());
    let outcome = state.on_request(&nack, &second);
    assert_eq!(
        outcome.event,
        RequestEvent::Nack {
            version: version(&second, CLUSTER),
            message: "cluster bedrock.us-east-1: invalid".into()
        }
    );
    assert_eq!(outcome.response, None);
    assert_eq!(
        state.nacked_version(CLUSTER),
        Some(version(&second, CLUSTER).as_str())
    );
    assert_eq!(
        state.acked_version(CLUSTER),
        Some(version(&first, CLUSTER).as_str())
    );
    // The same snapshot again (a rewrite with identical content): not resent.
    assert!(state.on_snapshot(&second).is_empty());
    // A fixed configuration is pushed.
    let third = snapshot("  connect_timeout_ms: 200\n");
    let pushed = state.on_snapshot(&third);
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].version, version(&third, CLUSTER));
}

#[test]
fn stale_requests_are_ignored() {
    let first = snapshot("");
    let (mut state, acked) = subscribed_with_responses(&first);
    let older_nonce = acked[0].nonce.clone();
    assert_eq!(acked[0].type_url, CLUSTER);
    let second = snapshot("  connect_timeout_ms: 100\n");
    let pushed = state.on_snapshot(&second);
    assert_eq!(pushed.len(), 1);
    // A request answering an earlier response (sent before the push) is stale, even a NACK.
    let mut stale = request(CLUSTER, &version(&first, CLUSTER), &older_nonce, &[]);
    assert_ne!(stale.response_nonce, pushed[0].nonce);
    stale.error = Some("late complaint".into());
    let outcome = state.on_request(&stale, &second);
    assert_eq!(outcome.event, RequestEvent::Stale { nonce: older_nonce });
    assert_eq!(outcome.response, None);
    assert_eq!(state.nacked_version(CLUSTER), None);
    // The answer to the latest response counts.
    let ack = state.on_request(
        &request(CLUSTER, &pushed[0].version, &pushed[0].nonce, &[]),
        &second,
    );
    assert_eq!(
        ack.event,
        RequestEvent::Ack {
            version: pushed[0].version.clone()
        }
    );
}

#[test]
fn rds_follows_the_requested_names() {
    let snapshot = snapshot("");
    let mut state = StreamState::new();
    // No names yet: nothing to send.
    let outcome = state.on_request(&request(ROUTE_CONFIGURATION, "", "", &[]), &snapshot);
    assert_eq!(
        (outcome.event, outcome.response),
        (RequestEvent::Subscribed, None)
    );

    let outcome = state.on_request(
        &request(ROUTE_CONFIGURATION, "", "", &[ROUTE_CONFIG_NAME]),
        &snapshot,
    );
    assert_eq!(outcome.event, RequestEvent::Subscribed);
    let response = outcome.response.unwrap();
    assert_eq!(response.resources.len(), 1);

    // ACK that also changes the names: acknowledged, and answered for the new names.
    let outcome = state.on_request(
        &request(
            ROUTE_CONFIGURATION,
            &response.version,
            &response.nonce,
            &["other", ROUTE_CONFIG_NAME],
        ),
        &snapshot,
    );
    assert_eq!(
        outcome.event,
        RequestEvent::Ack {
            version: response.version.clone()
        }
    );
    let renamed = outcome.response.expect("new names are answered");
    assert_eq!(renamed.resources.len(), 1, "only existing routes are sent");
    assert_ne!(renamed.nonce, response.nonce);

    // Same names in another order: nothing new.
    let outcome = state.on_request(
        &request(
            ROUTE_CONFIGURATION,
            &renamed.version,
            &renamed.nonce,
            &[ROUTE_CONFIG_NAME, "other", "other"],
        ),
        &snapshot,
    );
    assert_eq!(outcome.response, None);

    let outcome = state.on_request(
        &request(
            ROUTE_CONFIGURATION,
            &renamed.version,
            &renamed.nonce,
            &["other"],
        ),
        &snapshot,
    );
    assert_eq!(outcome.response.unwrap().resources.len(), 0);
}

#[test]
fn a_new_snapshot_pushes_only_changed_types_in_order() {
    let first = snapshot("");
    let mut state = subscribed(&first);
    assert!(state.on_snapshot(&first).is_empty());

    let routes_changed = snapshot("  request_timeout_seconds: 30\n");
    let pushed = state.on_snapshot(&routes_changed);
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [ROUTE_CONFIGURATION]);
    assert_eq!(
        pushed[0].version,
        version(&routes_changed, ROUTE_CONFIGURATION)
    );
    assert_eq!(pushed[0].resources.len(), 1);

    // The filter's JSON and the route's buffer limit change: ECDS, then RDS; the listener
    // stays as it is.
    let filter_changed = snapshot("  max_request_body_bytes: 1000\n");
    let pushed = state.on_snapshot(&filter_changed);
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [EXTENSION_CONFIG, ROUTE_CONFIGURATION]);

    // Everything changes: clusters, the filter's JSON, the listener's idle timeout and the
    // route's buffer limit.
    let all_changed = snapshot(ALL_CHANGED);
    let pushed = state.on_snapshot(&all_changed);
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        types,
        [CLUSTER, EXTENSION_CONFIG, LISTENER, ROUTE_CONFIGURATION]
    );
    let nonces: std::collections::BTreeSet<&str> =
        pushed.iter().map(|r| r.nonce.as_str()).collect();
    assert_eq!(nonces.len(), 4, "every response has its own nonce");
}

#[test]
fn types_not_subscribed_or_not_served_are_left_alone() {
    let first = snapshot("");
    let mut state = StreamState::new();
    state.on_request(&request(LISTENER, "", "", &[]), &first);
    let outcome = state.on_request(
        &request(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "",
            "",
            &[],
        ),
        &first,
    );
    assert_eq!(
        (outcome.event, outcome.response),
        (RequestEvent::Unsupported, None)
    );
    // Only LDS was subscribed: a change of everything pushes only LDS.
    let pushed = state.on_snapshot(&snapshot(ALL_CHANGED));
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [LISTENER]);
}
