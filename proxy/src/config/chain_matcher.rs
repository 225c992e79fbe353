//! `Listener.filter_chain_matcher`: Envoy's unified matcher (`xds.type.matcher.v3.Matcher`) that
//! names the filter chain serving a connection, converted once and evaluated as a pure function.
//!
//! Evaluation follows Envoy's matcher framework (`source/common/matcher/*` and
//! `source/extensions/common/matcher/ip_range_matcher.h`, Envoy 1.35 and later):
//! - an `OnMatch` whose nested matcher does not match counts as no match, and the matcher holding
//!   it goes on: a `matcher_list` tries its next field matcher, an exact map uses its
//!   `on_no_match`, a prefix map tries the shorter matching prefixes first, an IP matcher its less
//!   specific non-exclusive ranges. Every matcher ends with its own `on_no_match`;
//! - an input with no value (no SNI, no ALPN, a source that is not local for `SourceTypeInput`)
//!   never matches a map or IP entry (the tree's `on_no_match` applies), and makes a predicate
//!   on it false.
//!
//! With a matcher, Envoy ignores the chains' `filter_chain_match` and looks chains up by name
//! only among `filter_chains` (never `default_filter_chain`). When nothing matches, the default
//! chain serves the connection, or the connection is closed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::{self, Write as _},
    net::IpAddr,
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::CidrRange as EnvoyCidrRange,
        extensions::matching::{
            common_inputs::network::v3 as network_inputs, input_matchers::ip::v3::Ip as IpInRanges,
        },
        r#type::matcher::v3::{
            RegexMatcher as EnvoyRegexMatcher, StringMatcher as EnvoyStringMatcher,
            string_matcher::MatchPattern as EnvoyPattern,
        },
    },
    google::protobuf::{Any, StringValue},
    xds::{
        core::v3::{CidrRange as XdsCidrRange, TypedExtensionConfig},
        r#type::matcher::v3::{self as xds_matcher, string_matcher::MatchPattern as XdsPattern},
    },
};
use prost::Name;
use smallvec::SmallVec;

use super::{
    common::{self, Cidr, canonical},
    error::{Ctx, Path, reject_unsupported},
    matcher::{self, StringMatcher},
};
use crate::listener::chain_match::ConnFacts;

use xds_matcher::matcher::{
    MatcherList as XdsMatcherList, MatcherTree as XdsMatcherTree, MatcherType,
    OnMatch as XdsOnMatch,
    matcher_list::{
        FieldMatcher as XdsFieldMatcher, Predicate as XdsPredicate,
        predicate::{MatchType, PredicateList, SinglePredicate, single_predicate},
    },
    matcher_tree::{MatchMap, TreeType},
    on_match::OnMatch as XdsOnMatchKind,
};

/// `Listener.filter_chain_matcher`, converted: names the filter chain for a connection.
#[derive(Debug)]
pub struct ChainMatcher {
    root: Matcher,
}

/// `xds.type.matcher.v3.IPMatcher`, which `envoy-types` does not generate. Field numbers from
/// cncf/xds `xds/type/matcher/v3/ip.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpMatcher {
    /// Ranges and what to do for an address in them.
    #[prost(message, repeated, tag = "1")]
    pub range_matchers: Vec<IpRangeMatcher>,
}

/// `xds.type.matcher.v3.IPMatcher.IPRangeMatcher`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpRangeMatcher {
    /// A non-empty set of networks.
    #[prost(message, repeated, tag = "1")]
    pub ranges: Vec<XdsCidrRange>,
    /// What to do when the address is in one of the ranges.
    #[prost(message, optional, tag = "2")]
    pub on_match: Option<XdsOnMatch>,
    /// Whether a more specific range, even one whose `on_match` does not match, hides this one.
    #[prost(bool, tag = "3")]
    pub exclusive: bool,
}

/// A matcher: a list or a tree, and what applies when it does not match.
#[derive(Debug)]
struct Matcher {
    kind: MatcherKind,
    on_no_match: Option<OnMatch>,
}

#[derive(Debug)]
enum MatcherKind {
    /// Neither a list nor a tree: only `on_no_match` applies.
    Empty,
    /// `matcher_list`: the first field matcher whose predicate and `on_match` both match wins.
    List(Vec<FieldMatcher>),
    /// `matcher_tree`: the input's value looked up in a map or an IP table.
    Tree { input: Input, tree: Tree },
}

