//! Clusters: discovery type, endpoints, load-balancing policy and connection options.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use envoy_types::pb::envoy::config::{
    cluster::v3::{
        Cluster as XdsCluster, UpstreamConnectionOptions,
        cluster::{
            ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, LbConfig, LbPolicy as XdsLbPolicy,
        },
    },
    core::v3::{
        HealthStatus as XdsHealthStatus, TcpKeepalive as XdsTcpKeepalive,
        address::Address as XdsAddressKind,
    },
    endpoint::v3::{
        ClusterLoadAssignment, LbEndpoint as XdsLbEndpoint, LocalityLbEndpoints,
        cluster_load_assignment::Policy as ClusterLoadAssignmentPolicy,
        lb_endpoint::HostIdentifier,
    },
};

use super::{
    Refusal,
    common::{self, HostPort},
    error::{Ctx, Path, reject_unsupported},
};

/// Envoy's `connect_timeout` when unset.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's `dns_refresh_rate` when unset.
pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);

/// An upstream cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Its unique name.
    pub name: Arc<str>,
    /// How its hosts are found.
    pub discovery: Discovery,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How a host is picked.
    pub lb_policy: LbPolicy,
    /// Endpoints grouped by locality and priority, as configured.
    pub localities: Vec<Locality>,
    /// TCP keepalive for upstream connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// The HTTP protocol spoken to hosts (from `HttpProtocolOptions`; HTTP/1.1 by default).
    pub upstream_protocol: UpstreamProtocolConfig,
    /// Idle pooled HTTP connections are closed after this (`common_http_protocol_options`).
    pub upstream_idle_timeout: Option<Duration>,
    /// The transport to hosts that no `transport_socket_matches` entry picks.
    pub transport: Transport,
    /// `transport_socket_matches`, in order.
    pub transport_matches: Vec<TransportMatch>,
    /// `upstream_bind_config.source_address`: the local address of upstream connections (Istio
    /// binds inbound passthrough traffic to 127.0.0.6 so the iptables rules let it through).
    pub bind_source: Option<SocketAddr>,
}

/// One of a cluster's `transport_socket_matches`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportMatch {
    /// Metadata the endpoint must have under `envoy.transport_socket_match`.
    pub criteria: Vec<(String, String)>,
    /// Its transport socket.
    pub transport: Transport,
}

/// How connections to a host are carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (`raw_buffer`, or no transport socket).
    #[default]
    Plain,
    /// TLS origination (`UpstreamTlsContext`).
    Tls(Arc<super::UpstreamTls>),
    /// A transport Skiff cannot provide (an internal upstream): every connection attempt fails
    /// (`UF`) and is counted.
    Refused(Refusal),
}

/// Which HTTP protocol a cluster's hosts are spoken to with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocolConfig {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// The protocol the downstream request came in with.
    Downstream,
}

/// How a cluster finds its hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// The configured IP endpoints.
    Static,
    /// Every address the configured names resolve to, re-resolved periodically.
    StrictDns {
        /// How often to resolve again.
        refresh: Duration,
        /// Which address families to use.
        family: DnsFamily,
    },
    /// The original destination of the downstream connection.
    OriginalDst,
    /// A `ClusterLoadAssignment` from the ADS stream (EDS).
    Eds {
        /// The name asked of EDS: `eds_cluster_config.service_name`, else the cluster's name.
        service_name: Arc<str>,
        /// How long the cluster may warm waiting for its first assignment; `None` for ever.
        initial_fetch_timeout: Option<Duration>,
    },
}

/// The endpoints of a cluster from EDS (a `ClusterLoadAssignment`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadAssignment {
    /// The name it was asked for by (a cluster's EDS service name).
    pub cluster_name: Arc<str>,
    /// Endpoints grouped by locality and priority.
    pub localities: Vec<Locality>,
}

/// `Cluster.DnsLookupFamily`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsFamily {
    /// IPv6 if the name has any IPv6 address, else IPv4.
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 if the name has any IPv4 address, else IPv6.
    V4Preferred,
    /// Every address.
    All,
}

/// How a host is picked among the healthy ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// The less loaded of `choice_count` random picks.
    LeastRequest {
        /// How many hosts are compared.
        choice_count: u32,
    },
    /// The cluster type decides (ORIGINAL_DST).
    ClusterProvided,
}

