//! What the renderers of the listener, routes and clusters share: resource names and the
//! `Duration` conversion. Apart from `snapshot`, which calls those renderers, so they need
//! not import it.

use envoy_types::pb::google::protobuf::Duration;

/// Name of the listener and of the connection manager's stats prefix.
pub const LISTENER_NAME: &str = "bedrock_gateway";
/// Name of the route configuration the listener asks for over RDS.
pub const ROUTE_CONFIG_NAME: &str = "bedrock_gateway";

/// A protobuf `Duration` (whole milliseconds are all the configuration can express).
pub(crate) fn duration(value: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(value.subsec_nanos()).unwrap_or(0),
    }
}
