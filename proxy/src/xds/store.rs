//! The configuration as the control plane sent it, and the snapshots built from it.
//!
//! The ADS client hands every response to [`Store::apply`] (through [`Shared`], the
//! [`xds_client::transport::Subscriber`]). Each resource is converted alone; one that fails is
//! rejected (NACKed with its errors) and the rest apply. Then the store:
//! 1. promotes warming resources that are ready, in Envoy's order: a cluster warms until its
//!    EDS endpoints arrive, a listener until the RDS route configurations it names arrive (or
//!    their `initial_fetch_timeout` passes); the previous version keeps serving meanwhile;
//! 2. builds a new [`Snapshot`] off the data path, reusing the run-time object of everything
//!    unchanged (so pooled connections and load counters survive), binds new listeners, swaps
//!    the snapshot in, then starts and stops listeners;
//! 3. refreshes what `/config_dump` shows.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use envoy_types::pb::google::protobuf::Any;
use xds_client::{Rejected, Update, type_url};

use crate::{
    admin::{AdminState, DumpEntry, DynamicDump},
    cluster::{self, Clusters},
    config::{self, Bootstrap, ConfigErrors, Discovery, xds},
    http::RouteTable,
    listener::{BindError, Listener, ListenerManager, Prepared},
    snapshot::{Live, Snapshot},
};

/// Run-time listeners by name, reused across snapshots while their config is unchanged.
type ListenersByName = HashMap<Arc<str>, Arc<Listener>>;

/// A resource the store holds, with what the config dump shows about it.
#[derive(Debug)]
struct Versioned<T> {
    value: T,
    version: String,
    last_updated: SystemTime,
    raw: Any,
}

/// A listener or cluster: the version serving now, and a newer one warming.
#[derive(Debug)]
struct Slot<T> {
    active: Option<Versioned<T>>,
    warming: Option<(Versioned<T>, Instant)>,
}

/// The control plane's configuration, the static one beside it, and what serves them.
#[derive(Debug)]
pub struct Store {
    static_listeners: Vec<Arc<config::Listener>>,
    static_clusters: Vec<Arc<config::Cluster>>,
    listeners: BTreeMap<String, Slot<Arc<config::Listener>>>,
    clusters: BTreeMap<String, Slot<Arc<config::Cluster>>>,
    routes: BTreeMap<String, Versioned<Arc<RouteTable>>>,
    endpoints: BTreeMap<String, Versioned<Arc<config::LoadAssignment>>>,
    /// Route configurations and endpoint sets the server says do not exist (delta): what waits
    /// for them stops waiting, as in Envoy (a listener then answers 404, a cluster has no host).
    absent_routes: BTreeSet<String>,
    absent_endpoints: BTreeSet<String>,
    /// The last version of each type accepted whole.
    versions: HashMap<&'static str, String>,
    /// Types answered at least once (readiness waits for LDS and CDS).
    answered: BTreeSet<&'static str>,
    lds: bool,
    cds: bool,
    /// Run-time objects of the last snapshot, by the configuration they were built from.
    built_listeners: HashMap<Arc<str>, Arc<Listener>>,
    built_clusters: HashMap<Arc<str>, Arc<cluster::Cluster>>,
    /// The endpoints each EDS cluster's hosts were last built from.
    applied_endpoints: HashMap<Arc<str>, Option<Arc<config::LoadAssignment>>>,
    manager: ListenerManager,
    live: Arc<Live>,
    admin: Arc<AdminState>,
    /// Secrets served in-process, never asked of the control plane.
    local_secrets: BTreeSet<String>,
    /// Secrets named with an SDS cluster nobody serves, reported once each.
    unserved_secrets: Mutex<BTreeSet<String>>,
    /// Streams to SDS servers of their own (Istio's `sds-grpc`), started as secrets name them.
    sds: Option<super::sds::SdsStreams>,
}

/// The store behind a lock, shared by the ADS client's task and the warming timer.
#[derive(Clone, Debug)]
pub struct Shared(pub Arc<Mutex<Store>>);

// === impl Store ===

