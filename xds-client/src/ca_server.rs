//! A test Istio CA (feature `server`): `istio.v1.auth.IstioCertificateService/CreateCertificate`
//! over TLS, as istiod serves it on 15012, for tests of the CA client and of the proxy.
//!
//! - **Identity.** A new ECDSA P-256 root per server. The serving certificate is issued by that
//!   root for `istiod.istio-system.svc`, `localhost` and `127.0.0.1`, so a client trusting the
//!   root ([`CaServerHandle::root_pem`]) verifies the server as it would verify istiod.
//! - **Requests.** The CSR is parsed with the crate's own DER reader (its public key and URI SANs)
//!   and its signature verified with ring; a request without a `spiffe://` URI SAN is refused. The
//!   certificate is issued for the CSR's key with an empty subject and the CSR's URI SANs, for
//!   `validity_duration` seconds capped at [`TestCaOptions::max_validity`] (istiod refuses a
//!   longer request instead; capping keeps tests simple), and the answer is `[leaf, root]`.
//!   Unlike istiod, the test CA does not check that the caller may have the SPIFFE ID it asks for.
//! - **Authentication.** With [`TestCaOptions::token`] set, `authorization: Bearer <token>` must
//!   match (`UNAUTHENTICATED` otherwise). The `ClusterID` metadata is recorded.
//! - **Faults.** [`CaServerHandle::set_down`] makes every request fail with `UNAVAILABLE` until
//!   cleared, to test a client's recovery.
//! - **Records.** Every certificate issued ([`IssuedRecord`]) and every request refused
//!   ([`Refusal`]), in order.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    Code, Request, Response, Status,
    metadata::MetadataMap,
    transport::{Identity, ServerTlsConfig},
};

use crate::ca::proto::{IstioCertificateRequest, IstioCertificateResponse};

mod grpc;
mod sign;

pub use sign::{KeyAlgorithm, SignError};

/// The names on the serving certificate.
const SERVING_NAMES: [&str; 3] = ["istiod.istio-system.svc", "localhost", "127.0.0.1"];

/// How the test CA behaves.
#[derive(Clone, Debug)]
pub struct TestCaOptions {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The bearer token callers must present; any caller is accepted when unset.
    pub token: Option<String>,
    /// The trust domain named in the root's subject.
    pub trust_domain: String,
    /// The validity granted when the request asks for none (0 or negative).
    pub default_validity: Duration,
    /// The longest validity granted.
    pub max_validity: Duration,
}

/// The CA: a root, the state of its fault switch, and its records. Cloning is cheap and every
/// clone is the same CA.
#[derive(Clone, Debug)]
pub struct CaServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: TestCaOptions,
    root: Issuer<'static, KeyPair>,
    root_pem: String,
    down: AtomicBool,
    records: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    issued: Vec<IssuedRecord>,
    refused: Vec<Refusal>,
}

/// A certificate the CA issued.
#[derive(Clone, Debug)]
pub struct IssuedRecord {
    /// The URI SANs of the request, now the certificate's.
    pub uri_sans: Vec<String>,
    /// The `ClusterID` metadata of the request.
    pub cluster_id: Option<String>,
    /// The requested key's algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Whether the CSR's subject was empty (Istio's are).
    pub csr_subject_empty: bool,
    /// The validity asked for, in seconds.
    pub requested_validity: i64,
    /// The validity granted.
    pub validity: Duration,
    /// The certificate's `notAfter`.
    pub not_after: SystemTime,
    /// The certificate, PEM.
    pub certificate_pem: String,
}

/// A request the CA refused.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The status code answered.
    pub code: Code,
    /// The status message answered.
    pub message: String,
    /// The `ClusterID` metadata of the request.
    pub cluster_id: Option<String>,
}

/// Why the test CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaServerError {
    /// The root or the serving certificate could not be generated.
    #[error("cannot generate the test CA's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// The listen address could not be bound.
    #[error("cannot bind the test CA to {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS identity was refused by the gRPC server.
    #[error("the test CA's TLS identity is unusable: {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// A running test CA. Dropping it leaves the server running; [`shutdown`](Self::shutdown) stops
