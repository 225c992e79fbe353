//! Listeners at run time: bind, accept, restore the original destination, hand off, inspect,
//! choose a filter chain, and run it.
//!
//! Hot path: `serve` runs once per accepted connection. It reads only the immutable snapshot,
//! logs at debug level only, and never blocks.

pub mod chain_match;
pub mod http_sniff;
pub mod inspect;
mod manager;
pub mod orig_dst;
pub mod tls_hello;

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    time::Instant,
};

use self::{
    chain_match::{ChainId, ChainIndex, ConnFacts},
    inspect::{End, Plan, TlsPlan},
};
use crate::{
    addr::{ClientAddr, OrigDst},
    config::{self, ChainAction, FilterChain, ListenerFilterKind},
    conn::Conn,
    flags::ResponseFlag,
    http::{ConnInfo, HttpManager},
    snapshot::{Live, Snapshot},
};

pub use self::manager::{ListenerManager, Prepared};

/// A listener ready to serve: its configuration, its filter-chain index, and the HTTP
/// connection managers of its chains.
#[derive(Debug)]
pub struct Listener {
    /// Its configuration.
    pub config: Arc<config::Listener>,
    chains: ChainIndex,
    /// Chain positions by name, for a `filter_chain_matcher`.
    by_name: HashMap<Arc<str>, usize>,
    /// The HTTP manager of each chain that has one: `filter_chains` in order, then the default.
    http: Vec<Option<Arc<HttpManager>>>,
    /// The TLS acceptor of each chain that terminates TLS, in the same order. A chain whose
    /// TLS settings could not be built holds `Err` and closes every connection.
    tls: Vec<Option<Result<Arc<crate::tls::Acceptor>, ()>>>,
}

/// A chain chosen for a connection, with what it runs.
#[derive(Debug)]
pub struct Selected<'a> {
    /// The chain.
    pub chain: &'a FilterChain,
    /// Its HTTP connection manager, if it has one.
    pub http: Option<&'a Arc<HttpManager>>,
    /// Its TLS termination: `Some(Err)` when unusable.
    pub tls: Option<Result<&'a Arc<crate::tls::Acceptor>, ()>>,
}

/// Sockets bound for one listener (several with `SO_REUSEPORT`).
#[derive(Debug)]
pub struct Bound {
    /// The listener.
    pub listener: Arc<Listener>,
    /// The address actually bound (the real port when the configuration said 0).
    pub local_addr: SocketAddr,
    sockets: Vec<TcpListener>,
}

/// Connections closed because no filter chain matched them (Envoy's `no_filter_chain_match`),
/// such as plaintext on a STRICT mTLS port.
pub static NO_FILTER_CHAIN_MATCH: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Counts the connections being served, so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct ActiveConns {
    count: AtomicUsize,
    idle: Notify,
}

/// Keeps [`ActiveConns`] up while a connection is served.
#[derive(Debug)]
struct ConnGuard(Arc<ActiveConns>);

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind listener '{name}' to {address}: {source}")]
pub struct BindError {
    name: Arc<str>,
    address: SocketAddr,
    #[source]
    source: io::Error,
}

// === impl BindError ===

impl BindError {
    /// The listener that could not be bound.
    pub fn name(&self) -> &str {
        &self.name
    }
}

// === impl Listener ===

impl Listener {
    /// Prepares a listener for serving.
    pub fn new(config: Arc<config::Listener>) -> Self {
        let chains = ChainIndex::new(&config.filter_chains);
        let http = config
            .filter_chains
            .iter()
            .chain(&config.default_filter_chain)
            .map(|c| match &c.action {
                ChainAction::Http(h) => Some(Arc::new(HttpManager::new(h.clone()))),
                ChainAction::TcpProxy(_) | ChainAction::Close => None,
            })
            .collect();
        let by_name = config
            .filter_chains
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let tls = config
            .filter_chains
            .iter()
            .chain(&config.default_filter_chain)
            .map(|c| {
                let t = c.tls.as_ref()?;
                Some(crate::tls::Acceptor::new(t).map(Arc::new).map_err(|e| {
                    tracing::error!(listener = %config.name, chain = %c.name, error = %e, "TLS settings unusable; the chain closes its connections");
                }))
            })
            .collect();
        Self {
            config,
            chains,
            by_name,
            http,
            tls,
        }
    }

