//! Whether a flood of tokens the gateway has not seen takes the CPU that callers with cached
//! tokens need. One gateway (Envoy with one worker, `auth.max_verifications_per_second` at
//! its default, signatures checked by xds-server) in front of the benchmark upstream; a
//! closed-loop client with one cached token (wrk) measured in four phases, interleaved over
//! rounds:
//!
//! | phase | beside the cached client |
//! |---|---|
//! | `alone` | nothing |
//! | `cached load` | a second client at a fixed rate, with the same cached token |
//! | `fresh flood` | the same rate of valid tokens the worker has not verified (a cache smaller than their number keeps them fresh) |
//! | `forged flood` | the same rate of tokens whose signatures are forged |
//! | `no-token load` | the same rate of requests without a token (refused at once): what refusing costs, token or not |
//!
//! The flood costs the cached callers what `fresh flood` and `forged flood` take from their
//! throughput beyond what `cached load` (the same number of requests, verified for free)
//! takes. The verification budget answers what is over it with 429 at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use gateway_e2e::Paths;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::identity::{BenchIdp, JwtSettings};
use crate::jwt::{BODY, MODEL_PATH, script};
use crate::support::{one_worker_gateway, upstream};
use crate::wrk;

#[derive(clap::Args)]
pub struct Options {
    /// Interleaved rounds over the phases.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per phase.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// Connections of the cached client (wrk).
    #[arg(long, default_value_t = 8)]
    connections: u32,
    /// Requests per second of the second client in the loaded phases.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Distinct fresh tokens (the worker caches at most a tenth of them).
    #[arg(long, default_value_t = 2000)]
    fresh_tokens: usize,
    /// The gateway's `auth.max_verifications_per_second`.
    #[arg(long, default_value_t = 200)]
    budget: u32,
}

const PHASES: [&str; 5] = [
    "alone",
    "cached load",
    "fresh flood",
    "forged flood",
    "no-token load",
];

struct Round {
    cached: wrk::Measurement,
    /// CPU seconds of Envoy and of xds-server per second of the phase.
    envoy_cores: f64,
    xds_cores: f64,
    /// Answers to the second client, by status.
    statuses: BTreeMap<u16, u64>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let paths = Paths::discover()?;
    let dir = tempfile::Builder::new()
        .prefix("gateway-bench-flood-")
        .tempdir()?;
    let work = dir.path();
    let idp = BenchIdp::new(work)?;

    let started = Instant::now();
    let cached_token = idp.token("cached", 0)?;
    let fresh: Vec<String> = (1..=options.fresh_tokens)
        .map(|n| idp.token(&format!("tenant-{}", n % 100), n))
        .collect::<Result<_, _>>()?;
    // The same tokens with one byte of the signature changed (a middle one: the last
    // character of base64url may carry unused bits).
    let forged: Vec<String> = fresh
        .iter()
        .map(|token| {
            let (signed, signature) = token.rsplit_once('.').unwrap_or((token, ""));
            let mut signature = signature.as_bytes().to_vec();
            let middle = signature.len() / 2;
            if let Some(byte) = signature.get_mut(middle) {
                *byte = if *byte == b'A' { b'B' } else { b'A' };
            }
            format!("{signed}.{}", String::from_utf8_lossy(&signature))
        })
        .collect();
    eprintln!(
        "minted {} tokens in {:.1} s",
        fresh.len() + 1,
        started.elapsed().as_secs_f64()
    );

