//! `--run-validation`: proves redirection works, as Istio's `validation` package does: listen
//! on loopback at the proxy and inbound capture ports, connect from loopback to
//! `127.0.0.6:<probe port>` (`[::6]` on IPv6 pods), where nothing listens, and wait until one
//! listener accepts a connection whose original destination port is the probe port. Run it as
//! the proxy uid: only the proxy's connections to 127.0.0.6 are sent to the inbound port.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, connect, getsockopt, socket,
    sockopt,
};

use crate::config::Port;

/// Istio's exit code for a failed validation (`constants.ValidationErrorCode`).
pub const EXIT_CODE: u8 = 126;

/// Validation did not see a redirected connection.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// Neither capture port could be listened on.
    #[error("validation cannot listen on {addrs}: {errors}")]
    NoListener {
        /// Where it tried.
        addrs: String,
        /// Why it failed.
        errors: String,
    },
    /// No redirected connection arrived in time.
    #[error(
        "iptables validation failed: connections to {target} did not arrive on {listeners} within {timeout:?}; the workload is not ready for the sidecar (are the rules applied, and is this run as the proxy uid?)"
    )]
    Timeout {
        /// The probe address.
        target: SocketAddr,
        /// The listeners that waited.
        listeners: String,
        /// How long.
        timeout: Duration,
    },
    /// A socket call failed.
    #[error("validation socket error: {0}")]
    Socket(String),
}

/// Runs the probe; returns the listener address that caught it.
pub fn run(
    proxy_port: Port,
    capture_port: Port,
    probe_port: Port,
    ipv6: bool,
    timeout: Duration,
) -> Result<SocketAddr, ValidationError> {
    let (listen_ip, target_ip): (IpAddr, IpAddr) = if ipv6 {
        (
            Ipv6Addr::LOCALHOST.into(),
            Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into(),
        )
    } else {
        (
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 0, 0, 6).into(),
        )
    };
    let target = SocketAddr::new(target_ip, probe_port.get());
    let mut ports = vec![proxy_port.get(), capture_port.get()];
    ports.dedup();

    let mut listeners = Vec::new();
    let mut errors = Vec::new();
    for port in &ports {
        let addr = SocketAddr::new(listen_ip, *port);
        match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(l) => listeners.push((addr, l)),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    let names: Vec<String> = ports
        .iter()
        .map(|p| SocketAddr::new(listen_ip, *p).to_string())
        .collect();
    if listeners.is_empty() {
        return Err(ValidationError::NoListener {
            addrs: names.join(", "),
            errors: errors.join("; "),
        });
    }

    let deadline = Instant::now() + timeout;
    // Keep the latest attempts open, so a slow handshake can still be accepted.
    let mut attempts: Vec<OwnedFd> = Vec::new();
    loop {
        match start_connect(listen_ip, target) {
            Ok(fd) => {
                // Bounded, so a long --probe-timeout cannot run out of descriptors.
                if attempts.len() >= 16 {
                    attempts.remove(0);
                }
                attempts.push(fd);
            }
            Err(e) => tracing::debug!("validation connect to {target}: {e}"),
        }
        for (addr, listener) in &listeners {
            while let Ok((stream, _)) = listener.accept() {
                match original_port(&stream, ipv6) {
                    Ok(port) => {
                        let mut s = &stream;
                        let _ = s.write_all(port.to_string().as_bytes());
                        if port == probe_port.get() {
                            return Ok(*addr);
                        }
                    }
                    Err(e) => tracing::debug!("validation: no original destination on {addr}: {e}"),
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(ValidationError::Timeout {
                target,
                listeners: names.join(" or "),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts a non-blocking connect from `source_ip:0` to `target`.
fn start_connect(source_ip: IpAddr, target: SocketAddr) -> Result<OwnedFd, ValidationError> {
    let err = |what: &str, e: nix::Error| ValidationError::Socket(format!("{what}: {e}"));
    let family = if target.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err("socket", e))?;
    let result = match (source_ip, target) {
        (IpAddr::V4(src), SocketAddr::V4(dst)) => bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)),
        )
        .and_then(|()| connect(fd.as_raw_fd(), &SockaddrIn::from(dst))),
        (IpAddr::V6(src), SocketAddr::V6(dst)) => bind(
            fd.as_raw_fd(),
            &SockaddrIn6::from(std::net::SocketAddrV6::new(src, 0, 0, 0)),
        )
        .and_then(|()| connect(fd.as_raw_fd(), &SockaddrIn6::from(dst))),
        _ => {
            return Err(ValidationError::Socket(
                "address family mismatch".to_string(),
            ));
        }
    };
    match result {
        Ok(()) | Err(nix::Error::EINPROGRESS) => Ok(fd),
        Err(e) => Err(err("connect", e)),
    }
}

/// The destination port the connection had before NAT (`SO_ORIGINAL_DST`).
pub fn original_port(stream: &TcpStream, ipv6: bool) -> Result<u16, ValidationError> {
    let err = |e: nix::Error| ValidationError::Socket(format!("SO_ORIGINAL_DST: {e}"));
    if ipv6 {
        let sa = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(err)?;
        Ok(u16::from_be(sa.sin6_port))
    } else {
        let sa = getsockopt(stream, sockopt::OriginalDst).map_err(err)?;
        Ok(u16::from_be(sa.sin_port))
    }
}
