//! What quotas cost, in one run on one machine:
//!
//! 1. **Decisions per second per core** of xds-server's rate limit service (pinned to one CPU
//!    with `taskset`, release build), driven by a closed-loop Rust client on the other CPU,
//!    over both transports: a `ShouldRateLimit` call per decision (Envoy's API, as its native
//!    ratelimit filter uses it) and the `StreamRateLimit` decision stream the gateway filter
//!    uses. For each, a baseline of the same request for a domain with no limits (decoding,
//!    dispatch and encoding only), the in-memory store, and the Redis store (redis-server on
//!    the same CPU).
//! 2. **Added latency and CPU through Envoy**: the same gateway without quotas and with quotas
//!    on each transport (a request limit and a token budget, so every request is admitted by
//!    the service and its usage read and reported), in front of an upstream answering at once.
//!    The maximum throughput of the quota configuration is measured first (wrk), then every
//!    configuration runs at half of it with a fixed-rate client, interleaved; p50/p99 and CPU
//!    differences against the gateway without quotas are the quota call's cost.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    RateLimitDescriptor, rate_limit_descriptor,
};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use gateway_e2e::process::Child;
use gateway_e2e::redis::Redis;
use gateway_e2e::stack::free_port;
use gateway_e2e::{Paths, Stack, StackOptions};
use serde_norway::Value as Yaml;

use crate::held::{self, HeldEnvoy};
use crate::load;
use crate::support::{QUOTAS, benchmark_quotas, require_two_cpus, upstream};
use crate::wrk;

#[derive(clap::Args)]
pub struct Options {
    /// Interleaved rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent gRPC calls in flight for the decision throughput.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per second of the latency part (default: half of what the gateway with quotas
    /// answers at most).
    #[arg(long)]
    rate: Option<u64>,
    /// The CPU xds-server runs on in the latency part: 1 shares the gateway's Envoy's CPU
    /// (every decision then waits for the scheduler to switch processes), 0 shares the load
    /// driver's and the upstream's.
    #[arg(long, default_value_t = 1)]
    xds_server_cpu: u32,
    /// Which part to run: both, `decisions` only, or `latency` (through Envoy) only.
    #[arg(long, value_enum, default_value_t = Part::Both)]
    part: Part,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Both,
    Decisions,
    Latency,
}

const DOMAIN: &str = "bedrock-gateway";
/// HTTP/2 connections (each with one stream for the decision stream) of the decision load.
const CONNECTIONS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Unary,
    Stream,
}
const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"benchmark"}]}],"inferenceConfig":{"maxTokens":64}}"#;
const PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse";

pub fn run(options: &Options) -> anyhow::Result<()> {
    require_two_cpus("quota")?;
    let paths = Paths::discover()?;
    let dir = tempfile::Builder::new()
        .prefix("gateway-bench-quota-")
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if options.part != Part::Latency {
        println!("{}", decisions(options, &paths, dir.path(), &runtime)?);
    }
    if options.part != Part::Decisions {
        println!("{}", latency(options, &paths, dir.path())?);
    }
    Ok(())
}

