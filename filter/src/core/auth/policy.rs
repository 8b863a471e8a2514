//! Which calls a caller may make (see `AccessPolicy`).

use gateway_common::auth_config::{AccessPolicy, Grant, glob_matches};
use gateway_common::model;

use super::claims::Identity;
use crate::core::operations::Models;

/// Why a call is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No grant covers the service and operation.
    Operation,
    /// A model the call names is covered by no grant for this service and operation.
    Model,
    /// The call may name models the gateway cannot see (an operation it does not know), and
    /// no grant for it leaves models unrestricted.
    ModelUndetermined,
}

/// Whether the grants of the caller's tenant (or the default grants, for tenants without an
/// entry) and of its roles cover this call: its service and operation, and every model it
/// names, each by some grant for that service and operation. A call whose models cannot be
/// determined needs a grant whose `models` contains `*`.
pub fn allows(
    policy: &AccessPolicy,
    identity: &Identity,
    service: &str,
    operation: &str,
    models: &Models,
) -> Result<(), Denial> {
    let tenant_grants = policy
        .tenants
        .get(&identity.tenant)
        .unwrap_or(&policy.default);
    let role_grants = identity
        .roles
        .iter()
        .filter_map(|role| policy.roles.get(role))
        .flatten();
    let grants: Vec<&Grant> = tenant_grants
        .iter()
        .chain(role_grants)
        .filter(|grant| {
            grant.services.iter().any(|p| glob_matches(p, service))
                && grant.operations.iter().any(|p| glob_matches(p, operation))
        })
        .collect();
    if grants.is_empty() {
        return Err(Denial::Operation);
    }
    if !models.determined && !grants.iter().any(|g| g.models.iter().any(|p| p == "*")) {
        return Err(Denial::ModelUndetermined);
    }
    let covered = |name: &String| {
        let aliases = model::aliases(name);
        grants.iter().any(|grant| {
            grant
                .models
                .iter()
                .any(|p| aliases.iter().any(|alias| glob_matches(p, alias)))
        })
    };
    if models.named.iter().all(covered) {
        Ok(())
    } else {
        Err(Denial::Model)
    }
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
            let models = Models {
                named: model.iter().map(|m| m.to_string()).collect(),
                determined: operation != "Unknown",
            };
            assert_eq!(
                allows(&p, &identity, service, operation, &models).is_ok(),
                expected,
                "{identity:?} {service} {operation} {model:?}"
            );
        }
    }

    #[test]
    fn every_model_of_a_call_needs_a_grant() {
        let mut p = policy();
        p.tenants.insert(
            "team-rag".into(),
            vec![
                grant(
                    &["bedrock-agent-runtime"],
                    &["RetrieveAndGenerate"],
                    &["anthropic.*"],
                ),
                grant(&["bedrock-agent-runtime"], &["*"], &["cohere.rerank-*"]),
            ],
        );
        let named = |models: &[&str]| Models {
            named: models.iter().map(|m| m.to_string()).collect(),
            determined: true,
        };
        let rag = |models: &Models| {
            allows(
                &p,
                &who("team-rag", &[]),
                "bedrock-agent-runtime",
                "RetrieveAndGenerate",
                models,
            )
        };
        assert_eq!(
            rag(&named(&["anthropic.claude-v2", "cohere.rerank-v3-5:0"])),
            Ok(())
        );
        assert_eq!(
            rag(&named(&["anthropic.claude-v2", "meta.llama3"])),
            Err(Denial::Model)
        );
        assert_eq!(rag(&named(&["meta.llama3"])), Err(Denial::Model));
        assert_eq!(rag(&named(&[])), Ok(()));
    }

    #[test]
    fn undetermined_models_need_an_unrestricted_grant() {
        let p = policy();
        let unknown = Models {
            named: vec!["anthropic.claude-3-haiku".into()],
            determined: false,
        };
        let rt = "bedrock-runtime";
        assert_eq!(
            allows(&p, &who("team-a", &[]), rt, "Unknown", &unknown),
            Err(Denial::ModelUndetermined)
        );
        assert_eq!(
            allows(&p, &who("team-z", &["admin"]), rt, "Unknown", &unknown),
            Ok(())
        );
        let nothing = Models {
            named: vec![],
            determined: false,
        };
        assert_eq!(
            allows(&p, &who("team-a", &[]), rt, "Unknown", &nothing),
            Err(Denial::ModelUndetermined)
        );
    }

    #[test]
    fn no_grants_no_access() {
        let p = AccessPolicy::default();
        let models = Models {
            named: vec!["m".into()],
            determined: true,
        };
        assert_eq!(
            allows(&p, &who("t", &[]), "bedrock-runtime", "Converse", &models),
            Err(Denial::Operation)
        );
    }
}
