//! The Istio CA client (feature `ca`): the workload certificate flow of pilot-agent, for a
//! sidecar that has no pilot-agent beside it.
//!
//! # One request ([`request_certificate`])
//! 1. A fresh key is generated (ECDSA P-256; see [`KeyKind`] about RSA) and a CSR is built with
//!    an empty subject and the workload's SPIFFE ID as its only SAN (a URI, critical), as Istio's
//!    own CSRs are.
//! 2. The CSR goes to `istio.v1.auth.IstioCertificateService/CreateCertificate` over TLS,
//!    verified with the CA root file (read afresh for every request, so a rotated root applies),
//!    with `authorization: Bearer <token>` read from the token file (projected tokens rotate too)
//!    and the `ClusterID` metadata istiod uses to pick the token reviewer.
//! 3. The answer (`cert_chain`: leaf first, root last) is checked: the leaf is for the key just
//!    generated, names the SPIFFE ID and has not expired. Its `notAfter` is read from the DER
//!    ([`der`]), which the rotation driver schedules the renewal from.
//!
//! # Rotation ([`spawn_rotation`])
//! A task requests a certificate at once and then renews at half the remaining lifetime, ±10%;
//! failures are retried with an exponential backoff, and the previous certificate stays in use
//! meanwhile. See [`rotation`].

use std::{
    fmt,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::{
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::transport::{Backoff, error_chain, read_token};

pub(crate) mod der;
pub mod proto;
pub mod rotation;

pub use der::not_after;
pub use rotation::{CaHandle, RotationStatus, spawn_rotation};

use proto::IstioCertificateRequest;

/// Istio's default workload certificate lifetime (`SECRET_TTL`).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The scheme of a SPIFFE ID.
const SPIFFE_SCHEME: &str = "spiffe://";

/// Where the CA is, who the workload is, and what to ask for.
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// The CA's `host:port` (Istio's `CA_ADDR`, `istiod.istio-system.svc:15012`).
    pub address: String,
    /// The PEM file of the root that signed the CA's serving certificate.
    pub ca_root_file: PathBuf,
    /// The name to send as SNI and to verify; the address's host when unset.
    pub server_name: Option<String>,
    /// A file whose trimmed content is sent as `authorization: Bearer <content>`, read for every
    /// request (Istio mounts it at `/var/run/secrets/tokens/istio-token`).
    pub token_file: Option<PathBuf>,
    /// Sent as the `ClusterID` metadata (Istio's `ISTIO_META_CLUSTER_ID`, `Kubernetes`).
    pub cluster_id: Option<String>,
    /// The workload's identity, `spiffe://TRUST-DOMAIN/ns/NS/sa/SA`.
    pub spiffe_id: String,
    /// The kind of key to generate.
    pub key: KeyKind,
    /// The validity to ask for (the CA may grant less).
    pub lifetime: Duration,
    /// How long connecting (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How long the whole call may take once connected.
    pub request_timeout: Duration,
    /// Delays between failed attempts of the rotation driver.
    pub retry: Backoff,
}

/// The kind of private key generated for each certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256 with SHA-256 (Istio's `ECC_SIGNATURE_ALGORITHM=ECDSA`).
    #[default]
    EcdsaP256,
    /// RSA 2048 (Istio's default). Not supported: ring, the crypto library Skiff builds on, cannot
    /// generate RSA keys, so requests with it fail with [`CaError::UnsupportedKey`].
    Rsa2048,
}