/// Endpoints that share a locality and a priority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locality {
    /// 0 is tried first; higher priorities only when a lower one has no usable host.
    pub priority: u32,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// An upstream endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its `envoy.transport_socket_match` metadata (string values), which picks its transport
    /// socket among the cluster's `transport_socket_matches`.
    pub transport_match: Vec<(String, String)>,
    /// Where it is.
    pub address: HostPort,
    /// Its load-balancing weight (at least 1).
    pub weight: u32,
    /// What the configuration says of its health.
    pub health: Health,
}

/// An endpoint's configured health, as load balancing uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// HEALTHY or UNKNOWN: used.
    Usable,
    /// DEGRADED: used only when no usable host is left.
    Degraded,
    /// UNHEALTHY, DRAINING or TIMEOUT: never picked.
    Excluded,
}

/// TCP keepalive settings; `None` fields keep the kernel's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
}

// === impl Cluster ===

impl Cluster {
    pub(crate) fn convert(ctx: &mut Ctx, path: &Path, c: &XdsCluster) -> Option<Self> {
        let before = ctx.count();
        let XdsCluster {
            transport_socket_matches,
            transport_socket_matcher,
            name,
            alt_stat_name: _, // stats naming only
            stats_matcher,
            eds_cluster_config,
            connect_timeout,
            per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout,
            lb_policy,
            load_assignment,
            health_checks,
            max_requests_per_connection,
            circuit_breakers,
            upstream_http_protocol_options,
            common_http_protocol_options,
            http_protocol_options,
            http2_protocol_options,
            typed_extension_protocol_options,
            dns_refresh_rate,
            dns_jitter,
            dns_failure_refresh_rate,
            respect_dns_ttl,
            dns_lookup_family,
            dns_resolvers,
            use_tcp_for_dns_lookups,
            dns_resolution_config,
            typed_dns_resolver_config,
            wait_for_warm_on_init,
            outlier_detection,
            cleanup_interval: _, // ORIGINAL_DST host expiry; Skiff keeps no per-destination hosts
            upstream_bind_config,
            lb_subset_config,
            common_lb_config,
            transport_socket,
            metadata: _, // opaque to the data path
            protocol_selection,
            upstream_connection_options,
            close_connections_on_host_health_failure,
            ignore_health_on_host_removal,
            filters,
            load_balancing_policy,
            lrs_server,
            lrs_report_endpoint_metrics,
            track_timeout_budgets,
            upstream_config,
            track_cluster_stats,
            preconnect_policy,
            connection_pool_per_downstream_connection,
            queuing_policies,
            cluster_discovery_type,
            lb_config,
        } = c;
        reject_unsupported!(
            ctx,
            path,
            transport_socket_matcher,
            stats_matcher,
            per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout,
            health_checks,
            max_requests_per_connection,
            upstream_http_protocol_options,
            common_http_protocol_options,
            http_protocol_options,
            http2_protocol_options,
            dns_jitter,
            dns_failure_refresh_rate,
            respect_dns_ttl,
            dns_resolvers,
            use_tcp_for_dns_lookups,
            dns_resolution_config,
            typed_dns_resolver_config,
            wait_for_warm_on_init,
            outlier_detection,
            lb_subset_config,
            protocol_selection,
            close_connections_on_host_health_failure,
            ignore_health_on_host_removal,
            load_balancing_policy,
            lrs_server,
            lrs_report_endpoint_metrics,
            track_timeout_budgets,
            upstream_config,
            track_cluster_stats,
            preconnect_policy,
            connection_pool_per_downstream_connection,
            queuing_policies,
        );
        if name.is_empty() {
            ctx.error(&path.field("name"), "a cluster name is required");
        }

        let kind = match cluster_discovery_type {
            None => Some(DiscoveryType::Static),
            Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(*t) {
                Ok(
                    t @ (DiscoveryType::Static
                    | DiscoveryType::StrictDns
                    | DiscoveryType::OriginalDst
                    | DiscoveryType::Eds),
                ) => Some(t),
                Ok(other) => {
                    ctx.error(
                        &path.field("type"),
                        format!(
                            "cluster type {} is not supported by Skiff",
                            other.as_str_name()
                        ),
                    );
                    None
                }
                Err(_) => {
                    ctx.error(&path.field("type"), format!("unknown cluster type {t}"));
                    None
                }
            },
            Some(ClusterDiscoveryType::ClusterType(custom)) => {
                ctx.error(
                    &path.field("cluster_type"),
                    format!(
                        "custom cluster type '{}' is not supported by Skiff",
                        custom.name
                    ),
                );
                None
            }
        };

        let discovery = kind.map(|kind| match kind {
            DiscoveryType::StrictDns => Discovery::StrictDns {
                refresh: refresh_rate(ctx, path, dns_refresh_rate.as_ref()),
                family: dns_family(ctx, path, *dns_lookup_family),
            },
            DiscoveryType::OriginalDst => Discovery::OriginalDst,
            DiscoveryType::Eds => eds(ctx, path, name, eds_cluster_config.as_ref()),
            _ => Discovery::Static,
        });
        if kind != Some(DiscoveryType::Eds) {
            reject_unsupported!(ctx, path, eds_cluster_config);
        }
        if !matches!(discovery, Some(Discovery::StrictDns { .. })) {
            // Envoy ignores these for other types too, but they signal a misunderstanding.
            reject_unsupported!(ctx, path, dns_refresh_rate);
        }

        let lb_policy = lb(ctx, path, *lb_policy, lb_config.as_ref());
        match (&discovery, lb_policy) {
            (Some(Discovery::OriginalDst), Some(p)) if p != LbPolicy::ClusterProvided => {
                ctx.error(
                    &path.field("lb_policy"),
                    "only CLUSTER_PROVIDED is allowed with cluster type ORIGINAL_DST",
                );
            }
            (Some(d), Some(LbPolicy::ClusterProvided)) if *d != Discovery::OriginalDst => {
                ctx.error(
                    &path.field("lb_policy"),
                    "CLUSTER_PROVIDED is only allowed with cluster type ORIGINAL_DST",
                );
            }
            _ => {}
        }

        let connect_timeout = common::duration_or(
            ctx,
            &path.field("connect_timeout"),
            connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
        );
        if connect_timeout.is_zero() {
            ctx.error(&path.field("connect_timeout"), "must be greater than 0s");
        }

        // Only STRICT_DNS clusters may name hosts; the others need IP literals.
        let ip_only = !matches!(discovery, Some(Discovery::StrictDns { .. }));
        let localities = load_assignment
            .as_ref()
            .map(|la| convert_load_assignment(ctx, &path.field("load_assignment"), la, ip_only))
            .unwrap_or_default();
        if matches!(discovery, Some(Discovery::Eds { .. })) && load_assignment.is_some() {
            ctx.error(
                &path.field("load_assignment"),
                "an EDS cluster takes its endpoints from EDS, not from load_assignment",
            );
        }
        if discovery == Some(Discovery::OriginalDst)
            && localities.iter().any(|l| !l.endpoints.is_empty())
        {
            ctx.error(
                &path.field("load_assignment"),
                "ORIGINAL_DST clusters must not have endpoints: hosts come from the connection",
            );
        }

        let (upstream_protocol, upstream_idle_timeout) = protocol_options(
            ctx,
            &path.field("typed_extension_protocol_options"),
            typed_extension_protocol_options,
        );
        let tcp_keepalive = upstream_connection_options
            .as_ref()
            .and_then(|o| keepalive_options(ctx, &path.field("upstream_connection_options"), o));

        if let Some(c) = common_lb_config
            && *c != Default::default()
        {
            ctx.error(
                &path.field("common_lb_config"),
                format!("not supported by Skiff (value: {})", super::error::show(c)),
            );
        }
        for (i, f) in filters.iter().enumerate() {
            upstream_filter(ctx, &path.field("filters").index(i), f);
        }
        let transport = transport_socket
            .as_ref()
            .map(|ts| upstream_transport(ctx, &path.field("transport_socket"), ts))
            .unwrap_or_default();
        if let Some(cb) = circuit_breakers {
            unlimited_circuit_breakers(ctx, &path.field("circuit_breakers"), cb);
        }
        let tp = path.field("transport_socket_matches");
        let transport_matches = transport_socket_matches
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mp = tp.index(i);
                let criteria = m
                    .r#match
                    .as_ref()
                    .map(|s| string_fields(ctx, &mp.field("match"), s))
                    .unwrap_or_default();
                let transport = match &m.transport_socket {
                    Some(ts) => upstream_transport(ctx, &mp.field("transport_socket"), ts),
                    None => Transport::Plain,
                };
                TransportMatch {
                    criteria,
                    transport,
                }
            })
            .collect();
        let bind_source = upstream_bind_config
            .as_ref()
            .and_then(|b| bind_config(ctx, &path.field("upstream_bind_config"), b));
        let (discovery, lb_policy) = (discovery?, lb_policy?);
        (ctx.count() == before).then(|| Cluster {
            name: name.as_str().into(),
            discovery,
            connect_timeout,
            lb_policy,
            localities,
            tcp_keepalive,
            upstream_protocol,
            upstream_idle_timeout,
            transport,
            transport_matches,
            bind_source,
        })
    }

    /// The transport to an endpoint with this `envoy.transport_socket_match` metadata, as
    /// Envoy picks it: the first match whose criteria the metadata has, else the cluster's
    /// transport socket. The index is 0 for the cluster's own, `i + 1` for match `i`.
    pub fn transport_for(&self, metadata: &[(String, String)]) -> (usize, &Transport) {
        self.transport_matches
            .iter()
            .enumerate()
            .find(|(_, m)| m.criteria.iter().all(|c| metadata.contains(c)))
            .map_or((0, &self.transport), |(i, m)| (i + 1, &m.transport))
    }

    /// The transport by the index [`Cluster::transport_for`] returns.
    pub fn transport(&self, index: usize) -> &Transport {
        match index.checked_sub(1) {
            None => &self.transport,
            Some(i) => self
                .transport_matches
                .get(i)
                .map_or(&self.transport, |m| &m.transport),
        }
    }

    /// The secrets the cluster's TLS transports name.
    pub fn secrets(&self) -> impl Iterator<Item = &super::SecretRef> {
        std::iter::once(&self.transport)
            .chain(self.transport_matches.iter().map(|m| &m.transport))
            .filter_map(|t| match t {
                Transport::Tls(t) => Some(t),
                Transport::Plain | Transport::Refused(_) => None,
            })
            .flat_map(|t| t.common.secrets())
    }

    /// Set when the cluster's own transport cannot be provided.
    pub fn refusal(&self) -> Option<Refusal> {
        match self.transport {
            Transport::Refused(r) => Some(r),
            Transport::Plain | Transport::Tls(_) => None,
        }
    }

    /// Every configured endpoint, across localities and priorities.
    pub fn endpoints(&self) -> impl Iterator<Item = (&Locality, &Endpoint)> {
        self.localities
            .iter()
            .flat_map(|l| l.endpoints.iter().map(move |e| (l, e)))
    }
}

