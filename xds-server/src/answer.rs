//! What the admin port answers: a status, a content type, headers and a body; shared by the
//! admin routes ([`crate::admin`]) and the usage page ([`crate::usage_page`]).

use http::{HeaderName, StatusCode};

use crate::quota::QuotaError;

/// An answer: status, content type, other headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    /// Headers besides `Content-Type` and `Cache-Control` (always `no-store`).
    pub headers: Vec<(HeaderName, String)>,
    pub body: String,
}

impl Answer {
    pub(crate) fn text(status: StatusCode, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: format!("{body}\n"),
        }
    }
}

/// A quota error as an answer: 404 without quotas, 503 when the store fails, 400 for a bad
/// argument.
pub(crate) fn quota_error(error: QuotaError) -> Answer {
    let code = match error {
        QuotaError::NotConfigured => StatusCode::NOT_FOUND,
        QuotaError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        QuotaError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
    };
    Answer::text(code, &error.to_string())
}
