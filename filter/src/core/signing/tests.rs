use super::*;
use gateway_common::proto::SigningCredentials;
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn identity(token: Option<&str>) -> SigningIdentity {
    SigningIdentity::from_proto(
        SigningCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SECRET.into(),
            session_token: token.unwrap_or_default().into(),
            expires_at_unix_seconds: 0,
            refresh_after_seconds: 0,
        },
        0,
    )
    .unwrap()
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// 2015-08-30T12:36:00Z, the date of AWS's published SigV4 examples.
const EXAMPLE_TIME: u64 = 1_440_938_160;

fn input<'a>(headers: &'a [(String, Vec<u8>)], path: &'a str, hash: &'a str) -> SigningInput<'a> {
    SigningInput {
        method: "POST",
        path,
        headers,
        payload_sha256_hex: hash,
        region: "us-east-1",
        signing_name: "bedrock",
        now: UNIX_EPOCH + Duration::from_secs(EXAMPLE_TIME),
    }
}

fn get<'a>(out: &'a [(String, String)], name: &str) -> Option<&'a str> {
    out.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The same request signed by aws-sigv4's own `sign()`: the reference our canonical request
/// must reproduce exactly.
fn oracle(input: &SigningInput<'_>, token: Option<&str>) -> Option<(String, String)> {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_smithy_runtime_api::client::identity::Identity;
    let identity: Identity = Credentials::new(
        "AKIDEXAMPLE",
        SECRET,
        token.map(str::to_string),
        None,
        "test",
    )
    .into();
    let headers: Vec<(&str, &str)> = input
        .headers
        .iter()
        .filter_map(|(n, v)| {
            let name = if n == ":authority" {
                "host"
            } else if is_signed(n) {
                n.as_str()
            } else {
                return None;
            };
            Some((name, std::str::from_utf8(v).ok()?))
        })
        .collect();
    let request = SignableRequest::new(
        input.method,
        input.path,
        headers.into_iter(),
        SignableBody::Precomputed(input.payload_sha256_hex.to_string()),
    )
    .ok()?;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(input.region)
        .name(input.signing_name)
        .time(input.now)
        .settings(SigningSettings::default())
        .build()
        .ok()?
        .into();
    let (instructions, _) = sign(request, &params).ok()?.into_parts();
    let find = |name: &str| {
        instructions
            .headers()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    Some((find("authorization")?, find("x-amz-date")?))
}

#[test]
fn signs_host_content_type_and_amz_headers_only() {
    let headers = h(&[
        (":method", "POST"),
        (":path", "/model/m/converse"),
        ("content-type", "application/json"),
        ("user-agent", "Boto3"),
        ("accept", "*/*"),
        ("x-amzn-bedrock-trace", "ENABLED"),
        (":authority", "bedrock-runtime.us-east-1.amazonaws.com"),
        ("x-bedrock-gateway-cluster", "c"),
    ]);
    let out = signature_headers(
        &input(&headers, "/model/m/converse", EMPTY_SHA256),
        &identity(None),
    )
    .unwrap();
    let auth = get(&out, "authorization").unwrap();
    assert!(
        auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, "
        ),
        "{auth}"
    );
    assert!(
        auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amzn-bedrock-trace,"),
        "{auth}"
    );
    assert_eq!(get(&out, "x-amz-date"), Some("20150830T123600Z"));
    assert_eq!(get(&out, "x-amz-security-token"), None);
}

#[test]
fn session_token_is_sent_and_signed() {
    let headers = h(&[(":authority", "bedrock-runtime.us-east-1.amazonaws.com")]);
    let out = signature_headers(
        &input(&headers, "/model/m/invoke", EMPTY_SHA256),
        &identity(Some("TOKEN")),
    )
    .unwrap();
    assert_eq!(get(&out, "x-amz-security-token"), Some("TOKEN"));
    assert!(
        get(&out, "authorization")
            .unwrap()
            .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,")
    );
}