fn eds(
    ctx: &mut Ctx,
    path: &Path,
    name: &str,
    config: Option<&envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig>,
) -> Discovery {
    let p = path.field("eds_cluster_config");
    let Some(config) = config else {
        ctx.error(
            &p,
            "an EDS cluster needs eds_cluster_config with eds_config: {ads: {}}",
        );
        return Discovery::Eds {
            service_name: name.into(),
            initial_fetch_timeout: None,
        };
    };
    let initial_fetch_timeout =
        common::ads_config_source(ctx, &p.field("eds_config"), config.eds_config.as_ref());
    let service_name = if config.service_name.is_empty() {
        name
    } else {
        &config.service_name
    };
    Discovery::Eds {
        service_name: service_name.into(),
        initial_fetch_timeout,
    }
}

impl LoadAssignment {
    /// Converts a `ClusterLoadAssignment` from EDS: endpoints must be IP addresses.
    pub(crate) fn convert(ctx: &mut Ctx, path: &Path, la: &ClusterLoadAssignment) -> Option<Self> {
        let before = ctx.count();
        let localities = convert_load_assignment(ctx, path, la, true);
        (ctx.count() == before).then(|| LoadAssignment {
            cluster_name: la.cluster_name.as_str().into(),
            localities,
        })
    }
}

