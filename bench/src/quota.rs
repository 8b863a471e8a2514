//! What quotas cost, in one run on one machine:
//!
//! 1. **Decisions per second per core** of xds-server's rate limit service (pinned to one CPU
//!    with `taskset`, release build), driven over gRPC by a closed-loop Rust client on the other
//!    CPU: a baseline of the same call for a domain with no limits (decoding, dispatch and
//!    encoding only), the in-memory store, and the Redis store (redis-server on the same CPU).
//! 2. **Added latency through Envoy**: the same gateway without and with quotas (a request
//!    limit and a token budget, so every request makes the rate limit call and its usage is
//!    read and reported), in front of an upstream answering at once. The maximum throughput of
//!    the quota configuration is measured first (wrk), then both run at half of it with a
//!    fixed-rate client, interleaved; p50 and p99 differences are the quota call's cost.

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
use serde_yaml::Value as Yaml;

use crate::load;
use crate::support::{envoy, template, wait_listening};
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
}

const DOMAIN: &str = "bedrock-gateway";
const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"benchmark"}]}],"inferenceConfig":{"maxTokens":64}}"#;
const PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse";

/// Limits high enough never to refuse: the benchmark measures deciding, not refusing.
const QUOTAS: &str = r#"
failure_mode: closed
descriptors:
  - key: service
    rate_limit: {unit: second, requests_per_unit: 4000000000}
    descriptors:
      - key: tokens
        value: total
        rate_limit: {unit: month, requests_per_unit: 4000000000}
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 4000000000}
"#;

