//! The per-core cost of Skiff's TLS handshakes in istiod's mTLS shape: TLS 1.3 (1.2 allowed),
//! istiod's cipher list, ECDSA P-256 workload certificates from the dev CA, a client certificate
//! required and checked against the root and a SPIFFE ID prefix. Full handshakes against
//! resumed ones (a TLS 1.3 ticket from the server's session cache, as Skiff's server issues
//! them by default).
//!
//! Run with `cargo bench -p skiff-benches --bench tls`. Two groups:
//! - `tls_in_memory`: both ends in one thread over in-memory buffers, each side timed on its
//!   own (`server`, `client`), so the figures are CPU time per handshake on one core. The
//!   rustls configurations are Skiff's own (`Acceptor::config_for`, `Connector::config`: its
//!   verifiers, suites, versions and ALPN), driven sans-IO the way `LazyConfigAcceptor` drives
//!   them. The server side also reads the peer's SPIFFE ID, as `accept` does.
//! - `tls_loopback`: Skiff's own `Acceptor::accept` and `Connector::connect` over 127.0.0.1 on a
//!   single-threaded runtime, a TCP connect, the handshake and one byte each way included. The
//!   full handshake there uses `disable_resumption: true` on the server (Skiff's switch for it).
//!
//! Before criterion runs, a short timed loop prints handshakes per second per core and the ratio
//! of resumed to full.