fn refresh_rate(
    ctx: &mut Ctx,
    path: &Path,
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
) -> Duration {
    let p = path.field("dns_refresh_rate");
    let rate = common::duration_or(ctx, &p, d, DEFAULT_DNS_REFRESH_RATE);
    if rate <= Duration::from_millis(1) {
        ctx.error(&p, format!("{rate:?} is too short (must be more than 1ms)"));
    }
    rate
}

fn dns_family(ctx: &mut Ctx, path: &Path, v: i32) -> DnsFamily {
    match DnsLookupFamily::try_from(v) {
        Ok(DnsLookupFamily::Auto) => DnsFamily::Auto,
        Ok(DnsLookupFamily::V4Only) => DnsFamily::V4Only,
        Ok(DnsLookupFamily::V6Only) => DnsFamily::V6Only,
        Ok(DnsLookupFamily::V4Preferred) => DnsFamily::V4Preferred,
        Ok(DnsLookupFamily::All) => DnsFamily::All,
        Err(_) => {
            ctx.error(
                &path.field("dns_lookup_family"),
                format!("unknown value {v}"),
            );
            DnsFamily::Auto
        }
    }
}

fn lb(ctx: &mut Ctx, path: &Path, policy: i32, config: Option<&LbConfig>) -> Option<LbPolicy> {
    let p = path.field("lb_policy");
    let policy = match XdsLbPolicy::try_from(policy) {
        Ok(XdsLbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(XdsLbPolicy::Random) => LbPolicy::Random,
        Ok(XdsLbPolicy::LeastRequest) => LbPolicy::LeastRequest { choice_count: 2 },
        Ok(XdsLbPolicy::ClusterProvided) => LbPolicy::ClusterProvided,
        Ok(other) => {
            ctx.error(
                &p,
                format!(
                    "load-balancing policy {} is not supported by Skiff",
                    other.as_str_name()
                ),
            );
            return None;
        }
        Err(_) => {
            ctx.error(&p, format!("unknown load-balancing policy {policy}"));
            return None;
        }
    };
    match (policy, config) {
        (_, None) => Some(policy),
        (LbPolicy::LeastRequest { .. }, Some(LbConfig::LeastRequestLbConfig(c))) => {
            let cp = path.field("least_request_lb_config");
            let active_request_bias = &c.active_request_bias;
            let slow_start_config = &c.slow_start_config;
            reject_unsupported!(ctx, &cp, active_request_bias, slow_start_config);
            let choice_count = c.choice_count.as_ref().map_or(2, |v| v.value);
            if choice_count < 2 {
                ctx.error(
                    &cp.field("choice_count"),
                    format!("{choice_count} is less than 2"),
                );
            }
            Some(LbPolicy::LeastRequest { choice_count })
        }
        (_, Some(other)) => {
            let field = match other {
                LbConfig::RingHashLbConfig(_) => "ring_hash_lb_config",
                LbConfig::MaglevLbConfig(_) => "maglev_lb_config",
                LbConfig::OriginalDstLbConfig(_) => "original_dst_lb_config",
                LbConfig::LeastRequestLbConfig(_) => "least_request_lb_config",
                LbConfig::RoundRobinLbConfig(_) => "round_robin_lb_config",
            };
            ctx.error(
                &path.field(field),
                "not supported by Skiff (or does not fit the lb_policy)",
            );
            None
        }
    }
}

fn convert_load_assignment(
    ctx: &mut Ctx,
    path: &Path,
    la: &ClusterLoadAssignment,
    ip_only: bool,
) -> Vec<Locality> {
    let ClusterLoadAssignment {
        cluster_name,
        endpoints,
        named_endpoints,
        policy,
    } = la;
    reject_unsupported!(ctx, path, named_endpoints);
    // Istio sends Envoy's default overprovisioning factor explicitly; anything else changes how
    // traffic spills between priorities, which Skiff does not model.
    if let Some(p) = policy {
        let default_factor = p
            .overprovisioning_factor
            .as_ref()
            .is_none_or(|f| f.value == 140);
        let rest = ClusterLoadAssignmentPolicy {
            overprovisioning_factor: None,
            ..p.clone()
        };
        if !default_factor || rest != ClusterLoadAssignmentPolicy::default() {
            ctx.error(
                &path.field("policy"),
                format!(
                    "only the default overprovisioning_factor (140) is supported by Skiff (value: {})",
                    super::error::show(p)
                ),
            );
        }
    }
    // Envoy's schema requires it even for inline assignments, where it is otherwise unused.
    if cluster_name.is_empty() {
        ctx.error(&path.field("cluster_name"), "a cluster_name is required");
    }
    let ep = path.field("endpoints");
    endpoints
        .iter()
        .enumerate()
        .map(|(i, l)| convert_locality(ctx, &ep.index(i), l, ip_only))
        .collect()
}

fn convert_locality(
    ctx: &mut Ctx,
    path: &Path,
    l: &LocalityLbEndpoints,
    ip_only: bool,
) -> Locality {
    let LocalityLbEndpoints {
        locality: _, // informational
        metadata: _, // opaque to the data path
        lb_endpoints,
        // Envoy uses locality weights only with locality-weighted load balancing, which needs
        // common_lb_config (rejected above); without it Envoy ignores them too.
        load_balancing_weight: _,
        priority,
        proximity,
        lb_config,
    } = l;
    reject_unsupported!(ctx, path, proximity, lb_config);
    if *priority > 128 {
        ctx.error(
            &path.field("priority"),
            format!("{priority} is more than 128"),
        );
    }
    let lp = path.field("lb_endpoints");
    let endpoints = lb_endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, e)| convert_endpoint(ctx, &lp.index(i), e, ip_only))
        .collect();
    Locality {
        priority: *priority,
        endpoints,
    }
}

