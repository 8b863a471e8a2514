//! What the gateway and token verification cost per request, in one run on one machine:
//!
//! | configuration | what each request goes through |
//! |---|---|
//! | `envoy` | Envoy alone (router only): the baseline |
//! | `jwt_authn` | Envoy's jwt_authn (RS256, local JWKS), no JWT cache (its default) |
//! | `jwt_authn+cache` | the same with `jwt_cache_config` (Envoy's verified-JWT cache) |
//! | `jwt_authn+sigv4` | jwt_authn and aws_request_signing: Envoy's native chain doing the gateway's work |
//! | `jwt_authn+cache+sigv4` | the same chain with jwt_authn's cache |
//! | `wasm(empty)` | a proxy-wasm filter that does nothing (`bench/floor`): the price of Wasm |
//! | `wasm(minimal)` | one that does only the host work a signing gateway cannot avoid: the floor |
//! | `wasm(minimal+sigv4)` | the same plus SigV4's hashing (body, canonical request, HMAC) with the gateway's crates |
//! | `wasm(minimal) in the gateway's Envoy` | the same filter in place of the gateway's, in the Envoy xds-server configures |
//! | `wasm(minimal) in the gateway's Envoy, no audit log` | the same without the audit access log (`auth.audit_log: off`) |
//! | `gateway(auth none)` | the gateway filter: routing, header rewriting, SigV4 over the body |
//! | `gateway(auth none, no audit log)` | the same with `auth.audit_log: off` |
//! | `gateway(jwt cold)` | a token the worker has not verified on every request (256 round-robin, a cache of 1), its signature checked by xds-server |
//! | `gateway(jwt cold, signatures checked in the filter)` | the same with `auth.signature_checks: filter` (RSA in Wasm) |
//! | `gateway(jwt cached)` | the filter with its verified-token cache (the same token again) |
//!
//! With `--rate`, after the rounds at each configuration's maximum (wrk, closed loop), rounds
//! at one fixed rate for all (open loop) measure the CPU per request again: at their maximum,
//! configurations differ in how many requests Envoy handles per wake-up, at one rate they do
//! not.
//!
//! Every configuration runs in its own Envoy with one worker in front of the same upstream (an
//! Envoy answering 200 at once). Rounds interleave the configurations, so drift on a noisy
//! machine hits all of them alike; the report shows medians and the added cost per request
//! relative to Envoy alone in CPU time of the processes doing work for it (the Envoy under
//! test and, for the gateway, its xds-server), per request. Throughput and latency are shown
//! too, but on a two-core machine they mostly measure contention.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gateway_e2e::stack::free_port;
use gateway_e2e::{Paths, Stack, StackOptions};
use serde_norway::Value as Yaml;

use crate::identity::{AUDIENCE, BenchIdp, ISSUER, JwtSettings};
use crate::support::{envoy, template, upstream, wait_listening};
use crate::{load, wrk};

#[derive(clap::Args)]
pub struct Options {
    /// Interleaved rounds over all configurations.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Concurrent connections of wrk.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Distinct tokens sent round-robin in the cold-cache configuration.
    #[arg(long, default_value_t = 256)]
    cold_tokens: usize,
    /// Another build of the filter (an earlier commit's `.wasm`), run side by side as
    /// `baseline gateway(...)` with the same xds-server: a change's cost, in one run.
    #[arg(long)]
    baseline_wasm: Option<PathBuf>,
    /// Only the configurations whose name contains one of these (comma-separated; `envoy`,
    /// the baseline of every figure, always runs): more rounds of the ones a change is about.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Requests per second of the fixed-rate rounds, the same for every configuration (0: none).
    /// At their maximum, configurations differ in how many requests Envoy handles per wake-up;
    /// at one rate they do not, and the CPU per request is the work per request.
    /// Off by default: on a shared 2-vCPU VM, where Envoy alone costs some 130 µs per request
    /// at 2,000 req/s (a wake-up per event), the rounds spread by more than the differences.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds per fixed-rate run.
    #[arg(long, default_value_t = 5)]
    rate_seconds: u64,
}