#[derive(Debug)]
enum Tree {
    /// `exact_match_map`.
    Exact(HashMap<Box<str>, OnMatch>),
    /// `prefix_match_map`: the keys grouped by length, longest first.
    Prefix(Vec<(usize, HashMap<Box<str>, OnMatch>)>),
    /// `custom_match` with an `IPMatcher`.
    Ip(IpTable),
}

/// `OnMatch`: a filter chain's name, or a nested matcher.
#[derive(Debug)]
enum OnMatch {
    Chain(Box<str>),
    Matcher(Box<Matcher>),
}

#[derive(Debug)]
struct FieldMatcher {
    predicate: Predicate,
    on_match: OnMatch,
}

#[derive(Debug)]
enum Predicate {
    Single { input: Input, test: ValueTest },
    Or(Vec<Predicate>),
    And(Vec<Predicate>),
    Not(Box<Predicate>),
}

/// What a single predicate checks of its input's value.
#[derive(Debug)]
enum ValueTest {
    /// `value_match`.
    String(StringMatcher),
    /// `custom_match` with `envoy.matching.input_matchers.ip`: the value is an IP address in one
    /// of these networks.
    InRanges(Vec<Cidr>),
}

/// The network inputs (`envoy.matching.inputs.*`) Skiff knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    DestinationIp,
    DestinationPort,
    SourceIp,
    SourcePort,
    DirectSourceIp,
    SourceType,
    ServerName,
    TransportProtocol,
    ApplicationProtocol,
}

/// An `IPMatcher`, indexed: for each family, the networks grouped by prefix length (longest
/// first), each network naming its range matchers in declaration order. A lookup costs one hash
/// probe per distinct prefix length, however many ranges there are.
#[derive(Debug, Default)]
struct IpTable {
    v4: Vec<PrefixGroup>,
    v6: Vec<PrefixGroup>,
    ranges: Vec<IpRange>,
}

#[derive(Debug)]
struct PrefixGroup {
    len: u8,
    /// Network bits (host bits cleared) to indices into `IpTable::ranges`, ascending.
    nets: HashMap<u128, SmallVec<[u32; 1]>>,
}

#[derive(Debug)]
struct IpRange {
    on_match: OnMatch,
    exclusive: bool,
}

/// An input's value: borrowed from the connection's facts, formatted on the stack (addresses and
/// ports), or allocated (the application protocol list, only when that input is used).
#[derive(Debug)]
enum Value<'f> {
    Borrowed(&'f str),
    Inline(Inline),
    Owned(String),
}

/// Room for the longest textual IP address (45 bytes) on the stack.
#[derive(Debug)]
struct Inline {
    buf: [u8; 48],
    len: usize,
}

const NETWORK_INPUTS: &str = "envoy.extensions.matching.common_inputs.network.v3";
const FORMAT_STRING_ACTION: &str = "envoy.config.core.v3.SubstitutionFormatString";

// === impl ChainMatcher ===

impl ChainMatcher {
    /// Converts `Listener.filter_chain_matcher` at `path`. `chain_names` are the names of the
    /// listener's `filter_chains` (not its `default_filter_chain`, which Envoy never looks up by
    /// name); every action must name one of them.
    pub(crate) fn convert(
        ctx: &mut Ctx,
        path: &Path,
        m: &xds_matcher::Matcher,
        chain_names: &[&str],
    ) -> Option<ChainMatcher> {
        let before = ctx.count();
        let names: HashSet<&str> = chain_names.iter().copied().collect();
        let root = convert_matcher(ctx, path, m, &names);
        if ctx.count() != before {
            return None;
        }
        Some(ChainMatcher { root: root? })
    }

    /// The name of the filter chain for this connection, or `None` when nothing matches (the
    /// listener's `default_filter_chain` then serves it, or the connection is closed).
    pub fn select<'a>(&'a self, facts: &ConnFacts<'_>) -> Option<&'a str> {
        self.root.eval(facts)
    }
}

/// With a `filter_chain_matcher`, Envoy requires every filter chain to carry a name that is
/// unique in the listener. `names` are the `filter_chains` names as configured (empty when
/// unset), `chains_path` the path of `filter_chains`.
pub(crate) fn check_chain_names(ctx: &mut Ctx, chains_path: &Path, names: &[&str]) {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let path = chains_path.index(i).field("name");
        if name.is_empty() {
            ctx.error(
                &path,
                "a name is required on every filter chain of a listener with a filter_chain_matcher",
            );
        } else if let Some(first) = seen.insert(name, i) {
            ctx.error(
                &path,
                format!("duplicate filter chain name '{name}' (also filter_chains[{first}])"),
            );
        }
    }
}