fn convert_endpoint(
    ctx: &mut Ctx,
    path: &Path,
    e: &XdsLbEndpoint,
    ip_only: bool,
) -> Option<Endpoint> {
    let XdsLbEndpoint {
        health_status,
        metadata,
        load_balancing_weight,
        host_identifier,
    } = e;
    let weight = load_balancing_weight.as_ref().map_or(1, |w| w.value);
    if weight == 0 {
        ctx.error(&path.field("load_balancing_weight"), "must be at least 1");
    }
    let health = match XdsHealthStatus::try_from(*health_status) {
        Ok(XdsHealthStatus::Unknown | XdsHealthStatus::Healthy) => Health::Usable,
        Ok(XdsHealthStatus::Degraded) => Health::Degraded,
        Ok(XdsHealthStatus::Unhealthy | XdsHealthStatus::Draining | XdsHealthStatus::Timeout) => {
            Health::Excluded
        }
        Err(_) => {
            ctx.error(
                &path.field("health_status"),
                format!("unknown value {health_status}"),
            );
            Health::Excluded
        }
    };
    let endpoint = match host_identifier {
        Some(HostIdentifier::Endpoint(ep)) => ep,
        Some(HostIdentifier::EndpointName(n)) => {
            ctx.error(
                &path.field("endpoint_name"),
                format!("named endpoints are not supported by Skiff (value: '{n}')"),
            );
            return None;
        }
        None => {
            ctx.error(path, "an endpoint is required");
            return None;
        }
    };
    let epath = path.field("endpoint");
    // An empty health_check_config (as istiod sends) configures nothing.
    let health_check_config = &endpoint
        .health_check_config
        .as_ref()
        .filter(|h| **h != Default::default());
    let additional_addresses = &endpoint.additional_addresses;
    reject_unsupported!(ctx, &epath, health_check_config, additional_addresses);
    if let Some(envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(XdsAddressKind::EnvoyInternalAddress(a)),
    }) = &endpoint.address
    {
        ctx.warn(
            &epath.field("address.envoy_internal_address"),
            format!(
                "an endpoint on internal listener '{}': {}; it gets no traffic",
                a.address_name_specifier
                    .as_ref()
                    .map(|n| match n {
                        envoy_types::pb::envoy::config::core::v3::envoy_internal_address::AddressNameSpecifier::ServerListenerName(n) => n.as_str(),
                    })
                    .unwrap_or(""),
                Refusal::Tunneling.describe()
            ),
        );
        return None;
    }
    let (address, _) = common::socket_address(
        ctx,
        &epath.field("address"),
        endpoint.address.as_ref(),
        ip_only,
    )?;
    let port = match &address {
        HostPort::Ip(sa) => sa.port(),
        HostPort::Dns(_, p) => *p,
    };
    if port == 0 {
        ctx.error(
            &epath
                .field("address")
                .field("socket_address")
                .field("port_value"),
            "an upstream endpoint needs a port",
        );
    }
    let transport_match = metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
        .map(|s| string_fields(ctx, &path.field("metadata"), s))
        .unwrap_or_default();
    Some(Endpoint {
        transport_match,
        address,
        weight,
        health,
    })
}

