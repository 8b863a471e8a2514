//! Child processes that are stopped when dropped, with their output in a log file that is
//! printed when the test that owns them fails.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub struct Child {
    name: String,
    process: std::process::Child,
    log: PathBuf,
}

/// Makes the child receive SIGTERM when the thread that started it exits, so that a test
/// process killed by a timeout does not leave servers behind.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
}

impl Child {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        die_with_parent(&mut command);
        let out = open_log(log)?;
        let err = out.try_clone()?;
        let process = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_string(),
            process,
            log: log.to_path_buf(),
        })
    }

    /// Starts a server that prints one JSON line with its addresses on stdout when it is
    /// listening; returns it with that line. The rest of its output goes to `log`.
    pub fn spawn_reporting(
        name: &str,
        mut command: Command,
        log: &Path,
    ) -> anyhow::Result<(Self, serde_json::Value)> {
        die_with_parent(&mut command);
        let err = open_log(log)?;
        let mut process = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let stdout = process.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        let log_path = log.to_path_buf();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            if let Ok(mut file) = open_log(&log_path) {
                for line in lines.map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        let mut child = Self {
            name: name.to_string(),
            process,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let report = serde_json::from_str(&line).with_context(|| {
                        format!("{name} printed {line:?} instead of its addresses")
                    })?;
                    return Ok((child, report));
                }
                Err(_) if Instant::now() > deadline => {
                    bail!("{name} did not report its addresses in 30 s")
                }
                Err(_) => {
                    if let Some(status) = child.process.try_wait()? {
                        bail!("{name} exited with {status}:\n{}", child.log_tail());
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited after a few seconds.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let pid = Pid::from_raw(self.process.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} log (last lines) -----\n{}\n-----",
                self.name,
                self.log_tail()
            );
        }
        self.stop();
    }
}

fn open_log(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}
