//! Why a token was refused ([`AuthError`]), with the stable label the audit log and metrics
//! use.

/// Why a token was refused. The caller only ever learns "invalid token"; the reason goes to
/// the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    MissingToken,
    TooLarge,
    Malformed,
    AlgorithmNotAllowed,
    UnknownIssuer,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    NoExpiry,
    MissingClaim,
    /// No keys have arrived from the control service yet.
    NoKeys,
    /// This worker's verifications for the current second are used up.
    Busy,
    /// The token's issuer may not assert its tenant (`tenants` of the issuer).
    TenantNotAllowed,
}

impl AuthError {
    /// Stable label for the audit log and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::TooLarge => "token_too_large",
            AuthError::Malformed => "malformed_token",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::UnknownIssuer => "unknown_issuer",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::NoExpiry => "no_expiry",
            AuthError::MissingClaim => "missing_claim",
            AuthError::NoKeys => "no_keys",
            AuthError::Busy => "verification_budget",
            AuthError::TenantNotAllowed => "tenant_not_allowed",
        }
    }
}
