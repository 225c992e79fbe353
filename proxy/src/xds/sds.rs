//! Secrets from an SDS server of their own (`sds_config` with a GRPC `api_config_source`
//! naming a static cluster, Istio's `sds-grpc`: pilot-agent's Unix socket), on SDS's
//! `StreamSecrets`. One stream per cluster, started the first time a listener or cluster
//! names a secret on it, asking for exactly the names the configuration holds.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, OnceLock},
    time::Duration,
};

use envoy_types::pb::envoy::config::core::v3::Node;
use xds_client::{
    Rejected, Update, Watch,
    transport::{self, AdsConfig, AdsHandle, Backoff, Protocol, Target, TlsConfig},
    type_url,
};

use super::Shared;
use crate::config::{AdsTarget, GrpcCluster};

/// The SDS streams of a proxy: the clusters that can carry one, and those started.
#[derive(Debug)]
pub struct SdsStreams {
    services: HashMap<Arc<str>, GrpcCluster>,
    node: Node,
    /// The store, set once it is shared. Streams start only then: their first request asks
    /// the store for the names.
    store: Arc<OnceLock<Shared>>,
    started: HashMap<Arc<str>, AdsHandle>,
    /// Clusters asked for before the store was shared.
    pending: BTreeSet<Arc<str>>,
}

/// The subscriber of one SDS stream: secrets go to the store, names come from it.
struct Subscriber {
    store: Arc<OnceLock<Shared>>,
    cluster: Arc<str>,
}

// === impl SdsStreams ===

impl SdsStreams {
    /// SDS streams over `services`, identifying as `node`.
    pub fn new(services: HashMap<Arc<str>, GrpcCluster>, node: Node) -> Self {
        Self {
            services,
            node,
            store: Arc::new(OnceLock::new()),
            started: HashMap::new(),
            pending: BTreeSet::new(),
        }
    }

    /// Where the streams deliver; called once the store is shared. Starts the streams asked
    /// for before.
    pub fn bind(&mut self, store: Shared) {
        let _ = self.store.set(store);
        for cluster in std::mem::take(&mut self.pending) {
            self.ensure(&cluster);
        }
    }

    /// Makes sure a stream to `cluster` runs. `false` when there is no such gRPC cluster, or
    /// the stream cannot start: nobody will deliver its secrets.
    pub fn ensure(&mut self, cluster: &str) -> bool {
        if self.started.contains_key(cluster) {
            return true;
        }
        let Some((name, service)) = self.services.get_key_value(cluster) else {
            return false;
        };
        if self.store.get().is_none() {
            self.pending.insert(name.clone());
            return true;
        }
        let config = AdsConfig {
            target: match &service.target {
                AdsTarget::Tcp(a) => Target::Tcp(a.clone()),
                AdsTarget::Unix(p) => Target::Unix(p.clone()),
            },
            tls: service.tls.as_ref().map(|t| TlsConfig {
                ca_file: t.ca_file.clone(),
                server_name: t.server_name.clone(),
            }),
            token_file: None,
            metadata: Vec::new(),
            protocol: Protocol::Secrets,
            backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            connect_timeout: service.connect_timeout,
            initial_fetch_timeout: crate::config::DEFAULT_INITIAL_FETCH_TIMEOUT,
        };
        let subscriber = Subscriber {
            store: self.store.clone(),
            cluster: name.clone(),
        };
        let watches = vec![Watch::named(type_url::SECRET, [] as [&str; 0])];
        match transport::spawn(config, self.node.clone(), watches, subscriber) {
            Ok(handle) => {
                tracing::info!(cluster = %name, target = ?service.target, "SDS: streaming secrets");
                self.started.insert(name.clone(), handle);
                true
            }
            Err(e) => {
                tracing::error!(cluster = %name, error = %e, "SDS: cannot start the stream");
                false
            }
        }
    }

    /// Whether a stream to `cluster` was started (or will be, once the store is shared).
    pub fn started(&self, cluster: &str) -> bool {
        self.started.contains_key(cluster) || self.pending.contains(cluster)
    }

    /// Whether a stream to `cluster` is up now.
    pub fn connected(&self, cluster: &str) -> bool {
        self.started.get(cluster).is_some_and(AdsHandle::connected)
    }
}

// === impl Subscriber ===

impl xds_client::Handler for Subscriber {
    fn apply(&mut self, type_url: &str, update: Update<'_>) -> Vec<Rejected> {
        let Some(store) = self.store.get() else {
            return Vec::new();
        };
        if type_url != type_url::SECRET {
            return update
                .added
                .iter()
                .map(|r| {
                    Rejected::new(
                        r.name,
                        format!("an SDS stream carries secrets, not {type_url}"),
                    )
                })
                .collect();
        }
        store
            .0
            .lock()
            .expect("the xDS store lock is never poisoned")
            .apply_secrets(&update)
    }
}

impl transport::Subscriber for Subscriber {
    fn wanted(&self, type_url: &str) -> BTreeSet<String> {
        match (type_url, self.store.get()) {
            (type_url::SECRET, Some(store)) => store
                .0
                .lock()
                .expect("the xDS store lock is never poisoned")
                .secrets_from(&self.cluster),
            _ => BTreeSet::new(),
        }
    }
}