impl Store {
    /// A store serving `bootstrap`'s static resources, ready for dynamic ones. `initial` is the
    /// snapshot of the static resources, whose clusters are already resolved: its run-time
    /// objects are used as they are.
    pub fn new(
        bootstrap: &Bootstrap,
        initial: &Snapshot,
        manager: ListenerManager,
        live: Arc<Live>,
        admin: Arc<AdminState>,
    ) -> Self {
        let dynamic = bootstrap.dynamic.as_ref();
        Self {
            static_listeners: bootstrap.listeners.clone(),
            static_clusters: bootstrap.clusters.clone(),
            listeners: BTreeMap::new(),
            clusters: BTreeMap::new(),
            routes: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            absent_routes: BTreeSet::new(),
            absent_endpoints: BTreeSet::new(),
            versions: HashMap::new(),
            answered: BTreeSet::new(),
            lds: dynamic.is_some_and(|d| d.lds.is_some()),
            cds: dynamic.is_some_and(|d| d.cds.is_some()),
            built_listeners: initial
                .listeners
                .iter()
                .map(|l| (l.config.name.clone(), l.clone()))
                .collect(),
            built_clusters: initial
                .clusters
                .iter()
                .map(|c| (c.config.name.clone(), c.clone()))
                .collect(),
            applied_endpoints: HashMap::new(),
            manager,
            live,
            admin,
            local_secrets: bootstrap
                .secrets
                .iter()
                .map(|s| s.name.to_string())
                .collect(),
            unserved_secrets: Mutex::new(BTreeSet::new()),
            sds: None,
        }
    }

    /// Where secrets named on an SDS cluster come from (when not served in-process).
    pub fn set_sds(&mut self, sds: super::sds::SdsStreams) {
        self.sds = Some(sds);
    }

    /// The SDS streams, to bind them to the shared store.
    pub fn sds_mut(&mut self) -> Option<&mut super::sds::SdsStreams> {
        self.sds.as_mut()
    }

    /// The names of the secrets the configuration takes from the SDS server behind `cluster`.
    pub fn secrets_from(&self, cluster: &str) -> BTreeSet<String> {
        self.all_listeners()
            .flat_map(|l| l.secrets())
            .chain(self.all_clusters().flat_map(|c| c.secrets()))
            .filter(|s| {
                matches!(&s.source, config::SecretSource::Cluster(c) if **c == *cluster)
                    && !self.local_secret(&s.name)
            })
            .map(|s| s.name.to_string())
            .collect()
    }

