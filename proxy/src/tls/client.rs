//! TLS origination for a cluster transport (`UpstreamTlsContext`).

use std::{io, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;

use rustls::{ClientConfig, client::ResolvesClientCert, sign::CertifiedKey};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{
    Counters, Side, counters,
    secrets::SecretError,
    server::CertRef,
    verify::{PeerCheck, ServerVerifier},
};
use crate::config::UpstreamTls;

/// Originates TLS to the hosts of one cluster transport.
#[derive(Debug)]
pub struct Connector {
    config: Arc<ClientConfig>,
    /// The configured SNI; without one, none is sent.
    sni: Option<ServerName<'static>>,
    /// Configurations with another ALPN list (`istio.alpn`), built on first use and read
    /// without a lock.
    by_alpn: ArcSwap<Vec<AlpnConfig>>,
}

type AlpnConfig = (Vec<Vec<u8>>, Arc<ClientConfig>);

#[derive(Debug)]
struct Resolver(Option<CertRef>);

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let id = self.0.as_ref()?.current();
        if id.is_none() {
            Counters::bump(&counters(Side::Upstream).no_certificate);
        }
        id.map(|i| i.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

// === impl Connector ===

impl Connector {
    /// Builds the rustls configuration of a transport.
    pub fn new(t: &UpstreamTls) -> Result<Self, SecretError> {
        let common = &t.common;
        let cert = common.certificate.as_ref().map(CertRef::new).transpose()?;
        let check = common
            .validation
            .as_ref()
            .map(|v| PeerCheck::new(v, Side::Upstream))
            .transpose()?;
        let mut config = ClientConfig::builder_with_provider(super::provider(common))
            .with_protocol_versions(&super::versions(common))
            .map_err(SecretError::Key)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier::new(check)))
            .with_client_cert_resolver(Arc::new(Resolver(cert)));
        config.alpn_protocols = common.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        let sni = t
            .sni
            .as_deref()
            .and_then(|s| ServerName::try_from(s.to_string()).ok());
        Ok(Self {
            config: Arc::new(config),
            sni,
            by_alpn: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// Runs the client handshake over `tcp` to `addr`, offering `alpn` instead of the
    /// configured list when given (Istio's `istio.alpn` filter does this per protocol, and
    /// Envoy lets such an override win over the cluster's list).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        alpn: Option<&[String]>,
    ) -> io::Result<TlsStream<TcpStream>> {
        let config = self.config(alpn);
        let name = self.server_name(addr);
        let c = counters(Side::Upstream);
        match TlsConnector::from(config).connect(name, tcp).await {
            Ok(s) => {
                Counters::bump(&c.handshake);
                if s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    Counters::bump(&c.session_reused);
                }
                Ok(s)
            }
            Err(e) => {
                super::server::failed(Side::Upstream, &e, addr);
                Err(e)
            }
        }
    }

    /// The rustls configuration, offering `alpn` instead of the configured list when given.
    pub fn config(&self, alpn: Option<&[String]>) -> Arc<ClientConfig> {
        match alpn {
            Some(list) => self.with_alpn(list),
            None => self.config.clone(),
        }
    }

    /// The name to connect to `addr` with: the configured SNI, else the address (rustls sends
    /// no SNI for an IP address, which is what Envoy does without `sni`).
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        self.sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    fn with_alpn(&self, list: &[String]) -> Arc<ClientConfig> {
        let same = |l: &Vec<Vec<u8>>| {
            l.iter()
                .map(Vec::as_slice)
                .eq(list.iter().map(String::as_bytes))
        };
        if let Some((_, c)) = self.by_alpn.load().iter().find(|(l, _)| same(l)) {
            return c.clone();
        }
        let mut config = (*self.config).clone();
        config.alpn_protocols = list.iter().map(|a| a.as_bytes().to_vec()).collect();
        let config = Arc::new(config);
        self.by_alpn.rcu(|known| {
            let mut known = Vec::clone(known);
            if !known.iter().any(|(l, _)| same(l)) {
                known.push((config.alpn_protocols.clone(), config.clone()));
            }
            known
        });
        config
    }
}
