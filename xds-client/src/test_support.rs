//! Test helpers: real Envoy resources, responses, a pinned clock, and a handler that validates
//! and records like a small proxy would.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster,
            core::v3::{Address, Node, SocketAddress, address, socket_address::PortSpecifier},
            endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints},
            listener::v3::{Filter, FilterChain, Listener, filter::ConfigType},
            route::v3::RouteConfiguration,
        },
        extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
        },
        service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse, Resource},
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

use crate::{Handler, Rejected, Update, type_url};

pub(crate) const NOW: Duration = Duration::from_secs(1_700_000_000);

pub(crate) fn pinned_clock() -> SystemTime {
    SystemTime::UNIX_EPOCH + NOW
}

pub(crate) fn node() -> Node {
    Node {
        id: "sidecar~10.0.0.7~web-0.default~default.svc.cluster.local".to_string(),
        ..Default::default()
    }
}

pub(crate) fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A cluster; `alt_stat_name` stands for any content change.
pub(crate) fn cluster(name: &str, content: &str) -> Any {
    any(&Cluster {
        name: name.to_string(),
        alt_stat_name: content.to_string(),
        ..Default::default()
    })
}

/// A listener on `port` whose HTTP connection manager takes its routes from RDS `route`.
pub(crate) fn listener(name: &str, port: u32, route: &str) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: route.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    };
    any(&Listener {
        name: name.to_string(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".to_string(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_string(),
                config_type: Some(ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A listener the handler refuses: it has no address.
pub(crate) fn listener_without_address(name: &str) -> Any {
    any(&Listener {
        name: name.to_string(),
        ..Default::default()
    })
}

pub(crate) fn route(name: &str, content: &str) -> Any {
    any(&RouteConfiguration {
        name: name.to_string(),
        internal_only_headers: vec![content.to_string()],
        ..Default::default()
    })
}

/// Endpoints of `cluster`; `priority` stands for any content change.
pub(crate) fn endpoints(cluster: &str, priority: u32) -> Any {
    any(&ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            priority,
            ..Default::default()
        }],
        ..Default::default()
    })
}

pub(crate) fn sotw(
    type_url: &str,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.to_string(),
        resources,
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// A delta resource: name, version, payload.
pub(crate) fn delta_resource(name: &str, version: &str, payload: Any) -> Resource {
    Resource {
        name: name.to_string(),
        version: version.to_string(),
        resource: Some(payload),
        ..Default::default()
    }
}

pub(crate) fn delta(
    type_url: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        resources,
        type_url: type_url.to_string(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// One update as the handler saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) type_url: String,
    pub(crate) version: String,
    /// (name, version) of each added or updated resource.
    pub(crate) added: Vec<(String, String)>,
    pub(crate) removed: Vec<String>,
    /// Subscribed names the server says do not exist.
    pub(crate) absent: Vec<String>,
}

/// A handler that decodes listeners and clusters, refuses listeners without an address and any
/// name in `refuse`, and keeps which route each accepted listener references.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) seen: Vec<Seen>,
    pub(crate) refuse: BTreeMap<String, String>,
    routes_by_listener: BTreeMap<String, String>,
}

impl Recorder {
    /// The RDS names the accepted listeners reference: what the client must subscribe to.
    pub(crate) fn referenced_routes(&self) -> BTreeSet<String> {
        self.routes_by_listener.values().cloned().collect()
    }

    pub(crate) fn last(&self) -> &Seen {
        self.seen.last().expect("the handler saw an update")
    }

    fn check(
        &mut self,
        type_url: &str,
        name: &str,
        resource: &crate::Resource<'_>,
    ) -> Result<(), String> {
        if let Some(reason) = self.refuse.get(name) {
            return Err(reason.clone());
        }
        if type_url == type_url::LISTENER {
            let listener = resource.decode::<Listener>().map_err(|e| e.to_string())?;
            if listener.address.is_none() {
                return Err("listener has no address".to_string());
            }
            if let Some(route) = rds_name(&listener) {
                self.routes_by_listener.insert(name.to_string(), route);
            }
        }
        if type_url == type_url::CLUSTER {
            resource.decode::<Cluster>().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Handler for Recorder {
    fn apply(&mut self, type_url: &str, update: Update<'_>) -> Vec<Rejected> {
        self.seen.push(Seen {
            type_url: type_url.to_string(),
            version: update.version.to_string(),
            added: update
                .added
                .iter()
                .map(|r| (r.name.to_string(), r.version.to_string()))
                .collect(),
            removed: update.removed.iter().map(|s| s.to_string()).collect(),
            absent: update.absent.iter().map(|s| s.to_string()).collect(),
        });
        let mut rejected = Vec::new();
        for resource in &update.added {
            if let Err(reason) = self.check(type_url, resource.name, resource) {
                rejected.push(Rejected::new(resource.name, reason));
            }
        }
        for name in &update.removed {
            self.routes_by_listener.remove(*name);
        }
        rejected
    }
}

fn rds_name(listener: &Listener) -> Option<String> {
    let filters = listener.filter_chains.iter().flat_map(|c| &c.filters);
    filters
        .into_iter()
        .find_map(|filter| match &filter.config_type {
            Some(ConfigType::TypedConfig(typed)) => {
                let hcm = HttpConnectionManager::decode(typed.value.as_slice()).ok()?;
                match hcm.route_specifier? {
                    RouteSpecifier::Rds(rds) => Some(rds.route_config_name),
                    _ => None,
                }
            }
            _ => None,
        })
}
