//! A [`GatewayConfig`] rendered as Envoy resources: the listener, the Wasm filter with its
//! JSON configuration (served apart from the listener, over ECDS), the route table and the
//! upstream clusters. [`EnvoyResources`] holds
//! them as typed protos; [`Snapshot`] as the encoded, versioned resources ADS serves.

pub mod bootstrap;
pub mod cluster;
mod common;
pub mod listener;
pub mod local_reply;
pub mod route;

use envoy_types::{
    pb::{
        envoy::config::{
            cluster::v3::Cluster, core::v3::TypedExtensionConfig, listener::v3::Listener,
            route::v3::RouteConfiguration,
        },
        google::protobuf::Any,
    },
    util::pack_any,
};
use sha2::{Digest, Sha256};

pub use common::{LISTENER_NAME, ROUTE_CONFIG_NAME};

use crate::{config::GatewayConfig, xds::type_url};

/// The Envoy resources of one configuration, as typed protos.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyResources {
    pub listener: Listener,
    /// The Wasm filter's configuration, which the listener's connection manager asks for by
    /// name: a change to it applies to the next request of every connection, where a change
    /// to the listener would apply only to new connections (Envoy drains the old ones).
    pub filter: TypedExtensionConfig,
    pub route: RouteConfiguration,
    pub clusters: Vec<Cluster>,
}

impl EnvoyResources {
    /// Renders `config`; the listener gets its routes (RDS) and its filter (ECDS) over ADS.
    pub fn build(config: &GatewayConfig) -> Self {
        let filter_json = filter_json(config);
        Self {
            listener: listener::listener(config, &filter_json, listener::RouteSource::Ads),
            filter: TypedExtensionConfig {
                name: listener::WASM_FILTER_NAME.to_string(),
                typed_config: Some(pack_any(listener::wasm_filter(config, &filter_json))),
            },
            route: route::route_configuration(config),
            clusters: cluster::clusters(config),
        }
    }
}

/// The JSON configuration of the Wasm filter (no secret in it: it shows in /config_dump).
pub fn filter_json(config: &GatewayConfig) -> String {
    serde_json::to_string(&config.filter).expect(
        "FilterConfig has only strings, numbers, lists and a tagged enum: it always serializes",
    )
}

/// One named, encoded resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub body: Any,
}

/// All resources of one type, with a version derived from their encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedResources {
    pub version: String,
    pub resources: Vec<Resource>,
}

impl TypedResources {
    fn new(resources: Vec<Resource>) -> Self {
        let mut hash = Sha256::new();
        for resource in &resources {
            for part in [
                resource.name.as_bytes(),
                resource.body.type_url.as_bytes(),
                &resource.body.value,
            ] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
        }
        Self {
            version: short_hex(&hash.finalize()),
            resources,
        }
    }

    /// The resources whose names are in `names`, in snapshot order.
    pub fn named<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources
            .iter()
            .filter(move |r| names.contains(&r.name))
    }
}

/// The versioned resources ADS serves, by type. Immutable: a new configuration makes a new
/// snapshot, and each type's version changes only when its resources do.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    clusters: TypedResources,
    listeners: TypedResources,
    routes: TypedResources,
    extensions: TypedResources,
    version: String,
}

impl Snapshot {
    pub fn build(config: &GatewayConfig) -> Self {
        Self::from_resources(&EnvoyResources::build(config))
    }

    pub fn from_resources(resources: &EnvoyResources) -> Self {
        let clusters = TypedResources::new(
            resources
                .clusters
                .iter()
                .map(|c| Resource {
                    name: c.name.clone(),
                    body: pack_any(c.clone()),
                })
                .collect(),
        );
        let listeners = TypedResources::new(vec![Resource {
            name: resources.listener.name.clone(),
            body: pack_any(resources.listener.clone()),
        }]);
        let routes = TypedResources::new(vec![Resource {
            name: resources.route.name.clone(),
            body: pack_any(resources.route.clone()),
        }]);
        let extensions = TypedResources::new(vec![Resource {
            name: resources.filter.name.clone(),
            body: pack_any(resources.filter.clone()),
        }]);
        let version = {
            let mut hash = Sha256::new();
            for typed in [&clusters, &listeners, &routes, &extensions] {
                hash.update(typed.version.as_bytes());
                hash.update([0]);
            }
            short_hex(&hash.finalize())
        };
        Self {
            clusters,
            listeners,
            routes,
            extensions,
            version,
        }
    }

    /// The resources of a type URL this server serves, `None` for any other type.
    pub fn get(&self, type_url: &str) -> Option<&TypedResources> {
        match type_url {
            type_url::CLUSTER => Some(&self.clusters),
            type_url::LISTENER => Some(&self.listeners),
            type_url::ROUTE_CONFIGURATION => Some(&self.routes),
            type_url::EXTENSION_CONFIG => Some(&self.extensions),
            _ => None,
        }
    }

    /// Version of the whole snapshot (of all types' versions).
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// First 16 hex digits of a digest: enough to tell versions apart, short enough to read.
fn short_hex(digest: &[u8]) -> String {
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests;
