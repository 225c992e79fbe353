//! The ClientHello path of a TLS listener, with the client's first flight cut anywhere.
//!
//! Real ClientHellos, captured once from rustls `ClientConnection`s with the configurations of
//! Skiff's `tls::Connector` for Istio mTLS (TLS 1.3 with Istio's ALPN, TLS 1.2 only with h2,
//! and a TLS 1.3 resumption with a PSK), are re-framed into TLS records where the input says, have
//! bytes flipped where it says, and are delivered in reads split where it says. With the first
//! choice past the last hello, the rest of the input is the stream itself.
//!
//! Each stream goes, whole and then piece by piece:
//! - into rustls' sans-IO `Acceptor` and then a `ServerConnection`, as `tls::Acceptor::accept`
//!   drives them (`LazyConfigAcceptor`), with the configuration `tls::Acceptor::config_for`
//!   picks for the hello from istiod's inbound chain: istiod's cipher list, TLS 1.2-1.3, a
//!   mandatory client certificate checked against a SPIFFE prefix, ALPN h2 and http/1.1 (or
//!   none when the client offers none of those);
//! - into the listener's ClientHello parser (`listener::tls_hello`), peeked as
//!   `listener::inspect` peeks it: everything received so far, after each read.
//!
//! Nothing panics; the parser's verdict is the same whatever the split (every prefix is checked:
//! a prefix asks for more bytes, never more than the 64 KiB limit and never past the end of a
//! hello it accepts, or already has the final verdict); rustls reaches the same outcome whatever
//! the split; where both accept the hello they agree on SNI (up to a final dot) and ALPN; and
//! the real hellos, unmutated however they are framed and split, are accepted by both. The
//! parser never asks for bytes past where its verdict is decided (give or take a record header).
#![no_main]

use std::{
    io::Read,
    sync::{Arc, LazyLock},
};

use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, Connection, server::Acceptor as SansIoAcceptor,
};
use rustls_pki_types::ServerName;
use skiff_proxy::{
    config::{
        CertKey, CertificateSource, DownstreamTls, RootsSource, SanKind, SanMatcher, StringMatch,
        StringMatcher, TlsCommon, TlsVersion, UpstreamTls, Validation, parse_cert_key, parse_roots,
    },
    listener::tls_hello::{ClientHello, Hello, MAX_CLIENT_HELLO, parse},
    tls::{
        Acceptor, Connector,
        dev_ca::{DevCa, Validity},
    },
};

/// istiod's default `cipher_suites` for sidecars (TLS 1.2; rustls has the ECDHE ones).
const ISTIO_CIPHERS: [CipherSuite; 6] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_RSA_WITH_AES_128_GCM_SHA256,
];
/// The SNI Istio's outbound cluster sends.
const SNI: &str = "outbound_.8080_._.server.default.svc.cluster.local";
/// Prefixes longer than this are not all re-parsed (the parse is O(n); this keeps it quick).
const PREFIX_CHECK_LIMIT: usize = 4096;

/// A captured first flight and what the parser makes of it.
struct Flight {
    bytes: Vec<u8>,
    hello: ClientHello,
}

struct Fixture {
    flights: Vec<Flight>,
    /// Skiff's acceptor for istiod's inbound mTLS chain (its configuration per ClientHello).
    acceptor: Acceptor,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::new);

