//! Side-by-side benchmarks: the gateway's filter and Envoy's own filters doing comparable
//! work, each in its own Envoy (one worker) in front of the same upstream, measured in one run
//! with wrk in interleaved rounds. Machines here are noisy: compare ratios and medians.
//!
//!     cargo run --release -p gateway-bench -- jwt [--rounds 3] [--seconds 10]
//!     cargo run --release -p gateway-bench -- quota [--rounds 3] [--seconds 10]
//!     cargo run --release -p gateway-bench -- flood [--rounds 3] [--seconds 8] [--rate 2000]

mod flood;
mod identity;
mod jwt;
mod load;
mod quota;
mod support;
mod wrk;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks of the Bedrock gateway (see bench/README.md)")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Per-request cost of token verification: no auth, Envoy's jwt_authn (with and without
    /// its JWT cache, and with aws_request_signing), the gateway filter with a cold and a warm
    /// verified-token cache.
    Jwt(jwt::Options),
    /// Decisions per second of the rate limit service (baseline, in-memory, Redis) and the
    /// latency the quota call adds through Envoy at half the maximum throughput.
    Quota(quota::Options),
    /// Whether a flood of fresh or forged tokens takes the CPU that callers with cached
    /// tokens need.
    Flood(flood::Options),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Jwt(options) => jwt::run(&options),
        Bench::Quota(options) => quota::run(&options),
        Bench::Flood(options) => flood::run(&options),
    }
}
