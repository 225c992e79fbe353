//! The bootstrap's `dynamic_resources`: where the ADS stream goes and which resource types come
//! from it.
//!
//! As in Envoy, `ads_config.grpc_services[0].envoy_grpc.cluster_name` names a static cluster: the
//! control-plane cluster (`xds-grpc` in Istio's bootstrap). Skiff reads the one address of that
//! cluster (an IP and port, or a Unix socket `pipe`) and its TLS settings for the stream, and
//! keeps it out of the data path's clusters.

use std::{path::PathBuf, sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::{
        bootstrap::v3::bootstrap::DynamicResources,
        cluster::v3::Cluster as XdsCluster,
        core::v3::{
            ApiConfigSource, ApiVersion, GrpcService, address::Address as XdsAddressKind,
            api_config_source::ApiType, data_source::Specifier, grpc_service::TargetSpecifier,
            transport_socket::ConfigType,
        },
        endpoint::v3::lb_endpoint::HostIdentifier,
    },
    extensions::transport_sockets::tls::v3::{
        UpstreamTlsContext, common_tls_context::ValidationContextType,
    },
};

use super::{
    HostPort, common,
    error::{Ctx, Path, reject_unsupported},
};

/// What the bootstrap asks of the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dynamic {
    /// The ADS stream.
    pub ads: Ads,
    /// Listeners come from LDS, with this initial fetch timeout (`None`: wait for ever).
    pub lds: Option<Option<Duration>>,
    /// Clusters come from CDS, with this initial fetch timeout (`None`: wait for ever).
    pub cds: Option<Option<Duration>>,
}

/// The ADS stream's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ads {
    /// State of the world (`GRPC`) or incremental (`DELTA_GRPC`).
    pub protocol: AdsProtocol,
    /// The control-plane cluster's name.
    pub cluster: Arc<str>,
    /// Where the control plane is.
    pub target: AdsTarget,
    /// TLS to the control plane, if any.
    pub tls: Option<AdsTls>,
    /// `grpc_services[0].initial_metadata`: extra request metadata.
    pub metadata: Vec<(String, String)>,
    /// How long connecting may take (the cluster's `connect_timeout`).
    pub connect_timeout: Duration,
}

/// `ads_config.api_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdsProtocol {
    /// `GRPC`: `StreamAggregatedResources`.
    Sotw,
    /// `DELTA_GRPC`: `DeltaAggregatedResources`.
    Delta,
}

/// The control plane's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdsTarget {
    /// `host:port` (an IP or a DNS name).
    Tcp(String),
    /// A Unix socket (`pipe.path`), as pilot-agent serves it.
    Unix(PathBuf),
}

/// A static cluster that carries a gRPC service Skiff calls itself (an SDS server such as
/// pilot-agent's `sds-grpc`), rather than data-path traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcCluster {
    /// Where it is.
    pub target: AdsTarget,
    /// TLS to it, if any.
    pub tls: Option<AdsTls>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

/// Whether a cluster's endpoints are Unix sockets (`pipe`): such a cluster can only carry a
/// gRPC service for the proxy itself (Istio's `sds-grpc`, `xds-grpc`).
pub(crate) fn has_pipe_endpoint(c: &XdsCluster) -> bool {
    c.load_assignment
        .iter()
        .flat_map(|la| &la.endpoints)
        .flat_map(|l| &l.lb_endpoints)
        .any(|e| {
            matches!(
                &e.host_identifier,
                Some(HostIdentifier::Endpoint(ep))
                    if matches!(ep.address.as_ref().and_then(|a| a.address.as_ref()), Some(XdsAddressKind::Pipe(_)))
            )
        })
}

/// TLS to the control plane (an `UpstreamTlsContext` on the control-plane cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdsTls {
    /// `common_tls_context.validation_context.trusted_ca.filename`.
    pub ca_file: PathBuf,
    /// `sni`, which is also the name the certificate must have; the target host when empty.
    pub server_name: Option<String>,
}

// === impl Dynamic ===

impl Dynamic {
    /// Converts `dynamic_resources` against the bootstrap's static clusters.
    pub(crate) fn convert(
        ctx: &mut Ctx,
        path: &Path,
        d: &DynamicResources,
        static_clusters: &[XdsCluster],
    ) -> Option<Self> {
        let before = ctx.count();
        let DynamicResources {
            lds_config,
            lds_resources_locator,
            cds_config,
            cds_resources_locator,
            ads_config,
        } = d;
        reject_unsupported!(ctx, path, lds_resources_locator, cds_resources_locator);
        let lds = lds_config
            .as_ref()
            .map(|c| common::ads_config_source(ctx, &path.field("lds_config"), Some(c)));
        let cds = cds_config
            .as_ref()
            .map(|c| common::ads_config_source(ctx, &path.field("cds_config"), Some(c)));
        let Some(ads_config) = ads_config else {
            ctx.error(
                &path.field("ads_config"),
                "Skiff takes dynamic resources from an ADS stream only: ads_config is required",
            );
            return None;
        };
        let ads = Ads::convert(ctx, &path.field("ads_config"), ads_config, static_clusters);
        (ctx.count() == before).then_some(Dynamic {
            ads: ads?,
            lds,
            cds,
        })
    }
}

