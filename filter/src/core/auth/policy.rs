//! Which calls a caller may make (see `AccessPolicy`).

use gateway_common::auth_config::{AccessPolicy, Grant, glob_matches};

use super::claims::Identity;
use crate::core::operations::model_aliases;

/// Whether a grant of the caller's tenant (or the default grants, for tenants without an
/// entry) or of one of its roles covers this call.
pub fn allows(
    policy: &AccessPolicy,
    identity: &Identity,
    service: &str,
    operation: &str,
    model: Option<&str>,
) -> bool {
    let tenant_grants = policy
        .tenants
        .get(&identity.tenant)
        .unwrap_or(&policy.default);
    let role_grants = identity
        .roles
        .iter()
        .filter_map(|role| policy.roles.get(role))
        .flatten();
    let aliases = model.map(model_aliases);
    tenant_grants
        .iter()
        .chain(role_grants)
        .any(|grant| covers(grant, service, operation, aliases.as_deref()))
}

fn covers(grant: &Grant, service: &str, operation: &str, model: Option<&[&str]>) -> bool {
    grant.services.iter().any(|p| glob_matches(p, service))
        && grant.operations.iter().any(|p| glob_matches(p, operation))
        && model.is_none_or(|names| {
            grant
                .models
                .iter()
                .any(|p| names.iter().any(|name| glob_matches(p, name)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(services: &[&str], operations: &[&str], models: &[&str]) -> Grant {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Grant {
            services: v(services),
            operations: v(operations),
            models: v(models),
        }
    }

    fn who(tenant: &str, roles: &[&str]) -> Identity {
        Identity {
            issuer: "i".into(),
            tenant: tenant.into(),
            subject: "s".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            tier: None,
            expires_at: 0,
        }
    }

    fn policy() -> AccessPolicy {
        AccessPolicy {
            default: vec![grant(
                &["bedrock-runtime"],
                &["Converse*"],
                &["amazon.titan-*"],
            )],
            tenants: [
                (
                    "team-a".to_string(),
                    vec![grant(
                        &["bedrock-runtime"],
                        &["*"],
                        &["anthropic.claude-3-*"],
                    )],
                ),
                (
                    "team-kb".to_string(),
                    vec![grant(&["bedrock-agent-runtime"], &["Retrieve"], &["*"])],
                ),
            ]
            .into(),
            roles: [("admin".to_string(), vec![grant(&["*"], &["*"], &["*"])])].into(),
        }
    }

    #[test]
    fn decisions() {
        let p = policy();
        let rt = "bedrock-runtime";
        let cases = [
            (
                who("team-a", &[]),
                rt,
                "Converse",
                Some("anthropic.claude-3-haiku"),
                true,
            ),
            (
                who("team-a", &[]),
                rt,
                "InvokeModel",
                Some("us.anthropic.claude-3-haiku"),
                true,
            ),
            (
                who("team-a", &[]),
                rt,
                "Converse",
                Some("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku"),
                true,
            ),
            (
                who("team-a", &[]),
                rt,
                "Converse",
                Some("meta.llama3"),
                false,
            ),
            (
                who("team-a", &[]),
                rt,
                "Converse",
                Some("amazon.titan-text"),
                false,
            ),
            (
                who("team-a", &[]),
                "bedrock",
                "ListFoundationModels",
                None,
                false,
            ),
            (
                who("team-z", &[]),
                rt,
                "ConverseStream",
                Some("amazon.titan-text"),
                true,
            ),
            (
                who("team-z", &[]),
                rt,
                "InvokeModel",
                Some("amazon.titan-text"),
                false,
            ),
            (
                who("team-z", &[]),
                rt,
                "Unknown",
                Some("amazon.titan-text"),
                false,
            ),
            (
                who("team-kb", &[]),
                "bedrock-agent-runtime",
                "Retrieve",
                None,
                true,
            ),
            (
                who("team-kb", &[]),
                "bedrock-agent-runtime",
                "RetrieveAndGenerate",
                None,
                false,
            ),
            (
                who("team-z", &["admin"]),
                "bedrock",
                "DeleteGuardrail",
                None,
                true,
            ),
            (
                who("team-z", &["viewer"]),
                "bedrock",
                "DeleteGuardrail",
                None,
                false,
            ),
        ];
        for (identity, service, operation, model, expected) in cases {
            assert_eq!(
                allows(&p, &identity, service, operation, model),
                expected,
                "{identity:?} {service} {operation} {model:?}"
            );
        }
    }

    #[test]
    fn no_grants_no_access() {
        let p = AccessPolicy::default();
        assert!(!allows(
            &p,
            &who("t", &[]),
            "bedrock-runtime",
            "Converse",
            Some("m")
        ));
    }
}
