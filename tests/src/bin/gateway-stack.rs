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
    /// `none`, or `dev`: JWTs from a local development issuer (mint them with
    /// `xds-server mint-token --config <config_path> --tenant T`).
    #[arg(long, value_enum, default_value = "none")]
    auth: AuthKind,
    /// Serve HTTPS with a self-signed certificate (reported as `ca_file`).
    #[arg(long)]
    tls: bool,
    /// A YAML file whose top-level sections replace those of the gateway configuration
    /// (for instance `quotas`).
    #[arg(long)]
    config_overlay: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthKind {
    None,
    Dev,
}

/// The development issuer of `--auth dev`: every tenant may use Anthropic models on
/// bedrock-runtime and Retrieve; `team-a` the same, through a tenant entry.
const DEV_AUTH: &str = r#"
mode: jwt
issuers:
  - name: local-dev
    issuer: http://127.0.0.1/local-dev
    audiences: [bedrock-gateway]
    dev_signing_key: dev-issuer.pem
    required_claims: [tenant]
access:
  default:
    - {models: ["anthropic.*"]}
    - {services: [bedrock-agent-runtime], operations: [Retrieve]}
  tenants:
    team-a:
      - {models: ["anthropic.*"]}
      - {services: [bedrock-agent-runtime], operations: [Retrieve]}
"#;

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
    let auth = args.auth;
    let overlay: Option<serde_norway::Mapping> = match &args.config_overlay {
        Some(path) => Some(serde_norway::from_str(&std::fs::read_to_string(path)?)?),
        None => None,
    };
    let stack = Stack::start(StackOptions {
        credentials,
        configure: Box::new(move |config| {
            if auth == AuthKind::Dev {
                let audit_log = config["auth"]["audit_log"].clone();
                config["auth"] = serde_norway::from_str(DEV_AUTH).unwrap_or_default();
                config["auth"]["audit_log"] = audit_log;
            }
            for (key, value) in overlay.iter().flatten() {
                config[key] = value.clone();
            }
        }),
        tls: args.tls,
        ..StackOptions::default()
    })?;
    let report = serde_json::json!({
        "gateway": stack.gateway_url(),
        "emulator_control": format!("http://{}", stack.emulator_control),
        "xds_http": format!("http://{}", stack.xds_http),
        "xds_grpc": stack.xds_grpc.to_string(),
        "emulator_api": stack.emulator_api.to_string(),
        "envoy_admin": format!("http://{}", stack.envoy_admin),
        "config_path": stack.config_path,
        "work_dir": stack.dir.path(),
        "xds_server": stack.paths.xds_server,
        "ca_file": stack.ca_file,
    });
    println!("{report}");
    // Block until the parent closes our stdin (or dies).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(stack);
    Ok(())
}
