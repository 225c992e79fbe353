//! Listeners: addresses, listener filters (inspectors), filter chains and their match criteria.

use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::{
        core::v3::{
            TrafficDirection as XdsTrafficDirection,
            transport_socket::ConfigType as TransportConfigType,
        },
        listener::v3::{
            FilterChain as XdsFilterChain, FilterChainMatch as XdsFilterChainMatch,
            Listener as XdsListener, ListenerFilter as XdsListenerFilter,
            ListenerFilterChainMatchPredicate as XdsPredicate,
            filter::ConfigType as FilterConfigType, filter_chain_match::ConnectionSourceType,
            listener_filter::ConfigType as ListenerFilterConfigType,
            listener_filter_chain_match_predicate::Rule,
        },
    },
    extensions::filters::listener::{
        http_inspector::v3::HttpInspector, original_dst::v3::OriginalDst,
        tls_inspector::v3::TlsInspector,
    },
};
use prost::Name;

use super::{
    common::{self, Cidr, HostPort},
    error::{Ctx, Path, reject_unsupported},
    extensions::{self, Extension, Refusal},
    http::HttpConnectionManager,
    tcp_proxy::{self, TcpProxy},
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager as XdsHcm;

/// Envoy's `listener_filters_timeout` when the field is unset.
pub const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// Envoy's tls_inspector ClientHello limit when `max_client_hello_size` is unset (its
/// `TLS_MAX_CLIENT_HELLO`, which is also the largest value it accepts).
pub const DEFAULT_MAX_CLIENT_HELLO: usize = crate::listener::tls_hello::MAX_CLIENT_HELLO;

/// A listener: where to accept, how to inspect, and which filter chain serves a connection.
#[derive(Debug)]
pub struct Listener {
    /// The listener's name (unique in a configuration).
    pub name: Arc<str>,
    /// The address it binds, or, with `bind_to_port: false`, the address connections handed
    /// off by a `use_original_dst` listener must have been sent to.
    pub address: SocketAddr,
    /// For an IPv6 wildcard address: also accept IPv4 (not `IPV6_V6ONLY`).
    pub ipv4_compat: bool,
    /// Whether it owns a socket (`bind_to_port`), or only receives handed-off connections.
    pub bind_to_port: bool,
    /// An internal listener (no socket, no address): accepted, never reached.
    pub internal: bool,
    /// Whether a connection whose original destination was restored is handed to the listener
    /// for that destination.
    pub use_original_dst: bool,
    /// `IP_TRANSPARENT` on the socket (TPROXY interception).
    pub transparent: bool,
    /// `IP_FREEBIND` on the socket.
    pub freebind: bool,
    /// One socket per worker with `SO_REUSEPORT` (Envoy's default) rather than one shared socket.
    pub reuse_port: bool,
    /// The accept queue length; `None` leaves it to the kernel (`net.core.somaxconn`).
    pub backlog: Option<u32>,
    /// Inbound or outbound, as the control plane labels it.
    pub direction: TrafficDirection,
    /// Listener filters, in configuration order.
    pub listener_filters: Vec<ListenerFilter>,
    /// How long the listener filters may wait for the client's first bytes.
    pub listener_filters_timeout: Duration,
    /// On that timeout, go on with what was learned (true) or close the connection (false).
    pub continue_on_listener_filters_timeout: bool,
    /// The filter chains, in configuration order.
    pub filter_chains: Vec<FilterChain>,
    /// The chain for connections no other chain matches.
    pub default_filter_chain: Option<FilterChain>,
    /// `filter_chain_matcher`: when set, it names the chain, and `filter_chains`' own
    /// `filter_chain_match` is not used.
    pub filter_chain_matcher: Option<super::ChainMatcher>,
}

/// The traffic direction of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficDirection {
    /// Not said.
    Unspecified,
    /// Traffic to the local workload.
    Inbound,
    /// Traffic from the local workload.
    Outbound,
}

/// A listener filter, and when it is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerFilter {
    /// What it does.
    pub kind: ListenerFilterKind,
    /// Connections matching this predicate skip the filter (`filter_disabled`).
    pub disabled: Option<Predicate>,
}

