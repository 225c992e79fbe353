use std::net::SocketAddr;

use envoy_types::pb::{
    envoy::{
        config::core::v3::CidrRange as EnvoyCidrRange,
        extensions::matching::common_inputs::network::v3 as ni,
    },
    google::protobuf::{UInt32Value, UInt32Value as XdsUInt32},
    xds::r#type::matcher::v3::{
        RegexMatcher as XdsRegexMatcher, StringMatcher as XdsStringMatcher,
        matcher::matcher_list::Predicate as XdsPredicateMsg,
    },
};
use prost::Message;

use super::*;

// --- building protos ---

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{}", T::full_name()),
        value: m.encode_to_vec(),
    }
}

fn ext<T: Message + Name>(m: &T) -> TypedExtensionConfig {
    TypedExtensionConfig {
        name: "ext".into(),
        typed_config: Some(any(m)),
    }
}

fn dst_ip() -> TypedExtensionConfig {
    ext(&ni::DestinationIpInput {})
}
fn dst_port() -> TypedExtensionConfig {
    ext(&ni::DestinationPortInput {})
}
fn src_ip() -> TypedExtensionConfig {
    ext(&ni::SourceIpInput {})
}
fn src_port() -> TypedExtensionConfig {
    ext(&ni::SourcePortInput {})
}
fn direct_src_ip() -> TypedExtensionConfig {
    ext(&ni::DirectSourceIpInput {})
}
fn src_type() -> TypedExtensionConfig {
    ext(&ni::SourceTypeInput {})
}
fn sni() -> TypedExtensionConfig {
    ext(&ni::ServerNameInput {})
}
fn transport() -> TypedExtensionConfig {
    ext(&ni::TransportProtocolInput {})
}
fn alpn() -> TypedExtensionConfig {
    ext(&ni::ApplicationProtocolInput {})
}

/// `OnMatch` naming a chain.
fn to(chain: &str) -> XdsOnMatch {
    XdsOnMatch {
        keep_matching: false,
        on_match: Some(XdsOnMatchKind::Action(ext(&StringValue {
            value: chain.into(),
        }))),
    }
}

/// `OnMatch` with a nested matcher.
fn then(m: xds_matcher::Matcher) -> XdsOnMatch {
    XdsOnMatch {
        keep_matching: false,
        on_match: Some(XdsOnMatchKind::Matcher(Box::new(m))),
    }
}

