//! Signing a CSR: parse it (public key, URI SANs), verify its signature, and issue a
//! certificate for its key and SANs.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use ring::signature::{self, VerificationAlgorithm};
use rustls_pki_types::{CertificateSigningRequestDer, pem::PemObject};
use tonic::Status;

use crate::ca::der::{self, Csr, Spki, oid};

/// How far back `notBefore` is set, for clients whose clocks run behind.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The algorithm of a requested key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA (any size ring verifies: 2048 to 8192 bits).
    Rsa,
    /// Ed25519.
    Ed25519,
}

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CSR is not one PEM `CERTIFICATE REQUEST`.
    #[error("the csr field is not a PEM CERTIFICATE REQUEST: {0}")]
    Pem(String),
    /// The DER inside is not a PKCS#10 request.
    #[error("the CSR is not a DER PKCS#10 certification request")]
    Der,
    /// The key is of an algorithm the test CA does not sign for.
    #[error("the CSR's public key algorithm is not ECDSA P-256/P-384, RSA or Ed25519")]
    UnsupportedKey,
    /// The signature algorithm does not fit the key, or is unknown.
    #[error("the CSR's signature algorithm is not supported for a {0:?} key")]
    UnsupportedSignature(KeyAlgorithm),
    /// The signature does not verify with the CSR's key.
    #[error("the CSR's signature does not verify with its public key")]
    BadSignature,
    /// No `spiffe://` URI SAN, or a SAN that is not a valid IA5 string.
    #[error("the CSR names no SPIFFE ID (URI SANs: {0:?})")]
    NoSpiffeId(Vec<String>),
    /// rcgen refused to issue.
    #[error("cannot issue the certificate: {0}")]
    Issue(#[from] rcgen::Error),
}

/// An issued certificate.
#[derive(Debug)]
pub(super) struct Signed {
    pub(super) pem: String,
    pub(super) not_after: SystemTime,
    pub(super) uri_sans: Vec<String>,
    pub(super) key_algorithm: KeyAlgorithm,
    pub(super) subject_empty: bool,
}

/// The CSR's public key, as rcgen writes it into the certificate.
struct RequestedKey<'a> {
    key: &'a [u8],
    algorithm: &'static SignatureAlgorithm,
}

/// Signs `csr_pem` with `issuer` for `validity` from now.
pub(super) fn sign(
    issuer: &Issuer<'_, KeyPair>,
    csr_pem: &str,
    validity: Duration,
) -> Result<Signed, SignError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| SignError::Pem(e.to_string()))?;
    let csr = der::csr(der.as_ref()).ok_or(SignError::Der)?;
    let key_algorithm = KeyAlgorithm::of(&csr.spki).ok_or(SignError::UnsupportedKey)?;
    verify(&csr, key_algorithm)?;
    let uri_sans: Vec<String> = csr.uri_sans.iter().map(|s| s.to_string()).collect();
    if !uri_sans.iter().any(|s| s.starts_with("spiffe://")) {
        return Err(SignError::NoSpiffeId(uri_sans));
    }

    let mut params = CertificateParams::default();
    // Istio's workload certificates have an empty subject; the SAN is then critical.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uri_sans
        .iter()
        .map(|s| {
            s.clone()
                .try_into()
                .map(SanType::URI)
                .map_err(|_| SignError::NoSpiffeId(uri_sans.clone()))
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial());
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + validity).into();
    let requested = RequestedKey {
        key: csr.spki.key,
        algorithm: key_algorithm.rcgen(),
    };
    let cert = params.signed_by(&requested, issuer)?;
    // What the certificate says, to the second, rather than what was asked.
    let not_after = der::not_after(cert.der()).ok_or(SignError::Der)?;
    Ok(Signed {
        pem: cert.pem(),
        not_after,
        uri_sans,
        key_algorithm,
        subject_empty: csr.subject_empty,
    })
}

/// Checks the CSR's signature over its `CertificationRequestInfo` with its own key.
fn verify(csr: &Csr<'_>, key: KeyAlgorithm) -> Result<(), SignError> {
    let algorithm = key
        .verification(csr.signature_algorithm.oid)
        .ok_or(SignError::UnsupportedSignature(key))?;
    signature::UnparsedPublicKey::new(algorithm, csr.spki.key)
        .verify(csr.info, csr.signature)
        .map_err(|_| SignError::BadSignature)
}

/// A random positive serial number of 16 octets.
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // On failure the serial stays zero bits but for the one below, which still signs.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

// === impl KeyAlgorithm ===

impl KeyAlgorithm {
    /// The algorithm of a `SubjectPublicKeyInfo`.
    fn of(spki: &Spki<'_>) -> Option<Self> {
        let curve = spki
            .algorithm
            .parameters
            .filter(|p| p.tag == der::OID)
            .map(|p| p.value);
        match spki.algorithm.oid {
            oid::EC_PUBLIC_KEY if curve == Some(oid::P256) => Some(Self::EcdsaP256),
            oid::EC_PUBLIC_KEY if curve == Some(oid::P384) => Some(Self::EcdsaP384),
            oid::RSA_ENCRYPTION => Some(Self::Rsa),
            oid::ED25519 if spki.algorithm.parameters.is_none() => Some(Self::Ed25519),
            _ => None,
        }
    }

    /// The ring algorithm verifying a signature of `signature_oid` by this kind of key.
    fn verification(self, signature_oid: &[u8]) -> Option<&'static dyn VerificationAlgorithm> {
        Some(match (self, signature_oid) {
            (Self::EcdsaP256, oid::ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
            (Self::EcdsaP256, oid::ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
            (Self::EcdsaP384, oid::ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
            (Self::EcdsaP384, oid::ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
            (Self::Rsa, oid::RSA_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Self::Ed25519, oid::ED25519) => &signature::ED25519,
            _ => return None,
        })
    }

    /// An rcgen algorithm whose key identifiers match (rcgen writes the key's algorithm from it).
    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa => &rcgen::PKCS_RSA_SHA256,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

// === impl SignError ===

impl SignError {
    /// The one place a signing failure becomes a gRPC status.
    pub(super) fn to_status(&self) -> Status {
        match self {
            SignError::Issue(_) => Status::internal(self.to_string()),
            _ => Status::invalid_argument(self.to_string()),
        }
    }
}

// === impl RequestedKey ===

impl PublicKeyData for RequestedKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}
