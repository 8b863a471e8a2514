//! The gateway's YAML configuration: [`file`] holds the structs the YAML is parsed into,
//! [`validate`] the semantic checks that turn them into a [`GatewayConfig`] (defined in
//! `model`, below the checks, as their shared helpers are in `check`). Pure apart from
//! [`load`], which reads the file.

mod auth;
mod check;
mod credentials;
pub mod file;
mod key_source;
mod model;
mod quota;
mod validate;

use std::path::{Path, PathBuf};

pub use key_source::MIN_HS256_SECRET_BYTES;
pub use model::{
    ConfigError, CredentialSettings, EndpointHost, EndpointUrl, Env, GatewayConfig, ListenerTls,
    Overrides, SHARED_UPSTREAM_CLUSTER, Upstream,
};

/// The process environment; a variable that is not UTF-8 counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses and validates the text of a configuration file. `file` names it in errors;
/// `base_dir` is the directory relative paths in it are resolved against.
pub fn parse(
    file: &str,
    text: &str,
    base_dir: &Path,
    overrides: &Overrides,
) -> Result<GatewayConfig, ConfigError> {
    parse_with_env(file, text, base_dir, overrides, &process_env)
}

/// [`parse`], reading environment variables through `env`.
pub fn parse_with_env(
    file: &str,
    text: &str,
    base_dir: &Path,
    overrides: &Overrides,
    env: Env<'_>,
) -> Result<GatewayConfig, ConfigError> {
    let raw = parse_yaml(file, text)?;
    validate::validate(file, raw, base_dir, overrides, env)
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<GatewayConfig, ConfigError> {
    load_with_env(path, overrides, &process_env)
}

/// [`load`], reading environment variables through `env`.
pub fn load_with_env(
    path: &Path,
    overrides: &Overrides,
    env: Env<'_>,
) -> Result<GatewayConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| ConfigError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let text = std::str::from_utf8(&text).map_err(|e| ConfigError::Read {
        file: file.clone(),
        reason: format!("expected UTF-8 text: {e}"),
    })?;
    parse_with_env(&file, text, &base_dir(path), overrides, env)
}

/// The absolute directory of a configuration file, against which its relative paths resolve.
pub fn base_dir(config_path: &Path) -> PathBuf {
    let absolute = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Key shown for errors that concern the whole document.
const ROOT_KEY: &str = "(document)";

fn parse_yaml(file: &str, text: &str) -> Result<file::ConfigFile, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            key: ROOT_KEY.to_string(),
            expected: "a YAML mapping with at least `upstream.region`".to_string(),
            found: Some("an empty file".to_string()),
        });
    }
    let deserializer = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        // `?` marks a segment serde could not name (inside a syntax error): cut it off.
        let mut key = error.path().to_string();
        while let Some(parent) = key.strip_suffix(".?").or_else(|| key.strip_suffix('?')) {
            key = parent.to_string();
        }
        if key == "." || key.is_empty() {
            key = ROOT_KEY.to_string();
        }
        let inner = error.inner();
        let location = inner.location();
        let mut message = inner.to_string();
        // serde_norway prefixes its own idea of the path and appends the position: both are
        // shown in our own format instead.
        if let Some(loc) = &location
            && let Some(stripped) =
                message.strip_suffix(&format!(" at line {} column {}", loc.line(), loc.column()))
        {
            message = stripped.to_string();
        }
        if let Some(stripped) = strip_key_prefix(&message, &key) {
            message = stripped.to_string();
        }
        let (key, message) = reword(key, message);
        ConfigError::Parse {
            file: file.to_string(),
            key,
            message,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    })
}

/// Says serde's messages in the file's terms: a missing or repeated key becomes the key's
/// own error, and Rust type names become what the file must hold.
fn reword(key: String, message: String) -> (String, String) {
    let child = |field: &str| {
        if key == ROOT_KEY {
            field.to_string()
        } else {
            format!("{key}.{field}")
        }
    };
    let field_in = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('`'))
            .map(str::to_string)
    };
    if let Some(field) = field_in("missing field `") {
        return (
            child(&field),
            "expected a value: the key is required".to_string(),
        );
    }
    if let Some(field) = field_in("duplicate field `") {
        return (
            child(&field),
            "expected the key once, found it twice".to_string(),
        );
    }
    let mut message = message;
    if let Some(start) = message.find("expected struct ") {
        message.replace_range(start.., "expected a mapping");
    }
    for (rust, yaml) in [
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number from 0 up"),
        ("expected usize", "expected a whole number from 0 up"),
        ("expected a boolean", "expected true or false"),
    ] {
        if let Some(stripped) = message.strip_suffix(rust) {
            message = format!("{stripped}{yaml}");
        }
    }
    (key, message)
}

/// serde_norway starts some messages with its own path: the key or, for an unknown key, its
/// parent (`upstream: unknown field ...`). Returns the message without it.
fn strip_key_prefix<'m>(message: &'m str, key: &str) -> Option<&'m str> {
    let boundaries = key
        .char_indices()
        .filter(|(_, c)| matches!(c, '.' | '['))
        .map(|(i, _)| i)
        .chain([key.len()]);
    boundaries
        .filter_map(|end| message.strip_prefix(&key[..end])?.strip_prefix(": "))
        .next_back()
}

#[cfg(test)]
mod tests;