/// The listener filters Skiff implements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerFilterKind {
    /// `envoy.filters.listener.original_dst`: restore the destination from `SO_ORIGINAL_DST`.
    OriginalDst,
    /// `envoy.filters.listener.tls_inspector`: read SNI and ALPN from a ClientHello.
    TlsInspector {
        /// The largest ClientHello to read.
        max_client_hello: usize,
        /// Close the connection (rather than treat it as plaintext) when the ClientHello is
        /// malformed or too large.
        close_on_parse_error: bool,
    },
    /// `envoy.filters.listener.http_inspector`: tell HTTP/1.x and h2c from other plaintext.
    HttpInspector,
}

/// `ListenerFilterChainMatchPredicate`: a condition on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// Every connection.
    Any,
    /// Any of these.
    Or(Vec<Predicate>),
    /// All of these.
    And(Vec<Predicate>),
    /// Not this.
    Not(Box<Predicate>),
    /// The destination port is in `[start, end)`.
    DestinationPortRange {
        /// First port, inclusive.
        start: u32,
        /// Last port, exclusive.
        end: u32,
    },
}

/// A filter chain: its match criteria and what serves a matching connection.
#[derive(Debug)]
pub struct FilterChain {
    /// The chain's name (may be empty).
    pub name: Arc<str>,
    /// When the chain applies.
    pub matcher: ChainMatch,
    /// What the chain does with the connection.
    pub action: ChainAction,
    /// TLS termination (`transport_socket` with a `DownstreamTlsContext`).
    pub tls: Option<Arc<super::DownstreamTls>>,
    /// Set when the chain needs something Skiff cannot do (enforcing RBAC, tunneling): every
    /// connection it gets is refused and counted.
    pub refusal: Option<Refusal>,
    /// Filters accepted because they only observe or do nothing as configured.
    pub accepted: Vec<&'static str>,
}

/// What a filter chain does with a connection.
#[derive(Debug)]
pub enum ChainAction {
    /// `envoy.filters.network.tcp_proxy`.
    TcpProxy(TcpProxy),
    /// `envoy.filters.network.http_connection_manager`.
    Http(Arc<HttpConnectionManager>),
    /// A chain without network filters: the connection is closed, as Envoy does.
    Close,
}

/// `FilterChainMatch`, converted: every criterion, empty or `None` when unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainMatch {
    /// The destination port.
    pub destination_port: Option<u16>,
    /// Destination networks.
    pub prefix_ranges: Vec<Cidr>,
    /// SNI names: exact, or `*.suffix` wildcards.
    pub server_names: Vec<String>,
    /// `tls` or `raw_buffer` (any string is allowed; only those two are ever detected).
    pub transport_protocol: Option<String>,
    /// ALPN or detected HTTP protocols.
    pub application_protocols: Vec<String>,
    /// Networks of the directly connected peer.
    pub direct_source_prefix_ranges: Vec<Cidr>,
    /// Local or external peers.
    pub source_type: SourceType,
    /// Source networks.
    pub source_prefix_ranges: Vec<Cidr>,
    /// Source ports.
    pub source_ports: Vec<u16>,
}

/// `FilterChainMatch.ConnectionSourceType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SourceType {
    /// Any source.
    #[default]
    Any,
    /// The source is a local address (loopback, or the destination IP itself).
    SameIpOrLoopback,
    /// Any other source.
    External,
}

// === impl Listener ===

