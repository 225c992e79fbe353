//! The CA client against the test CA over real gRPC and TLS on loopback: issuance, token checks,
//! TLS trust, rotation at half-life and recovery after the CA was down.
#![cfg(feature = "server")]

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use tonic::Code;
use xds_client::{
    ca::{self, CaConfig, CaError, Issued, KeyKind},
    ca_server::{CaServer, CaServerHandle, KeyAlgorithm, TestCaOptions},
    transport::Backoff,
};

const ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const TOKEN: &str = "header.payload.signature";
const WAIT: Duration = Duration::from_secs(10);

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "skiff-ca-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA requiring `TOKEN`, and a client configuration for it: the root and the token in
/// files, as Istio mounts them.
async fn setup(tag: &str) -> (CaServerHandle, CaConfig, TempDir) {
    let server = CaServer::start(TestCaOptions {
        token: Some(TOKEN.into()),
        ..TestCaOptions::default()
    })
    .await
    .unwrap();
    let dir = TempDir::new(tag);
    server.write_root(&dir.path("root-cert.pem")).unwrap();
    std::fs::write(dir.path("istio-token"), format!("{TOKEN}\n")).unwrap();
    let mut config = CaConfig::new(server.addr.to_string(), dir.path("root-cert.pem"), ID);
    config.token_file = Some(dir.path("istio-token"));
    config.cluster_id = Some("Kubernetes".into());
    config.lifetime = Duration::from_secs(3600);
    (server, config, dir)
}

/// Checks that `issued` chains to `root_pem` for both TLS usages and names only `ID`; returns the
/// leaf.
fn verify(issued: &Issued, root_pem: &str) -> CertificateDer<'static> {
    assert_eq!(issued.root_pem, root_pem);
    let root = CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let (leaf, intermediates) = chain.split_first().expect("a leaf");
    let ee = webpki::EndEntityCert::try_from(leaf).unwrap();
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .expect("the leaf chains to the CA root");
    }
    assert_eq!(ee.valid_uri_names().collect::<Vec<_>>(), vec![ID]);
    leaf.clone()
}

