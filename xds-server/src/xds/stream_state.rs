//! Per-stream ADS bookkeeping: for each type URL what the client subscribed to, what was last
//! sent (version and nonce) and what it acknowledged. No IO and no async: the stream loop
//! feeds requests and snapshots in and sends out what comes back.

use std::collections::BTreeMap;

use envoy_types::pb::google::protobuf::Any;

use super::type_url;
use crate::snapshot::{Snapshot, TypedResources};

/// What this state needs of a `DiscoveryRequest`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub type_url: String,
    /// The version the client has applied (empty before the first).
    pub version_info: String,
    pub resource_names: Vec<String>,
    /// Nonce of the response this request answers (empty on a first request).
    pub response_nonce: String,
    /// Set when the client rejects the response (a NACK): its error message.
    pub error: Option<String>,
}

/// What to send as a `DiscoveryResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    pub resources: Vec<Any>,
}

/// What a request meant, for logs and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    /// The first request for this type on the stream.
    Subscribed,
    /// The client applied `version`.
    Ack { version: String },
    /// The client rejected `version` with `message`; it is not sent again.
    Nack { version: String, message: String },
    /// A request answering a response older than the last one sent: ignored.
    Stale { nonce: String },
    /// A type this server does not serve.
    Unsupported,
}

/// The answer to one request: what it meant and, maybe, a response to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub event: RequestEvent,
    pub response: Option<Response>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    version: String,
    nonce: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TypeState {
    /// Sorted, without duplicates; ignored for wildcard types.
    names: Vec<String>,
    sent: Option<Sent>,
    acked_version: Option<String>,
    nacked_version: Option<String>,
}

/// Bookkeeping of one ADS stream.
#[derive(Debug, Default)]
pub struct StreamState {
    types: BTreeMap<String, TypeState>,
    sent_responses: u64,
}

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one request from the client against the current snapshot.
    pub fn on_request(&mut self, request: &Request, snapshot: &Snapshot) -> Outcome {
        let Some(resources) = snapshot.get(&request.type_url) else {
            return Outcome {
                event: RequestEvent::Unsupported,
                response: None,
            };
        };
        let names = normalized(&request.resource_names);
        let Some(state) = self.types.get_mut(&request.type_url) else {
            // A first request gets the current resources whatever version or nonce it
            // carries: they may come from an earlier stream to this or another server.
            self.types.insert(
                request.type_url.clone(),
                TypeState {
                    names,
                    ..TypeState::default()
                },
            );
            let response = self.respond(&request.type_url, resources);
            return Outcome {
                event: RequestEvent::Subscribed,
                response,
            };
        };

        let last_nonce = state.sent.as_ref().map_or("", |s| s.nonce.as_str());
        if request.response_nonce != last_nonce {
            return Outcome {
                event: RequestEvent::Stale {
                    nonce: request.response_nonce.clone(),
                },
                response: None,
            };
        }
        let names_changed = state.names != names;
        state.names = names;
        let sent_version = state
            .sent
            .as_ref()
            .map(|s| s.version.clone())
            .unwrap_or_default();
        if let Some(message) = &request.error {
            state.nacked_version = Some(sent_version.clone());
            return Outcome {
                event: RequestEvent::Nack {
                    version: sent_version,
                    message: message.clone(),
                },
                response: None,
            };
        }
        let event = if state.sent.is_none() {
            // Nothing was sent yet (a by-name type with no names so far): a subscription
            // change, not an acknowledgement.
            RequestEvent::Subscribed
        } else {
            state.acked_version = Some(request.version_info.clone());
            RequestEvent::Ack {
                version: request.version_info.clone(),
            }
        };
        let response = if names_changed {
            self.respond(&request.type_url, resources)
        } else {
            None
        };
        Outcome { event, response }
    }

    /// The responses a new snapshot calls for: each subscribed type whose version differs
    /// from the one last sent, in [`type_url::PUSH_ORDER`].
    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Response> {
        let mut responses = Vec::new();
        for type_url in type_url::PUSH_ORDER {
            let (Some(state), Some(resources)) = (self.types.get(type_url), snapshot.get(type_url))
            else {
                continue;
            };
            let sent_version = state.sent.as_ref().map(|s| s.version.as_str());
            if sent_version != Some(resources.version.as_str())
                && let Some(response) = self.respond(type_url, resources)
            {
                responses.push(response);
            }
        }
        responses
    }

    /// The version the client last acknowledged for `type_url`.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.acked_version.as_deref()
    }

    /// The version the client last rejected for `type_url`.
    pub fn nacked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.nacked_version.as_deref()
    }

    /// Builds the response for `type_url` from `resources` and records it as sent; `None`
    /// when the client subscribed to no name of a by-name type.
    fn respond(&mut self, type_url: &str, resources: &TypedResources) -> Option<Response> {
        let state = self.types.get_mut(type_url)?;
        let bodies: Vec<Any> = if type_url::is_wildcard(type_url) {
            resources.resources.iter().map(|r| r.body.clone()).collect()
        } else if state.names.is_empty() {
            return None;
        } else {
            resources
                .named(&state.names)
                .map(|r| r.body.clone())
                .collect()
        };
        self.sent_responses += 1;
        let nonce = self.sent_responses.to_string();
        state.sent = Some(Sent {
            version: resources.version.clone(),
            nonce: nonce.clone(),
        });
        Some(Response {
            type_url: type_url.to_string(),
            version: resources.version.clone(),
            nonce,
            resources: bodies,
        })
    }
}

fn normalized(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests;