impl Listener {
    /// Converts a `Listener`. `default_name` names it when the configuration does not;
    /// `clusters`, when given, are the clusters that routes may reference.
    pub(crate) fn convert(
        ctx: &mut Ctx,
        path: &Path,
        l: &XdsListener,
        default_name: &str,
        clusters: Option<&HashSet<&str>>,
    ) -> Option<Listener> {
        let before = ctx.count();
        let XdsListener {
            name,
            address,
            additional_addresses,
            stat_prefix: _, // stats naming only
            stats_matcher,
            filter_chains,
            fcds_config,
            filter_chain_matcher,
            use_original_dst,
            default_filter_chain,
            per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout,
            metadata: _, // opaque to the data path
            deprecated_v1,
            drain_type,
            listener_filters,
            listener_filters_timeout,
            continue_on_listener_filters_timeout,
            transparent,
            freebind,
            socket_options,
            tcp_fast_open_queue_length,
            traffic_direction,
            udp_listener_config,
            api_listener,
            connection_balance_config,
            reuse_port,
            enable_reuse_port,
            access_log,
            tcp_backlog_size,
            max_connections_to_accept_per_socket_event,
            bind_to_port,
            enable_mptcp,
            ignore_global_conn_limit,
            bypass_overload_manager,
            tcp_keepalive,
            listener_specifier,
        } = l;
        reject_unsupported!(
            ctx,
            path,
            additional_addresses,
            stats_matcher,
            fcds_config,
            per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout,
            deprecated_v1,
            drain_type,
            socket_options,
            tcp_fast_open_queue_length,
            udp_listener_config,
            api_listener,
            connection_balance_config,
            reuse_port,
            access_log,
            max_connections_to_accept_per_socket_event,
            enable_mptcp,
            ignore_global_conn_limit,
            bypass_overload_manager,
            tcp_keepalive,
        );

        let name: Arc<str> = if name.is_empty() {
            default_name.into()
        } else {
            name.as_str().into()
        };
        // An internal listener (Envoy's in-process listeners, used by HBONE) has no socket;
        // Skiff has no internal upstreams to reach it, so it never gets a connection.
        let internal = matches!(
            listener_specifier,
            Some(envoy_types::pb::envoy::config::listener::v3::listener::ListenerSpecifier::InternalListener(_))
        );
        if internal {
            ctx.warn(
                path,
                format!(
                    "internal listener '{name}': {}; it is accepted and never reached",
                    Refusal::Tunneling.describe()
                ),
            );
        }
        let address = if internal && address.is_none() {
            Some((SocketAddr::from(([0, 0, 0, 0], 0)), false))
        } else {
            match common::socket_address(ctx, &path.field("address"), address.as_ref(), true) {
                Some((HostPort::Ip(sa), compat)) => Some((sa, compat)),
                _ => None,
            }
        };

        let mut listener_filters: Vec<ListenerFilter> = listener_filters
            .iter()
            .enumerate()
            .filter(|(_, f)| !(internal && sets_internal_destination(f)))
            .filter_map(|(i, f)| {
                ListenerFilter::convert(ctx, &path.field("listener_filters").index(i), f)
            })
            .collect();
        let use_original_dst = use_original_dst.as_ref().is_some_and(|b| b.value);
        if use_original_dst
            && !listener_filters
                .iter()
                .any(|f| f.kind == ListenerFilterKind::OriginalDst)
        {
            // Envoy appends an original_dst listener filter to listeners that set
            // use_original_dst, so the destination is restored before the handoff.
            listener_filters.push(ListenerFilter {
                kind: ListenerFilterKind::OriginalDst,
                disabled: None,
            });
        }

        let timeout_path = path.field("listener_filters_timeout");
        let listener_filters_timeout = match listener_filters_timeout {
            None => DEFAULT_LISTENER_FILTERS_TIMEOUT,
            // Envoy reads 0s as "wait forever", which lets a server-first protocol hang; Skiff
            // keeps the wait bounded by Envoy's default instead (see README, "Differences").
            Some(d) => match common::duration(ctx, &timeout_path, d) {
                Some(Duration::ZERO) => {
                    ctx.warn(
                        &timeout_path,
                        format!(
                            "0s means no timeout in Envoy; Skiff bounds protocol detection to \
                             {DEFAULT_LISTENER_FILTERS_TIMEOUT:?} so server-first protocols cannot hang"
                        ),
                    );
                    DEFAULT_LISTENER_FILTERS_TIMEOUT
                }
                Some(d) => d,
                None => DEFAULT_LISTENER_FILTERS_TIMEOUT,
            },
        };

        let chains_path = path.field("filter_chains");
        let filter_chains: Vec<FilterChain> = filter_chains
            .iter()
            .enumerate()
            .filter_map(|(i, c)| FilterChain::convert(ctx, &chains_path.index(i), c, i, clusters))
            .collect();
        let default_filter_chain = default_filter_chain.as_ref().and_then(|c| {
            FilterChain::convert(
                ctx,
                &path.field("default_filter_chain"),
                c,
                usize::MAX,
                clusters,
            )
        });
        if l.filter_chains.is_empty() && l.default_filter_chain.is_none() {
            ctx.error(path, "no filter chains specified");
        }
        // With a matcher, chains are chosen by name and their filter_chain_match is ignored.
        let filter_chain_matcher = match filter_chain_matcher {
            Some(m) => {
                let names: Vec<&str> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
                super::chain_matcher::check_chain_names(ctx, &chains_path, &names);
                super::chain_matcher::ChainMatcher::convert(
                    ctx,
                    &path.field("filter_chain_matcher"),
                    m,
                    &names,
                )
            }
            None => {
                check_unique_matches(ctx, &chains_path, &filter_chains);
                None
            }
        };

        let direction = match XdsTrafficDirection::try_from(*traffic_direction) {
            Ok(XdsTrafficDirection::Inbound) => TrafficDirection::Inbound,
            Ok(XdsTrafficDirection::Outbound) => TrafficDirection::Outbound,
            Ok(XdsTrafficDirection::Unspecified) => TrafficDirection::Unspecified,
            Err(_) => {
                ctx.error(
                    &path.field("traffic_direction"),
                    format!("unknown value {traffic_direction}"),
                );
                TrafficDirection::Unspecified
            }
        };

        let (address, ipv4_compat) = address?;
        if ctx.count() != before {
            return None;
        }
        Some(Listener {
            name,
            address,
            ipv4_compat,
            bind_to_port: !internal && bind_to_port.as_ref().is_none_or(|b| b.value),
            internal,
            use_original_dst,
            transparent: transparent.as_ref().is_some_and(|b| b.value),
            freebind: freebind.as_ref().is_some_and(|b| b.value),
            reuse_port: enable_reuse_port.as_ref().is_none_or(|b| b.value),
            backlog: tcp_backlog_size.as_ref().map(|v| v.value),
            direction,
            listener_filters,
            listener_filters_timeout,
            continue_on_listener_filters_timeout: *continue_on_listener_filters_timeout,
            filter_chains,
            default_filter_chain,
            filter_chain_matcher,
        })
    }

