//! TLS at run time: rustls configurations built from the typed TLS settings, the secrets they
//! use (swapped whole on rotation), SPIFFE peer checks, and handshake counters.
//!
//! A rustls configuration is built once per filter chain or cluster transport. It reads its
//! certificate and roots through [`secrets::Slot`]s on every handshake, so a rotated secret
//! applies to new handshakes at once and connections already open keep theirs.

pub mod ca;
pub mod client;
pub mod dev_ca;
pub mod secrets;
pub mod server;
mod verify;
pub mod x509;

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

/// At most one handshake failure warning per side in this many milliseconds.
const LOG_EVERY_MS: u64 = 1000;

use rustls::{SupportedProtocolVersion, crypto::CryptoProvider};
use rustls_pki_types::CertificateDer;

use crate::config::{TlsCommon, TlsVersion};

pub use self::{
    client::Connector,
    secrets::{Identity, Slot, TrustRoots},
    server::{Acceptor, Peer},
};

/// Which side of the proxy a handshake is on, for counters and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A client connecting to one of our listeners (TLS termination).
    Downstream,
    /// Us connecting to an upstream host (TLS origination).
    Upstream,
}

/// Handshake counters of one side, named as Envoy's `ssl.*` statistics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Handshakes completed.
    pub handshake: AtomicU64,
    /// Handshakes that failed, for any reason.
    pub connection_error: AtomicU64,
    /// Peer certificates that did not chain to the trusted roots (or were expired, ...).
    pub fail_verify_error: AtomicU64,
    /// Peer certificates whose subject alternative names matched no matcher.
    pub fail_verify_san: AtomicU64,
    /// Peers that sent no certificate where one was required.
    pub fail_verify_no_cert: AtomicU64,
    /// Handshakes that found no local certificate to present (its secret not yet delivered).
    pub no_certificate: AtomicU64,
    /// Sessions resumed.
    pub session_reused: AtomicU64,
    /// The last time a failure was logged, and how many were not logged since.
    log_gate: LogGate,
}

#[derive(Debug, Default)]
struct LogGate {
    /// Milliseconds since [`epoch`] of the last warning, plus one (0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

/// A fixed instant the log gate measures from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

static DOWNSTREAM: OnceLock<Counters> = OnceLock::new();
static UPSTREAM: OnceLock<Counters> = OnceLock::new();

/// The counters of `side`.
pub fn counters(side: Side) -> &'static Counters {
    match side {
        Side::Downstream => DOWNSTREAM.get_or_init(Counters::default),
        Side::Upstream => UPSTREAM.get_or_init(Counters::default),
    }
}

// === impl Side ===

impl Side {
    /// `downstream` or `upstream`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
        }
    }
}

// === impl Counters ===

impl Counters {
    /// Every counter with its Envoy name, for `/stats`.
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("handshake", get(&self.handshake)),
            ("connection_error", get(&self.connection_error)),
            ("fail_verify_error", get(&self.fail_verify_error)),
            ("fail_verify_san", get(&self.fail_verify_san)),
            ("fail_verify_no_cert", get(&self.fail_verify_no_cert)),
            ("no_certificate", get(&self.no_certificate)),
            ("session_reused", get(&self.session_reused)),
        ]
    }

    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a failure may be logged now: at most one warning per second per side, so a
    /// flood of bad handshakes cannot flood the log. Returns how many were skipped before it.
    pub(crate) fn may_log(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let gate = &self.log_gate;
        let last = gate.last_ms.load(Ordering::Relaxed);
        let open = last == 0 || now.saturating_sub(last) >= LOG_EVERY_MS;
        // One winner per second, without a lock.
        if open
            && gate
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(gate.suppressed.swap(0, Ordering::Relaxed));
        }
        gate.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The crypto provider for a context: ring, with the configured TLS 1.2 cipher suites (in their
/// order) and every TLS 1.3 suite.
pub(crate) fn provider(common: &TlsCommon) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(wanted) = &common.cipher_suites {
        let tls13 = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied();
        let tls12 = wanted.iter().filter_map(|w| {
            p.cipher_suites
                .iter()
                .find(|s| s.suite() == *w && s.version() == &rustls::version::TLS12)
                .copied()
        });
        p.cipher_suites = tls13.chain(tls12).collect();
    }
    Arc::new(p)
}

/// The protocol versions between the configured minimum and maximum.
pub(crate) fn versions(common: &TlsCommon) -> Vec<&'static SupportedProtocolVersion> {
    let mut v = Vec::new();
    if common.max_version >= TlsVersion::V1_3 {
        v.push(&rustls::version::TLS13);
    }
    if common.min_version <= TlsVersion::V1_2 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// The SPIFFE ID (`spiffe://...` URI SAN) of a certificate, if it has one.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    parsed
        .valid_uri_names()
        .find(|u| u.starts_with("spiffe://"))
        .map(str::to_string)
}
