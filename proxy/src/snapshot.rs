//! The immutable view of the configuration that the data path reads: listeners with their
//! chain indexes, the original-destination handoff table, and the clusters.
//!
//! Built once per configuration, off the data path; connections hold an `Arc` to the snapshot
//! they started with.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use crate::{
    cluster::Clusters,
    config::{Bootstrap, canonical},
    listener::Listener,
};

/// Listeners and clusters of one configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Every listener, in configuration order.
    pub listeners: Vec<Arc<Listener>>,
    /// Every cluster.
    pub clusters: Clusters,
    by_addr: HashMap<SocketAddr, Arc<Listener>>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Builds the snapshot of a validated bootstrap.
    pub fn new(bootstrap: &Bootstrap) -> Self {
        let listeners: Vec<Arc<Listener>> = bootstrap
            .listeners
            .iter()
            .map(|l| Arc::new(Listener::new(l.clone())))
            .collect();
        let by_addr = listeners
            .iter()
            .map(|l| (normal(l.config.address), l.clone()))
            .collect();
        Self {
            listeners,
            clusters: Clusters::new(&bootstrap.clusters),
            by_addr,
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
        self.listeners.iter().find(|l| &*l.config.name == name)
    }
}

/// An address with IPv4-mapped IPv6 written as IPv4.
fn normal(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}
