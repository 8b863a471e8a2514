//! How long the gateway holds a request before it goes upstream, measured inside Envoy: the
//! gateway's configuration rendered as a static bootstrap (`xds-server render`, the same
//! listener, routes, filter and clusters xds-server serves over ADS, the filter still asking
//! the same xds-server for credentials and decisions), on a port of its own, with one more
//! access log of two fields: Envoy's `%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)%`, from the
//! last byte of the request received to the first byte sent upstream (the hold), and
//! `%COMMON_DURATION(US_RX_BEG:DS_TX_BEG:us)%`, from the first byte of the response received
//! from upstream to the first byte sent to the client. What a client measures also holds its
//! own scheduling, the connection and the upstream; this is the gateway alone.

use std::io::{Read, Seek};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, address, data_source, socket_address,
    substitution_format_string,
};
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::Any;
use gateway_e2e::process::Child;
use gateway_e2e::stack::free_port;
use gateway_e2e::{Paths, Stack};
use prost::Message as _;

use crate::support::{envoy_from, wait_listening};

/// Envoy's points in a request's life between which the hold time is taken.
pub const HOLD_FORMAT: &str = "%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)%";
/// And those of the response's: its first byte from upstream to its first byte downstream.
pub const RESPONSE_HOLD_FORMAT: &str = "%COMMON_DURATION(US_RX_BEG:DS_TX_BEG:us)%";

/// One request's times in Envoy (µs): its hold, and its response's first byte's.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub request_us: u64,
    pub response_us: Option<u64>,
}

impl Held {
    /// What the gateway added to the time to the response's first byte: both holds.
    pub fn first_byte_us(&self) -> Option<u64> {
        self.response_us.map(|r| r.saturating_add(self.request_us))
    }
}

/// An Envoy (one worker) running `stack`'s gateway from a rendered bootstrap, logging each
/// request's hold time.
pub struct HeldEnvoy {
    pub child: Child,
    pub address: SocketAddr,
    log: PathBuf,
    /// Bytes of the log already read.
    read: u64,
}

impl HeldEnvoy {
    pub fn start(paths: &Paths, work: &Path, name: &str, stack: &Stack) -> anyhow::Result<Self> {
        let rendered = work.join(format!("{name}-rendered.pb"));
        let output = Command::new(&paths.xds_server)
            .arg("render")
            .arg("--config")
            .arg(&stack.config_path)
            .arg("--control-address")
            .arg(stack.xds_grpc.to_string())
            .arg("--wasm-path")
            .arg(&paths.wasm)
            .arg("--out")
            .arg(&rendered)
            .env("RUST_LOG", "warn")
            .output()
            .context("running xds-server render")?;
        if !output.status.success() {
            bail!(
                "xds-server render failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut bootstrap = Bootstrap::decode(std::fs::read(&rendered)?.as_slice())?;
        let port = free_port()?.port();
        let log = work.join(format!("{name}-hold.log"));
        std::fs::write(&log, "")?;
        let listeners = &mut bootstrap
            .static_resources
            .as_mut()
            .context("rendered bootstrap has no static resources")?
            .listeners;
        anyhow::ensure!(listeners.len() == 1, "rendered bootstrap has one listener");
        let listener = &mut listeners[0];
        let Some(address::Address::SocketAddress(socket)) =
            listener.address.as_mut().and_then(|a| a.address.as_mut())
        else {
            bail!("the rendered listener has no socket address");
        };
        socket.address = "127.0.0.1".into();
        socket.port_specifier = Some(socket_address::PortSpecifier::PortValue(u32::from(port)));
        let mut found = false;
        for chain in &mut listener.filter_chains {
            for network_filter in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &mut network_filter.config_type
                else {
                    continue;
                };
                if !any.type_url.ends_with("HttpConnectionManager") {
                    continue;
                }
                let mut manager = HttpConnectionManager::decode(any.value.as_slice())?;
                manager.access_log.push(hold_log(&log));
                *any = Any {
                    type_url: any.type_url.clone(),
                    value: manager.encode_to_vec(),
                };
                found = true;
            }
        }
        anyhow::ensure!(
            found,
            "the rendered listener has no HTTP connection manager"
        );
        let file = work.join(format!("{name}-held.pb"));
        std::fs::write(&file, bootstrap.encode_to_vec())?;
        let mut child = envoy_from(paths, &file, name)?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(&mut child, address)?;
        Ok(Self {
            child,
            address,
            log,
            read: 0,
        })
    }

    /// The hold times (µs) of the next `expected` requests logged since the last call, waiting
    /// for Envoy's log flush (every second) up to 10 s.
    pub fn hold_times(&mut self, expected: usize) -> anyhow::Result<Vec<u64>> {
        Ok(self.holds(expected)?.iter().map(|h| h.request_us).collect())
    }

    /// [`Held`] times of the next `expected` requests logged since the last call, as
    /// [`hold_times`](Self::hold_times) reads them.
    pub fn holds(&mut self, expected: usize) -> anyhow::Result<Vec<Held>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let length = std::fs::metadata(&self.log)?.len();
            let mut file = std::fs::File::open(&self.log)?;
            file.seek(std::io::SeekFrom::Start(self.read))?;
            let mut text = String::new();
            file.take(length - self.read).read_to_string(&mut text)?;
            // Only whole lines.
            let whole = text.rfind('\n').map_or(0, |i| i + 1);
            let lines = text[..whole].matches('\n').count();
            if lines >= expected || Instant::now() >= deadline {
                self.read += whole as u64;
                // `-`: the request never went upstream (refused, or failed).
                return Ok(text[..whole]
                    .lines()
                    .filter_map(|line| {
                        let mut fields = line.split_whitespace();
                        let request_us = fields.next()?.parse().ok()?;
                        let response_us = fields.next().and_then(|f| f.parse().ok());
                        Some(Held {
                            request_us,
                            response_us,
                        })
                    })
                    .collect());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn hold_log(path: &Path) -> AccessLog {
    let file = FileAccessLog {
        path: path.display().to_string(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
            SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(format!(
                            "{HOLD_FORMAT} {RESPONSE_HOLD_FORMAT}\n"
                        ))),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        )),
    };
    AccessLog {
        name: "envoy.access_loggers.file".into(),
        config_type: Some(access_log::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
                .into(),
            value: file.encode_to_vec(),
        })),
        ..Default::default()
    }
}

/// The `q` quantile (0..=1) of `values` (sorted in place).
pub fn quantile(values: &mut [u64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1] as f64
}
