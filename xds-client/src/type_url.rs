//! Type URLs of the Envoy v3 resources an ADS client subscribes to, and what the protocol says
//! about each of them.

/// `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The wrapper a server may put around each resource of a state-of-the-world response to carry a
/// per-resource name, version or TTL (`envoy.service.discovery.v3.Resource`).
pub(crate) const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// Whether a state-of-the-world response of this type carries the complete set of resources.
///
/// The xDS protocol ("Grouping Resources into Responses" and "Deleting Resources" in Envoy's
/// `xds_protocol.rst`) makes Listener and Cluster the only such types: a listener or cluster
/// missing from a response has been deleted. For every other type a response only adds or
/// updates, and a resource goes away when the client stops subscribing to it.
pub fn is_full_state_in_sotw(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// The fully-qualified message name in a type URL, for messages written to operators:
/// `envoy.config.listener.v3.Listener` for [`LISTENER`].
pub fn short_name(type_url: &str) -> &str {
    type_url.rsplit_once('/').map_or(type_url, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listeners_and_clusters_are_full_state() {
        assert!(is_full_state_in_sotw(LISTENER));
        assert!(is_full_state_in_sotw(CLUSTER));
        assert!(!is_full_state_in_sotw(ROUTE));
        assert!(!is_full_state_in_sotw(ENDPOINT));
        assert!(!is_full_state_in_sotw(SECRET));
    }

    #[test]
    fn short_name_drops_the_type_url_prefix() {
        assert_eq!(
            short_name(ROUTE),
            "envoy.config.route.v3.RouteConfiguration"
        );
        assert_eq!(short_name("no-slash"), "no-slash");
    }
}