/// The string fields of a metadata or match `Struct` (other kinds cannot match Istio's
/// `tlsMode` and are rejected).
fn string_fields(
    ctx: &mut Ctx,
    path: &Path,
    s: &envoy_types::pb::google::protobuf::Struct,
) -> Vec<(String, String)> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in &s.fields {
        match &v.kind {
            Some(Kind::StringValue(v)) => out.push((k.clone(), v.clone())),
            other => ctx.error(
                &path.field(k),
                format!("only string values are supported here (value: {other:?})"),
            ),
        }
    }
    out.sort();
    out
}

/// Istio sets every circuit breaker to the largest value, which is what Skiff does (it has
/// no limits); smaller limits would change traffic and are rejected.
/// A cluster's upstream network filter: Istio's metadata exchange, which acts only once mTLS
/// negotiates `istio-peer-exchange` (so, until then, passes bytes through), is accepted.
fn upstream_filter(
    ctx: &mut Ctx,
    path: &Path,
    f: &envoy_types::pb::envoy::config::cluster::v3::Filter,
) {
    let Some(any) = &f.typed_config else {
        ctx.error(&path.field("typed_config"), "a typed_config is required");
        return;
    };
    match super::extensions::network_filter(ctx, &path.field("typed_config"), any) {
        Some(super::Extension::Accepted("istio.metadata_exchange")) | None => {}
        Some(_) => ctx.error(
            path,
            format!(
                "upstream network filter '{}' is not supported by Skiff",
                f.name
            ),
        ),
    }
}

