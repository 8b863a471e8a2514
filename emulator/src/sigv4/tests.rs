use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn names(list: &str) -> Vec<String> {
    list.split(';').map(str::to_string).collect()
}

struct Vector {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: Vec<(String, String)>,
    signed: &'static str,
    body: &'static [u8],
    amz_date: &'static str,
    scope: CredentialScope,
    canonical_request: String,
    signature: &'static str,
}

/// Cases of the AWS SigV4 test suite (as shipped in awslabs' signing test suite) plus a Bedrock
/// request whose signature botocore's `SigV4Auth` produced, all signed with the suite's example
/// secret. The expected strings are the suite's files, not output of this module.
fn vectors() -> Vec<Vector> {
    let suite_scope = CredentialScope::new("20150830", "us-east-1", "service");
    let vanilla_creq = format!(
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"
    );
    let form_hash = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";
    let bedrock_body: &[u8] = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let bedrock_hash = "c3335e07d6e89650bf94cb98664be69f8774dbc3198df221f113db0a59ea14f0";
    vec![
        Vector {
            name: "get-vanilla",
            method: "GET",
            path: "/",
            query: None,
            headers: headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            signed: "host;x-amz-date",
            body: b"",
            amz_date: "20150830T123600Z",
            scope: suite_scope.clone(),
            canonical_request: vanilla_creq.clone(),
            signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
        Vector {
            name: "get-slash-dot-slash-normalized",
            method: "GET",
            path: "/./",
            query: None,
            headers: headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            signed: "host;x-amz-date",
            body: b"",
            amz_date: "20150830T123600Z",
            scope: suite_scope.clone(),
            canonical_request: vanilla_creq,
            signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
        Vector {
            name: "post-x-www-form-urlencoded",
            method: "POST",
            path: "/",
            query: None,
            headers: headers(&[
                ("content-type", "application/x-www-form-urlencoded"),
                ("host", "example.amazonaws.com"),
                ("content-length", "13"),
                ("x-amz-content-sha256", form_hash),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            signed: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            body: b"Param1=value1",
            amz_date: "20150830T123600Z",
            scope: suite_scope.clone(),
            canonical_request: format!(
                "POST\n/\n\ncontent-length:13\ncontent-type:application/x-www-form-urlencoded\n\
                 host:example.amazonaws.com\nx-amz-content-sha256:{form_hash}\n\
                 x-amz-date:20150830T123600Z\n\n\
                 content-length;content-type;host;x-amz-content-sha256;x-amz-date\n{form_hash}"
            ),
            signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        },
        Vector {
            name: "get-vanilla-query-order-encoded",
            method: "GET",
            path: "/",
            query: Some("Param-3=Value3&Param=Value2&%E1%88%B4=Value1"),
            headers: headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            signed: "host;x-amz-date",
            body: b"",
            amz_date: "20150830T123600Z",
            scope: suite_scope.clone(),
            canonical_request: format!(
                "GET\n/\n%E1%88%B4=Value1&Param=Value2&Param-3=Value3\nhost:example.amazonaws.com\n\
                 x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"
            ),
            signature: "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        },
        Vector {
            name: "get-header-value-trim",
            method: "GET",
            path: "/",
            query: None,
            headers: headers(&[
                ("host", "example.amazonaws.com"),
                ("my-header1", " value1"),
                ("my-header2", " \"a   b   c\""),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            signed: "host;my-header1;my-header2;x-amz-date",
            body: b"",
            amz_date: "20150830T123600Z",
            scope: suite_scope.clone(),
            canonical_request: format!(
                "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\n\
                 x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n{EMPTY_SHA256}"
            ),
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        },
        Vector {
            name: "get-header-key-duplicate",
            method: "GET",
            path: "/",
            query: None,
            headers: headers(&[
                ("host", "example.amazonaws.com"),
                ("my-header1", "value2"),
                ("my-header1", "value2"),
                ("my-header1", "value1"),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            signed: "host;my-header1;x-amz-date",
            body: b"",
            amz_date: "20150830T123600Z",
            scope: suite_scope.clone(),
            canonical_request: format!(
                "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\n\
                 x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n{EMPTY_SHA256}"
            ),
            signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        },
        Vector {
            name: "get-vanilla-with-session-token",
            method: "GET",
            path: "/",
            query: None,
            headers: headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
                (
                    "x-amz-security-token",
                    "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
                ),
            ]),
            signed: "host;x-amz-date;x-amz-security-token",
            body: b"",
            amz_date: "20150830T123600Z",
            scope: suite_scope.clone(),
            canonical_request: format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\
                 x-amz-security-token:6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267\n\n\
                 host;x-amz-date;x-amz-security-token\n{EMPTY_SHA256}"
            ),
            signature: "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        },
        Vector {
            name: "get-vanilla-utf8-query",
            method: "GET",
            path: "/",
            query: Some("\u{1234}=bar"),
            headers: headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            signed: "host;x-amz-date",
            body: b"",
            amz_date: "20150830T123600Z",
            scope: suite_scope,
            canonical_request: format!(
                "GET\n/\n%E1%88%B4=bar\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
                 host;x-amz-date\n{EMPTY_SHA256}"
            ),
            signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        },
        Vector {
            name: "bedrock converse with ':' in the model id (botocore)",
            method: "POST",
            path: "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
            query: None,
            headers: headers(&[
                ("content-type", "application/json"),
                ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
                ("x-amz-date", "20261122T001500Z"),
            ]),
            signed: "content-type;host;x-amz-date",
            body: bedrock_body,
            amz_date: "20261122T001500Z",
            scope: CredentialScope::new("20261122", "us-east-1", "bedrock"),
            canonical_request: format!(
                "POST\n/model/us.anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse\n\n\
                 content-type:application/json\nhost:bedrock-runtime.us-east-1.amazonaws.com\n\
                 x-amz-date:20261122T001500Z\n\ncontent-type;host;x-amz-date\n{bedrock_hash}"
            ),
            signature: "0a50528a5663ce9e36afa6eb2a9ffa59195d52fd01c76575bbc7c58bf358010b",
        },
    ]
}

#[test]
fn aws_test_suite_vectors() {
    for v in vectors() {
        let request = RequestParts {
            method: v.method,
            raw_path: v.path,
            raw_query: v.query,
            headers: &v.headers,
            body: v.body,
        };
        let signed = names(v.signed);
        let creq = canonical_request(&request, &signed);
        assert_eq!(creq, v.canonical_request, "{}: canonical request", v.name);
        let sts = string_to_sign(v.amz_date, &v.scope, &creq);
        let key = signing_key(SECRET, &v.scope);
        assert_eq!(signature(&key, &sts), v.signature, "{}: signature", v.name);
        assert!(signature_matches(&key, &sts, v.signature), "{}", v.name);
    }
}

#[test]
fn get_vanilla_string_to_sign() {
    let v = &vectors()[0];
    assert_eq!(
        string_to_sign(v.amz_date, &v.scope, &v.canonical_request),
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
         bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    );
}

#[test]
fn tampering_breaks_the_signature() {
    let v = vectors().pop().unwrap();
    let signed = names(v.signed);
    let verify = |body: &[u8], headers: &[(String, String)], path: &str, secret: &str| {
        let request = RequestParts {
            method: v.method,
            raw_path: path,
            raw_query: v.query,
            headers,
            body,
        };
        let sts = string_to_sign(v.amz_date, &v.scope, &canonical_request(&request, &signed));
        signature_matches(&signing_key(secret, &v.scope), &sts, v.signature)
    };
    assert!(verify(v.body, &v.headers, v.path, SECRET));
    assert!(!verify(b"{}", &v.headers, v.path, SECRET), "body changed");
    let mut other_type = v.headers.clone();
    other_type[0].1 = "text/plain".into();
    assert!(
        !verify(v.body, &other_type, v.path, SECRET),
        "signed header changed"
    );
    let mut extra = v.headers.clone();
    extra.push(("x-unsigned".into(), "free".into()));
    assert!(
        verify(v.body, &extra, v.path, SECRET),
        "unsigned header added"
    );
    let single_encoded = "/model/us.anthropic.claude-3-5-sonnet-20240620-v1:0/converse";
    assert!(
        !verify(v.body, &v.headers, single_encoded, SECRET),
        "path changed"
    );
    assert!(
        !verify(v.body, &v.headers, v.path, "another-secret"),
        "secret"
    );
}

#[test]
fn malformed_signatures_never_match() {
    let scope = CredentialScope::new("20150830", "us-east-1", "service");
    let key = signing_key(SECRET, &scope);
    let good = signature(&key, "anything");
    assert!(signature_matches(&key, "anything", &good));
    let uppercase = good.to_uppercase();
    let bad_digit = format!("g{}", &good[1..]);
    let longer = format!("{good}00");
    for bad in ["", "zz", &good[..62], &longer, &bad_digit, &uppercase] {
        assert!(!signature_matches(&key, "anything", bad), "{bad:?}");
    }
}

#[test]
fn canonical_uris() {
    let cases = [
        ("", "/"),
        ("/", "/"),
        ("/./", "/"),
        ("/a/./b/../c", "/a/c"),
        ("/a//b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/../x", "/x"),
        ("/model/a%3Ab/invoke", "/model/a%253Ab/invoke"),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Afoundation-model%2Fx/converse",
            "/model/arn%253Aaws%253Abedrock%253Aus-east-1%253A1%253Afoundation-model%252Fx/converse",
        ),
        ("/unreserved-_.~AZaz09", "/unreserved-_.~AZaz09"),
        ("/\u{1234}", "/%E1%88%B4"),
        ("/a:b", "/a%3Ab"),
        ("/a.b/c", "/a.b/c"),
    ];
    for (raw, expected) in cases {
        assert_eq!(canonical_uri(raw), expected, "{raw:?}");
    }
}

#[test]
fn canonical_queries() {
    let cases = [
        (None, ""),
        (Some(""), ""),
        (Some("b=2&a=1&a=0"), "a=0&a=1&b=2"),
        (Some("flag"), "flag="),
        (Some("a&&b="), "a=&b="),
        (Some("x=a+b"), "x=a%2Bb"),
        (Some("x=a%20b"), "x=a%20b"),
        (Some("%7e=%7E"), "~=~"),
        (Some("p=a/b:c"), "p=a%2Fb%3Ac"),
        (Some("bad=%zz"), "bad=%25zz"),
        (Some("k=v=w"), "k=v%3Dw"),
    ];
    for (raw, expected) in cases {
        assert_eq!(canonical_query(raw), expected, "{raw:?}");
    }
}

#[test]
fn header_values_are_trimmed_and_collapsed() {
    let list = headers(&[
        ("a", "  x   y  "),
        ("b", "one\r\n  two"),
        ("c", ""),
        ("d", "tab\tseparated"),
    ]);
    assert_eq!(
        canonical_headers(&names("a;b;c;d;missing"), &list),
        "a:x y\nb:one two\nc:\nd:tab separated\nmissing:\n"
    );
}

#[test]
fn authorization_headers() {
    let ok = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
              SignedHeaders=host;x-amz-date, Signature=abc123";
    let parsed = parse_authorization(ok).unwrap();
    assert_eq!(
        parsed,
        Authorization {
            access_key_id: "AKIDEXAMPLE".into(),
            scope: CredentialScope::new("20150830", "us-east-1", "bedrock"),
            signed_headers: names("host;x-amz-date"),
            signature: "abc123".into(),
        }
    );
    assert_eq!(
        parsed.scope.to_string(),
        "20150830/us-east-1/bedrock/aws4_request"
    );
    let compact = ok.replace(", ", ",");
    assert_eq!(parse_authorization(&compact).unwrap(), parsed);

    let errors = [
        (
            "Bearer abc",
            "Unsupported authorization scheme \"Bearer\": the emulator only accepts AWS4-HMAC-SHA256 signatures.",
        ),
        (
            "AWS4-HMAC-SHA256",
            "Authorization header requires 'Credential' parameter.",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, Signature=ab",
            "Authorization header requires 'SignedHeaders' parameter.",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host",
            "Authorization header requires 'Signature' parameter.",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host, junk",
            "Authorization header contains an invalid key=value pair: \"junk\".",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/2015/r/s/aws4_request, SignedHeaders=host, Signature=ab",
            "Credential should be of the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, got \"A/2015/r/s/aws4_request\".",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws5_request, SignedHeaders=host, Signature=ab",
            "Credential should be of the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, got \"A/20150830/r/s/aws5_request\".",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=Host;x, Signature=ab",
            "SignedHeaders must be a ';'-separated list of lowercase header names, got \"Host;x\".",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host;;x, Signature=ab",
            "SignedHeaders must be a ';'-separated list of lowercase header names, got \"host;;x\".",
        ),
    ];
    for (value, message) in errors {
        assert_eq!(
            parse_authorization(value).unwrap_err().to_string(),
            message,
            "{value}"
        );
    }
}

#[test]
fn amz_dates() {
    let at = parse_amz_date("20150830T123600Z").unwrap();
    assert_eq!(
        at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
        1_440_938_160
    );
    assert_eq!(format_amz_date(at), "20150830T123600Z");
    for bad in [
        "",
        "2015-08-30T12:36:00Z",
        "20150830T123600",
        "20151330T123600Z",
        "20150830T123600Z0",
    ] {
        assert_eq!(parse_amz_date(bad), None, "{bad:?}");
    }
    let later = at + Duration::from_secs(7);
    assert_eq!(distance(at, later), Duration::from_secs(7));
    assert_eq!(distance(later, at), Duration::from_secs(7));
}
