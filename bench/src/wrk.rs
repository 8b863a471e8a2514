//! Running wrk and reading its report, and the CPU time the process under test spent on it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time (µs, every thread) the measured process spent per request answered: its cost
    /// per request, much less sensitive than throughput to what else the machine runs.
    pub cpu_us_per_request: f64,
    /// The same for the other processes that work for its requests (`also`).
    pub also_cpu_us_per_request: f64,
    /// Requests answered.
    pub requests: u64,
    /// Of those, answers with a status outside 200-399 (wrk's "Non-2xx or 3xx responses").
    pub failed: u64,
}

/// One wrk run: `connections` connections on one thread for `seconds`, requests from `script`;
/// `pid` is the process whose CPU time is charged to the requests (the Envoy under test),
/// `also` other processes that do work for them (the gateway's xds-server). An answer that is
/// not a success is an error.
pub fn run(
    url: &str,
    script: &Path,
    connections: u32,
    seconds: u32,
    pid: u32,
    also: &[u32],
) -> anyhow::Result<Measurement> {
    let measured = run_counting_failures(url, script, connections, seconds, pid, also)?;
    if measured.failed > 0 {
        bail!(
            "{url}: {} of {} responses were not a success",
            measured.failed,
            measured.requests
        );
    }
    Ok(measured)
}

/// [`run`], where answers that are not a success are counted ([`Measurement::failed`]) for the
/// caller to report, instead of ending the run.
pub fn run_counting_failures(
    url: &str,
    script: &Path,
    connections: u32,
    seconds: u32,
    pid: u32,
    also: &[u32],
) -> anyhow::Result<Measurement> {
    let cpu_before = cpu_nanoseconds(&[pid])?;
    let also_before = cpu_nanoseconds(also)?;
    let output = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let cpu = cpu_nanoseconds(&[pid])?.saturating_sub(cpu_before);
    let also_cpu = cpu_nanoseconds(also)?.saturating_sub(also_before);
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let failed = match text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
    {
        Some(count) => count
            .trim()
            .parse()
            .with_context(|| format!("wrk's count of failed responses:\n{text}"))?,
        None => 0,
    };
    let field = |prefix: &str| -> anyhow::Result<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no {prefix:?} in wrk output:\n{text}"))
    };
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .with_context(|| format!("no request count in wrk output:\n{text}"))?
        .0
        .parse()?;
    Ok(Measurement {
        cpu_us_per_request: cpu as f64 / 1000.0 / requests.max(1) as f64,
        also_cpu_us_per_request: also_cpu as f64 / 1000.0 / requests.max(1) as f64,
        requests_per_second: field("Requests/sec:")?.parse()?,
        p50_ms: milliseconds(field("50%")?)?,
        p99_ms: milliseconds(field("99%")?)?,
        requests,
        failed,
    })
}

/// Nanoseconds every thread of the processes `pids` has run on a CPU
/// (`/proc/PID/task/*/schedstat`).
pub fn cpu_nanoseconds(pids: &[u32]) -> anyhow::Result<u64> {
    schedstat(pids, 0)
}

/// How many times the threads of `pids` were put on a CPU: each wake-up counts.
pub fn timeslices(pids: &[u32]) -> anyhow::Result<u64> {
    schedstat(pids, 2)
}

/// The sum of field `field` of `/proc/PID/task/*/schedstat` over every thread of `pids`
/// (0: time on CPU in ns, 1: time waiting for a CPU, 2: timeslices run).
fn schedstat(pids: &[u32], field: usize) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .with_context(|| format!("reading the threads of process {pid}"))?;
        for task in tasks {
            // A thread may end between listing and reading: it no longer counts.
            let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
                continue;
            };
            total += stat
                .split_whitespace()
                .nth(field)
                .and_then(|n| n.parse::<u64>().ok())
                .with_context(|| format!("unexpected schedstat: {stat:?}"))?;
        }
    }
    Ok(total)
}

fn milliseconds(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("latency without unit: {value}"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse()?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => bail!("unknown latency unit in {value}"),
    })
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(milliseconds("250.00us").unwrap(), 0.25);
        assert_eq!(milliseconds("1.50ms").unwrap(), 1.5);
        assert_eq!(milliseconds("2.00s").unwrap(), 2000.0);
        assert!(milliseconds("12").is_err());
    }

    #[test]
    fn cpu_time_of_this_process_grows() {
        let before = cpu_nanoseconds(&[std::process::id()]).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(
            cpu_nanoseconds(&[std::process::id()]).unwrap() > before,
            "{x}"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
