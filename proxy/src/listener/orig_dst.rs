//! `envoy.filters.listener.original_dst`: the destination a connection had before iptables
//! redirected it, from `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6).

use std::{io, net::SocketAddr};

use socket2::SockRef;
use tokio::net::TcpStream;

use crate::{addr::OrigDst, config::canonical};

/// The original destination of an accepted connection. For a connection that was not NATed the
/// kernel reports the local address itself; TPROXY connections have it as their local address.
pub fn original_dst(stream: &TcpStream) -> io::Result<OrigDst> {
    let sock = SockRef::from(stream);
    let local = stream.local_addr()?;
    let v4_traffic = canonical(local.ip()).is_ipv4();
    let addr = if v4_traffic {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket()
        .map(|a| OrigDst(SocketAddr::new(canonical(a.ip()), a.port())))
        .ok_or_else(|| io::Error::other("SO_ORIGINAL_DST returned a non-IP address"))
}
