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

    /// Order in which changed types are pushed: clusters before the routes that name them,
    /// the listener before the route table it asks for (Envoy's make-before-break order).
    pub const PUSH_ORDER: [&str; 3] = [CLUSTER, LISTENER, ROUTE_CONFIGURATION];

    /// Whether Envoy subscribes to the type as a whole (LDS, CDS) rather than by name (RDS).
    pub fn is_wildcard(type_url: &str) -> bool {
        type_url != ROUTE_CONFIGURATION
    }

    /// Short name for logs and metrics (`CDS`, `LDS`, `RDS`, or the URL itself).
    pub fn short_name(type_url: &str) -> &str {
        match type_url {
            CLUSTER => "CDS",
            LISTENER => "LDS",
            ROUTE_CONFIGURATION => "RDS",
            other => other,
        }
    }

    #[cfg(test)]
    mod tests {
        use envoy_types::pb::envoy::config::{
            cluster::v3::Cluster, listener::v3::Listener, route::v3::RouteConfiguration,
        };
        use prost::Name;

        #[test]
        fn constants_match_the_proto_types() {
            assert_eq!(super::CLUSTER, Cluster::type_url());
            assert_eq!(super::LISTENER, Listener::type_url());
            assert_eq!(super::ROUTE_CONFIGURATION, RouteConfiguration::type_url());
        }
    }
}