    /// Whether a listener filter of this kind is configured.
    pub fn has_filter(&self, f: impl Fn(&ListenerFilterKind) -> bool) -> bool {
        self.listener_filters.iter().any(|lf| f(&lf.kind))
    }

    /// The secrets the listener's TLS chains name.
    pub fn secrets(&self) -> impl Iterator<Item = &super::SecretRef> {
        self.filter_chains
            .iter()
            .chain(&self.default_filter_chain)
            .filter_map(|c| c.tls.as_ref())
            .flat_map(|t| t.common.secrets())
    }

    /// The route configurations its HTTP chains take from RDS, with each one's initial fetch
    /// timeout (`None`: wait for ever).
    pub fn rds(&self) -> impl Iterator<Item = (&Arc<str>, Option<Duration>)> {
        self.filter_chains
            .iter()
            .chain(&self.default_filter_chain)
            .filter_map(|c| match &c.action {
                ChainAction::Http(h) => match &h.routes {
                    super::RouteSource::Rds {
                        name,
                        initial_fetch_timeout,
                    } => Some((name, *initial_fetch_timeout)),
                    super::RouteSource::Static(_) => None,
                },
                _ => None,
            })
    }
}

/// Istio's listener filter that sets an internal listener's destination from metadata: only
/// meaningful on internal listeners, which Skiff never reaches.
fn sets_internal_destination(f: &XdsListenerFilter) -> bool {
    match &f.config_type {
        Some(ListenerFilterConfigType::TypedConfig(any)) => {
            let name = common::any_type_name(any);
            (name == "udpa.type.v1.TypedStruct" || name == "xds.type.v3.TypedStruct")
                && <super::TypedStruct as prost::Message>::decode(any.value.as_slice()).is_ok_and(
                    |t| {
                        common::type_name(&t.type_url) == "istio.set_internal_dst_address.v1.Config"
                    },
                )
        }
        _ => false,
    }
}

/// Envoy refuses two chains that a connection could match equally well; so does Skiff. Each
/// chain is expanded into the criteria combinations it covers, and a combination covered twice
/// is an error naming both chains.
fn check_unique_matches(ctx: &mut Ctx, path: &Path, chains: &[FilterChain]) {
    use std::collections::HashMap;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, chain) in chains.iter().enumerate() {
        for key in chain.matcher.leaf_keys() {
            if let Some(first) = seen.insert(key, i)
                && first != i
            {
                ctx.error(
                    &path.index(i),
                    format!(
                        "multiple filter chains with the same matching rules are defined \
                             (filter_chains[{first}] and filter_chains[{i}])"
                    ),
                );
                break;
            }
        }
    }
}

// === impl ListenerFilter ===