use std::{
    hint::black_box,
    io::Read,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, HandshakeKind, ServerConnection,
    client::Resumption, server::Acceptor as SansIoAcceptor,
};
use rustls_pki_types::ServerName;
use skiff_proxy::{
    config::{
        CertKey, CertificateSource, DownstreamTls, Roots, RootsSource, SanKind, SanMatcher,
        StringMatch, StringMatcher, TlsCommon, TlsVersion, UpstreamTls, Validation, parse_cert_key,
        parse_roots,
    },
    tls::{
        Acceptor, Connector, Side,
        dev_ca::{DevCa, Validity},
        spiffe_id,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

const SERVER_ID: &str = "spiffe://cluster.local/ns/bench/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/bench/sa/client";
/// What each side's `match_typed_subject_alt_names` asks of the other.
const SAN_PREFIX: &str = "spiffe://cluster.local/ns/bench/";
/// Istio's outbound SNI.
const SNI: &str = "outbound_.8080_._.server.bench.svc.cluster.local";
/// istiod's default cipher list (TLS 1.2; rustls has the ECDHE ones).
const ISTIO_CIPHERS: [CipherSuite; 6] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_RSA_WITH_AES_128_GCM_SHA256,
];

/// The dev CA's root and the two workloads' certificates.
#[derive(Debug)]
struct Certs {
    server: CertKey,
    client: CertKey,
    roots: Roots,
}

/// The in-memory configurations: Skiff's server, and its client with and without a session
/// store.
#[derive(Debug)]
struct InMemory {
    acceptor: Acceptor,
    /// A client that has never talked to this server (no ticket): always a full handshake.
    fresh: Arc<ClientConfig>,
    /// A client with a ticket from its previous handshake: always resumed.
    resuming: Arc<ClientConfig>,
}

/// Which end of the handshake an iteration times.
#[derive(Clone, Copy, Debug)]
enum End {
    Server,
    Client,
}

/// Hands `bytes` to a client or server connection and processes them.
macro_rules! feed {
    ($conn:expr, $bytes:expr) => {{
        let mut bytes: &[u8] = $bytes;
        while !bytes.is_empty() {
            $conn
                .read_tls(&mut bytes as &mut dyn Read)
                .expect("reads a slice");
            $conn.process_new_packets().expect("the handshake goes on");
        }
    }};
}

// === impl Certs ===

impl Certs {
    fn new() -> Self {
        let ca = DevCa::generate("cluster.local").expect("the dev CA generates a root");
        let validity = Validity::for_lifetime(Duration::from_secs(86_400));
        let workload = |id: &str| {
            let w = ca.issue(id, validity).expect("the dev CA issues");
            parse_cert_key(w.chain_pem.as_bytes(), w.key_pem.as_bytes()).expect("dev-ca PEM")
        };
        Self {
            server: workload(SERVER_ID),
            client: workload(CLIENT_ID),
            roots: parse_roots(ca.root_pem().as_bytes()).expect("the dev root"),
        }
    }

    /// Istio's `CommonTlsContext` for one side, as Skiff's config module converts it.
    fn common(&self, own: &CertKey, alpn: &[&str]) -> TlsCommon {
        TlsCommon {
            certificate: Some(CertificateSource::Inline(Arc::new(own.clone()))),
            validation: Some(Validation {
                roots: Some(RootsSource::Inline(Arc::new(self.roots.clone()))),
                subject_alt_names: vec![SanMatcher {
                    kind: Some(SanKind::Uri),
                    matcher: StringMatcher {
                        kind: StringMatch::Prefix(SAN_PREFIX.to_string()),
                        ignore_case: false,
                    },
                }],
            }),
            alpn: alpn.iter().map(|a| a.to_string()).collect(),
            min_version: TlsVersion::V1_2,
            max_version: TlsVersion::V1_3,
            cipher_suites: Some(ISTIO_CIPHERS.to_vec()),
        }
    }
}

// === impl InMemory ===

impl InMemory {
    /// Skiff's own rustls configurations: the acceptor's for an `h2` ClientHello, and the
    /// connector's, with its session store or without one.
    fn new(certs: &Certs) -> Self {
        let acceptor = Acceptor::new(&DownstreamTls {
            common: certs.common(&certs.server, &["h2", "http/1.1"]),
            require_client_certificate: true,
            disable_resumption: false,
            prefer_client_ciphers: false,
        })
        .expect("Skiff builds the server configuration");
        let connector = Connector::new(&UpstreamTls {
            common: certs.common(&certs.client, &["h2"]),
            sni: Some(SNI.to_string()),
        })
        .expect("Skiff builds the client configuration");
        let resuming = connector.config(None);
        let mut fresh = (*resuming).clone();
        fresh.resumption = Resumption::disabled();
        Self {
            acceptor,
            fresh: Arc::new(fresh),
            resuming,
        }
    }

    /// One handshake, with both ends' application-level reads done (the client takes its
    /// tickets). Returns the time spent in `end`'s calls and how the handshake went.
    fn handshake(&self, client: &Arc<ClientConfig>, end: End) -> (Duration, HandshakeKind) {
        let mut spent = Duration::ZERO;
        let mut timed = |side: End, f: &mut dyn FnMut()| {
            let start = Instant::now();
            f();
            if matches!(
                (side, end),
                (End::Server, End::Server) | (End::Client, End::Client)
            ) {
                spent += start.elapsed();
            }
        };
        let name = ServerName::try_from(SNI).expect("a DNS name");
        let mut wire = Vec::with_capacity(4096);

        let mut c = None;
        timed(End::Client, &mut || {
            let mut conn = ClientConnection::new(client.clone(), name.clone()).expect("a client");
            while conn.wants_write() {
                conn.write_tls(&mut wire).expect("writes to a Vec");
            }
            c = Some(conn);
        });
        let mut c = c.expect("set above");
        let mut s: Option<ServerConnection> = None;
        timed(End::Server, &mut || {
            let mut acceptor = SansIoAcceptor::default();
            acceptor
                .read_tls(&mut wire.as_slice())
                .expect("reads a slice");
            let accepted = acceptor
                .accept()
                .map_err(|(e, _)| e)
                .expect("a ClientHello")
                .expect("the whole ClientHello");
            let config = self.acceptor.config_for(&accepted.client_hello());
            let mut conn = accepted
                .into_connection(config)
                .map_err(|(e, _)| e)
                .expect("a server connection");
            wire.clear();
            while conn.wants_write() {
                conn.write_tls(&mut wire).expect("writes to a Vec");
            }
            s = Some(conn);
        });
        let mut s = s.expect("set above");
        // Until neither side has anything to say.
        for _ in 0..8 {
            if wire.is_empty() {
                break;
            }
            timed(End::Client, &mut || {
                feed!(c, &wire);
                wire.clear();
                while c.wants_write() {
                    c.write_tls(&mut wire).expect("writes to a Vec");
                }
            });
            if wire.is_empty() {
                break;
            }
            timed(End::Server, &mut || {
                feed!(s, &wire);
                wire.clear();
                while s.wants_write() {
                    s.write_tls(&mut wire).expect("writes to a Vec");
                }
                if !s.is_handshaking() {
                    // `tls::Acceptor::accept` reads the client's SPIFFE ID for every connection.
                    let peer = s.peer_certificates().and_then(|p| p.first());
                    black_box(peer.and_then(spiffe_id));
                }
            });
        }
        assert!(
            !c.is_handshaking() && !s.is_handshaking(),
            "handshake finished"
        );
        (spent, s.handshake_kind().expect("handshake finished"))
    }
}

/// Skiff's own acceptors (full: resumption disabled; resumed: the default) and connector,
/// over loopback.
struct Loopback {
    rt: Runtime,
    listener: TcpListener,
    addr: SocketAddr,
    full: Arc<Acceptor>,
    resuming: Arc<Acceptor>,
    connector: Connector,
}

// === impl Loopback ===

impl Loopback {
    fn new(certs: &Certs) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("binds loopback");
        let addr = listener.local_addr().expect("bound");
        let server = |disable_resumption| {
            Arc::new(
                Acceptor::new(&DownstreamTls {
                    common: certs.common(&certs.server, &["h2", "http/1.1"]),
                    require_client_certificate: true,
                    disable_resumption,
                    prefer_client_ciphers: false,
                })
                .expect("Skiff builds the server configuration"),
            )
        };
        let connector = Connector::new(&UpstreamTls {
            common: certs.common(&certs.client, &["h2"]),
            sni: Some(SNI.to_string()),
        })
        .expect("Skiff builds the client configuration");
        Self {
            rt,
            listener,
            addr,
            full: server(true),
            resuming: server(false),
            connector,
        }
    }

    /// Connect, handshake, one byte each way (the client reads its tickets before the byte).
    fn connection(&self, acceptor: &Arc<Acceptor>) {
        self.rt.block_on(async {
            let connect = TcpStream::connect(self.addr);
            let (connected, accepted) = tokio::join!(connect, self.listener.accept());
            let (tcp, peer) = accepted.expect("accepts");
            let connected = connected.expect("connects");
            // As Skiff's listener and connectors set them (Nagle would hold the last flight
            // back for a delayed ACK).
            tcp.set_nodelay(true).expect("TCP_NODELAY");
            connected.set_nodelay(true).expect("TCP_NODELAY");
            let acceptor = acceptor.clone();
            let server = tokio::spawn(async move {
                let (mut tls, _peer) = acceptor.accept(tcp, peer).await.expect("server handshake");
                tls.write_all(b"s").await.expect("writes");
                let mut b = [0u8; 1];
                tls.read_exact(&mut b).await.expect("reads");
            });
            let mut tls = self
                .connector
                .connect(connected, self.addr, None)
                .await
                .expect("client handshake");
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.expect("reads");
            tls.write_all(b"c").await.expect("writes");
            server.await.expect("server task");
        });
    }
}

