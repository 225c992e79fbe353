//! The filters istiod puts in a sidecar's listeners besides the ones Skiff runs (the router,
//! tcp_proxy, the HTTP connection manager), and what Skiff does with each.
//!
//! Every filter falls in one of four classes:
//! - **observes**: it only reads traffic, for stats or telemetry (`istio.stats`, `grpc_stats`,
//!   peer metadata, shadow-only RBAC). Skiff accepts it and records its name on the chain;
//!   telemetry is a separate piece of work, so nothing it would report is reported yet.
//! - **no-op as configured**: it changes traffic only when given something to do, and istiod's
//!   config gives it nothing (`fault` without faults, `cors` without policies, network RBAC
//!   without rules), or it only feeds machinery Skiff refuses anyway (filter state for HBONE).
//! - **enforcing, not implemented**: it can deny traffic (RBAC rules, ext_authz) or needs TLS
//!   (mTLS is its own piece of work). Skiff accepts the resource, so the rest of the listener
//!   serves, but fails closed: every request or connection that reaches it is refused and
//!   counted, and a warning names the chain and the filter when the configuration loads. No
//!   traffic ever bypasses a policy Skiff cannot evaluate.
//! - anything else is rejected with its `@type`.

use envoy_types::pb::{
    envoy::extensions::{
        filters::{
            http::{fault::v3::HttpFault, rbac::v3::Rbac as HttpRbac, wasm::v3::Wasm as HttpWasm},
            network::{rbac::v3::Rbac as NetworkRbac, wasm::v3::Wasm as NetworkWasm},
        },
        wasm::v3::PluginConfig,
    },
    google::protobuf::{Any, Struct},
};

use super::{
    common,
    error::{Ctx, Path},
};

/// What Skiff does with a filter that is not one it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extension {
    /// Accepted; it only observes, or does nothing as configured. The name is recorded.
    Accepted(&'static str),
    /// Accepted, and traffic reaching it is refused (fail closed), for this reason.
    Refused(Refusal),
}

/// Why traffic is refused: a feature Skiff accepts in configuration but cannot carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// An RBAC filter with enforcing rules.
    Rbac,
    /// The external authorization filter.
    ExtAuthz,
    /// HBONE: tcp_proxy `tunneling_config`, or internal listeners and upstreams.
    Tunneling,
}

/// `udpa.type.v1.TypedStruct` / `xds.type.v3.TypedStruct`: an extension config as JSON, with
/// its type URL. `envoy-types` does not generate it; field numbers from cncf/xds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypedStruct {
    /// The type of the config in `value`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The config, as JSON.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Struct>,
}

impl prost::Name for TypedStruct {
    const NAME: &'static str = "TypedStruct";
    const PACKAGE: &'static str = "udpa.type.v1";
}

/// Istio's `istio.alpn` filter config (istio/api `envoy/config/filter/http/alpn/v2alpha1`),
/// which `envoy-types` does not generate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlpnFilterConfig {
    /// One entry per upstream protocol.
    #[prost(message, repeated, tag = "1")]
    pub alpn_override: Vec<AlpnOverrideEntry>,
}

/// One `alpn_override` entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlpnOverrideEntry {
    /// HTTP10 = 0, HTTP11 = 1, HTTP2 = 2.
    #[prost(int32, tag = "1")]
    pub upstream_protocol: i32,
    /// The ALPN list for it.
    #[prost(string, repeated, tag = "2")]
    pub alpn_override: Vec<String>,
}

impl prost::Name for AlpnFilterConfig {
    const NAME: &'static str = "FilterConfig";
    const PACKAGE: &'static str = "istio.envoy.config.filter.http.alpn.v2alpha1";
}

/// The `istio.alpn` filter's config type.
pub(crate) const ALPN_FILTER: &str = "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";