/// it.
#[derive(Debug)]
pub struct CaServerHandle {
    /// The bound address.
    pub addr: SocketAddr,
    /// The root, PEM: what clients must trust for the server and the certificates it issues.
    pub root_pem: String,
    ca: CaServer,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

// === impl TestCaOptions ===

impl Default for TestCaOptions {
    /// Loopback on a free port, no token, `cluster.local`, 24 h by default and at most 90 days
    /// (istiod's `DEFAULT_WORKLOAD_CERT_TTL` and `MAX_WORKLOAD_CERT_TTL`).
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            trust_domain: "cluster.local".into(),
            default_validity: Duration::from_secs(24 * 3600),
            max_validity: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

// === impl CaServer ===

impl CaServer {
    /// A CA with a new root.
    pub fn new(options: TestCaOptions) -> Result<Self, CaServerError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, options.trust_domain.as_str());
        params
            .distinguished_name
            .push(DnType::CommonName, "Skiff test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 86_400)).into();
        let root_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                root: Issuer::new(params, key),
                root_pem,
                down: AtomicBool::new(false),
                records: Mutex::default(),
            }),
        })
    }

    /// A CA with a new root, serving on `options.listen`, in a task of the current runtime.
    pub async fn start(options: TestCaOptions) -> Result<CaServerHandle, CaServerError> {
        let listen = options.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| CaServerError::Bind {
                address: listen,
                source,
            })?;
        Self::new(options)?.serve(listener)
    }

    /// Serves the CA over TLS on `listener`, in a task of the current runtime.
    pub fn serve(&self, listener: TcpListener) -> Result<CaServerHandle, CaServerError> {
        let addr = listener
            .local_addr()
            .map_err(|source| CaServerError::Bind {
                address: self.inner.options.listen,
                source,
            })?;
        let (cert_pem, key_pem) = self.serving_identity()?;
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
        let builder = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(CaServerError::Tls)?;
        let (shutdown, mut signal) = watch::channel(false);
        let task = tokio::spawn(builder.serve_with_incoming_shutdown(
            grpc::CaService::new(self.clone()),
            TcpListenerStream::new(listener),
            async move {
                // A dropped handle leaves the server running.
                if signal.wait_for(|&stop| stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            },
        ));
        tracing::info!(%addr, "test CA listening");
        Ok(CaServerHandle {
            addr,
            root_pem: self.inner.root_pem.clone(),
            ca: self.clone(),
            shutdown,
            task,
        })
    }

    /// The root, PEM.
    pub fn root_pem(&self) -> &str {
        &self.inner.root_pem
    }

    /// Makes every request fail with `UNAVAILABLE` (`true`) or be served again (`false`).
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::Release);
    }

    /// The certificates issued so far, oldest first.
    pub fn issued(&self) -> Vec<IssuedRecord> {
        self.records().issued.clone()
    }

    /// The requests refused so far, oldest first.
    pub fn refused(&self) -> Vec<Refusal> {
        self.records().refused.clone()
    }

    /// Signs a PEM CSR for `requested_validity` seconds (0 or less: the default), as a
    /// successful `CreateCertificate` would; records nothing. Returns `[leaf, root]`.
    pub fn sign(
        &self,
        csr_pem: &str,
        requested_validity: i64,
    ) -> Result<(Vec<String>, IssuedRecord), SignError> {
        let validity = self.validity(requested_validity);
        let signed = sign::sign(&self.inner.root, csr_pem, validity)?;
        let record = IssuedRecord {
            uri_sans: signed.uri_sans,
            cluster_id: None,
            key_algorithm: signed.key_algorithm,
            csr_subject_empty: signed.subject_empty,
            requested_validity,
            validity,
            not_after: signed.not_after,
            certificate_pem: signed.pem.clone(),
        };
        Ok((vec![signed.pem, self.inner.root_pem.clone()], record))
    }

    /// The validity granted for a request of `requested` seconds.
    fn validity(&self, requested: i64) -> Duration {
        let options = &self.inner.options;
        match u64::try_from(requested) {
            Ok(seconds) if seconds > 0 => Duration::from_secs(seconds).min(options.max_validity),
            _ => options.default_validity,
        }
    }

    /// One `CreateCertificate` call: checks, signs and records.
    fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let cluster_id = ascii(request.metadata(), "clusterid");
        let outcome = self.check_caller(request.metadata()).and_then(|()| {
            let request = request.get_ref();
            self.sign(&request.csr, request.validity_duration)
                .map_err(|e| e.to_status())
        });
        let mut records = self.records();
        match outcome {
            Ok((cert_chain, record)) => {
                tracing::info!(sans = ?record.uri_sans, validity = ?record.validity, "test CA: issued");
                records.issued.push(IssuedRecord {
                    cluster_id,
                    ..record
                });
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(status) => {
                tracing::info!(code = ?status.code(), message = status.message(), "test CA: refused");
                records.refused.push(Refusal {
                    code: status.code(),
                    message: status.message().to_string(),
                    cluster_id,
                });
                Err(status)
            }
        }
    }

    /// The fault switch, then the bearer token.
    fn check_caller(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.inner.down.load(Ordering::Acquire) {
            return Err(Status::unavailable("the test CA is down (set_down)"));
        }
        let Some(token) = &self.inner.options.token else {
            return Ok(());
        };
        match ascii(metadata, "authorization") {
            Some(value) if value.strip_prefix("Bearer ") == Some(token.as_str()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "the bearer token is not the expected one",
            )),
            None => Err(Status::unauthenticated(
                "no authorization: Bearer <token> metadata",
            )),
        }
    }

    /// A serving certificate for [`SERVING_NAMES`] issued by the root, and its key, PEM.
    fn serving_identity(&self) -> Result<(String, String), CaServerError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(
            SERVING_NAMES
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
        )?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, SERVING_NAMES[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(365 * 86_400)).into();
        let cert = params.signed_by(&key, &self.inner.root)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panic elsewhere cannot leave the records half-written: each update is one push.
        self.inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl CaServerHandle ===

impl CaServerHandle {
    /// The CA being served.
    pub fn ca(&self) -> &CaServer {
        &self.ca
    }

    /// Makes every request fail with `UNAVAILABLE` (`true`) or be served again (`false`).
    pub fn set_down(&self, down: bool) {
        self.ca.set_down(down);
    }

    /// The certificates issued so far, oldest first.
    pub fn issued(&self) -> Vec<IssuedRecord> {
        self.ca.issued()
    }

    /// The requests refused so far, oldest first.
    pub fn refused(&self) -> Vec<Refusal> {
        self.ca.refused()
    }

    /// Writes the root to `path`, for clients that read it from a file.
    pub fn write_root(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.root_pem)
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        if let Ok(Err(error)) = self.task.await {
            tracing::warn!(%error, "the test CA stopped with an error");
        }
    }
}

/// A metadata value, if present and ASCII.
fn ascii(metadata: &MetadataMap, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests;
