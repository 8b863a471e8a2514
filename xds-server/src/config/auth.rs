//! Semantic checks of the `auth` section: the filter's [`Authentication`], each issuer's key
//! source for the key manager, and the audit log path. The first problem found is reported,
//! with the file, the YAML key and what was expected there.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use gateway_common::{
    auth_config::{
        Algorithm, ClaimMapping, DEFAULT_MAX_VERIFICATIONS_PER_SECOND, Issuer, JwtAuthentication,
        glob_matches,
    },
    filter_config::Authentication,
    names,
};

use super::{
    check::{Checker, MAX_DURATION_SECONDS, indexed, quoted, resolve},
    file::{
        AUDIT_LOG_OFF, AuthMode, AuthSection, DEFAULT_AUDIT_LOG, DEFAULT_CACHE_MAX_ENTRIES,
        DEFAULT_KEYS_REFRESH_SECONDS, DEFAULT_UNKNOWN_KID_REFRESH_SECONDS, IssuerSection,
    },
    key_source::{SourceKind, key_source, source_kind},
    model::{ConfigError, Env},
};
use crate::identity::IssuerKeySource;

const ALGORITHM_NAMES: &str =
    "one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256";
const CLAIM_PATH: &str = "a claim name or a dotted path such as realm_access.roles";
/// Larger tolerances would accept tokens that expired long ago.
const MAX_CLOCK_SKEW_SECONDS: u64 = 3600;

/// What the `auth` section yields.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CheckedAuth {
    pub authentication: Authentication,
    pub identity: Vec<IssuerKeySource>,
    /// `None`: `off`.
    pub audit_log: Option<PathBuf>,
}

pub(super) fn check_auth(
    check: &Checker<'_>,
    auth: Option<&AuthSection>,
    base_dir: &Path,
    env: Env<'_>,
) -> Result<CheckedAuth, ConfigError> {
    let audit_log = match auth.and_then(|a| a.audit_log.as_ref()) {
        None => Some(PathBuf::from(DEFAULT_AUDIT_LOG)),
        Some(path) if path.as_os_str().is_empty() => {
            return Err(check.invalid(
                "auth.audit_log",
                "a file path such as /dev/stdout or /var/log/gateway/audit.log, or off",
                Some(quoted("")),
            ));
        }
        Some(path) if path.as_os_str() == AUDIT_LOG_OFF => None,
        Some(path) => Some(resolve(base_dir, path)),
    };
    let mode = auth.map(|a| a.mode).unwrap_or_default();
    if mode == AuthMode::None {
        if let Some(auth) = auth {
            let jwt_only = [
                ("issuers", auth.issuers.is_some()),
                ("access", auth.access.is_some()),
                ("cache_max_entries", auth.cache_max_entries.is_some()),
                (
                    "unknown_kid_refresh_seconds",
                    auth.unknown_kid_refresh_seconds.is_some(),
                ),
                ("keys_refresh_seconds", auth.keys_refresh_seconds.is_some()),
                (
                    "max_verifications_per_second",
                    auth.max_verifications_per_second.is_some(),
                ),
                ("signature_checks", auth.signature_checks.is_some()),
            ];
            if let Some((key, _)) = jwt_only.iter().find(|(_, present)| *present) {
                return Err(check.invalid(
                    &format!("auth.{key}"),
                    "no value with `auth.mode: none` (it only applies to `mode: jwt`)",
                    None,
                ));
            }
        }
        return Ok(CheckedAuth {
            authentication: Authentication::None,
            identity: Vec::new(),
            audit_log,
        });
    }

    let issuers = auth.and_then(|a| a.issuers.as_ref());
    let Some(issuers) = issuers.filter(|i| !i.is_empty()) else {
        return Err(check.invalid(
            "auth.issuers",
            "at least one token issuer: `auth.mode` is `jwt` unless set to `none`",
            issuers.map(|_| "[]".to_string()),
        ));
    };
    let mut checked = Vec::with_capacity(issuers.len());
    let mut identity = Vec::with_capacity(issuers.len());
    for (i, raw) in issuers.iter().enumerate() {
        let (issuer, source) = check_issuer(check, i, raw, base_dir, env)?;
        identity.push(source);
        checked.push(issuer);
    }
    let jwt = JwtAuthentication {
        issuers: checked,
        access: auth.and_then(|a| a.access.clone()).unwrap_or_default(),
        cache_max_entries: auth
            .and_then(|a| a.cache_max_entries)
            .unwrap_or(DEFAULT_CACHE_MAX_ENTRIES),
        unknown_kid_refresh_seconds: auth
            .and_then(|a| a.unknown_kid_refresh_seconds)
            .unwrap_or(DEFAULT_UNKNOWN_KID_REFRESH_SECONDS),
        keys_refresh_seconds: auth
            .and_then(|a| a.keys_refresh_seconds)
            .unwrap_or(DEFAULT_KEYS_REFRESH_SECONDS),
        max_verifications_per_second: auth
            .and_then(|a| a.max_verifications_per_second)
            .unwrap_or(DEFAULT_MAX_VERIFICATIONS_PER_SECOND),
        signature_checks: auth.and_then(|a| a.signature_checks).unwrap_or_default(),
    };
    Ok(CheckedAuth {
        authentication: Authentication::Jwt(jwt),
        identity,
        audit_log,
    })
}

