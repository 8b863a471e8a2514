//! Memory of the filter's Wasm VMs under a long run of many tokens and tenants: 1 million
//! requests (by default) from 10,000 distinct tokens of 100 tenants, each token used 20 times in
//! a row and then not again until every other token has had its turn, so that a verified-token
//! cache of 4,096 entries keeps evicting; quotas on (a request limit per tenant and a token
//! budget), so that the per-tenant decisions and usage reports run too. The gateway's Envoy
//! (one worker) in front of an upstream that answers at once. After every wrk run of a few
//! seconds the run samples what the filter reports (`wasmcustom.bedrock_gateway.vm_memory_bytes`,
//! the linear memory of every VM of the plugin, and `token_cache_entries`) and Envoy's RSS.
//! Answers that are not a success do not end the run: each is recorded (status, error type,
//! message) and the report counts them by kind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use gateway_e2e::{Paths, Stack};

use crate::identity::{BenchIdp, JwtSettings};
use crate::jwt::MODEL_PATH;
use crate::support::{one_worker_gateway, upstream};
use crate::wrk;

/// The Converse request, with an output cap: the benchmark's upstream answers without usage,
/// so every request keeps the tokens it reserved, and without a cap each reserves the default
/// 4,096 output tokens plus its input, which spends the quotas' 4,000,000,000-token budget
/// ([`crate::support::QUOTAS`]) after ~975,000 requests (the 429s of the 2026-12-07 runs).
/// With 64, a request reserves ~70 tokens.
const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"benchmark"}]}],"inferenceConfig":{"maxTokens":64}}"#;

#[derive(clap::Args)]
pub struct Options {
    /// Requests in all.
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    /// Distinct tokens.
    #[arg(long, default_value_t = 10_000)]
    tokens: usize,
    /// Tenants the tokens belong to (token i to tenant i mod this).
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Requests in a row with the same token.
    #[arg(long, default_value_t = 20)]
    in_a_row: u64,
    /// The verified-token cache's bound (`auth.cache_max_entries`).
    #[arg(long, default_value_t = 4096)]
    cache: usize,
    /// Seconds of each wrk run between samples.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
}

/// One sample after `requests` requests.
struct Sample {
    requests: u64,
    vm_memory: u64,
    cache_entries: u64,
    rss: u64,
    requests_per_second: f64,
    /// Answers that were not a success in the wrk run before this sample.
    failed: u64,
}

/// Failed answers by (status, `x-amzn-errortype`, message): how many, and after how many
/// requests the first one came.
type Failures = BTreeMap<(u16, String, String), (u64, u64)>;

pub fn run(options: &Options) -> anyhow::Result<()> {
    let paths = Paths::discover()?;
    let work = tempfile::Builder::new()
        .prefix("gateway-bench-memory-")
        .tempdir()?;
    let idp = BenchIdp::new(work.path())?;
    eprintln!(
        "signing {} tokens of {} tenants",
        options.tokens, options.tenants
    );
    let tokens = sign_tokens(&idp, options.tokens, options.tenants)?;

    let (upstream, upstream_port) = upstream(&paths, work.path())?;
    let auth = idp.auth(&JwtSettings {
        cache_max_entries: options.cache,
        // The bound under test is the cache's; the budget would refuse the re-verifications
        // an evicting cache needs.
        max_verifications_per_second: 1_000_000,
        signature_checks: "xds-server",
        audit_log: "/dev/null",
    })?;
    let stack = one_worker_gateway(Some(upstream_port), &auth, true)?;
    let envoy_pid = stack
        .envoy_pid()
        .context("the gateway's Envoy is not running")?;
    let xds_pid = stack.xds_pid().context("no xds-server")?;
    let offset_file = work.path().join("offset");
    let failures_file = work.path().join("failures");
    let script = script(
        work.path(),
        &tokens,
        options.in_a_row,
        &offset_file,
        &failures_file,
    )?;
    let url = format!("{}{MODEL_PATH}", stack.gateway_url());

    let mut samples = vec![sample(&stack, envoy_pid, 0, 0.0)?];
    let mut failures = Failures::new();
    let mut done = 0u64;
    while done < options.requests {
        std::fs::write(&offset_file, done.to_string())?;
        std::fs::write(&failures_file, "")?;
        let measured =
            wrk::run_counting_failures(&url, &script, 16, options.seconds, envoy_pid, &[xds_pid])?;
        tally(&failures_file, done, &mut failures)?;
        done += measured.requests;
        let mut now = sample(&stack, envoy_pid, done, measured.requests_per_second)?;
        now.failed = measured.failed;
        eprintln!(
            "{:>9} requests: VMs {:.2} MiB, {} cached tokens, Envoy RSS {:.1} MiB, {:.0} req/s, {} failed",
            now.requests,
            mib(now.vm_memory),
            now.cache_entries,
            mib(now.rss),
            now.requests_per_second,
            now.failed
        );
        samples.push(now);
    }
    let verifications = stack
        .xds_metric("signature_checks_total{verdict=\"valid\"}")
        .unwrap_or(0);
    drop((stack, upstream));
    println!("{}", report(options, &samples, verifications, &failures));
    Ok(())
}