// === impl IpMatcher ===

impl Name for IpMatcher {
    const NAME: &'static str = "IPMatcher";
    const PACKAGE: &'static str = "xds.type.matcher.v3";
}

// === impl Matcher ===

impl Matcher {
    fn eval<'a>(&'a self, f: &ConnFacts<'_>) -> Option<&'a str> {
        let hit = match &self.kind {
            MatcherKind::Empty => None,
            MatcherKind::List(list) => list
                .iter()
                .filter(|fm| fm.predicate.matches(f))
                .find_map(|fm| fm.on_match.eval(f)),
            MatcherKind::Tree { input, tree } => tree.eval(*input, f),
        };
        hit.or_else(|| self.on_no_match.as_ref().and_then(|o| o.eval(f)))
    }
}

// === impl Tree ===

impl Tree {
    fn eval<'a>(&'a self, input: Input, f: &ConnFacts<'_>) -> Option<&'a str> {
        match self {
            Tree::Exact(map) => {
                let value = input.value(f)?;
                map.get(value.as_str())?.eval(f)
            }
            Tree::Prefix(by_len) => {
                let value = input.value(f)?;
                let value = value.as_str();
                // Longest prefix first; a branch that does not match falls back to shorter ones
                // (Envoy's `prefix_map_matcher_resume_after_subtree_miss`, on by default).
                by_len
                    .iter()
                    .filter_map(|(len, map)| map.get(value.get(..*len)?))
                    .find_map(|o| o.eval(f))
            }
            Tree::Ip(table) => table.eval(input.ip(f)?, f),
        }
    }
}

// === impl OnMatch ===

impl OnMatch {
    fn eval<'a>(&'a self, f: &ConnFacts<'_>) -> Option<&'a str> {
        match self {
            OnMatch::Chain(name) => Some(name),
            OnMatch::Matcher(m) => m.eval(f),
        }
    }
}

// === impl Predicate ===

impl Predicate {
    fn matches(&self, f: &ConnFacts<'_>) -> bool {
        match self {
            Predicate::Single { input, test } => match test {
                ValueTest::String(m) => input.value(f).is_some_and(|v| m.matches(v.as_str())),
                ValueTest::InRanges(ranges) => input
                    .ip(f)
                    .is_some_and(|ip| ranges.iter().any(|r| r.contains(ip))),
            },
            Predicate::Or(ps) => ps.iter().any(|p| p.matches(f)),
            Predicate::And(ps) => ps.iter().all(|p| p.matches(f)),
            Predicate::Not(p) => !p.matches(f),
        }
    }
}

// === impl Input ===

impl Input {
    /// The input's value as Envoy renders it, or `None` when it has none.
    fn value<'f>(self, f: &ConnFacts<'f>) -> Option<Value<'f>> {
        match self {
            Input::DestinationIp => Inline::ip(f.destination.ip()),
            Input::DestinationPort => Inline::port(f.destination.port()),
            Input::SourceIp => Inline::ip(f.source.ip()),
            Input::SourcePort => Inline::port(f.source.port()),
            Input::DirectSourceIp => Inline::ip(f.direct_source.ip()),
            // Envoy's SourceTypeInput: "local" for a loopback source or one equal to the
            // destination, no value otherwise.
            Input::SourceType => {
                let src = canonical(f.source.ip());
                let local = src.is_loopback() || src == canonical(f.destination.ip());
                local.then_some(Value::Borrowed("local"))
            }
            Input::ServerName => f.server_name.filter(|s| !s.is_empty()).map(Value::Borrowed),
            Input::TransportProtocol => {
                (!f.transport_protocol.is_empty()).then_some(Value::Borrowed(f.transport_protocol))
            }
            // Envoy renders the list quoted and comma-separated: `'h2','http/1.1'`.
            Input::ApplicationProtocol => {
                let protocols = f.application_protocols;
                if protocols.is_empty() {
                    return None;
                }
                let mut s = String::with_capacity(protocols.iter().map(|p| p.len() + 3).sum());
                for (i, p) in protocols.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push('\'');
                    s.push_str(p);
                    s.push('\'');
                }
                Some(Value::Owned(s))
            }
        }
    }

    /// The input's value as an IP address: the socket addresses directly, any other input's
    /// text parsed (as Envoy's IP matchers do); `None` when there is no value or it is no address.
    fn ip(self, f: &ConnFacts<'_>) -> Option<IpAddr> {
        match self {
            Input::DestinationIp => Some(canonical(f.destination.ip())),
            Input::SourceIp => Some(canonical(f.source.ip())),
            Input::DirectSourceIp => Some(canonical(f.direct_source.ip())),
            other => other.value(f)?.as_str().parse().ok(),
        }
    }
}