/// Converts `istio.alpn`'s table.
pub(crate) fn alpn_override(
    ctx: &mut Ctx,
    path: &Path,
    any: &Any,
) -> Option<super::http::AlpnOverride> {
    let config: AlpnFilterConfig = common::unpack(ctx, path, any)?;
    let mut table = super::http::AlpnOverride::default();
    for (i, e) in config.alpn_override.iter().enumerate() {
        let slot = match e.upstream_protocol {
            0 => &mut table.http10,
            1 => &mut table.http11,
            2 => &mut table.http2,
            other => {
                ctx.error(
                    &path
                        .field("alpn_override")
                        .index(i)
                        .field("upstream_protocol"),
                    format!("unknown upstream protocol {other} (HTTP10, HTTP11, HTTP2)"),
                );
                continue;
            }
        };
        if e.alpn_override
            .iter()
            .any(|a| a.is_empty() || a.len() > 255)
        {
            ctx.error(
                &path.field("alpn_override").index(i).field("alpn_override"),
                "an ALPN protocol name is 1 to 255 bytes",
            );
            continue;
        }
        slot.clone_from(&e.alpn_override);
    }
    Some(table)
}

const TYPED_STRUCT_UDPA: &str = "udpa.type.v1.TypedStruct";
const TYPED_STRUCT_XDS: &str = "xds.type.v3.TypedStruct";

// === impl Refusal ===

impl Refusal {
    /// The index of this refusal in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Every refusal, for counters.
    pub const ALL: [Refusal; 3] = [Refusal::Rbac, Refusal::ExtAuthz, Refusal::Tunneling];

    /// A short name for logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Rbac => "rbac",
            Refusal::ExtAuthz => "ext_authz",
            Refusal::Tunneling => "tunneling",
        }
    }

    /// What the operator reads in the warning.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Rbac => "RBAC rules are not evaluated by Skiff yet",
            Refusal::ExtAuthz => "external authorization is not supported by Skiff yet",
            Refusal::Tunneling => {
                "HBONE tunneling and internal listeners are not supported by Skiff"
            }
        }
    }
}

/// Classifies an HTTP filter other than the router; `None` (after an error) when Skiff
/// rejects it.
pub(crate) fn http_filter(ctx: &mut Ctx, path: &Path, any: &Any) -> Option<Extension> {
    let name = common::any_type_name(any);
    Some(match name {
        "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig" => {
            Extension::Accepted("grpc_stats")
        }
        "stats.PluginConfig" => Extension::Accepted("istio.stats"),
        "envoy.extensions.filters.http.cors.v3.Cors" => {
            // Policies live on routes and virtual hosts, where Skiff rejects them.
            Extension::Accepted("cors")
        }
        "envoy.extensions.filters.http.fault.v3.HTTPFault" => {
            let f: HttpFault = common::unpack(ctx, path, any)?;
            if f != HttpFault::default() {
                ctx.error(path, "fault injection is not supported by Skiff yet");
                return None;
            }
            Extension::Accepted("fault")
        }
        "envoy.extensions.filters.http.rbac.v3.RBAC" => {
            let r: HttpRbac = common::unpack(ctx, path, any)?;
            if r.rules.is_none() && r.matcher.is_none() {
                Extension::Accepted("rbac (shadow only)")
            } else {
                Extension::Refused(Refusal::Rbac)
            }
        }
        "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz" => {
            Extension::Refused(Refusal::ExtAuthz)
        }
        "envoy.extensions.filters.http.set_filter_state.v3.Config" => {
            Extension::Accepted("set_filter_state")
        }
        "envoy.extensions.filters.http.wasm.v3.Wasm" => {
            let w: HttpWasm = common::unpack(ctx, path, any)?;
            return null_vm(ctx, &path.field("config"), w.config.as_ref());
        }
        TYPED_STRUCT_UDPA | TYPED_STRUCT_XDS => {
            let t: TypedStruct = common::unpack(ctx, path, any)?;
            match common::type_name(&t.type_url) {
                "stats.PluginConfig" => Extension::Accepted("istio.stats"),
                "io.istio.http.peer_metadata.Config" => Extension::Accepted("peer_metadata"),
                "io.istio.http.connect_authority.Config" => {
                    Extension::Accepted("connect_authority")
                }
                "io.istio.http.connect_baggage.Config" => Extension::Accepted("connect_baggage"),
                other => {
                    ctx.error(
                        &path.field("type_url"),
                        format!(
                            "HTTP filter '{other}' (in a TypedStruct) is not supported by Skiff"
                        ),
                    );
                    return None;
                }
            }
        }
        other => {
            ctx.error(
                path,
                format!("HTTP filter @type '{other}' is not supported by Skiff"),
            );
            return None;
        }
    })
}

