//! Named secrets at run time: one [`Slot`] per name (`default`, `ROOTCA`, ...), filled by
//! whoever serves it (static bootstrap secrets, SDS, watched files) and read by every handshake.
//!
//! A slot's value is swapped whole (`ArcSwap`), so a handshake sees either the old or the new
//! certificate, never a mix, and takes no lock.

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::config::{CertKey, Roots, SecretData};

/// One named secret: empty until its first delivery.
pub struct Slot {
    name: Arc<str>,
    value: ArcSwapOption<Loaded>,
    /// Bumped on every change, so tests and the admin API can see deliveries.
    version: std::sync::atomic::AtomicU64,
}

/// A delivered secret, ready for handshakes.
#[derive(Debug)]
pub enum Loaded {
    /// A certificate chain with its key.
    Certificate(Arc<Identity>),
    /// Trusted roots.
    Roots(Arc<TrustRoots>),
}

/// This proxy's certificate: what rustls presents, and the SPIFFE ID it carries.
pub struct Identity {
    /// The chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// The leaf's `spiffe://` URI SAN.
    pub spiffe_id: Option<Arc<str>>,
}

/// Trusted root certificates as webpki trust anchors.
#[derive(Debug)]
pub struct TrustRoots {
    /// The anchors.
    pub anchors: Vec<TrustAnchor<'static>>,
}