// === impl Value ===

impl Value<'_> {
    fn as_str(&self) -> &str {
        match self {
            Value::Borrowed(s) => s,
            Value::Inline(i) => i.as_str(),
            Value::Owned(s) => s,
        }
    }
}

// === impl Inline ===

impl Inline {
    /// An address as Envoy prints it; an IPv4-mapped IPv6 address is printed as IPv4, as Envoy
    /// reports addresses accepted on a dual-stack socket.
    fn ip(ip: IpAddr) -> Option<Value<'static>> {
        Self::format(format_args!("{}", canonical(ip)))
    }

    fn port(port: u16) -> Option<Value<'static>> {
        Self::format(format_args!("{port}"))
    }

    fn format(args: fmt::Arguments<'_>) -> Option<Value<'static>> {
        let mut s = Inline {
            buf: [0; 48],
            len: 0,
        };
        s.write_fmt(args).ok()?;
        Some(Value::Inline(s))
    }

    fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

impl fmt::Write for Inline {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

// === impl IpTable ===

impl IpTable {
    /// Envoy's IP range matcher: candidates by prefix length (longest first), then declaration
    /// order. The most specific one is always tried; after it, exclusive ranges are skipped.
    fn eval<'a>(&'a self, ip: IpAddr, f: &ConnFacts<'_>) -> Option<&'a str> {
        let (bits, width, groups) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, &self.v4),
            IpAddr::V6(a) => (u128::from(a), 128, &self.v6),
        };
        let mut first = true;
        for group in groups {
            let Some(ids) = group.nets.get(&network(bits, width, group.len)) else {
                continue;
            };
            for &id in ids {
                let Some(range) = self.ranges.get(id as usize) else {
                    continue;
                };
                if !first && range.exclusive {
                    continue;
                }
                if let Some(name) = range.on_match.eval(f) {
                    return Some(name);
                }
                first = false;
            }
        }
        None
    }
}

/// `bits` (an address `width` bits wide) with all but the first `len` bits cleared.
fn network(bits: u128, width: u8, len: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let host = u32::from(width.saturating_sub(len));
    (bits >> host) << host
}

// === conversion ===

fn convert_matcher(
    ctx: &mut Ctx,
    path: &Path,
    m: &xds_matcher::Matcher,
    names: &HashSet<&str>,
) -> Option<Matcher> {
    let xds_matcher::Matcher {
        on_no_match,
        matcher_type,
    } = m;
    let kind = match matcher_type {
        // Envoy accepts a matcher with only `on_no_match` (its AnyMatcher).
        None => Some(MatcherKind::Empty),
        Some(MatcherType::MatcherList(l)) => {
            convert_list(ctx, &path.field("matcher_list"), l, names).map(MatcherKind::List)
        }
        Some(MatcherType::MatcherTree(t)) => {
            convert_tree(ctx, &path.field("matcher_tree"), t, names)
        }
    };
    let on_no_match = on_no_match
        .as_deref()
        .map(|o| convert_on_match(ctx, &path.field("on_no_match"), o, names));
    let on_no_match = match on_no_match {
        None => None,
        Some(o) => Some(o?),
    };
    Some(Matcher {
        kind: kind?,
        on_no_match,
    })
}

fn convert_on_match(
    ctx: &mut Ctx,
    path: &Path,
    o: &XdsOnMatch,
    names: &HashSet<&str>,
) -> Option<OnMatch> {
    let XdsOnMatch {
        keep_matching,
        on_match,
    } = o;
    reject_unsupported!(ctx, path, keep_matching);
    match on_match {
        None => {
            ctx.error(path, "an on_match needs a matcher or an action");
            None
        }
        Some(XdsOnMatchKind::Matcher(m)) => convert_matcher(ctx, &path.field("matcher"), m, names)
            .map(|m| OnMatch::Matcher(Box::new(m))),
        Some(XdsOnMatchKind::Action(a)) => {
            convert_action(ctx, &path.field("action"), a, names).map(OnMatch::Chain)
        }
    }
}