impl ListenerFilter {
    fn convert(ctx: &mut Ctx, path: &Path, f: &XdsListenerFilter) -> Option<Self> {
        let XdsListenerFilter {
            name,
            filter_disabled,
            config_type,
        } = f;
        let disabled = filter_disabled
            .as_ref()
            .and_then(|p| Predicate::convert(ctx, &path.field("filter_disabled"), p));
        let any = match config_type {
            Some(ListenerFilterConfigType::TypedConfig(any)) => any,
            Some(ListenerFilterConfigType::ConfigDiscovery(_)) => {
                ctx.error(
                    &path.field("config_discovery"),
                    "extension config discovery is not supported by Skiff",
                );
                return None;
            }
            None => {
                ctx.error(
                    path,
                    format!("listener filter '{name}' needs a typed_config naming its @type"),
                );
                return None;
            }
        };
        let tc = path.field("typed_config");
        let kind = match common::any_type_name(any) {
            n if n == OriginalDst::full_name() => {
                common::unpack::<OriginalDst>(ctx, &tc, any)?;
                ListenerFilterKind::OriginalDst
            }
            n if n == HttpInspector::full_name() => {
                common::unpack::<HttpInspector>(ctx, &tc, any)?;
                ListenerFilterKind::HttpInspector
            }
            n if n == TlsInspector::full_name() => {
                let TlsInspector {
                    enable_ja3_fingerprinting,
                    enable_ja4_fingerprinting,
                    initial_read_buffer_size: _, // Skiff grows its read buffer as needed
                    close_connection_on_client_hello_parsing_errors,
                    max_client_hello_size,
                } = common::unpack::<TlsInspector>(ctx, &tc, any)?;
                reject_unsupported!(
                    ctx,
                    &tc,
                    enable_ja3_fingerprinting,
                    enable_ja4_fingerprinting
                );
                let max =
                    max_client_hello_size.map_or(DEFAULT_MAX_CLIENT_HELLO, |v| v.value as usize);
                if max > crate::listener::tls_hello::MAX_CLIENT_HELLO {
                    ctx.error(
                        &tc.field("max_client_hello_size"),
                        format!(
                            "{max} is larger than the supported maximum {}",
                            crate::listener::tls_hello::MAX_CLIENT_HELLO
                        ),
                    );
                }
                ListenerFilterKind::TlsInspector {
                    max_client_hello: max,
                    close_on_parse_error: close_connection_on_client_hello_parsing_errors,
                }
            }
            other => {
                ctx.error(
                    &tc,
                    format!("listener filter @type '{other}' is not supported by Skiff"),
                );
                return None;
            }
        };
        Some(ListenerFilter { kind, disabled })
    }
}

// === impl Predicate ===

impl Predicate {
    fn convert(ctx: &mut Ctx, path: &Path, p: &XdsPredicate) -> Option<Self> {
        let set = |ctx: &mut Ctx, field: &str, rules: &[XdsPredicate]| -> Option<Vec<Predicate>> {
            let p = path.field(field).field("rules");
            if rules.len() < 2 {
                ctx.error(&p, "needs at least two rules");
            }
            let out: Vec<_> = rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| Predicate::convert(ctx, &p.index(i), r))
                .collect();
            (out.len() == rules.len()).then_some(out)
        };
        match &p.rule {
            None => {
                ctx.error(path, "a predicate needs a rule");
                None
            }
            Some(Rule::OrMatch(s)) => set(ctx, "or_match", &s.rules).map(Predicate::Or),
            Some(Rule::AndMatch(s)) => set(ctx, "and_match", &s.rules).map(Predicate::And),
            Some(Rule::NotMatch(inner)) => Predicate::convert(ctx, &path.field("not_match"), inner)
                .map(|p| Predicate::Not(Box::new(p))),
            Some(Rule::AnyMatch(true)) => Some(Predicate::Any),
            Some(Rule::AnyMatch(false)) => {
                ctx.error(&path.field("any_match"), "must be true");
                None
            }
            Some(Rule::DestinationPortRange(r)) => {
                let valid = 0 <= r.start && r.start < r.end && r.end <= 65536;
                if !valid {
                    ctx.error(
                        &path.field("destination_port_range"),
                        format!("[{}, {}) is not a valid port range", r.start, r.end),
                    );
                    return None;
                }
                #[allow(clippy::cast_sign_loss)] // checked non-negative above
                Some(Predicate::DestinationPortRange {
                    start: r.start as u32,
                    end: r.end as u32,
                })
            }
        }
    }

    /// Whether a connection to `destination_port` matches.
    pub fn matches(&self, destination_port: u16) -> bool {
        match self {
            Predicate::Any => true,
            Predicate::Or(ps) => ps.iter().any(|p| p.matches(destination_port)),
            Predicate::And(ps) => ps.iter().all(|p| p.matches(destination_port)),
            Predicate::Not(p) => !p.matches(destination_port),
            Predicate::DestinationPortRange { start, end } => {
                (*start..*end).contains(&u32::from(destination_port))
            }
        }
    }
}

