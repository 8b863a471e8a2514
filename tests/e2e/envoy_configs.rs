//! Every Envoy configuration the project ships, and the one xds-server generates, passes
//! `envoy --mode validate`.

use std::process::Command;

use gateway_e2e::Paths;

fn validate(paths: &Paths, config: &std::path::Path) {
    let output = Command::new(&paths.envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .output()
        .expect("running envoy");
    assert!(
        output.status.success(),
        "{} failed validation:\n{}",
        config.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn shipped_bootstraps_validate() {
    let paths = Paths::discover().unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(paths.root.join("envoy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            validate(&paths, &path);
            count += 1;
        }
    }
    assert!(count >= 2, "expected the local and compose bootstraps");
}

#[test]
fn generated_resources_validate() {
    let paths = Paths::discover().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for config in ["config/local.yaml", "config/aws.yaml"] {
        let out = dir.path().join("static.pb");
        let status = Command::new(&paths.xds_server)
            .arg("render")
            .arg("--config")
            .arg(paths.root.join(config))
            .arg("--wasm-path")
            .arg(&paths.wasm)
            .args(["--control-address", "127.0.0.1:18000", "--out"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "render {config}");
        validate(&paths, &out);
    }
}
