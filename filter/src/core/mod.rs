//! The filter's logic as plain Rust: no host calls, time passed in. The host shim (`host/`)
//! gathers the request into plain values, asks this module what to do, and applies the answer.
//!
//! A request goes through [`Gateway::read`] (the canonical path, before anything that depends
//! on configuration), authentication ([`auth::Authenticator`], in `jwt` mode),
//! [`Gateway::route`] (which service and operation), [`Gateway::authorize`] (at the headers, or
//! once the body is read when the operation names its models there, [`body`]),
//! [`Gateway::forward`] (the upstream headers) and, once the body is hashed, [`Gateway::sign`].

pub mod audit;
pub mod auth;
pub mod body;
pub mod credentials;
pub mod errors;
pub mod flow;
pub mod headers;
pub mod json;
pub mod operations;
pub mod path;
pub mod prefix;
pub mod quota;
pub mod routing;
pub mod schedule;
pub mod signing;
#[cfg(test)]
pub(crate) mod testing;
pub mod upstream;

use std::time::SystemTime;

use gateway_common::filter_config::{Authentication, FilterConfig};

use auth::Identity;
use credentials::SigningIdentity;
use errors::ErrorReply;
use headers::{CONTENT_LENGTH, ENDPOINT_PREFIX, HeaderEdits, HeaderList, METHOD, PATH, find_str};
use operations::{Models, Operation};
use routing::ServiceRouter;
use signing::{SigningInput, signature_headers};

/// A validated configuration with its routing table compiled.
#[derive(Debug)]
pub struct Gateway {
    pub config: FilterConfig,
    router: ServiceRouter,
    /// Headers removed from every request besides the fixed list: issuers' token headers
    /// and the identity headers a client could try to spoof.
    stripped: Vec<String>,
}

/// Where a request goes and what it calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service: usize,
    pub operation: Operation,
    pub method: String,
    pub path: String,
}

/// A request as read before authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub method: String,
    /// `:path` as received, query included: what is forwarded and signed.
    pub path: String,
    /// Its canonical segments.
    pub segments: Vec<String>,
    pub content_length: Option<u64>,
}

/// A request accepted for forwarding, waiting for its body to be hashed and signed.
#[derive(Debug)]
pub struct ForwardPlan {
    pub route: Route,
    /// The upstream header map, without the signature.
    pub headers: HeaderList,
    /// The client's headers it leaves out, and where the ones the gateway writes begin.
    removed: Vec<String>,
    written_from: usize,
}

