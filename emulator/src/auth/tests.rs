use super::*;
use crate::config::Secret;
use crate::sigv4::CredentialScope;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const HOST_RUNTIME: &str = "bedrock-runtime.us-east-1.amazonaws.com";
const PATH: &str = "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
const BODY: &[u8] = br#"{"messages":[]}"#;
const DATE: &str = "20261122T001500Z";

fn now() -> SystemTime {
    sigv4::parse_amz_date(DATE).unwrap()
}

fn settings(any_host: bool) -> AuthSettings<'static> {
    AuthSettings {
        region: "us-east-1",
        any_host,
        max_clock_skew: Duration::from_secs(300),
    }
}

/// A request signed by this module's own primitives (checked against AWS's vectors in
/// `sigv4::tests`), which the tests below then perturb one property at a time.
struct Signed {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Signer<'a> {
    akid: &'a str,
    secret: &'a str,
    scope: CredentialScope,
    amz_date: &'a str,
    host: &'a str,
    token: Option<&'a str>,
    signed: &'a [&'a str],
}

impl Default for Signer<'_> {
    fn default() -> Self {
        Self {
            akid: AKID,
            secret: SECRET,
            scope: CredentialScope::new("20261122", "us-east-1", "bedrock"),
            amz_date: DATE,
            host: HOST_RUNTIME,
            token: None,
            signed: &["content-type", "host", "x-amz-date", "x-amz-security-token"],
        }
    }
}

impl Signer<'_> {
    fn sign(&self) -> Signed {
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("host".to_string(), self.host.to_string()),
            ("x-amz-date".to_string(), self.amz_date.to_string()),
        ];
        if let Some(token) = self.token {
            headers.push(("x-amz-security-token".into(), token.into()));
        }
        let signed: Vec<String> = self
            .signed
            .iter()
            .filter(|h| headers.iter().any(|(n, _)| n == *h))
            .map(|h| h.to_string())
            .collect();
        let request = RequestParts {
            method: "POST",
            raw_path: PATH,
            raw_query: None,
            headers: &headers,
            body: BODY,
        };
        let sts = sigv4::string_to_sign(
            self.amz_date,
            &self.scope,
            &sigv4::canonical_request(&request, &signed),
        );
        let signature = sigv4::signature(&sigv4::signing_key(self.secret, &self.scope), &sts);
        headers.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={signature}",
                self.akid,
                self.scope,
                signed.join(";")
            ),
        ));
        Signed {
            headers,
            body: BODY.to_vec(),
        }
    }
}

fn static_lookup(token: Option<&str>) -> impl Fn(&str) -> Lookup + '_ {
    move |akid| {
        if akid == AKID {
            Lookup::Valid {
                secret_access_key: Secret::new(SECRET),
                session_token: token.map(Secret::new),
            }
        } else if akid == "ASIAEXPIRED" {
            Lookup::Expired
        } else {
            Lookup::Unknown
        }
    }
}

fn check(signed: &Signed, any_host: bool, at: SystemTime, token: Option<&str>) -> AuthOutcome {
    let request = RequestParts {
        method: "POST",
        raw_path: PATH,
        raw_query: None,
        headers: &signed.headers,
        body: &signed.body,
    };
    authenticate(&request, &settings(any_host), at, static_lookup(token))
}

fn error_of(outcome: &AuthOutcome) -> (ErrorCode, String) {
    let err = outcome.result.clone().unwrap_err();
    (err.code, err.message)
}

#[test]
fn a_correctly_signed_request_names_its_service() {
    let outcome = check(&Signer::default().sign(), false, now(), None);
    assert_eq!(outcome.result, Ok(Some("bedrock-runtime")));
    assert_eq!(outcome.access_key_id.as_deref(), Some(AKID));
    let with_port = Signer {
        host: "bedrock-agent-runtime.us-east-1.amazonaws.com:443",
        ..Signer::default()
    };
    assert_eq!(
        check(&with_port.sign(), false, now(), None).result,
        Ok(Some("bedrock-agent-runtime"))
    );
}

