//! Where the filter's per-request time goes, natively (proportions carry over to Wasm):
//! `cargo run --release -p bedrock-gateway-filter --example core_profile`.

use std::time::{Duration, Instant, SystemTime};

use bedrock_gateway_filter::core::Gateway;
use bedrock_gateway_filter::core::audit::AuditRecord;
use bedrock_gateway_filter::core::credentials::SigningIdentity;
use bedrock_gateway_filter::core::signing::BodyHasher;
use gateway_common::proto::SigningCredentials;

fn main() {
    let gateway = Gateway::from_json(
        br#"{"region":"us-east-1","services":[{"name":"bedrock-runtime","host":"bedrock-runtime.us-east-1.amazonaws.com","cluster":"c"}],"authentication":{"mode":"none"}}"#,
    )
    .expect("config");
    let credentials = SigningIdentity::from_proto(
        SigningCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expires_at_unix_seconds: 0,
            refresh_after_seconds: 0,
        },
        0,
    )
    .expect("credentials");
    let headers: Vec<(String, Vec<u8>)> = [
        (":method", "POST"),
        (
            ":path",
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
        ),
        (":authority", "127.0.0.1:8080"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "62"),
        ("user-agent", "wrk"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "9b0d3c2e-8a6e-4f67-9d8b-3b7c1e9f0a11"),
        (
            "authorization",
            "Bearer eyJhbGciOiJSUzI1NiJ9.eyJ0ZW5hbnQiOiJ0In0.c2ln",
        ),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    let body = br#"{"messages":[{"role":"user","content":[{"text":"benchmark"}]}]}"#;
    let n = 20_000u32;
    let mut totals = [Duration::ZERO; 5];
    for _ in 0..n {
        let t = Instant::now();
        let incoming = gateway.read(&headers).expect("read");
        let route = gateway.route(incoming, &headers).expect("route");
        totals[0] += t.elapsed();
        let t = Instant::now();
        let plan = gateway.forward(headers.clone(), route, None);
        totals[1] += t.elapsed();
        let t = Instant::now();
        let mut hasher = BodyHasher::default();
        hasher.update(body);
        let hash = hasher.finish_hex();
        totals[2] += t.elapsed();
        let t = Instant::now();
        let signed = gateway
            .sign(plan, &hash, &credentials, SystemTime::now())
            .expect("sign");
        totals[3] += t.elapsed();
        let t = Instant::now();
        let mut audit = AuditRecord {
            request_id: Some("9b0d3c2e".into()),
            operation: Some("Converse"),
            ..AuditRecord::default()
        };
        audit.allow();
        let fragment = audit.fragment();
        totals[4] += t.elapsed();
        std::hint::black_box((signed, fragment));
    }
    for (name, total) in ["route", "forward", "hash body", "sign", "audit"]
        .iter()
        .zip(totals)
    {
        println!(
            "{name:>10}: {:>7.2} µs",
            total.as_secs_f64() * 1e6 / f64::from(n)
        );
    }
}
