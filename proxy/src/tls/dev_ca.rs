//! A development CA (`proxy dev-ca`): a root and workload certificates for given SPIFFE IDs,
//! written in Istio's mounted-certificate layout, so mTLS runs locally with no other tool.
//!
//! The root key is kept beside the root (`root-key.pem`), so later runs with the same
//! directory and trust domain issue more workloads under the same root.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why the dev CA could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A SPIFFE ID is malformed.
    #[error("'{0}' is not a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH)")]
    BadId(String),
}

/// A root CA.
#[derive(Debug)]
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
}

/// A workload certificate, as PEM.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The leaf certificate (the chain: the root is not included, as Istio's `cert-chain.pem`
    /// for a self-signed root).
    pub chain_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// How long a workload certificate is valid, from when.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// The start.
    pub not_before: SystemTime,
    /// The end.
    pub not_after: SystemTime,
}

// === impl Validity ===

impl Validity {
    /// From an hour ago (clock skew) for `lifetime`.
    pub fn for_lifetime(lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - Duration::from_secs(3600),
            not_after: now + lifetime,
        }
    }

    /// Expired a day ago.
    pub fn expired() -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - Duration::from_secs(3 * 86_400),
            not_after: now - Duration::from_secs(86_400),
        }
    }
}

// === impl DevCa ===

impl DevCa {
    /// A new root for `trust_domain`, valid for ten years.
    pub fn generate(trust_domain: &str) -> Result<Self, DevCaError> {
        Self::with_key(trust_domain, KeyPair::generate()?)
    }

    /// The root of `dir` (`root-key.pem`), created there if absent.
    pub fn open_or_create(dir: &Path, trust_domain: &str) -> Result<Self, DevCaError> {
        let key_path = dir.join("root-key.pem");
        let ca = match std::fs::read_to_string(&key_path) {
            Ok(pem) => Self::with_key(trust_domain, KeyPair::from_pem(&pem)?)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ca = Self::generate(trust_domain)?;
                write_private(&key_path, &ca.issuer.key().serialize_pem())?;
                ca
            }
            Err(source) => {
                return Err(DevCaError::Io {
                    path: key_path,
                    source,
                });
            }
        };
        write(&dir.join("root-cert.pem"), &ca.root_pem)?;
        Ok(ca)
    }

    fn with_key(trust_domain: &str, key: KeyPair) -> Result<Self, DevCaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = root_name(trust_domain);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // Fixed dates: the same key always yields the same root, so a later run issues under
        // the root written earlier.
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2044, 1, 1);
        let root = params.self_signed(&key)?;
        Ok(Self {
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Issues a workload certificate for `spiffe_id`, with a new ECDSA P-256 key.
    pub fn issue(&self, spiffe_id: &str, validity: Validity) -> Result<Workload, DevCaError> {
        if !spiffe_id.starts_with("spiffe://") || spiffe_id.len() <= "spiffe://".len() {
            return Err(DevCaError::BadId(spiffe_id.to_string()));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        // Istio's workload certificates have an empty subject and the ID as a URI SAN.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id
                .to_string()
                .try_into()
                .map_err(|_| DevCaError::BadId(spiffe_id.to_string()))?,
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Workload {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues for `spiffe_id` and writes Istio's layout into `dir`: `cert-chain.pem`,
    /// `key.pem`, `root-cert.pem`.
    pub fn write_workload(
        &self,
        dir: &Path,
        spiffe_id: &str,
        validity: Validity,
    ) -> Result<Workload, DevCaError> {
        let w = self.issue(spiffe_id, validity)?;
        std::fs::create_dir_all(dir).map_err(|source| DevCaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        write(&dir.join("cert-chain.pem"), &w.chain_pem)?;
        write_private(&dir.join("key.pem"), &w.key_pem)?;
        write(&dir.join("root-cert.pem"), &self.root_pem)?;
        Ok(w)
    }
}

fn root_name(trust_domain: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "Skiff development root CA");
    dn
}

fn write(path: &Path, text: &str) -> Result<(), DevCaError> {
    std::fs::write(path, text).map_err(|source| DevCaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), DevCaError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let io = |source| DevCaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}