#[test]
fn hosts() {
    let local = Signer {
        host: "127.0.0.1:4566",
        ..Signer::default()
    };
    assert_eq!(check(&local.sign(), true, now(), None).result, Ok(None));
    assert_eq!(
        error_of(&check(&local.sign(), false, now(), None)),
        (
            ErrorCode::InvalidSignature,
            "Host '127.0.0.1:4566' is not an endpoint of this service: expected \
             bedrock-runtime.us-east-1.amazonaws.com, or bedrock-agent-runtime.us-east-1.amazonaws.com, \
             or bedrock.us-east-1.amazonaws.com, or bedrock-agent.us-east-1.amazonaws.com."
                .to_string()
        )
    );
    let other_region = Signer {
        host: "bedrock-runtime.eu-west-1.amazonaws.com",
        ..Signer::default()
    };
    assert_eq!(
        error_of(&check(&other_region.sign(), false, now(), None)).1,
        "Host 'bedrock-runtime.eu-west-1.amazonaws.com' is not an endpoint of this service: \
         expected bedrock-runtime.us-east-1.amazonaws.com."
    );
    assert_eq!(strip_port("[::1]:4566"), "[::1]");
    assert_eq!(strip_port("example.com"), "example.com");
    assert_eq!(
        service_for_host("BEDROCK.us-east-1.amazonaws.com", "us-east-1"),
        Some("bedrock")
    );
    assert_eq!(
        service_for_host("bedrock.us-east-1.amazonaws.com.evil", "us-east-1"),
        None
    );
}

#[test]
fn missing_or_unparseable_authorization() {
    let mut signed = Signer::default().sign();
    signed.headers.retain(|(n, _)| n != "authorization");
    let outcome = check(&signed, false, now(), None);
    assert_eq!(
        error_of(&outcome),
        (
            ErrorCode::MissingAuthenticationToken,
            "Missing Authentication Token".into()
        )
    );
    assert_eq!(outcome.result.unwrap_err().status, 403);
    assert_eq!(outcome.access_key_id, None);

    signed
        .headers
        .push(("authorization".into(), "Bearer abc".into()));
    let outcome = check(&signed, false, now(), None);
    assert_eq!(error_of(&outcome).0, ErrorCode::IncompleteSignature);
    assert_eq!(outcome.access_key_id, None);
}

#[test]
fn credentials() {
    let unknown = Signer {
        akid: "AKIDUNKNOWN",
        ..Signer::default()
    };
    let outcome = check(&unknown.sign(), false, now(), None);
    assert_eq!(
        error_of(&outcome),
        (ErrorCode::UnrecognizedClient, INVALID_TOKEN.to_string())
    );
    assert_eq!(outcome.access_key_id.as_deref(), Some("AKIDUNKNOWN"));

    let expired = Signer {
        akid: "ASIAEXPIRED",
        ..Signer::default()
    };
    assert_eq!(
        error_of(&check(&expired.sign(), false, now(), None)),
        (ErrorCode::ExpiredToken, EXPIRED_TOKEN.to_string())
    );

    let with_token = Signer {
        token: Some("the-token"),
        ..Signer::default()
    };
    assert_eq!(
        check(&with_token.sign(), false, now(), Some("the-token")).result,
        Ok(Some("bedrock-runtime"))
    );
    for (presented, required) in [(None, "the-token"), (Some("other-token"), "the-token")] {
        let signer = Signer {
            token: presented,
            ..Signer::default()
        };
        assert_eq!(
            error_of(&check(&signer.sign(), false, now(), Some(required))),
            (ErrorCode::UnrecognizedClient, INVALID_TOKEN.to_string()),
            "{presented:?}"
        );
    }
}

