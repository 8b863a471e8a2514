//! Time to the first byte of a ConverseStream through the gateway, against the same stream
//! straight from the upstream (bedrock-emulator, which writes each event-stream frame as it is
//! due). The same fixed-rate client sends both, one thread, each request timed from when it
//! was due: to its response headers and to the first frame of its body (`messageStart`). Requests
//! straight to the emulator are signed by the client with `aws-sigv4` (as an AWS SDK would be);
//! through the gateway they carry a cached JWT, and the gateway signs them. The gateway (Envoy,
//! one worker, and xds-server) on CPU 1; the client and the emulator on CPU 0.
//!
//! Through the gateway, the requests go to its configuration rendered as a static bootstrap
//! with the hold-time log ([`crate::held`]), so that what the gateway adds is also measured
//! inside Envoy, without the client's and the upstream's noise: the request's hold (its last
//! byte received to its first byte sent upstream) plus the response's (its first byte from
//! upstream to its first byte to the client).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use gateway_e2e::{Paths, Stack};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::held::{self, HeldEnvoy};
use crate::identity::{BenchIdp, JwtSettings};
use crate::quota::{pin, pin_this_process};
use crate::support::{
    allowance_quotas, one_worker_gateway, one_worker_gateway_with, require_two_cpus,
};
use crate::wrk;

#[derive(clap::Args)]
pub struct Options {
    /// Interleaved rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Streams started per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
}

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
/// A reply of 64 words in chunks: a stream of some 70 frames.
const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"}]}],"inferenceConfig":{"maxTokens":64}}"#;
const BEDROCK_HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";

/// How a request is made.
#[derive(Clone)]
enum Target {
    /// Straight to the emulator, signed with the emulator's key.
    Direct {
        url: String,
        access_key_id: String,
        secret: String,
    },
    /// Through the gateway, with a bearer token.
    Gateway { url: String, token: String },
}

impl Target {
    fn request(&self) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
        let path = format!("/model/{MODEL}/converse-stream");
        match self {
            Target::Gateway { url, token } => Ok(hyper::Request::post(format!("{url}{path}"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::from_static(BODY.as_bytes())))?),
            Target::Direct {
                url,
                access_key_id,
                secret,
            } => {
                let mut request = hyper::Request::post(format!("{url}{path}"))
                    .header("host", BEDROCK_HOST)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
                let identity = Credentials::new(access_key_id, secret, None, None, "bench").into();
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region("us-east-1")
                    .name("bedrock")
                    .time(SystemTime::now())
                    .settings(SigningSettings::default())
                    .build()?
                    .into();
                let signable = SignableRequest::new(
                    "POST",
                    format!("https://{BEDROCK_HOST}{path}"),
                    [("host", BEDROCK_HOST), ("content-type", "application/json")].into_iter(),
                    SignableBody::Bytes(BODY.as_bytes()),
                )?;
                let (instructions, _) = sign(signable, &params)?.into_parts();
                instructions.apply_to_request_http1x(&mut request);
                Ok(request)
            }
        }
    }
}

