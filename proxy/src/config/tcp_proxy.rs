//! `envoy.filters.network.tcp_proxy`: which cluster an opaque TCP connection goes to.

use std::{sync::Arc, time::Duration};

pub(crate) use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy as XdsTcpProxy;
use envoy_types::pb::{
    envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier,
    google::protobuf::Any,
};

use super::{
    common,
    error::{Ctx, Path, reject_unsupported},
};

/// Envoy's tcp_proxy `idle_timeout` when the field is unset.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A TCP proxy filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpProxy {
    /// The prefix of its statistics.
    pub stat_prefix: Arc<str>,
    /// Where connections go.
    pub target: ClusterTarget,
    /// Close both sides after this long without bytes in either direction; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// How many times to try connecting upstream before giving up.
    pub max_connect_attempts: u32,
    /// Set when the connection must be tunneled (HBONE `tunneling_config`), which Skiff cannot
    /// do: such connections are refused.
    pub tunneling: bool,
}

/// The cluster (or weighted set of clusters) a TCP proxy sends connections to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterTarget {
    /// Always this cluster.
    One(Arc<str>),
    /// A cluster picked per connection, in proportion to its weight.
    Weighted(Vec<(Arc<str>, u32)>),
}

// === impl TcpProxy ===

impl TcpProxy {
    pub(crate) fn convert(ctx: &mut Ctx, path: &Path, any: &Any) -> Option<Self> {
        let before = ctx.count();
        let XdsTcpProxy {
            stat_prefix,
            on_demand,
            metadata_match,
            idle_timeout,
            downstream_idle_timeout,
            upstream_idle_timeout,
            access_log,
            max_connect_attempts,
            backoff_options,
            hash_policy,
            tunneling_config,
            max_downstream_connection_duration,
            max_downstream_connection_duration_jitter_percentage,
            access_log_flush_interval,
            flush_access_log_on_connected,
            access_log_options,
            proxy_protocol_tlvs,
            proxy_protocol_tlv_merge_policy,
            upstream_connect_mode,
            max_early_data_bytes,
            check_drain_close,
            cluster_specifier,
        } = common::unpack::<XdsTcpProxy>(ctx, path, any)?;
        reject_unsupported!(
            ctx,
            path,
            on_demand,
            metadata_match,
            downstream_idle_timeout,
            upstream_idle_timeout,
            access_log,
            backoff_options,
            hash_policy,
            max_downstream_connection_duration,
            max_downstream_connection_duration_jitter_percentage,
            access_log_flush_interval,
            flush_access_log_on_connected,
            access_log_options,
            proxy_protocol_tlvs,
            proxy_protocol_tlv_merge_policy,
            upstream_connect_mode,
            max_early_data_bytes,
            check_drain_close,
        );
        if stat_prefix.is_empty() {
            ctx.error(&path.field("stat_prefix"), "a stat_prefix is required");
        }
        let tunneling = tunneling_config.is_some();
        if tunneling {
            ctx.warn(
                &path.field("tunneling_config"),
                "HBONE tunneling is not supported by Skiff: connections through this filter are \
                 refused",
            );
        }
        let target = match cluster_specifier {
            Some(ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
                Some(ClusterTarget::One(name.as_str().into()))
            }
            Some(ClusterSpecifier::Cluster(_)) => {
                ctx.error(&path.field("cluster"), "the cluster name is empty");
                None
            }
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                let wp = path.field("weighted_clusters").field("clusters");
                if w.clusters.is_empty() {
                    ctx.error(&wp, "at least one cluster is required");
                }
                let mut out = Vec::with_capacity(w.clusters.len());
                for (i, c) in w.clusters.iter().enumerate() {
                    let cp = wp.index(i);
                    let metadata_match = &c.metadata_match;
                    reject_unsupported!(ctx, &cp, metadata_match);
                    if c.name.is_empty() {
                        ctx.error(&cp.field("name"), "the cluster name is empty");
                    }
                    if c.weight == 0 {
                        ctx.error(&cp.field("weight"), "must be at least 1");
                    }
                    out.push((Arc::from(c.name.as_str()), c.weight));
                }
                Some(ClusterTarget::Weighted(out))
            }
            None => {
                ctx.error(path, "one of cluster or weighted_clusters is required");
                None
            }
        };
        let idle_timeout = match idle_timeout {
            None => Some(DEFAULT_IDLE_TIMEOUT),
            Some(d) => match common::duration(ctx, &path.field("idle_timeout"), &d) {
                Some(Duration::ZERO) => None,
                other => other,
            },
        };
        let max_connect_attempts = max_connect_attempts.map_or(1, |v| v.value);
        if max_connect_attempts == 0 {
            ctx.error(&path.field("max_connect_attempts"), "must be at least 1");
        }
        let target = target?;
        (ctx.count() == before).then(|| TcpProxy {
            stat_prefix: stat_prefix.into(),
            target,
            idle_timeout,
            max_connect_attempts,
            tunneling,
        })
    }
}

// === impl ClusterTarget ===

impl ClusterTarget {
    /// Every cluster name this target may pick.
    pub fn cluster_names(&self) -> impl Iterator<Item = &Arc<str>> {
        let (one, many) = match self {
            ClusterTarget::One(c) => (Some(c), &[][..]),
            ClusterTarget::Weighted(w) => (None, w.as_slice()),
        };
        one.into_iter().chain(many.iter().map(|(c, _)| c))
    }
}