fn map(entries: Vec<(&str, XdsOnMatch)>) -> MatchMap {
    MatchMap {
        map: entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

fn tree(
    input: TypedExtensionConfig,
    tree_type: TreeType,
    on_no_match: Option<XdsOnMatch>,
) -> xds_matcher::Matcher {
    xds_matcher::Matcher {
        on_no_match: on_no_match.map(Box::new),
        matcher_type: Some(MatcherType::MatcherTree(XdsMatcherTree {
            input: Some(input),
            tree_type: Some(tree_type),
        })),
    }
}

fn exact(
    input: TypedExtensionConfig,
    entries: Vec<(&str, XdsOnMatch)>,
    on_no_match: Option<XdsOnMatch>,
) -> xds_matcher::Matcher {
    tree(input, TreeType::ExactMatchMap(map(entries)), on_no_match)
}

fn prefix(
    input: TypedExtensionConfig,
    entries: Vec<(&str, XdsOnMatch)>,
    on_no_match: Option<XdsOnMatch>,
) -> xds_matcher::Matcher {
    tree(input, TreeType::PrefixMatchMap(map(entries)), on_no_match)
}

fn xds_cidr(s: &str) -> XdsCidrRange {
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    XdsCidrRange {
        address_prefix: ip.into(),
        prefix_len: len.parse().ok().map(|value| XdsUInt32 { value }),
    }
}

fn range(cidrs: &[&str], on_match: XdsOnMatch, exclusive: bool) -> IpRangeMatcher {
    IpRangeMatcher {
        ranges: cidrs.iter().map(|c| xds_cidr(c)).collect(),
        on_match: Some(on_match),
        exclusive,
    }
}

fn ip_tree(
    input: TypedExtensionConfig,
    range_matchers: Vec<IpRangeMatcher>,
    on_no_match: Option<XdsOnMatch>,
) -> xds_matcher::Matcher {
    tree(
        input,
        TreeType::CustomMatch(ext(&IpMatcher { range_matchers })),
        on_no_match,
    )
}

fn list(
    matchers: Vec<(XdsPredicateMsg, XdsOnMatch)>,
    on_no_match: Option<XdsOnMatch>,
) -> xds_matcher::Matcher {
    xds_matcher::Matcher {
        on_no_match: on_no_match.map(Box::new),
        matcher_type: Some(MatcherType::MatcherList(XdsMatcherList {
            matchers: matchers
                .into_iter()
                .map(|(p, o)| XdsFieldMatcher {
                    predicate: Some(p),
                    on_match: Some(o),
                })
                .collect(),
        })),
    }
}

fn pred(input: TypedExtensionConfig, m: XdsPattern) -> XdsPredicateMsg {
    pred_ci(input, m, false)
}

fn pred_ci(input: TypedExtensionConfig, m: XdsPattern, ignore_case: bool) -> XdsPredicateMsg {
    XdsPredicateMsg {
        match_type: Some(MatchType::SinglePredicate(SinglePredicate {
            input: Some(input),
            matcher: Some(single_predicate::Matcher::ValueMatch(XdsStringMatcher {
                ignore_case,
                match_pattern: Some(m),
            })),
        })),
    }
}

fn in_ranges(input: TypedExtensionConfig, cidrs: &[&str]) -> XdsPredicateMsg {
    let cidr_ranges = cidrs
        .iter()
        .map(|c| {
            let (ip, len) = c.split_once('/').unwrap();
            EnvoyCidrRange {
                address_prefix: ip.into(),
                prefix_len: Some(UInt32Value {
                    value: len.parse().unwrap(),
                }),
            }
        })
        .collect();
    XdsPredicateMsg {
        match_type: Some(MatchType::SinglePredicate(SinglePredicate {
            input: Some(input),
            matcher: Some(single_predicate::Matcher::CustomMatch(ext(&IpInRanges {
                cidr_ranges,
                stat_prefix: "ip".into(),
            }))),
        })),
    }
}

fn or(ps: Vec<XdsPredicateMsg>) -> XdsPredicateMsg {
    XdsPredicateMsg {
        match_type: Some(MatchType::OrMatcher(PredicateList { predicate: ps })),
    }
}
fn and(ps: Vec<XdsPredicateMsg>) -> XdsPredicateMsg {
    XdsPredicateMsg {
        match_type: Some(MatchType::AndMatcher(PredicateList { predicate: ps })),
    }
}
fn not(p: XdsPredicateMsg) -> XdsPredicateMsg {
    XdsPredicateMsg {
        match_type: Some(MatchType::NotMatcher(Box::new(p))),
    }
}

fn xexact(s: &str) -> XdsPattern {
    XdsPattern::Exact(s.into())
}

// --- converting ---

fn root() -> Path {
    Path::named("listeners[0].filter_chain_matcher")
}

fn build(m: &xds_matcher::Matcher, chains: &[&str]) -> ChainMatcher {
    let mut ctx = Ctx::default();
    let out = ChainMatcher::convert(&mut ctx, &root(), m, chains);
    ctx.finish(out).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(m: &xds_matcher::Matcher, chains: &[&str]) -> Vec<String> {
    let mut ctx = Ctx::default();
    let out = ChainMatcher::convert(&mut ctx, &root(), m, chains);
    assert!(out.is_none(), "conversion should fail");
    match ctx.finish(out) {
        Ok(_) => unreachable!("no value"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

// --- connections ---

struct Conn {
    dst: SocketAddr,
    src: SocketAddr,
    sni: Option<&'static str>,
    transport: &'static str,
    alpn: Vec<Box<str>>,
}

fn conn(dst: &str) -> Conn {
    Conn {
        dst: dst.parse().unwrap(),
        src: "10.0.0.99:40000".parse().unwrap(),
        sni: None,
        transport: "raw_buffer",
        alpn: Vec::new(),
    }
}

impl Conn {
    fn src(mut self, s: &str) -> Self {
        self.src = s.parse().unwrap();
        self
    }
    fn sni(mut self, s: &'static str) -> Self {
        self.sni = Some(s);
        self.transport = "tls";
        self
    }
    fn alpn(mut self, a: &[&str]) -> Self {
        self.alpn = a.iter().map(|s| Box::from(*s)).collect();
        self
    }
    fn facts(&self) -> ConnFacts<'_> {
        ConnFacts {
            destination: self.dst,
            source: self.src,
            direct_source: self.src,
            server_name: self.sni,
            transport_protocol: self.transport,
            application_protocols: &self.alpn,
        }
    }
}

/// Runs a table of connections against one matcher.
fn check(m: &ChainMatcher, cases: &[(Conn, Option<&str>)]) {
    for (i, (c, want)) in cases.iter().enumerate() {
        assert_eq!(
            m.select(&c.facts()),
            *want,
            "case {i}: dst {} src {} sni {:?} alpn {:?}",
            c.dst,
            c.src,
            c.sni,
            c.alpn
        );
    }
}

// --- selection ---

/// The shape istiod gives a waypoint's `main_internal` listener: destination VIP, then port (or
/// the detected protocol for a pod address), then the chain.
fn istio_inbound() -> (xds_matcher::Matcher, Vec<&'static str>) {
    let m = ip_tree(
        dst_ip(),
        vec![
            range(
                &["10.96.1.201/32"],
                then(exact(
                    dst_port(),
                    vec![(
                        "9080",
                        to("inbound-vip|9080||details.default.svc.cluster.local-http"),
                    )],
                    None,
                )),
                false,
            ),
            range(
                &["10.104.171.68/32"],
                then(exact(
                    dst_port(),
                    vec![
                        (
                            "8000",
                            to("inbound-vip|8000||httpbin.default.svc.cluster.local-http"),
                        ),
                        (
                            "8100",
                            to("inbound-vip|8100||httpbin.default.svc.cluster.local-http"),
                        ),
                    ],
                    None,
                )),
                false,
            ),
            range(
                &["192.168.195.248/32", "fd00::248/128"],
                then(exact(
                    alpn(),
                    vec![
                        ("'h2c'", to("direct-http")),
                        ("'http/1.1'", to("direct-http")),
                    ],
                    Some(to("direct-tcp")),
                )),
                false,
            ),
        ],
        None,
    );
    let chains = vec![
        "inbound-vip|9080||details.default.svc.cluster.local-http",
        "inbound-vip|8000||httpbin.default.svc.cluster.local-http",
        "inbound-vip|8100||httpbin.default.svc.cluster.local-http",
        "direct-tcp",
        "direct-http",
    ];
    (m, chains)
}

#[test]
fn istio_inbound_vip_then_port_then_alpn() {
    let (m, chains) = istio_inbound();
    let m = build(&m, &chains);
    check(
        &m,
        &[
            (
                conn("10.96.1.201:9080"),
                Some("inbound-vip|9080||details.default.svc.cluster.local-http"),
            ),
            (conn("10.96.1.201:9081"), None),
            (
                conn("10.104.171.68:8100"),
                Some("inbound-vip|8100||httpbin.default.svc.cluster.local-http"),
            ),
            (
                conn("192.168.195.248:7777").alpn(&["h2c"]),
                Some("direct-http"),
            ),
            (
                conn("192.168.195.248:7777").alpn(&["http/1.1"]),
                Some("direct-http"),
            ),
            (conn("192.168.195.248:7777"), Some("direct-tcp")),
            (conn("[fd00::248]:80").alpn(&["h2c"]), Some("direct-http")),
            (conn("10.0.0.1:9080"), None),
        ],
    );
}

#[test]
fn a_nested_miss_falls_back_to_the_outer_on_no_match() {
    let m = exact(
        dst_port(),
        vec![(
            "443",
            then(exact(sni(), vec![("a.example", to("a"))], None)),
        )],
        Some(to("fallback")),
    );
    let m = build(&m, &["a", "fallback"]);
    check(
        &m,
        &[
            (conn("10.0.0.1:443").sni("a.example"), Some("a")),
            (conn("10.0.0.1:443").sni("b.example"), Some("fallback")),
            (conn("10.0.0.1:443"), Some("fallback")),
            (conn("10.0.0.1:80"), Some("fallback")),
        ],
    );
}

#[test]
fn prefix_maps_prefer_the_longest_prefix_and_lists_go_in_order() {
    let m = prefix(
        sni(),
        vec![("api.", to("api")), ("api.v2.", to("v2"))],
        None,
    );
    let m = build(&m, &["api", "v2"]);
    check(
        &m,
        &[
            (conn("10.0.0.1:443").sni("api.v2.example"), Some("v2")),
            (conn("10.0.0.1:443").sni("api.example"), Some("api")),
            (conn("10.0.0.1:443").sni("web.example"), None),
        ],
    );
    let m = list(
        vec![
            (
                and(vec![
                    in_ranges(src_ip(), &["10.1.0.0/16"]),
                    not(pred(transport(), xexact("tls"))),
                ]),
                to("plain-from-10.1"),
            ),
            (
                or(vec![
                    pred(transport(), xexact("tls")),
                    pred_ci(sni(), xexact("X.EXAMPLE"), true),
                ]),
                to("tls"),
            ),
        ],
        Some(to("other")),
    );
    let m = build(&m, &["plain-from-10.1", "tls", "other"]);
    check(
        &m,
        &[
            (
                conn("10.0.0.1:80").src("10.1.2.3:5000"),
                Some("plain-from-10.1"),
            ),
            (conn("10.0.0.1:80").src("10.2.2.3:5000"), Some("other")),
            (
                conn("10.0.0.1:443").src("10.1.2.3:5000").sni("y"),
                Some("tls"),
            ),
        ],
    );
}

#[test]
fn an_unknown_chain_name_is_a_warning_not_an_error() {
    let m = exact(dst_port(), vec![("80", to("gone"))], Some(to("here")));
    let mut ctx = Ctx::default();
    let out = ChainMatcher::convert(&mut ctx, &root(), &m, &["here"]);
    let warnings = ctx.take_warnings();
    let m = ctx.finish(out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].to_string().contains("'gone'"),
        "{}",
        warnings[0]
    );
    // The name is kept: the listener finds no such chain and closes the connection.
    check(
        &m,
        &[
            (conn("10.0.0.1:80"), Some("gone")),
            (conn("10.0.0.1:81"), Some("here")),
        ],
    );
}

#[test]
fn what_skiff_cannot_evaluate_is_an_error_with_its_path() {
    let unknown_input = exact(
        ext(&StringValue {
            value: "not an input".into(),
        }),
        vec![("x", to("a"))],
        None,
    );
    let e = errors(&unknown_input, &["a"]);
    assert!(
        e.iter()
            .any(|e| e.contains("listeners[0].filter_chain_matcher")),
        "{e:?}"
    );
    let bad_cidr = ip_tree(
        dst_ip(),
        vec![range(&["10.0.0.300/32"], to("a"), false)],
        None,
    );
    let e = errors(&bad_cidr, &["a"]);
    assert!(e.iter().any(|e| e.contains("10.0.0.300")), "{e:?}");
    // A matcher with neither a list nor a tree is Envoy's "match anything": its on_no_match.
    let empty = build(&xds_matcher::Matcher::default(), &["a"]);
    check(&empty, &[(conn("10.0.0.1:80"), None)]);
}

#[test]
fn source_inputs_and_regex_values() {
    let regex = XdsPattern::SafeRegex(XdsRegexMatcher {
        regex: r"^api-\d+\.example$".into(),
        ..Default::default()
    });
    let m = list(
        vec![
            (pred(src_type(), xexact("local")), to("local")),
            (pred(src_port(), xexact("5000")), to("port-5000")),
            (
                in_ranges(direct_src_ip(), &["10.9.0.0/16"]),
                to("direct-10.9"),
            ),
            (pred(sni(), regex), to("api")),
        ],
        None,
    );
    let m = build(&m, &["local", "port-5000", "direct-10.9", "api"]);
    check(
        &m,
        &[
            (conn("10.0.0.1:80").src("127.0.0.1:4000"), Some("local")),
            (conn("10.0.0.1:80").src("10.1.1.1:5000"), Some("port-5000")),
            (
                conn("10.0.0.1:80").src("10.9.1.1:4000"),
                Some("direct-10.9"),
            ),
            (conn("10.0.0.1:443").sni("api-7.example"), Some("api")),
            (conn("10.0.0.1:443").sni("api-x.example"), None),
        ],
    );
}
