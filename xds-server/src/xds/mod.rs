//! ADS: state-of-the-world `StreamAggregatedResources` over the current [`Snapshot`].
//! [`stream_state`] decides what to send (synchronous, unit-tested); [`service`] only moves
//! messages between the gRPC stream, the snapshot channel and that state.
//!
//! [`Snapshot`]: crate::snapshot::Snapshot

pub mod service;
pub mod stream_state;
pub mod streams;

/// The resource types this server serves.
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE_CONFIGURATION: &str =
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// ECDS: the gateway filter's configuration.
    pub const EXTENSION_CONFIG: &str =
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

    /// Order in which changed types are pushed: clusters before the routes that name them,
    /// the filter's and the listener's before the route table the listener asks for
    /// (Envoy's make-before-break order).
    pub const PUSH_ORDER: [&str; 4] = [CLUSTER, EXTENSION_CONFIG, LISTENER, ROUTE_CONFIGURATION];

    /// Whether Envoy subscribes to the type as a whole (LDS, CDS) rather than by name (RDS,
    /// ECDS).
    pub fn is_wildcard(type_url: &str) -> bool {
        type_url != ROUTE_CONFIGURATION && type_url != EXTENSION_CONFIG
    }

    /// Short name for logs and metrics (`CDS`, `LDS`, `RDS`, `ECDS`, or the URL itself).
    pub fn short_name(type_url: &str) -> &str {
        match type_url {
            CLUSTER => "CDS",
            LISTENER => "LDS",
            ROUTE_CONFIGURATION => "RDS",
            EXTENSION_CONFIG => "ECDS",
            other => other,
        }
    }

    #[cfg(test)]
    mod tests {
        use envoy_types::pb::envoy::config::{
            cluster::v3::Cluster, core::v3::TypedExtensionConfig, listener::v3::Listener,
            route::v3::RouteConfiguration,
        };
        use prost::Name;

        #[test]
        fn constants_match_the_proto_types() {
            assert_eq!(super::CLUSTER, Cluster::type_url());
            assert_eq!(super::LISTENER, Listener::type_url());
            assert_eq!(super::ROUTE_CONFIGURATION, RouteConfiguration::type_url());
            assert_eq!(super::EXTENSION_CONFIG, TypedExtensionConfig::type_url());
        }
    }
}