/// 1. Decisions per second of the rate limit service.
fn decisions(
    options: &Options,
    paths: &Paths,
    work: &Path,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<String> {
    let redis = Redis::start_pinned("0")?;
    let memory = service(paths, work, "memory", "store: {type: memory}")?;
    let redis_store = format!("store: {{type: redis, url: \"{}\"}}", redis.url());
    let with_redis = service(paths, work, "redis", &redis_store)?;
    let request = |domain: &str| RateLimitRequest {
        domain: domain.to_string(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![rate_limit_descriptor::Entry {
                key: "tenant".into(),
                value: "bench".into(),
            }],
            ..Default::default()
        }],
        hits_addend: 1,
    };
    // Each case with the processes whose CPU time its decisions cost.
    let memory_pids = vec![memory.0.pid()];
    let redis_pids = vec![with_redis.0.pid(), redis.pid()];
    let cases = [
        (
            "baseline: no limits (unknown domain), ShouldRateLimit call",
            &memory_pids,
            memory.1,
            request("no-such-domain"),
            Transport::Unary,
        ),
        (
            "in-memory store, ShouldRateLimit call",
            &memory_pids,
            memory.1,
            request(DOMAIN),
            Transport::Unary,
        ),
        (
            "Redis store, ShouldRateLimit call",
            &redis_pids,
            with_redis.1,
            request(DOMAIN),
            Transport::Unary,
        ),
        (
            "baseline: no limits (unknown domain), decision stream",
            &memory_pids,
            memory.1,
            request("no-such-domain"),
            Transport::Stream,
        ),
        (
            "in-memory store, decision stream",
            &memory_pids,
            memory.1,
            request(DOMAIN),
            Transport::Stream,
        ),
        (
            "Redis store, decision stream",
            &redis_pids,
            with_redis.1,
            request(DOMAIN),
            Transport::Stream,
        ),
    ];
    // The load driver runs on the other CPUs, so that CPU 0 is the service's alone.
    let all_cpus = format!(
        "0-{}",
        std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
    );
    pin_this_process("1-1023")?;
    let mut decisions: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut per_cpu_second: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 1..=options.rounds {
        for (i, (name, pids, address, request, transport)) in cases.iter().enumerate() {
            let before = wrk::cpu_nanoseconds(&pids[..])?;
            let address = address.to_string();
            let run = match transport {
                Transport::Unary => runtime.block_on(load::decisions(
                    &address,
                    request.clone(),
                    options.concurrency,
                    CONNECTIONS,
                    options.seconds,
                ))?,
                Transport::Stream => runtime.block_on(load::stream_decisions(
                    &address,
                    request.clone(),
                    CONNECTIONS,
                    options.concurrency.div_ceil(CONNECTIONS),
                    options.seconds,
                ))?,
            };
            let cpu_seconds = wrk::cpu_nanoseconds(&pids[..])?.saturating_sub(before) as f64 / 1e9;
            let rate = run.count as f64 / run.seconds;
            let efficiency = run.count as f64 / cpu_seconds.max(1e-9);
            eprintln!(
                "round {round}: {name:<48} {rate:>9.0} decisions/s  {efficiency:>9.0} per CPU-second"
            );
            decisions[i].push(rate);
            per_cpu_second[i].push(efficiency);
        }
    }
    pin_this_process(&all_cpus)?;
    drop((memory, with_redis, redis));
    Ok(decisions_report(
        options,
        &cases.map(|c| c.0),
        &decisions,
        &per_cpu_second,
    ))
}