/// Handshakes per second of `f` over about `for_how_long`.
fn rate(for_how_long: Duration, mut f: impl FnMut() -> Duration) -> f64 {
    let mut n = 0u32;
    let mut spent = Duration::ZERO;
    while spent < for_how_long {
        spent += f();
        n += 1;
    }
    f64::from(n) / spent.as_secs_f64()
}

fn benches(c: &mut Criterion) {
    let certs = Certs::new();
    let mem = InMemory::new(&certs);
    let lo = Loopback::new(&certs);

    // Check the shapes once: TLS 1.3, a full and a resumed handshake as named.
    assert_eq!(
        mem.handshake(&mem.fresh, End::Server).1,
        HandshakeKind::Full
    );
    mem.handshake(&mem.resuming, End::Server);
    assert_eq!(
        mem.handshake(&mem.resuming, End::Server).1,
        HandshakeKind::Resumed
    );
    let reused = || {
        skiff_proxy::tls::counters(Side::Downstream)
            .session_reused
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    lo.connection(&lo.resuming);
    let before = reused();
    lo.connection(&lo.resuming);
    assert_eq!(
        reused(),
        before + 1,
        "Skiff's connector resumes with Skiff's acceptor"
    );
    lo.connection(&lo.full);
    assert_eq!(
        reused(),
        before + 1,
        "disable_resumption gives full handshakes"
    );

    // A quick summary first (criterion's own figures follow).
    let window = Duration::from_millis(300);
    let per_core = |client: &Arc<ClientConfig>| {
        let server = rate(window, || mem.handshake(client, End::Server).0);
        let client = rate(window, || mem.handshake(client, End::Client).0);
        (server, client, 1.0 / (1.0 / server + 1.0 / client))
    };
    let (fs, fc, fb) = per_core(&mem.fresh);
    let (rs, rc, rb) = per_core(&mem.resuming);
    let timed = |acceptor: &Arc<Acceptor>| {
        rate(window, || {
            let start = Instant::now();
            lo.connection(acceptor);
            start.elapsed()
        })
    };
    let (lf, lr) = (timed(&lo.full), timed(&lo.resuming));
    eprintln!("TLS 1.3 mTLS handshakes per second per core (ECDSA P-256, X25519):");
    eprintln!(
        "  in memory, server side: full {fs:.0}, resumed {rs:.0} (resumed/full {:.2})",
        rs / fs
    );
    eprintln!(
        "  in memory, client side: full {fc:.0}, resumed {rc:.0} (resumed/full {:.2})",
        rc / fc
    );
    eprintln!(
        "  in memory, both ends:   full {fb:.0}, resumed {rb:.0} (resumed/full {:.2})",
        rb / fb
    );
    eprintln!(
        "  loopback through tls::Acceptor/Connector, both ends: full {lf:.0}, resumed {lr:.0} (resumed/full {:.2})",
        lr / lf
    );

    let mut group = c.benchmark_group("tls_in_memory");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    for (kind, client) in [("full", &mem.fresh), ("resumed", &mem.resuming)] {
        for (side, end) in [("server", End::Server), ("client", End::Client)] {
            group.bench_function(format!("{kind}/{side}"), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| mem.handshake(client, end).0).sum())
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("tls_loopback");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    group.bench_function("full", |b| b.iter(|| lo.connection(&lo.full)));
    group.bench_function("resumed", |b| b.iter(|| lo.connection(&lo.resuming)));
    group.finish();
}

criterion_group!(tls, benches);
criterion_main!(tls);