/// `upstream_bind_config`: only a source address (an IP, port 0 or fixed) is supported.
fn bind_config(
    ctx: &mut Ctx,
    path: &Path,
    b: &envoy_types::pb::envoy::config::core::v3::BindConfig,
) -> Option<SocketAddr> {
    #[allow(deprecated)]
    let envoy_types::pb::envoy::config::core::v3::BindConfig {
        source_address,
        freebind,
        socket_options,
        extra_source_addresses,
        additional_source_addresses,
        local_address_selector,
        validate_network_namespaces,
    } = b;
    reject_unsupported!(
        ctx,
        path,
        freebind,
        socket_options,
        extra_source_addresses,
        additional_source_addresses,
        local_address_selector,
        validate_network_namespaces
    );
    let Some(sa) = source_address else {
        ctx.error(
            &path.field("source_address"),
            "a source address is required",
        );
        return None;
    };
    let address = envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(
            envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa.clone()),
        ),
    };
    match common::socket_address(ctx, &path.field("source_address"), Some(&address), true)? {
        (HostPort::Ip(addr), _) => Some(addr),
        (HostPort::Dns(..), _) => None,
    }
}

fn unlimited_circuit_breakers(
    ctx: &mut Ctx,
    path: &Path,
    cb: &envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers,
) {
    let unlimited = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        v.as_ref().is_some_and(|v| v.value == u32::MAX)
    };
    let ok = cb.per_host_thresholds.is_empty()
        && cb.thresholds.iter().all(|t| {
            unlimited(&t.max_connections)
                && unlimited(&t.max_pending_requests)
                && unlimited(&t.max_requests)
                && unlimited(&t.max_retries)
                && t.retry_budget.is_none()
                && t.max_connection_pools.is_none()
        });
    if !ok {
        ctx.error(
            path,
            format!(
                "circuit breaker limits are not supported by Skiff; only Istio's unlimited \
                 thresholds (4294967295) are accepted (value: {})",
                super::error::show(cb)
            ),
        );
    }
}

/// A cluster's `transport_socket`: plaintext, TLS origination, or an internal upstream (accepted
/// but refused at connect time).
fn upstream_transport(
    ctx: &mut Ctx,
    path: &Path,
    ts: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
) -> Transport {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &ts.config_type else {
        ctx.error(path, "a transport socket needs a typed_config");
        return Transport::Plain;
    };
    let tc = path.field("typed_config");
    match common::any_type_name(any) {
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" => Transport::Plain,
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" => {
            common::unpack(ctx, &tc, any)
                .and_then(|t| super::UpstreamTls::convert(ctx, &tc, &t))
                .map_or(Transport::Plain, |t| Transport::Tls(Arc::new(t)))
        }
        "envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport" => {
            ctx.warn(
                path,
                format!(
                    "{}: connections to this cluster fail (UF) and are counted",
                    Refusal::Tunneling.describe()
                ),
            );
            Transport::Refused(Refusal::Tunneling)
        }
        other => {
            ctx.error(
                &tc,
                format!("transport socket @type '{other}' is not supported by Skiff"),
            );
            Transport::Plain
        }
    }
}