/// The action must be a `google.protobuf.StringValue` naming one of the listener's filter
/// chains. (Envoy accepts a name no chain has and closes the connections that reach it; Skiff
/// refuses the configuration instead.)
fn convert_action(
    ctx: &mut Ctx,
    path: &Path,
    a: &TypedExtensionConfig,
    names: &HashSet<&str>,
) -> Option<Box<str>> {
    let any = typed_config(ctx, path, a, "an action")?;
    let tc = path.field("typed_config");
    match common::any_type_name(any) {
        n if n == StringValue::full_name() => {
            let StringValue { value } = common::unpack::<StringValue>(ctx, &tc, any)?;
            // Envoy resolves the name per connection and closes the connection when no chain
            // has it; istiod's trimmed dumps carry such names, so they are accepted, loudly.
            if !names.contains(value.as_str()) {
                ctx.warn(
                    &tc.field("value"),
                    format!(
                        "names filter chain '{value}', which is not in filter_chains; \
                         connections it selects are closed"
                    ),
                );
            }
            Some(value.into())
        }
        FORMAT_STRING_ACTION => {
            ctx.error(
                &tc,
                format!(
                    "the format string action (@type '{FORMAT_STRING_ACTION}') is not supported \
                     by Skiff"
                ),
            );
            None
        }
        other => {
            ctx.error(
                &tc,
                format!(
                    "action @type '{other}' cannot select a filter chain (expected \
                     google.protobuf.StringValue naming one)"
                ),
            );
            None
        }
    }
}

fn convert_input(ctx: &mut Ctx, path: &Path, i: &TypedExtensionConfig) -> Option<Input> {
    use network_inputs::{
        ApplicationProtocolInput, DestinationIpInput, DestinationPortInput, DirectSourceIpInput,
        ServerNameInput, SourceIpInput, SourcePortInput, SourceTypeInput, TransportProtocolInput,
    };
    let any = typed_config(ctx, path, i, "an input")?;
    let tc = path.field("typed_config");
    let name = common::any_type_name(any);
    match name {
        n if n == DestinationIpInput::full_name() => {
            common::unpack::<DestinationIpInput>(ctx, &tc, any).map(|_| Input::DestinationIp)
        }
        n if n == DestinationPortInput::full_name() => {
            common::unpack::<DestinationPortInput>(ctx, &tc, any).map(|_| Input::DestinationPort)
        }
        n if n == SourceIpInput::full_name() => {
            common::unpack::<SourceIpInput>(ctx, &tc, any).map(|_| Input::SourceIp)
        }
        n if n == SourcePortInput::full_name() => {
            common::unpack::<SourcePortInput>(ctx, &tc, any).map(|_| Input::SourcePort)
        }
        n if n == DirectSourceIpInput::full_name() => {
            common::unpack::<DirectSourceIpInput>(ctx, &tc, any).map(|_| Input::DirectSourceIp)
        }
        n if n == SourceTypeInput::full_name() => {
            common::unpack::<SourceTypeInput>(ctx, &tc, any).map(|_| Input::SourceType)
        }
        n if n == ServerNameInput::full_name() => {
            common::unpack::<ServerNameInput>(ctx, &tc, any).map(|_| Input::ServerName)
        }
        n if n == TransportProtocolInput::full_name() => {
            common::unpack::<TransportProtocolInput>(ctx, &tc, any)
                .map(|_| Input::TransportProtocol)
        }
        n if n == ApplicationProtocolInput::full_name() => {
            common::unpack::<ApplicationProtocolInput>(ctx, &tc, any)
                .map(|_| Input::ApplicationProtocol)
        }
        n if n
            .strip_prefix(NETWORK_INPUTS)
            .is_some_and(|r| r.starts_with('.')) =>
        {
            // FilterStateInput, DynamicMetadataInput, NetworkNamespaceInput: state Skiff has not.
            ctx.error(&tc, format!("input @type '{n}' is not supported by Skiff"));
            None
        }
        other => {
            ctx.error(
                &tc,
                format!("input @type '{other}' is not a network input for filter chain matching"),
            );
            None
        }
    }
}

fn convert_list(
    ctx: &mut Ctx,
    path: &Path,
    l: &XdsMatcherList,
    names: &HashSet<&str>,
) -> Option<Vec<FieldMatcher>> {
    let XdsMatcherList { matchers } = l;
    let mp = path.field("matchers");
    if matchers.is_empty() {
        ctx.error(&mp, "a matcher_list needs at least one matcher");
        return None;
    }
    let out: Vec<FieldMatcher> = matchers
        .iter()
        .enumerate()
        .filter_map(|(i, fm)| convert_field_matcher(ctx, &mp.index(i), fm, names))
        .collect();
    (out.len() == matchers.len()).then_some(out)
}