#[test]
fn signature_depends_on_body_path_and_host() {
    let headers = h(&[(":authority", "bedrock-runtime.us-east-1.amazonaws.com")]);
    let other_host = h(&[(
        ":authority",
        "bedrock-agent-runtime.us-east-1.amazonaws.com",
    )]);
    let credentials = identity(None);
    let sig = |headers: &[(String, Vec<u8>)], path: &str, hash: &str| {
        let out = signature_headers(&input(headers, path, hash), &credentials).unwrap();
        get(&out, "authorization")
            .unwrap()
            .rsplit('=')
            .next()
            .unwrap()
            .to_string()
    };
    let base = sig(&headers, "/model/m/invoke", EMPTY_SHA256);
    assert_eq!(base, sig(&headers, "/model/m/invoke", EMPTY_SHA256));
    assert_ne!(base, sig(&headers, "/model/m/invoke?x=1", EMPTY_SHA256));
    assert_ne!(base, sig(&headers, "/model/n/invoke", EMPTY_SHA256));
    assert_ne!(base, sig(&other_host, "/model/m/invoke", EMPTY_SHA256));
    let mut hasher = BodyHasher::default();
    hasher.update(b"{}");
    assert_ne!(base, sig(&headers, "/model/m/invoke", &hasher.finish_hex()));
}

#[test]
fn known_signature() {
    // Independent check: the expected value was computed with botocore's SigV4Auth for the same
    // request (POST https://bedrock-runtime.us-east-1.amazonaws.com/model/a%3Ab/converse,
    // body "{}", content-type application/json, same key and time).
    let headers = h(&[
        (":authority", "bedrock-runtime.us-east-1.amazonaws.com"),
        ("content-type", "application/json"),
    ]);
    let mut hasher = BodyHasher::default();
    hasher.update(b"{");
    hasher.update(b"}");
    assert_eq!(hasher.consumed(), 2);
    let hash = hasher.finish_hex();
    let out = signature_headers(
        &input(&headers, "/model/a%3Ab/converse", &hash),
        &identity(None),
    )
    .unwrap();
    assert_eq!(
        get(&out, "authorization").unwrap(),
        include_str!("known_signature.txt").trim()
    );
}

#[test]
fn the_signing_key_is_derived_once_a_day() {
    let credentials = identity(None);
    let day = UNIX_EPOCH + Duration::from_secs(EXAMPLE_TIME);
    let key = credentials.signing_key("20150830", "us-east-1", "bedrock", day);
    let expected = aws_sigv4::sign::v4::generate_signing_key(SECRET, day, "us-east-1", "bedrock");
    assert_eq!(key, expected.as_ref());
    let next_day = day + Duration::from_secs(86_400);
    assert_ne!(
        credentials.signing_key("20150831", "us-east-1", "bedrock", next_day),
        key
    );
}

#[test]
fn refuses_to_sign_control_characters() {
    let headers = h(&[(":authority", "h"), ("x-amz-target", "a\u{1}b")]);
    assert_eq!(
        signature_headers(&input(&headers, "/", EMPTY_SHA256), &identity(None)).unwrap_err(),
        SignError::UnsignableHeader("x-amz-target".into())
    );
}