/// What rustls made of a stream.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    /// The ClientHello is not complete yet.
    Incomplete,
    /// Accepted and answered; the SNI and ALPN rustls read.
    Answered {
        sni: Option<String>,
        alpn: Option<Vec<Vec<u8>>>,
    },
    /// Refused by the acceptor (before a configuration is picked) or the connection.
    Refused(String),
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let mut u = Unstructured::new(data);
    let Ok(shape) = u.int_in_range(0..=f.flights.len()) else {
        return;
    };
    let splits: Vec<u16> = (0..u.int_in_range(0..=16u8).unwrap_or(0))
        .map_while(|_| u.arbitrary().ok())
        .collect();
    let (stream, expected) = match f.flights.get(shape) {
        Some(flight) => {
            let records: Vec<u16> = (0..u.int_in_range(0..=8u8).unwrap_or(0))
                .map_while(|_| u.arbitrary().ok())
                .collect();
            let mut stream = reframe(&flight.bytes, &records);
            let mut mutated = false;
            for _ in 0..u.int_in_range(0..=8u8).unwrap_or(0) {
                let (Ok(at), Ok(xor)) = (u.arbitrary::<u16>(), u.arbitrary::<u8>()) else {
                    break;
                };
                let at = usize::from(at) % stream.len();
                stream[at] ^= xor;
                mutated |= xor != 0;
            }
            if u.ratio(1, 16).unwrap_or(false) {
                let keep = usize::from(u.arbitrary::<u16>().unwrap_or(0)) % stream.len();
                stream.truncate(keep);
                mutated = true;
            }
            (stream, (!mutated).then_some(&flight.hello))
        }
        None => (u.take_rest().to_vec(), None),
    };
    let pieces = split(&stream, &splits);

    let verdict = check_parser(&stream, &pieces);
    let whole = serve(f, &[&stream]);
    if pieces.len() > 1 {
        assert_eq!(serve(f, &pieces), whole, "rustls depends on the split");
    }

    if let Served::Answered { sni, alpn } = &whole {
        // The TLS stack took this hello: the inspector must not wait for more, nor call it
        // something else than TLS (it may be stricter and call it invalid).
        assert!(
            matches!(verdict, Hello::ClientHello(_) | Hello::Invalid(_)),
            "rustls accepted a hello the parser calls {verdict:?}"
        );
        if let Hello::ClientHello(h) = &verdict {
            if let Some(sni) = sni {
                // rustls drops a final dot (the root label); the parser keeps the name as the
                // client sent it, as BoringSSL hands it to Envoy's tls_inspector.
                let parsed = h
                    .server_name
                    .as_deref()
                    .map(|n| n.strip_suffix('.').unwrap_or(n));
                assert_eq!(parsed, Some(sni.as_str()), "SNI");
            }
            let alpn: Vec<&[u8]> = alpn.iter().flatten().map(Vec::as_slice).collect();
            let parsed: Vec<&[u8]> = h.alpn.iter().map(String::as_bytes).collect();
            assert_eq!(parsed, alpn, "ALPN");
        }
    }
    if let Some(hello) = expected {
        assert_eq!(verdict, Hello::ClientHello(hello.clone()), "a real hello");
        assert!(
            matches!(whole, Served::Answered { .. }),
            "rustls: {whole:?}"
        );
    }
});

/// Checks the parser on every prefix and as `listener::inspect` sees the pieces; returns the
/// verdict on the whole stream.
fn check_parser(stream: &[u8], pieces: &[&[u8]]) -> Hello {
    let whole = parse(stream);
    let mut decided_at = None;
    let mut asked = 0;
    for end in 0..=stream.len().min(PREFIX_CHECK_LIMIT) {
        match parse(&stream[..end]) {
            Hello::NeedMore(n) => {
                assert!(
                    decided_at.is_none(),
                    "NeedMore({n}) at {end} bytes after a verdict"
                );
                assert!(n > end, "NeedMore({n}) with {end} bytes present");
                // `inspect` refuses a hello as too large when asked for more than the limit.
                assert!(n <= MAX_CLIENT_HELLO, "NeedMore({n}) past the limit");
                asked = asked.max(n);
            }
            v => {
                decided_at.get_or_insert(end);
                assert_eq!(v, whole, "the verdict at {end} bytes is not the final one");
            }
        }
    }
    // Never asks for bytes past where the verdict is decided (give or take the next record
    // header): otherwise a small `max_client_hello` would refuse as too large what a few more
    // bytes show to be malformed.
    if let Some(at) = decided_at {
        assert!(
            asked <= at + 5,
            "asked for {asked} bytes, decided at {at}: {whole:?}"
        );
    }

    // As `inspect` peeks: everything so far, after each read, until a verdict.
    let mut seen = Vec::new();
    let mut verdict = Hello::NeedMore(0);
    for piece in pieces {
        seen.extend_from_slice(piece);
        verdict = parse(&seen);
        if !matches!(verdict, Hello::NeedMore(_)) {
            break;
        }
    }
    if pieces.is_empty() {
        verdict = parse(&[]);
    }
    assert_eq!(verdict, whole, "the verdict depends on the split");
    whole
}