fn convert_field_matcher(
    ctx: &mut Ctx,
    path: &Path,
    fm: &XdsFieldMatcher,
    names: &HashSet<&str>,
) -> Option<FieldMatcher> {
    let XdsFieldMatcher {
        predicate,
        on_match,
    } = fm;
    let predicate = match predicate {
        Some(p) => convert_predicate(ctx, &path.field("predicate"), p),
        None => {
            ctx.error(path, "a field matcher needs a predicate");
            None
        }
    };
    let on_match = match on_match {
        Some(o) => convert_on_match(ctx, &path.field("on_match"), o, names),
        None => {
            ctx.error(path, "a field matcher needs an on_match");
            None
        }
    };
    Some(FieldMatcher {
        predicate: predicate?,
        on_match: on_match?,
    })
}

fn convert_predicate(ctx: &mut Ctx, path: &Path, p: &XdsPredicate) -> Option<Predicate> {
    let list = |ctx: &mut Ctx, field: &str, l: &PredicateList| -> Option<Vec<Predicate>> {
        let PredicateList { predicate } = l;
        let pp = path.field(field).field("predicate");
        if predicate.len() < 2 {
            ctx.error(&pp, "needs at least two predicates");
            return None;
        }
        let out: Vec<Predicate> = predicate
            .iter()
            .enumerate()
            .filter_map(|(i, p)| convert_predicate(ctx, &pp.index(i), p))
            .collect();
        (out.len() == predicate.len()).then_some(out)
    };
    match &p.match_type {
        None => {
            ctx.error(
                path,
                "a predicate needs one of single_predicate, or_matcher, and_matcher, not_matcher",
            );
            None
        }
        Some(MatchType::SinglePredicate(s)) => {
            convert_single(ctx, &path.field("single_predicate"), s)
        }
        Some(MatchType::OrMatcher(l)) => list(ctx, "or_matcher", l).map(Predicate::Or),
        Some(MatchType::AndMatcher(l)) => list(ctx, "and_matcher", l).map(Predicate::And),
        Some(MatchType::NotMatcher(inner)) => {
            convert_predicate(ctx, &path.field("not_matcher"), inner)
                .map(|p| Predicate::Not(Box::new(p)))
        }
    }
}

fn convert_single(ctx: &mut Ctx, path: &Path, s: &SinglePredicate) -> Option<Predicate> {
    let SinglePredicate { input, matcher } = s;
    let input = match input {
        Some(i) => convert_input(ctx, &path.field("input"), i),
        None => {
            ctx.error(path, "a single_predicate needs an input");
            None
        }
    };
    let test = match matcher {
        Some(single_predicate::Matcher::ValueMatch(m)) => {
            convert_string_matcher(ctx, &path.field("value_match"), m).map(ValueTest::String)
        }
        Some(single_predicate::Matcher::CustomMatch(c)) => {
            convert_input_matcher(ctx, &path.field("custom_match"), c)
        }
        None => {
            ctx.error(
                path,
                "a single_predicate needs a value_match or a custom_match",
            );
            None
        }
    };
    Some(Predicate::Single {
        input: input?,
        test: test?,
    })
}

/// `xds.type.matcher.v3.StringMatcher` has the fields and meaning of Envoy's own; it is converted
/// through it so that both get the same checks.
fn convert_string_matcher(
    ctx: &mut Ctx,
    path: &Path,
    m: &xds_matcher::StringMatcher,
) -> Option<StringMatcher> {
    let xds_matcher::StringMatcher {
        ignore_case,
        match_pattern,
    } = m;
    let match_pattern = match match_pattern {
        None => None,
        Some(XdsPattern::Exact(s)) => Some(EnvoyPattern::Exact(s.clone())),
        Some(XdsPattern::Prefix(s)) => Some(EnvoyPattern::Prefix(s.clone())),
        Some(XdsPattern::Suffix(s)) => Some(EnvoyPattern::Suffix(s.clone())),
        Some(XdsPattern::Contains(s)) => Some(EnvoyPattern::Contains(s.clone())),
        // `engine_type` only names RE2; any value means the same engine.
        Some(XdsPattern::SafeRegex(r)) => Some(EnvoyPattern::SafeRegex(EnvoyRegexMatcher {
            regex: r.regex.clone(),
            engine_type: None,
        })),
        Some(XdsPattern::Custom(c)) => {
            ctx.error(
                &path.field("custom"),
                format!(
                    "custom string matcher '{}' is not supported by Skiff",
                    c.name
                ),
            );
            return None;
        }
    };
    matcher::string_matcher(
        ctx,
        path,
        &EnvoyStringMatcher {
            ignore_case: *ignore_case,
            match_pattern,
        },
    )
}

