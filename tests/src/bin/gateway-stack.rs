//! Runs the whole gateway on loopback for tests in other languages (the Python/boto3 tests).
//! Prints one JSON line with the addresses, then keeps everything running until its standard
//! input closes (or it is terminated), and tears it all down.

use std::io::Read;

use clap::{Parser, ValueEnum};
use gateway_e2e::{Credentials, Stack, StackOptions};

#[derive(Parser)]
#[command(about = "Start the Bedrock gateway stack for tests and print its addresses")]
struct Args {
    #[arg(long, value_enum, default_value = "static")]
    credentials: CredentialKind,
    /// Lifetime of temporary credentials (with --credentials temporary).
    #[arg(long, default_value_t = 900)]
    ttl_seconds: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum CredentialKind {
    Static,
    Temporary,
    WrongSecret,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let credentials = match args.credentials {
        CredentialKind::Static => Credentials::Static,
        CredentialKind::Temporary => Credentials::Temporary {
            ttl_seconds: args.ttl_seconds,
        },
        CredentialKind::WrongSecret => Credentials::WrongSecret,
    };
    let stack = Stack::start(StackOptions {
        credentials,
        ..StackOptions::default()
    })?;
    let report = serde_json::json!({
        "gateway": stack.gateway_url(),
        "emulator_control": format!("http://{}", stack.emulator_control),
        "xds_http": format!("http://{}", stack.xds_http),
        "envoy_admin": format!("http://{}", stack.envoy_admin),
        "config_path": stack.config_path,
        "work_dir": stack.dir.path(),
    });
    println!("{report}");
    // Block until the parent closes our stdin (or dies).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(stack);
    Ok(())
}
