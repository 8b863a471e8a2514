//! Replies the gateway itself gives, in Bedrock's error shape so SDKs raise the matching
//! exception: status, `x-amzn-errortype`, JSON `{"message": ...}`.

use super::auth::AuthError;
use super::auth::policy::Denial;
use super::body::BodyError;
use super::path::PathError;
use super::routing::RouteError;
use super::signing::SignError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: u32,
    /// Error code SDKs map to an exception (`ValidationException`, ...).
    pub code: &'static str,
    pub message: String,
    /// A short, stable label for logs, metrics and the audit log.
    pub reason: &'static str,
    /// More response headers (`www-authenticate` of 401s, `retry-after` of 429s, ...).
    pub extra_headers: Vec<(&'static str, String)>,
}

impl ErrorReply {
    pub fn new(
        status: u32,
        code: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            reason,
            message: message.into(),
            extra_headers: Vec::new(),
        }
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::json!({ "message": self.message })
            .to_string()
            .into_bytes()
    }

    /// Response headers; `request_id` is Envoy's `x-request-id` when there is one.
    pub fn headers<'a>(&'a self, request_id: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-amzn-errortype", self.code),
        ];
        if let Some(id) = request_id {
            headers.push(("x-amzn-requestid", id));
        }
        headers.extend(self.extra_headers.iter().map(|(n, v)| (*n, v.as_str())));
        headers
    }

    /// 401 for a request without a usable token. The reason goes to the audit log only:
    /// the caller learns nothing that helps forge a better token.
    pub fn unauthenticated(error: AuthError) -> Self {
        if error == AuthError::Busy {
            return Self::new(
                429,
                "ThrottlingException",
                error.reason(),
                "Too many requests, please wait before trying again.",
            );
        }
        if error == AuthError::NoKeys {
            return Self::new(
                503,
                "ServiceUnavailableException",
                error.reason(),
                "The gateway cannot verify tokens right now. Try again shortly.",
            );
        }
        let (code, message, challenge) = if error == AuthError::MissingToken {
            (
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
                r#"Bearer realm="bedrock-gateway""#,
            )
        } else {
            (
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                r#"Bearer realm="bedrock-gateway", error="invalid_token""#,
            )
        };
        Self {
            extra_headers: vec![("www-authenticate", challenge.to_string())],
            ..Self::new(401, code, error.reason(), message)
        }
    }

    /// 403 for a call the caller's tenant and roles do not allow; the messages are the ones
    /// Bedrock itself uses, naming no policy detail.
    pub fn access_denied(denial: Denial) -> Self {
        const MODEL: &str = "You don't have access to the model with the specified model ID.";
        match denial {
            Denial::Model => Self::new(403, "AccessDeniedException", "model_not_allowed", MODEL),
            Denial::ModelUndetermined => Self::new(
                403,
                "AccessDeniedException",
                "model_undetermined",
                "You are not authorized to perform this operation.",
            ),
            Denial::Operation => Self::new(
                403,
                "AccessDeniedException",
                "operation_not_allowed",
                "You are not authorized to perform this operation.",
            ),
        }
    }

    /// 403 for a model the configured prices do not cover (and no price for unpriced models):
    /// its cost could not be counted.
    pub fn unpriced_model() -> Self {
        Self::new(
            403,
            "AccessDeniedException",
            "model_unpriced",
            "The gateway has no price for this model, so it cannot count what the call costs.",
        )
    }

    /// 400 for a path that could be read more than one way.
    pub fn ambiguous_path(error: PathError) -> Self {
        Self::validation("ambiguous_path", error.message())
    }

    /// 400 for a body the gateway must read (its models, or nothing is decided) and cannot.
    pub fn bad_body(error: BodyError) -> Self {
        let reason = match error {
            BodyError::NotJson(_) => "malformed_body",
            BodyError::DuplicateKey => "ambiguous_body",
            BodyError::ModelNotString | BodyError::InvalidModel | BodyError::TooManyModels => {
                "invalid_model"
            }
        };
        Self::validation(reason, error.message())
    }

    /// 400 for a model reference that cannot be one (see `gateway_common::model::is_valid`).
    pub fn invalid_model() -> Self {
        Self::validation("invalid_model", "The provided model identifier is invalid.")
    }

    pub fn validation(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", reason, message)
    }

    pub fn body_too_large(limit: u64) -> Self {
        Self::new(
            413,
            "ValidationException",
            "body_too_large",
            format!("The request body is larger than this gateway accepts ({limit} bytes)."),
        )
    }

    /// 429 for a request over a quota, with the limit's state in the usual headers.
    pub fn over_quota(limit: u64, remaining: u64, reset_seconds: u64) -> Self {
        let retry_after = reset_seconds.max(1).to_string();
        Self {
            extra_headers: vec![
                ("retry-after", retry_after.clone()),
                ("x-ratelimit-limit", limit.to_string()),
                ("x-ratelimit-remaining", remaining.to_string()),
                ("x-ratelimit-reset", retry_after),
            ],
            ..Self::new(
                429,
                "ThrottlingException",
                "quota_exceeded",
                "Too many requests, please wait before trying again.",
            )
        }
    }

    /// 503 when the quota service cannot decide and the configuration says to fail closed.
    pub fn quota_unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailableException",
            "quota_unavailable",
            "The gateway cannot check quotas right now. Try again shortly.",
        )
    }

    /// 500 when the filter has no valid configuration.
    pub fn not_configured() -> Self {
        Self::new(
            500,
            "InternalServerException",
            "not_configured",
            "The gateway filter has no valid configuration.",
        )
    }

    /// 500 when the filter could not do what Envoy's host interface should always do.
    pub fn internal() -> Self {
        Self::new(
            500,
            "InternalServerException",
            "host_error",
            "The gateway failed to process the request.",
        )
    }

    pub fn no_credentials() -> Self {
        Self::new(
            503,
            "ServiceUnavailableException",
            "no_credentials",
            "The gateway has no AWS credentials to sign the request with yet. Try again shortly.",
        )
    }
}