fn check_issuer(
    check: &Checker<'_>,
    i: usize,
    raw: &IssuerSection,
    base_dir: &Path,
    env: Env<'_>,
) -> Result<(Issuer, IssuerKeySource), ConfigError> {
    let key = |field: &str| format!("auth.issuers[{i}].{field}");
    let listed = match &raw.algorithms {
        None => None,
        Some(given) => Some(
            given
                .iter()
                .enumerate()
                .map(|(j, name)| {
                    Algorithm::from_name(name).ok_or_else(|| {
                        check.invalid(
                            &key(&format!("algorithms[{j}]")),
                            ALGORITHM_NAMES,
                            Some(quoted(name)),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let kind = source_kind(check, i, raw)?;
    let found_algorithms = || raw.algorithms.as_ref().map(|a| format!("{a:?}"));
    let algorithms = match (kind, listed) {
        (SourceKind::DevSigningKey(_), None) => vec![Algorithm::EdDSA],
        (SourceKind::DevSigningKey(_), Some(listed))
            if listed.iter().any(|a| *a != Algorithm::EdDSA) =>
        {
            return Err(check.invalid(
                &key("algorithms"),
                "only EdDSA with dev_signing_key (an Ed25519 key)",
                found_algorithms(),
            ));
        }
        (SourceKind::Hs256Secret(_), listed)
            if !listed
                .as_ref()
                .is_some_and(|l| l.contains(&Algorithm::HS256)) =>
        {
            return Err(check.invalid(
                &key("algorithms"),
                "a list that includes HS256, which hs256_secret_env's tokens are signed with",
                found_algorithms(),
            ));
        }
        (SourceKind::Hs256Secret(_) | SourceKind::DevSigningKey(_), Some(listed)) => listed,
        (_, None) => Algorithm::ASYMMETRIC.to_vec(),
        (_, Some(listed)) if listed.contains(&Algorithm::HS256) => {
            return Err(check.invalid(
                &key("algorithms"),
                "HS256 only together with hs256_secret_env (shared secrets are for development)",
                found_algorithms(),
            ));
        }
        (_, Some(listed)) => listed,
    };
    let source = key_source(check, i, raw, kind, base_dir, env)?;

    if let Some(header) = &raw.token_header
        && !is_usable_header_name(&header.name)
    {
        return Err(check.invalid(
            &key("token_header.name"),
            "a lower-case header name that the gateway does not set itself",
            Some(quoted(&header.name)),
        ));
    }
    if raw.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
        return Err(check.invalid(
            &key("clock_skew_seconds"),
            "a number of seconds up to 3600",
            Some(raw.clock_skew_seconds.to_string()),
        ));
    }
    let claims = &raw.claims;
    for (field, path) in [
        ("tenant", Some(&claims.tenant)),
        ("subject", Some(&claims.subject)),
        ("role", claims.role.as_ref()),
        ("tier", claims.tier.as_ref()),
    ] {
        if let Some(path) = path
            && !is_claim_path(path)
        {
            return Err(check.invalid(
                &key(&format!("claims.{field}")),
                CLAIM_PATH,
                Some(quoted(path)),
            ));
        }
    }
    for (j, path) in raw.required_claims.iter().enumerate() {
        if !is_claim_path(path) {
            return Err(check.invalid(
                &key(&format!("required_claims[{j}]")),
                CLAIM_PATH,
                Some(quoted(path)),
            ));
        }
    }
    for (field, seconds) in [
        ("jwks_refresh_seconds", raw.jwks_refresh_seconds),
        ("jwks_min_refresh_seconds", raw.jwks_min_refresh_seconds),
    ] {
        if seconds == 0 || seconds > MAX_DURATION_SECONDS {
            return Err(check.invalid(
                &key(field),
                "a number of seconds above 0",
                Some(seconds.to_string()),
            ));
        }
    }

    let issuer = Issuer {
        name: raw.name.clone(),
        issuer: raw.issuer.clone(),
        audiences: raw.audiences.clone(),
        algorithms,
        token_header: raw.token_header.clone(),
        claims: ClaimMapping {
            tenant: claims.tenant.clone(),
            subject: claims.subject.clone(),
            role: claims.role.clone(),
            tier: claims.tier.clone(),
        },
        required_claims: raw.required_claims.clone(),
        clock_skew_seconds: raw.clock_skew_seconds,
        max_token_bytes: raw.max_token_bytes,
        tenants: raw.tenants.clone(),
        roles: raw.roles.clone(),
    };
    let source = IssuerKeySource {
        name: raw.name.clone(),
        issuer: raw.issuer.clone(),
        source,
        refresh: Duration::from_secs(raw.jwks_refresh_seconds),
        min_refresh: Duration::from_secs(raw.jwks_min_refresh_seconds),
    };
    Ok((issuer, source))
}

/// An HTTP header name (RFC 9110 token) in lower case that none of the gateway's own headers
/// has: the filter removes those from clients' requests before it looks for tokens.
fn is_usable_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
        && name != names::CLUSTER_HEADER
        && !names::IDENTITY_HEADERS.contains(&name)
}

/// A top-level claim name as it is, or a dotted path without empty segments.
fn is_claim_path(path: &str) -> bool {
    !path.is_empty()
        && path.trim() == path
        && !path.chars().any(char::is_control)
        && (path.contains(':') || path.split('.').all(|segment| !segment.is_empty()))
}

/// The YAML key and the value found for an error the filter's own check of the
/// `authentication` section reported (`key` is relative to `authentication`).
pub(super) fn map_auth_error(
    auth: Option<&AuthSection>,
    services: &[String],
    key: &str,
) -> (String, Option<String>) {
    let yaml_key = format!("auth.{key}");
    let issuers = auth.and_then(|a| a.issuers.as_deref()).unwrap_or_default();
    if let Some((index, field)) = indexed(key, "issuers") {
        let Some(raw) = issuers.get(index) else {
            return (yaml_key, None);
        };
        let found = match field {
            "name" => Some(quoted(&raw.name)),
            "issuer" => Some(quoted(&raw.issuer)),
            "audiences" => Some(format!("{:?}", raw.audiences)),
            "algorithms" => raw.algorithms.as_ref().map(|a| format!("{a:?}")),
            "token_header.name" => raw.token_header.as_ref().map(|h| quoted(&h.name)),
            "max_token_bytes" => Some(raw.max_token_bytes.to_string()),
            "tenants" => raw.tenants.as_ref().map(|t| format!("{t:?}")),
            "roles" => raw.roles.as_ref().map(|r| format!("{r:?}")),
            _ => None,
        };
        return (yaml_key, found);
    }
    let found = match key {
        "cache_max_entries" => auth
            .and_then(|a| a.cache_max_entries)
            .map(|n| n.to_string()),
        "keys_refresh_seconds" => auth
            .and_then(|a| a.keys_refresh_seconds)
            .map(|n| n.to_string()),
        "max_verifications_per_second" => auth
            .and_then(|a| a.max_verifications_per_second)
            .map(|n| n.to_string()),
        _ => key
            .strip_suffix(".services")
            .and_then(|grants| unmatched_service_pattern(auth, grants, services)),
    };
    (yaml_key, found)
}

/// The first service pattern of the grants at `grants` (`access.tenants.team-a`) that matches
/// no configured service.
fn unmatched_service_pattern(
    auth: Option<&AuthSection>,
    grants: &str,
    services: &[String],
) -> Option<String> {
    let access = auth?.access.as_ref()?;
    let list = if grants == "access.default" {
        &access.default
    } else if let Some(tenant) = grants.strip_prefix("access.tenants.") {
        access.tenants.get(tenant)?
    } else {
        access.roles.get(grants.strip_prefix("access.roles.")?)?
    };
    list.iter()
        .flat_map(|grant| &grant.services)
        .find(|pattern| !services.iter().any(|s| glob_matches(pattern, s)))
        .map(|pattern| quoted(pattern))
}

#[cfg(test)]
mod tests;
