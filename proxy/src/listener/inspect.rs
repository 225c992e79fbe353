//! Protocol detection for new connections (tls_inspector and http_inspector): the first bytes are
//! peeked with `MSG_PEEK`, never consumed, so whatever serves the connection next reads them all.
//!
//! Hot path: runs once per connection on listeners that configure inspectors. It waits only for
//! new bytes (edge-triggered readiness), never spins, and is bounded by the listener's deadline.

use std::{io, os::fd::AsRawFd};

use nix::sys::socket::{MsgFlags, recv};
use smallvec::SmallVec;
use tokio::{io::Interest, net::TcpStream, time::Instant};

use super::{
    http_sniff::{self, Sniff},
    tls_hello::{self, Hello},
};

/// Bytes peeked at first; enough for most ClientHellos and request lines.
const INITIAL_PEEK: usize = 2048;

/// Which inspectors run on a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The TLS inspector, if configured and not disabled for this connection.
    pub tls: Option<TlsPlan>,
    /// Whether the HTTP inspector runs.
    pub http: bool,
}

/// TLS inspector settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsPlan {
    /// The largest ClientHello to read.
    pub max_client_hello: usize,
    /// Close on a ClientHello that does not parse (otherwise it is plaintext).
    pub close_on_parse_error: bool,
}

/// What the inspectors learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detected {
    /// A TLS ClientHello was seen (`transport_protocol: tls`).
    pub tls: bool,
    /// Its SNI, lowercased.
    pub server_name: Option<Box<str>>,
    /// ALPN from the ClientHello, or the sniffed HTTP protocol.
    pub application_protocols: SmallVec<[Box<str>; 2]>,
}

/// How inspection ended.
#[derive(Debug)]
pub enum End {
    /// Every inspector decided.
    Complete,
    /// The listener's deadline passed first.
    TimedOut,
    /// The peer closed its side before every inspector decided; what was learned stands.
    PeerClosed,
    /// The connection must be closed (Envoy closes these too).
    Reject(&'static str),
    /// The socket failed.
    Io(io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Done,
}

// === impl Plan ===

impl Plan {
    /// Whether any inspector runs.
    pub fn is_empty(&self) -> bool {
        self.tls.is_none() && !self.http
    }
}

/// Runs the inspectors in `plan` on `stream` until they decide, the peer closes, or `deadline`.
pub async fn inspect(stream: &TcpStream, plan: Plan, deadline: Instant) -> (Detected, End) {
    let mut detected = Detected::default();
    if plan.is_empty() {
        return (detected, End::Complete);
    }
    let mut tls = if plan.tls.is_some() {
        State::Pending
    } else {
        State::Done
    };
    let mut http = if plan.http {
        State::Pending
    } else {
        State::Done
    };
    let limit = plan
        .tls
        .map_or(0, |t| t.max_client_hello)
        .max(if plan.http { http_sniff::MAX_SNIFF } else { 0 });
    let mut buf = vec![0u8; INITIAL_PEEK.min(limit)];
    let mut seen = 0usize;
    let fd = stream.as_raw_fd();

    loop {
        let ready = match tokio::time::timeout_at(deadline, stream.ready(Interest::READABLE)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return (detected, End::Io(e)),
            Err(_) => return (detected, End::TimedOut),
        };
        let closed = ready.is_read_closed();
        let peeked = stream.try_io(Interest::READABLE, || {
            let n = recv(fd, &mut buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)
                .map_err(io::Error::from)?;
            if n == seen && !closed && n < buf.len() {
                // Nothing new: report WouldBlock so tokio clears readiness and the next wait
                // sleeps until more bytes (or a FIN) arrive.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match peeked {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return (detected, End::Io(e)),
        };
        let progressed = n > seen;
        seen = n;
        let data = &buf[..n];
        let mut want = n;

        if tls == State::Pending {
            let t = plan.tls.expect("pending only when planned");
            match tls_hello::parse(data) {
                Hello::ClientHello(hello) => {
                    detected.tls = true;
                    detected.server_name = hello.server_name.map(String::into_boxed_str);
                    detected.application_protocols =
                        hello.alpn.into_iter().map(String::into_boxed_str).collect();
                    tls = State::Done;
                }
                Hello::NeedMore(total) if total > t.max_client_hello => {
                    return (detected, End::Reject("TLS ClientHello too large"));
                }
                Hello::TooLarge => return (detected, End::Reject("TLS ClientHello too large")),
                Hello::NeedMore(total) => want = want.max(total),
                Hello::NotTls | Hello::Invalid(_) if t.close_on_parse_error => {
                    return (detected, End::Reject("no valid TLS ClientHello"));
                }
                Hello::NotTls | Hello::Invalid(_) => tls = State::Done,
            }
        }
        if http == State::Pending {
            if detected.tls {
                // Envoy's http_inspector leaves TLS connections alone.
                http = State::Done;
            } else {
                match http_sniff::sniff(data) {
                    Sniff::NeedMore if n < http_sniff::MAX_SNIFF => want = want.max(n + 1),
                    Sniff::NeedMore | Sniff::NotHttp => http = State::Done,
                    found => {
                        if let Some(p) = found.application_protocol() {
                            detected.application_protocols = SmallVec::from_iter([p.into()]);
                        }
                        http = State::Done;
                    }
                }
            }
        }

        if tls == State::Done && http == State::Done {
            return (detected, End::Complete);
        }
        if closed && !progressed {
            return (detected, End::PeerClosed);
        }
        if want > buf.len() {
            // The peer may already have sent more than fits; peek again with room for it.
            let new_len = want.max(buf.len() * 2).min(limit);
            buf.resize(new_len, 0);
        }
    }
}