    /// The filter chain for a connection, by Envoy's matching rules, with its HTTP manager and
    /// TLS termination.
    pub fn select(&self, facts: &ConnFacts<'_>) -> Option<Selected<'_>> {
        let id = match &self.config.filter_chain_matcher {
            Some(matcher) => match matcher.select(facts) {
                Some(name) => ChainId::Index(*self.by_name.get(name)?),
                None if self.config.default_filter_chain.is_some() => ChainId::Default,
                None => return None,
            },
            None => chain_match::select_id(
                &self.config.filter_chains,
                &self.chains,
                self.config.default_filter_chain.is_some(),
                facts,
            )?,
        };
        let (chain, slot) = match id {
            ChainId::Index(i) => (self.config.filter_chains.get(i)?, i),
            ChainId::Default => (
                self.config.default_filter_chain.as_ref()?,
                self.config.filter_chains.len(),
            ),
        };
        Some(Selected {
            chain,
            http: self.http.get(slot).and_then(Option::as_ref),
            tls: self
                .tls
                .get(slot)
                .and_then(Option::as_ref)
                .map(|r| r.as_ref().map_err(|_| ())),
        })
    }

    /// Binds the listener's socket(s): one per worker with `SO_REUSEPORT`, else one.
    pub fn bind(self: &Arc<Self>, workers: usize) -> Result<Bound, BindError> {
        let c = &self.config;
        let err = |source| BindError {
            name: c.name.clone(),
            address: c.address,
            source,
        };
        let count = if c.reuse_port { workers.max(1) } else { 1 };
        let first = bind_socket(c, c.address).map_err(err)?;
        let local_addr = first.local_addr().map_err(err)?;
        let mut sockets = vec![first];
        for _ in 1..count {
            // Port 0 asks the kernel for a port: the other sockets must share the one it gave.
            sockets.push(bind_socket(c, local_addr).map_err(err)?);
        }
        Ok(Bound {
            listener: self.clone(),
            local_addr,
            sockets,
        })
    }
}

fn bind_socket(c: &config::Listener, addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if c.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(!c.ipv4_compat)?;
    }
    if c.transparent {
        if addr.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
    }
    if c.freebind {
        if addr.is_ipv4() {
            socket.set_freebind_v4(true)?;
        } else {
            socket.set_freebind_v6(true)?;
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Without a configured backlog, ask for the most: the kernel caps it at net.core.somaxconn.
    let backlog = c
        .backlog
        .map_or(i32::MAX, |b| i32::try_from(b).unwrap_or(i32::MAX));
    socket.listen(backlog)?;
    TcpListener::from_std(socket.into())
}

/// What every connection of a bound listener shares: where the configuration is, the count of
/// open connections, and the listener's drain signal.
#[derive(Clone, Debug)]
pub(crate) struct Serving {
    pub(crate) live: Arc<Live>,
    pub(crate) active: Arc<ActiveConns>,
    /// Turns true when the listener stops: accepting ends, and open connections drain (HTTP
    /// ones are shut down gracefully) and are closed after `drain_time`.
    pub(crate) drain: watch::Receiver<bool>,
    pub(crate) drain_time: Duration,
}

// === impl Bound ===

impl Bound {
    /// Starts accepting on every socket. Each accepted connection is served on its own task
    /// by the listener of this name in the snapshot current at that moment.
    pub(crate) fn start(self, serving: &Serving) {
        let name = self.listener.config.name.clone();
        for socket in self.sockets {
            tokio::spawn(accept_loop(socket, name.clone(), serving.clone()));
        }
    }
}

async fn accept_loop(socket: TcpListener, name: Arc<str>, serving: Serving) {
    let mut stop = serving.drain.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            () = drained(&mut stop) => break,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let snapshot = serving.live.load();
                let Some(listener) = snapshot.listener(&name).cloned() else {
                    // Removed a moment ago; this socket is about to close.
                    tracing::debug!(listener = %name, client = %peer, "listener gone; closing");
                    continue;
                };
                let guard = ConnGuard::new(serving.active.clone());
                let serving = serving.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let mut drain = serving.drain.clone();
                    let drain_time = serving.drain_time;
                    tokio::select! {
                        () = serve(stream, ClientAddr(peer), listener, snapshot, serving) => {}
                        () = async { drained(&mut drain).await; tokio::time::sleep(drain_time).await } => {
                            tracing::debug!(listener = %name, client = %peer, "drain time over; closing");
                        }
                    }
                    drop(guard);
                });
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning on accept.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(listener = %name, "stopped accepting");
}

