//! Peer certificate checks as Envoy makes them for Istio: the chain must reach the trusted roots
//! (`ROOTCA`), and one subject alternative name must match the configured matchers (the SPIFFE
//! ID). No host name check: Istio's workload certificates carry URI SANs only.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{Counters, Side, TrustRoots, counters, secrets::Slot};
use crate::config::{RootsSource, SanKind, SanMatcher, Validation};

/// Where the trusted roots are read from on each handshake.
#[derive(Debug)]
pub(crate) enum RootsRef {
    /// Fixed in the configuration.
    Fixed(Arc<TrustRoots>),
    /// A secret, possibly not delivered yet.
    Slot(Arc<Slot>),
}

/// The checks of one validation context.
#[derive(Debug)]
pub(crate) struct PeerCheck {
    roots: RootsRef,
    sans: Vec<SanMatcher>,
    side: Side,
}

/// Why a peer certificate was refused, as counted.
#[derive(Debug)]
enum Refused {
    Chain(TlsError),
    San,
}

// === impl PeerCheck ===

impl PeerCheck {
    /// Builds the checks of `v`; an inline root bundle is made into anchors here.
    pub(crate) fn new(v: &Validation, side: Side) -> Result<Self, super::secrets::SecretError> {
        let roots = match &v.roots {
            Some(RootsSource::Inline(r)) => RootsRef::Fixed(Arc::new(TrustRoots::new(r)?)),
            Some(RootsSource::Secret(s)) => RootsRef::Slot(super::secrets::slot(&s.name)),
            None => RootsRef::Fixed(Arc::new(TrustRoots {
                anchors: Vec::new(),
            })),
        };
        Ok(Self {
            roots,
            sans: v.subject_alt_names.clone(),
            side,
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        algorithms: &WebPkiSupportedAlgorithms,
    ) -> Result<(), TlsError> {
        let c = counters(self.side);
        match self.check_inner(end_entity, intermediates, now, algorithms) {
            Ok(()) => Ok(()),
            Err(Refused::Chain(e)) => {
                Counters::bump(&c.fail_verify_error);
                Err(e)
            }
            Err(Refused::San) => {
                Counters::bump(&c.fail_verify_san);
                Err(TlsError::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn check_inner(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        algorithms: &WebPkiSupportedAlgorithms,
    ) -> Result<(), Refused> {
        let roots = match &self.roots {
            RootsRef::Fixed(r) => r.clone(),
            RootsRef::Slot(s) => s.roots().ok_or_else(|| {
                Refused::Chain(TlsError::General(format!(
                    "trusted roots '{}' not delivered yet",
                    s.name()
                )))
            })?,
        };
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| Refused::Chain(webpki_error(e)))?;
        // Istio's workload certificates are good for both ends; a certificate without the
        // extended key usage is accepted, as BoringSSL does by default.
        let usage = match self.side {
            Side::Downstream => webpki::KeyUsage::required_if_present(CLIENT_AUTH),
            Side::Upstream => webpki::KeyUsage::required_if_present(SERVER_AUTH),
        };
        cert.verify_for_usage(
            algorithms.all,
            &roots.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| Refused::Chain(webpki_error(e)))?;
        if self.sans.is_empty() {
            return Ok(());
        }
        let matched = self.sans.iter().any(|m| {
            let uri = matches!(m.kind, None | Some(SanKind::Uri))
                && cert.valid_uri_names().any(|n| m.matcher.matches(n));
            let dns = matches!(m.kind, None | Some(SanKind::Dns))
                && cert.valid_dns_names().any(|n| m.matcher.matches(n));
            uri || dns
        });
        if matched { Ok(()) } else { Err(Refused::San) }
    }
}

/// id-kp-serverAuth, 1.3.6.1.5.5.7.3.1, DER content.
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2, DER content.
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

fn webpki_error(e: webpki::Error) -> TlsError {
    use rustls::CertificateError as C;
    TlsError::InvalidCertificate(match e {
        webpki::Error::CertExpired { .. } => C::Expired,
        webpki::Error::CertNotValidYet { .. } => C::NotValidYet,
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
        webpki::Error::CertRevoked => C::Revoked,
        webpki::Error::BadDer | webpki::Error::BadDerTime => C::BadEncoding,
        other => C::Other(rustls::OtherError(Arc::new(other))),
    })
}

/// Checks client certificates on a TLS server.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    check: PeerCheck,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

// === impl ClientVerifier ===

impl ClientVerifier {
    pub(crate) fn new(check: PeerCheck, mandatory: bool) -> Self {
        Self {
            check,
            mandatory,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Envoy sends the CA names; clients in the mesh have one certificate and need no hint.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check
            .check(end_entity, intermediates, now, &self.algorithms)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks server certificates on a TLS client. Without a validation context any certificate is
/// accepted (Envoy's behaviour), though the handshake signature is still checked.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    check: Option<PeerCheck>,
    algorithms: WebPkiSupportedAlgorithms,
}

// === impl ServerVerifier ===

impl ServerVerifier {
    pub(crate) fn new(check: Option<PeerCheck>) -> Self {
        Self {
            check,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match &self.check {
            Some(c) => c
                .check(end_entity, intermediates, now, &self.algorithms)
                .map(|()| ServerCertVerified::assertion()),
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