/// An issued certificate, as PEM, ready for a TLS stack.
#[derive(Clone)]
pub struct Issued {
    /// The leaf and any intermediates, without the root (Istio's `cert-chain.pem`).
    pub chain_pem: String,
    /// The PKCS#8 private key of the leaf.
    pub key_pem: String,
    /// The root(s): the last element of the CA's answer (Istio's `root-cert.pem`).
    pub root_pem: String,
    /// When the leaf expires, read from it.
    pub not_after: SystemTime,
}

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The SPIFFE ID is not `spiffe://TRUST-DOMAIN/PATH`.
    #[error("invalid SPIFFE ID {id:?}: expected spiffe://TRUST-DOMAIN/PATH")]
    SpiffeId {
        /// The ID as configured.
        id: String,
    },
    /// The key kind cannot be generated.
    #[error(
        "{kind} keys are not supported: ring, Skiff's crypto library, cannot generate them; use ECDSA P-256 (Istio's ECC_SIGNATURE_ALGORITHM=ECDSA)"
    )]
    UnsupportedKey {
        /// The kind asked for.
        kind: KeyKind,
    },
    /// The lifetime is zero or more than `i64::MAX` seconds.
    #[error("invalid certificate lifetime {lifetime:?}: expected at least one second")]
    Lifetime {
        /// The lifetime as configured.
        lifetime: Duration,
    },
    /// The address or TLS settings are unusable.
    #[error("invalid CA address {address:?}: {reason}")]
    Address {
        /// The address as configured.
        address: String,
        /// What is wrong.
        reason: String,
    },
    /// The CA root file could not be read.
    #[error("cannot read the CA root file {path}: {source}")]
    RootFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token file could not be read, or is not printable ASCII.
    #[error("cannot read the CA token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster ID cannot be sent as gRPC metadata.
    #[error("invalid ClusterID {cluster_id:?}: not printable ASCII")]
    ClusterId {
        /// The value as configured.
        cluster_id: String,
    },
    /// The key or the CSR could not be generated.
    #[error("cannot generate the key or the CSR: {0}")]
    Generate(#[from] rcgen::Error),
    /// The CA could not be reached, or the TLS handshake with it failed.
    #[error("cannot connect to the CA at {address}: {reason}")]
    Connect {
        /// The CA's address.
        address: String,
        /// Why, with its causes.
        reason: String,
    },
    /// The call did not complete in time.
    #[error("the CA at {address} did not answer within {timeout:?}")]
    Timeout {
        /// The CA's address.
        address: String,
        /// The request timeout.
        timeout: Duration,
    },
    /// The CA answered with an error status.
    #[error("the CA at {address} refused the request: {code:?}: {message}", code = status.code(), message = status.message())]
    Refused {
        /// The CA's address.
        address: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// The CA's answer is not a usable certificate for the request.
    #[error("the CA at {address} returned an unusable certificate: {problem}")]
    Response {
        /// The CA's address.
        address: String,
        /// What is wrong with it.
        problem: String,
    },
}

// === impl CaConfig ===

impl CaConfig {
    /// A configuration with the defaults: ECDSA P-256, a 24 h lifetime, no token, no cluster
    /// ID, 10 s to connect, 30 s per call, retries from 1 s doubling to 60 s.
    pub fn new(
        address: impl Into<String>,
        ca_root_file: impl Into<PathBuf>,
        spiffe_id: impl Into<String>,
    ) -> Self {
        Self {
            address: address.into(),
            ca_root_file: ca_root_file.into(),
            server_name: None,
            token_file: None,
            cluster_id: None,
            spiffe_id: spiffe_id.into(),
            key: KeyKind::default(),
            lifetime: DEFAULT_LIFETIME,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
        }
    }

    /// Checks what can be checked without the network or files: the SPIFFE ID, the key kind,
    /// the lifetime, the address and the cluster ID.
    pub fn validate(&self) -> Result<(), CaError> {
        validate_spiffe_id(&self.spiffe_id)?;
        if self.key != KeyKind::EcdsaP256 {
            return Err(CaError::UnsupportedKey { kind: self.key });
        }
        self.validity_seconds()?;
        self.endpoint_without_tls()?;
        self.cluster_id_value()?;
        Ok(())
    }

    /// The lifetime in whole seconds, as the request carries it.
    fn validity_seconds(&self) -> Result<i64, CaError> {
        let seconds = i64::try_from(self.lifetime.as_secs()).unwrap_or(0);
        if seconds < 1 {
            return Err(CaError::Lifetime {
                lifetime: self.lifetime,
            });
        }
        Ok(seconds)
    }

    fn cluster_id_value(&self) -> Result<Option<AsciiMetadataValue>, CaError> {
        self.cluster_id
            .as_deref()
            .map(|id| {
                AsciiMetadataValue::try_from(id).map_err(|_| CaError::ClusterId {
                    cluster_id: id.to_string(),
                })
            })
            .transpose()
    }

    fn address_error(&self, reason: String) -> CaError {
        CaError::Address {
            address: self.address.clone(),
            reason,
        }
    }

    fn endpoint_without_tls(&self) -> Result<Endpoint, CaError> {
        if self.address.contains('/') || !self.address.contains(':') {
            return Err(self.address_error("expected host:port".into()));
        }
        Ok(Endpoint::from_shared(format!("https://{}", self.address))
            .map_err(|e| self.address_error(error_chain(&e)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true))
    }

    /// The endpoint with TLS verified by the CA root file, read now.
    fn endpoint(&self) -> Result<Endpoint, CaError> {
        let pem = std::fs::read(&self.ca_root_file).map_err(|source| CaError::RootFile {
            path: self.ca_root_file.clone(),
            source,
        })?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        self.endpoint_without_tls()?
            .tls_config(tls)
            .map_err(|e| self.address_error(error_chain(&e)))
    }

    /// `authorization` (the token read now) and `clusterid`.
    fn metadata(&self) -> Result<MetadataMap, CaError> {
        let mut metadata = MetadataMap::new();
        if let Some(path) = &self.token_file {
            let bearer = read_token(path).map_err(|source| CaError::Token {
                path: path.clone(),
                source,
            })?;
            metadata.insert("authorization", bearer);
        }
        if let Some(cluster_id) = self.cluster_id_value()? {
            metadata.insert("clusterid", cluster_id);
        }
        Ok(metadata)
    }

    async fn connect(&self) -> Result<Channel, CaError> {
        self.endpoint()?
            .connect()
            .await
            .map_err(|e| CaError::Connect {
                address: self.address.clone(),
                reason: error_chain(&e),
            })
    }
}

// === impl KeyKind ===

impl KeyKind {
    /// The name used in flags and logs: `ecdsa` or `rsa`.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ecdsa",
            KeyKind::Rsa2048 => "rsa",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::EcdsaP256 => "ECDSA P-256",
            KeyKind::Rsa2048 => "RSA 2048",
        })
    }
}