const COLD_IN_FILTER: &str = "gateway(jwt cold, signatures checked in the filter)";
const FLOOR_IN_GATEWAY: &str = "wasm(minimal) in the gateway's Envoy";
const FLOOR_IN_GATEWAY_NO_LOG: &str = "wasm(minimal) in the gateway's Envoy, no audit log";
pub const MODEL_PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse";
pub const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"benchmark"}]}]}"#;

struct Target {
    name: &'static str,
    url: String,
    /// What it is sent.
    load: Load,
    /// The Envoy whose CPU time each request costs.
    pid: u32,
    /// Other processes working for its requests (the gateway's xds-server).
    also: Vec<u32>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let paths = Paths::discover()?;
    let dir = tempfile::Builder::new()
        .prefix("gateway-bench-")
        .tempdir()?;
    let work = dir.path();

    let idp = BenchIdp::new(work)?;
    let jwks = idp.jwks.clone();
    let token = |n: usize| idp.token("bench", n);
    let warm_token = token(0)?;
    let cold_tokens: Vec<String> = (1..=options.cold_tokens)
        .map(token)
        .collect::<Result<_, _>>()?;

    let (upstream, upstream_port) = upstream(&paths, work)?;
    let mut children = vec![upstream];

    let plain = Load::new(work, "plain", None, &[])?;
    let warm = Load::new(work, "warm", Some(&warm_token), &[])?;
    let cold = Load::new(work, "cold", None, &cold_tokens)?;
    let mut targets = Vec::new();
    let floor = floor_wasm(&paths)?;
    let natives: [(&'static str, String, &Load); 8] = [
        ("envoy", String::new(), &plain),
        ("jwt_authn", jwt_authn(&jwks, false), &warm),
        ("jwt_authn+cache", jwt_authn(&jwks, true), &warm),
        (
            "jwt_authn+sigv4",
            format!("{}{}", jwt_authn(&jwks, false), SIGV4),
            &warm,
        ),
        (
            "jwt_authn+cache+sigv4",
            format!("{}{}", jwt_authn(&jwks, true), SIGV4),
            &warm,
        ),
        ("wasm(empty)", floor_filter(&floor, "empty"), &plain),
        ("wasm(minimal)", floor_filter(&floor, "minimal"), &plain),
        (
            "wasm(minimal+sigv4)",
            floor_filter(&floor, "minimal+sigv4"),
            &plain,
        ),
    ];
    for (name, filters, load) in natives {
        let port = free_port()?.port();
        let config = template("native.yaml")?
            .replace("{PORT}", &port.to_string())
            .replace("{UPSTREAM_PORT}", &upstream_port.to_string())
            .replace("{HTTP_FILTERS}", filters.trim_end_matches('\n'));
        let mut child = envoy(&paths, work, name, &config)?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(&mut child, address)?;
        targets.push(Target {
            name,
            url: format!("http://{address}{MODEL_PATH}"),
            load: load.clone(),
            pid: child.pid(),
            also: Vec::new(),
        });
        children.push(child);
    }

    let mut stacks = Vec::new();
    let base = |name, load| GatewayRun {
        name,
        load,
        auth: None,
        wasm: None,
        audit: true,
        checks_in_filter: false,
    };
    let jwt = |name, load, cache| GatewayRun {
        auth: Some(cache),
        ..base(name, load)
    };
    let mut gateways = vec![
        base("gateway(auth none)", &plain),
        GatewayRun {
            audit: false,
            ..base("gateway(auth none, no audit log)", &plain)
        },
        // The floor filter in the gateway's own Envoy (as xds-server configures it).
        GatewayRun {
            wasm: Some(floor.as_path()),
            ..base(FLOOR_IN_GATEWAY, &plain)
        },
        // The same without the audit access log: what Envoy's log costs on its own.
        GatewayRun {
            wasm: Some(floor.as_path()),
            audit: false,
            ..base(FLOOR_IN_GATEWAY_NO_LOG, &plain)
        },
        jwt("gateway(jwt cold)", &cold, 1),
        GatewayRun {
            checks_in_filter: true,
            ..jwt(COLD_IN_FILTER, &cold, 1)
        },
        jwt("gateway(jwt cached)", &warm, 10_000),
    ];
    if let Some(wasm) = options.baseline_wasm.as_deref() {
        anyhow::ensure!(
            wasm.exists(),
            "--baseline-wasm {}: no such file",
            wasm.display()
        );
        gateways.push(GatewayRun {
            wasm: Some(wasm),
            ..base("baseline gateway(auth none)", &plain)
        });
        gateways.push(GatewayRun {
            wasm: Some(wasm),
            ..jwt("baseline gateway(jwt cached)", &warm, 10_000)
        });
    }
    if !options.only.is_empty() {
        gateways.retain(|g| options.only.iter().any(|o| g.name.contains(o.as_str())));
    }
    for run in gateways {
        let (name, load) = (run.name, run.load);
        let stack = gateway(upstream_port, &idp, &run)?;
        targets.push(Target {
            name,
            url: format!("{}{MODEL_PATH}", stack.gateway_url()),
            load: load.clone(),
            pid: stack
                .envoy_pid()
                .context("the gateway's Envoy is not running")?,
            also: vec![
                stack
                    .xds_pid()
                    .context("the gateway's xds-server is not running")?,
            ],
        });
        stacks.push(stack);
    }

    if !options.only.is_empty() {
        targets.retain(|t| {
            t.name == "envoy" || options.only.iter().any(|o| t.name.contains(o.as_str()))
        });
    }
    // Warm up (Wasm compilation, connections, first credentials), then measure.
    for target in &targets {
        // For tools that watch the run (bench/perf-split.sh).
        eprintln!("envoy pid {}: {}", target.pid, target.name);
        wrk::run(
            &target.url,
            &target.load.script,
            4,
            2,
            target.pid,
            &target.also,
        )
        .with_context(|| format!("warming up {}", target.name))?;
    }
    let mut results: Vec<Vec<wrk::Measurement>> = vec![Vec::new(); targets.len()];
    for round in 1..=options.rounds {
        // Each round starts one configuration later: where a configuration runs in a round
        // biases it (same build in two slots measured 13% apart in a fixed order).
        let start = (round as usize - 1) % targets.len();
        for i in (0..targets.len()).map(|k| (start + k) % targets.len()) {
            let target = &targets[i];
            let m = wrk::run(
                &target.url,
                &target.load.script,
                options.connections,
                options.seconds,
                target.pid,
                &target.also,
            )?;
            eprintln!(
                "round {round}: {:<32} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  {:.1} µs CPU/request (+{:.1} xds-server)",
                target.name,
                m.requests_per_second,
                m.p50_ms,
                m.p99_ms,
                m.cpu_us_per_request,
                m.also_cpu_us_per_request
            );
            results[i].push(m);
        }
    }
    let fixed = fixed_rate_rounds(options, &targets, &results)?;
    println!("{}", report(options, &targets, &results));
    if let Some(fixed) = fixed {
        println!("{}", fixed_rate_report(options, &targets, &fixed));
    }
    drop(stacks);
    drop(children);
    Ok(())
}

/// jwt_authn with the same key, issuer and audience as the gateway.
fn jwt_authn(jwks: &str, cache: bool) -> String {
    let cache = if cache {
        "\n                          jwt_cache_config: { jwt_cache_size: 10000 }"
    } else {
        ""
    };
    format!(
        r#"                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        corp:
                          issuer: {ISSUER}
                          audiences: [{AUDIENCE}]
                          local_jwks: {{ inline_string: '{jwks}' }}{cache}
                      rules:
                        - match: {{ prefix: "/" }}
                          requires: {{ provider_name: corp }}
"#
    )
}

/// The reference filters of `bench/floor`, built beside the gateway's.
fn floor_wasm(paths: &Paths) -> anyhow::Result<PathBuf> {
    let wasm = paths.wasm.with_file_name("gateway_bench_floor.wasm");
    anyhow::ensure!(
        wasm.exists(),
        "{} is not built (scripts/bench.sh builds it)",
        wasm.display()
    );
    Ok(wasm)
}

/// A floor filter (`mode`: `empty` or `minimal`) with the VM settings xds-server gives the
/// gateway's (runtime, failure policy, headers held until the body is there).
fn floor_filter(wasm: &Path, mode: &str) -> String {
    format!(
        r#"                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: floor
                        root_id: floor
                        vm_config:
                          vm_id: floor
                          runtime: envoy.wasm.runtime.v8
                          code: {{ local: {{ filename: "{wasm}" }} }}
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: {mode}
                        failure_policy: FAIL_RELOAD
                        allow_on_headers_stop_iteration: true
"#,
        wasm = wasm.display()
    )
}

/// Envoy's SigV4 signer over the whole body, with inline credentials.
const SIGV4: &str = r#"                  - name: envoy.filters.http.aws_request_signing
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning
                      service_name: bedrock
                      region: us-east-1
                      host_rewrite: bedrock-runtime.us-east-1.amazonaws.com
                      use_unsigned_payload: false
                      credential_provider:
                        inline_credential: { access_key_id: AKIDBENCHMARK, secret_access_key: bench-secret-not-real }
"#;

/// A gateway configuration of the benchmark.
struct GatewayRun<'a> {
    name: &'static str,
    load: &'a Load,
    /// The verified-token cache size in jwt mode; `None` for auth none.
    auth: Option<u32>,
    /// Another build of the filter.
    wasm: Option<&'a Path>,
    audit: bool,
    /// `auth.signature_checks: filter`.
    checks_in_filter: bool,
}