impl Gateway {
    pub fn new(config: FilterConfig) -> Self {
        let router = ServiceRouter::new(&config);
        let mut stripped: Vec<String> = gateway_common::names::IDENTITY_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect();
        if let Authentication::Jwt(jwt) = &config.authentication {
            stripped.extend(
                jwt.issuers
                    .iter()
                    .filter_map(|i| i.token_header.as_ref())
                    .map(|h| h.name.clone()),
            );
        }
        Self {
            config,
            router,
            stripped,
        }
    }

    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        FilterConfig::from_json(json).map(Self::new)
    }

    pub fn service_name(&self, route: &Route) -> &str {
        &self.config.services[route.service].name
    }

    /// Reads what can be judged before the caller is known, the same for every
    /// configuration: the method, the canonical path ([`path`]) and the `content-length`
    /// syntax. An unauthenticated caller learns nothing of the configuration from these.
    pub fn read(&self, headers: &[(String, Vec<u8>)]) -> Result<Incoming, ErrorReply> {
        let (Some(method), Some(raw_path)) = (find_str(headers, METHOD), find_str(headers, PATH))
        else {
            return Err(ErrorReply::validation(
                "malformed_request",
                "The request has no method or path.",
            ));
        };
        let canonical = path::canonical(raw_path).map_err(ErrorReply::ambiguous_path)?;
        let content_length = match find_str(headers, CONTENT_LENGTH) {
            None => None,
            Some(length) => Some(length.trim().parse::<u64>().map_err(|_| {
                ErrorReply::validation(
                    "malformed_request",
                    "The content-length header is not a number.",
                )
            })?),
        };
        Ok(Incoming {
            method: method.to_string(),
            path: raw_path.to_string(),
            segments: canonical.segments,
            content_length,
        })
    }

    /// Which service and operation the request is for, and whether its size is acceptable
    /// (once the caller is authenticated: these answers depend on the configuration).
    pub fn route(
        &self,
        incoming: Incoming,
        headers: &[(String, Vec<u8>)],
    ) -> Result<Route, ErrorReply> {
        let limit = self.config.max_request_body_bytes;
        if incoming.content_length.is_some_and(|n| n > limit) {
            return Err(ErrorReply::body_too_large(limit));
        }
        let prefix = find_str(headers, ENDPOINT_PREFIX);
        let service =
            self.router
                .select(&self.config, &incoming.method, &incoming.segments, prefix)?;
        let operation = operations::identify(
            &self.config.services[service].name,
            &incoming.method,
            &incoming.segments,
        );
        if let Some(model) = &operation.path_model
            && !gateway_common::model::is_valid(model)
        {
            return Err(ErrorReply::invalid_model());
        }
        Ok(Route {
            service,
            operation,
            method: incoming.method,
            path: incoming.path,
        })
    }

    /// Whether the caller's tenant or roles may make this call, naming these models (`jwt`
    /// mode).
    pub fn authorize(
        &self,
        identity: &Identity,
        route: &Route,
        models: &Models,
    ) -> Result<(), ErrorReply> {
        let Authentication::Jwt(jwt) = &self.config.authentication else {
            return Ok(());
        };
        auth::policy::allows(
            &jwt.access,
            identity,
            self.service_name(route),
            route.operation.name,
            models,
        )
        .map_err(ErrorReply::access_denied)
    }

    /// The upstream header map: the client's headers without its credentials, signature,
    /// hop-by-hop and spoofable identity headers, with the Bedrock host, the cluster header
    /// and, for later filters in this Envoy, the caller's identity.
    pub fn forward(
        &self,
        incoming: HeaderList,
        route: Route,
        identity: Option<&Identity>,
    ) -> ForwardPlan {
        let service = &self.config.services[route.service];
        let upstream = headers::upstream_headers(incoming, service, &self.stripped);
        let mut headers = upstream.headers;
        if let Some(identity) = identity {
            let roles = identity.roles.join(",");
            let values = [
                identity.tenant.as_str(),
                identity.subject.as_str(),
                roles.as_str(),
                identity.tier.as_deref().unwrap_or_default(),
                identity.issuer.as_str(),
            ];
            for (name, value) in gateway_common::names::IDENTITY_HEADERS.iter().zip(values) {
                if !value.is_empty() && value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                    headers.push((name.to_string(), value.as_bytes().to_vec()));
                }
            }
        }
        ForwardPlan {
            route,
            headers,
            removed: upstream.removed,
            written_from: upstream.written_from,
        }
    }

    /// What makes the client's header map the signed upstream one: the plan's headers plus
    /// the signature.
    pub fn sign(
        &self,
        plan: ForwardPlan,
        payload_sha256_hex: &str,
        credentials: &SigningIdentity,
        now: SystemTime,
    ) -> Result<HeaderEdits, ErrorReply> {
        let service = &self.config.services[plan.route.service];
        let input = SigningInput {
            method: &plan.route.method,
            path: &plan.route.path,
            headers: &plan.headers,
            payload_sha256_hex,
            region: &self.config.region,
            signing_name: &service.signing_name,
            now,
        };
        let signature = signature_headers(&input, credentials)?;
        let mut write = plan.headers;
        write.drain(..plan.written_from);
        write.extend(signature.into_iter().map(|(n, v)| (n, v.into_bytes())));
        Ok(HeaderEdits {
            remove: plan.removed,
            write,
        })
    }
}

#[cfg(test)]
mod tests;