// === impl Issued ===

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Issued")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .field("root_pem", &self.root_pem)
            .field("not_after", &self.not_after)
            .finish()
    }
}

// === impl CaError ===

impl CaError {
    /// The gRPC status code, when the CA answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CaError::Refused { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// Requests one certificate: a new key, a CSR for the SPIFFE ID, one `CreateCertificate` call.
pub async fn request_certificate(config: &CaConfig) -> Result<Issued, CaError> {
    config.validate()?;
    let validity_duration = config.validity_seconds()?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = csr_pem(&key, &config.spiffe_id)?;
    let metadata = config.metadata()?;
    let channel = config.connect().await?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration,
        metadata: None,
    });
    *request.metadata_mut() = metadata;
    let response = tokio::time::timeout(
        config.request_timeout,
        proto::create_certificate(channel, request),
    )
    .await
    .map_err(|_| CaError::Timeout {
        address: config.address.clone(),
        timeout: config.request_timeout,
    })?
    .map_err(|status| CaError::Refused {
        address: config.address.clone(),
        status,
    })?;
    issued(config, &key, response.cert_chain)
}

/// A CSR with an empty subject and `spiffe_id` as its only SAN, PEM.
fn csr_pem(key: &KeyPair, spiffe_id: &str) -> Result<String, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe_id.to_string().try_into().map_err(
        |_| CaError::SpiffeId {
            id: spiffe_id.to_string(),
        },
    )?)];
    Ok(params.serialize_request(key)?.pem()?)
}

fn validate_spiffe_id(id: &str) -> Result<(), CaError> {
    let bad = || CaError::SpiffeId { id: id.to_string() };
    let rest = id.strip_prefix(SPIFFE_SCHEME).ok_or_else(bad)?;
    let (trust_domain, path) = rest.split_once('/').ok_or_else(bad)?;
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if trust_domain.is_empty() || path.is_empty() || !printable(rest) {
        return Err(bad());
    }
    Ok(())
}

/// Checks the CA's answer for the request made with `key` and splits it.
fn issued(config: &CaConfig, key: &KeyPair, chain: Vec<String>) -> Result<Issued, CaError> {
    let bad = |problem: String| CaError::Response {
        address: config.address.clone(),
        problem,
    };
    let Some((root_pem, rest)) = chain.split_last().filter(|(_, rest)| !rest.is_empty()) else {
        return Err(bad(format!(
            "{} PEM element(s) in cert_chain; expected the leaf first and the root last",
            chain.len()
        )));
    };
    let mut leaf = None;
    for (index, pem) in chain.iter().enumerate() {
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("cert_chain[{index}] is not PEM: {e}")))?;
        match certificates.into_iter().next() {
            Some(first) if leaf.is_none() => leaf = Some(first),
            Some(_) => {}
            None => return Err(bad(format!("cert_chain[{index}] holds no certificate"))),
        }
    }
    let leaf = leaf.ok_or_else(|| bad("no leaf certificate".into()))?;
    let parsed = der::certificate(&leaf)
        .ok_or_else(|| bad("the leaf is not a DER X.509 certificate".into()))?;
    if parsed.spki.raw != key.subject_public_key_info().as_slice() {
        return Err(bad("the leaf is not for the key of the request".into()));
    }
    let sans = parsed
        .uri_sans()
        .ok_or_else(|| bad("the leaf's extensions are malformed".into()))?;
    if !sans.contains(&config.spiffe_id.as_str()) {
        return Err(bad(format!(
            "the leaf names {sans:?}, not {:?}",
            config.spiffe_id
        )));
    }
    if let Err(e) = parsed.not_after.duration_since(SystemTime::now()) {
        return Err(bad(format!(
            "the leaf expired {} s ago",
            e.duration().as_secs()
        )));
    }
    Ok(Issued {
        chain_pem: rest.iter().map(|pem| with_newline(pem)).collect(),
        key_pem: key.serialize_pem(),
        root_pem: with_newline(root_pem),
        not_after: parsed.not_after,
    })
}

fn with_newline(pem: &str) -> String {
    let mut pem = pem.to_string();
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem
}

#[cfg(test)]
mod tests;
