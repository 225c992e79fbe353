//! TLS termination for a filter chain (`DownstreamTlsContext`).

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use rustls::{
    ServerConfig,
    server::{ClientHello, NoServerSessionStorage, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::CertificateDer;
use tokio::{net::TcpStream, time::Instant};
use tokio_rustls::{LazyConfigAcceptor, server::TlsStream};

use super::{
    Counters, Identity, Side, counters,
    secrets::{SecretError, Slot, slot},
    verify::{ClientVerifier, PeerCheck},
};
use crate::config::{CertificateSource, DownstreamTls};

/// How long a client may take to complete its handshake. Envoy has no default; a bound keeps
/// idle half-open handshakes from holding connections for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Terminates TLS for one filter chain.
#[derive(Debug)]
pub struct Acceptor {
    /// This side's certificate (read for the SPIFFE ID it presents).
    cert: Arc<CertRef>,
    /// With the chain's ALPN list.
    with_alpn: Arc<ServerConfig>,
    /// Without ALPN, for clients that offer none of the chain's protocols: Envoy then goes on
    /// without ALPN, where rustls alone would refuse the handshake.
    without_alpn: Arc<ServerConfig>,
    alpn: Vec<Vec<u8>>,
}

/// What the handshake established about the client.
#[derive(Debug, Default)]
pub struct Peer {
    /// The client certificate's SPIFFE ID (`spiffe://td/ns/NS/sa/SA`).
    pub spiffe_id: Option<Arc<str>>,
    /// The client's leaf certificate, if it sent one.
    pub certificate: Option<CertificateDer<'static>>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// This proxy's own SPIFFE ID, as presented.
    pub local_spiffe_id: Option<Arc<str>>,
    /// The `x-forwarded-client-cert` element for this connection, built on first use.
    pub xfcc: std::sync::OnceLock<Option<http::HeaderValue>>,
}

/// This side's certificate: fixed, or read from a secret on each handshake.
#[derive(Debug)]
pub(crate) enum CertRef {
    Fixed(Arc<Identity>),
    Slot(Arc<Slot>),
}

// === impl CertRef ===

impl CertRef {
    pub(crate) fn new(source: &CertificateSource) -> Result<Self, SecretError> {
        Ok(match source {
            CertificateSource::Inline(c) => CertRef::Fixed(Arc::new(Identity::new(c)?)),
            CertificateSource::Secret(s) => CertRef::Slot(slot(&s.name)),
        })
    }

    pub(crate) fn current(&self) -> Option<Arc<Identity>> {
        match self {
            CertRef::Fixed(i) => Some(i.clone()),
            CertRef::Slot(s) => s.identity(),
        }
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertRef>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let id = self.0.current();
        if id.is_none() {
            Counters::bump(&counters(Side::Downstream).no_certificate);
        }
        id.map(|i| i.key.clone())
    }
}

// === impl Acceptor ===

impl Acceptor {
    /// Builds the rustls configuration of a chain.
    pub fn new(t: &DownstreamTls) -> Result<Self, SecretError> {
        let common = &t.common;
        let cert = Arc::new(match &common.certificate {
            Some(c) => CertRef::new(c)?,
            // Conversion requires one; an empty slot refuses every handshake.
            None => CertRef::Slot(slot("")),
        });
        let builder = ServerConfig::builder_with_provider(super::provider(common))
            .with_protocol_versions(&super::versions(common))
            .map_err(SecretError::Key)?;
        let builder = match &common.validation {
            Some(v) => builder.with_client_cert_verifier(Arc::new(ClientVerifier::new(
                PeerCheck::new(v, Side::Downstream)?,
                t.require_client_certificate,
            ))),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Resolver(cert.clone())));
        config.ignore_client_order = !t.prefer_client_ciphers;
        if t.disable_resumption {
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        let without_alpn = Arc::new(config.clone());
        let alpn: Vec<Vec<u8>> = common.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        config.alpn_protocols.clone_from(&alpn);
        Ok(Self {
            cert,
            with_alpn: Arc::new(config),
            without_alpn,
            alpn,
        })
    }

    /// The rustls configuration for a client's hello: the chain's, or the same without ALPN
    /// when the client offers ALPN but none of the chain's protocols.
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let overlap = hello
            .alpn()
            .map(|mut offered| offered.any(|p| self.alpn.iter().any(|a| a == p)));
        if overlap == Some(false) {
            self.without_alpn.clone()
        } else {
            self.with_alpn.clone()
        }
    }

    /// Runs the server handshake on `tcp`. Failures are counted, and logged at most once a
    /// second with the client's address and the reason.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        client: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, Peer)> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let c = counters(Side::Downstream);
        let result = async {
            let start = tokio::time::timeout_at(
                deadline,
                LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp),
            )
            .await
            .map_err(|_| timed_out())??;
            let config = self.config_for(&start.client_hello());
            tokio::time::timeout_at(deadline, start.into_stream(config))
                .await
                .map_err(|_| timed_out())?
        }
        .await;
        match result {
            Ok(stream) => {
                let (_, conn) = stream.get_ref();
                Counters::bump(&c.handshake);
                if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    Counters::bump(&c.session_reused);
                }
                let certificate = conn
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map(|c| c.clone().into_owned());
                let peer = Peer {
                    spiffe_id: certificate
                        .as_ref()
                        .and_then(super::spiffe_id)
                        .map(Into::into),
                    certificate,
                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                    local_spiffe_id: self.cert.current().and_then(|i| i.spiffe_id.clone()),
                    xfcc: std::sync::OnceLock::new(),
                };
                Some((stream, peer))
            }
            Err(e) => {
                failed(Side::Downstream, &e, client);
                None
            }
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
}

/// Counts and (rate-limited) logs a failed handshake.
pub(crate) fn failed(side: Side, e: &io::Error, peer: SocketAddr) {
    let c = counters(side);
    Counters::bump(&c.connection_error);
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if matches!(tls, Some(rustls::Error::NoCertificatesPresented)) {
        Counters::bump(&c.fail_verify_no_cert);
    }
    if let Some(skipped) = c.may_log() {
        tracing::warn!(side = side.name(), %peer, reason = %e, skipped, "TLS handshake failed");
    }
}