pub fn run(options: &Options) -> anyhow::Result<()> {
    let paths = Paths::discover()?;
    let dir = tempfile::Builder::new()
        .prefix("gateway-bench-quota-")
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // 1. Decisions per second.
    let redis = Redis::start_pinned("0")?;
    let memory = service(&paths, dir.path(), "memory", "store: {type: memory}")?;
    let redis_store = format!("store: {{type: redis, url: \"{}\"}}", redis.url());
    let with_redis = service(&paths, dir.path(), "redis", &redis_store)?;
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
    let cases = [
        (
            "baseline: no limits (same call, unknown domain)",
            vec![memory.0.pid()],
            memory.1,
            request("no-such-domain"),
        ),
        (
            "in-memory store",
            vec![memory.0.pid()],
            memory.1,
            request(DOMAIN),
        ),
        (
            "Redis store",
            vec![with_redis.0.pid(), redis.pid()],
            with_redis.1,
            request(DOMAIN),
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
        for (i, (name, pids, address, request)) in cases.iter().enumerate() {
            let before = wrk::cpu_nanoseconds(&pids[..])?;
            let run = runtime.block_on(load::decisions(
                &address.to_string(),
                request.clone(),
                options.concurrency,
                4,
                options.seconds,
            ))?;
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

    // 2. Added latency through Envoy.
    let upstream_port = free_port()?.port();
    let upstream_config = template("upstream.yaml")?.replace("{PORT}", &upstream_port.to_string());
    let mut upstream = envoy(&paths, dir.path(), "upstream", &upstream_config)?;
    wait_listening(
        &mut upstream,
        SocketAddr::from(([127, 0, 0, 1], upstream_port)),
    )?;
    let without = gateway(upstream_port, None)?;
    let with = gateway(upstream_port, Some(QUOTAS))?;
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    let url = |stack: &Stack| format!("{}{PATH}", stack.gateway_url());
    let envoy_pid = |stack: &Stack| {
        stack
            .envoy_pid()
            .context("the gateway's Envoy is not running")
    };
    wrk::run(&url(&with), &script, 4, 2, envoy_pid(&with)?)?;
    wrk::run(&url(&without), &script, 4, 2, envoy_pid(&without)?)?;
    let max = wrk::run(
        &url(&with),
        &script,
        16,
        options.seconds as u32,
        envoy_pid(&with)?,
    )?
    .requests_per_second;
    let rate = ((max / 2.0) as u64).max(1);
    eprintln!("gateway with quotas: {max:.0} req/s at most; measuring at {rate} req/s");
    let headers = vec![("content-type".to_string(), "application/json".to_string())];
    let mut latencies: [Vec<load::Latency>; 2] = [Vec::new(), Vec::new()];
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=options.rounds {
        for (i, (name, stack)) in [("without quotas", &without), ("with quotas", &with)]
            .iter()
            .enumerate()
        {
            // CPU time of Envoy and xds-server together: the quota call's cost is on both.
            let pids = [envoy_pid(stack)?, stack.xds_pid().context("no xds-server")?];
            let before = wrk::cpu_nanoseconds(&pids[..])?;
            let latency = runtime.block_on(load::fixed_rate(
                &url(stack),
                &headers,
                BODY,
                rate,
                options.seconds,
            ))?;
            let requests = (rate * options.seconds).max(1);
            let cpu_us = wrk::cpu_nanoseconds(&pids[..])?.saturating_sub(before) as f64
                / 1000.0
                / requests as f64;
            eprintln!(
                "round {round}: {name:<16} p50 {:.3} ms  p99 {:.3} ms  errors {}  {cpu_us:.1} µs CPU/request",
                latency.p50_ms, latency.p99_ms, latency.errors
            );
            latencies[i].push(latency);
            cpu[i].push(cpu_us);
        }
    }
    println!(
        "{}",
        report(
            options,
            &cases.map(|c| c.0),
            (&decisions, &per_cpu_second),
            max,
            rate,
            &latencies,
            &cpu,
        )
    );
    drop((without, with, upstream));
    Ok(())
}

/// Restricts every thread of this process (and what it starts later) to `cpus`.
fn pin_this_process(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
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

/// A gateway (one Envoy worker) in front of the upstream, with or without quotas.
fn gateway(upstream_port: u16, quotas: Option<&'static str>) -> anyhow::Result<Stack> {
    Stack::start(StackOptions {
        envoy_concurrency: 1,
        configure: Box::new(move |c: &mut Yaml| {
            c["upstream"]["endpoint_url"] = format!("http://127.0.0.1:{upstream_port}").into();
            c["auth"]["audit_log"] = "/dev/null".into();
            if let Some(quotas) = quotas {
                c["quotas"] = serde_yaml::from_str(quotas).unwrap_or_default();
            }
        }),
        ..StackOptions::default()
    })
}

fn report(
    options: &Options,
    names: &[&str; 3],
    (decisions, per_cpu_second): (&[Vec<f64>], &[Vec<f64>]),
    max: f64,
    rate: u64,
    latencies: &[Vec<load::Latency>; 2],
    cpu: &[Vec<f64>; 2],
) -> String {
    let mut out = format!(
        "Decisions per second, xds-server pinned to one CPU (`taskset -c 0`), {} concurrent gRPC calls on 4 connections, \
         the load driver on the other CPU, {} rounds x {} s (median). Decisions per CPU-second: decisions / CPU time \
         of the service (and of redis-server for Redis):\n\n\
         | rate limit service | decisions/s | vs baseline | decisions per CPU-second | vs baseline |\n|---|---:|---:|---:|---:|\n",
        options.concurrency, options.rounds, options.seconds
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
    let p =
        |i: usize, f: fn(&load::Latency) -> f64| wrk::median(latencies[i].iter().map(f).collect());
    let (p50_without, p99_without) = (p(0, |l| l.p50_ms), p(0, |l| l.p99_ms));
    let (p50_with, p99_with) = (p(1, |l| l.p50_ms), p(1, |l| l.p99_ms));
    let errors: u64 = latencies.iter().flatten().map(|l| l.errors).sum();
    let (cpu_without, cpu_with) = (wrk::median(cpu[0].clone()), wrk::median(cpu[1].clone()));
    let _ = write!(
        out,
        "\nThrough Envoy (one worker), gateway with quotas at most {max:.0} req/s (wrk, 16 connections); both \
         configurations at {rate} req/s (half of that), fixed-rate client, latency from when each request was due, \
         {} rounds x {} s (median), {errors} errors; CPU µs/request is Envoy's and xds-server's CPU time per request:\n\n\
         | configuration | p50 ms | p99 ms | CPU µs/request |\n|---|---:|---:|---:|\n\
         | gateway without quotas | {p50_without:.3} | {p99_without:.3} | {cpu_without:.1} |\n| gateway with quotas | {p50_with:.3} | {p99_with:.3} | {cpu_with:.1} |\n\
         | **added by the quota call** | **{:.3}** | **{:.3}** | **{:.1}** |\n",
        options.rounds,
        options.seconds,
        p50_with - p50_without,
        p99_with - p99_without,
        cpu_with - cpu_without,
    );
    out
}