    /// Starts the SDS streams the configuration's secrets need.
    fn ensure_sds(&mut self) {
        let clusters: BTreeSet<Arc<str>> = self
            .all_listeners()
            .flat_map(|l| l.secrets())
            .chain(self.all_clusters().flat_map(|c| c.secrets()))
            .filter(|s| !self.local_secret(&s.name))
            .filter_map(|s| match &s.source {
                config::SecretSource::Cluster(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        if let Some(sds) = &mut self.sds {
            for c in clusters {
                sds.ensure(&c);
            }
        }
    }

    /// Marks secrets as served in-process (`--cert-dir`, the CA client).
    pub fn serve_locally(&mut self, names: impl IntoIterator<Item = String>) {
        self.local_secrets.extend(names);
    }

    /// Applies one response's changes for `type_url`; returns the resources refused.
    pub fn apply(&mut self, type_url: &str, update: &Update<'_>) -> Vec<Rejected> {
        let now = SystemTime::now();
        let mut rejected = Vec::new();
        let kind = match type_url {
            type_url::LISTENER => type_url::LISTENER,
            type_url::CLUSTER => type_url::CLUSTER,
            type_url::ROUTE => type_url::ROUTE,
            type_url::ENDPOINT => type_url::ENDPOINT,
            type_url::SECRET => return self.apply_secrets(update),
            other => {
                // The client only subscribes to the five types above.
                tracing::warn!(
                    type_url = other,
                    "xDS: response of a type Skiff does not use"
                );
                return update
                    .added
                    .iter()
                    .map(|r| Rejected::new(r.name, format!("Skiff does not use {other}")))
                    .collect();
            }
        };
        for name in &update.absent {
            match kind {
                type_url::ROUTE => {
                    self.absent_routes.insert((*name).to_string());
                }
                type_url::ENDPOINT => {
                    self.absent_endpoints.insert((*name).to_string());
                }
                _ => {}
            }
        }
        for r in &update.added {
            match kind {
                type_url::ROUTE => self.absent_routes.remove(r.name),
                type_url::ENDPOINT => self.absent_endpoints.remove(r.name),
                _ => false,
            };
        }
        for name in &update.removed {
            match kind {
                type_url::LISTENER => {
                    self.listeners.remove(*name);
                }
                type_url::CLUSTER => {
                    self.clusters.remove(*name);
                }
                type_url::ROUTE => {
                    self.routes.remove(*name);
                }
                _ => {
                    self.endpoints.remove(*name);
                }
            }
        }
        for r in &update.added {
            fn versioned<T>(
                value: T,
                r: &xds_client::Resource<'_>,
                now: SystemTime,
            ) -> Versioned<T> {
                Versioned {
                    value,
                    version: r.version.to_string(),
                    last_updated: now,
                    raw: r.any.clone(),
                }
            }
            let result = match kind {
                type_url::LISTENER => xds::listener(r.any)
                    .and_then(|l| self.check_listener(r.name, l))
                    .map(|l| {
                        let slot = self.listeners.entry(r.name.to_string()).or_insert(Slot {
                            active: None,
                            warming: None,
                        });
                        slot.warming = Some((versioned(Arc::new(l), r, now), Instant::now()));
                    }),
                type_url::CLUSTER => xds::cluster(r.any)
                    .and_then(|c| self.check_cluster(r.name, c))
                    .map(|c| {
                        let slot = self.clusters.entry(r.name.to_string()).or_insert(Slot {
                            active: None,
                            warming: None,
                        });
                        slot.warming = Some((versioned(Arc::new(c), r, now), Instant::now()));
                    }),
                type_url::ROUTE => xds::route_config(r.any).and_then(|rc| {
                    if *rc.name != *r.name {
                        return Err(name_mismatch(r.name, &rc.name));
                    }
                    let table = Arc::new(RouteTable::new(Arc::new(rc)));
                    self.routes
                        .insert(r.name.to_string(), versioned(table, r, now));
                    Ok(())
                }),
                _ => xds::load_assignment(r.any).map(|la| {
                    self.endpoints
                        .insert(r.name.to_string(), versioned(Arc::new(la), r, now));
                }),
            };
            if let Err(errors) = result {
                rejected.push(Rejected::new(r.name, one_line(&errors)));
            }
        }
        self.answered.insert(kind);
        if rejected.is_empty() {
            self.versions.insert(kind, update.version.to_string());
        }
        let unbindable = self.publish();
        if kind == type_url::LISTENER {
            rejected.extend(unbindable);
        } else {
            // Listeners that warmed with this update and could not bind: the LDS update that
            // brought them was ACKed already; say it loudly rather than NACK another type.
            for r in unbindable {
                tracing::error!(listener = %r.name, reason = %r.reason, "xDS: listener dropped");
            }
        }
        rejected
    }

    /// The names wanted now for RDS or EDS: what the listeners and clusters reference.
    pub fn wanted(&self, type_url: &str) -> BTreeSet<String> {
        match type_url {
            type_url::ROUTE => self
                .all_listeners()
                .flat_map(|l| l.rds().map(|(name, _)| name.to_string()))
                .collect(),
            type_url::ENDPOINT => self
                .all_clusters()
                .filter_map(|c| match &c.discovery {
                    Discovery::Eds { service_name, .. } => Some(service_name.to_string()),
                    _ => None,
                })
                .collect(),
            type_url::SECRET => self
                .all_listeners()
                .flat_map(|l| l.secrets())
                .chain(self.all_clusters().flat_map(|c| c.secrets()))
                .filter(|s| s.source == config::SecretSource::Ads && !self.local_secret(&s.name))
                .map(|s| s.name.to_string())
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether a secret is served in-process (static secrets, `--cert-dir`), so it is not
    /// asked of the control plane.
    fn local_secret(&self, name: &str) -> bool {
        self.local_secrets.contains(name)
    }

    /// SDS: each secret is converted alone and swapped into its slot; new handshakes use it at
    /// once. A removed secret empties its slot (handshakes needing it fail until it returns).
    pub(crate) fn apply_secrets(&mut self, update: &Update<'_>) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for name in &update.removed {
            if !self.local_secret(name) {
                crate::tls::secrets::slot(name).clear();
            }
        }
        for r in &update.added {
            let result = xds::secret(r.any).and_then(|(name, data)| {
                if name != r.name {
                    return Err(name_mismatch(r.name, &name));
                }
                crate::tls::secrets::slot(&name).set(&data).map_err(|e| {
                    ConfigErrors::from(config::ConfigError::new(
                        &config::Path::root(),
                        e.to_string(),
                    ))
                })
            });
            match result {
                Ok(()) => {
                    tracing::info!(secret = r.name, version = r.version, "xDS: secret updated")
                }
                Err(errors) => rejected.push(Rejected::new(r.name, one_line(&errors))),
            }
        }
        self.answered.insert(type_url::SECRET);
        if rejected.is_empty() {
            self.versions
                .insert(type_url::SECRET, update.version.to_string());
        }
        // Listeners and clusters waiting for these secrets may warm now.
        for r in self.publish() {
            tracing::error!(listener = %r.name, reason = %r.reason, "xDS: listener dropped");
        }
        rejected
    }

    /// Whether nothing of `type_url` is still awaited: every EDS cluster has its endpoints
    /// (or has given up waiting), every listener its routes.
    pub fn warmed(&self, type_url: &str) -> bool {
        match type_url {
            type_url::ENDPOINT | type_url::CLUSTER => {
                self.clusters.values().all(|s| s.warming.is_none())
            }
            type_url::ROUTE | type_url::LISTENER => {
                self.listeners.values().all(|s| s.warming.is_none())
            }
            _ => true,
        }
    }

    /// Stops every listener (shutdown): no new connections; open ones drain.
    pub fn stop_listeners(&mut self) {
        self.manager.stop_all();
    }

    /// Re-checks warming resources whose initial fetch timeout may have passed.
    pub fn tick(&mut self) {
        let warming = self.listeners.values().any(|s| s.warming.is_some())
            || self.clusters.values().any(|s| s.warming.is_some());
        if warming {
            let failed = self.publish();
            for r in failed {
                tracing::warn!(resource = %r.name, reason = %r.reason, "xDS: resource dropped");
            }
        }
    }

    /// Every listener configuration, static and dynamic (active and warming).
    fn all_listeners(&self) -> impl Iterator<Item = &Arc<config::Listener>> {
        self.static_listeners
            .iter()
            .chain(self.listeners.values().flat_map(|s| {
                s.active
                    .iter()
                    .map(|v| &v.value)
                    .chain(s.warming.iter().map(|(v, _)| &v.value))
            }))
    }

    /// Every cluster configuration, static and dynamic (active and warming).
    fn all_clusters(&self) -> impl Iterator<Item = &Arc<config::Cluster>> {
        self.static_clusters
            .iter()
            .chain(self.clusters.values().flat_map(|s| {
                s.active
                    .iter()
                    .map(|v| &v.value)
                    .chain(s.warming.iter().map(|(v, _)| &v.value))
            }))
    }

    /// What only the whole configuration can tell about a new listener.
    fn check_listener(
        &self,
        name: &str,
        l: config::Listener,
    ) -> Result<config::Listener, ConfigErrors> {
        if *l.name != *name {
            return Err(name_mismatch(name, &l.name));
        }
        if self.static_listeners.iter().any(|s| *s.name == *name) {
            return Err(root_error(format!(
                "a static listener named '{name}' exists; LDS cannot replace it"
            )));
        }
        if l.address.port() != 0 {
            let clash = self
                .all_listeners()
                .filter(|o| *o.name != *name && o.address.port() != 0)
                .find(|o| same_address(o.address, l.address));
            if let Some(o) = clash {
                return Err(root_error(format!(
                    "listener '{name}' has the same address {} as listener '{}'",
                    l.address, o.name
                )));
            }
        }
        Ok(l)
    }

    fn check_cluster(
        &self,
        name: &str,
        c: config::Cluster,
    ) -> Result<config::Cluster, ConfigErrors> {
        if *c.name != *name {
            return Err(name_mismatch(name, &c.name));
        }
        if self.static_clusters.iter().any(|s| *s.name == *name) {
            return Err(root_error(format!(
                "a static cluster named '{name}' exists; CDS cannot replace it"
            )));
        }
        Ok(c)
    }

    /// Publishes the static resources (and whatever dynamic ones are active): the first
    /// snapshot of a starting proxy. A listener that cannot be bound is fatal here.
    pub fn start(&mut self) -> Result<(), BindError> {
        self.ensure_sds();
        let clusters = self.build_clusters();
        let (listeners, built) = self.build_listeners();
        let (prepared, mut errors) = self.manager.prepare(&listeners);
        if !errors.is_empty() {
            return Err(errors.swap_remove(0));
        }
        self.install(listeners, built, clusters, prepared);
        Ok(())
    }

    /// Promotes what is ready, builds and publishes a snapshot, and refreshes the dump.
    /// Returns the listeners dropped because their sockets could not be bound.
    fn publish(&mut self) -> Vec<Rejected> {
        self.promote();
        self.prune();
        let clusters = self.build_clusters();
        let mut failed = Vec::new();
        loop {
            let (listeners, built) = self.build_listeners();
            let (prepared, errors) = self.manager.prepare(&listeners);
            if errors.is_empty() {
                self.install(listeners, built, clusters, prepared);
                break;
            }
            // A listener that cannot be bound is refused, as Envoy NACKs it; its previous
            // version is gone too, since its sockets were released for the new one.
            drop(prepared);
            let mut removed_any = false;
            for e in errors {
                tracing::warn!(listener = %e.name(), error = %e, "xDS: cannot bind listener");
                failed.push(Rejected::new(e.name(), e.to_string()));
                removed_any |= self.listeners.remove(e.name()).is_some();
            }
            if !removed_any {
                // Only static listeners failed (they were bound at start, so this means their
                // sockets were lost): keep serving what is bound.
                break;
            }
        }
        failed
    }

    /// The run-time clusters for the static and active dynamic configurations. Unchanged ones
    /// keep their object (hosts, pools, counters); changed ones keep the hosts that remain.
    fn build_clusters(&mut self) -> Arc<Clusters> {
        let mut built_clusters = HashMap::with_capacity(self.built_clusters.len());
        let mut applied = HashMap::with_capacity(self.applied_endpoints.len());
        let active: Vec<Arc<config::Cluster>> = self
            .static_clusters
            .iter()
            .cloned()
            .chain(
                self.clusters
                    .values()
                    .filter_map(|s| s.active.as_ref().map(|v| v.value.clone())),
            )
            .collect();
        for c in active {
            let previous = self.built_clusters.get(&c.name);
            let built = match previous {
                Some(p) if Arc::ptr_eq(&p.config, &c) => p.clone(),
                _ => {
                    let fresh = Arc::new(cluster::Cluster::new(c.clone()));
                    if let Some(p) = previous {
                        // Same name, new settings: the hosts that remain keep their pools.
                        fresh.adopt_hosts(p);
                        if matches!(c.discovery, Discovery::Static) {
                            fresh
                                .update_hosts(cluster::host_entries(&c, &c.localities).into_iter());
                        }
                    }
                    cluster::start_dns(&fresh);
                    fresh
                }
            };
            if let Discovery::Eds { service_name, .. } = &built.config.discovery {
                let assignment = self.endpoints.get(&**service_name).map(|v| v.value.clone());
                let same = match (self.applied_endpoints.get(&c.name), &assignment) {
                    (Some(Some(old)), Some(new)) => Arc::ptr_eq(old, new),
                    (Some(None), None) => true,
                    _ => false,
                };
                let rebuilt = !previous.is_some_and(|p| Arc::ptr_eq(p, &built));
                if !same || rebuilt {
                    // In place: the snapshot in force sees the new hosts at once.
                    let entries = assignment
                        .as_deref()
                        .map(|la| cluster::host_entries(&c, &la.localities))
                        .unwrap_or_default();
                    built.update_hosts(entries.into_iter());
                }
                applied.insert(c.name.clone(), assignment);
            }
            built_clusters.insert(c.name.clone(), built);
        }
        self.built_clusters = built_clusters;
        self.applied_endpoints = applied;
        Arc::new(Clusters::from_clusters(
            self.built_clusters.values().cloned(),
        ))
    }

    /// The run-time listeners for the static and active dynamic configurations, in that order.
    fn build_listeners(&self) -> (Vec<Arc<Listener>>, ListenersByName) {
        let mut built = HashMap::new();
        let mut listeners = Vec::new();
        let active = self.static_listeners.iter().cloned().chain(
            self.listeners
                .values()
                .filter_map(|s| s.active.as_ref().map(|v| v.value.clone())),
        );
        for l in active {
            let listener = match self.built_listeners.get(&l.name) {
                Some(b) if Arc::ptr_eq(&b.config, &l) => b.clone(),
                _ => Arc::new(Listener::new(l.clone())),
            };
            built.insert(l.name.clone(), listener.clone());
            listeners.push(listener);
        }
        (listeners, built)
    }

    /// Swaps the snapshot in, then starts and stops listeners, then refreshes the dump.
    fn install(
        &mut self,
        listeners: Vec<Arc<Listener>>,
        built: HashMap<Arc<str>, Arc<Listener>>,
        clusters: Arc<Clusters>,
        prepared: Prepared,
    ) {
        let routes: HashMap<Arc<str>, Arc<RouteTable>> = self
            .routes
            .iter()
            .map(|(name, v)| (Arc::from(name.as_str()), v.value.clone()))
            .collect();
        let snapshot = Snapshot::build(listeners, clusters, Arc::new(routes));
        self.live.store(Arc::new(snapshot));
        self.manager.commit(prepared);
        self.built_listeners = built;
        self.refresh_admin();
    }

    /// Moves warming resources to active once what they wait for is there, or their wait is
    /// over: clusters first (they wait for endpoints), then listeners (they wait for routes).
    fn promote(&mut self) {
        self.ensure_sds();
        let now = Instant::now();
        // What still waits for its secrets (computed first: the loops below borrow mutably).
        let blocked_clusters = self.waiting_for_secrets(&self.clusters, now);
        let blocked_listeners = self.waiting_for_secrets(&self.listeners, now);
        for (name, slot) in &mut self.clusters {
            let Some((v, since)) = &slot.warming else {
                continue;
            };
            if blocked_clusters.contains(name) {
                continue;
            }
            let ready = match &v.value.discovery {
                Discovery::Eds {
                    service_name,
                    initial_fetch_timeout,
                } => {
                    self.endpoints.contains_key(&**service_name)
                        || self.absent_endpoints.contains(&**service_name)
                        || initial_fetch_timeout.is_some_and(|t| now.duration_since(*since) >= t)
                }
                _ => true,
            };
            if ready {
                tracing::debug!(cluster = %name, "cluster warmed");
                slot.active = slot.warming.take().map(|(v, _)| v);
            }
        }
        for (name, slot) in &mut self.listeners {
            let Some((v, since)) = &slot.warming else {
                continue;
            };
            if blocked_listeners.contains(name) {
                continue;
            }
            let ready = v.value.rds().all(|(route, timeout)| {
                self.routes.contains_key(&**route)
                    || self.absent_routes.contains(&**route)
                    || timeout.is_some_and(|t| now.duration_since(*since) >= t)
            });
            if ready {
                tracing::debug!(listener = %name, "listener warmed");
                slot.active = slot.warming.take().map(|(v, _)| v);
            }
        }
    }

    /// The warming resources of `slots` still waiting for a secret (for at most the default
    /// initial fetch timeout).
    fn waiting_for_secrets<T: NamesSecrets>(
        &self,
        slots: &BTreeMap<String, Slot<Arc<T>>>,
        now: Instant,
    ) -> BTreeSet<String> {
        slots
            .iter()
            .filter(|(_, s)| {
                s.warming.as_ref().is_some_and(|(v, since)| {
                    now.duration_since(*since) < config::DEFAULT_INITIAL_FETCH_TIMEOUT
                        && !v.value.secret_refs().all(|r| self.secret_ready(r))
                })
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether a secret a warming resource names is there to use, as Envoy warms listeners and
    /// clusters until their SDS secrets arrive (for at most the default initial fetch timeout).
    /// A secret served by nobody (an SDS cluster without an in-process provider) is not waited
    /// for: handshakes needing it fail and are counted (`ssl.no_certificate`).
    fn secret_ready(&self, r: &config::SecretRef) -> bool {
        if crate::tls::secrets::slot(&r.name).loaded().is_some() || self.local_secret(&r.name) {
            return true;
        }
        match &r.source {
            config::SecretSource::Ads => false,
            config::SecretSource::Static => true,
            config::SecretSource::Cluster(cluster)
                if self.sds.as_ref().is_some_and(|s| s.started(cluster)) =>
            {
                false
            }
            config::SecretSource::Cluster(cluster) => {
                let mut warned = self.unserved_secrets.lock().expect("never poisoned");
                if warned.insert(r.name.to_string()) {
                    tracing::error!(
                        secret = %r.name,
                        %cluster,
                        "no provider for this secret: no gRPC cluster of that name in the \
                         bootstrap, and no in-process provider (--cert-dir, --ca-address); TLS \
                         needing it fails"
                    );
                }
                true
            }
        }
    }

    /// Forgets routes and endpoints nothing references any more.
    fn prune(&mut self) {
        let routes = self.wanted(type_url::ROUTE);
        self.routes.retain(|name, _| routes.contains(name));
        let endpoints = self.wanted(type_url::ENDPOINT);
        self.endpoints.retain(|name, _| endpoints.contains(name));
        self.absent_routes.retain(|name| routes.contains(name));
        self.absent_endpoints
            .retain(|name| endpoints.contains(name));
    }

    fn refresh_admin(&self) {
        fn entry_of<T>(v: &Versioned<T>) -> DumpEntry {
            DumpEntry {
                version: v.version.clone(),
                last_updated: v.last_updated,
                resource: v.raw.clone(),
            }
        }
        let dump = DynamicDump {
            listeners: self
                .listeners
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        s.active.as_ref().map(entry_of),
                        s.warming.as_ref().map(|(v, _)| entry_of(v)),
                    )
                })
                .collect(),
            clusters_active: self
                .clusters
                .values()
                .filter_map(|s| s.active.as_ref().map(entry_of))
                .collect(),
            clusters_warming: self
                .clusters
                .values()
                .filter_map(|s| s.warming.as_ref().map(|(v, _)| entry_of(v)))
                .collect(),
            routes: self.routes.values().map(entry_of).collect(),
            endpoints: self.endpoints.values().map(entry_of).collect(),
            lds_version: self
                .versions
                .get(type_url::LISTENER)
                .cloned()
                .unwrap_or_default(),
            cds_version: self
                .versions
                .get(type_url::CLUSTER)
                .cloned()
                .unwrap_or_default(),
        };
        self.admin.set_dynamic(dump, self.manager.addresses());
        let ready = (!self.lds || self.answered.contains(type_url::LISTENER))
            && (!self.cds || self.answered.contains(type_url::CLUSTER))
            && self.warmed(type_url::CLUSTER)
            && self.warmed(type_url::LISTENER);
        if ready && !self.admin.live.swap(true, Ordering::AcqRel) {
            tracing::info!(
                listeners = self.built_listeners.len(),
                clusters = self.built_clusters.len(),
                "initial configuration from the control plane applied"
            );
        }
    }
}

// === impl Shared ===

impl xds_client::Handler for Shared {
    fn apply(&mut self, type_url: &str, update: Update<'_>) -> Vec<Rejected> {
        let mut store = self.0.lock().expect("the xDS store lock is never poisoned");
        store.apply(type_url, &update)
    }
}

impl xds_client::transport::Subscriber for Shared {
    fn wanted(&self, type_url: &str) -> BTreeSet<String> {
        self.0
            .lock()
            .expect("the xDS store lock is never poisoned")
            .wanted(type_url)
    }

    fn warmed(&self, type_url: &str) -> bool {
        self.0
            .lock()
            .expect("the xDS store lock is never poisoned")
            .warmed(type_url)
    }

    fn on_connection(&mut self, connected: bool) {
        let store = self.0.lock().expect("the xDS store lock is never poisoned");
        store
            .admin
            .xds_connected
            .store(connected, Ordering::Release);
    }
}

/// Two listener addresses that would take the same port: equal, or both wildcards of a port.
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a == b
}

fn name_mismatch(expected: &str, actual: &str) -> ConfigErrors {
    root_error(format!(
        "the resource is named '{expected}' but its name field says '{actual}'"
    ))
}

fn root_error(problem: String) -> ConfigErrors {
    config::ConfigError::new(&config::Path::root(), problem).into()
}

/// Every error of a resource on one line, for the NACK's `error_detail`.
fn one_line(errors: &ConfigErrors) -> String {
    errors
        .0
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Wakes the store while something warms, so an `initial_fetch_timeout` takes effect without
/// waiting for the next response.
pub async fn warming_timer(shared: Shared) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        shared
            .0
            .lock()
            .expect("the xDS store lock is never poisoned")
            .tick();
    }
}

/// Listeners and clusters name secrets alike.
trait NamesSecrets {
    fn secret_refs(&self) -> Box<dyn Iterator<Item = &config::SecretRef> + '_>;
}

impl NamesSecrets for config::Listener {
    fn secret_refs(&self) -> Box<dyn Iterator<Item = &config::SecretRef> + '_> {
        Box::new(self.secrets())
    }
}

impl NamesSecrets for config::Cluster {
    fn secret_refs(&self) -> Box<dyn Iterator<Item = &config::SecretRef> + '_> {
        Box::new(self.secrets())
    }
}