/// Feeds the pieces to rustls as `tls::Acceptor::accept` does, writing its answers nowhere.
fn serve(f: &Fixture, pieces: &[&[u8]]) -> Served {
    let mut acceptor = SansIoAcceptor::default();
    let mut conn: Option<Connection> = None;
    let mut answered = None;
    for piece in pieces {
        let mut rd: &[u8] = piece;
        while !rd.is_empty() {
            match &mut conn {
                None => {
                    if let Err(e) = acceptor.read_tls(&mut rd) {
                        return Served::Refused(format!("read: {e}"));
                    }
                    let accepted = match acceptor.accept() {
                        Ok(None) => continue,
                        Ok(Some(a)) => a,
                        Err((e, mut alert)) => {
                            let _ = alert.write_all(&mut std::io::sink());
                            return Served::Refused(format!("accept: {e}"));
                        }
                    };
                    let hello = accepted.client_hello();
                    let sni = hello.server_name().map(str::to_string);
                    let alpn: Option<Vec<Vec<u8>>> =
                        hello.alpn().map(|a| a.map(<[u8]>::to_vec).collect());
                    // Skiff's choice: without ALPN when the client offers none of ours.
                    let config = f.acceptor.config_for(&hello);
                    let mut server = match accepted.into_connection(config) {
                        Ok(s) => Connection::Server(s),
                        Err((e, mut alert)) => {
                            let _ = alert.write_all(&mut std::io::sink());
                            return Served::Refused(format!("config: {e}"));
                        }
                    };
                    // Bytes after the hello were read with it.
                    if let Err(e) = server.process_new_packets() {
                        return Served::Refused(format!("after the hello: {e}"));
                    }
                    drain(&mut server);
                    conn = Some(server);
                    answered = Some(Served::Answered { sni, alpn });
                }
                Some(server) => {
                    if let Err(e) = server.read_tls(&mut rd) {
                        return Served::Refused(format!("read: {e}"));
                    }
                    if let Err(e) = server.process_new_packets() {
                        return Served::Refused(format!("after the hello: {e}"));
                    }
                    drain(server);
                }
            }
        }
    }
    answered.unwrap_or(Served::Incomplete)
}

fn drain(conn: &mut Connection) {
    while conn.wants_write() {
        if conn.write_tls(&mut std::io::sink()).is_err() {
            break;
        }
    }
}

/// The stream cut at the given offsets (taken modulo its length + 1, sorted, deduplicated).
fn split<'a>(stream: &'a [u8], at: &[u16]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = at
        .iter()
        .map(|a| usize::from(*a) % (stream.len() + 1))
        .collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    cuts.dedup();
    let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
    if pieces.is_empty() {
        vec![stream]
    } else {
        pieces
    }
}