impl From<RouteError> for ErrorReply {
    fn from(error: RouteError) -> Self {
        match error {
            RouteError::UnknownService(name) => ErrorReply::validation(
                "unknown_service",
                format!(
                    "The service '{}' named in aws-endpoint-prefix is not served by this gateway.",
                    sanitize(&name)
                ),
            ),
            RouteError::ServiceNotEnabled(name) => ErrorReply::validation(
                "service_not_enabled",
                format!("This path belongs to {name}, which is not enabled on this gateway."),
            ),
            RouteError::Unresolvable => ErrorReply::validation(
                "unknown_path",
                "Cannot tell which Bedrock service this path is for. Send the aws-endpoint-prefix header (for example bedrock-runtime).",
            ),
        }
    }
}

impl From<SignError> for ErrorReply {
    fn from(error: SignError) -> Self {
        match error {
            SignError::UnsignableHeader(name) => ErrorReply::validation(
                "unsignable_header",
                format!("The value of header {name} contains characters that cannot be signed."),
            ),
        }
    }
}

/// Client-supplied text echoed in a message: printable ASCII only, bounded.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_message() {
        let reply = ErrorReply::from(RouteError::UnknownService("s3\"\n<x>".into()));
        let body: serde_json::Value = serde_json::from_slice(&reply.body()).unwrap();
        assert_eq!(
            body["message"],
            "The service 's3\"<x>' named in aws-endpoint-prefix is not served by this gateway."
        );
        assert_eq!((reply.status, reply.code), (400, "ValidationException"));
        assert_eq!(
            reply.headers(Some("rid")),
            [
                ("content-type", "application/json"),
                ("x-amzn-errortype", "ValidationException"),
                ("x-amzn-requestid", "rid")
            ]
        );
    }

    #[test]
    fn long_names_are_truncated() {
        let reply = ErrorReply::from(RouteError::UnknownService("a".repeat(1000)));
        assert!(reply.message.len() < 200);
    }
}