/// 2. Added latency through Envoy.
fn latency(options: &Options, paths: &Paths, work: &Path) -> anyhow::Result<String> {
    // One thread for the fixed-rate client: no cross-thread wake-ups of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (upstream, upstream_port) = upstream(paths, work)?;
    let envoy_pid = |stack: &Stack| {
        stack
            .envoy_pid()
            .context("the gateway's Envoy is not running")
    };
    let without = gateway(upstream_port, None)?;
    let stream = gateway(upstream_port, Some("stream"))?;
    let unary = gateway(upstream_port, Some("unary"))?;
    let allowances = gateway(upstream_port, Some(ALLOWANCES))?;
    // The gateway under test (its Envoy and xds-server) on CPU 1; the load (wrk, the
    // fixed-rate client) and the upstream on CPU 0, so that what is measured waits for the
    // gateway's own work rather than for the load driver's.
    pin_this_process("0")?;
    pin(upstream.pid(), "0")?;
    for stack in [&without, &stream, &unary, &allowances] {
        pin(envoy_pid(stack)?, "1")?;
        pin(
            stack.xds_pid().context("no xds-server")?,
            &options.xds_server_cpu.to_string(),
        )?;
    }
    let script = work.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    let url = |stack: &Stack| format!("{}{PATH}", stack.gateway_url());
    let saturated = [
        ("gateway without quotas", &without),
        ("gateway with quotas, decision stream", &stream),
        ("gateway with quotas, unary calls", &unary),
        ("gateway with quotas, allowances", &allowances),
    ];
    for (_, stack) in saturated {
        wrk::run(&url(stack), &script, 4, 2, envoy_pid(stack)?, &[])?;
    }
    // At saturation: the most each configuration answers, and its CPU per request there.
    let mut at_most: Vec<[Vec<f64>; 3]> = vec![Default::default(); saturated.len()];
    for round in 1..=options.rounds {
        for ((name, stack), values) in saturated.iter().zip(at_most.iter_mut()) {
            let xds = stack.xds_pid().context("no xds-server")?;
            let measured = wrk::run(
                &url(stack),
                &script,
                16,
                options.seconds as u32,
                envoy_pid(stack)?,
                &[xds],
            )?;
            let xds_us = measured.also_cpu_us_per_request;
            eprintln!(
                "round {round}: {name:<38} at most {:.0} req/s, per request: Envoy {:.1} µs CPU, xds-server {xds_us:.1} µs CPU",
                measured.requests_per_second, measured.cpu_us_per_request
            );
            values[0].push(measured.requests_per_second);
            values[1].push(measured.cpu_us_per_request);
            values[2].push(xds_us);
        }
    }
    let saturation: Vec<(&str, [f64; 3])> = saturated
        .iter()
        .zip(&at_most)
        .map(|((name, _), values)| (*name, values.clone().map(wrk::median)))
        .collect();
    let max = saturation[1].1[0];
    let rate = options.rate.unwrap_or(((max / 2.0) as u64).max(1));
    eprintln!("gateway with quotas: {max:.0} req/s at most; measuring at {rate} req/s");
    let headers = vec![("content-type".to_string(), "application/json".to_string())];
    let direct = format!("http://127.0.0.1:{upstream_port}{PATH}");
    // The unary configuration is left out here: it may not sustain half of what the decision
    // stream sustains, and its latency would then be that of a queue.
    // Through the same gateways rendered as static bootstraps with the hold-time log
    // (crate::held), on CPU 1 like the rest of the gateway.
    let mut held = [
        HeldEnvoy::start(paths, work, "held-without", &without)?,
        HeldEnvoy::start(paths, work, "held-stream", &stream)?,
        HeldEnvoy::start(paths, work, "held-allowances", &allowances)?,
    ];
    for envoy in &held {
        pin(envoy.child.pid(), "1")?;
    }
    let held_url = |envoy: &HeldEnvoy| format!("http://{}{PATH}", envoy.address);
    // Name, the stack and which of `held` runs it (none: the upstream alone), the URL.
    type Configuration<'a> = (&'static str, Option<(&'a Stack, usize)>, String);
    let configurations: [Configuration<'_>; 4] = [
        ("upstream alone (no gateway)", None, direct),
        (
            "gateway without quotas",
            Some((&without, 0)),
            held_url(&held[0]),
        ),
        (
            "gateway with quotas, decision stream",
            Some((&stream, 1)),
            held_url(&held[1]),
        ),
        (
            "gateway with quotas, allowances",
            Some((&allowances, 2)),
            held_url(&held[2]),
        ),
    ];
    for (_, stack, url) in &configurations {
        if stack.is_some() {
            runtime.block_on(load::fixed_rate(url, &headers, BODY, rate, 1))?;
        }
    }
    for envoy in &mut held {
        envoy.hold_times(usize::MAX)?;
    }
    let mut rows: Vec<LatencyRow> = configurations
        .iter()
        .map(|(name, stack, _)| LatencyRow {
            name,
            gateway: stack.is_some(),
            latencies: Vec::new(),
            held: Vec::new(),
            envoy_us: Vec::new(),
            xds_us: Vec::new(),
        })
        .collect();
    for round in 1..=options.rounds {
        for (row, (name, stack, url)) in rows.iter_mut().zip(&configurations) {
            // The quota call costs CPU in both Envoy and xds-server.
            let pids = match stack {
                Some((stack, envoy)) => vec![
                    held[*envoy].child.pid(),
                    stack.xds_pid().context("no xds-server")?,
                ],
                None => Vec::new(),
            };
            let cpu = |i: usize| pids.get(i).map_or(Ok(0), |p| wrk::cpu_nanoseconds(&[*p]));
            let wakeups = |i: usize| pids.get(i).map_or(Ok(0), |p| wrk::timeslices(&[*p]));
            let before = [cpu(0)?, cpu(1)?, wakeups(0)?, wakeups(1)?];
            let latency =
                runtime.block_on(load::fixed_rate(url, &headers, BODY, rate, options.seconds))?;
            let requests = (rate * options.seconds).max(1) as f64;
            let per_request =
                |after: u64, before: u64| after.saturating_sub(before) as f64 / requests;
            let envoy_us = per_request(cpu(0)?, before[0]) / 1000.0;
            let xds_us = per_request(cpu(1)?, before[1]) / 1000.0;
            let hold = match stack {
                Some((_, envoy)) => {
                    let mut times = held[*envoy].hold_times(requests as usize)?;
                    anyhow::ensure!(
                        times.len() as f64 >= requests * 0.99,
                        "{name}: {} hold times logged for {requests} requests",
                        times.len()
                    );
                    Some([
                        held::quantile(&mut times, 0.50) / 1000.0,
                        held::quantile(&mut times, 0.99) / 1000.0,
                    ])
                }
                None => None,
            };
            let held_text = hold.map_or(String::new(), |[p50, p99]| {
                format!("  held p50 {p50:.3} ms  p99 {p99:.3} ms")
            });
            eprintln!(
                "round {round}: {name:<38} p50 {:.3} ms  p99 {:.3} ms{held_text}  errors {}  per request: Envoy {envoy_us:.1} µs CPU, {:.2} wake-ups; xds-server {xds_us:.1} µs CPU, {:.2} wake-ups",
                latency.p50_ms,
                latency.p99_ms,
                latency.errors,
                per_request(wakeups(0)?, before[2]),
                per_request(wakeups(1)?, before[3]),
            );
            row.latencies.push(latency);
            if let Some(hold) = hold {
                row.held.push(hold);
            }
            row.envoy_us.push(envoy_us);
            row.xds_us.push(xds_us);
        }
    }
    drop((held, without, stream, unary, allowances, upstream));
    Ok(format!(
        "{}\n{}",
        saturation_report(options, &saturation),
        latency_report(options, max, rate, &rows)
    ))
}

/// Where the processes of the latency part run (on a machine with at least 2 CPUs).
fn pinning(options: &Options) -> String {
    format!(
        "the gateway's Envoy on CPU 1, its xds-server on CPU {}, the load driver and the upstream on CPU 0 (`taskset`)",
        options.xds_server_cpu
    )
}

/// Measurements of one configuration over the rounds.
struct LatencyRow {
    name: &'static str,
    gateway: bool,
    latencies: Vec<load::Latency>,
    /// p50 and p99 (ms) of the hold time logged by the gateway's Envoy, per round.
    held: Vec<[f64; 2]>,
    envoy_us: Vec<f64>,
    xds_us: Vec<f64>,
}

/// Restricts every thread of this process (and what it starts later) to `cpus`.
pub fn pin_this_process(cpus: &str) -> anyhow::Result<()> {
    pin(std::process::id(), cpus)
}

/// Restricts every thread of process `pid` (and those it starts later) to `cpus`.
pub fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset -c {cpus} failed");
    Ok(())
}

