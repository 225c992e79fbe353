//! Workload certificates from an Istio CA (`--ca-address`), as pilot-agent provides them to
//! Envoy: the rotation driver of [`xds_client::ca`] requests a certificate for the workload's
//! SPIFFE ID and renews it at half its lifetime, and each one issued is installed as the secrets
//! `default` (chain and key) and `ROOTCA` (the CA's root). Handshakes read them through their
//! slots, so new connections use a renewed certificate at once and open ones keep theirs.

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use xds_client::ca::{CaConfig, CaError, CaHandle, Issued, KeyKind};

use super::secrets::{Identity, ROOT_SECRET, SecretError, TrustRoots, WORKLOAD_SECRET, slot};
use crate::config::{SecretData, parse_cert_key, parse_roots};

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Istio's default cluster ID (`ISTIO_META_CLUSTER_ID`).
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// Where Istio mounts the root of istiod's serving certificate.
pub const DEFAULT_ROOT_CERT: &str = "/var/run/secrets/istio/root-cert.pem";

/// How long startup waits for the first certificate before listeners take traffic. After it,
/// startup goes on and handshakes needing `default` fail until the certificate arrives.
const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(5);

/// The CA settings from flags, before the SPIFFE ID is resolved.
#[derive(Clone, Debug)]
pub struct CaFlags {
    /// `--ca-address`: the CA's `host:port`.
    pub address: String,
    /// `--ca-root-cert`: the root of the CA's serving certificate.
    pub root_cert: PathBuf,
    /// `--ca-token-file`: the bearer token, re-read for every request.
    pub token_file: Option<PathBuf>,
    /// `--ca-cluster-id`: the `ClusterID` metadata.
    pub cluster_id: String,
    /// `--spiffe-id`; derived from `POD_NAMESPACE` and `SERVICE_ACCOUNT` when unset.
    pub spiffe_id: Option<String>,
    /// `--workload-cert-ttl-s`: the lifetime asked for.
    pub lifetime: Duration,
    /// `--ca-key-kind`.
    pub key: KeyKind,
}

/// Why the CA client could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaSetupError {
    /// No `--spiffe-id`, and the pod environment does not give one.
    #[error(
        "--ca-address needs the workload's identity: pass --spiffe-id, or set POD_NAMESPACE and SERVICE_ACCOUNT (for spiffe://{DEFAULT_TRUST_DOMAIN}/ns/NS/sa/SA); {missing}"
    )]
    NoIdentity {
        /// Which environment variables are missing, as a sentence.
        missing: &'static str,
    },
    /// The settings are unusable.
    #[error("invalid CA settings: {0}")]
    Config(#[from] CaError),
}

/// Why an issued certificate could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The PEM could not be parsed.
    #[error("the issued {what} cannot be parsed: {problem}")]
    Parse {
        /// `certificate` or `root`.
        what: &'static str,
        /// Why.
        problem: String,
    },
    /// rustls or webpki refused it.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

// === impl CaFlags ===

impl CaFlags {
    /// The client configuration, with the SPIFFE ID from the flag or `env` (a lookup of
    /// environment variables, `std::env::var` in the proxy).
    pub fn config(&self, env: impl Fn(&str) -> Option<String>) -> Result<CaConfig, CaSetupError> {
        let spiffe_id = match &self.spiffe_id {
            Some(id) => id.clone(),
            None => default_spiffe_id(
                env("POD_NAMESPACE").as_deref(),
                env("SERVICE_ACCOUNT").as_deref(),
            )?,
        };
        let mut config = CaConfig::new(self.address.clone(), self.root_cert.clone(), spiffe_id);
        config.token_file = self.token_file.clone();
        config.cluster_id = Some(self.cluster_id.clone());
        config.lifetime = self.lifetime;
        config.key = self.key;
        config.validate()?;
        Ok(config)
    }
}

/// `spiffe://cluster.local/ns/NS/sa/SA`, as Istio names a pod's identity.
pub fn default_spiffe_id(
    namespace: Option<&str>,
    service_account: Option<&str>,
) -> Result<String, CaSetupError> {
    let present = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_string);
    match (present(namespace), present(service_account)) {
        (Some(ns), Some(sa)) => Ok(format!("spiffe://{DEFAULT_TRUST_DOMAIN}/ns/{ns}/sa/{sa}")),
        (None, None) => Err(CaSetupError::NoIdentity {
            missing: "neither is set",
        }),
        (None, Some(_)) => Err(CaSetupError::NoIdentity {
            missing: "POD_NAMESPACE is not set",
        }),
        (Some(_), None) => Err(CaSetupError::NoIdentity {
            missing: "SERVICE_ACCOUNT is not set",
        }),
    }
}

