//! The filter's logic as plain Rust: no host calls, time passed in. The host shim (`host.rs`)
//! gathers the request into plain values, asks this module what to do, and applies the answer.
//!
//! A request goes through [`Gateway::route`] (which service and operation), authentication
//! ([`auth::Authenticator`], in `jwt` mode), [`Gateway::authorize`], [`Gateway::forward`] (the
//! upstream headers) and, once the body is hashed, [`Gateway::sign`].

pub mod audit;
pub mod auth;
pub mod credentials;
pub mod errors;
pub mod headers;
pub mod operations;
pub mod quota;
pub mod routing;
pub mod schedule;
pub mod signing;

use std::time::SystemTime;

use gateway_common::filter_config::{Authentication, FilterConfig};

use auth::Identity;
use credentials::SigningIdentity;
use errors::ErrorReply;
use headers::{CONTENT_LENGTH, ENDPOINT_PREFIX, HeaderList, METHOD, PATH, find_str};
use operations::Operation;
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

/// A request accepted for forwarding, waiting for its body to be hashed and signed.
#[derive(Debug)]
pub struct ForwardPlan {
    pub route: Route,
    /// The upstream header map, without the signature.
    pub headers: HeaderList,
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

    /// Which service and operation the request is for, and whether its size is acceptable.
    pub fn route(&self, headers: &[(String, Vec<u8>)]) -> Result<Route, ErrorReply> {
        let (Some(method), Some(path)) = (find_str(headers, METHOD), find_str(headers, PATH))
        else {
            return Err(ErrorReply::validation(
                "malformed_request",
                "The request has no method or path.",
            ));
        };
        let limit = self.config.max_request_body_bytes;
        if let Some(length) = find_str(headers, CONTENT_LENGTH) {
            match length.trim().parse::<u64>() {
                Ok(n) if n > limit => return Err(ErrorReply::body_too_large(limit)),
                Ok(_) => {}
                Err(_) => {
                    return Err(ErrorReply::validation(
                        "malformed_request",
                        "The content-length header is not a number.",
                    ));
                }
            }
        }
        let prefix = find_str(headers, ENDPOINT_PREFIX);
        let service = self.router.select(&self.config, method, path, prefix)?;
        let operation = operations::identify(&self.config.services[service].name, method, path);
        Ok(Route {
            service,
            operation,
            method: method.to_string(),
            path: path.to_string(),
        })
    }

    /// Whether the caller's tenant or roles may make this call (`jwt` mode).
    pub fn authorize(&self, identity: &Identity, route: &Route) -> Result<(), ErrorReply> {
        let Authentication::Jwt(jwt) = &self.config.authentication else {
            return Ok(());
        };
        let model = route.operation.model.as_deref();
        if auth::policy::allows(
            &jwt.access,
            identity,
            self.service_name(route),
            route.operation.name,
            model,
        ) {
            Ok(())
        } else {
            Err(ErrorReply::access_denied(model.is_some()))
        }
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
        let mut headers = headers::upstream_headers(incoming, service, &self.stripped);
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
        ForwardPlan { route, headers }
    }

    /// The final upstream header map: the plan's headers plus the signature.
    pub fn sign(
        &self,
        plan: ForwardPlan,
        payload_sha256_hex: &str,
        credentials: &SigningIdentity,
        now: SystemTime,
    ) -> Result<HeaderList, ErrorReply> {
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
        let mut headers = plan.headers;
        headers.extend(signature.into_iter().map(|(n, v)| (n, v.into_bytes())));
        Ok(headers)
    }
}

#[cfg(test)]
mod tests;