/// Returns once `drain` is true; never if its sender is gone without setting it.
pub(crate) async fn drained(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves one connection accepted by `receiving`.
async fn serve(
    stream: TcpStream,
    client: ClientAddr,
    receiving: Arc<Listener>,
    snapshot: Arc<Snapshot>,
    serving: Serving,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut listener = &receiving;
    let mut destination = local;
    let mut restored = false;
    let mut handed_off = false;
    let mut plan = Plan::default();
    loop {
        for lf in &listener.config.listener_filters {
            if lf
                .disabled
                .as_ref()
                .is_some_and(|p| p.matches(destination.port()))
            {
                continue;
            }
            match &lf.kind {
                ListenerFilterKind::OriginalDst => match orig_dst::original_dst(&stream) {
                    Ok(OrigDst(d)) => {
                        destination = d;
                        restored = true;
                    }
                    Err(e) => {
                        tracing::debug!(%client, error = %e, "original destination unavailable")
                    }
                },
                ListenerFilterKind::TlsInspector {
                    max_client_hello,
                    close_on_parse_error,
                } => {
                    plan.tls = Some(TlsPlan {
                        max_client_hello: *max_client_hello,
                        close_on_parse_error: *close_on_parse_error,
                    });
                }
                ListenerFilterKind::HttpInspector => plan.http = true,
            }
        }
        // Envoy's virtualOutbound handoff: once, to the listener for the restored destination.
        if !handed_off
            && restored
            && listener.config.use_original_dst
            && let Some(target) = snapshot.handoff_target(destination)
            && !Arc::ptr_eq(target, listener)
        {
            tracing::debug!(%client, %destination, from = %listener.config.name, to = %target.config.name, "handoff");
            listener = target;
            handed_off = true;
            continue;
        }
        break;
    }

    let deadline = Instant::now() + listener.config.listener_filters_timeout;
    let (detected, end) = inspect::inspect(&stream, plan, deadline).await;
    match end {
        End::Complete | End::PeerClosed => {}
        End::TimedOut if listener.config.continue_on_listener_filters_timeout => {
            tracing::debug!(%client, listener = %listener.config.name, "listener filters timed out; continuing");
        }
        End::TimedOut => {
            tracing::debug!(%client, listener = %listener.config.name, "listener filters timed out; closing");
            return;
        }
        End::Reject(why) => {
            tracing::debug!(%client, listener = %listener.config.name, reason = why, "closing");
            return;
        }
        End::Io(e) => {
            tracing::debug!(%client, error = %e, "socket error during inspection");
            return;
        }
    }

    let facts = ConnFacts {
        destination,
        source: client.0,
        direct_source: client.0,
        server_name: detected.server_name.as_deref(),
        transport_protocol: if detected.tls { "tls" } else { "raw_buffer" },
        application_protocols: &detected.application_protocols,
    };
    let Some(Selected { chain, http, tls }) = listener.select(&facts) else {
        NO_FILTER_CHAIN_MATCH.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%client, %destination, listener = %listener.config.name, flag = %ResponseFlag::NoRouteFound, "no filter chain matched; closing");
        return;
    };
    if let Some(why) = chain.refusal {
        crate::refusals::count(why);
        tracing::debug!(%client, %destination, chain = %chain.name, reason = why.describe(), "filter chain refuses connections; closing");
        return;
    }
    if matches!(chain.action, ChainAction::Close) {
        tracing::debug!(%client, chain = %chain.name, "filter chain has no network filters; closing");
        return;
    }
    let (stream, peer) = match tls {
        None => (Conn::Plain(stream), None),
        Some(Err(())) => return,
        Some(Ok(acceptor)) => match acceptor.accept(stream, client.0).await {
            Some((s, peer)) => (Conn::TlsServer(Box::new(s)), Some(Arc::new(peer))),
            None => return,
        },
    };
    match &chain.action {
        ChainAction::Close => {}
        ChainAction::Http(_) => {
            let Some(mgr) = http else {
                return;
            };
            let conn = ConnInfo {
                client: client.0,
                destination,
                restored,
                tls: peer,
            };
            crate::http::serve(stream, conn, mgr.clone(), serving.live, serving.drain).await;
        }
        ChainAction::TcpProxy(tp) => {
            let orig_dst = restored.then_some(OrigDst(destination));
            let outcome = crate::tcp::proxy(stream, client, orig_dst, tp, &snapshot).await;
            tracing::debug!(
                %client,
                %destination,
                listener = %listener.config.name,
                chain = %chain.name,
                cluster = ?outcome.cluster,
                upstream = ?outcome.upstream,
                sent = outcome.transferred.sent_upstream,
                received = outcome.transferred.sent_downstream,
                flag = ?outcome.flag.map(ResponseFlag::short),
                peer = ?peer.as_ref().and_then(|p| p.spiffe_id.as_deref()),
                "tcp connection done"
            );
        }
    }
}

// === impl ActiveConns ===

impl ActiveConns {
    /// Connections being served now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no connection is being served.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

// === impl ConnGuard ===

impl ConnGuard {
    fn new(active: Arc<ActiveConns>) -> Self {
        active.count.fetch_add(1, Ordering::AcqRel);
        Self(active)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