// === impl Ads ===

impl Ads {
    fn convert(
        ctx: &mut Ctx,
        path: &Path,
        a: &ApiConfigSource,
        static_clusters: &[XdsCluster],
    ) -> Option<Self> {
        #[allow(deprecated)]
        let ApiConfigSource {
            api_type,
            transport_api_version,
            cluster_names,
            grpc_services,
            refresh_delay,
            request_timeout,
            rate_limit_settings,
            // Skiff sends the node on the first request of a stream only, which every
            // control plane must accept; both values work.
            set_node_on_first_message_only: _,
            config_validators,
        } = a;
        reject_unsupported!(
            ctx,
            path,
            cluster_names,
            refresh_delay,
            request_timeout,
            rate_limit_settings,
            config_validators
        );
        let protocol = match ApiType::try_from(*api_type) {
            Ok(ApiType::Grpc | ApiType::AggregatedGrpc) => Some(AdsProtocol::Sotw),
            Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc) => Some(AdsProtocol::Delta),
            Ok(other) => {
                ctx.error(
                    &path.field("api_type"),
                    format!(
                        "{}: Skiff speaks ADS over gRPC only (GRPC or DELTA_GRPC)",
                        other.as_str_name()
                    ),
                );
                None
            }
            Err(_) => {
                ctx.error(&path.field("api_type"), format!("unknown value {api_type}"));
                None
            }
        };
        if *transport_api_version != ApiVersion::Auto as i32
            && *transport_api_version != ApiVersion::V3 as i32
        {
            ctx.error(
                &path.field("transport_api_version"),
                format!("{transport_api_version}: only V3 is supported"),
            );
        }
        let [service] = grpc_services.as_slice() else {
            ctx.error(
                &path.field("grpc_services"),
                format!(
                    "exactly one gRPC service is needed (found {})",
                    grpc_services.len()
                ),
            );
            return None;
        };
        let sp = path.field("grpc_services").index(0);
        let GrpcService {
            timeout,
            initial_metadata,
            retry_policy,
            target_specifier,
        } = service;
        reject_unsupported!(ctx, &sp, timeout, retry_policy);
        let mut metadata = Vec::new();
        for (i, h) in initial_metadata.iter().enumerate() {
            let hp = sp.field("initial_metadata").index(i);
            let value = if h.raw_value.is_empty() {
                h.value.clone()
            } else {
                match String::from_utf8(h.raw_value.clone()) {
                    Ok(v) => v,
                    Err(_) => {
                        ctx.error(&hp.field("raw_value"), "gRPC metadata must be text");
                        continue;
                    }
                }
            };
            metadata.push((h.key.to_ascii_lowercase(), value));
        }
        let cluster_name = match target_specifier {
            Some(TargetSpecifier::EnvoyGrpc(e)) => {
                let ep = sp.field("envoy_grpc");
                let (authority, retry_policy, max_receive_message_length, skip_envoy_headers) = (
                    &e.authority,
                    &e.retry_policy,
                    &e.max_receive_message_length,
                    &e.skip_envoy_headers,
                );
                reject_unsupported!(
                    ctx,
                    &ep,
                    authority,
                    retry_policy,
                    max_receive_message_length,
                    skip_envoy_headers
                );
                e.cluster_name.clone()
            }
            Some(TargetSpecifier::GoogleGrpc(_)) => {
                ctx.error(
                    &sp.field("google_grpc"),
                    "not supported by Skiff: name a static cluster with envoy_grpc",
                );
                return None;
            }
            None => {
                ctx.error(&sp, "envoy_grpc is required");
                return None;
            }
        };
        let cp = sp.field("envoy_grpc").field("cluster_name");
        let Some(cluster) = static_clusters.iter().find(|c| c.name == cluster_name) else {
            ctx.error(
                &cp,
                format!("names cluster '{cluster_name}', which is not a static cluster"),
            );
            return None;
        };
        let (target, tls, connect_timeout) = control_plane_cluster(ctx, &cp, cluster)?;
        Some(Ads {
            protocol: protocol?,
            cluster: cluster_name.into(),
            target,
            tls,
            metadata,
            connect_timeout,
        })
    }
}