#[tokio::test]
async fn a_certificate_is_issued_for_a_fresh_ecdsa_key_and_the_spiffe_id() {
    let (server, config, _dir) = setup("issue").await;
    let before = SystemTime::now();
    let issued = ca::request_certificate(&config).await.unwrap();
    let leaf = verify(&issued, &server.root_pem);

    // The key is a PKCS#8 ECDSA P-256 key, and it is the leaf's.
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let PrivateKeyDer::Pkcs8(pkcs8) = &key else {
        panic!("not PKCS#8: {key:?}");
    };
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.secret_pkcs8_der(),
        &rng,
    )
    .expect("an ECDSA P-256 key");
    let signature = pair.sign(&rng, b"hello").unwrap();
    webpki::EndEntityCert::try_from(&leaf)
        .unwrap()
        .verify_signature(
            webpki::ring::ECDSA_P256_SHA256,
            b"hello",
            signature.as_ref(),
        )
        .expect("the leaf's key signed it");

    // notAfter is the certificate's: an hour from the request, to the second.
    let lifetime = issued.not_after.duration_since(before).unwrap();
    assert!(
        lifetime > Duration::from_secs(3598) && lifetime <= Duration::from_secs(3601),
        "{lifetime:?}"
    );
    assert_eq!(ca::not_after(&leaf), Some(issued.not_after));

    // What the CA saw: Istio's CSR shape, the validity asked, the cluster.
    let records = server.issued();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.uri_sans, vec![ID]);
    assert!(r.csr_subject_empty);
    assert_eq!(r.key_algorithm, KeyAlgorithm::EcdsaP256);
    assert_eq!(r.requested_validity, 3600);
    assert_eq!(r.cluster_id.as_deref(), Some("Kubernetes"));
    assert_eq!(r.not_after, issued.not_after);
    // Every request has its own key.
    let again = ca::request_certificate(&config).await.unwrap();
    assert_ne!(again.key_pem, issued.key_pem);
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_and_the_file_is_reread() {
    let (server, mut config, dir) = setup("token").await;
    std::fs::write(dir.path("istio-token"), "someone-else").unwrap();
    let err = ca::request_certificate(&config).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert!(
        err.to_string().contains(&server.addr.to_string()),
        "names the CA: {err}"
    );

    // The token is read for every request: a rotated token works at once.
    std::fs::write(dir.path("istio-token"), TOKEN).unwrap();
    ca::request_certificate(&config).await.unwrap();

    config.token_file = None;
    let err = ca::request_certificate(&config).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");

    let refused = server.refused();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|r| r.code == Code::Unauthenticated));
    assert_eq!(refused[0].cluster_id.as_deref(), Some("Kubernetes"));
    assert_eq!(server.issued().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_ca_not_signed_by_the_configured_root_is_not_trusted() {
    let (server, config, dir) = setup("trust").await;
    let other = CaServer::new(TestCaOptions::default()).unwrap();
    std::fs::write(dir.path("root-cert.pem"), other.root_pem()).unwrap();
    let err = ca::request_certificate(&config).await.unwrap_err();
    assert!(matches!(err, CaError::Connect { .. }), "{err}");
    assert!(server.issued().is_empty() && server.refused().is_empty());

    // The root file is read for every request too.
    server.write_root(&dir.path("root-cert.pem")).unwrap();
    ca::request_certificate(&config).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn rsa_keys_are_refused_before_contacting_the_ca() {
    let (server, mut config, _dir) = setup("rsa").await;
    config.key = KeyKind::Rsa2048;
    let err = ca::request_certificate(&config).await.unwrap_err();
    assert!(matches!(err, CaError::UnsupportedKey { .. }), "{err}");
    assert!(server.issued().is_empty() && server.refused().is_empty());
    server.shutdown().await;
}

/// What the rotation callback saw: when, and which certificate.
type Deliveries = Arc<Mutex<Vec<(Instant, Issued)>>>;

fn recorder() -> (Deliveries, impl Fn(&Issued) + Send + 'static) {
    let seen: Deliveries = Arc::default();
    let sink = seen.clone();
    (seen, move |issued: &Issued| {
        sink.lock().unwrap().push((Instant::now(), issued.clone()));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_renews_at_half_the_remaining_lifetime() {
    let (server, mut config, _dir) = setup("rotate").await;
    config.lifetime = Duration::from_secs(4);
    let (seen, on_issued) = recorder();
    let handle = ca::spawn_rotation(config, on_issued);
    let status = handle
        .wait_until(|s| s.issued >= 3, WAIT)
        .await
        .unwrap_or_else(|| panic!("three issuances within {WAIT:?}: {:?}", handle.status()));
    assert_eq!(status.failures, 0);
    handle.shutdown();

    let seen = seen.lock().unwrap().clone();
    for pair in seen.windows(2) {
        let ((t0, first), (t1, second)) = (&pair[0], &pair[1]);
        // 4 s certificates (notAfter to the second, so 3 to 4 s left) renew after 1.35 to
        // 2.2 s, plus the time of the call itself.
        let gap = t1.duration_since(*t0);
        assert!(
            gap >= Duration::from_millis(1300) && gap <= Duration::from_millis(3000),
            "renewed after {gap:?}"
        );
        assert!(second.not_after > first.not_after);
        assert_ne!(second.key_pem, first.key_pem, "a new key each time");
        verify(second, &server.root_pem);
    }
    assert_eq!(server.issued().len(), seen.len());
    assert!(server.issued().iter().all(|r| r.requested_validity == 4));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_certificate_through_ca_downtime_and_recovers() {
    let (server, mut config, _dir) = setup("recover").await;
    config.lifetime = Duration::from_secs(4);
    config.retry = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_millis(800),
    };
    let (seen, on_issued) = recorder();
    let handle = ca::spawn_rotation(config, on_issued);
    handle.wait_until(|s| s.issued == 1, WAIT).await.unwrap();

    // Down before the renewal is due: renewals fail, are counted, and retried.
    server.set_down(true);
    let status = handle
        .wait_until(|s| s.failures >= 3, WAIT)
        .await
        .unwrap_or_else(|| panic!("failures counted: {:?}", handle.status()));
    assert_eq!(status.issued, 1);
    let reason = status.last_error.unwrap();
    assert!(
        reason.contains("Unavailable") && reason.contains("down"),
        "{reason}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "the first certificate stays");
    assert!(server.refused().iter().all(|r| r.code == Code::Unavailable));

    // Back up: the next retry succeeds.
    server.set_down(false);
    let status = handle
        .wait_until(|s| s.issued == 2, WAIT)
        .await
        .unwrap_or_else(|| panic!("issued after recovery: {:?}", handle.status()));
    assert!(status.failures >= 3);
    assert_eq!(status.last_error, None);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].1.not_after > seen[0].1.not_after);
    verify(&seen[1].1, &server.root_pem);
    handle.shutdown();
    server.shutdown().await;
}
