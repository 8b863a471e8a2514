//! What the section checks share: how a rejection names the file ([`Checker`]) and small
//! helpers for keys, paths and values. Apart from [`validate`](super::validate) so the
//! section checks it calls need not import it.

use std::path::{Path, PathBuf};

use super::model::ConfigError;

/// Longest duration a protobuf `Duration` (and so Envoy) accepts, in seconds.
pub(super) const MAX_DURATION_SECONDS: u64 = 315_576_000_000;

pub(super) struct Checker<'a> {
    file: &'a str,
}

impl<'a> Checker<'a> {
    pub(super) fn new(file: &'a str) -> Self {
        Self { file }
    }

    pub(super) fn invalid(&self, key: &str, expected: &str, found: Option<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            key: key.to_string(),
            expected: expected.to_string(),
            found,
        }
    }
}

/// Splits `prefix[3].field` into `(3, "field")`.
pub(super) fn indexed<'k>(key: &'k str, prefix: &str) -> Option<(usize, &'k str)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('[')?;
    let (index, rest) = rest.split_once(']')?;
    let field = rest.strip_prefix('.').unwrap_or(rest);
    Some((index.parse().ok()?, field))
}

pub(super) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

pub(super) fn quoted(value: &str) -> String {
    format!("{value:?}")
}
