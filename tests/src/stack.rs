//! The whole gateway on loopback: bedrock-emulator (the upstream), xds-server (config, xDS,
//! credentials) and Envoy with the wasm filter, each on a port chosen at start.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_norway::Value as Yaml;

use crate::paths::Paths;
use crate::process::Child;

/// Which AWS credentials xds-server finds through the standard chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// Long-term keys in the environment, known to the emulator.
    Static,
    /// Temporary credentials from the emulator's ECS-style endpoint
    /// (`AWS_CONTAINER_CREDENTIALS_FULL_URI`), each valid for this many seconds.
    Temporary { ttl_seconds: u64 },
    /// The emulator's key id with a wrong secret: every signature is wrong.
    WrongSecret,
}

pub struct StackOptions {
    pub credentials: Credentials,
    /// Edits the gateway YAML before the first start.
    pub configure: Box<dyn Fn(&mut Yaml)>,
    pub envoy_concurrency: u32,
    /// More environment variables for xds-server.
    pub xds_env: Vec<(String, String)>,
    /// Serve HTTPS with a self-signed certificate for `localhost` and `127.0.0.1`
    /// (`Stack::ca_file` is the certificate to trust).
    pub tls: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            credentials: Credentials::Static,
            configure: Box::new(|_| {}),
            envoy_concurrency: 2,
            xds_env: Vec::new(),
            tls: false,
        }
    }
}

/// One request as the emulator recorded it (see emulator/README.md).
#[derive(Debug, Clone, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
    pub access_key_id: Option<String>,
    pub signature_valid: bool,
    pub status: u16,
    pub error_code: Option<String>,
    /// The tokens the emulator reported in its answer; `None` for errors and operations
    /// without usage.
    #[serde(default)]
    pub usage: Option<RecordedUsage>,
}

