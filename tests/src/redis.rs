//! A real redis-server on a free loopback port, for the tests of shared counters.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::Child;
use crate::stack::free_port;

pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Command::new(Self::binary()))
    }

    /// Started with `taskset -c <cpus>` (benchmarks).
    pub fn start_pinned(cpus: &str) -> anyhow::Result<Self> {
        let mut command = Command::new("taskset");
        command.args(["-c", cpus]).arg(Self::binary());
        Self::start_with(command)
    }

    fn binary() -> std::ffi::OsString {
        std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into())
    }

    fn start_with(mut command: Command) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("redis-").tempdir()?;
        let port = free_port()?.port();
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG SLEEP from loopback: tests make Redis slow on purpose.
                "--enable-debug-command",
                "local",
            ])
            .arg("--dir")
            .arg(dir.path());
        let child = Child::spawn("redis-server", command, &dir.path().join("redis.log"))
            .context("starting redis-server (scripts/test.sh installs it)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self {
                    port,
                    child,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server did not listen on port {port}")
    }

    /// The server's process id (`taskset` execs it, so this is redis-server's own).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Makes Redis slow: `times` times in a row it answers nothing for `seconds` (`DEBUG
    /// SLEEP`), from a thread of its own, each command served in between. Returns once the
    /// first sleep is sent.
    pub fn stall(&self, seconds: f64, times: u32) -> anyhow::Result<std::thread::JoinHandle<()>> {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        let arg = seconds.to_string();
        let command = format!(
            "*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n${}\r\n{arg}\r\n",
            arg.len()
        );
        stream.write_all(command.as_bytes())?;
        Ok(std::thread::spawn(move || {
            let mut reply = [0u8; 16];
            for i in 1..=times {
                let _ = stream.read(&mut reply);
                if i < times && stream.write_all(command.as_bytes()).is_err() {
                    return;
                }
            }
        }))
    }
}