/// Why a secret could not be made usable.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The private key is of a kind rustls cannot sign with.
    #[error("unusable private key: {0}")]
    Key(rustls::Error),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(rustls::Error),
    /// A root certificate cannot be a trust anchor.
    #[error("root certificate {index} cannot be used: {source}")]
    Root {
        /// Its position in the bundle.
        index: usize,
        /// Why.
        source: webpki::Error,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

static REGISTRY: LazyLock<Mutex<HashMap<Arc<str>, Arc<Slot>>>> = LazyLock::new(Default::default);

/// The slot of the secret called `name`, created empty on first use.
pub fn slot(name: &str) -> Arc<Slot> {
    let mut slots = REGISTRY
        .lock()
        .expect("the secret registry lock is never poisoned");
    if let Some(s) = slots.get(name) {
        return s.clone();
    }
    let name: Arc<str> = name.into();
    let s = Arc::new(Slot {
        name: name.clone(),
        value: ArcSwapOption::empty(),
        version: Default::default(),
    });
    slots.insert(name, s.clone());
    s
}

/// Every slot, by name, for `/config_dump` and `/stats`.
pub fn all() -> Vec<Arc<Slot>> {
    let slots = REGISTRY
        .lock()
        .expect("the secret registry lock is never poisoned");
    let mut v: Vec<_> = slots.values().cloned().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

// === impl Slot ===

impl Slot {
    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate, if one has been delivered.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        match self.value.load().as_deref() {
            Some(Loaded::Certificate(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// The roots, if they have been delivered.
    pub fn roots(&self) -> Option<Arc<TrustRoots>> {
        match self.value.load().as_deref() {
            Some(Loaded::Roots(r)) => Some(r.clone()),
            _ => None,
        }
    }

    /// The current value.
    pub fn loaded(&self) -> Option<Arc<Loaded>> {
        self.value.load_full()
    }

    /// How many times the value has changed.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Replaces the value: new handshakes use it at once.
    pub fn set(&self, data: &SecretData) -> Result<(), SecretError> {
        let loaded = match data {
            SecretData::Certificate(c) => Loaded::Certificate(Arc::new(Identity::new(c)?)),
            SecretData::Roots(r) => Loaded::Roots(Arc::new(TrustRoots::new(r)?)),
        };
        self.value.store(Some(Arc::new(loaded)));
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Empties the slot (the secret was removed): handshakes needing it fail until it returns.
    pub fn clear(&self) {
        self.value.store(None);
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .field("loaded", &self.value.load().is_some())
            .finish()
    }
}

// === impl Identity ===

impl Identity {
    /// Makes a chain and key usable by rustls.
    pub fn new(c: &CertKey) -> Result<Self, SecretError> {
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&c.key).map_err(SecretError::Key)?;
        let spiffe_id = c.chain.first().and_then(super::spiffe_id).map(Into::into);
        let key = CertifiedKey::new(c.chain.clone(), signer);
        // A key that is not the certificate's (a half-written rotation) would fail every
        // handshake; refuse it here instead.
        key.keys_match().map_err(SecretError::Mismatch)?;
        Ok(Self {
            key: Arc::new(key),
            spiffe_id,
        })
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.key.cert.first()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain", &self.key.cert.len())
            .finish()
    }
}

// === impl TrustRoots ===

impl TrustRoots {
    /// Makes root certificates into trust anchors.
    pub fn new(r: &Roots) -> Result<Self, SecretError> {
        let anchors = r
            .certificates
            .iter()
            .enumerate()
            .map(|(index, c)| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|source| SecretError::Root { index, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { anchors })
    }
}

/// Istio's mounted-certificate layout: `cert-chain.pem`, `key.pem` and `root-cert.pem` in one
/// directory (`/etc/certs`), served as the secrets `default` and `ROOTCA`.
#[derive(Clone, Debug)]
pub struct CertDir {
    /// The directory.
    pub dir: PathBuf,
}

/// What a [`CertDir`] holds, parsed.
#[derive(Debug)]
pub struct CertFiles {
    /// `cert-chain.pem` and `key.pem`.
    pub certificate: SecretData,
    /// `root-cert.pem`.
    pub roots: SecretData,
}

/// The name Istio gives the workload certificate secret.
pub const WORKLOAD_SECRET: &str = "default";
/// The name Istio gives the root bundle secret.
pub const ROOT_SECRET: &str = "ROOTCA";

// === impl CertDir ===

impl CertDir {
    const CHAIN: &'static str = "cert-chain.pem";
    const KEY: &'static str = "key.pem";
    const ROOT: &'static str = "root-cert.pem";

    /// Reads and parses the three files.
    pub fn read(&self) -> Result<CertFiles, SecretError> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read(&path).map_err(|e| SecretError::File {
                path,
                problem: e.to_string(),
            })
        };
        let (chain, key, root) = (read(Self::CHAIN)?, read(Self::KEY)?, read(Self::ROOT)?);
        let bad = |name: &str, problem: String| SecretError::File {
            path: self.dir.join(name),
            problem,
        };
        let cert = crate::config::parse_cert_key(&chain, &key).map_err(|p| bad(Self::CHAIN, p))?;
        let roots = crate::config::parse_roots(&root).map_err(|p| bad(Self::ROOT, p))?;
        Ok(CertFiles {
            certificate: SecretData::Certificate(Arc::new(cert)),
            roots: SecretData::Roots(Arc::new(roots)),
        })
    }

    /// Loads the files into the `default` and `ROOTCA` slots, then reloads them whenever a
    /// file changes (polled every `every`). A bad reload is logged and the previous secrets
    /// stay in force.
    pub fn load_and_watch(self, every: Duration) -> Result<(), SecretError> {
        let files = self.read()?;
        install(&files)?;
        tracing::info!(dir = %self.dir.display(), "certificates loaded");
        let paths = [Self::CHAIN, Self::KEY, Self::ROOT].map(|f| self.dir.join(f));
        watch_files(paths.to_vec(), every, move || {
            self.read().and_then(|f| install(&f))
        });
        Ok(())
    }
}

/// Calls `reload` whenever one of `paths` changes (modification time or size, polled every
/// `every`). Files are often replaced one by one: a failed reload is tried again at the next
/// poll, and reported once per state of the files; the previous secrets stay in force.
pub fn watch_files(
    paths: Vec<PathBuf>,
    every: Duration,
    mut reload: impl FnMut() -> Result<(), SecretError> + Send + 'static,
) {
    let stamp = move || -> Vec<Option<(SystemTime, u64)>> {
        paths
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    };
    let mut installed = stamp();
    let mut warned = None;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let now = stamp();
            if now == installed {
                continue;
            }
            match reload() {
                Ok(()) => {
                    installed = now;
                    tracing::info!("certificate files reloaded");
                }
                Err(e) if warned.as_ref() != Some(&now) => {
                    warned = Some(now);
                    tracing::warn!(error = %e, "certificate files not reloaded; keeping the previous secrets");
                }
                Err(_) => {}
            }
        }
    });
}

fn install(files: &CertFiles) -> Result<(), SecretError> {
    // Check both before changing either.
    if let SecretData::Certificate(c) = &files.certificate {
        Identity::new(c)?;
    }
    if let SecretData::Roots(r) = &files.roots {
        TrustRoots::new(r)?;
    }
    slot(WORKLOAD_SECRET).set(&files.certificate)?;
    slot(ROOT_SECRET).set(&files.roots)?;
    Ok(())
}
