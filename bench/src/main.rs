//! Side-by-side benchmarks: the gateway's filter and Envoy's own filters doing comparable
//! work, each in its own Envoy (one worker) in front of the same upstream, measured in one run
//! with wrk in interleaved rounds. Machines here are noisy: compare ratios and medians.
//!
//!     cargo run --release -p gateway-bench -- jwt [--rounds 3] [--seconds 10]
//!     cargo run --release -p gateway-bench -- quota [--rounds 3] [--seconds 10]
//!     cargo run --release -p gateway-bench -- flood [--rounds 3] [--seconds 8] [--rate 2000]
//!     cargo run --release -p gateway-bench -- ttfb [--rounds 3] [--seconds 10] [--rate 200]
//!     cargo run --release -p gateway-bench -- memory [--requests 1000000] [--tokens 10000]

mod flood;
mod held;
mod identity;
mod jwt;
mod load;
mod memory;
mod quota;
mod support;
mod ttfb;
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
    /// Time to the first byte of a ConverseStream through the gateway against straight from
    /// the upstream.
    Ttfb(ttfb::Options),
    /// Memory of the filter's Wasm VMs over a million requests of many tokens and tenants.
    Memory(memory::Options),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Jwt(options) => jwt::run(&options),
        Bench::Quota(options) => quota::run(&options),
        Bench::Flood(options) => flood::run(&options),
        Bench::Ttfb(options) => ttfb::run(&options),
        Bench::Memory(options) => memory::run(&options),
    }
}