/// Classifies a network filter other than tcp_proxy and the HTTP connection manager.
pub(crate) fn network_filter(ctx: &mut Ctx, path: &Path, any: &Any) -> Option<Extension> {
    let name = common::any_type_name(any);
    Some(match name {
        "stats.PluginConfig" => Extension::Accepted("istio.stats"),
        "envoy.tcp.metadataexchange.config.MetadataExchange" => {
            // Exchanges peer metadata in-band only after TLS negotiates `istio-peer-exchange`,
            // which needs mTLS; without it the filter passes bytes through untouched.
            Extension::Accepted("istio.metadata_exchange")
        }
        "envoy.extensions.filters.network.rbac.v3.RBAC" => {
            let r: NetworkRbac = common::unpack(ctx, path, any)?;
            if r.rules.is_none() && r.matcher.is_none() {
                Extension::Accepted("rbac (shadow only)")
            } else {
                Extension::Refused(Refusal::Rbac)
            }
        }
        "envoy.extensions.filters.network.set_filter_state.v3.Config" => {
            Extension::Accepted("set_filter_state")
        }
        "envoy.extensions.filters.network.wasm.v3.Wasm" => {
            let w: NetworkWasm = common::unpack(ctx, path, any)?;
            return null_vm(ctx, &path.field("config"), w.config.as_ref());
        }
        TYPED_STRUCT_UDPA | TYPED_STRUCT_XDS => {
            let t: TypedStruct = common::unpack(ctx, path, any)?;
            match common::type_name(&t.type_url) {
                "stats.PluginConfig" => Extension::Accepted("istio.stats"),
                "envoy.tcp.metadataexchange.config.MetadataExchange" => {
                    Extension::Accepted("istio.metadata_exchange")
                }
                // Reads the peer identity from TLS for RBAC; without mTLS there is none.
                "io.istio.network.authn.Config" => Extension::Accepted("istio_authn"),
                other => {
                    ctx.error(
                        &path.field("type_url"),
                        format!(
                            "network filter '{other}' (in a TypedStruct) is not supported by Skiff"
                        ),
                    );
                    return None;
                }
            }
        }
        other => {
            ctx.error(
                path,
                format!("network filter @type '{other}' is not supported by Skiff"),
            );
            return None;
        }
    })
}

/// A Wasm filter is accepted only when it names one of Istio's built-in native extensions
/// through the null VM (`envoy.wasm.runtime.null`); real Wasm code is refused.
fn null_vm(ctx: &mut Ctx, path: &Path, config: Option<&PluginConfig>) -> Option<Extension> {
    use envoy_types::pb::envoy::config::core::v3::{
        async_data_source::Specifier as Async, data_source::Specifier,
    };
    let vm = config.and_then(|c| match &c.vm {
        Some(envoy_types::pb::envoy::extensions::wasm::v3::plugin_config::Vm::VmConfig(vm)) => {
            Some(vm)
        }
        _ => None,
    });
    let Some(vm) = vm else {
        ctx.error(path, "a Wasm filter needs vm_config");
        return None;
    };
    if vm.runtime != "envoy.wasm.runtime.null" {
        ctx.error(
            &path.field("vm_config.runtime"),
            format!(
                "Wasm runtime '{}' is not supported by Skiff (only Istio's built-in extensions \
                 through envoy.wasm.runtime.null)",
                vm.runtime
            ),
        );
        return None;
    }
    let code = vm
        .code
        .as_ref()
        .and_then(|c| c.specifier.as_ref())
        .and_then(|s| match s {
            Async::Local(d) => d.specifier.as_ref(),
            Async::Remote(_) => None,
        });
    let builtin = match code {
        Some(Specifier::InlineString(s)) => s.as_str(),
        _ => "",
    };
    match builtin {
        "envoy.wasm.stats" | "istio.stats" => Some(Extension::Accepted("istio.stats")),
        "envoy.wasm.metadata_exchange" => Some(Extension::Accepted("istio.metadata_exchange")),
        "envoy.wasm.attributegen" => Some(Extension::Accepted("istio.attributegen")),
        other => {
            ctx.error(
                &path.field("vm_config.code.local.inline_string"),
                format!("built-in Wasm extension '{other}' is not supported by Skiff"),
            );
            None
        }
    }
}
