//! The filter's logic as plain Rust: no host calls, time passed in. The host shim (`host.rs`)
//! gathers the request into plain values, asks this module what to do, and applies the answer.

pub mod credentials;
pub mod errors;
pub mod headers;
pub mod routing;
pub mod signing;

use std::time::SystemTime;

use gateway_common::filter_config::FilterConfig;

use credentials::SigningIdentity;
use errors::ErrorReply;
use headers::{CONTENT_LENGTH, ENDPOINT_PREFIX, HeaderList, METHOD, PATH, find_str};
use routing::ServiceRouter;
use signing::{SigningInput, signature_headers};

/// A validated configuration with its routing table compiled.
#[derive(Debug)]
pub struct Gateway {
    pub config: FilterConfig,
    router: ServiceRouter,
}

/// A request accepted for forwarding, waiting for its body to be hashed and signed.
#[derive(Debug)]
pub struct ForwardPlan {
    pub method: String,
    pub path: String,
    /// The upstream header map, without the signature.
    pub headers: HeaderList,
    pub service: usize,
}

impl Gateway {
    pub fn new(config: FilterConfig) -> Self {
        let router = ServiceRouter::new(&config);
        Self { config, router }
    }

    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        FilterConfig::from_json(json).map(Self::new)
    }

    /// Decides from the request headers whether and where to forward.
    pub fn plan(&self, headers: HeaderList) -> Result<ForwardPlan, ErrorReply> {
        let (Some(method), Some(path)) = (find_str(&headers, METHOD), find_str(&headers, PATH))
        else {
            return Err(ErrorReply::validation(
                "malformed_request",
                "The request has no method or path.",
            ));
        };
        let limit = self.config.max_request_body_bytes;
        if let Some(length) = find_str(&headers, CONTENT_LENGTH) {
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
        let prefix = find_str(&headers, ENDPOINT_PREFIX);
        let service = self.router.select(&self.config, method, path, prefix)?;
        let (method, path) = (method.to_string(), path.to_string());
        Ok(ForwardPlan {
            method,
            path,
            headers: headers::upstream_headers(headers, &self.config.services[service]),
            service,
        })
    }

    /// The final upstream header map: the plan's headers plus the signature.
    pub fn sign(
        &self,
        plan: ForwardPlan,
        payload_sha256_hex: &str,
        credentials: &SigningIdentity,
        now: SystemTime,
    ) -> Result<HeaderList, ErrorReply> {
        let service = &self.config.services[plan.service];
        let input = SigningInput {
            method: &plan.method,
            path: &plan.path,
            headers: &plan.headers,
            payload_sha256_hex,
            region: &self.config.region,
            signing_name: &service.signing_name,
            now,
        };
        let signature = signature_headers(&input, &credentials.identity)?;
        let mut headers = plan.headers;
        headers.extend(signature.into_iter().map(|(n, v)| (n, v.into_bytes())));
        Ok(headers)
    }
}

#[cfg(test)]
mod tests;