/// A gateway stack (xds-server + Envoy with the filter, one worker) in front of the upstream.
fn gateway(upstream_port: u16, idp: &BenchIdp, run: &GatewayRun<'_>) -> anyhow::Result<Stack> {
    let audit_log = if run.audit { "/dev/null" } else { "off" };
    let auth = match run.auth {
        None => None,
        Some(cache) => Some(idp.auth(&JwtSettings {
            cache_max_entries: cache as usize,
            // Measure verification itself, not the budget that protects it.
            max_verifications_per_second: 1_000_000,
            signature_checks: if run.checks_in_filter {
                "filter"
            } else {
                "xds-server"
            },
            audit_log,
        })?),
    };
    let wasm = run.wasm.map(Path::to_path_buf);
    Stack::start(StackOptions {
        envoy_concurrency: 1,
        configure: Box::new(move |c: &mut Yaml| {
            c["upstream"]["endpoint_url"] = format!("http://127.0.0.1:{upstream_port}").into();
            if let Some(wasm) = &wasm {
                c["filter"]["wasm_path"] = wasm.display().to_string().into();
            }
            c["auth"]["audit_log"] = audit_log.into();
            if let Some(auth) = &auth {
                c["auth"] = auth.clone();
            }
        }),
        ..StackOptions::default()
    })
}

