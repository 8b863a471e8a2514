use std::{collections::HashMap, time::UNIX_EPOCH};

use base64::Engine as _;
use jwt_simple::prelude::Ed25519KeyPair;
use serde_json::json;

use super::*;
use crate::{
    identity::{KeySource, fetch::FetchError},
    util::Secret,
};

const ISS: &str = "https://idp.example.com/";
const URL: &str = "https://idp.example.com/jwks";

struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    fn advance(&self, by: Duration) {
        *lock(&self.0) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *lock(&self.0)
    }
}

/// Serves documents from a map (changeable), counts requests, optionally slowly.
#[derive(Default)]
struct FakeHttp {
    documents: Mutex<HashMap<String, Result<Vec<u8>, FetchError>>>,
    hits: Mutex<HashMap<String, usize>>,
    delay: Duration,
}

impl FakeHttp {
    fn publish(&self, url: &str, kids: &[&str]) {
        let keys: Vec<_> = kids
            .iter()
            .map(|kid| {
                let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Ed25519KeyPair::generate().public_key().to_bytes());
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x})
            })
            .collect();
        let body = json!({ "keys": keys }).to_string().into_bytes();
        lock(&self.documents).insert(url.to_string(), Ok(body));
    }

    fn fail(&self, url: &str) {
        lock(&self.documents).insert(
            url.to_string(),
            Err(FetchError::Status {
                url: url.to_string(),
                status: 503,
            }),
        );
    }

    fn hits(&self, url: &str) -> usize {
        lock(&self.hits).get(url).copied().unwrap_or(0)
    }
}

impl HttpGet for FakeHttp {
    fn get<'a>(
        &'a self,
        url: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchError>> + Send + 'a>> {
        Box::pin(async move {
            *lock(&self.hits).entry(url.to_string()).or_default() += 1;
            tokio::time::sleep(self.delay).await;
            lock(&self.documents)
                .get(url)
                .cloned()
                .unwrap_or(Err(FetchError::Status {
                    url: url.to_string(),
                    status: 404,
                }))
        })
    }
}

fn remote(name: &str, url: &str) -> IssuerKeySource {
    IssuerKeySource {
        name: name.into(),
        issuer: ISS.into(),
        source: KeySource::JwksUri(url.into()),
        refresh: Duration::from_secs(300),
        min_refresh: Duration::from_secs(30),
    }
}

struct Setup {
    manager: KeyManager,
    http: Arc<FakeHttp>,
    clock: Arc<ManualClock>,
}

fn setup(delay: Duration) -> Setup {
    let http = Arc::new(FakeHttp {
        delay,
        ..Default::default()
    });
    let clock = Arc::new(ManualClock(Mutex::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )));
    let manager = KeyManager::new(
        Arc::clone(&http) as Arc<dyn HttpGet>,
        Arc::clone(&clock) as Arc<dyn Clock>,
        CancellationToken::new(),
    );
    Setup {
        manager,
        http,
        clock,
    }
}

fn kids(answer: &proto::IdentityKeys) -> Vec<Vec<String>> {
    answer
        .issuers
        .iter()
        .map(|i| i.keys.iter().map(|k| k.kid.clone()).collect())
        .collect()
}

async fn until_kids(manager: &KeyManager, expected: &[&[&str]]) {
    for _ in 0..200 {
        if kids(&manager.answer(60)) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "keys are {:?}, expected {expected:?}",
        kids(&manager.answer(60))
    );
}

#[tokio::test]
async fn reads_at_once_and_answers_with_a_stable_version() {
    let Setup { manager, http, .. } = setup(Duration::ZERO);
    http.publish(URL, &["a"]);
    manager.apply(&[remote("corp", URL)]);
    until_kids(&manager, &[&["a"]]).await;

    let answer = manager.answer(60);
    assert_eq!(answer.issuers[0].issuer, ISS);
    assert_eq!(
        answer.refresh_after_seconds, 60,
        "clamped to keys_refresh_seconds"
    );
    assert_eq!(
        manager.answer(3600).refresh_after_seconds,
        300,
        "the next scheduled read"
    );
    assert_eq!(manager.answer(60).version, answer.version);

    let report = &manager.report()[0];
    assert_eq!((report.name.as_str(), report.source), ("corp", "jwks_uri"));
    assert_eq!(report.location.as_deref(), Some(URL));
    assert_eq!((report.fetches, report.failures), (1, 0));
    assert!(report.last_success_at.is_some() && report.last_error.is_none());
}

