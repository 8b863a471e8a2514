//! `xds-server`: parses arguments, sets up logging, binds and calls the library.
#![forbid(unsafe_code)]

use std::{
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway_common::filter_config::Authentication;
use prost::Message as _;
use tokio::net::TcpListener;
use xds_server::{
    ServeOptions,
    config::{self, Overrides},
    credentials::{CredentialSource, aws::AwsChainSource, configured_source},
    filter_schema,
    identity::{
        KeySource, dev_key,
        mint::{self, SigningKey, TokenRequest},
    },
    snapshot::bootstrap::{self, ControlAddress},
    util::{rfc3339, unix_seconds},
};

#[derive(Parser)]
#[command(
    name = "xds-server",
    version,
    about = "Control service of the Bedrock gateway: Envoy configuration over ADS and signing credentials for the filter."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve ADS and the control API (gRPC) and the admin port (HTTP).
    Serve {
        /// The gateway's YAML configuration file (watched for changes).
        #[arg(long, env = "XDS_SERVER_CONFIG")]
        config: PathBuf,
        /// Address of the gRPC port (ADS and the control API); port 0 picks a free port.
        #[arg(
            long,
            env = "XDS_SERVER_GRPC_LISTEN",
            default_value = "127.0.0.1:18000"
        )]
        grpc_listen: SocketAddr,
        /// Address of the HTTP admin port (/healthz, /status, /metrics); port 0 picks a free port.
        #[arg(
            long,
            env = "XDS_SERVER_HTTP_LISTEN",
            default_value = "127.0.0.1:18001"
        )]
        http_listen: SocketAddr,
        /// Overrides `filter.wasm_path` (relative to the current directory).
        #[arg(long, env = "XDS_SERVER_WASM_PATH")]
        wasm_path: Option<PathBuf>,
        /// Milliseconds between two reads of the configuration file.
        #[arg(long, env = "XDS_SERVER_WATCH_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        watch_interval_ms: u64,
        /// On SIGTERM or SIGINT, seconds to go on serving while the health checks (gRPC
        /// `grpc.health.v1.Health`, `GET /healthz`) fail, so that Envoy stops choosing this
        /// server before its streams end; longer than Envoy's health check takes to notice
        /// (the shipped bootstraps: 2 s). 0 stops at once.
        #[arg(long, env = "XDS_SERVER_DRAIN_SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
        drain_seconds: u64,
    },
    /// Check a configuration file: prints `ok: FILE` or the error, exit status 0 or 1.
    Validate {
        #[arg(long)]
        config: PathBuf,
        /// Overrides `filter.wasm_path`, as `serve --wasm-path` would.
        #[arg(long)]
        wasm_path: Option<PathBuf>,
    },
    /// Print the gateway filter's JSON configuration rendered from the YAML file, as xds-server
    /// serves it (for a mesh's WasmPlugin or EnvoyExtensionPolicy; see docs/filter-config.md).
    FilterConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the JSON Schema of the filter's configuration (docs/filter-config.schema.json).
    FilterConfigSchema,
    /// Check a filter configuration written by hand (JSON; `-` reads stdin) as the filter
    /// will: prints `ok: FILE` or the error naming the key, exit status 0 or 1.
    ValidateFilterConfig { file: PathBuf },
    /// Check that the standard AWS credential chain yields credentials.
    CheckCredentials {
        /// Region for region-dependent providers (web identity); default: the SDK's own lookup.
        #[arg(long)]
        region: Option<String>,
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u64,
    },
    /// Print a signed JWT of a development issuer (one with `dev_signing_key` or
    /// `hs256_secret_env`), with the claims its claim mapping expects.
    MintToken {
        /// The gateway's YAML configuration file (its `auth` section).
        #[arg(long)]
        config: PathBuf,
        /// The caller's tenant (the issuer's `claims.tenant`).
        #[arg(long)]
        tenant: String,
        /// The issuer's `name`; default: the only issuer with a development key.
        #[arg(long)]
        issuer: Option<String>,
        /// The caller (the issuer's `claims.subject`).
        #[arg(long, default_value = "developer")]
        subject: String,
        /// A role (the issuer's `claims.role`, an array); repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// The caller's tier (the issuer's `claims.tier`).
        #[arg(long)]
        tier: Option<String>,
        /// Lifetime: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = mint::parse_ttl)]
        ttl: Duration,
        /// Another claim, KEY=VALUE (a dotted KEY nests; VALUE is JSON when it parses as
        /// JSON, else text); repeatable.
        #[arg(long = "claim", value_parser = mint::parse_claim)]
        claims: Vec<(String, serde_json::Value)>,
    },
    /// Write a static Envoy bootstrap (binary protobuf) with the rendered resources.
    Render {
        #[arg(long)]
        config: PathBuf,
        /// Where Envoy reaches xds-server's gRPC port (the `gateway_control` cluster).
        #[arg(long)]
        control_address: ControlAddress,
        /// Output file; Envoy reads it as binary protobuf when the name ends in `.pb`.
        #[arg(long)]
        out: PathBuf,
        /// Overrides `filter.wasm_path`.
        #[arg(long)]
        wasm_path: Option<PathBuf>,
    },
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not in `docker compose logs`, journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Validate { config, wasm_path } => validate(config, wasm_path),
        Command::FilterConfig { config } => print_filter_config(config),
        Command::FilterConfigSchema => {
            print!("{}", filter_schema::schema_json());
            Ok(())
        }
        Command::ValidateFilterConfig { file } => validate_filter_config(file),
        Command::Render {
            config,
            control_address,
            out,
            wasm_path,
        } => render(config, control_address, out, wasm_path),
        Command::MintToken {
            config,
            tenant,
            issuer,
            subject,
            roles,
            tier,
            ttl,
            claims,
        } => mint_token(
            config,
            issuer,
            TokenRequest {
                tenant,
                subject,
                roles,
                tier,
                ttl,
                extra: claims,
            },
        ),
        Command::CheckCredentials {
            region,
            timeout_seconds,
        } => runtime().and_then(|rt| rt.block_on(check_credentials(region, timeout_seconds))),
        Command::Serve {
            config,
            grpc_listen,
            http_listen,
            wasm_path,
            watch_interval_ms,
            drain_seconds,
        } => runtime().and_then(|rt| {
            rt.block_on(serve(
                config,
                grpc_listen,
                http_listen,
                wasm_path,
                Duration::from_millis(watch_interval_ms),
                Duration::from_secs(drain_seconds),
            ))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn validate(config: PathBuf, wasm_path: Option<PathBuf>) -> anyhow::Result<()> {
    config::load(&config, &Overrides { wasm_path })?;
    println!("ok: {}", config.display());
    Ok(())
}

fn print_filter_config(config: PathBuf) -> anyhow::Result<()> {
    // The filter's JSON does not name the module: a file whose `filter.wasm_path` is not
    // there is fine here.
    let gateway = config::load(
        &config,
        &Overrides {
            wasm_path: Some(std::env::current_exe()?),
        },
    )?;
    println!("{}", xds_server::snapshot::filter_json(&gateway));
    Ok(())
}

fn validate_filter_config(file: PathBuf) -> anyhow::Result<()> {
    let json = if file.as_os_str() == "-" {
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut json)?;
        json
    } else {
        std::fs::read(&file).with_context(|| format!("{}: cannot read", file.display()))?
    };
    filter_schema::check(&json).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    println!("ok: {}", file.display());
    Ok(())
}

fn render(
    config: PathBuf,
    control: ControlAddress,
    out: PathBuf,
    wasm_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let gateway = config::load(&config, &Overrides { wasm_path })?;
    let bootstrap = bootstrap::render(&gateway, &control);
    std::fs::write(&out, bootstrap.encode_to_vec())
        .with_context(|| format!("{}: cannot write", out.display()))?;
    println!("ok: {}", out.display());
    Ok(())
}

fn mint_token(
    config: PathBuf,
    issuer: Option<String>,
    request: TokenRequest,
) -> anyhow::Result<()> {
    // Only the `auth` section matters here: a file that leaves `filter.wasm_path` to the
    // command line must still do.
    let overrides = Overrides {
        wasm_path: Some(PathBuf::from("unused.wasm")),
    };
    let gateway = config::load(&config, &overrides)?;
    let file = config.display();
    let Authentication::Jwt(jwt) = &gateway.filter.authentication else {
        anyhow::bail!("{file}: auth.mode is none: no issuer to mint a token for");
    };
    let local = |source: &KeySource| {
        matches!(
            source,
            KeySource::DevSigningKey(_) | KeySource::SharedSecret(_)
        )
    };
    let names = |only_local: bool| {
        gateway
            .identity
            .iter()
            .filter(|s| !only_local || local(&s.source))
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let index = match &issuer {
        Some(name) => {
            let index = gateway
                .identity
                .iter()
                .position(|s| &s.name == name)
                .with_context(|| {
                    format!(
                        "{file}: no issuer is named {name:?} (issuers: {})",
                        names(false)
                    )
                })?;
            if !local(&gateway.identity[index].source) {
                anyhow::bail!(
                    "{file}: issuer {name:?} has no local signing key: mint-token signs only for issuers with dev_signing_key or hs256_secret_env"
                );
            }
            index
        }
        None => {
            let mut signers = gateway
                .identity
                .iter()
                .enumerate()
                .filter(|(_, s)| local(&s.source));
            match (signers.next(), signers.next()) {
                (Some((index, _)), None) => index,
                (None, _) => anyhow::bail!(
                    "{file}: no issuer has dev_signing_key or hs256_secret_env, so there is no key to sign with"
                ),
                (Some(_), Some(_)) => anyhow::bail!(
                    "{file}: several issuers can sign ({}): choose one with --issuer",
                    names(true)
                ),
            }
        }
    };
    let key = match &gateway.identity[index].source {
        KeySource::DevSigningKey(path) => {
            SigningKey::Ed25519(Box::new(dev_key::load_or_create(path)?))
        }
        KeySource::SharedSecret(secret) => SigningKey::Hs256(secret.clone()),
        _ => anyhow::bail!("{file}: the chosen issuer has no local signing key"),
    };
    let now = u64::try_from(unix_seconds(SystemTime::now())).unwrap_or(0);
    let claims = mint::claims(&jwt.issuers[index], &request, now)?;
    println!("{}", mint::sign(&key, claims)?);
    Ok(())
}

async fn check_credentials(region: Option<String>, timeout_seconds: u64) -> anyhow::Result<()> {
    let check = async {
        let source = AwsChainSource::new(region.as_deref()).await?;
        source.fetch().await
    };
    let credentials = tokio::time::timeout(Duration::from_secs(timeout_seconds), check)
        .await
        .map_err(|_| anyhow::anyhow!("no AWS credentials within {timeout_seconds} seconds"))??;
    if credentials.is_expired(SystemTime::now()) {
        anyhow::bail!(
            "the {} provider returned expired credentials",
            credentials.provider
        );
    }
    let expiry = credentials.expires_at.map_or_else(
        || "do not expire".to_string(),
        |at| format!("expire at {}", rfc3339(at)),
    );
    println!(
        "ok: credentials from {} (access key id {}…), {expiry}",
        credentials.provider,
        credentials.access_key_id_prefix()
    );
    Ok(())
}

async fn serve(
    config: PathBuf,
    grpc_listen: SocketAddr,
    http_listen: SocketAddr,
    wasm_path: Option<PathBuf>,
    watch_interval: Duration,
    drain: Duration,
) -> anyhow::Result<()> {
    let overrides = Overrides { wasm_path };
    // Fail before binding anything when the file is bad.
    let gateway = config::load(&config, &overrides)?;
    // Fixed for the life of the process: a changed `upstream.credentials` needs a restart.
    let source = configured_source(&gateway.upstream.credentials, &gateway.upstream.region).await?;
    let grpc = TcpListener::bind(grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {grpc_listen} (--grpc-listen)"))?;
    let http = TcpListener::bind(http_listen)
        .await
        .with_context(|| format!("cannot listen on {http_listen} (--http-listen)"))?;
    let addresses = serde_json::json!({
        "grpc": grpc.local_addr()?.to_string(),
        "http": http.local_addr()?.to_string(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{addresses}")?;
    stdout.flush()?;
    drop(stdout);
    let options = ServeOptions {
        config_path: config,
        overrides,
        watch_interval,
        drain,
    };
    xds_server::serve(options, grpc, http, source, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