/// p50/p99 (ms) of the response headers and of the first body frame, over one run.
#[derive(Debug, Clone, Copy)]
struct FirstBytes {
    headers: [f64; 2],
    first_frame: [f64; 2],
    /// Through the gateway: p50/p99 (ms) of what its Envoy added to the first byte (both
    /// holds, [`held::Held::first_byte_us`]).
    in_envoy: Option<[f64; 2]>,
    errors: u64,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    require_two_cpus("ttfb")?;
    let paths = Paths::discover()?;
    let work = tempfile::Builder::new()
        .prefix("gateway-bench-ttfb-")
        .tempdir()?;
    let idp = BenchIdp::new(work.path())?;
    let token = idp.token("bench", 0)?;
    let auth = idp.auth(&JwtSettings {
        cache_max_entries: 1024,
        max_verifications_per_second: 1000,
        signature_checks: "xds-server",
        audit_log: "/dev/null",
    })?;
    let without = one_worker_gateway(None, &auth, false)?;
    let with = one_worker_gateway(None, &auth, true)?;
    let allowances = one_worker_gateway_with(None, &auth, Some(allowance_quotas()?))?;
    pin_this_process("0")?;
    for stack in [&without, &with, &allowances] {
        pin(stack.envoy_pid().context("no Envoy")?, "1")?;
        pin(stack.xds_pid().context("no xds-server")?, "1")?;
        pin(stack.emulator_pid(), "0")?;
    }
    let direct = |stack: &Stack| Target::Direct {
        url: format!("http://{}", stack.emulator_api),
        access_key_id: stack.access_key_id.clone(),
        secret: stack.secret_access_key.clone(),
    };
    // Each gateway's configuration, rendered with the hold-time log, on CPU 1 like the rest
    // of the gateway.
    let mut held = [
        HeldEnvoy::start(&paths, work.path(), "held-without", &without)?,
        HeldEnvoy::start(&paths, work.path(), "held-with", &with)?,
        HeldEnvoy::start(&paths, work.path(), "held-allowances", &allowances)?,
    ];
    for envoy in &held {
        pin(envoy.child.pid(), "1")?;
    }
    let through = |envoy: &HeldEnvoy| Target::Gateway {
        url: format!("http://{}", envoy.address),
        token: token.clone(),
    };
    // Straight to each gateway's own emulator, so both rows see the same upstream.
    let targets: [(&str, Target); 6] = [
        ("straight from the upstream (no gateway)", direct(&without)),
        ("gateway without quotas", through(&held[0])),
        (
            "straight from the upstream (the second gateway's)",
            direct(&with),
        ),
        (
            "gateway with quotas (request limit, token budget)",
            through(&held[1]),
        ),
        (
            "straight from the upstream (the third gateway's)",
            direct(&allowances),
        ),
        ("gateway with quotas and allowances", through(&held[2])),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Warm-up: connections, the token in each gateway's cache.
    for (_, target) in &targets {
        runtime.block_on(first_bytes(target, options.rate, 1))?;
    }
    for envoy in &mut held {
        envoy.holds(options.rate as usize)?;
    }
    // Which of `held` a target goes through.
    let held_of = |target: usize| (target % 2 == 1).then_some(target / 2);
    let mut results: Vec<Vec<FirstBytes>> = vec![Vec::new(); targets.len()];
    for round in 1..=options.rounds {
        for (i, ((name, target), values)) in targets.iter().zip(results.iter_mut()).enumerate() {
            let mut measured =
                runtime.block_on(first_bytes(target, options.rate, options.seconds))?;
            if let Some(envoy) = held_of(i).and_then(|h| held.get_mut(h)) {
                let requests = (options.rate * options.seconds) as usize;
                let mut added: Vec<u64> = envoy
                    .holds(requests)?
                    .iter()
                    .filter_map(held::Held::first_byte_us)
                    .collect();
                anyhow::ensure!(
                    added.len() as f64 >= requests as f64 * 0.99,
                    "{name}: {} first-byte times logged for {requests} streams",
                    added.len()
                );
                measured.in_envoy = Some([
                    held::quantile(&mut added, 0.50) / 1000.0,
                    held::quantile(&mut added, 0.99) / 1000.0,
                ]);
            }
            let in_envoy = measured.in_envoy.map_or(String::new(), |[p50, p99]| {
                format!(", in Envoy p50 {p50:.3} p99 {p99:.3} ms")
            });
            eprintln!(
                "round {round}: {name:<50} headers p50 {:.3} p99 {:.3} ms, first frame p50 {:.3} p99 {:.3} ms{in_envoy}, errors {}",
                measured.headers[0],
                measured.headers[1],
                measured.first_frame[0],
                measured.first_frame[1],
                measured.errors
            );
            values.push(measured);
        }
    }
    drop((held, without, with, allowances));
    println!(
        "{}",
        report(options, &targets.map(|(name, _)| name), &results)
    );
    Ok(())
}

/// Starts `rate` ConverseStreams per second for `seconds`, each timed from when it was due
/// to its response headers and to the first frame of its body; the rest of the stream is read
/// to its end (and must be a success).
async fn first_bytes(target: &Target, rate: u64, seconds: u64) -> anyhow::Result<FirstBytes> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http::<Full<Bytes>>();
    let histograms = Arc::new(Mutex::new([
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
    ]));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let request = target.request()?;
        let (client, histograms, errors) = (client.clone(), histograms.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let timed = async {
                let response = client.request(request).await?;
                let headers = due.elapsed();
                anyhow::ensure!(
                    response.status().is_success(),
                    "status {}",
                    response.status()
                );
                let mut body = response.into_body();
                let mut first = None;
                let mut bytes = 0usize;
                while let Some(frame) = body.frame().await {
                    let frame = frame?;
                    if let Some(data) = frame.data_ref()
                        && !data.is_empty()
                    {
                        first.get_or_insert_with(|| due.elapsed());
                        bytes += data.len();
                    }
                }
                anyhow::ensure!(bytes > 0, "an empty stream");
                Ok((headers, first.unwrap_or_default()))
            };
            match timed.await {
                Ok((headers, first)) => {
                    if let Ok(mut h) = histograms.lock() {
                        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                        let _ = h[0].record(micros(headers).max(1));
                        let _ = h[1].record(micros(first).max(1));
                    }
                }
                Err(_) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let histograms = histograms
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock"))?;
    anyhow::ensure!(!histograms[1].is_empty(), "no stream succeeded");
    let quantiles = |h: &Histogram<u64>| {
        [
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        ]
    };
    Ok(FirstBytes {
        headers: quantiles(&histograms[0]),
        first_frame: quantiles(&histograms[1]),
        in_envoy: None,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
    })
}

fn report(options: &Options, names: &[&str], results: &[Vec<FirstBytes>]) -> String {
    let median = |values: Vec<f64>| wrk::median(values);
    let summary: Vec<[f64; 4]> = results
        .iter()
        .map(|rounds| {
            [
                median(rounds.iter().map(|r| r.headers[0]).collect()),
                median(rounds.iter().map(|r| r.headers[1]).collect()),
                median(rounds.iter().map(|r| r.first_frame[0]).collect()),
                median(rounds.iter().map(|r| r.first_frame[1]).collect()),
            ]
        })
        .collect();
    let errors: u64 = results.iter().flatten().map(|r| r.errors).sum();
    let mut out = format!(
        "ConverseStream, {} streams/s from a fixed-rate client on one thread, {} rounds x {} s interleaved (median of \
         the rounds), {errors} errors; each timed from when it was due to its response headers and to the first frame \
         of its body. The gateway (Envoy with one worker, xds-server) on CPU 1, the client and bedrock-emulator on CPU 0 \
         (`taskset`). \"Added\" rows: the gateway minus the upstream alone measured just before it:\n\n\
         | configuration | headers p50 ms | headers p99 ms | first frame p50 ms | first frame p99 ms |\n|---|---:|---:|---:|---:|\n",
        options.rate, options.rounds, options.seconds
    );
    for (name, [h50, h99, f50, f99]) in names.iter().zip(&summary) {
        let _ = writeln!(
            out,
            "| {name} | {h50:.3} | {h99:.3} | {f50:.3} | {f99:.3} |"
        );
    }
    let mut worst: f64 = f64::MIN;
    for pair in [(0, 1), (2, 3), (4, 5)] {
        let added: Vec<f64> = (0..4)
            .map(|i| summary[pair.1][i] - summary[pair.0][i])
            .collect();
        worst = worst.max(added[3]);
        let _ = writeln!(
            out,
            "| **added by the {}** | **{:.3}** | **{:.3}** | **{:.3}** | **{:.3}** |",
            names[pair.1], added[0], added[1], added[2], added[3]
        );
    }
    out.push('\n');
    for pair in [(0, 1), (2, 3), (4, 5)] {
        let per_round: Vec<String> = results[pair.1]
            .iter()
            .zip(&results[pair.0])
            .map(|(g, d)| format!("{:.3}", g.first_frame[1] - d.first_frame[1]))
            .collect();
        let _ = writeln!(
            out,
            "- first frame p99 added in each round, {}: {} ms",
            names[pair.1],
            per_round.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nGoal: < 1 ms added to the first frame at p99: **{}** (at most {worst:.3} ms added).",
        if worst < 1.0 { "met" } else { "not met" }
    );
    let _ = write!(
        out,
        "\nInside the gateway's Envoy (the same requests): what it added to the first byte, its hold of the request \
         (`{}`) plus its hold of the response's first byte (`{}`), p50/p99 per round, median of the rounds:\n\n\
         | configuration | added p50 ms | added p99 ms | p99 in each round ms |\n|---|---:|---:|---|\n",
        held::HOLD_FORMAT,
        held::RESPONSE_HOLD_FORMAT
    );
    let mut worst_inside: f64 = f64::MIN;
    for (name, rounds) in names.iter().zip(results) {
        let inside: Vec<[f64; 2]> = rounds.iter().filter_map(|r| r.in_envoy).collect();
        if inside.is_empty() {
            continue;
        }
        let p99 = median(inside.iter().map(|v| v[1]).collect());
        worst_inside = worst_inside.max(p99);
        let per_round: Vec<String> = inside.iter().map(|v| format!("{:.3}", v[1])).collect();
        let _ = writeln!(
            out,
            "| {name} | {:.3} | {p99:.3} | {} |",
            median(inside.iter().map(|v| v[0]).collect()),
            per_round.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nInside Envoy, < 1 ms added to the first byte at p99: **{}** (at most {worst_inside:.3} ms).",
        if worst_inside < 1.0 { "met" } else { "not met" }
    );
    out
}
