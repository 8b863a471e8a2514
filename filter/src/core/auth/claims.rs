//! The tenant context from a verified token's claims.

use gateway_common::auth_config::{Issuer, glob_matches};
use serde_json::Value;

use super::error::AuthError;
use super::keys::Claims;

/// Who is calling, as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The issuer's configured name.
    pub issuer: String,
    pub tenant: String,
    pub subject: String,
    pub roles: Vec<String>,
    pub tier: Option<String>,
    /// The token's `exp` (unix seconds).
    pub expires_at: u64,
}

/// Builds the identity; fails when a required claim or the tenant is missing, or the tenant is
/// not one the issuer may assert. Roles the issuer may not assert are left out.
pub fn identity(issuer: &Issuer, claims: &Claims, expires_at: u64) -> Result<Identity, AuthError> {
    for path in &issuer.required_claims {
        if lookup(claims, path).is_none_or(|v| v.is_null()) {
            return Err(AuthError::MissingClaim);
        }
    }
    let mapping = &issuer.claims;
    let tenant = lookup(claims, &mapping.tenant)
        .and_then(|v| scalar(&v))
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::MissingClaim)?;
    let subject = lookup(claims, &mapping.subject)
        .and_then(|v| scalar(&v))
        .unwrap_or_default();
    if let Some(patterns) = &issuer.tenants
        && !patterns.iter().any(|p| glob_matches(p, &tenant))
    {
        return Err(AuthError::TenantNotAllowed);
    }
    let mut roles: Vec<String> = match mapping
        .role
        .as_deref()
        .and_then(|path| lookup(claims, path))
    {
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(value) => scalar(&value).into_iter().collect(),
        None => Vec::new(),
    };
    if let Some(patterns) = &issuer.roles {
        roles.retain(|role| patterns.iter().any(|p| glob_matches(p, role)));
    }
    let tier = mapping
        .tier
        .as_deref()
        .and_then(|path| lookup(claims, path))
        .and_then(|v| scalar(&v));
    Ok(Identity {
        issuer: issuer.name.clone(),
        tenant,
        subject,
        roles,
        tier,
        expires_at,
    })
}

/// A claim by path: the registered claims by name, then a top-level claim named exactly
/// `path` (`custom:tenant`, `https://example.com/tenant`), then a dotted path into objects.
pub fn lookup(claims: &Claims, path: &str) -> Option<Value> {
    let registered = match path {
        "sub" => claims.subject.clone(),
        "iss" => claims.issuer.clone(),
        "jti" => claims.jwt_id.clone(),
        _ => None,
    };
    if let Some(value) = registered {
        return Some(Value::String(value));
    }
    if let Some(value) = claims.custom.get(path) {
        return Some(value.clone());
    }
    let mut parts = path.split('.');
    let mut current = claims.custom.get(parts.next()?)?;
    for part in parts {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current.clone())
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::auth_config::{Algorithm, ClaimMapping};
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        serde_json::from_value(value).unwrap()
    }

    fn issuer(mapping: ClaimMapping, required: &[&str]) -> Issuer {
        Issuer {
            name: "corp".into(),
            issuer: "https://idp".into(),
            audiences: vec!["gw".into()],
            algorithms: vec![Algorithm::RS256],
            token_header: None,
            claims: mapping,
            required_claims: required.iter().map(|s| s.to_string()).collect(),
            clock_skew_seconds: 0,
            max_token_bytes: 8192,
            tenants: None,
            roles: None,
        }
    }

    #[test]
    fn nested_namespaced_and_registered_claims() {
        let c = claims(json!({
            "sub": "alice", "iss": "https://idp",
            "custom:tenant": "team-a",
            "https://example.com/tier": "gold",
            "realm_access": {"roles": ["admin", "dev", 7]},
            "org": {"ids": [{"id": 42}]}
        }));
        let mapping = ClaimMapping {
            tenant: "custom:tenant".into(),
            subject: "sub".into(),
            role: Some("realm_access.roles".into()),
            tier: Some("https://example.com/tier".into()),
        };
        let id = identity(&issuer(mapping, &["org.ids.0.id"]), &c, 99).unwrap();
        assert_eq!(
            id,
            Identity {
                issuer: "corp".into(),
                tenant: "team-a".into(),
                subject: "alice".into(),
                roles: vec!["admin".into(), "dev".into(), "7".into()],
                tier: Some("gold".into()),
                expires_at: 99
            }
        );
        assert_eq!(lookup(&c, "org.ids.0.id"), Some(json!(42)));
        assert_eq!(lookup(&c, "org.ids.1.id"), None);
        assert_eq!(lookup(&c, "org.nothing"), None);
    }

    #[test]
    fn an_issuer_asserts_only_its_tenants_and_roles() {
        let mapping = ClaimMapping {
            role: Some("roles".into()),
            ..ClaimMapping::default()
        };
        let mut partner = issuer(mapping, &[]);
        partner.tenants = Some(vec!["partner-*".into()]);
        partner.roles = Some(vec!["viewer".into(), "dev-*".into()]);
        let c = claims(json!({"sub": "bob", "tenant": "platform", "roles": ["admin"]}));
        assert_eq!(identity(&partner, &c, 1), Err(AuthError::TenantNotAllowed));
        let c = claims(
            json!({"sub": "bob", "tenant": "partner-x", "roles": ["admin", "viewer", "dev-1"]}),
        );
        let id = identity(&partner, &c, 1).unwrap();
        assert_eq!(
            (id.tenant.as_str(), id.roles),
            ("partner-x", vec!["viewer".to_string(), "dev-1".to_string()])
        );
        partner.roles = Some(vec![]);
        assert!(identity(&partner, &c, 1).unwrap().roles.is_empty());
    }

    #[test]
    fn missing_tenant_or_required_claim_is_refused() {
        let c = claims(json!({"sub": "alice", "tenant": {"not": "a string"}}));
        assert_eq!(
            identity(&issuer(ClaimMapping::default(), &[]), &c, 1),
            Err(AuthError::MissingClaim)
        );
        let c = claims(json!({"sub": "alice", "tenant": "t"}));
        assert_eq!(
            identity(&issuer(ClaimMapping::default(), &["email"]), &c, 1),
            Err(AuthError::MissingClaim)
        );
        let c = claims(json!({"sub": "alice", "tenant": ""}));
        assert_eq!(
            identity(&issuer(ClaimMapping::default(), &[]), &c, 1),
            Err(AuthError::MissingClaim)
        );
        let c = claims(json!({"tenant": 12}));
        let id = identity(&issuer(ClaimMapping::default(), &[]), &c, 1).unwrap();
        assert_eq!((id.tenant.as_str(), id.subject.as_str()), ("12", ""));
    }
}