/// A single predicate's `custom_match` (`envoy.matching.input_matchers`): only the IP range
/// matcher.
fn convert_input_matcher(
    ctx: &mut Ctx,
    path: &Path,
    c: &TypedExtensionConfig,
) -> Option<ValueTest> {
    let any = typed_config(ctx, path, c, "an input matcher")?;
    let tc = path.field("typed_config");
    match common::any_type_name(any) {
        n if n == IpInRanges::full_name() => {
            let IpInRanges {
                cidr_ranges,
                stat_prefix: _, // statistics naming only
            } = common::unpack::<IpInRanges>(ctx, &tc, any)?;
            let rp = tc.field("cidr_ranges");
            if cidr_ranges.is_empty() {
                ctx.error(&rp, "needs at least one CIDR range");
                return None;
            }
            let ranges: Vec<Cidr> = cidr_ranges
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let EnvoyCidrRange {
                        address_prefix,
                        prefix_len,
                    } = r;
                    let (ip, len) = cidr_parts(
                        ctx,
                        &rp.index(i),
                        address_prefix,
                        prefix_len.as_ref().map(|v| v.value),
                    )?;
                    Cidr::new(ip, len)
                })
                .collect();
            (ranges.len() == cidr_ranges.len()).then_some(ValueTest::InRanges(ranges))
        }
        other => {
            ctx.error(
                &tc,
                format!("input matcher @type '{other}' is not supported by Skiff"),
            );
            None
        }
    }
}

fn convert_tree(
    ctx: &mut Ctx,
    path: &Path,
    t: &XdsMatcherTree,
    names: &HashSet<&str>,
) -> Option<MatcherKind> {
    let XdsMatcherTree { input, tree_type } = t;
    let input = match input {
        Some(i) => convert_input(ctx, &path.field("input"), i),
        None => {
            ctx.error(path, "a matcher_tree needs an input");
            None
        }
    };
    let tree = match tree_type {
        Some(TreeType::ExactMatchMap(m)) => {
            convert_map(ctx, &path.field("exact_match_map"), m, names).map(Tree::Exact)
        }
        Some(TreeType::PrefixMatchMap(m)) => {
            convert_map(ctx, &path.field("prefix_match_map"), m, names).map(|map| {
                let mut by_len: BTreeMap<usize, HashMap<Box<str>, OnMatch>> = BTreeMap::new();
                for (k, o) in map {
                    by_len.entry(k.len()).or_default().insert(k, o);
                }
                Tree::Prefix(by_len.into_iter().rev().collect())
            })
        }
        Some(TreeType::CustomMatch(c)) => {
            convert_custom_tree(ctx, &path.field("custom_match"), c, names).map(Tree::Ip)
        }
        None => {
            ctx.error(
                path,
                "a matcher_tree needs one of exact_match_map, prefix_match_map, custom_match",
            );
            None
        }
    };
    Some(MatcherKind::Tree {
        input: input?,
        tree: tree?,
    })
}