/// What a configuration is sent: a wrk script, and the same headers for the fixed-rate client.
#[derive(Clone)]
struct Load {
    script: PathBuf,
    headers: Vec<Vec<(String, String)>>,
}

impl Load {
    fn new(
        work: &Path,
        name: &str,
        token: Option<&str>,
        rotate: &[String],
    ) -> anyhow::Result<Self> {
        let header_set = |token: Option<&str>| {
            let mut set = vec![("content-type".to_string(), "application/json".to_string())];
            if let Some(token) = token {
                set.push(("authorization".to_string(), format!("Bearer {token}")));
            }
            set
        };
        let headers = if rotate.is_empty() {
            vec![header_set(token)]
        } else {
            rotate.iter().map(|t| header_set(Some(t))).collect()
        };
        Ok(Self {
            script: script(work, name, token, rotate)?,
            headers,
        })
    }
}

/// One fixed-rate run's cost per request (CPU µs of the Envoy under test and of the processes
/// working for it), and its latency.
#[derive(Clone, Copy)]
struct FixedRate {
    cpu_us: f64,
    also_us: f64,
    latency: load::Latency,
}

/// Interleaved rounds at `options.rate` for every configuration whose maximum (the wrk rounds'
/// median) is at least twice that; `None` for the others. `None` in all when the rate is 0.
fn fixed_rate_rounds(
    options: &Options,
    targets: &[Target],
    saturated: &[Vec<wrk::Measurement>],
) -> anyhow::Result<Option<Vec<Option<Vec<FixedRate>>>>> {
    if options.rate == 0 || options.rate_seconds == 0 {
        return Ok(None);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let fits = |i: usize| {
        let max = wrk::median(saturated[i].iter().map(|m| m.requests_per_second).collect());
        max >= 2.0 * options.rate as f64
    };
    let mut results: Vec<Option<Vec<FixedRate>>> =
        (0..targets.len()).map(|i| fits(i).then(Vec::new)).collect();
    for round in 1..=options.rounds {
        let start = (round as usize - 1) % targets.len();
        for i in (0..targets.len()).map(|k| (start + k) % targets.len()) {
            let target = &targets[i];
            let Some(runs) = results[i].as_mut() else {
                continue;
            };
            let before = (
                wrk::cpu_nanoseconds(&[target.pid])?,
                wrk::cpu_nanoseconds(&target.also)?,
            );
            let latency = runtime.block_on(load::fixed_rate_rotating(
                &target.url,
                &target.load.headers,
                BODY,
                options.rate,
                options.rate_seconds,
            ))?;
            anyhow::ensure!(
                latency.errors == 0,
                "{}: {} fixed-rate requests failed",
                target.name,
                latency.errors
            );
            let requests = (options.rate * options.rate_seconds) as f64;
            let per_request =
                |after: u64, before: u64| after.saturating_sub(before) as f64 / requests / 1000.0;
            let run = FixedRate {
                cpu_us: per_request(wrk::cpu_nanoseconds(&[target.pid])?, before.0),
                also_us: per_request(wrk::cpu_nanoseconds(&target.also)?, before.1),
                latency,
            };
            eprintln!(
                "round {round} at {} req/s: {:<32} p50 {:.3} ms  p99 {:.3} ms  {:.1} µs CPU/request (+{:.1} xds-server)",
                options.rate,
                target.name,
                run.latency.p50_ms,
                run.latency.p99_ms,
                run.cpu_us,
                run.also_us
            );
            runs.push(run);
        }
    }
    Ok(Some(results))
}

/// The fixed-rate table and the floor's ratios from it.
fn fixed_rate_report(
    options: &Options,
    targets: &[Target],
    results: &[Option<Vec<FixedRate>>],
) -> String {
    let median = |i: usize, f: fn(&FixedRate) -> f64| {
        results[i]
            .as_ref()
            .map_or(f64::NAN, |runs| wrk::median(runs.iter().map(f).collect()))
    };
    let total = |r: &FixedRate| r.cpu_us + r.also_us;
    let cpu = |name: &str| {
        targets
            .iter()
            .position(|t| t.name == name)
            .map_or(f64::NAN, |i| median(i, total))
    };
    let baseline = cpu("envoy");
    let added = |name: &str| cpu(name) - baseline;
    let mut out = format!(
        "At a fixed rate of {} requests per second for every configuration ({} rounds x {} s, \
         open loop from the bench's own HTTP/1.1 client; configurations whose maximum is below \
         twice the rate are left out).\n\n\
         | configuration | CPU µs/request | xds-server µs/request | added vs Envoy alone | p50 ms | p99 ms |\n\
         |---|---:|---:|---:|---:|---:|\n",
        options.rate, options.rounds, options.rate_seconds
    );
    for (i, target) in targets.iter().enumerate() {
        if results[i].is_none() {
            let _ = writeln!(out, "| {} | - | - | - | - | - |", target.name);
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {:.1} | {:.3} | {:.3} |",
            target.name,
            median(i, |r| r.cpu_us),
            if target.also.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", median(i, |r| r.also_us))
            },
            median(i, total) - baseline,
            median(i, |r| r.latency.p50_ms),
            median(i, |r| r.latency.p99_ms),
        );
    }
    let floor = added("wasm(minimal)");
    let (base, whole) = (added("gateway(auth none)"), added("gateway(jwt cached)"));
    let _ = writeln!(
        out,
        "\nAt this rate, added CPU µs per request: the minimal filter {floor:.1}, the empty one {:.1}, \
         the minimal one with SigV4's hashing {:.1}, the minimal one in the gateway's Envoy {:.1}. \
         Against the minimal filter: base path {base:.1}, {}; whole chain {whole:.1}, {}. \
         jwt_authn+cache+sigv4 {:.1}.",
        added("wasm(empty)"),
        added("wasm(minimal+sigv4)"),
        added(FLOOR_IN_GATEWAY),
        verdict(base / floor, 1.2),
        verdict(whole / floor, 1.4),
        added("jwt_authn+cache+sigv4"),
    );
    out
}

