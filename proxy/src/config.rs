//! Typed configuration: the one place where Envoy protos become Skiff's own structs.
//!
//! A bootstrap (YAML or JSON, proto3 JSON mapping) is parsed against the real Envoy v3 schema,
//! then converted field by field. Every field is either implemented, known to be harmless and
//! recorded as such in the conversion code, or rejected with its path and value: nothing that
//! changes behaviour is silently ignored.

// Conversion names every field of each message, deprecated ones included, so that a field Skiff
// does not implement is rejected rather than ignored.
mod chain_matcher;
#[allow(deprecated)]
mod cluster;
mod common;
mod dynamic;
mod error;
mod extensions;
#[allow(deprecated)]
mod http;
#[allow(deprecated)]
mod listener;
mod matcher;
mod retry;
#[allow(deprecated)]
mod route;
mod schema;
#[allow(deprecated)]
mod tcp_proxy;
mod tls;
pub mod xds;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc};

use envoy_types::pb::envoy::config::bootstrap::v3::{
    Admin as XdsAdmin, Bootstrap as XdsBootstrap, bootstrap::StaticResources,
};
use prost::{Message, Name};

use self::error::{Ctx, reject_unsupported};
pub use self::{
    chain_matcher::ChainMatcher,
    cluster::{
        Cluster, Discovery, DnsFamily, Endpoint, Health, LbPolicy, LoadAssignment, Locality,
        TcpKeepalive, Transport, TransportMatch, UpstreamProtocolConfig,
    },
    common::{Cidr, DEFAULT_INITIAL_FETCH_TIMEOUT, HostPort, canonical},
    dynamic::{Ads, AdsProtocol, AdsTarget, AdsTls, Dynamic, GrpcCluster},
    error::{ConfigError, ConfigErrors, Path},
    extensions::{Extension, Refusal, TypedStruct},
    http::{
        Codec, Http2Settings, HttpConnectionManager, RouteSource, RouterSettings, ServerHeader,
        StripPort, Xfcc, XfccDetails, XfccMode,
    },
    listener::{
        ChainAction, ChainMatch, FilterChain, Listener, ListenerFilter, ListenerFilterKind,
        Predicate, SourceType, TrafficDirection,
    },
    matcher::{
        FullRegex, HeaderMatch, HeaderMatcher, QueryParameterMatcher, Regex, StringMatch,
        StringMatcher,
    },
    retry::{RetryOn, RetryPolicy},
    route::{
        AppendAction, ClusterChoice, DirectResponse, HeaderAdd, HeaderEdits, HostRewrite,
        MaxStream, PathMatch, Redirect, RedirectPath, Route, RouteAction, RouteActionKind,
        RouteConfig, RouteMatch, VirtualHost, WeightedChoice, parse_grpc_timeout,
    },
    schema::{Format, Schema},
    tcp_proxy::{ClusterTarget, TcpProxy},
    tls::{
        CertKey, CertificateSource, DownstreamTls, NamedSecret, Roots, RootsSource, SanKind,
        SanMatcher, SecretData, SecretFiles, SecretRef, SecretSource, TlsCommon, TlsVersion,
        UpstreamTls, Validation, parse_cert_key, parse_roots,
    },
};

/// Where a bootstrap comes from: Envoy's `-c` file and/or `--config-yaml` text. When both are
/// given, the inline text is merged over the file, field by field, as Envoy does.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// A YAML or JSON file (`-c`, `--config-path`).
    pub path: Option<PathBuf>,
    /// Inline YAML (`--config-yaml`).
    pub yaml: Option<String>,
    /// Overrides `node.cluster` (`--service-cluster`).
    pub service_cluster: Option<String>,
    /// Overrides `node.id` (`--service-node`).
    pub service_node: Option<String>,
}