// === impl FilterChain ===

impl FilterChain {
    fn convert(
        ctx: &mut Ctx,
        path: &Path,
        c: &XdsFilterChain,
        index: usize,
        clusters: Option<&HashSet<&str>>,
    ) -> Option<Self> {
        let before = ctx.count();
        let XdsFilterChain {
            filter_chain_match,
            filters,
            use_proxy_proto,
            metadata: _, // opaque to the data path
            transport_socket,
            transport_socket_connect_timeout,
            name,
        } = c;
        reject_unsupported!(ctx, path, use_proxy_proto, transport_socket_connect_timeout);
        let mut refusal = None;
        let mut accepted = Vec::new();
        let mut tls = None;
        if let Some(ts) = transport_socket {
            let tp = path.field("transport_socket");
            match &ts.config_type {
                Some(TransportConfigType::TypedConfig(any)) => match common::any_type_name(any) {
                    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" => {}
                    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" => {
                        let tc = tp.field("typed_config");
                        tls = common::unpack(ctx, &tc, any)
                            .and_then(|t| super::DownstreamTls::convert(ctx, &tc, &t))
                            .map(Arc::new);
                    }
                    other => ctx.error(
                        &tp.field("typed_config"),
                        format!("transport socket @type '{other}' is not supported by Skiff"),
                    ),
                },
                _ => ctx.error(&tp, "a transport socket needs a typed_config"),
            }
        }
        let matcher = filter_chain_match
            .as_ref()
            .map(|m| ChainMatch::convert(ctx, &path.field("filter_chain_match"), m))
            .unwrap_or_default();

        let filters_path = path.field("filters");
        let mut action = ChainAction::Close;
        for (i, f) in filters.iter().enumerate() {
            let fp = filters_path.index(i);
            let any = match &f.config_type {
                Some(FilterConfigType::TypedConfig(any)) => any,
                Some(FilterConfigType::ConfigDiscovery(_)) => {
                    ctx.error(
                        &fp.field("config_discovery"),
                        "extension config discovery is not supported by Skiff",
                    );
                    continue;
                }
                None => {
                    ctx.error(
                        &fp,
                        format!(
                            "network filter '{}' needs a typed_config naming its @type",
                            f.name
                        ),
                    );
                    continue;
                }
            };
            let tc = fp.field("typed_config");
            match common::any_type_name(any) {
                n if n == tcp_proxy::XdsTcpProxy::full_name() => {
                    if i + 1 != filters.len() {
                        ctx.error(
                            &fp,
                            "tcp_proxy is a terminal filter and must be the last in the chain",
                        );
                    }
                    if let Some(t) = TcpProxy::convert(ctx, &tc, any) {
                        action = ChainAction::TcpProxy(t);
                    }
                }
                n if n == XdsHcm::full_name() => {
                    if i + 1 != filters.len() {
                        ctx.error(
                            &fp,
                            "http_connection_manager is a terminal filter and must be the last in \
                             the chain",
                        );
                    }
                    if let Some(h) = HttpConnectionManager::convert(ctx, &tc, any, clusters) {
                        action = ChainAction::Http(Arc::new(h));
                    }
                }
                _ => match extensions::network_filter(ctx, &tc, any) {
                    Some(Extension::Accepted(what)) => accepted.push(what),
                    Some(Extension::Refused(why)) => {
                        ctx.warn(
                            &tc,
                            format!(
                                "filter chain '{name}', filter '{}': {}; connections to this \
                                 chain are refused",
                                f.name,
                                why.describe()
                            ),
                        );
                        refusal.get_or_insert(why);
                    }
                    None => {}
                },
            }
        }
        if let ChainAction::TcpProxy(t) = &action
            && t.tunneling
        {
            refusal.get_or_insert(Refusal::Tunneling);
        }
        if ctx.count() != before {
            return None;
        }
        let name: Arc<str> = if name.is_empty() && index != usize::MAX {
            format!("filter_chains[{index}]").into()
        } else if name.is_empty() {
            "default_filter_chain".into()
        } else {
            name.as_str().into()
        };
        Some(FilterChain {
            name,
            matcher,
            action,
            tls,
            refusal,
            accepted,
        })
    }
}