/// A ratio against its goal (a ceiling), in bold, for the reports.
fn verdict(ratio: f64, goal: f64) -> String {
    if ratio.is_nan() {
        "not measured".to_string()
    } else if ratio <= goal {
        format!("**{ratio:.2}x, goal ≤ {goal}x: met**")
    } else {
        format!("**{ratio:.2}x, goal ≤ {goal}x: not met**")
    }
}

/// A wrk script posting the Converse body, with one token, or tokens round-robin.
pub fn script(
    work: &Path,
    name: &str,
    token: Option<&str>,
    rotate: &[String],
) -> anyhow::Result<PathBuf> {
    let mut lua = format!(
        "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
    );
    if let Some(token) = token {
        writeln!(lua, "wrk.headers[\"Authorization\"] = \"Bearer {token}\"")?;
    }
    if !rotate.is_empty() {
        lua.push_str("local tokens = {\n");
        for token in rotate {
            writeln!(lua, "  \"{token}\",")?;
        }
        lua.push_str(
            "}\nlocal n = 0\nrequest = function()\n  n = n + 1\n  wrk.headers[\"Authorization\"] = \"Bearer \" .. tokens[(n % #tokens) + 1]\n  return wrk.format()\nend\n",
        );
    }
    let path = work.join(format!("{name}.lua"));
    std::fs::write(&path, lua)?;
    Ok(path)
}

