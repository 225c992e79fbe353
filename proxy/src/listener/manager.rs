//! Which listeners have sockets: binds the new ones, keeps the unchanged ones, and stops (then
//! drains) the removed ones, as the configuration changes.
//!
//! A change is applied in three steps so no connection finds an unknown listener:
//! 1. [`ListenerManager::prepare`] binds the sockets of new listeners (a bind error is the
//!    listener's, and rejects it, as Envoy NACKs a listener it cannot bind);
//! 2. the caller publishes the snapshot that holds them;
//! 3. [`ListenerManager::commit`] starts accepting on the new sockets and stops the listeners
//!    that are gone. A stopped listener closes its sockets at once; its open connections drain
//!    (HTTP ones are shut down gracefully) and are closed after the drain time.
//!
//! A listener whose socket options change (address, `transparent`, `freebind`, `reuse_port`,
//! backlog, dual stack) is stopped and bound again. One whose filter chains change keeps its
//! sockets: every accept reads the listener from the current snapshot.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{ActiveConns, BindError, Bound, Listener, Serving};
use crate::{config, snapshot::Live};

/// The bound listeners of a running proxy.
#[derive(Debug)]
pub struct ListenerManager {
    workers: usize,
    live: Arc<Live>,
    active: Arc<ActiveConns>,
    drain_time: Duration,
    running: HashMap<Arc<str>, Running>,
}

/// Sockets bound by [`ListenerManager::prepare`], not yet accepting.
#[derive(Debug, Default)]
#[must_use = "prepared sockets accept nothing until committed"]
pub struct Prepared {
    bound: Vec<(BindKey, Bound)>,
    /// Listeners whose old sockets must stop (removed, or bound again with other options).
    stop: Vec<Arc<str>>,
}

#[derive(Debug)]
struct Running {
    key: BindKey,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

/// What a listener's sockets depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BindKey {
    address: SocketAddr,
    ipv4_compat: bool,
    transparent: bool,
    freebind: bool,
    reuse_port: bool,
    backlog: Option<u32>,
}

// === impl ListenerManager ===

impl ListenerManager {
    /// A manager with nothing bound. Connections are served from `live`, counted in `active`,
    /// and closed `drain_time` after their listener stops.
    pub fn new(
        workers: usize,
        live: Arc<Live>,
        active: Arc<ActiveConns>,
        drain_time: Duration,
    ) -> Self {
        Self {
            workers,
            live,
            active,
            drain_time,
            running: HashMap::new(),
        }
    }

    /// Binds the sockets `listeners` need that are not bound yet, and notes which running
    /// listeners are not among them. Listeners with `bind_to_port: false` have no sockets.
    ///
    /// Returns the listeners that could not be bound, by name, with the others prepared: the
    /// caller leaves the failed ones out of the snapshot it publishes.
    pub fn prepare<'a>(
        &mut self,
        listeners: impl IntoIterator<Item = &'a Arc<Listener>>,
    ) -> (Prepared, Vec<BindError>) {
        let mut prepared = Prepared::default();
        let mut failed = Vec::new();
        let mut wanted: HashMap<Arc<str>, ()> = HashMap::new();
        for l in listeners {
            let c = &l.config;
            if !c.bind_to_port {
                continue;
            }
            wanted.insert(c.name.clone(), ());
            let key = BindKey::of(c);
            match self.running.get(&c.name) {
                Some(r) if r.key == key => continue,
                Some(r) => {
                    // Other socket options: the old sockets go first, so the new ones can take
                    // the same address.
                    let _ = r.stop.send(true);
                    self.running.remove(&c.name);
                }
                None => {}
            }
            match l.bind(self.workers) {
                Ok(bound) => prepared.bound.push((key, bound)),
                Err(e) => failed.push(e),
            }
        }
        prepared.stop = self
            .running
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect();
        (prepared, failed)
    }

    /// Starts accepting on the prepared sockets and stops the listeners that are gone. Call it
    /// once the snapshot holding the prepared listeners is published.
    pub fn commit(&mut self, prepared: Prepared) {
        for name in prepared.stop {
            if let Some(r) = self.running.remove(&name) {
                tracing::info!(listener = %name, address = %r.local_addr, "listener removed; draining its connections");
                let _ = r.stop.send(true);
            }
        }
        for (key, bound) in prepared.bound {
            let name = bound.listener.config.name.clone();
            let local_addr = bound.local_addr;
            let (stop, drain) = watch::channel(false);
            let serving = Serving {
                live: self.live.clone(),
                active: self.active.clone(),
                drain,
                drain_time: self.drain_time,
            };
            bound.start(&serving);
            tracing::info!(listener = %name, address = %local_addr, "listener accepting");
            self.running.insert(
                name,
                Running {
                    key,
                    local_addr,
                    stop,
                },
            );
        }
    }

    /// Stops every listener: no new connections; open ones drain.
    pub fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            let _ = r.stop.send(true);
        }
    }

    /// The bound listeners and their addresses, by name.
    pub fn addresses(&self) -> Vec<(Arc<str>, SocketAddr)> {
        let mut out: Vec<_> = self
            .running
            .iter()
            .map(|(name, r)| (name.clone(), r.local_addr))
            .collect();
        out.sort();
        out
    }
}

// === impl BindKey ===

impl BindKey {
    fn of(c: &config::Listener) -> Self {
        Self {
            address: c.address,
            ipv4_compat: c.ipv4_compat,
            transparent: c.transparent,
            freebind: c.freebind,
            reuse_port: c.reuse_port,
            backlog: c.backlog,
        }
    }
}