#[tokio::test]
async fn an_unknown_kid_reads_again_at_most_once_per_minimum_interval() {
    let Setup {
        manager,
        http,
        clock,
    } = setup(Duration::ZERO);
    http.publish(URL, &["a"]);
    manager.apply(&[remote("corp", URL)]);
    until_kids(&manager, &[&["a"]]).await;
    let first = manager.answer(60).version;
    http.publish(URL, &["a", "b"]);

    // Just read: too soon.
    let answer = manager.identity_keys(ISS, "b", 60).await;
    assert_eq!(kids(&answer), [["a"]]);
    assert_eq!(http.hits(URL), 1);

    clock.advance(Duration::from_secs(30));
    let answer = manager.identity_keys(ISS, "b", 60).await;
    assert_eq!(kids(&answer), [["a", "b"]]);
    assert_ne!(answer.version, first);
    assert_eq!(http.hits(URL), 2);

    // Another unknown kid right after: no read.
    manager.identity_keys(ISS, "c", 60).await;
    assert_eq!(http.hits(URL), 2);
    // A kid the server already has, or an issuer it does not know: no read either.
    clock.advance(Duration::from_secs(60));
    manager.identity_keys(ISS, "b", 60).await;
    manager
        .identity_keys("https://other.example.com/", "x", 60)
        .await;
    assert_eq!(http.hits(URL), 2);
    assert_eq!(manager.report()[0].unknown_kid_refreshes, 1);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_read() {
    let Setup {
        manager,
        http,
        clock,
    } = setup(Duration::from_millis(200));
    http.publish(URL, &["a"]);
    manager.apply(&[remote("corp", URL)]);
    until_kids(&manager, &[&["a"]]).await;
    http.publish(URL, &["a", "b"]);
    clock.advance(Duration::from_secs(31));
    let answers = tokio::join!(
        manager.identity_keys(ISS, "b", 60),
        manager.identity_keys(ISS, "b", 60),
        manager.identity_keys(ISS, "z", 60),
        manager.identity_keys(ISS, "b", 60),
    );
    assert_eq!(http.hits(URL), 2);
    for answer in [answers.0, answers.1, answers.2, answers.3] {
        assert_eq!(kids(&answer), [["a", "b"]]);
    }
}

#[tokio::test]
async fn a_failed_read_keeps_the_last_good_keys() {
    let Setup {
        manager,
        http,
        clock,
    } = setup(Duration::ZERO);
    http.publish(URL, &["a"]);
    manager.apply(&[remote("corp", URL)]);
    until_kids(&manager, &[&["a"]]).await;
    http.fail(URL);
    clock.advance(Duration::from_secs(31));
    let answer = manager.identity_keys(ISS, "b", 60).await;
    assert_eq!(kids(&answer), [["a"]]);
    assert_eq!(answer.refresh_after_seconds, 1, "retried after a second");
    let report = &manager.report()[0];
    assert_eq!((report.fetches, report.failures), (2, 1));
    assert_eq!(
        report.last_error.as_deref(),
        Some("GET https://idp.example.com/jwks: HTTP status 503")
    );
}

#[tokio::test]
async fn reloads_keep_unchanged_issuers_and_replace_changed_ones() {
    let Setup { manager, http, .. } = setup(Duration::ZERO);
    let other = "https://idp.example.com/other-jwks";
    http.publish(URL, &["a"]);
    http.publish(other, &["o"]);
    manager.apply(&[remote("corp", URL)]);
    until_kids(&manager, &[&["a"]]).await;

    // Same source under a new name and interval: kept, nothing read.
    let mut renamed = remote("corporate", URL);
    renamed.refresh = Duration::from_secs(120);
    manager.apply(&[renamed.clone()]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(http.hits(URL), 1);
    assert_eq!(kids(&manager.answer(3600)), [["a"]]);
    assert_eq!(manager.answer(3600).refresh_after_seconds, 120);
    assert_eq!(manager.report()[0].name, "corporate");

    // Another source: read afresh; a second issuer added beside it.
    let dev = IssuerKeySource {
        name: "dev".into(),
        issuer: "http://127.0.0.1/dev".into(),
        source: KeySource::SharedSecret(Secret::new("0123456789abcdef0123456789abcdef")),
        refresh: Duration::from_secs(300),
        min_refresh: Duration::from_secs(30),
    };
    manager.apply(&[remote("corp", other), dev.clone()]);
    until_kids(&manager, &[&["o"], &[""]]).await;
    assert_eq!(manager.answer(60).issuers[1].keys[0].kty, "oct");

    manager.apply(&[]);
    let answer = manager.answer(60);
    assert!(answer.issuers.is_empty() && manager.report().is_empty());
    assert_eq!(answer.refresh_after_seconds, 60);
}

#[tokio::test]
async fn static_keys_need_no_reads() {
    let Setup { manager, http, .. } = setup(Duration::ZERO);
    let secret = IssuerKeySource {
        name: "dev".into(),
        issuer: "http://127.0.0.1/dev".into(),
        source: KeySource::SharedSecret(Secret::new("0123456789abcdef0123456789abcdef")),
        refresh: Duration::from_secs(300),
        min_refresh: Duration::from_secs(30),
    };
    manager.apply(&[secret]);
    let answer = manager.identity_keys("http://127.0.0.1/dev", "x", 45).await;
    assert_eq!(
        answer.issuers[0].keys[0].k,
        b"0123456789abcdef0123456789abcdef"
    );
    assert_eq!(answer.refresh_after_seconds, 45);
    assert!(lock(&http.hits).is_empty());
    let report = &manager.report()[0];
    assert_eq!((report.next_fetch_at, report.fetches), (None, 0));
    assert_eq!(report.kids, [""]);
}

#[test]
fn versions_follow_content_not_order() {
    let key = |kid: &str| proto::VerificationKey {
        kid: kid.into(),
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: vec![1; 32],
        ..Default::default()
    };
    let issuer = |iss: &str, keys: Vec<proto::VerificationKey>| proto::IssuerKeys {
        issuer: iss.into(),
        keys,
    };
    let one = [
        issuer("a", vec![key("1"), key("2")]),
        issuer("b", vec![key("3")]),
    ];
    let reordered = [
        issuer("b", vec![key("3")]),
        issuer("a", vec![key("2"), key("1")]),
    ];
    assert_eq!(keys_version(&one), keys_version(&reordered));
    let changed = [issuer("a", vec![key("1")]), issuer("b", vec![key("3")])];
    assert_ne!(keys_version(&one), keys_version(&changed));
    let moved = [
        issuer("a", vec![key("1"), key("2"), key("3")]),
        issuer("b", vec![]),
    ];
    assert_ne!(keys_version(&one), keys_version(&moved));
    assert_ne!(keys_version(&[]), keys_version(&changed));
}

#[test]
fn refresh_after_is_rounded_up_and_clamped() {
    let s = Duration::from_secs;
    assert_eq!(refresh_after_seconds(Some(s(30)), 60), 30);
    assert_eq!(
        refresh_after_seconds(Some(Duration::from_millis(29_100)), 60),
        30
    );
    assert_eq!(refresh_after_seconds(Some(s(300)), 60), 60);
    assert_eq!(refresh_after_seconds(Some(Duration::ZERO), 60), 1);
    assert_eq!(refresh_after_seconds(None, 60), 60);
    assert_eq!(refresh_after_seconds(None, 0), 1);
    assert_eq!(refresh_after_seconds(Some(s(u64::MAX)), u64::MAX), u32::MAX);
}
