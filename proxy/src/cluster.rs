//! Clusters at run time: the current hosts of each cluster and how one is picked.
//!
//! Hot path: `Cluster::pick` runs once per upstream connection. It reads an immutable host set
//! through `ArcSwap` (no locks), and allocates nothing except for ORIGINAL_DST hosts.

mod dns;
mod lb;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use arc_swap::ArcSwap;

use crate::{
    addr::OrigDst,
    config::{self, Discovery, Health, HostPort},
};

pub use self::lb::Balancer;
pub(crate) use self::lb::random_u64;

/// A cluster: its configuration and its current hosts.
#[derive(Debug)]
pub struct Cluster {
    /// The configuration it was built from.
    pub config: Arc<config::Cluster>,
    hosts: ArcSwap<HostSet>,
    balancer: Balancer,
    /// TLS for each transport (`config.transport(i)`), `None` for plaintext.
    transports: Transports,
}

/// The TLS connector of each of a cluster's transports, by [`config::Cluster::transport`] index:
/// `Some(None)` is plaintext, `None` a TLS transport that could not be built (its hosts get no
/// traffic rather than plaintext).
#[derive(Debug, Default)]
pub struct Transports(Vec<Option<Option<Arc<crate::tls::Connector>>>>);

/// One host as configuration or DNS gives it: priority, address, weight, health, and the index
/// of its transport.
pub type HostEntry = (u32, SocketAddr, u32, Health, usize);

/// An upstream host.
#[derive(Debug)]
pub struct Host {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Its load-balancing weight.
    pub weight: u32,
    /// Connections to it that are open now (least-request load balancing reads this).
    active: AtomicU32,
    /// TLS origination to it, if its transport is TLS.
    pub tls: Option<Arc<crate::tls::Connector>>,
    /// Pooled HTTP connections to it.
    pub pool: Arc<crate::http::pool::HostPool>,
}

/// The hosts of a cluster, grouped by priority (lowest first), split by health.
#[derive(Debug, Default)]
pub struct HostSet {
    levels: Vec<Level>,
}

/// One priority level.
#[derive(Debug, Default)]
struct Level {
    usable: lb::Weighted,
    degraded: lb::Weighted,
}

/// Holds a host's active-connection count up while the connection lives.
#[derive(Debug)]
pub struct HostGuard {
    host: Arc<Host>,
}

/// Why no host could be picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoHost {
    /// Every host is excluded, or the cluster has none (Envoy's `UH`).
    #[error("no healthy upstream host")]
    NoHealthyHost,
    /// An ORIGINAL_DST cluster served a connection whose destination was not restored.
    #[error("the connection has no original destination")]
    NoOriginalDst,
}

/// Every cluster of a configuration, by name.
#[derive(Debug, Default)]
pub struct Clusters {
    by_name: HashMap<Arc<str>, Arc<Cluster>>,
}

// === impl Cluster ===

