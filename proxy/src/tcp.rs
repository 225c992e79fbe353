//! `envoy.filters.network.tcp_proxy` at run time: pick a cluster and a host, connect, copy.

pub mod copy;

use std::{io, net::SocketAddr};

use socket2::{SockRef, TcpKeepalive as SockKeepalive};
use tokio::net::{TcpSocket, TcpStream};

use crate::{
    addr::{ClientAddr, OrigDst, Upstream},
    cluster::{Cluster, Host, NoHost},
    config::{ClusterTarget, TcpKeepalive, TcpProxy},
    conn::Conn,
    flags::ResponseFlag,
    snapshot::Snapshot,
};

use self::copy::{CopyEnd, Transferred};

/// What happened to a proxied connection, for logs (and later access logs and metrics).
#[derive(Debug)]
pub struct Outcome {
    /// The cluster chosen, if any.
    pub cluster: Option<std::sync::Arc<str>>,
    /// The host connected to, if any.
    pub upstream: Option<Upstream>,
    /// Bytes moved.
    pub transferred: Transferred,
    /// Envoy's response flag, if the connection did not go through normally.
    pub flag: Option<ResponseFlag>,
}

/// Proxies `down` by `tcp_proxy`'s configuration until both sides are done.
pub async fn proxy(
    mut down: Conn,
    client: ClientAddr,
    orig_dst: Option<OrigDst>,
    tp: &TcpProxy,
    snapshot: &Snapshot,
) -> Outcome {
    let mut outcome = Outcome {
        cluster: None,
        upstream: None,
        transferred: Transferred::default(),
        flag: None,
    };
    let name = pick_cluster(&tp.target);
    outcome.cluster = Some(name.clone());
    let Some(cluster) = snapshot.clusters.get(&name) else {
        tracing::debug!(%client, cluster = %name, "tcp_proxy: unknown cluster, closing");
        outcome.flag = Some(ResponseFlag::NoClusterFound);
        return outcome;
    };
    if let Some(why) = cluster.config.refusal() {
        crate::refusals::count(why);
        tracing::debug!(%client, cluster = %name, reason = why.describe(), "tcp_proxy: cluster refuses connections");
        outcome.flag = Some(ResponseFlag::UpstreamConnectionFailure);
        return outcome;
    }

    let mut up = None;
    for attempt in 1..=tp.max_connect_attempts {
        let host = match cluster.pick(orig_dst) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%client, cluster = %name, error = %e, "tcp_proxy: no host");
                outcome.flag = Some(match e {
                    NoHost::NoHealthyHost | NoHost::NoOriginalDst => {
                        ResponseFlag::NoHealthyUpstream
                    }
                });
                return outcome;
            }
        };
        let addr = host.host().addr;
        if snapshot.is_own_listener(addr, down.local_addr().ok()) {
            // Connecting would loop back into this proxy (for example a passthrough cluster
            // serving a connection made straight to the capture port).
            tracing::warn!(%client, upstream = %addr, cluster = %name, "tcp_proxy: refusing to connect to this proxy's own listener");
            outcome.flag = Some(ResponseFlag::UpstreamConnectionFailure);
            return outcome;
        }
        outcome.upstream = Some(Upstream(addr));
        match connect_host(cluster, host.host()).await {
            Ok(s) => {
                up = Some((s, host));
                break;
            }
            Err(e) => {
                tracing::debug!(%client, upstream = %addr, cluster = %name, attempt, error = %e, "tcp_proxy: connect failed");
            }
        }
    }
    let Some((mut up, _host)) = up else {
        outcome.flag = Some(ResponseFlag::UpstreamConnectionFailure);
        return outcome;
    };

    let (transferred, end) = copy::bidirectional(&mut down, &mut up, tp.idle_timeout).await;
    outcome.transferred = transferred;
    match end {
        CopyEnd::Done => {}
        CopyEnd::IdleTimeout => outcome.flag = Some(ResponseFlag::StreamIdleTimeout),
        CopyEnd::Error(side, e) => {
            tracing::debug!(%client, cluster = %name, ?side, error = %e, "tcp_proxy: connection failed");
            outcome.flag = Some(match side {
                copy::Side::Upstream => ResponseFlag::UpstreamConnectionTermination,
                copy::Side::Downstream => ResponseFlag::DownstreamConnectionTermination,
            });
        }
    }
    outcome
}

/// The cluster for one connection: the only one, or one drawn by weight.
fn pick_cluster(target: &ClusterTarget) -> std::sync::Arc<str> {
    match target {
        ClusterTarget::One(c) => c.clone(),
        ClusterTarget::Weighted(ws) => {
            let total: u64 = ws.iter().map(|(_, w)| u64::from(*w)).sum();
            let mut draw = crate::cluster::random_u64() % total.max(1);
            for (c, w) in ws {
                if draw < u64::from(*w) {
                    return c.clone();
                }
                draw -= u64::from(*w);
            }
            ws.last()
                .map(|(c, _)| c.clone())
                .expect("weighted_clusters is never empty")
        }
    }
}

/// Opens a connection to `host`: TCP with the cluster's socket options, then TLS when the
/// host's transport says so, both within the cluster's connect timeout.
pub(crate) async fn connect_host(cluster: &Cluster, host: &Host) -> io::Result<Conn> {
    let timeout = cluster.config.connect_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = tokio::time::timeout_at(deadline, connect(cluster, host.addr))
        .await
        .map_err(|_| timed_out(timeout))??;
    let Some(tls) = &host.tls else {
        return Ok(Conn::Plain(tcp));
    };
    let tls = tokio::time::timeout_at(deadline, tls.connect(tcp, host.addr, None))
        .await
        .map_err(|_| timed_out(timeout))??;
    Ok(Conn::TlsClient(Box::new(tls)))
}

fn timed_out(timeout: std::time::Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connect timeout after {timeout:?}"),
    )
}

/// Opens a TCP connection to `addr` with the cluster's timeout and socket options.
pub(crate) async fn connect(cluster: &Cluster, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    if let Some(k) = &cluster.config.tcp_keepalive {
        set_keepalive(&socket, k)?;
    }
    bind_source(&socket, cluster.config.bind_source, addr)?;
    match tokio::time::timeout(cluster.config.connect_timeout, socket.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timeout after {:?}", cluster.config.connect_timeout),
        )),
    }
}

/// Binds an upstream socket to the cluster's source address, when it has one of the
/// destination's family (Envoy skips a source of the other family too).
pub(crate) fn bind_source(
    socket: &TcpSocket,
    source: Option<SocketAddr>,
    destination: SocketAddr,
) -> io::Result<()> {
    match source {
        Some(src) if src.is_ipv4() == destination.is_ipv4() => socket.bind(src),
        _ => Ok(()),
    }
}

/// Applies a cluster's TCP keepalive settings to an upstream socket.
pub(crate) fn set_keepalive(socket: &TcpSocket, k: &TcpKeepalive) -> io::Result<()> {
    let mut ka = SockKeepalive::new();
    if let Some(t) = k.time {
        ka = ka.with_time(t);
    }
    if let Some(i) = k.interval {
        ka = ka.with_interval(i);
    }
    if let Some(p) = k.probes {
        ka = ka.with_retries(p);
    }
    SockRef::from(socket).set_tcp_keepalive(&ka)
}