// === impl ChainMatch ===

impl ChainMatch {
    fn convert(ctx: &mut Ctx, path: &Path, m: &XdsFilterChainMatch) -> Self {
        let XdsFilterChainMatch {
            destination_port,
            prefix_ranges,
            address_suffix,
            suffix_len,
            direct_source_prefix_ranges,
            source_type,
            source_prefix_ranges,
            source_ports,
            server_names,
            transport_protocol,
            application_protocols,
        } = m;
        reject_unsupported!(ctx, path, address_suffix, suffix_len);
        let cidrs = |ctx: &mut Ctx, field: &str, ranges: &[_]| -> Vec<Cidr> {
            let p = path.field(field);
            ranges
                .iter()
                .enumerate()
                .filter_map(|(i, r)| common::cidr(ctx, &p.index(i), r))
                .collect()
        };
        let port = |ctx: &mut Ctx, p: Path, v: u32| -> Option<u16> {
            match u16::try_from(v) {
                Ok(port) if port != 0 => Some(port),
                _ => {
                    ctx.error(&p, format!("{v} is out of range (1 to 65535)"));
                    None
                }
            }
        };
        let destination_port = destination_port
            .as_ref()
            .and_then(|v| port(ctx, path.field("destination_port"), v.value));
        let source_ports = source_ports
            .iter()
            .enumerate()
            .filter_map(|(i, v)| port(ctx, path.field("source_ports").index(i), *v))
            .collect();
        for (i, name) in server_names.iter().enumerate() {
            let valid = !name.is_empty()
                && match name.strip_prefix("*.") {
                    Some(rest) => !rest.is_empty() && !rest.contains('*'),
                    None => !name.contains('*'),
                };
            if !valid {
                ctx.error(
                    &path.field("server_names").index(i),
                    format!(
                        "'{name}' is not a server name or a '*.suffix' wildcard \
                         (partial wildcards are not supported)"
                    ),
                );
            }
        }
        let source_type = match ConnectionSourceType::try_from(*source_type) {
            Ok(ConnectionSourceType::Any) => SourceType::Any,
            Ok(ConnectionSourceType::SameIpOrLoopback) => SourceType::SameIpOrLoopback,
            Ok(ConnectionSourceType::External) => SourceType::External,
            Err(_) => {
                ctx.error(
                    &path.field("source_type"),
                    format!("unknown value {source_type}"),
                );
                SourceType::Any
            }
        };
        ChainMatch {
            destination_port,
            prefix_ranges: cidrs(ctx, "prefix_ranges", prefix_ranges),
            server_names: server_names
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            transport_protocol: (!transport_protocol.is_empty())
                .then(|| transport_protocol.clone()),
            application_protocols: application_protocols.clone(),
            direct_source_prefix_ranges: cidrs(
                ctx,
                "direct_source_prefix_ranges",
                direct_source_prefix_ranges,
            ),
            source_type,
            source_prefix_ranges: cidrs(ctx, "source_prefix_ranges", source_prefix_ranges),
            source_ports,
        }
    }

    /// Every combination of single criteria this match covers, as text keys: two chains sharing
    /// a key would match the same connection equally well.
    fn leaf_keys(&self) -> Vec<String> {
        fn each<T: ToString>(v: &[T]) -> Vec<String> {
            if v.is_empty() {
                vec![String::new()]
            } else {
                v.iter().map(ToString::to_string).collect()
            }
        }
        let mut keys = vec![format!(
            "{:?}|{:?}|{:?}",
            self.destination_port, self.transport_protocol, self.source_type
        )];
        for dim in [
            each(&self.prefix_ranges),
            each(&self.server_names),
            each(&self.application_protocols),
            each(&self.direct_source_prefix_ranges),
            each(&self.source_prefix_ranges),
            each(&self.source_ports),
        ] {
            keys = keys
                .iter()
                .flat_map(|k| dim.iter().map(move |d| format!("{k}|{d}")))
                .collect();
        }
        keys
    }
}
