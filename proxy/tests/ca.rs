//! Workload certificates from an Istio CA: the real `proxy` binary with `--ca-address` against the
//! test CA (real gRPC over TLS on loopback). Its TLS listener names the SDS secrets `default` and
//! `ROOTCA` on ADS, as istiod's inbound chains do; the CA client fills them, and renews them.

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime, pem::PemObject,
};
use support::{Proxy, TCP_PROXY, TempDir, echo_server, http_get};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use xds_client::{
    ca::{self, CaConfig},
    ca_server::{CaServer, CaServerHandle, TestCaOptions},
};

const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const TOKEN: &str = "istio-token-for-server";
const WAIT: Duration = Duration::from_secs(15);

/// A TLS listener requiring a client certificate from the `shop` namespace, with its
/// certificate and roots from SDS on ADS, forwarding to `echo`.
fn bootstrap(echo: SocketAddr) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: inbound_tls
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - {{name: default, sds_config: {{ads: {{}}, resource_api_version: V3}}}}
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{{san_type: URI, matcher: {{prefix: "spiffe://cluster.local/ns/shop/"}}}}]
              validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {{ads: {{}}, resource_api_version: V3}}}}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: inbound_tls, cluster: echo}}
  clusters:
  - name: echo
    connect_timeout: 1s
    load_assignment: {{cluster_name: echo, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}
"#,
        port = echo.port()
    )
}

/// Accepts a server certificate that chains to the CA root, whatever its names (a workload
/// certificate carries only a SPIFFE ID), and keeps the last one seen.
#[derive(Debug)]
struct ChainsToRoot {
    root: TrustAnchor<'static>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for ChainsToRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        webpki::EndEntityCert::try_from(end_entity)
            .and_then(|ee| {
                ee.verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    std::slice::from_ref(&self.root),
                    intermediates,
                    now,
                    webpki::KeyUsage::server_auth(),
                    None,
                    None,
                )
                .map(|_| ())
            })
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client in the mesh: its own certificate from the same CA, trusting the CA root.
struct Client {
    connector: TlsConnector,
    verifier: Arc<ChainsToRoot>,
}

impl Client {
    async fn new(ca: &CaServerHandle, dir: &TempDir) -> Self {
        let mut config = CaConfig::new(ca.addr.to_string(), dir.path("root-cert.pem"), CLIENT_ID);
        config.token_file = Some(dir.path("istio-token"));
        config.lifetime = Duration::from_secs(3600);
        let issued = ca::request_certificate(&config).await.unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let root = CertificateDer::from_pem_slice(ca.root_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(ChainsToRoot {
            root: webpki::anchor_from_trusted_cert(&root).unwrap().to_owned(),
            provider: provider.clone(),
            seen: Mutex::default(),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(chain, key)
            .unwrap();
        // Every connection sees the certificate served now, not the one of a resumed session.
        config.resumption = rustls::client::Resumption::disabled();
        Self {
            connector: TlsConnector::from(Arc::new(config)),
            verifier,
        }
    }

    /// Connects, checks an echo, and returns the stream and the certificate the proxy presented.
    async fn connect(&self, addr: SocketAddr) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("server.shop.svc").unwrap();
        let mut tls = tokio::time::timeout(WAIT, self.connector.connect(name, tcp))
            .await
            .expect("handshake timed out")
            .unwrap_or_else(|e| panic!("handshake with {addr}: {e}"));
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(self.verifier.seen.lock().unwrap().as_ref(), Some(&leaf));
        echo(&mut tls, b"hello").await;
        (tls, leaf)
    }
}

async fn echo(tls: &mut TlsStream<TcpStream>, message: &[u8]) {
    tls.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    tokio::time::timeout(WAIT, tls.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(back, message);
}

fn spiffe_ids(leaf: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(leaf)
        .unwrap()
        .valid_uri_names()
        .map(str::to_string)
        .collect()
}

fn not_after(leaf: &CertificateDer<'_>) -> SystemTime {
    ca::not_after(leaf).expect("a readable notAfter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_its_ca_issued_certificate_and_rotates_it() {
    let server = CaServer::start(TestCaOptions {
        token: Some(TOKEN.into()),
        ..TestCaOptions::default()
    })
    .await
    .unwrap();
    let dir = TempDir::new("ca");
    server.write_root(&dir.path("root-cert.pem")).unwrap();
    std::fs::write(dir.path("istio-token"), TOKEN).unwrap();
    let echo_addr = echo_server().await;
    let client = Client::new(&server, &dir).await;

    let address = server.addr.to_string();
    let root = dir.path("root-cert.pem");
    let token = dir.path("istio-token");
    let proxy = Proxy::start_with(
        &bootstrap(echo_addr),
        &[
            "--ca-address",
            &address,
            "--ca-root-cert",
            root.to_str().unwrap(),
            "--ca-token-file",
            token.to_str().unwrap(),
            "--spiffe-id",
            SERVER_ID,
            "--workload-cert-ttl-s",
            "4",
        ],
    );
    let addr = proxy.listener("inbound_tls");

    // The proxy presents a certificate for its SPIFFE ID from the CA, and checks the client's
    // against the CA's root (ROOTCA): the echo goes through.
    let (mut open, first) = client.connect(addr).await;
    assert_eq!(spiffe_ids(&first), vec![SERVER_ID]);
    let server_records: Vec<_> = server
        .issued()
        .into_iter()
        .filter(|r| r.uri_sans == [SERVER_ID])
        .collect();
    let record = server_records.first().expect("the proxy's request");
    assert_eq!(record.requested_validity, 4);
    assert_eq!(record.cluster_id.as_deref(), Some("Kubernetes"));
    assert!(record.csr_subject_empty);

    // A 4 s certificate is renewed after about 2 s: a new connection gets a new certificate with
    // a later notAfter ...
    let deadline = Instant::now() + WAIT;
    let (mut renewed, second) = loop {
        let (tls, leaf) = client.connect(addr).await;
        if leaf != first {
            break (tls, leaf);
        }
        assert!(
            Instant::now() < deadline,
            "no new certificate within {WAIT:?}:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(spiffe_ids(&second), vec![SERVER_ID]);
    assert!(
        not_after(&second) > not_after(&first),
        "{:?} then {:?}",
        not_after(&first),
        not_after(&second)
    );
    // ... while the connection made with the first certificate keeps working.
    echo(&mut open, b"still here").await;
    echo(&mut renewed, b"and here").await;
    assert!(
        server
            .issued()
            .iter()
            .filter(|r| r.uri_sans == [SERVER_ID])
            .count()
            >= 2
    );
    assert!(proxy.logs("workload certificate installed"));
    let stats = http_get(proxy.admin, "/stats").unwrap().1;
    let issued: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("skiff.ca.issued: ")?.parse().ok())
        .unwrap_or_else(|| panic!("no skiff.ca.issued in:\n{stats}"));
    assert!(issued >= 2, "{stats}");
    assert!(stats.contains("skiff.ca.failures: 0"), "{stats}");
    server.shutdown().await;
}