/// xds-server alone (its rate limit service), pinned to CPU 0.
fn service(
    paths: &Paths,
    work: &Path,
    name: &str,
    store: &str,
) -> anyhow::Result<(Child, SocketAddr)> {
    let config = work.join(format!("{name}.yaml"));
    let listener = free_port()?;
    std::fs::write(
        &config,
        format!(
            "listener: {{address: 127.0.0.1, port: {}}}\nupstream: {{region: us-east-1, endpoint_url: \"http://127.0.0.1:9\"}}\nfilter: {{wasm_path: {}}}\nauth: {{mode: none, audit_log: /dev/null}}\nquotas:\n  {store}\n{}",
            listener.port(),
            paths.wasm.display(),
            QUOTAS.replace('\n', "\n  ")
        ),
    )?;
    let mut command = Command::new("taskset");
    command
        .args(["-c", "0"])
        .arg(&paths.xds_server)
        .args(["serve", "--config"])
        .arg(&config)
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK")
        .env("AWS_SECRET_ACCESS_KEY", "bench-secret-not-real")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let (child, report) = Child::spawn_reporting(
        &format!("xds-server ({name})"),
        command,
        &work.join(format!("{name}.log")),
    )?;
    let address = report["grpc"]
        .as_str()
        .context("grpc address")?
        .parse()
        .context("grpc address")?;
    Ok((child, address))
}