/// Adds the failed answers the wrk script recorded in `file` (one per line: status, error
/// type, message, tab-separated) to `failures`, as seen after `done` requests.
fn tally(file: &Path, done: u64, failures: &mut Failures) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).context("the wrk script's failures file")?;
    for line in text.lines() {
        let mut fields = line.splitn(3, '\t');
        let status = fields.next().unwrap_or_default().parse().unwrap_or(0);
        let kind = fields.next().unwrap_or_default().to_string();
        let message = fields.next().unwrap_or_default().trim().to_string();
        let entry = failures.entry((status, kind, message)).or_insert((0, done));
        entry.0 += 1;
    }
    Ok(())
}

/// `count` tokens, token `n` of tenant `tenant-{n mod tenants}`, signed on every CPU.
fn sign_tokens(idp: &BenchIdp, count: usize, tenants: usize) -> anyhow::Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(count))
                        .map(|n| idp.token(&format!("tenant-{}", n % tenants), n))
                        .collect::<anyhow::Result<Vec<String>>>()
                })
            })
            .collect();
        let mut tokens = Vec::with_capacity(count);
        for handle in handles {
            tokens.extend(
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a signing thread panicked"))??,
            );
        }
        Ok(tokens)
    })
}

/// A wrk script using each token `in_a_row` times, then the next, from the request number in
/// `offset_file` (so that consecutive wrk runs go on where the last one stopped); an answer with
/// a status of 400 or more is appended to `failures_file` (status, `x-amzn-errortype`, the
/// start of the body).
fn script(
    work: &Path,
    tokens: &[String],
    in_a_row: u64,
    offset_file: &Path,
    failures_file: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    let mut lua = format!(
        "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nlocal tokens = {{\n"
    );
    for token in tokens {
        writeln!(lua, "  \"{token}\",")?;
    }
    write!(
        lua,
        "}}\nlocal n = 0\ninit = function(args)\n  local f = io.open(\"{}\", \"r\")\n  n = tonumber(f:read(\"*a\"))\n  f:close()\nend\n\
         request = function()\n  local token = tokens[(math.floor(n / {in_a_row}) % #tokens) + 1]\n  n = n + 1\n  \
         wrk.headers[\"Authorization\"] = \"Bearer \" .. token\n  return wrk.format()\nend\n\
         response = function(status, headers, body)\n  if status > 399 then\n    \
         local f = io.open(\"{}\", \"a\")\n    \
         f:write(status, \"\\t\", headers[\"x-amzn-errortype\"] or \"-\", \"\\t\", ((body or \"\"):sub(1, 160):gsub(\"%c\", \" \")), \"\\n\")\n    \
         f:close()\n  end\nend\n",
        offset_file.display(),
        failures_file.display()
    )?;
    let path = work.join("memory.lua");
    std::fs::write(&path, lua)?;
    Ok(path)
}

