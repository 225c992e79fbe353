//! Micro-benchmarks of the per-connection L4 decisions: ClientHello parsing, HTTP sniffing and
//! filter-chain selection. Run with `cargo bench -p skiff-benches --bench l4`.

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use skiff_proxy::{
    config::{ChainAction, ChainMatch, Cidr, FilterChain, SourceType},
    listener::{
        chain_match::{ChainIndex, ConnFacts, select},
        http_sniff, tls_hello,
    },
};

/// A TLS 1.3-style ClientHello with SNI, ALPN, supported_versions and an X25519 key share.
fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, ty: u16, body: &[u8]) {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut exts = Vec::new();
    let mut sni_body = Vec::new();
    sni_body.extend_from_slice(&((sni.len() + 3) as u16).to_be_bytes());
    sni_body.push(0);
    sni_body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sni_body.extend_from_slice(sni.as_bytes());
    ext(&mut exts, 0, &sni_body);
    let list: Vec<u8> = alpn
        .iter()
        .flat_map(|p| std::iter::once(p.len() as u8).chain(p.bytes()))
        .collect();
    let mut alpn_body = (list.len() as u16).to_be_bytes().to_vec();
    alpn_body.extend_from_slice(&list);
    ext(&mut exts, 16, &alpn_body);
    ext(&mut exts, 43, &[4, 0x03, 0x04, 0x03, 0x03]);
    let mut ks = vec![0, 36, 0, 0x1d, 0, 32];
    ks.extend_from_slice(&[7; 32]);
    ext(&mut exts, 51, &ks);

    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[1; 32]); // random
    body.push(32);
    body.extend_from_slice(&[2; 32]); // session id
    body.extend_from_slice(&[0, 6, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);

    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn chain(name: &str, m: ChainMatch) -> FilterChain {
    FilterChain {
        name: Arc::from(name),
        matcher: m,
        action: ChainAction::Close,
        tls: None,
        refusal: None,
        accepted: Vec::new(),
    }
}

fn cidr(s: &str) -> Cidr {
    let (ip, len) = s.split_once('/').unwrap();
    Cidr::new(ip.parse().unwrap(), len.parse().unwrap()).unwrap()
}

/// Chains shaped like Istio's virtualInbound: per-port mTLS/plaintext/HTTP variants.
fn inbound_chains() -> Vec<FilterChain> {
    let mut chains = Vec::new();
    for port in [8080u16, 9080, 15006, 3306, 6379, 5432, 8443, 9090] {
        for (tls, alpn) in [
            (
                Some("tls"),
                vec!["istio-http/1.0", "istio-http/1.1", "istio-h2"],
            ),
            (Some("tls"), vec![]),
            (Some("raw_buffer"), vec!["http/1.1", "h2c"]),
            (Some("raw_buffer"), vec![]),
        ] {
            chains.push(chain(
                &format!("{port}-{tls:?}-{}", alpn.len()),
                ChainMatch {
                    destination_port: Some(port),
                    prefix_ranges: vec![cidr("0.0.0.0/0")],
                    transport_protocol: tls.map(String::from),
                    application_protocols: alpn.into_iter().map(String::from).collect(),
                    source_type: SourceType::Any,
                    ..Default::default()
                },
            ));
        }
    }
    chains
}

fn benches(c: &mut Criterion) {
    let hello = client_hello(
        "reviews.default.svc.cluster.local",
        &["istio-http/1.1", "istio", "http/1.1"],
    );
    assert!(matches!(
        tls_hello::parse(&hello),
        tls_hello::Hello::ClientHello(_)
    ));
    c.bench_function("tls_hello/parse_client_hello", |b| {
        b.iter(|| tls_hello::parse(black_box(&hello)))
    });
    c.bench_function("tls_hello/reject_plaintext", |b| {
        b.iter(|| tls_hello::parse(black_box(b"GET / HTTP/1.1\r\n")))
    });
    let req = b"GET /api/v1/reviews/0?user=jason HTTP/1.1\r\nHost: reviews:9080\r\n\r\n";
    c.bench_function("http_sniff/request_line", |b| {
        b.iter(|| http_sniff::sniff(black_box(req)))
    });

    let chains = inbound_chains();
    let index = ChainIndex::new(&chains);
    let alpn: Vec<Box<str>> = vec!["istio-http/1.1".into(), "istio".into()];
    let facts = ConnFacts {
        destination: "10.1.2.3:9080".parse().unwrap(),
        source: "10.1.7.7:40000".parse().unwrap(),
        direct_source: "10.1.7.7:40000".parse().unwrap(),
        server_name: Some("outbound_.9080_._.reviews.default.svc.cluster.local"),
        transport_protocol: "tls",
        application_protocols: &alpn,
    };
    assert!(select(&chains, &index, None, &facts).is_some());
    c.bench_function("chain_match/istio_inbound_32_chains", |b| {
        b.iter(|| select(black_box(&chains), &index, None, black_box(&facts)))
    });
}

criterion_group!(l4, benches);
criterion_main!(l4);
