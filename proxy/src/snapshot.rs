//! The immutable view of the configuration that the data path reads: listeners with their
//! chain indexes, the original-destination handoff table, the clusters, and the route tables
//! from RDS.
//!
//! Built once per configuration change, off the data path, and published in [`Live`]. A
//! connection keeps the snapshot it was accepted with for its listener and filter chain; each
//! HTTP request loads the current one for routes and clusters (as Envoy applies RDS and CDS
//! updates to new requests on existing connections), and keeps it until it ends.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use arc_swap::ArcSwap;

use crate::{
    cluster::Clusters,
    config::{Bootstrap, canonical},
    http::RouteTable,
    listener::Listener,
};

/// Listeners, clusters and routes of one configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Every active listener, in configuration order.
    pub listeners: Vec<Arc<Listener>>,
    /// Every cluster.
    pub clusters: Arc<Clusters>,
    /// Route configurations from RDS, by name.
    pub routes: Arc<HashMap<Arc<str>, Arc<RouteTable>>>,
    by_addr: HashMap<SocketAddr, Arc<Listener>>,
    by_name: HashMap<Arc<str>, Arc<Listener>>,
}

/// The snapshot in force now, swapped atomically when the configuration changes.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Snapshot>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Builds the snapshot of a validated bootstrap's static resources.
    pub fn new(bootstrap: &Bootstrap) -> Self {
        let listeners = bootstrap
            .listeners
            .iter()
            .map(|l| Arc::new(Listener::new(l.clone())))
            .collect();
        Self::build(
            listeners,
            Arc::new(Clusters::new(&bootstrap.clusters)),
            Arc::default(),
        )
    }

    /// A snapshot of these parts.
    pub fn build(
        listeners: Vec<Arc<Listener>>,
        clusters: Arc<Clusters>,
        routes: Arc<HashMap<Arc<str>, Arc<RouteTable>>>,
    ) -> Self {
        let by_addr = listeners
            .iter()
            .filter(|l| !l.config.internal)
            .map(|l| (normal(l.config.address), l.clone()))
            .collect();
        let by_name = listeners
            .iter()
            .map(|l| (l.config.name.clone(), l.clone()))
            .collect();
        Self {
            listeners,
            clusters,
            routes,
            by_addr,
            by_name,
        }
    }

    /// The listener a `use_original_dst` listener hands a connection to, the way Envoy does: the
    /// listener with exactly that address, else the wildcard listener on that port of the same
    /// family (or a dual-stack IPv6 wildcard for IPv4), else none.
    pub fn handoff_target(&self, dst: SocketAddr) -> Option<&Arc<Listener>> {
        let dst = normal(dst);
        if let Some(l) = self.by_addr.get(&dst) {
            return Some(l);
        }
        let port = dst.port();
        match dst.ip() {
            IpAddr::V4(_) => self
                .by_addr
                .get(&SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
                .or_else(|| {
                    self.by_addr
                        .get(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))
                        .filter(|l| l.config.ipv4_compat)
                }),
            IpAddr::V6(_) => self
                .by_addr
                .get(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)),
        }
    }

    /// Whether connecting to `addr` would reach one of this proxy's own bound listeners.
    /// `local` is the local address of the downstream connection, a known address of this host.
    pub fn is_own_listener(&self, addr: SocketAddr, local: Option<SocketAddr>) -> bool {
        let addr = normal(addr);
        self.listeners.iter().any(|l| {
            let bound = normal(l.config.address);
            if !l.config.bind_to_port || bound.port() != addr.port() {
                return false;
            }
            bound == addr
                || (bound.ip().is_unspecified()
                    && (addr.ip().is_loopback()
                        || local.is_some_and(|local| canonical(local.ip()) == addr.ip())))
        })
    }

    /// A listener by name.
    pub fn listener(&self, name: &str) -> Option<&Arc<Listener>> {
        self.by_name.get(name)
    }

    /// The route table from RDS of this name.
    pub fn route_table(&self, name: &str) -> Option<&Arc<RouteTable>> {
        self.routes.get(name)
    }
}

// === impl Live ===

impl Live {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            current: ArcSwap::new(snapshot),
        }
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `snapshot` in force: new connections and requests use it.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
        self.current.store(snapshot);
    }
}

/// An address with IPv4-mapped IPv6 written as IPv4.
fn normal(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}