/// The "transport" of [`gateway`] that is the decision stream with `quotas.allowances` at
/// their defaults.
const ALLOWANCES: &str = "allowances";

/// A gateway (one Envoy worker) in front of the upstream, without quotas or with quotas on the
/// given transport (or [`ALLOWANCES`]).
fn gateway(upstream_port: u16, transport: Option<&'static str>) -> anyhow::Result<Stack> {
    let quotas = transport
        .map(|transport| {
            benchmark_quotas().and_then(|mut quotas| {
                if transport == ALLOWANCES {
                    quotas["transport"] = "stream".into();
                    quotas["allowances"] = serde_norway::from_str("{}")?;
                } else {
                    quotas["transport"] = transport.into();
                }
                Ok(quotas)
            })
        })
        .transpose()?;
    Stack::start(StackOptions {
        envoy_concurrency: 1,
        configure: Box::new(move |c: &mut Yaml| {
            c["upstream"]["endpoint_url"] = format!("http://127.0.0.1:{upstream_port}").into();
            c["auth"]["audit_log"] = "/dev/null".into();
            if let Some(quotas) = &quotas {
                c["quotas"] = quotas.clone();
            }
        }),
        ..StackOptions::default()
    })
}

fn decisions_report(
    options: &Options,
    names: &[&str],
    decisions: &[Vec<f64>],
    per_cpu_second: &[Vec<f64>],
) -> String {
    let mut out = format!(
        "Decisions per second, xds-server pinned to one CPU (`taskset -c 0`), {} decisions in flight: \
         ShouldRateLimit calls on {CONNECTIONS} HTTP/2 connections, or {CONNECTIONS} decision streams (the filter's \
         transport, one stream per Envoy worker) with {} each; the load driver on the other CPU, {} rounds x {} s \
         (median). Decisions per CPU-second: decisions / CPU time of the service (and of redis-server for Redis); \
         ratios against the first row:\n\n\
         | rate limit service | decisions/s | vs baseline | decisions per CPU-second | vs baseline |\n|---|---:|---:|---:|---:|\n",
        options.concurrency,
        options.concurrency.div_ceil(CONNECTIONS),
        options.rounds,
        options.seconds
    );
    let medians: Vec<f64> = decisions.iter().map(|d| wrk::median(d.clone())).collect();
    let efficiency: Vec<f64> = per_cpu_second
        .iter()
        .map(|d| wrk::median(d.clone()))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.2} | {:.0} | {:.2} |",
            medians[i],
            medians[i] / medians[0],
            efficiency[i],
            efficiency[i] / efficiency[0]
        );
    }
    out
}

fn saturation_report(options: &Options, rows: &[(&str, [f64; 3])]) -> String {
    let mut out = format!(
        "Through Envoy (one worker) at saturation: {}; wrk, 16 connections, {} rounds x {} s interleaved (median). \
         CPU µs/request: CPU time of the gateway's Envoy and of xds-server per request answered:\n\n\
         | configuration | req/s at most | Envoy CPU µs/request | xds-server CPU µs/request |\n|---|---:|---:|---:|\n",
        pinning(options),
        options.rounds,
        options.seconds,
    );
    for (name, [rps, envoy, xds]) in rows {
        let _ = writeln!(out, "| {name} | {rps:.0} | {envoy:.1} | {xds:.1} |");
    }
    for (name, values) in &rows[1..] {
        let _ = writeln!(
            out,
            "| **added by the quota call ({})** | | **{:.1}** | **{:.1}** |",
            name.rsplit(", ").next().unwrap_or(name),
            values[1] - rows[0].1[1],
            values[2] - rows[0].1[2],
        );
    }
    out
}