/// Starts the rotation driver for `flags` and waits (a few seconds at most) for the first
/// certificate, so that listeners start with it. Must be called within the runtime.
pub async fn start(flags: &CaFlags) -> Result<CaHandle, CaSetupError> {
    let config = flags.config(|name| std::env::var(name).ok())?;
    tracing::info!(ca = %config.address, spiffe_id = %config.spiffe_id, "requesting the workload certificate");
    let handle = xds_client::ca::spawn_rotation(config, |issued| match install(issued) {
        Ok(()) => tracing::info!(
            secrets = ?[WORKLOAD_SECRET, ROOT_SECRET],
            "workload certificate installed"
        ),
        Err(error) => tracing::error!(
            %error,
            "the CA issued a certificate Skiff cannot use; keeping the previous one"
        ),
    });
    if handle
        .wait_until(|s| s.issued > 0, FIRST_CERTIFICATE_WAIT)
        .await
        .is_none()
    {
        tracing::warn!(
            wait = ?FIRST_CERTIFICATE_WAIT,
            last_error = ?handle.status().last_error,
            "no workload certificate yet; TLS needing `default` or `ROOTCA` fails until it arrives"
        );
    }
    Ok(handle)
}

/// Installs `issued` as `default` and `ROOTCA`, checking both before changing either.
pub fn install(issued: &Issued) -> Result<(), InstallError> {
    let certificate = parse_cert_key(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
        .map_err(|problem| InstallError::Parse {
            what: "certificate",
            problem,
        })?;
    let roots = parse_roots(issued.root_pem.as_bytes()).map_err(|problem| InstallError::Parse {
        what: "root",
        problem,
    })?;
    Identity::new(&certificate)?;
    TrustRoots::new(&roots)?;
    slot(WORKLOAD_SECRET).set(&SecretData::Certificate(Arc::new(certificate)))?;
    slot(ROOT_SECRET).set(&SecretData::Roots(Arc::new(roots)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> CaFlags {
        CaFlags {
            address: "istiod.istio-system.svc:15012".into(),
            root_cert: DEFAULT_ROOT_CERT.into(),
            token_file: None,
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            spiffe_id: None,
            lifetime: Duration::from_secs(86_400),
            key: KeyKind::EcdsaP256,
        }
    }

    #[test]
    fn the_spiffe_id_comes_from_the_flag_or_the_pod_environment() {
        let pod = |name: &str| match name {
            "POD_NAMESPACE" => Some("shop".to_string()),
            "SERVICE_ACCOUNT" => Some("web".to_string()),
            _ => None,
        };
        let config = flags().config(pod).unwrap();
        assert_eq!(config.spiffe_id, "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(config.cluster_id.as_deref(), Some("Kubernetes"));
        let mut explicit = flags();
        explicit.spiffe_id = Some("spiffe://example.org/ns/a/sa/b".into());
        assert_eq!(
            explicit.config(pod).unwrap().spiffe_id,
            "spiffe://example.org/ns/a/sa/b"
        );
    }

    #[test]
    fn a_missing_identity_or_bad_setting_is_a_clear_error() {
        let err = flags().config(|_| None).unwrap_err().to_string();
        assert!(
            err.contains("--spiffe-id") && err.ends_with("neither is set"),
            "{err}"
        );
        let only_ns = |n: &str| (n == "POD_NAMESPACE").then(|| "shop".to_string());
        let err = flags().config(only_ns).unwrap_err().to_string();
        assert!(err.ends_with("SERVICE_ACCOUNT is not set"), "{err}");
        let mut rsa = flags();
        rsa.spiffe_id = Some("spiffe://cluster.local/ns/a/sa/b".into());
        rsa.key = KeyKind::Rsa2048;
        let err = rsa.config(|_| None).unwrap_err().to_string();
        assert!(err.contains("RSA 2048 keys are not supported"), "{err}");
    }
}
