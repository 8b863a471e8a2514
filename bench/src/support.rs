//! What the benchmarks share: Envoy configs from bench/envoy/, and starting Envoy.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use gateway_e2e::Paths;
use gateway_e2e::process::Child;

pub fn template(name: &str) -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("envoy")
        .join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

pub fn envoy(paths: &Paths, work: &Path, name: &str, config: &str) -> anyhow::Result<Child> {
    let file = work.join(format!("{}.yaml", name.replace(['+', '(', ')', ' '], "_")));
    std::fs::write(&file, config)?;
    let mut command = Command::new(&paths.envoy);
    command.arg("-c").arg(&file).args([
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "warn",
    ]);
    Child::spawn(name, command, &file.with_extension("log"))
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