fn sample(stack: &Stack, envoy_pid: u32, requests: u64, rate: f64) -> anyhow::Result<Sample> {
    let stats = stack.envoy_admin_get("/stats?filter=^wasmcustom\\.bedrock_gateway\\.")?;
    let gauge = |name: &str| -> anyhow::Result<u64> {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("wasmcustom.bedrock_gateway.{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no gauge {name} in Envoy's stats:\n{stats}"))
    };
    let status = std::fs::read_to_string(format!("/proc/{envoy_pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(Sample {
        requests,
        vm_memory: gauge("vm_memory_bytes")?,
        cache_entries: gauge("token_cache_entries")?,
        rss: rss_kib * 1024,
        requests_per_second: rate,
        failed: 0,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn report(
    options: &Options,
    samples: &[Sample],
    verifications: u64,
    failures: &Failures,
) -> String {
    let total = samples.last().map_or(0, |s| s.requests);
    let mut out = format!(
        "{total} requests through the gateway (Envoy with one worker, quotas on) from {} RS256 tokens of {} tenants, \
         each token {} times in a row, `auth.cache_max_entries: {}`; wrk runs of {} s (16 connections), a sample after \
         each. VMs: `wasmcustom.bedrock_gateway.vm_memory_bytes` (the linear memory of every VM of the plugin: Envoy's \
         main thread and its worker); xds-server checked {verifications} token signatures. The curve, a sample every \
         50,000 requests or so:\n\n\
         | requests | VMs MiB | cached tokens | Envoy RSS MiB | req/s | failed since the last row |\n|---:|---:|---:|---:|---:|---:|\n",
        options.tokens, options.tenants, options.in_a_row, options.cache, options.seconds
    );
    let mut next = 0u64;
    let mut failed = 0u64;
    for (i, s) in samples.iter().enumerate() {
        failed += s.failed;
        if s.requests >= next || i + 1 == samples.len() {
            let _ = writeln!(
                out,
                "| {} | {:.2} | {} | {:.1} | {:.0} | {failed} |",
                s.requests,
                mib(s.vm_memory),
                s.cache_entries,
                mib(s.rss),
                s.requests_per_second
            );
            failed = 0;
            next = (s.requests / 50_000 + 1) * 50_000;
        }
    }
    let failed: u64 = samples.iter().map(|s| s.failed).sum();
    if failed == 0 {
        let _ = writeln!(out, "\nEvery answer was a success.");
    } else {
        let _ = writeln!(
            out,
            "\n**{failed} of {total} answers were not a success**, by kind:\n\n\
             | status | x-amzn-errortype | message | answers | first after requests |\n|---:|---|---|---:|---:|"
        );
        for ((status, kind, message), (count, first)) in failures {
            let _ = writeln!(
                out,
                "| {status} | {kind} | {} | {count} | {first} |",
                message.replace('|', "\\|")
            );
        }
    }
    // Flat: nothing grows over the second half of the run.
    let half = samples
        .iter()
        .find(|s| s.requests >= total / 2)
        .unwrap_or(&samples[0]);
    let last = samples.last().unwrap_or(half);
    let most_cached = samples.iter().map(|s| s.cache_entries).max().unwrap_or(0);
    let vm_growth = last.vm_memory as f64 / half.vm_memory.max(1) as f64;
    let rss_growth = last.rss as f64 / half.rss.max(1) as f64;
    let _ = writeln!(
        out,
        "\nOver the second half ({} to {} requests): VMs x{vm_growth:.3} ({:.2} to {:.2} MiB), Envoy RSS x{rss_growth:.3}. \
         Memory flat (VMs grew < 1% over the second half): **{}**. The token cache's bound holds (at most {most_cached} \
         entries, bound {}): **{}**.",
        half.requests,
        last.requests,
        mib(half.vm_memory),
        mib(last.vm_memory),
        if half.requests == last.requests {
            "not judged (too few samples: run more requests)"
        } else if vm_growth < 1.01 {
            "yes"
        } else {
            "no"
        },
        options.cache,
        if most_cached <= options.cache as u64 {
            "yes"
        } else {
            "no"
        },
    );
    out
}