/// A validated bootstrap.
#[derive(Debug)]
pub struct Bootstrap {
    /// Who this proxy is.
    pub node: Node,
    /// The admin server, if configured.
    pub admin: Option<Admin>,
    /// Static listeners, in configuration order.
    pub listeners: Vec<Arc<Listener>>,
    /// Static clusters, in configuration order (without the control-plane cluster).
    pub clusters: Vec<Arc<Cluster>>,
    /// `static_resources.secrets`.
    pub secrets: Vec<NamedSecret>,
    /// Static clusters that carry gRPC services for the proxy itself (SDS servers such as
    /// pilot-agent's `sds-grpc`): Unix-socket clusters, and clusters static listeners or
    /// clusters name as an SDS source. They are not data-path clusters.
    pub grpc_services: HashMap<Arc<str>, GrpcCluster>,
    /// What comes from the control plane, if anything.
    pub dynamic: Option<Dynamic>,
    /// The node as configured, for the control plane (metadata included).
    pub xds_node: Option<envoy_types::pb::envoy::config::core::v3::Node>,
    /// Things that are valid but probably not what the operator meant.
    pub warnings: Vec<ConfigError>,
    /// The bootstrap as loaded (after merging), protobuf-encoded, for `/config_dump`.
    pub raw: Arc<[u8]>,
}

/// The node identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
}

/// The admin server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// Where it listens.
    pub address: SocketAddr,
}

// === impl Source ===

impl Source {
    /// Reads, parses and merges the sources into an Envoy bootstrap proto.
    pub fn read(&self, schema: &Schema) -> Result<XdsBootstrap, ConfigErrors> {
        let mut bootstrap = match &self.path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        &Path::root(),
                        format!("cannot read config file '{}': {e}", path.display()),
                    )
                })?;
                schema
                    .parse::<XdsBootstrap>(&text, Format::for_path(path))
                    .map_err(|e| in_document(e, &path.display().to_string()))?
            }
            None => XdsBootstrap::default(),
        };
        if let Some(yaml) = &self.yaml {
            let inline = schema
                .parse::<XdsBootstrap>(yaml, Format::Yaml)
                .map_err(|e| in_document(e, "--config-yaml"))?;
            // Protobuf merge semantics, as Envoy's MergeFrom: scalars replace, messages merge,
            // repeated fields append.
            bootstrap
                .merge(inline.encode_to_vec().as_slice())
                .expect("re-decoding a message just encoded cannot fail");
        }
        if self.path.is_none() && self.yaml.is_none() {
            return Err(ConfigError::new(
                &Path::root(),
                "no configuration: give a file with -c/--config-path or text with --config-yaml",
            )
            .into());
        }
        let node = bootstrap.node.get_or_insert_with(Default::default);
        if let Some(c) = &self.service_cluster {
            node.cluster.clone_from(c);
        }
        if let Some(n) = &self.service_node {
            node.id.clone_from(n);
        }
        Ok(bootstrap)
    }

    /// Reads and validates the bootstrap.
    pub fn load(&self) -> Result<Bootstrap, ConfigErrors> {
        let schema = Schema::load();
        let proto = self.read(&schema)?;
        Bootstrap::convert(&proto)
    }
}

fn in_document(mut e: ConfigError, document: &str) -> ConfigError {
    e.problem = format!("{} (in {document})", e.problem);
    e
}

// === impl Bootstrap ===

