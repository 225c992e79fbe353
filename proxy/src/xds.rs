//! Live configuration from a control plane: the ADS stream the bootstrap's `dynamic_resources`
//! describe, feeding the [`Store`] that builds and swaps snapshots.

mod node;
mod sds;
mod store;

use std::{path::PathBuf, sync::Arc, time::Duration};

use envoy_types::pb::envoy::config::core::v3::Node;
use xds_client::{
    Watch,
    transport::{self, AdsConfig, AdsHandle, Backoff, Protocol, Target, TlsConfig},
    type_url,
};

pub use self::{
    node::{NodeError, node_from_env},
    sds::SdsStreams,
    store::{Shared, Store, warming_timer},
};
use crate::config::{AdsProtocol, AdsTarget, Dynamic};

/// Settings for the ADS stream that come from flags rather than the bootstrap.
#[derive(Clone, Debug, Default)]
pub struct XdsFlags {
    /// A file holding a bearer token sent as `authorization` (re-read on every reconnect).
    pub token_file: Option<PathBuf>,
}

/// Why the ADS stream could not be started.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The node identity is incomplete.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The transport refused its settings.
    #[error("cannot start the ADS client: {0}")]
    Transport(#[from] transport::TransportError),
}

/// Starts the ADS stream for `dynamic`, applying what arrives to `shared`.
pub fn start(
    dynamic: &Dynamic,
    node: Node,
    flags: &XdsFlags,
    shared: Shared,
) -> Result<AdsHandle, XdsError> {
    let ads = &dynamic.ads;
    let target = match &ads.target {
        AdsTarget::Tcp(addr) => Target::Tcp(addr.clone()),
        AdsTarget::Unix(path) => Target::Unix(path.clone()),
    };
    let config = AdsConfig {
        target,
        tls: ads.tls.as_ref().map(|t| TlsConfig {
            ca_file: t.ca_file.clone(),
            server_name: t.server_name.clone(),
        }),
        token_file: flags.token_file.clone(),
        metadata: ads.metadata.clone(),
        protocol: match ads.protocol {
            AdsProtocol::Sotw => Protocol::Sotw,
            AdsProtocol::Delta => Protocol::Delta,
        },
        backoff: Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        },
        connect_timeout: ads.connect_timeout,
        initial_fetch_timeout: initial_fetch_timeout(dynamic),
    };
    // Envoy's warming order: clusters, their endpoints, listeners, their routes.
    let mut watches = Vec::new();
    if dynamic.cds.is_some() {
        watches.push(Watch::wildcard(type_url::CLUSTER));
    }
    watches.push(Watch::named(type_url::ENDPOINT, [] as [&str; 0]));
    if dynamic.lds.is_some() {
        watches.push(Watch::wildcard(type_url::LISTENER));
    }
    watches.push(Watch::named(type_url::ROUTE, [] as [&str; 0]));
    // Secrets named with `sds_config: {ads: {}}` and not served in-process.
    watches.push(Watch::named(type_url::SECRET, [] as [&str; 0]));
    tokio::spawn(warming_timer(shared.clone()));
    Ok(transport::spawn(config, node, watches, shared)?)
}

/// The longest initial fetch timeout of LDS and CDS, which bounds how long one type's first
/// answer holds up the next (`0s`, waiting for ever, is Istio's setting: then a day).
fn initial_fetch_timeout(dynamic: &Dynamic) -> Duration {
    const FOREVER: Duration = Duration::from_secs(24 * 3600);
    [dynamic.cds, dynamic.lds]
        .into_iter()
        .flatten()
        .map(|t| t.unwrap_or(FOREVER))
        .max()
        .unwrap_or(crate::config::DEFAULT_INITIAL_FETCH_TIMEOUT)
}

/// The node to present: the bootstrap's when it has an id (pilot-agent writes one), else one
/// built from the pod's environment as Istio's injector sets it.
pub fn node(bootstrap_node: Option<&Node>) -> Result<Node, NodeError> {
    match bootstrap_node {
        Some(n) if !n.id.is_empty() => {
            let mut n = n.clone();
            if n.user_agent_name.is_empty() {
                n.user_agent_name = "skiff".to_string();
            }
            Ok(n)
        }
        other => {
            let mut n = node_from_env(|k| std::env::var(k).ok())?;
            if let Some(b) = other
                && !b.cluster.is_empty()
            {
                n.cluster.clone_from(&b.cluster);
            }
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests;

/// The store behind the lock the ADS client and the warming timer share.
pub fn shared(store: Store) -> Shared {
    Shared(Arc::new(std::sync::Mutex::new(store)))
}