fn convert_map(
    ctx: &mut Ctx,
    path: &Path,
    m: &MatchMap,
    names: &HashSet<&str>,
) -> Option<HashMap<Box<str>, OnMatch>> {
    let MatchMap { map } = m;
    let mp = path.field("map");
    if map.is_empty() {
        ctx.error(&mp, "needs at least one entry");
        return None;
    }
    // Sorted so that errors come out in a stable order.
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = HashMap::with_capacity(map.len());
    let mut ok = true;
    for (key, o) in entries {
        let entry = Path::named(format!("{}[{key:?}]", mp.as_str()));
        match convert_on_match(ctx, &entry, o, names) {
            Some(o) => {
                out.insert(key.as_str().into(), o);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A tree's `custom_match`: only `xds.type.matcher.v3.IPMatcher`.
fn convert_custom_tree(
    ctx: &mut Ctx,
    path: &Path,
    c: &TypedExtensionConfig,
    names: &HashSet<&str>,
) -> Option<IpTable> {
    let any = typed_config(ctx, path, c, "a custom matcher")?;
    let tc = path.field("typed_config");
    match common::any_type_name(any) {
        n if n == IpMatcher::full_name() => {
            let m = common::unpack::<IpMatcher>(ctx, &tc, any)?;
            convert_ip_matcher(ctx, &tc, &m, names)
        }
        other => {
            ctx.error(
                &tc,
                format!(
                    "custom matcher @type '{other}' is not supported by Skiff (only {})",
                    IpMatcher::full_name()
                ),
            );
            None
        }
    }
}

fn convert_ip_matcher(
    ctx: &mut Ctx,
    path: &Path,
    m: &IpMatcher,
    names: &HashSet<&str>,
) -> Option<IpTable> {
    type Groups = BTreeMap<u8, HashMap<u128, SmallVec<[u32; 1]>>>;
    let IpMatcher { range_matchers } = m;
    let rp = path.field("range_matchers");
    let mut v4 = Groups::new();
    let mut v6 = Groups::new();
    let mut ranges = Vec::with_capacity(range_matchers.len());
    let mut ok = true;
    for (i, rm) in range_matchers.iter().enumerate() {
        let p = rp.index(i);
        let IpRangeMatcher {
            ranges: cidrs,
            on_match,
            exclusive,
        } = rm;
        let Ok(id) = u32::try_from(i) else {
            ctx.error(&p, "too many range matchers");
            return None;
        };
        let on_match = match on_match {
            Some(o) => convert_on_match(ctx, &p.field("on_match"), o, names),
            None => {
                ctx.error(&p, "a range matcher needs an on_match");
                None
            }
        };
        let cp = p.field("ranges");
        if cidrs.is_empty() {
            ctx.error(&cp, "needs at least one CIDR range");
            ok = false;
        }
        for (j, r) in cidrs.iter().enumerate() {
            let XdsCidrRange {
                address_prefix,
                prefix_len,
            } = r;
            let Some((ip, len)) = cidr_parts(
                ctx,
                &cp.index(j),
                address_prefix,
                prefix_len.as_ref().map(|v| v.value),
            ) else {
                ok = false;
                continue;
            };
            let (groups, bits, width) = match ip {
                IpAddr::V4(a) => (&mut v4, u128::from(u32::from(a)), 32),
                IpAddr::V6(a) => (&mut v6, u128::from(a), 128),
            };
            let ids = groups
                .entry(len)
                .or_default()
                .entry(network(bits, width, len))
                .or_default();
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
        match on_match {
            Some(on_match) => ranges.push(IpRange {
                on_match,
                exclusive: *exclusive,
            }),
            None => ok = false,
        }
    }
    let groups = |g: Groups| -> Vec<PrefixGroup> {
        g.into_iter()
            .rev()
            .map(|(len, nets)| PrefixGroup { len, nets })
            .collect()
    };
    ok.then(|| IpTable {
        v4: groups(v4),
        v6: groups(v6),
        ranges,
    })
}

/// A CIDR range's address and prefix length. As in Envoy, an unset `prefix_len` is 0 (every
/// address of the family), which is worth a warning.
fn cidr_parts(
    ctx: &mut Ctx,
    path: &Path,
    address_prefix: &str,
    prefix_len: Option<u32>,
) -> Option<(IpAddr, u8)> {
    let Ok(ip) = address_prefix.parse::<IpAddr>() else {
        ctx.error(
            &path.field("address_prefix"),
            format!("'{address_prefix}' is not an IP address"),
        );
        return None;
    };
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let len = prefix_len.unwrap_or_else(|| {
        ctx.warn(
            &path.field("prefix_len"),
            format!(
                "unset, which Envoy reads as 0: {address_prefix}/0 matches every IPv{} address",
                if ip.is_ipv4() { 4 } else { 6 }
            ),
        );
        0
    });
    match u8::try_from(len) {
        Ok(len) if len <= max => Some((ip, len)),
        _ => {
            ctx.error(
                &path.field("prefix_len"),
                format!("{len} is too long for {ip} (at most {max})"),
            );
            None
        }
    }
}

/// The `typed_config` of an extension, or an error saying `what` needs one.
fn typed_config<'t>(
    ctx: &mut Ctx,
    path: &Path,
    ext: &'t TypedExtensionConfig,
    what: &str,
) -> Option<&'t Any> {
    let TypedExtensionConfig {
        name: _, // an opaque label; the @type selects the extension
        typed_config,
    } = ext;
    if typed_config.is_none() {
        ctx.error(
            path,
            format!("{what} needs a typed_config naming its @type"),
        );
    }
    typed_config.as_ref()
}

#[cfg(test)]
mod tests;