/// Token counts as the emulator reported them: `input_tokens` excludes the prompt-cache ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct RecordedUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Stack {
    pub paths: Paths,
    pub gateway: SocketAddr,
    pub emulator_api: SocketAddr,
    pub emulator_control: SocketAddr,
    pub xds_grpc: SocketAddr,
    pub xds_http: SocketAddr,
    pub envoy_admin: SocketAddr,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub config_path: PathBuf,
    /// Set with `StackOptions::tls`: the certificate clients must trust.
    pub ca_file: Option<PathBuf>,
    credentials: Credentials,
    xds_env: Vec<(String, String)>,
    // Dropped in reverse order of start: Envoy first.
    envoy: Option<Child>,
    xds: Option<Child>,
    emulator: Child,
    /// Last: removed after the processes have stopped and their logs were shown.
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub fn start(options: StackOptions) -> anyhow::Result<Self> {
        let paths = Paths::discover()?;
        let dir = tempfile::Builder::new()
            .prefix("bedrock-gateway-")
            .tempdir()?;
        let access_key_id = format!("AKIAEMU{}", random_hex(6).to_uppercase());
        let secret_access_key = random_hex(20);

        let mut command = Command::new(&paths.emulator);
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--control-listen",
                "127.0.0.1:0",
                "--region",
                "us-east-1",
            ])
            .env("EMULATOR_ACCESS_KEY_ID", &access_key_id)
            .env("EMULATOR_SECRET_ACCESS_KEY", &secret_access_key)
            .env("RUST_LOG", "info");
        if let Credentials::Temporary { ttl_seconds } = options.credentials {
            command.args(["--temp-credentials-ttl-seconds", &ttl_seconds.to_string()]);
        }
        let (emulator, report) = Child::spawn_reporting(
            "bedrock-emulator",
            command,
            &dir.path().join("emulator.log"),
        )?;
        let emulator_api = address(&report, "listen")?;
        let emulator_control = address(&report, "control")?;

        let gateway = free_port()?;
        let audit_log = dir.path().join("audit.log");
        let mut config = base_config(&paths, gateway, emulator_api, &audit_log);
        if options.tls {
            let certified = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])?;
            std::fs::write(dir.path().join("gateway-cert.pem"), certified.cert.pem())?;
            std::fs::write(
                dir.path().join("gateway-key.pem"),
                certified.signing_key.serialize_pem(),
            )?;
            config["listener"]["tls"] = serde_norway::from_str(
                "{certificate_file: gateway-cert.pem, private_key_file: gateway-key.pem}",
            )?;
        }
        (options.configure)(&mut config);
        let ca_file = options.tls.then(|| dir.path().join("gateway-cert.pem"));
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, serde_norway::to_string(&config)?)?;

        let mut stack = Self {
            xds_grpc: "127.0.0.1:0".parse()?,
            xds_http: "127.0.0.1:0".parse()?,
            envoy_admin: "127.0.0.1:0".parse()?,
            envoy: None,
            xds: None,
            paths,
            dir,
            gateway,
            emulator_api,
            emulator_control,
            access_key_id,
            secret_access_key,
            ca_file,
            config_path,
            credentials: options.credentials,
            xds_env: options.xds_env,
            emulator,
        };
        stack.start_xds()?;
        stack.start_envoy(options.envoy_concurrency)?;
        Ok(stack)
    }

    /// Starts xds-server (again) on the same ports as before, if it ran before.
    pub fn start_xds(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.paths.xds_server);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("RUST_LOG", "info")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-aws-credentials"),
            )
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .args([
                "--grpc-listen",
                &self.xds_grpc.to_string(),
                "--http-listen",
                &self.xds_http.to_string(),
            ])
            .args(["--watch-interval-ms", "200"])
            .envs(self.xds_env.iter().map(|(k, v)| (k, v)));
        match self.credentials {
            Credentials::Static => {
                command
                    .env("AWS_ACCESS_KEY_ID", &self.access_key_id)
                    .env("AWS_SECRET_ACCESS_KEY", &self.secret_access_key);
            }
            Credentials::WrongSecret => {
                command
                    .env("AWS_ACCESS_KEY_ID", &self.access_key_id)
                    .env("AWS_SECRET_ACCESS_KEY", random_hex(20));
            }
            Credentials::Temporary { .. } => {
                command.env(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    format!("http://{}/credentials", self.emulator_control),
                );
            }
        }
        let (child, report) = Child::spawn_reporting(
            "xds-server",
            command,
            &self.dir.path().join("xds-server.log"),
        )?;
        self.xds_grpc = address(&report, "grpc")?;
        self.xds_http = address(&report, "http")?;
        self.xds = Some(child);
        Ok(())
    }

    pub fn stop_xds(&mut self) {
        if let Some(mut child) = self.xds.take() {
            child.stop();
        }
    }

    fn start_envoy(&mut self, concurrency: u32) -> anyhow::Result<()> {
        let bootstrap = self.bootstrap()?;
        let bootstrap_path = self.dir.path().join("bootstrap.yaml");
        std::fs::write(&bootstrap_path, serde_norway::to_string(&bootstrap)?)?;
        let admin_path = self.dir.path().join("envoy-admin-address");
        let mut command = Command::new(&self.paths.envoy);
        let log_level = std::env::var("GATEWAY_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        command
            .arg("-c")
            .arg(&bootstrap_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .args(["--log-level", &log_level, "--drain-time-s", "1"]);
        self.envoy = Some(Child::spawn(
            "envoy",
            command,
            &self.dir.path().join("envoy.log"),
        )?);
        let deadline = Instant::now() + Duration::from_secs(60);
        let admin = loop {
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break addr;
            }
            self.check_envoy_alive(deadline)?;
            std::thread::sleep(Duration::from_millis(20));
        };
        self.envoy_admin = admin;
        self.wait_for_listener(deadline)
    }

    fn check_envoy_alive(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let envoy = self.envoy.as_mut().context("envoy not started")?;
        if !envoy.is_running() {
            bail!("envoy exited:\n{}", envoy.log_tail());
        }
        if Instant::now() > deadline {
            bail!("envoy did not become ready:\n{}", envoy.log_tail());
        }
        Ok(())
    }

    /// Waits until Envoy has its listener from xDS and accepts connections on it.
    fn wait_for_listener(&mut self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let ready = http_get(&format!("http://{}/ready", self.envoy_admin))
                .map(|(status, _)| status == 200)
                .unwrap_or(false);
            let listening = ready
                && http_get(&format!("http://{}/listeners", self.envoy_admin))
                    .map(|(_, body)| body.contains("bedrock_gateway"))
                    .unwrap_or(false);
            if listening
                && TcpStream::connect_timeout(&self.gateway, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            self.check_envoy_alive(deadline)?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The shipped bootstrap with this stack's ports.
    fn bootstrap(&self) -> anyhow::Result<Yaml> {
        let text = std::fs::read_to_string(self.paths.root.join("envoy/bootstrap.yaml"))?;
        let mut bootstrap: Yaml = serde_norway::from_str(&text)?;
        bootstrap["admin"]["address"]["socket_address"]["port_value"] = 0.into();
        let clusters = bootstrap["static_resources"]["clusters"]
            .as_sequence_mut()
            .context("bootstrap clusters")?;
        // gateway_control and gateway_quota both reach xds-server.
        let mut pointed = 0;
        for cluster in clusters
            .iter_mut()
            .filter(|c| c["name"] == "gateway_control" || c["name"] == "gateway_quota")
        {
            let address = &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"];
            address["address"] = self.xds_grpc.ip().to_string().into();
            address["port_value"] = self.xds_grpc.port().into();
            pointed += 1;
        }
        anyhow::ensure!(
            pointed == 2,
            "the bootstrap has gateway_control and gateway_quota"
        );
        Ok(bootstrap)
    }

    pub fn gateway_url(&self) -> String {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.gateway)
    }

    pub fn envoy_pid(&self) -> Option<u32> {
        self.envoy.as_ref().map(Child::pid)
    }

    pub fn emulator_pid(&self) -> u32 {
        self.emulator.pid()
    }

    pub fn xds_pid(&self) -> Option<u32> {
        self.xds.as_ref().map(Child::pid)
    }

    /// The gateway YAML as it is on disk now.
    pub fn config(&self) -> anyhow::Result<Yaml> {
        Ok(serde_norway::from_str(&std::fs::read_to_string(
            &self.config_path,
        )?)?)
    }

    /// Replaces the gateway YAML (xds-server picks the change up by itself).
    pub fn write_config_text(&self, text: &str) -> anyhow::Result<()> {
        // Write then rename, as editors and ConfigMap updates do.
        let tmp = self.config_path.with_extension("yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config_path)?;
        Ok(())
    }

    pub fn write_config(&self, config: &Yaml) -> anyhow::Result<()> {
        self.write_config_text(&serde_norway::to_string(config)?)
    }

    pub fn emulator_requests(&self) -> anyhow::Result<Vec<RecordedRequest>> {
        let (status, body) = http_get(&format!("http://{}/requests", self.emulator_control))?;
        if status != 200 {
            bail!("emulator /requests answered {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    pub fn clear_emulator_requests(&self) -> anyhow::Result<()> {
        http_request(
            "DELETE",
            &format!("http://{}/requests", self.emulator_control),
        )?;
        Ok(())
    }

    /// The usage ledger from xds-server's HTTP endpoint (`GET /usage?...`).
    pub fn usage(&self, query: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = http_get(&format!("http://{}/usage?{query}", self.xds_http))?;
        if status != 200 {
            bail!("/usage answered {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// A counter or gauge of xds-server's `/metrics` (`xds_server_` + `name`), 0 when absent.
    pub fn xds_metric(&self, name: &str) -> anyhow::Result<u64> {
        let (_, body) = http_get(&format!("http://{}/metrics", self.xds_http))?;
        let prefix = format!("xds_server_{name} ");
        Ok(body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0))
    }

    /// xds-server's whole `/metrics` text (OpenMetrics).
    pub fn xds_metrics_text(&self) -> anyhow::Result<String> {
        Ok(http_get(&format!("http://{}/metrics", self.xds_http))?.1)
    }

    pub fn xds_status(&self) -> anyhow::Result<serde_json::Value> {
        let (_, body) = http_get(&format!("http://{}/status", self.xds_http))?;
        Ok(serde_json::from_str(&body)?)
    }

    /// The audit log lines written so far, parsed.
    pub fn audit_lines(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                serde_json::from_str(line)
                    .with_context(|| format!("audit line is not JSON: {line}"))
            })
            .collect()
    }

    pub fn envoy_admin_get(&self, path: &str) -> anyhow::Result<String> {
        Ok(http_get(&format!("http://{}{path}", self.envoy_admin))?.1)
    }

    /// Every log line the stack wrote so far (Envoy, xds-server, emulator).
    pub fn all_logs(&self) -> String {
        let mut text = String::new();
        for child in [self.envoy.as_ref(), self.xds.as_ref(), Some(&self.emulator)]
            .into_iter()
            .flatten()
        {
            text.push_str(&child.log_text());
        }
        text
    }

    /// Waits until `check` holds, polling; fails with `what` after `timeout`.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("timed out after {timeout:?} waiting for {what}")
    }
}

fn base_config(
    paths: &Paths,
    gateway: SocketAddr,
    emulator: SocketAddr,
    audit_log: &std::path::Path,
) -> Yaml {
    let text = format!(
        r#"
listener:
  address: 127.0.0.1
  port: {port}
upstream:
  region: us-east-1
  endpoint_url: http://{emulator}
filter:
  wasm_path: {wasm}
  credentials_refresh_seconds: 60
auth:
  mode: none
  audit_log: {audit}
"#,
        port = gateway.port(),
        wasm = paths.wasm.display(),
        audit = audit_log.display(),
    );
    serde_norway::from_str(&text).unwrap_or(Yaml::Null)
}

fn address(report: &serde_json::Value, key: &str) -> anyhow::Result<SocketAddr> {
    report[key]
        .as_str()
        .with_context(|| format!("no {key} address in {report}"))?
        .parse()
        .with_context(|| format!("bad {key} address in {report}"))
}

/// A loopback port nothing listens on right now, below the kernel's ephemeral port range.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    // A port from bind(0) is in the kernel's ephemeral range, where every outgoing connection
    // (wrk's, Envoy's upstream ones) takes its local port: under load one took such a port
    // between this choice and Envoy's bind. Ports below that range are only ever taken by a
    // listener, so choose there, at random, never the same one twice in a process.
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FROM: u16 = 10_000;
    if ephemeral_from > FROM + 1_000 {
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for attempt in 0..1_000u64 {
            let port = FROM + (random(attempt) % u64::from(ephemeral_from - FROM)) as u16;
            if given.contains(&port) {
                continue;
            }
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                given.insert(port);
                return Ok(listener.local_addr()?);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A random number (std's randomly keyed hasher over `salt`).
fn random(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(salt);
    hasher.finish()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    http_request("GET", url)
}

fn http_request(method: &str, url: &str) -> anyhow::Result<(u16, String)> {
    let agent = agent();
    let mut response = match method {
        "DELETE" => agent.delete(url).call()?,
        _ => agent.get(url).call()?,
    };
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string()?;
    Ok((status, body))
}

fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, RandomState};
    (0..bytes.div_ceil(8))
        .map(|i| format!("{:016x}", RandomState::new().hash_one(i)))
        .collect::<String>()[..bytes * 2]
        .to_string()
}
