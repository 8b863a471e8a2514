//! The error the configuration checks return: which key, and what was expected there. A leaf
//! module: [`crate::filter_config`], [`crate::auth_config`] and [`crate::quota_config`] all
//! use it, and it uses none of them.

/// A semantic error in the filter configuration: which key, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: expected {expected}")]
pub struct InvalidKey {
    pub key: String,
    pub expected: String,
}

pub(crate) fn invalid(key: impl Into<String>, expected: impl Into<String>) -> InvalidKey {
    InvalidKey {
        key: key.into(),
        expected: expected.into(),
    }
}