fn report(options: &Options, targets: &[Target], results: &[Vec<wrk::Measurement>]) -> String {
    let median =
        |i: usize, f: fn(&wrk::Measurement) -> f64| wrk::median(results[i].iter().map(f).collect());
    let index = |name: &str| targets.iter().position(|t| t.name == name);
    let total = |m: &wrk::Measurement| m.cpu_us_per_request + m.also_cpu_us_per_request;
    // CPU per request of every process doing work for it (median of the rounds).
    let cpu = |name: &str| index(name).map_or(f64::NAN, |i| median(i, total));
    let baseline = cpu("envoy");
    let added = |name: &str| cpu(name) - baseline;
    let jwt_authn = added("jwt_authn");
    let mut out = format!(
        "{} rounds x {} s, wrk 1 thread {} connections, each Envoy 1 worker, RS256 tokens (2048-bit key). \
         CPU µs/request: CPU time of the Envoy under test (all its threads) per request answered; \
         xds-server: the gateway's control service for the same requests; added: both, over Envoy alone.\n\n\
         | configuration | CPU µs/request | xds-server µs/request | added vs Envoy alone | req/s | p50 ms | p99 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        options.rounds, options.seconds, options.connections
    );
    for (i, target) in targets.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {:.1} | {:.0} | {:.3} | {:.3} |",
            target.name,
            median(i, |m| m.cpu_us_per_request),
            if target.also.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", median(i, |m| m.also_cpu_us_per_request))
            },
            median(i, total) - baseline,
            median(i, |m| m.requests_per_second),
            median(i, |m| m.p50_ms),
            median(i, |m| m.p99_ms),
        );
    }
    let floor = added("wasm(minimal)");
    let base = added("gateway(auth none)");
    let whole = added("gateway(jwt cached)");
    let _ = writeln!(
        out,
        "\nThe Wasm floor, added CPU µs per request: an empty proxy-wasm filter {:.1}, the minimal \
         signing-gateway host work {floor:.1}. Against the minimal filter: base path (gateway(auth none)) \
         {base:.1}, {}; whole chain (gateway(jwt cached)) {whole:.1}, {}. Above the floor: base path \
         {:.1}, whole chain {:.1}.",
        added("wasm(empty)"),
        verdict(base / floor, 1.2),
        verdict(whole / floor, 1.4),
        base - floor,
        whole - floor,
    );
    if index("wasm(minimal+sigv4)").is_some() {
        let hashed = added("wasm(minimal+sigv4)");
        let _ = writeln!(
            out,
            "\nThe floor with SigV4's hashing (wasm(minimal+sigv4)) {hashed:.1}: SigV4's SHA-256 work alone {:.1}; \
             against it, base path {:.2}x, whole chain {:.2}x.",
            hashed - floor,
            base / hashed,
            whole / hashed,
        );
    }
    if index(FLOOR_IN_GATEWAY).is_some() {
        let _ = writeln!(
            out,
            "\nWhere the base path goes, added CPU µs per request: the gateway's Envoy configuration \
             (access log, request id, route header removal, cluster header) {:.1} (the minimal filter in \
             the gateway's Envoy − in plain Envoy); the gateway filter's own work {:.1} (gateway(auth none) \
             − the minimal filter in the gateway's Envoy).",
            cpu(FLOOR_IN_GATEWAY) - cpu("wasm(minimal)"),
            cpu("gateway(auth none)") - cpu(FLOOR_IN_GATEWAY),
        );
    }
    if index("gateway(auth none, no audit log)").is_some() {
        let _ = writeln!(
            out,
            "\nThe audit log (the filter's record, Envoy's access log with its condition, the write to \
             /dev/null): {:.1} CPU µs per request (gateway(auth none) − gateway(auth none, no audit log)).",
            cpu("gateway(auth none)") - cpu("gateway(auth none, no audit log)"),
        );
    }
    // Verification alone: jwt_authn over Envoy alone (it verifies every request), against
    // the gateway with and without its verified-token cache over the gateway without auth.
    let cached = cpu("gateway(jwt cached)") - cpu("gateway(auth none)");
    let cold = cpu("gateway(jwt cold)") - cpu("gateway(auth none)");
    let _ = writeln!(
        out,
        "\nToken verification alone, CPU µs per request (every process): jwt_authn {jwt_authn:.1}, \
         jwt_authn with its cache {:.1}; the gateway cached {cached:.1} (gateway(jwt cached) − \
         gateway(auth none)), cold {cold:.1} (gateway(jwt cold) − gateway(auth none)). \
         Cold token against jwt_authn's verification: {}. Cached against jwt_authn: {:.2}x. \
         Cold with its signature checked in the filter (Wasm): {:.1} ({:.2}x jwt_authn's).",
        added("jwt_authn+cache"),
        verdict(cold / jwt_authn, 3.0),
        cached / jwt_authn,
        cpu(COLD_IN_FILTER) - cpu("gateway(auth none)"),
        (cpu(COLD_IN_FILTER) - cpu("gateway(auth none)")) / jwt_authn,
    );
    let _ = writeln!(
        out,
        "\nWhole chain (verify, route, sign) against Envoy's native filters, added CPU µs per request: \
         gateway(jwt cached) {whole:.1}; jwt_authn+sigv4 {:.1} ({:.2}x); jwt_authn+cache+sigv4 {:.1} ({:.2}x).",
        added("jwt_authn+sigv4"),
        whole / added("jwt_authn+sigv4"),
        added("jwt_authn+cache+sigv4"),
        whole / added("jwt_authn+cache+sigv4"),
    );
    if index("baseline gateway(jwt cached)").is_some() {
        let before = added("baseline gateway(jwt cached)");
        let before_base = added("baseline gateway(auth none)");
        let _ = writeln!(
            out,
            "\nThis build against the baseline build of the filter, added CPU µs per request: whole chain \
             {whole:.1} vs {before:.1} (**{:.2}x**); base path (auth none) {base:.1} vs {before_base:.1} ({:.2}x).",
            whole / before,
            base / before_base,
        );
    }
    out
}