    let (upstream, upstream_port) = upstream(&paths, work)?;
    let auth = idp.auth(&JwtSettings {
        cache_max_entries: (options.fresh_tokens / 10).max(1),
        max_verifications_per_second: options.budget,
        signature_checks: "xds-server",
        audit_log: "/dev/null",
    })?;
    let stack = one_worker_gateway(Some(upstream_port), &auth, false)?;
    let envoy_pid = stack.envoy_pid().context("no Envoy")?;
    let xds_pid = stack.xds_pid().context("no xds-server")?;
    let url = format!("{}{MODEL_PATH}", stack.gateway_url());
    let cached_script = script(work, "cached", Some(&cached_token), &[])?;
    // Warm up: compilation, connections, credentials, the cached token.
    wrk::run(&url, &cached_script, 4, 2, envoy_pid, &[])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    let mut results: Vec<Vec<Round>> = (0..PHASES.len()).map(|_| Vec::new()).collect();
    for round in 1..=options.rounds {
        let start = (round as usize - 1) % PHASES.len();
        for phase in (0..PHASES.len()).map(|k| (start + k) % PHASES.len()) {
            let tokens: Vec<String> = match phase {
                0 => Vec::new(),
                1 => vec![cached_token.clone()],
                2 => fresh.clone(),
                3 => forged.clone(),
                // An empty token: no authorization header.
                _ => vec![String::new()],
            };
            let second = (!tokens.is_empty()).then(|| {
                runtime.spawn(rotating_load(
                    url.clone(),
                    tokens,
                    options.rate,
                    Duration::from_secs(u64::from(options.seconds)),
                ))
            });
            let cpu_before = [
                wrk::cpu_nanoseconds(&[envoy_pid])?,
                wrk::cpu_nanoseconds(&[xds_pid])?,
            ];
            let began = Instant::now();
            let cached = wrk::run(
                &url,
                &cached_script,
                options.connections,
                options.seconds,
                envoy_pid,
                &[xds_pid],
            )?;
            let statuses = match second {
                Some(task) => runtime.block_on(task)??,
                None => BTreeMap::new(),
            };
            let elapsed = began.elapsed().as_secs_f64();
            let cores = |pid: u32, before: u64| -> anyhow::Result<f64> {
                Ok(wrk::cpu_nanoseconds(&[pid])?.saturating_sub(before) as f64 / 1e9 / elapsed)
            };
            let measured = Round {
                cached,
                envoy_cores: cores(envoy_pid, cpu_before[0])?,
                xds_cores: cores(xds_pid, cpu_before[1])?,
                statuses,
            };
            eprintln!(
                "round {round}: {:<13} cached {:>7.0} req/s p99 {:.3} ms; Envoy {:.2} cores, xds-server {:.2} cores; second client {:?}",
                PHASES[phase],
                measured.cached.requests_per_second,
                measured.cached.p99_ms,
                measured.envoy_cores,
                measured.xds_cores,
                measured.statuses
            );
            results[phase].push(measured);
        }
    }
    let checks = stack.xds_metrics_text()?;
    println!("{}", report(options, &results, &checks));
    drop(stack);
    drop(upstream);
    Ok(())
}

/// `rate` POSTs per second for `duration`, each with the next of `tokens` (no token for an
/// empty one); the answers by status (0: no answer).
async fn rotating_load(
    url: String,
    tokens: Vec<String>,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<BTreeMap<u16, u64>> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http::<Full<Bytes>>();
    let statuses = Arc::new(Mutex::new(BTreeMap::new()));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let total = (duration.as_secs_f64() * rate as f64) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        let token = &tokens[i % tokens.len()];
        let mut request =
            hyper::Request::post(url.as_str()).header("content-type", "application/json");
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from_static(BODY.as_bytes())))?;
        let (client, statuses) = (client.clone(), Arc::clone(&statuses));
        tasks.push(tokio::spawn(async move {
            let status = match client.request(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    status
                }
                Err(_) => 0,
            };
            if let Ok(mut statuses) = statuses.lock() {
                *statuses.entry(status).or_insert(0) += 1;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let statuses = statuses
        .lock()
        .map_err(|_| anyhow::anyhow!("statuses lock"))?
        .clone();
    Ok(statuses)
}

fn report(options: &Options, results: &[Vec<Round>], metrics: &str) -> String {
    let median = |phase: usize, f: &dyn Fn(&Round) -> f64| {
        wrk::median(results[phase].iter().map(f).collect())
    };
    let mut out = format!(
        "{} rounds x {} s per phase; the cached client: wrk, {} connections, one cached token; the \
         second client: {} requests/s; the gateway: Envoy with one worker, \
         max_verifications_per_second {}, signatures checked by xds-server, a cache of {} tokens \
         for {} fresh ones. Medians of the rounds.\n\n\
         | phase | cached req/s | vs cached load | cached p99 ms | Envoy cores | xds-server cores | second client's answers (all rounds) |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
        options.rounds,
        options.seconds,
        options.connections,
        options.rate,
        options.budget,
        (options.fresh_tokens / 10).max(1),
        options.fresh_tokens,
    );
    let loaded = median(1, &|r| r.cached.requests_per_second);
    for (phase, name) in PHASES.iter().enumerate() {
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        for round in &results[phase] {
            for (status, n) in &round.statuses {
                *statuses.entry(*status).or_insert(0) += n;
            }
        }
        let answers = if statuses.is_empty() {
            "-".to_string()
        } else {
            statuses
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let throughput = median(phase, &|r| r.cached.requests_per_second);
        let _ = writeln!(
            out,
            "| {name} | {throughput:.0} | {:.2} | {:.3} | {:.2} | {:.2} | {answers} |",
            throughput / loaded,
            median(phase, &|r| r.cached.p99_ms),
            median(phase, &|r| r.envoy_cores),
            median(phase, &|r| r.xds_cores),
        );
    }
    let checks: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("xds_server_signature_checks_total"))
        .collect();
    let _ = writeln!(
        out,
        "\nCached callers under a flood of fresh tokens keep **{:.2}x**, under forged ones **{:.2}x** \
         of their throughput beside the same rate of cached requests, and **{:.2}x** beside the same \
         rate of requests refused for want of a token. xds-server's signature checks over the run: {}.",
        median(2, &|r| r.cached.requests_per_second) / loaded,
        median(3, &|r| r.cached.requests_per_second) / loaded,
        median(4, &|r| r.cached.requests_per_second) / loaded,
        checks.join("; "),
    );
    out
}
