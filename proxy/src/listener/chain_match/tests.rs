use std::sync::Arc;

use super::*;
use crate::config::{ChainAction, ChainMatch, FilterChain};

fn cidr(s: &str) -> Cidr {
    let (ip, len) = s.split_once('/').unwrap();
    Cidr::new(ip.parse().unwrap(), len.parse().unwrap()).unwrap()
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

struct Conn {
    dst: &'static str,
    src: &'static str,
    sni: Option<&'static str>,
    tls: bool,
    alpn: Vec<Box<str>>,
}

fn conn(dst: &'static str) -> Conn {
    Conn {
        dst,
        src: "10.0.0.99:40000",
        sni: None,
        tls: false,
        alpn: Vec::new(),
    }
}

impl Conn {
    fn sni(mut self, s: &'static str) -> Self {
        self.sni = Some(s);
        self.tls = true;
        self
    }
    fn alpn(mut self, a: &[&str]) -> Self {
        self.alpn = a.iter().map(|s| Box::from(*s)).collect();
        self
    }
    fn src(mut self, s: &'static str) -> Self {
        self.src = s;
        self
    }
    fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

fn pick<'c>(
    chains: &'c [FilterChain],
    default: Option<&'c FilterChain>,
    c: &Conn,
) -> Option<&'c str> {
    let index = ChainIndex::new(chains);
    let facts = ConnFacts {
        destination: c.dst.parse().unwrap(),
        source: c.src.parse().unwrap(),
        direct_source: c.src.parse().unwrap(),
        server_name: c.sni,
        transport_protocol: if c.tls { "tls" } else { "raw_buffer" },
        application_protocols: &c.alpn,
    };
    select(chains, &index, default, &facts).map(|c| &*c.name)
}

#[test]
fn table_of_selections() {
    let chains = vec![
        chain("any", ChainMatch::default()),
        chain(
            "port-80",
            ChainMatch {
                destination_port: Some(80),
                ..Default::default()
            },
        ),
        chain(
            "port-443-tls",
            ChainMatch {
                destination_port: Some(443),
                transport_protocol: Some("tls".into()),
                ..Default::default()
            },
        ),
        chain(
            "port-443-exact-sni",
            ChainMatch {
                destination_port: Some(443),
                server_names: vec!["api.example.com".into()],
                ..Default::default()
            },
        ),
        chain(
            "port-443-wild",
            ChainMatch {
                destination_port: Some(443),
                server_names: vec!["*.example.com".into()],
                ..Default::default()
            },
        ),
        chain(
            "port-443-deep-wild",
            ChainMatch {
                destination_port: Some(443),
                server_names: vec!["*.eu.example.com".into()],
                ..Default::default()
            },
        ),
        chain(
            "net-10/8",
            ChainMatch {
                prefix_ranges: vec![cidr("10.0.0.0/8")],
                ..Default::default()
            },
        ),
        chain(
            "net-10.1/16",
            ChainMatch {
                prefix_ranges: vec![cidr("10.1.0.0/16")],
                ..Default::default()
            },
        ),
        chain(
            "net-10.1-h2",
            ChainMatch {
                prefix_ranges: vec![cidr("10.1.0.0/16")],
                application_protocols: vec!["h2".into()],
                ..Default::default()
            },
        ),
        chain(
            "net-10.1-http11",
            ChainMatch {
                prefix_ranges: vec![cidr("10.1.0.0/16")],
                application_protocols: vec!["http/1.1".into()],
                ..Default::default()
            },
        ),
        chain(
            "port-9000-from-192",
            ChainMatch {
                destination_port: Some(9000),
                source_prefix_ranges: vec![cidr("192.168.0.0/16")],
                ..Default::default()
            },
        ),
        chain(
            "port-9100-loopback-src",
            ChainMatch {
                destination_port: Some(9100),
                source_type: SourceType::SameIpOrLoopback,
                ..Default::default()
            },
        ),
        chain(
            "port-9100-src-port",
            ChainMatch {
                destination_port: Some(9100),
                source_ports: vec![40000],
                source_type: SourceType::External,
                ..Default::default()
            },
        ),
    ];
    let cases: Vec<(&str, Conn, Option<&str>)> = vec![
        ("nothing specific", conn("192.0.2.1:1234"), Some("any")),
        ("exact port", conn("192.0.2.1:80"), Some("port-80")),
        ("port beats IP", conn("10.1.2.3:80"), Some("port-80")),
        ("longest prefix", conn("10.1.2.3:1234"), Some("net-10.1/16")),
        ("shorter prefix", conn("10.2.0.1:1234"), Some("net-10/8")),
        (
            "alpn h2 picks its chain",
            conn("10.1.2.3:1234").alpn(&["h2", "http/1.1"]),
            Some("net-10.1-h2"),
        ),
        (
            "connection order decides alpn",
            conn("10.1.2.3:1234").alpn(&["http/1.1", "h2"]),
            Some("net-10.1-http11"),
        ),
        (
            "unknown alpn falls back in its IP group",
            conn("10.1.2.3:1234").alpn(&["grpc"]),
            Some("net-10.1/16"),
        ),
        (
            "exact sni",
            conn("192.0.2.1:443").sni("api.example.com"),
            Some("port-443-exact-sni"),
        ),
        (
            "wildcard sni",
            conn("192.0.2.1:443").sni("www.example.com"),
            Some("port-443-wild"),
        ),
        (
            "deeper wildcard wins",
            conn("192.0.2.1:443").sni("x.eu.example.com"),
            Some("port-443-deep-wild"),
        ),
        (
            "wildcard matches deep names",
            conn("192.0.2.1:443").sni("a.b.us.example.com"),
            Some("port-443-wild"),
        ),
        (
            "wildcard needs a label",
            conn("192.0.2.1:443").sni("example.com"),
            Some("port-443-tls"),
        ),
        (
            "no sni, tls",
            conn("192.0.2.1:443").tls(),
            Some("port-443-tls"),
        ),
        // Port 443 has chains, so Envoy does not fall back to the port-less ones.
        (
            "no backtracking to other ports",
            conn("192.0.2.1:443"),
            None,
        ),
        (
            "source prefix",
            conn("192.0.2.1:9000").src("192.168.1.1:5"),
            Some("port-9000-from-192"),
        ),
        ("source prefix mismatch", conn("192.0.2.1:9000"), None),
        (
            "loopback source",
            conn("127.0.0.1:9100").src("127.0.0.1:40000"),
            Some("port-9100-loopback-src"),
        ),
        (
            "external source port",
            conn("192.0.2.1:9100"),
            Some("port-9100-src-port"),
        ),
        (
            "ipv4-mapped destination",
            conn("[::ffff:10.1.2.3]:1234"),
            Some("net-10.1/16"),
        ),
    ];
    for (what, c, want) in cases {
        assert_eq!(pick(&chains, None, &c), want, "{what}");
    }
}