impl Cluster {
    /// Builds a cluster. Static endpoints become hosts at once; STRICT_DNS hosts arrive with the
    /// first resolution (see [`Clusters::resolve_all`]).
    pub fn new(config: Arc<config::Cluster>) -> Self {
        let transports = Transports::new(&config);
        let hosts = match config.discovery {
            Discovery::Static => HostSet::rebuild(
                host_entries(&config, &config.localities).into_iter(),
                None,
                &transports,
            ),
            Discovery::StrictDns { .. } | Discovery::OriginalDst | Discovery::Eds { .. } => {
                HostSet::default()
            }
        };
        let balancer = Balancer::new(config.lb_policy);
        Self {
            config,
            hosts: ArcSwap::from_pointee(hosts),
            balancer,
            transports,
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Replaces the cluster's hosts with `entries` (priority, address, weight, health), keeping
    /// the `Host` (its pooled connections and load counters) of every address already there.
    pub fn update_hosts(&self, entries: impl Iterator<Item = HostEntry>) {
        let previous = self.hosts();
        let hosts = HostSet::rebuild(entries, Some(&previous), &self.transports);
        drop(previous);
        self.set_hosts(hosts);
    }

    /// Builds a host set from `entries` with this cluster's transports, keeping the hosts of
    /// `previous` that remain.
    pub fn rebuild_hosts(
        &self,
        entries: impl Iterator<Item = HostEntry>,
        previous: &HostSet,
    ) -> HostSet {
        HostSet::rebuild(entries, Some(previous), &self.transports)
    }

    /// Takes `other`'s current hosts (the same objects), so a later update keeps those that
    /// remain.
    pub fn adopt_hosts(&self, other: &Cluster) {
        self.hosts.store(other.hosts.load_full());
    }

    /// Picks the host for a new connection. `orig_dst` is the connection's restored original
    /// destination, which ORIGINAL_DST clusters connect to.
    pub fn pick(&self, orig_dst: Option<OrigDst>) -> Result<HostGuard, NoHost> {
        if self.config.discovery == Discovery::OriginalDst {
            let dst = orig_dst.ok_or(NoHost::NoOriginalDst)?;
            let Some(tls) = self.transports.get(0) else {
                return Err(NoHost::NoHealthyHost);
            };
            return Ok(HostGuard::new(Arc::new(Host::with_tls(dst.0, 1, tls))));
        }
        let hosts = self.hosts.load();
        let level = hosts
            .levels
            .iter()
            .map(|l| &l.usable)
            .find(|w| !w.is_empty())
            .or_else(|| {
                hosts
                    .levels
                    .iter()
                    .map(|l| &l.degraded)
                    .find(|w| !w.is_empty())
            })
            .ok_or(NoHost::NoHealthyHost)?;
        Ok(HostGuard::new(self.balancer.pick(level).clone()))
    }

    /// Replaces the hosts (DNS results, later EDS).
    pub fn set_hosts(&self, hosts: HostSet) {
        self.hosts.store(Arc::new(hosts));
    }

    /// The current hosts.
    pub fn hosts(&self) -> arc_swap::Guard<Arc<HostSet>> {
        self.hosts.load()
    }

    /// The addresses of the current hosts, lowest priority first (for the admin API and tests).
    pub fn host_addrs(&self) -> Vec<SocketAddr> {
        let hosts = self.hosts.load();
        hosts
            .levels
            .iter()
            .flat_map(|l| l.usable.hosts().iter().chain(l.degraded.hosts()))
            .map(|h| h.addr)
            .collect()
    }
}

// === impl Host ===

impl Host {
    /// A plaintext host with no open connection.
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Self::with_tls(addr, weight, None)
    }

    /// A host with no open connection, reached over `tls` when given.
    pub fn with_tls(
        addr: SocketAddr,
        weight: u32,
        tls: Option<Arc<crate::tls::Connector>>,
    ) -> Self {
        Self {
            addr,
            weight,
            active: AtomicU32::new(0),
            pool: Arc::new(crate::http::pool::HostPool::new(addr, tls.clone())),
            tls,
        }
    }

    /// Connections to this host open now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
}

// === impl HostGuard ===

impl HostGuard {
    fn new(host: Arc<Host>) -> Self {
        host.active.fetch_add(1, Ordering::Relaxed);
        Self { host }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        self.host.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl HostSet ===

impl HostSet {
    /// Groups plaintext `(priority, address, weight, health)` entries into levels; excluded
    /// hosts are dropped here so picking never looks at them.
    pub fn from_endpoints(entries: impl Iterator<Item = (u32, SocketAddr, u32, Health)>) -> Self {
        Self::rebuild(
            entries.map(|(p, a, w, h)| (p, a, w, h, 0)),
            None,
            &Transports::default(),
        )
    }

    /// Groups entries into levels, keeping the `Host` (and so its connection pool and load
    /// counters) of every address that `previous` already had with the same weight and
    /// transport.
    pub fn rebuild(
        entries: impl Iterator<Item = HostEntry>,
        previous: Option<&HostSet>,
        transports: &Transports,
    ) -> Self {
        let known: HashMap<(SocketAddr, u32), &Arc<Host>> = previous
            .into_iter()
            .flat_map(|p| p.levels.iter())
            .flat_map(|l| l.usable.hosts().iter().chain(l.degraded.hosts()))
            .map(|h| ((h.addr, h.weight), h))
            .collect();
        // Priority -> (usable, degraded) hosts.
        type Split = (Vec<Arc<Host>>, Vec<Arc<Host>>);
        let mut by_priority: std::collections::BTreeMap<u32, Split> = Default::default();
        for (priority, addr, weight, health, transport) in entries {
            let level = by_priority.entry(priority).or_default();
            let Some(tls) = transports.get(transport) else {
                continue;
            };
            let same_tls = |h: &&&Arc<Host>| match (&h.tls, &tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            let host = known.get(&(addr, weight)).filter(same_tls).map_or_else(
                || Arc::new(Host::with_tls(addr, weight, tls.clone())),
                |h| Arc::clone(h),
            );
            match health {
                Health::Usable => level.0.push(host),
                Health::Degraded => level.1.push(host),
                Health::Excluded => {}
            }
        }
        HostSet {
            levels: by_priority
                .into_values()
                .map(|(usable, degraded)| Level {
                    usable: lb::Weighted::new(usable),
                    degraded: lb::Weighted::new(degraded),
                })
                .collect(),
        }
    }
}

// === impl Clusters ===

impl Clusters {
    /// Builds every cluster of a configuration.
    pub fn new(configs: &[Arc<config::Cluster>]) -> Self {
        Self {
            by_name: configs
                .iter()
                .map(|c| (c.name.clone(), Arc::new(Cluster::new(c.clone()))))
                .collect(),
        }
    }

    /// A cluster by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.by_name.get(name)
    }

    /// Every cluster.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.by_name.values()
    }

    /// Resolves every STRICT_DNS cluster once (Envoy's cluster warming), then keeps them fresh
    /// in background tasks on the current runtime.
    pub async fn resolve_all(&self) {
        let dns: Vec<_> = self
            .by_name
            .values()
            .filter(|c| matches!(c.config.discovery, Discovery::StrictDns { .. }))
            .cloned()
            .collect();
        let first = dns.iter().map(|c| dns::refresh(c.clone()));
        futures_join_all(first).await;
        for c in dns {
            tokio::spawn(dns::keep_fresh(Arc::downgrade(&c)));
        }
    }

    /// Every cluster of a configuration, by name, as given.
    pub fn from_clusters(clusters: impl IntoIterator<Item = Arc<Cluster>>) -> Self {
        Self {
            by_name: clusters
                .into_iter()
                .map(|c| (c.config.name.clone(), c))
                .collect(),
        }
    }

    /// How many clusters there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The hosts of `localities` for `config`: IP endpoints with their transport, without those
/// whose transport Skiff cannot provide (an internal upstream), which are logged.
pub fn host_entries(config: &config::Cluster, localities: &[config::Locality]) -> Vec<HostEntry> {
    let mut refused = 0usize;
    let entries = localities
        .iter()
        .flat_map(|l| l.endpoints.iter().map(move |e| (l, e)))
        .filter_map(|(l, e)| {
            let (index, transport) = config.transport_for(&e.transport_match);
            if matches!(transport, config::Transport::Refused(_)) {
                refused += 1;
                return None;
            }
            match e.address {
                HostPort::Ip(addr) => Some((l.priority, addr, e.weight, e.health, index)),
                HostPort::Dns(..) => None,
            }
        })
        .collect();
    if refused > 0 {
        tracing::warn!(
            cluster = %config.name,
            endpoints = refused,
            "endpoints whose transport Skiff cannot provide get no traffic"
        );
    }
    entries
}

// === impl Transports ===

impl Transports {
    /// Builds the TLS connector of every TLS transport of `config`. One that cannot be built
    /// (a key rustls cannot use) is logged, and its hosts get no traffic.
    pub fn new(config: &config::Cluster) -> Self {
        let count = config.transport_matches.len() + 1;
        Self(
            (0..count)
                .map(|i| match config.transport(i) {
                    config::Transport::Tls(t) => match crate::tls::Connector::new(t) {
                        Ok(c) => Some(Some(Arc::new(c))),
                        Err(e) => {
                            tracing::error!(cluster = %config.name, error = %e, "TLS transport unusable; its hosts get no traffic");
                            None
                        }
                    },
                    config::Transport::Plain | config::Transport::Refused(_) => Some(None),
                })
                .collect(),
        )
    }

    /// The connector of transport `index`: `Some(None)` for plaintext, `None` when unusable.
    pub fn get(&self, index: usize) -> Option<Option<Arc<crate::tls::Connector>>> {
        match self.0.get(index) {
            Some(t) => t.clone(),
            // `from_endpoints` passes no transports: plaintext.
            None => Some(None),
        }
    }
}

/// Resolves a STRICT_DNS cluster that arrived from CDS (in the background: it warms with its
/// first resolution), then keeps it fresh while it is in use.
pub fn start_dns(cluster: &Arc<Cluster>) {
    if !matches!(cluster.config.discovery, Discovery::StrictDns { .. }) {
        return;
    }
    let c = cluster.clone();
    tokio::spawn(async move {
        let weak = Arc::downgrade(&c);
        dns::refresh(c).await;
        dns::keep_fresh(weak).await;
    });
}

/// Awaits every future (few, only at startup), without pulling in a futures crate.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for h in handles {
        if let Err(e) = h.await {
            tracing::error!(error = %e, "DNS resolution task failed");
        }
    }
}

#[cfg(test)]
mod tests;