/// The handshake bytes of `flight` in records cut at the given offsets of the handshake data
/// (no empty records), each with the first record's version. Left alone if it is not all
/// handshake records.
fn reframe(flight: &[u8], at: &[u16]) -> Vec<u8> {
    let mut handshake = Vec::new();
    let mut rest = flight;
    while let Some(&[ty, v0, v1, l0, l1]) = rest.first_chunk::<5>() {
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        if ty != 22 || [v0, v1] != [flight[1], flight[2]] || rest.len() < 5 + len {
            return flight.to_vec();
        }
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    if !rest.is_empty() || handshake.is_empty() {
        return flight.to_vec();
    }
    let mut cuts: Vec<usize> = at
        .iter()
        .map(|a| usize::from(*a) % handshake.len())
        .filter(|c| *c > 0)
        .collect();
    cuts.push(0);
    cuts.push(handshake.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(flight.len() + 5 * cuts.len());
    for w in cuts.windows(2) {
        let fragment = &handshake[w[0]..w[1]];
        out.extend_from_slice(&[22, flight[1], flight[2]]);
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
    }
    out
}

// === impl Fixture ===

impl Fixture {
    fn new() -> Self {
        let ca = DevCa::generate("cluster.local").expect("the dev CA generates a root");
        let validity = Validity::for_lifetime(std::time::Duration::from_secs(86_400));
        let workload = |id: &str| {
            let w = ca.issue(id, validity).expect("the dev CA issues");
            parse_cert_key(w.chain_pem.as_bytes(), w.key_pem.as_bytes())
                .expect("dev-ca output parses")
        };
        let roots = Arc::new(parse_roots(ca.root_pem().as_bytes()).expect("the dev root parses"));
        // istiod's shape: the workload certificate, the mesh root, a SPIFFE ID prefix.
        let common = |own: CertKey, alpn: &[&str], max: TlsVersion| TlsCommon {
            certificate: Some(CertificateSource::Inline(Arc::new(own))),
            validation: Some(Validation {
                roots: Some(RootsSource::Inline(roots.clone())),
                subject_alt_names: vec![SanMatcher {
                    kind: Some(SanKind::Uri),
                    matcher: StringMatcher {
                        kind: StringMatch::Prefix("spiffe://cluster.local/".into()),
                        ignore_case: false,
                    },
                }],
            }),
            alpn: alpn.iter().map(|a| a.to_string()).collect(),
            min_version: TlsVersion::V1_2,
            max_version: max,
            cipher_suites: Some(ISTIO_CIPHERS.to_vec()),
        };
        let acceptor = Acceptor::new(&DownstreamTls {
            common: common(
                workload("spiffe://cluster.local/ns/default/sa/server"),
                &["h2", "http/1.1"],
                TlsVersion::V1_3,
            ),
            require_client_certificate: true,
            disable_resumption: false,
            prefer_client_ciphers: false,
        })
        .expect("Skiff builds istiod's inbound configuration");
        let client = |alpn: &[&str], max| {
            Connector::new(&UpstreamTls {
                common: common(
                    workload("spiffe://cluster.local/ns/default/sa/client"),
                    alpn,
                    max,
                ),
                sni: Some(SNI.to_string()),
            })
            .expect("Skiff builds the outbound configuration")
            .config(None)
        };
        // Istio's outbound mTLS, and a TLS 1.2-only client.
        let istio = client(&["istio-peer-exchange", "istio"], TlsVersion::V1_3);
        let tls12 = client(&["h2", "http/1.1"], TlsVersion::V1_2);

        let name = ServerName::try_from(SNI).expect("a DNS name");

        let mut flights = Vec::new();
        let first = |config: &Arc<ClientConfig>| {
            let mut c = ClientConnection::new(config.clone(), name.clone()).expect("a client");
            let mut bytes = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut bytes).expect("writes to a Vec");
            }
            (c, bytes)
        };
        for config in [&istio, &tls12] {
            let (_, bytes) = first(config);
            flights.push(bytes);
        }
        // A full handshake leaves a ticket with the client; its next hello offers it (PSK).
        let (c, bytes) = first(&istio);
        let mut s = Connection::Server(accept(&acceptor, &bytes));
        handshake(&mut Connection::Client(c), &mut s, Vec::new());
        let (_, resumption) = first(&istio);
        assert_ne!(
            resumption.len(),
            flights[0].len(),
            "the resumption hello carries a PSK"
        );
        flights.push(resumption);

        let flights = flights
            .into_iter()
            .map(|bytes| match parse(&bytes) {
                Hello::ClientHello(hello) => {
                    assert_eq!(hello.server_name.as_deref(), Some(SNI));
                    Flight { bytes, hello }
                }
                other => panic!("the parser refuses a rustls ClientHello: {other:?}"),
            })
            .collect();
        Self { flights, acceptor }
    }
}

/// A server connection for a first flight, configured as Skiff's acceptor chooses.
fn accept(acceptor: &Acceptor, first: &[u8]) -> rustls::ServerConnection {
    let mut sans_io = SansIoAcceptor::default();
    sans_io
        .read_tls(&mut &first[..])
        .expect("reads from a slice");
    let accepted = sans_io
        .accept()
        .map_err(|(e, _)| e)
        .expect("a ClientHello")
        .expect("the whole ClientHello");
    let config = acceptor.config_for(&accepted.client_hello());
    let mut conn = accepted
        .into_connection(config)
        .map_err(|(e, _)| e)
        .expect("a server connection");
    conn.process_new_packets().expect("the hello is processed");
    conn
}

/// Runs a handshake in memory from the client's first flight `first` until both are done.
fn handshake(client: &mut Connection, server: &mut Connection, first: Vec<u8>) {
    let mut to_server = first;
    for _ in 0..16 {
        feed(server, &to_server);
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).expect("writes to a Vec");
        }
        feed(client, &to_client);
        to_server.clear();
        while client.wants_write() {
            client.write_tls(&mut to_server).expect("writes to a Vec");
        }
        if !client.is_handshaking() && !server.is_handshaking() && to_server.is_empty() {
            return;
        }
    }
    panic!("the fixture handshake did not finish");
}

fn feed(conn: &mut Connection, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes as &mut dyn Read)
            .expect("reads from a slice");
        conn.process_new_packets()
            .expect("the fixture handshake succeeds");
    }
}
