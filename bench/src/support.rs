//! What the benchmarks share: Envoy configs from bench/envoy/, and starting Envoy.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use gateway_e2e::process::Child;
use gateway_e2e::stack::free_port;
use gateway_e2e::{Paths, Stack, StackOptions};
use serde_norway::Value as Yaml;

/// The benchmarks that pin processes to CPUs 0 and 1 need two.
pub fn require_two_cpus(bench: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
        "the {bench} benchmark pins processes to CPUs 0 and 1: it needs at least 2 CPUs"
    );
    Ok(())
}

pub fn template(name: &str) -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("envoy")
        .join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

pub fn envoy(paths: &Paths, work: &Path, name: &str, config: &str) -> anyhow::Result<Child> {
    let file = work.join(format!("{}.yaml", name.replace(['+', '(', ')', ' '], "_")));
    std::fs::write(&file, config)?;
    envoy_from(paths, &file, name)
}

/// Envoy (one worker) with the bootstrap in `file` (YAML, or binary protobuf when it ends in
/// `.pb`), logging beside it.
pub fn envoy_from(paths: &Paths, file: &Path, name: &str) -> anyhow::Result<Child> {
    let mut command = Command::new(&paths.envoy);
    command.arg("-c").arg(file).args([
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "warn",
    ]);
    Child::spawn(name, command, &file.with_extension("log"))
}

/// The upstream of the benchmarks (bench/envoy/upstream.yaml: an Envoy answering every
/// request at once) on a free port, listening.
pub fn upstream(paths: &Paths, work: &Path) -> anyhow::Result<(Child, u16)> {
    let port = free_port()?.port();
    let config = template("upstream.yaml")?.replace("{PORT}", &port.to_string());
    let mut upstream = envoy(paths, work, "upstream", &config)?;
    wait_listening(&mut upstream, SocketAddr::from(([127, 0, 0, 1], port)))?;
    Ok((upstream, port))
}

pub fn wait_listening(child: &mut Child, address: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while Instant::now() < deadline && child.is_running() {
        if TcpStream::connect_timeout(&address, std::time::Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!("nothing listens on {address}:\n{}", child.log_tail())
}

/// Limits high enough never to refuse: the benchmark measures deciding, not refusing.
pub const QUOTAS: &str = r#"
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

/// [`QUOTAS`] as the `quotas` section of a gateway config.
pub fn benchmark_quotas() -> anyhow::Result<Yaml> {
    serde_norway::from_str(QUOTAS).context("the benchmarks' quotas (bench/src/support.rs QUOTAS)")
}

/// The gateway with one Envoy worker and `auth`, in front of the benchmark upstream on
/// `upstream_port` (None: the stack's own emulator), with the benchmarks' quotas
/// ([`QUOTAS`]) when `quotas`.
pub fn one_worker_gateway(
    upstream_port: Option<u16>,
    auth: &Yaml,
    quotas: bool,
) -> anyhow::Result<Stack> {
    let quotas = quotas.then(benchmark_quotas).transpose()?;
    one_worker_gateway_with(upstream_port, auth, quotas)
}

/// [`QUOTAS`] with `allowances` at their defaults.
pub fn allowance_quotas() -> anyhow::Result<Yaml> {
    let mut quotas = benchmark_quotas()?;
    quotas["allowances"] = serde_norway::from_str("{}")?;
    Ok(quotas)
}

/// [`one_worker_gateway`] with this `quotas` section (or none).
pub fn one_worker_gateway_with(
    upstream_port: Option<u16>,
    auth: &Yaml,
    quotas: Option<Yaml>,
) -> anyhow::Result<Stack> {
    let auth = auth.clone();
    Stack::start(StackOptions {
        envoy_concurrency: 1,
        configure: Box::new(move |c: &mut Yaml| {
            if let Some(port) = upstream_port {
                c["upstream"]["endpoint_url"] = format!("http://127.0.0.1:{port}").into();
            }
            c["auth"] = auth.clone();
            if let Some(quotas) = &quotas {
                c["quotas"] = quotas.clone();
            }
        }),
        ..StackOptions::default()
    })
}