#[test]
fn default_chain_takes_what_nothing_matches() {
    let chains = vec![chain(
        "tls-only",
        ChainMatch {
            transport_protocol: Some("tls".into()),
            ..Default::default()
        },
    )];
    let default = chain("default", ChainMatch::default());
    assert_eq!(
        pick(&chains, Some(&default), &conn("192.0.2.1:80").tls()),
        Some("tls-only")
    );
    assert_eq!(
        pick(&chains, Some(&default), &conn("192.0.2.1:80")),
        Some("default")
    );
    assert_eq!(pick(&chains, None, &conn("192.0.2.1:80")), None);
}

#[test]
fn server_names_without_sni_do_not_match() {
    let chains = vec![
        chain(
            "named",
            ChainMatch {
                server_names: vec!["a.example".into()],
                ..Default::default()
            },
        ),
        chain("unnamed", ChainMatch::default()),
    ];
    assert_eq!(
        pick(&chains, None, &conn("192.0.2.1:443").tls()),
        Some("unnamed")
    );
    assert_eq!(
        pick(&chains, None, &conn("192.0.2.1:443").sni("a.example")),
        Some("named")
    );
    assert_eq!(
        pick(&chains, None, &conn("192.0.2.1:443").sni("b.example")),
        Some("unnamed")
    );
}

#[test]
fn ip_level_is_decided_before_server_name() {
    // Envoy picks the most specific IP group first; a server-name match in a less specific
    // group does not win.
    let chains = vec![
        chain(
            "narrow-ip",
            ChainMatch {
                prefix_ranges: vec![cidr("10.0.0.0/24")],
                ..Default::default()
            },
        ),
        chain(
            "wide-ip-with-sni",
            ChainMatch {
                prefix_ranges: vec![cidr("10.0.0.0/8")],
                server_names: vec!["a.example".into()],
                ..Default::default()
            },
        ),
    ];
    assert_eq!(
        pick(&chains, None, &conn("10.0.0.5:443").sni("a.example")),
        Some("narrow-ip")
    );
    assert_eq!(
        pick(&chains, None, &conn("10.9.0.5:443").sni("a.example")),
        Some("wide-ip-with-sni")
    );
    assert_eq!(
        pick(&chains, None, &conn("10.9.0.5:443").sni("b.example")),
        None
    );
}
