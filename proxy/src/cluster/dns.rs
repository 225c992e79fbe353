//! STRICT_DNS clusters: resolve every endpoint name, and again every `dns_refresh_rate`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use super::Cluster;
use crate::config::{Discovery, DnsFamily, HostPort};

/// How long one resolution may take before it counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves the cluster's names once and installs the hosts. A name that fails to resolve keeps
/// no hosts this round, but the others still apply.
pub(super) async fn refresh(cluster: Arc<Cluster>) {
    let Discovery::StrictDns { family, .. } = cluster.config.discovery else {
        return;
    };
    let mut entries = Vec::new();
    for (locality, endpoint) in cluster.config.endpoints() {
        let (transport, _) = cluster.config.transport_for(&endpoint.transport_match);
        let (name, port) = match &endpoint.address {
            HostPort::Dns(name, port) => (name.as_str(), *port),
            HostPort::Ip(addr) => {
                entries.push((
                    locality.priority,
                    *addr,
                    endpoint.weight,
                    endpoint.health,
                    transport,
                ));
                continue;
            }
        };
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
            Ok(Ok(addrs)) => {
                let addrs = select_family(addrs.collect(), family);
                if addrs.is_empty() {
                    tracing::warn!(cluster = cluster.name(), %name, ?family, "DNS returned no address of the wanted family");
                }
                entries.extend(addrs.into_iter().map(|a| {
                    (
                        locality.priority,
                        a,
                        endpoint.weight,
                        endpoint.health,
                        transport,
                    )
                }));
            }
            Ok(Err(e)) => {
                tracing::warn!(cluster = cluster.name(), %name, error = %e, "DNS resolution failed");
            }
            Err(_) => {
                tracing::warn!(cluster = cluster.name(), %name, "DNS resolution timed out");
            }
        }
    }
    let mut entries_sorted = entries;
    entries_sorted.sort_by_key(|e| (e.0, e.1));
    entries_sorted.dedup_by_key(|e| (e.0, e.1));
    tracing::debug!(
        cluster = cluster.name(),
        hosts = entries_sorted.len(),
        "DNS refresh"
    );
    let previous = cluster.hosts();
    let hosts = cluster.rebuild_hosts(entries_sorted.into_iter(), &previous);
    drop(previous);
    cluster.set_hosts(hosts);
}

/// Re-resolves at the cluster's refresh rate for as long as the cluster is in use.
pub(super) async fn keep_fresh(cluster: std::sync::Weak<Cluster>) {
    let Some(every) = cluster.upgrade().and_then(|c| match c.config.discovery {
        Discovery::StrictDns { refresh, .. } => Some(refresh),
        _ => None,
    }) else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        // A cluster removed by CDS is dropped by every snapshot: stop resolving it.
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        refresh(cluster).await;
    }
}

/// Keeps the addresses `family` asks for, in resolver order.
pub(super) fn select_family(addrs: Vec<SocketAddr>, family: DnsFamily) -> Vec<SocketAddr> {
    let has_v4 = addrs.iter().any(SocketAddr::is_ipv4);
    let has_v6 = addrs.iter().any(SocketAddr::is_ipv6);
    let keep_v4 = match family {
        DnsFamily::V4Only | DnsFamily::All => true,
        DnsFamily::V6Only => false,
        DnsFamily::Auto => !has_v6,
        DnsFamily::V4Preferred => has_v4,
    };
    let keep_v6 = match family {
        DnsFamily::V6Only | DnsFamily::All => true,
        DnsFamily::V4Only => false,
        DnsFamily::Auto => has_v6,
        DnsFamily::V4Preferred => !has_v4,
    };
    addrs
        .into_iter()
        .filter(|a| if a.is_ipv4() { keep_v4 } else { keep_v6 })
        .collect()
}
