//! `bedrock-emulator`: parses the command line, sets up logging, binds the ports, prints one
//! JSON line with the bound addresses and serves until SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bedrock_emulator::{EmulatorConfig, serve};
use clap::Parser;
use tokio::net::TcpListener;

/// An HTTP server that behaves like Amazon Bedrock and verifies every request's SigV4 signature.
#[derive(Debug, Parser)]
#[command(name = "bedrock-emulator", version)]
struct Args {
    /// Address of the Bedrock API port (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    /// Address of the control port (health, request log, temporary credentials).
    #[arg(long)]
    control_listen: Option<SocketAddr>,
    /// The region requests must be signed for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Access key id of the static credentials the API port accepts.
    #[arg(long, env = "EMULATOR_ACCESS_KEY_ID", requires = "secret_access_key")]
    access_key_id: Option<String>,
    /// Secret access key of the static credentials.
    #[arg(
        long,
        env = "EMULATOR_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "access_key_id"
    )]
    secret_access_key: Option<String>,
    /// Session token the static credentials require in `x-amz-security-token`.
    #[arg(
        long,
        env = "EMULATOR_SESSION_TOKEN",
        hide_env_values = true,
        requires = "access_key_id"
    )]
    session_token: Option<String>,
    /// Lifetime of the credentials `GET /credentials` issues.
    #[arg(long, default_value_t = 900)]
    temp_credentials_ttl_seconds: u64,
    /// Largest accepted difference between `x-amz-date` and the emulator's clock.
    #[arg(long, default_value_t = 300)]
    max_clock_skew_seconds: u64,
    /// Accept any Host header (e.g. 127.0.0.1:4566), not only Bedrock's hostnames.
    #[arg(long)]
    any_host: bool,
}

impl Args {
    fn config(&self) -> EmulatorConfig {
        let mut config = EmulatorConfig {
            temp_credentials_ttl: Duration::from_secs(self.temp_credentials_ttl_seconds),
            max_clock_skew: Duration::from_secs(self.max_clock_skew_seconds),
            any_host: self.any_host,
            ..EmulatorConfig::new(&self.region)
        };
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            config = config.with_static_credentials(id, secret, self.session_token.clone());
        }
        config
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the emulator");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not in `docker compose logs`, journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = args.config();
    config.validate()?;

    let api = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot bind {}", args.listen))?;
    let control = match args.control_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("--control-listen: cannot bind {addr}"))?,
        ),
        None => None,
    };
    let api_addr = api.local_addr()?;
    let control_addr = control.as_ref().map(TcpListener::local_addr).transpose()?;
    let line = serde_json::json!({
        "listen": api_addr.to_string(),
        "control": control_addr.map(|a| a.to_string()),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").context("writing the startup line to stdout")?;
    stdout.flush().context("flushing stdout")?;
    drop(stdout);
    tracing::info!(
        listen = %api_addr,
        control = ?control_addr,
        region = %config.region,
        any_host = config.any_host,
        static_access_key_id = config.static_credentials.as_ref().map(|c| c.access_key_id.as_str()),
        "bedrock emulator ready"
    );
    serve(config, api, control, shutdown_signal()).await?;
    Ok(())
}
