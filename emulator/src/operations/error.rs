//! Errors as Bedrock returns them: a status, `x-amzn-errortype: <Code>` and `{"message": ...}`.

use bytes::Bytes;

/// The error codes the emulator answers with, named as the SDKs map them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MissingAuthenticationToken,
    IncompleteSignature,
    InvalidSignature,
    UnrecognizedClient,
    ExpiredToken,
    UnknownOperation,
    Validation,
    Throttling,
    InternalServer,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::IncompleteSignature => "IncompleteSignatureException",
            Self::InvalidSignature => "InvalidSignatureException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::ExpiredToken => "ExpiredTokenException",
            Self::UnknownOperation => "UnknownOperationException",
            Self::Validation => "ValidationException",
            Self::Throttling => "ThrottlingException",
            Self::InternalServer => "InternalServerException",
        }
    }

    /// The HTTP status AWS pairs with the code.
    pub fn default_status(self) -> u16 {
        match self {
            Self::MissingAuthenticationToken
            | Self::InvalidSignature
            | Self::UnrecognizedClient
            | Self::ExpiredToken => 403,
            Self::IncompleteSignature | Self::Validation => 400,
            Self::UnknownOperation => 404,
            Self::Throttling => 429,
            Self::InternalServer => 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {}: {message}", code.as_str())]
pub struct ApiError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.default_status(),
            code,
            message: message.into(),
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Validation, message)
    }

    /// Bedrock's wording when a model body does not fit the model's schema.
    pub fn malformed_input(detail: impl std::fmt::Display) -> Self {
        Self::validation(format!(
            "Malformed input request: {detail}, please reformat your input and try again."
        ))
    }

    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidSignature, message)
    }

    /// `{"message": "..."}`.
    pub fn body(&self) -> Bytes {
        Bytes::from(serde_json::json!({ "message": self.message }).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_and_status() {
        let err = ApiError::new(ErrorCode::Throttling, "Too many \"requests\"");
        assert_eq!(err.status, 429);
        assert_eq!(err.body(), r#"{"message":"Too many \"requests\""}"#);
        assert_eq!(
            err.to_string(),
            "429 ThrottlingException: Too many \"requests\""
        );
        assert_eq!(ApiError::validation("x").with_status(413).status, 413);
        assert_eq!(
            ApiError::malformed_input("expected value at line 1 column 1").message,
            "Malformed input request: expected value at line 1 column 1, please reformat your input and try again."
        );
    }
}
