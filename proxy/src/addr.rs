//! Addresses named by their role, so a client address can never be passed where an original
//! destination is expected.

use std::{fmt, net::SocketAddr};

/// The address the client connected to before iptables redirected it (`SO_ORIGINAL_DST`), or the
/// socket's own local address when the connection was not redirected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrigDst(pub SocketAddr);

/// The downstream peer's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The local address a connection was accepted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalAddr(pub SocketAddr);

/// The upstream host a connection goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Upstream(pub SocketAddr);

macro_rules! display_inner {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}
display_inner!(OrigDst, ClientAddr, LocalAddr, Upstream);