fn keepalive_options(
    ctx: &mut Ctx,
    path: &Path,
    o: &UpstreamConnectionOptions,
) -> Option<TcpKeepalive> {
    let UpstreamConnectionOptions {
        tcp_keepalive,
        set_local_interface_name_on_upstream_connections,
        happy_eyeballs_config,
    } = o;
    reject_unsupported!(
        ctx,
        path,
        set_local_interface_name_on_upstream_connections,
        happy_eyeballs_config
    );
    let XdsTcpKeepalive {
        keepalive_probes,
        keepalive_time,
        keepalive_interval,
    } = tcp_keepalive.as_ref()?;
    let secs = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        v.as_ref().map(|v| Duration::from_secs(u64::from(v.value)))
    };
    Some(TcpKeepalive {
        probes: keepalive_probes.as_ref().map(|v| v.value),
        time: secs(keepalive_time),
        interval: secs(keepalive_interval),
    })
}

/// Envoy's upstream HTTP connection `idle_timeout` when unset.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Reads `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`.
fn protocol_options(
    ctx: &mut Ctx,
    path: &Path,
    options: &std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>,
) -> (UpstreamProtocolConfig, Option<Duration>) {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
        http_protocol_options::explicit_http_config::ProtocolConfig,
    };
    use prost::Name;
    let mut protocol = UpstreamProtocolConfig::Http1;
    let mut idle = Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT);
    for (key, any) in options {
        let kp = path.field(key);
        if key != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
            || common::any_type_name(any) != HttpProtocolOptions::full_name()
        {
            ctx.error(
                &kp,
                format!("protocol options '{key}' are not supported by Skiff"),
            );
            continue;
        }
        let Some(HttpProtocolOptions {
            common_http_protocol_options,
            upstream_http_protocol_options,
            http_filters,
            header_validation_config,
            outlier_detection,
            request_mirror_policies,
            hash_policy,
            retry_policy,
            upstream_protocol_options,
        }) = common::unpack::<HttpProtocolOptions>(ctx, &kp, any)
        else {
            continue;
        };
        reject_unsupported!(
            ctx,
            &kp,
            upstream_http_protocol_options,
            http_filters,
            header_validation_config,
            outlier_detection,
            request_mirror_policies,
            hash_policy,
            retry_policy,
        );
        if let Some(c) = &common_http_protocol_options {
            let cp = kp.field("common_http_protocol_options");
            let max_connection_duration = &c.max_connection_duration;
            let max_headers_count = &c.max_headers_count;
            let max_stream_duration = &c.max_stream_duration;
            let max_requests_per_connection = &c.max_requests_per_connection;
            let max_response_headers_kb = &c.max_response_headers_kb;
            reject_unsupported!(
                ctx,
                &cp,
                max_connection_duration,
                max_headers_count,
                max_stream_duration,
                max_requests_per_connection,
                max_response_headers_kb,
            );
            if let Some(d) = &c.idle_timeout {
                idle = common::duration(ctx, &cp.field("idle_timeout"), d).filter(|d| !d.is_zero());
            }
        }
        let reject_h2_settings = |ctx: &mut Ctx, p: &Path, set: bool| {
            if set {
                ctx.error(
                    p,
                    "HTTP/2 settings for upstreams are not supported by Skiff yet",
                );
            }
        };
        protocol = match upstream_protocol_options {
            None => UpstreamProtocolConfig::Http1,
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(ProtocolConfig::HttpProtocolOptions(_)) | None => {
                    UpstreamProtocolConfig::Http1
                }
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    reject_h2_settings(
                        ctx,
                        &kp.field("explicit_http_config")
                            .field("http2_protocol_options"),
                        h2 != Default::default(),
                    );
                    UpstreamProtocolConfig::Http2
                }
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    ctx.error(
                        &kp.field("explicit_http_config"),
                        "HTTP/3 is not supported by Skiff",
                    );
                    UpstreamProtocolConfig::Http1
                }
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
                let http3_protocol_options = &d.http3_protocol_options;
                reject_unsupported!(
                    ctx,
                    &kp.field("use_downstream_protocol_config"),
                    http3_protocol_options
                );
                reject_h2_settings(
                    ctx,
                    &kp.field("use_downstream_protocol_config")
                        .field("http2_protocol_options"),
                    d.http2_protocol_options
                        .as_ref()
                        .is_some_and(|h2| *h2 != Default::default()),
                );
                UpstreamProtocolConfig::Downstream
            }
            Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                ctx.error(
                    &kp.field("auto_config"),
                    "ALPN-negotiated upstream protocols need TLS, which Skiff does not do yet",
                );
                UpstreamProtocolConfig::Http1
            }
        };
    }
    (protocol, idle)
}
