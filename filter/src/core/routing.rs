//! Which Bedrock service a request is for: the `aws-endpoint-prefix` header when present (the
//! reference design's clients), else the path (a stock SDK client that only set its endpoint
//! URL). The host the client called is deliberately not used: a gateway reachable as
//! `bedrock.example.com` must not send everything to the control plane. Path rules are data:
//! the configured ones first, then the built-in table derived from the services' REST paths,
//! so a new operation under a known prefix needs no code.

use gateway_common::filter_config::{FilterConfig, PathRule};

/// Built-in path rules: (method, pattern, service). Order matters: the first match wins, so
/// data-plane paths come before the control-plane prefixes they share.
const BUILT_IN_RULES: &[(Option<&str>, &str, &str)] = &[
    // bedrock-runtime
    (None, "/model/**", "bedrock-runtime"),
    (None, "/guardrail/**", "bedrock-runtime"),
    (None, "/guardrail-checks/**", "bedrock-runtime"),
    (None, "/async-invoke/**", "bedrock-runtime"),
    // bedrock-agent-runtime
    (None, "/knowledgebases/*/retrieve", "bedrock-agent-runtime"),
    (
        None,
        "/knowledgebases/*/datasources/*/check-ingested-document-acl",
        "bedrock-agent-runtime",
    ),
    (
        None,
        "/knowledgebases/*/datasources/*/get-ingested-document-acl",
        "bedrock-agent-runtime",
    ),
    (
        Some("POST"),
        "/knowledgebases/*/datasources/*/documents/*/content",
        "bedrock-agent-runtime",
    ),
    (None, "/retrieveAndGenerate", "bedrock-agent-runtime"),
    (None, "/retrieveAndGenerateStream", "bedrock-agent-runtime"),
    (None, "/rerank", "bedrock-agent-runtime"),
    (None, "/generateQuery", "bedrock-agent-runtime"),
    (None, "/optimize-prompt", "bedrock-agent-runtime"),
    (None, "/agenticRetrieveStream", "bedrock-agent-runtime"),
    (None, "/agents/*/agentAliases/**", "bedrock-agent-runtime"),
    (Some("POST"), "/agents/*", "bedrock-agent-runtime"),
    (None, "/sessions/**", "bedrock-agent-runtime"),
    (Some("POST"), "/flows/*/aliases/*", "bedrock-agent-runtime"),
    (
        None,
        "/flows/*/aliases/*/executions/**",
        "bedrock-agent-runtime",
    ),
    (None, "/flows/*/executions", "bedrock-agent-runtime"),
    // bedrock-agent (build-time APIs for agents, knowledge bases, flows, prompts)
    (None, "/agents/**", "bedrock-agent"),
    (None, "/knowledgebases/**", "bedrock-agent"),
    (None, "/flows/**", "bedrock-agent"),
    (None, "/prompts/**", "bedrock-agent"),
    (None, "/retrievalinstructions/**", "bedrock-agent"),
    (None, "/resourcepolicy/**", "bedrock-agent"),
    (None, "/tags/**", "bedrock-agent"),
    // bedrock (control plane)
    (None, "/foundation-models/**", "bedrock"),
    (None, "/foundation-model-availability/**", "bedrock"),
    (None, "/custom-models/**", "bedrock"),
    (None, "/guardrails/**", "bedrock"),
    (None, "/inference-profiles/**", "bedrock"),
    (None, "/imported-models/**", "bedrock"),
    (None, "/prompt-routers/**", "bedrock"),
    (None, "/provisioned-model-throughput/**", "bedrock"),
    (None, "/provisioned-model-throughputs/**", "bedrock"),
    (None, "/model-customization/**", "bedrock"),
    (None, "/model-customization-jobs/**", "bedrock"),
    (None, "/model-copy-jobs/**", "bedrock"),
    (None, "/model-import-jobs/**", "bedrock"),
    (None, "/model-invocation-job/**", "bedrock"),
    (None, "/model-invocation-jobs/**", "bedrock"),
    (None, "/evaluation-job/**", "bedrock"),
    (None, "/evaluation-jobs/**", "bedrock"),
    (None, "/logging/**", "bedrock"),
    (None, "/marketplace-model/**", "bedrock"),
    (None, "/automated-reasoning-policies/**", "bedrock"),
    (None, "/advanced-prompt-optimization-job/**", "bedrock"),
    (None, "/advanced-prompt-optimization-jobs/**", "bedrock"),
    (None, "/data-retention/**", "bedrock"),
    (None, "/resource-policy/**", "bedrock"),
    (None, "/use-case-for-model-access/**", "bedrock"),
    (None, "/enforcedGuardrailsConfiguration/**", "bedrock"),
    (None, "/create-foundation-model-agreement", "bedrock"),
    (None, "/delete-foundation-model-agreement", "bedrock"),
    (
        None,
        "/list-foundation-model-agreement-offers/**",
        "bedrock",
    ),
    (None, "/listTagsForResource", "bedrock"),
    (None, "/tagResource", "bedrock"),
    (None, "/untagResource", "bedrock"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**` (last only): any number of segments, including none.
    Rest,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    method: Option<String>,
    segments: Vec<Segment>,
    /// Index into the configured services; rules for services not configured are dropped
    /// but remembered, so the caller can say that the service is not enabled.
    service: Result<usize, String>,
}

/// Why no service could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The client named a service (header) this gateway does not serve.
    UnknownService(String),
    /// The path belongs to a known Bedrock service that is not enabled on this gateway.
    ServiceNotEnabled(String),
    /// Nothing in the request says which service it is for.
    Unresolvable,
}

/// The routing table, compiled once per configuration.
#[derive(Debug, Clone)]
pub struct ServiceRouter {
    rules: Vec<CompiledRule>,
}

impl ServiceRouter {
    pub fn new(config: &FilterConfig) -> Self {
        let configured = config
            .path_rules
            .iter()
            .map(|r: &PathRule| (r.method.as_deref(), r.path.as_str(), r.service.as_str()));
        let rules = configured
            .chain(BUILT_IN_RULES.iter().copied())
            .map(|(method, pattern, service)| CompiledRule {
                method: method.map(str::to_string),
                segments: compile(pattern),
                service: config
                    .services
                    .iter()
                    .position(|s| s.name == service)
                    .ok_or_else(|| service.to_string()),
            })
            .collect();
        Self { rules }
    }

    /// Chooses the upstream service for a request from its method and canonical path
    /// segments ([`super::path`]): its index in `config.services`.
    pub fn select<S: AsRef<str>>(
        &self,
        config: &FilterConfig,
        method: &str,
        segments: &[S],
        endpoint_prefix: Option<&str>,
    ) -> Result<usize, RouteError> {
        if let Some(prefix) = endpoint_prefix {
            let prefix = prefix.trim();
            return config
                .services
                .iter()
                .position(|s| s.name.eq_ignore_ascii_case(prefix))
                .ok_or_else(|| RouteError::UnknownService(prefix.to_string()));
        }
        let rule = self.rules.iter().find(|rule| {
            rule.method.as_deref().is_none_or(|m| m == method) && matches(&rule.segments, segments)
        });
        match rule.map(|r| &r.service) {
            Some(Ok(index)) => Ok(*index),
            Some(Err(name)) => Err(RouteError::ServiceNotEnabled(name.clone())),
            None => Err(RouteError::Unresolvable),
        }
    }
}

fn compile(pattern: &str) -> Vec<Segment> {
    pattern
        .trim_start_matches('/')
        .split('/')
        .map(|s| match s {
            "*" => Segment::One,
            "**" => Segment::Rest,
            literal => Segment::Literal(literal.to_string()),
        })
        .collect()
}

fn matches<S: AsRef<str>>(pattern: &[Segment], path: &[S]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((Segment::Rest, _)) => true,
        Some((segment, rest)) => match path.split_first() {
            None => false,
            Some((first, path_rest)) => {
                let first = first.as_ref();
                let ok = match segment {
                    Segment::Literal(l) => l == first,
                    Segment::One => !first.is_empty(),
                    Segment::Rest => true,
                };
                ok && matches(rest, path_rest)
            }
        },
    }
}

#[cfg(test)]
mod tests;