impl Bootstrap {
    /// Converts and validates a bootstrap proto, collecting every problem.
    #[allow(deprecated)] // every field is named, deprecated ones too
    pub fn convert(b: &XdsBootstrap) -> Result<Self, ConfigErrors> {
        let mut ctx = Ctx::default();
        let root = Path::root();
        let XdsBootstrap {
            node,
            node_context_params,
            static_resources,
            dynamic_resources,
            cluster_manager,
            hds_config,
            flags_path,
            stats_sinks,
            deferred_stat_options,
            stats_config,
            stats_flush_interval,
            watchdog,
            watchdogs,
            tracing,
            layered_runtime,
            admin,
            overload_manager,
            enable_dispatcher_stats,
            header_prefix,
            stats_server_version_override,
            use_tcp_for_dns_lookups,
            dns_resolution_config,
            typed_dns_resolver_config,
            bootstrap_extensions,
            fatal_actions,
            config_sources,
            default_config_source,
            default_socket_interface,
            certificate_provider_instances,
            inline_headers,
            perf_tracing_file_path,
            default_regex_engine,
            xds_delegate_extension,
            xds_config_tracker_extension,
            listener_manager,
            application_log_config,
            grpc_async_client_manager_config,
            memory_allocator_manager,
            enable_worker_cpu_affinity,
            stats_flush,
            stats_eviction,
        } = b;
        reject_unsupported!(
            ctx,
            &root,
            node_context_params,
            cluster_manager,
            hds_config,
            flags_path,
            stats_sinks,
            deferred_stat_options,
            stats_config,
            stats_flush_interval,
            watchdog,
            watchdogs,
            tracing,
            layered_runtime,
            overload_manager,
            enable_dispatcher_stats,
            header_prefix,
            stats_server_version_override,
            use_tcp_for_dns_lookups,
            dns_resolution_config,
            typed_dns_resolver_config,
            bootstrap_extensions,
            fatal_actions,
            config_sources,
            default_config_source,
            default_socket_interface,
            certificate_provider_instances,
            inline_headers,
            perf_tracing_file_path,
            default_regex_engine,
            xds_delegate_extension,
            xds_config_tracker_extension,
            listener_manager,
            application_log_config,
            grpc_async_client_manager_config,
            memory_allocator_manager,
            enable_worker_cpu_affinity,
            stats_flush,
            stats_eviction,
        );

        // The node only describes this proxy to a control plane; all of it is accepted.
        let node = node.as_ref().map_or_else(Node::default, |n| Node {
            id: n.id.clone(),
            cluster: n.cluster.clone(),
        });
        let admin = admin
            .as_ref()
            .and_then(|a| convert_admin(&mut ctx, &root.field("admin"), a));

        let static_clusters = static_resources
            .as_ref()
            .map_or(&[][..], |s| s.clusters.as_slice());
        let dynamic = dynamic_resources.as_ref().and_then(|d| {
            Dynamic::convert(
                &mut ctx,
                &root.field("dynamic_resources"),
                d,
                static_clusters,
            )
        });
        // The control-plane cluster is the ADS stream's, not the data path's.
        let ads_cluster = dynamic.as_ref().map(|d| d.ads.cluster.clone());
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        let mut static_secrets = Vec::new();
        let mut grpc_services = HashMap::new();
        if let Some(StaticResources {
            listeners: xds_listeners,
            clusters: xds_clusters,
            secrets,
        }) = static_resources
        {
            let sr = root.field("static_resources");
            static_secrets = tls::static_secrets(&mut ctx, &sr.field("secrets"), secrets);
            // Static routes must name clusters that exist, as in Envoy, unless clusters also
            // come from CDS.
            let cluster_names: std::collections::HashSet<&str> =
                xds_clusters.iter().map(|c| c.name.as_str()).collect();
            let check_clusters = dynamic.as_ref().is_none_or(|d| d.cds.is_none());
            let lp = sr.field("listeners");
            for (i, l) in xds_listeners.iter().enumerate() {
                let default_name = format!("listener_{i}");
                let converted = Listener::convert(
                    &mut ctx,
                    &lp.index(i),
                    l,
                    &default_name,
                    check_clusters.then_some(&cluster_names),
                );
                if let Some(l) = converted {
                    listeners.push((i, Arc::new(l)));
                }
            }
            // Clusters the static configuration names as SDS servers.
            let sds_clusters: std::collections::HashSet<Arc<str>> = listeners
                .iter()
                .flat_map(|(_, l): &(usize, Arc<Listener>)| {
                    l.secrets()
                        .filter_map(|s| match &s.source {
                            SecretSource::Cluster(c) => Some(c.clone()),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            let cp = sr.field("clusters");
            for (i, c) in xds_clusters.iter().enumerate() {
                if ads_cluster.as_deref() == Some(c.name.as_str()) {
                    continue;
                }
                if sds_clusters.contains(c.name.as_str()) || dynamic::has_pipe_endpoint(c) {
                    let reference = cp.index(i);
                    if let Some((target, tls, connect_timeout)) =
                        dynamic::control_plane_cluster(&mut ctx, &reference, c)
                    {
                        grpc_services.insert(
                            c.name.as_str().into(),
                            GrpcCluster {
                                target,
                                tls,
                                connect_timeout,
                            },
                        );
                    }
                    continue;
                }
                if let Some(c) = Cluster::convert(&mut ctx, &cp.index(i), c) {
                    clusters.push((i, Arc::new(c)));
                }
            }
        }
        let check_clusters = dynamic.as_ref().is_none_or(|d| d.cds.is_none());
        check_static_resources(&mut ctx, &listeners, &clusters, check_clusters);
        let warnings = ctx.take_warnings();
        let out = Bootstrap {
            node,
            admin,
            listeners: listeners.into_iter().map(|(_, l)| l).collect(),
            clusters: clusters.into_iter().map(|(_, c)| c).collect(),
            secrets: static_secrets,
            grpc_services,
            dynamic,
            xds_node: b.node.clone(),
            warnings,
            raw: b.encode_to_vec().into(),
        };
        ctx.finish(Some(out))
    }

    /// Parses and validates a bootstrap document (what `--config-yaml` does, with a schema
    /// loaded once by the caller).
    pub fn from_text(schema: &Schema, text: &str, format: Format) -> Result<Self, ConfigErrors> {
        let proto: XdsBootstrap = schema.parse(text, format)?;
        Self::convert(&proto)
    }

    /// The fully-qualified name of the proto `raw` holds.
    pub fn raw_type() -> String {
        XdsBootstrap::full_name()
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| &*c.name == name)
    }
}

#[allow(deprecated)] // access_log_path is deprecated but Istio still sets it
fn convert_admin(ctx: &mut Ctx, path: &Path, a: &XdsAdmin) -> Option<Admin> {
    let XdsAdmin {
        access_log,
        access_log_path,
        profile_path: _, // only used by the CPU profiler endpoints, which Skiff does not have
        address,
        socket_options,
        ignore_global_conn_limit,
        allow_paths,
    } = a;
    reject_unsupported!(
        ctx,
        path,
        access_log,
        socket_options,
        ignore_global_conn_limit,
        allow_paths
    );
    // Istio's bootstrap points the admin access log at /dev/null; that is the same as none.
    if !access_log_path.is_empty() && access_log_path != "/dev/null" {
        ctx.error(
            &path.field("access_log_path"),
            format!("admin access logs are not supported by Skiff (value: '{access_log_path}')"),
        );
    }
    address.as_ref()?;
    match common::socket_address(ctx, &path.field("address"), address.as_ref(), true)? {
        (HostPort::Ip(address), _) => Some(Admin { address }),
        (HostPort::Dns(..), _) => None,
    }
}

/// Checks what only the whole bootstrap can tell: unique names and addresses, and that every
/// referenced cluster exists.
fn check_static_resources(
    ctx: &mut Ctx,
    listeners: &[(usize, Arc<Listener>)],
    clusters: &[(usize, Arc<Cluster>)],
    check_references: bool,
) {
    let lp = Path::root().field("static_resources").field("listeners");
    let cp = Path::root().field("static_resources").field("clusters");

    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, l) in listeners {
        if let Some(first) = names.insert(&l.name, *i) {
            ctx.error(
                &lp.index(*i).field("name"),
                format!(
                    "duplicate listener name '{}' (also listeners[{first}])",
                    l.name
                ),
            );
        }
        // Port 0 asks the kernel for a free port: such listeners never share one.
        if l.address.port() == 0 {
            continue;
        }
        if let Some(first) = addresses.insert(l.address, *i) {
            ctx.error(
                &lp.index(*i).field("address"),
                format!(
                    "listener '{}' has the same address {} as listeners[{first}]",
                    l.name, l.address
                ),
            );
        }
    }

    let mut cluster_names: HashMap<&str, usize> = HashMap::new();
    for (i, c) in clusters {
        if let Some(first) = cluster_names.insert(&c.name, *i) {
            ctx.error(
                &cp.index(*i).field("name"),
                format!("duplicate cluster '{}' (also clusters[{first}])", c.name),
            );
        }
    }
    for (i, l) in listeners {
        let chains = l
            .filter_chains
            .iter()
            .enumerate()
            .map(|(j, c)| (lp.index(*i).field("filter_chains").index(j), c))
            .chain(
                l.default_filter_chain
                    .iter()
                    .map(|c| (lp.index(*i).field("default_filter_chain"), c)),
            );
        for (path, chain) in chains {
            if let ChainAction::TcpProxy(t) = &chain.action {
                for name in t.target.cluster_names() {
                    if check_references && !cluster_names.contains_key(&**name) {
                        ctx.error(
                            &path.field("filters"),
                            format!("tcp_proxy references cluster '{name}', which is not defined"),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