fn latency_report(options: &Options, max: f64, rate: u64, rows: &[LatencyRow]) -> String {
    let median = |values: Vec<f64>| wrk::median(values);
    let errors: u64 = rows
        .iter()
        .flat_map(|r| &r.latencies)
        .map(|l| l.errors)
        .sum();
    let mut out = format!(
        "Through Envoy (one worker), {}; gateway with quotas (decision stream) at most {max:.0} req/s (wrk, 16 connections); \
         every configuration at {rate} req/s (half of that), fixed-rate client on one thread, {} rounds x {} s interleaved \
         (median of the rounds), {errors} errors. **Held**: how long the gateway's Envoy held each request, from its last \
         byte received to the first byte sent upstream (`{}` in an access log of the same gateway rendered as a static \
         bootstrap, see README); client p50/p99: from when each request was due to its whole response. CPU µs/request: \
         CPU time of the gateway's Envoy and of xds-server per request. \"Added\" rows subtract the gateway without quotas:\n\n\
         | configuration | held p50 ms | held p99 ms | client p50 ms | client p99 ms | Envoy CPU µs/request | xds-server CPU µs/request |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        pinning(options),
        options.rounds,
        options.seconds,
        held::HOLD_FORMAT.trim(),
    );
    let summary: Vec<[f64; 6]> = rows
        .iter()
        .map(|r| {
            [
                median(r.held.iter().map(|h| h[0]).collect()),
                median(r.held.iter().map(|h| h[1]).collect()),
                median(r.latencies.iter().map(|l| l.p50_ms).collect()),
                median(r.latencies.iter().map(|l| l.p99_ms).collect()),
                median(r.envoy_us.clone()),
                median(r.xds_us.clone()),
            ]
        })
        .collect();
    for (row, [h50, h99, p50, p99, envoy, xds]) in rows.iter().zip(&summary) {
        if row.gateway {
            let _ = writeln!(
                out,
                "| {} | {h50:.3} | {h99:.3} | {p50:.3} | {p99:.3} | {envoy:.1} | {xds:.1} |",
                row.name
            );
        } else {
            let _ = writeln!(
                out,
                "| {} | - | - | {p50:.3} | {p99:.3} | - | - |",
                row.name
            );
        }
    }
    let baseline = rows.iter().position(|r| r.name == "gateway without quotas");
    if let Some(b) = baseline {
        for (row, values) in rows.iter().zip(&summary).skip(b + 1) {
            let added: Vec<f64> = values.iter().zip(&summary[b]).map(|(v, w)| v - w).collect();
            let _ = writeln!(
                out,
                "| **added by the quota call ({})** | **{:.3}** | **{:.3}** | **{:.3}** | **{:.3}** | **{:.1}** | **{:.1}** |",
                row.name.rsplit(", ").next().unwrap_or(row.name),
                added[0],
                added[1],
                added[2],
                added[3],
                added[4],
                added[5],
            );
        }
        // The spread behind the medians: what each round added.
        out.push('\n');
        for row in rows.iter().skip(b + 1) {
            let per_round =
                |with: &[f64; 2], without: &[f64; 2]| format!("{:.3}", with[1] - without[1]);
            let held: Vec<String> = row
                .held
                .iter()
                .zip(&rows[b].held)
                .map(|(w, wo)| per_round(w, wo))
                .collect();
            let client: Vec<String> = row
                .latencies
                .iter()
                .zip(&rows[b].latencies)
                .map(|(with, without)| format!("{:.3}", with.p99_ms - without.p99_ms))
                .collect();
            let _ = writeln!(
                out,
                "- p99 added in each round, {}: held {} ms; client {} ms",
                row.name,
                held.join(", "),
                client.join(", ")
            );
        }
        out.push('\n');
        for (row, values) in rows.iter().zip(&summary).skip(b + 1) {
            let added = values[1] - summary[b][1];
            let _ = writeln!(
                out,
                "Goal: the quota decision adds < 1 ms to the hold time at p99, {}: **{}** ({added:.3} ms added).",
                row.name,
                if added < 1.0 { "met" } else { "not met" }
            );
        }
    }
    out
}