#[allow(deprecated)] // max_requests_per_connection: Istio still sets it
/// Reads the control-plane cluster: one endpoint, its connect timeout, and TLS. Connection
/// tuning for it (keepalive, circuit breakers, HTTP/2 options) is Envoy's and has no effect on
/// Skiff's gRPC client; each such field is reported as a warning, not silently dropped.
pub(crate) fn control_plane_cluster(
    ctx: &mut Ctx,
    reference: &Path,
    c: &XdsCluster,
) -> Option<(AdsTarget, Option<AdsTls>, Duration)> {
    let path = Path::named(format!("static_resources.clusters['{}']", c.name));
    let connect_timeout = common::duration_or(
        ctx,
        &path.field("connect_timeout"),
        c.connect_timeout.as_ref(),
        super::cluster::DEFAULT_CONNECT_TIMEOUT,
    );
    let endpoints: Vec<_> = c
        .load_assignment
        .iter()
        .flat_map(|la| &la.endpoints)
        .flat_map(|l| &l.lb_endpoints)
        .collect();
    let [endpoint] = endpoints.as_slice() else {
        ctx.error(
            &path.field("load_assignment"),
            format!(
                "the control-plane cluster (used by {reference}) needs exactly one endpoint, found {}",
                endpoints.len()
            ),
        );
        return None;
    };
    let ep = path
        .field("load_assignment")
        .field("endpoints[0].lb_endpoints[0]");
    let Some(HostIdentifier::Endpoint(e)) = &endpoint.host_identifier else {
        ctx.error(&ep, "an endpoint address is required");
        return None;
    };
    let address = e.address.as_ref()?;
    let target = match &address.address {
        Some(XdsAddressKind::Pipe(p)) => AdsTarget::Unix(PathBuf::from(&p.path)),
        _ => match common::socket_address(
            ctx,
            &ep.field("endpoint").field("address"),
            Some(address),
            false,
        )? {
            (HostPort::Ip(sa), _) => AdsTarget::Tcp(sa.to_string()),
            (HostPort::Dns(host, port), _) => AdsTarget::Tcp(format!("{host}:{port}")),
        },
    };
    for (field, set) in [
        ("circuit_breakers", c.circuit_breakers.is_some()),
        (
            "upstream_connection_options",
            c.upstream_connection_options.is_some(),
        ),
        (
            "typed_extension_protocol_options",
            !c.typed_extension_protocol_options.is_empty(),
        ),
        (
            "max_requests_per_connection",
            c.max_requests_per_connection.is_some(),
        ),
    ] {
        if set {
            ctx.warn(
                &path.field(field),
                "has no effect on a gRPC service connection (ADS, SDS) in Skiff",
            );
        }
    }
    let tls = match &c.transport_socket {
        None => None,
        Some(ts) => {
            let tp = path.field("transport_socket");
            match &ts.config_type {
                Some(ConfigType::TypedConfig(any))
                    if common::any_type_name(any)
                        == "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" =>
                {
                    None
                }
                Some(ConfigType::TypedConfig(any))
                    if common::any_type_name(any)
                        == "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" =>
                {
                    let tls: UpstreamTlsContext =
                        common::unpack(ctx, &tp.field("typed_config"), any)?;
                    control_plane_tls(ctx, &tp.field("typed_config"), &tls)
                }
                _ => {
                    ctx.error(
                        &tp,
                        "the control-plane connection takes raw_buffer or an UpstreamTlsContext",
                    );
                    None
                }
            }
        }
    };
    Some((target, tls, connect_timeout))
}

fn control_plane_tls(ctx: &mut Ctx, path: &Path, t: &UpstreamTlsContext) -> Option<AdsTls> {
    let ca = t
        .common_tls_context
        .as_ref()
        .and_then(|c| c.validation_context_type.as_ref())
        .and_then(|v| match v {
            ValidationContextType::ValidationContext(v) => v.trusted_ca.as_ref(),
            _ => None,
        })
        .and_then(|ca| ca.specifier.as_ref());
    let Some(Specifier::Filename(ca_file)) = ca else {
        ctx.error(
            &path.field("common_tls_context.validation_context.trusted_ca"),
            "the control-plane connection needs a CA file (trusted_ca.filename); Skiff does not \
             read other TLS settings for it yet",
        );
        return None;
    };
    let others = t.common_tls_context.as_ref().is_some_and(|c| {
        !c.tls_certificates.is_empty()
            || !c.tls_certificate_sds_secret_configs.is_empty()
            || c.tls_params.is_some()
            || !c.alpn_protocols.is_empty()
    });
    if others {
        ctx.error(
            &path.field("common_tls_context"),
            "only validation_context.trusted_ca is supported for the control-plane connection \
             (no client certificates, TLS parameters or ALPN)",
        );
    }
    Some(AdsTls {
        ca_file: PathBuf::from(ca_file),
        server_name: (!t.sni.is_empty()).then(|| t.sni.clone()),
    })
}