#[test]
fn scope() {
    let wrong_service = Signer {
        scope: CredentialScope::new("20261122", "us-east-1", "bedrock-runtime"),
        ..Signer::default()
    };
    assert_eq!(
        error_of(&check(&wrong_service.sign(), false, now(), None)),
        (
            ErrorCode::InvalidSignature,
            "Credential should be scoped to correct service: 'bedrock'.".into()
        )
    );
    let wrong_region = Signer {
        scope: CredentialScope::new("20261122", "eu-west-1", "bedrock"),
        ..Signer::default()
    };
    assert_eq!(
        error_of(&check(&wrong_region.sign(), false, now(), None)).1,
        "Credential should be scoped to a valid region, not 'eu-west-1'. Expected 'us-east-1'."
    );
    let wrong_date = Signer {
        scope: CredentialScope::new("20261121", "us-east-1", "bedrock"),
        ..Signer::default()
    };
    assert_eq!(
        error_of(&check(&wrong_date.sign(), false, now(), None)).1,
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
         '20261121' != '20261122', from '20261122T001500Z'."
    );
}

#[test]
fn dates_and_clock_skew() {
    let signed = Signer::default().sign();
    let minutes = |m: u64| Duration::from_secs(m * 60);
    assert!(
        check(&signed, false, now() + minutes(5), None)
            .result
            .is_ok()
    );
    assert!(
        check(&signed, false, now() - minutes(5), None)
            .result
            .is_ok()
    );
    assert_eq!(
        error_of(&check(&signed, false, now() + minutes(6), None)),
        (
            ErrorCode::InvalidSignature,
            "Signature expired: 20261122T001500Z is now earlier than 20261122T001600Z \
             (20261122T002100Z - 5 min.)"
                .into()
        )
    );
    assert_eq!(
        error_of(&check(&signed, false, now() - minutes(6), None)).1,
        "Signature not yet current: 20261122T001500Z is still later than 20261122T001400Z \
         (20261122T000900Z + 5 min.)"
    );

    let mut no_date = Signer::default().sign();
    no_date.headers.retain(|(n, _)| n != "x-amz-date");
    assert_eq!(
        error_of(&check(&no_date, false, now(), None)),
        (
            ErrorCode::InvalidSignature,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .into()
        )
    );
    let bad_date = Signer {
        amz_date: "2026-11-22T00:15:00Z",
        ..Signer::default()
    };
    assert_eq!(
        error_of(&check(&bad_date.sign(), false, now(), None)).1,
        "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\", got '2026-11-22T00:15:00Z'."
    );
}

#[test]
fn host_must_be_signed() {
    let unsigned_host = Signer {
        signed: &["content-type", "x-amz-date"],
        ..Signer::default()
    };
    assert_eq!(
        error_of(&check(&unsigned_host.sign(), false, now(), None)).1,
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
    );
}

#[test]
fn content_sha256_must_match_the_body() {
    let mut signed = Signer::default().sign();
    signed
        .headers
        .push(("x-amz-content-sha256".into(), sigv4::sha256_hex(BODY)));
    assert!(check(&signed, false, now(), None).result.is_ok());
    signed.headers.last_mut().unwrap().1 = sigv4::sha256_hex(b"other");
    let (code, message) = error_of(&check(&signed, false, now(), None));
    assert_eq!(code, ErrorCode::InvalidSignature);
    assert!(
        message.starts_with("The provided 'x-amz-content-sha256' header does not match"),
        "{message}"
    );
}

#[test]
fn tampering_is_a_signature_mismatch() {
    let signer = Signer {
        token: Some("the-token"),
        ..Signer::default()
    };
    let mut body_changed = signer.sign();
    body_changed.body = b"{\"messages\":[1]}".to_vec();
    let mut header_changed = signer.sign();
    header_changed.headers[0].1 = "text/plain".into();
    let wrong_secret = Signer {
        secret: "not-the-secret",
        token: Some("the-token"),
        ..Signer::default()
    };
    for signed in [body_changed, header_changed, wrong_secret.sign()] {
        let outcome = check(&signed, false, now(), Some("the-token"));
        assert_eq!(
            error_of(&outcome),
            (ErrorCode::InvalidSignature, SIGNATURE_MISMATCH.to_string())
        );
        let diagnostic = outcome.diagnostic.unwrap();
        assert!(
            diagnostic.contains("x-amz-security-token:<redacted>"),
            "{diagnostic}"
        );
        assert!(!diagnostic.contains("the-token"), "{diagnostic}");
    }
}