#[test]
fn empty_hash_constant() {
    assert_eq!(BodyHasher::default().finish_hex(), EMPTY_SHA256);
    let mut hasher = BodyHasher::default();
    hasher.update(b"abc");
    assert_eq!(
        hasher.finish_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn calendar() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(20_779), (2026, 11, 22));
    assert_eq!(
        timestamps(UNIX_EPOCH + Duration::from_secs(EXAMPLE_TIME)),
        (*b"20150830", *b"20150830T123600Z")
    );
    assert_eq!(
        timestamps(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
        (*b"20991231", *b"20991231T235959Z")
    );
}

fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._~-]{0,12}",
        Just(".".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        "(%[0-9A-F]{2}|[a-z:+@!$&'()*,;=]){1,6}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            "[a-zA-Z0-9%+._~-]{0,6}",
            prop::option::of("[a-zA-Z0-9%+=._~ -]{0,8}"),
        ),
        0..4,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={}", v.replace(' ', "+")),
                None => k,
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Every request we sign gets exactly aws-sigv4's signature.
    #[test]
    fn same_signature_as_aws_sigv4(
        segments in prop::collection::vec(path_segment(), 0..6),
        trailing_slash in any::<bool>(),
        query in query(),
        content_type in prop::option::of("[ a-z/;=-]{0,20}"),
        amz in prop::collection::vec(("x-amzn?-[a-z-]{1,10}", "[ -~]{0,16}"), 0..4),
        token in prop::option::of("[A-Za-z0-9/+=]{1,40}"),
        seconds in 0u64..4_102_444_800,
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if trailing_slash {
            path.push('/');
        }
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let mut headers = h(&[(":authority", "bedrock-runtime.us-east-1.amazonaws.com")]);
        if let Some(ct) = content_type {
            headers.push(("content-type".into(), ct.into_bytes()));
        }
        for (name, value) in amz {
            prop_assume!(name != "x-amz-date" && name != "x-amz-security-token" && name != "x-amzn-trace-id");
            headers.push((name, value.into_bytes()));
        }
        let signing = SigningInput {
            method,
            path: &path,
            headers: &headers,
            payload_sha256_hex: EMPTY_SHA256,
            region: "eu-central-1",
            signing_name: "bedrock",
            now: UNIX_EPOCH + Duration::from_secs(seconds),
        };
        let reference = oracle(&signing, token.as_deref());
        prop_assume!(reference.is_some());
        let (authorization, date) = reference.unwrap();
        let ours = signature_headers(&signing, &identity(token.as_deref())).unwrap();
        prop_assert_eq!(get(&ours, "x-amz-date"), Some(date.as_str()));
        prop_assert_eq!(get(&ours, "authorization"), Some(authorization.as_str()));
        prop_assert_eq!(get(&ours, "x-amz-security-token"), token.as_deref());
    }
}

/// One identity signs many requests, as a worker does: requests of one second that differ
/// only in their body, others on other paths or in other seconds, with a session token as
/// long as STS gives. Every signature is aws-sigv4's, whether the canonical request's hash
/// started from a kept state or not.
#[test]
fn signatures_from_kept_hash_states_are_aws_sigv4s() {
    let token = "FwoGZXIvYXdzE".repeat(80);
    let credentials = identity(Some(&token));
    let headers = h(&[
        (":authority", "bedrock-runtime.us-east-1.amazonaws.com"),
        ("content-type", "application/json"),
    ]);
    let paths = [
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream",
        "/model/amazon.titan-embed-text-v2:0/invoke",
    ];
    let mut seen = 0;
    for second in 0..3u64 {
        for round in 0..4 {
            // More paths than one second needs, in turns, so kept states are found, missed
            // and replaced.
            for (i, path) in paths.iter().enumerate() {
                let hash = hex32(&Sha256::digest(format!("{second}/{round}/{i}")).into());
                let signing = SigningInput {
                    now: UNIX_EPOCH + Duration::from_secs(EXAMPLE_TIME + second),
                    ..input(&headers, path, text(&hash))
                };
                let (authorization, _) = oracle(&signing, Some(&token)).unwrap();
                let ours = signature_headers(&signing, &credentials).unwrap();
                assert_eq!(get(&ours, "authorization"), Some(authorization.as_str()));
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 36);
}

/// Strings to sign of one second begin alike: the HMAC resumes after their first block, and
/// gives the tag a fresh HMAC gives, for strings that begin alike and for those that do not.
#[test]
fn the_hmac_resumes_after_a_first_block_it_has_seen() {
    use hmac::{Hmac, KeyInit, Mac};
    let credentials = identity(None);
    let day = UNIX_EPOCH + Duration::from_secs(EXAMPLE_TIME);
    let key = credentials.signing_key("20150830", "us-east-1", "bedrock", day);
    let fresh = |data: &[u8]| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().into()
    };
    let first = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/bedrock/aws4_request\n";
    let strings = [
        format!("{first}{}", "a".repeat(64)),
        format!("{first}{}", "b".repeat(64)),
        format!("{}{}", first.replace("123600", "123601"), "a".repeat(64)),
        "short".to_string(),
        format!("{first}{}", "a".repeat(64)),
        first[..64].to_string(),
    ];
    for string in &strings {
        assert_eq!(
            credentials.sign_string("20150830", "us-east-1", "bedrock", day, string.as_bytes()),
            fresh(string.as_bytes()),
            "{string:?}"
        );
    }
}
