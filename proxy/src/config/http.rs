//! `envoy.filters.network.http_connection_manager` and its router filter.

use std::{collections::HashSet, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{
            Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions,
            http_protocol_options::HeadersWithUnderscoresAction,
        },
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                HttpConnectionManager as XdsHcm, HttpFilter as XdsHttpFilter,
                http_connection_manager::{
                    CodecType, ForwardClientCertDetails, RouteSpecifier,
                    ServerHeaderTransformation, StripPortMode,
                },
                http_filter::ConfigType,
            },
        },
    },
    google::protobuf::Any,
};
use http::HeaderValue;
use prost::Name;

use super::{
    common,
    error::{Ctx, Path, reject_unsupported},
    extensions::{self, Extension, Refusal},
    route::RouteConfig,
};

/// Envoy's `stream_idle_timeout` when unset.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Envoy's downstream connection `idle_timeout` when unset.
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's `max_request_headers_kb` when unset.
pub const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
/// Envoy's `max_headers_count` when unset.
pub const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;

/// An HTTP connection manager.
#[derive(Debug)]
pub struct HttpConnectionManager {
    /// The prefix of its statistics.
    pub stat_prefix: Arc<str>,
    /// Which codecs serve downstream connections.
    pub codec: Codec,
    /// Where the routes come from.
    pub routes: RouteSource,
    /// The `server` header and how it is set.
    pub server_name: HeaderValue,
    /// How the `server` header of upstream responses is treated.
    pub server_header: ServerHeader,
    /// The largest request header block, in bytes.
    pub max_request_headers_bytes: usize,
    /// The most request headers.
    pub max_headers_count: usize,
    /// A stream with no byte in either direction for this long is ended (default 5 minutes);
    /// `None` (`0s`) never is.
    pub stream_idle_timeout: Option<Duration>,
    /// The whole request must arrive within this; `None` (the default) has no limit.
    pub request_timeout: Option<Duration>,
    /// The request headers must arrive within this; `None` has no limit.
    pub request_headers_timeout: Option<Duration>,
    /// A connection with no stream for this long is closed; `None` never is.
    pub idle_timeout: Option<Duration>,
    /// Trust the peer address as the client address and append it to x-forwarded-for.
    pub use_remote_address: bool,
    /// Proxies in front of this one whose `x-forwarded-for` entries are trusted: the client is
    /// the entry that many places from the right.
    pub xff_num_trusted_hops: u32,
    /// Do not append to x-forwarded-for even with `use_remote_address`.
    pub skip_xff_append: bool,
    /// A `via` header value to append, if any.
    pub via: Option<HeaderValue>,
    /// Generate `x-request-id` when absent (or when external and not preserved).
    pub generate_request_id: bool,
    /// Keep an `x-request-id` that came from an external client.
    pub preserve_external_request_id: bool,
    /// Echo `x-request-id` in responses.
    pub always_set_request_id_in_response: bool,
    /// Strip the port from Host before route matching: any port, or the listener's.
    pub strip_port: StripPort,
    /// Upgrades (`websocket`, `CONNECT`, ...) allowed unless a route says otherwise, lowercase.
    pub upgrades: Vec<String>,
    /// HTTP/2 settings for downstream connections.
    pub http2: Http2Settings,
    /// The router filter's settings.
    pub router: RouterSettings,
    /// The other HTTP filters.
    pub filters: FilterExtras,
    /// Resolve `.` and `..` path segments before routing (`normalize_path`).
    pub normalize_path: bool,
    /// `x-forwarded-client-cert` handling (`forward_client_cert_details` and
    /// `set_current_client_cert_details`).
    pub xfcc: Xfcc,
}

/// What becomes of `x-forwarded-client-cert`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Xfcc {
    /// `forward_client_cert_details`.
    pub mode: XfccMode,
    /// `set_current_client_cert_details`: what `APPEND_FORWARD` and `SANITIZE_SET` add.
    pub details: XfccDetails,
}

/// `forward_client_cert_details`. Without mTLS every mode but `ALWAYS_FORWARD_ONLY` removes the
/// header, as in Envoy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XfccMode {
    /// Remove it.
    #[default]
    Sanitize,
    /// Pass it on over mTLS.
    ForwardOnly,
    /// Append this hop's element over mTLS.
    AppendForward,
    /// Replace it with this hop's element over mTLS.
    SanitizeSet,
    /// Pass it on, mTLS or not.
    AlwaysForwardOnly,
}

/// The fields of this hop's element besides `By` and `Hash` (always there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XfccDetails {
    /// `Subject="..."`.
    pub subject: bool,
    /// `DNS=...`, one per DNS SAN.
    pub dns: bool,
    /// `URI=...`, the first URI SAN.
    pub uri: bool,
}

/// What the HTTP filters other than the router amount to.
#[derive(Debug, Default)]
pub struct FilterExtras {
    /// Filters accepted because they only observe or do nothing as configured.
    pub accepted: Vec<&'static str>,
    /// Set when an enforcing filter Skiff cannot run is configured: every request is refused.
    pub refusal: Option<Refusal>,
    /// `istio.alpn`: the ALPN list offered to TLS upstreams, by upstream protocol.
    pub alpn: Option<AlpnOverride>,
}

/// Istio's `istio.alpn` table: what a TLS upstream is offered instead of its cluster's ALPN
/// list, for HTTP/1.0, HTTP/1.1 and HTTP/2 requests (empty: the cluster's list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlpnOverride {
    /// For HTTP/1.0.
    pub http10: Vec<String>,
    /// For HTTP/1.1.
    pub http11: Vec<String>,
    /// For HTTP/2.
    pub http2: Vec<String>,
}

/// Where a connection manager's routes come from.
#[derive(Debug)]
pub enum RouteSource {
    /// Inline (`route_config`).
    Static(Arc<RouteConfig>),
    /// The `RouteConfiguration` of this name from the ADS stream (`rds`).
    Rds {
        /// `rds.route_config_name`.
        name: Arc<str>,
        /// How long a listener may warm waiting for it; `None` for ever.
        initial_fetch_timeout: Option<Duration>,
    },
}

/// `codec_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1, or HTTP/2 when the client starts with the h2 preface (or ALPN h2).
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (prior knowledge).
    Http2,
}

/// `server_header_transformation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerHeader {
    /// Always set `server` to `server_name`.
    Overwrite,
    /// Set it only when the upstream sent none.
    AppendIfAbsent,
    /// Leave the upstream's value (or none).
    PassThrough,
}

/// `strip_port_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StripPort {
    /// Match the Host header as received.
    None,
    /// Strip the port when it equals the listener's port.
    Matching,
    /// Strip any port.
    Any,
}

/// HTTP/2 settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Settings {
    /// `max_concurrent_streams`.
    pub max_concurrent_streams: Option<u32>,
    /// `initial_stream_window_size`.
    pub initial_stream_window_size: Option<u32>,
    /// `initial_connection_window_size`.
    pub initial_connection_window_size: Option<u32>,
    /// `allow_connect`: extended CONNECT (RFC 8441), for WebSocket over HTTP/2.
    pub allow_connect: bool,
}

/// The router filter's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterSettings {
    /// Do not add `x-envoy-*` headers (upstream service time, expected timeout).
    pub suppress_envoy_headers: bool,
}

// === impl HttpConnectionManager ===

impl HttpConnectionManager {
    /// Converts an HCM `typed_config`. `clusters` lists the defined clusters when inline routes
    /// must reference existing ones (static configuration).
    pub(crate) fn convert(
        ctx: &mut Ctx,
        path: &Path,
        any: &Any,
        clusters: Option<&HashSet<&str>>,
    ) -> Option<Self> {
        let before = ctx.count();
        #[allow(deprecated)]
        let XdsHcm {
            codec_type,
            stat_prefix,
            http_filters,
            add_user_agent,
            tracing,
            common_http_protocol_options,
            http1_safe_max_connection_duration,
            http_protocol_options,
            http2_protocol_options,
            http3_protocol_options,
            server_name,
            server_header_transformation,
            scheme_header_transformation,
            max_request_headers_kb,
            stream_idle_timeout,
            stream_flush_timeout,
            request_timeout,
            request_headers_timeout,
            drain_timeout,
            drain_timeout_jitter,
            delayed_close_timeout,
            access_log,
            access_log_flush_interval,
            flush_access_log_on_new_request,
            access_log_options,
            use_remote_address,
            xff_num_trusted_hops,
            original_ip_detection_extensions,
            early_header_mutation_extensions,
            internal_address_config,
            skip_xff_append,
            via,
            generate_request_id,
            preserve_external_request_id,
            always_set_request_id_in_response,
            forward_client_cert_details,
            set_current_client_cert_details,
            forward_client_cert_matcher,
            proxy_100_continue,
            represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
            upgrade_configs,
            normalize_path,
            merge_slashes,
            path_with_escaped_slashes_action,
            request_id_extension,
            local_reply_config,
            strip_matching_host_port,
            stream_error_on_invalid_http_message,
            path_normalization_options,
            strip_trailing_host_dot,
            proxy_status_config,
            typed_header_validation_config,
            append_x_forwarded_port,
            append_local_overload,
            add_proxy_protocol_connection_state,
            forward_proto_config,
            route_specifier,
            strip_port_mode,
        } = common::unpack::<XdsHcm>(ctx, path, any)?;
        reject_unsupported!(
            ctx,
            path,
            add_user_agent,
            http1_safe_max_connection_duration,
            http3_protocol_options,
            scheme_header_transformation,
            stream_flush_timeout,
            drain_timeout,
            drain_timeout_jitter,
            delayed_close_timeout,
            access_log_flush_interval,
            flush_access_log_on_new_request,
            access_log_options,
            original_ip_detection_extensions,
            early_header_mutation_extensions,
            internal_address_config,
            forward_client_cert_matcher,
            proxy_100_continue,
            represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
            merge_slashes,
            local_reply_config,
            stream_error_on_invalid_http_message,
            path_normalization_options,
            strip_trailing_host_dot,
            proxy_status_config,
            typed_header_validation_config,
            append_x_forwarded_port,
            append_local_overload,
            add_proxy_protocol_connection_state,
            forward_proto_config,
        );
        if stat_prefix.is_empty() {
            ctx.error(&path.field("stat_prefix"), "a stat_prefix is required");
        }
        // Tracing decides sampling and tags spans; with no tracer in the bootstrap (Skiff has
        // none) Envoy reports nothing either. Accepted, and said once.
        if tracing.is_some() {
            ctx.warn(
                &path.field("tracing"),
                "accepted, but Skiff has no tracer: no spans are reported",
            );
        }
        // Access logs belong to the telemetry work; until then they are not written.
        if !access_log.is_empty() {
            ctx.warn(
                &path.field("access_log"),
                format!(
                    "{} access log(s) accepted but not written: Skiff does not write HTTP access \
                     logs yet",
                    access_log.len()
                ),
            );
        }
        // The UUID generator is the default request id extension; it is what Skiff does.
        if let Some(ext) = &request_id_extension
            && let Some(any) = &ext.typed_config
            && common::any_type_name(any)
                != "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"
        {
            ctx.error(
                &path.field("request_id_extension.typed_config"),
                format!(
                    "request id extension '{}' is not supported by Skiff (only the UUID one)",
                    common::any_type_name(any)
                ),
            );
        }
        let normalize_path = normalize_path.as_ref().is_some_and(|b| b.value);
        {
            use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::PathWithEscapedSlashesAction as A;
            match A::try_from(path_with_escaped_slashes_action) {
                Ok(A::ImplementationSpecificDefault | A::KeepUnchanged) => {}
                _ => ctx.error(
                    &path.field("path_with_escaped_slashes_action"),
                    format!(
                        "{path_with_escaped_slashes_action}: only KEEP_UNCHANGED is supported by Skiff"
                    ),
                ),
            }
        }
        let codec = match CodecType::try_from(codec_type) {
            Ok(CodecType::Auto) => Codec::Auto,
            Ok(CodecType::Http1) => Codec::Http1,
            Ok(CodecType::Http2) => Codec::Http2,
            Ok(CodecType::Http3) | Err(_) => {
                ctx.error(
                    &path.field("codec_type"),
                    format!("codec {codec_type} is not supported by Skiff (AUTO, HTTP1, HTTP2)"),
                );
                Codec::Auto
            }
        };
        let xfcc_mode = match ForwardClientCertDetails::try_from(forward_client_cert_details) {
            Ok(ForwardClientCertDetails::Sanitize) => XfccMode::Sanitize,
            Ok(ForwardClientCertDetails::ForwardOnly) => XfccMode::ForwardOnly,
            Ok(ForwardClientCertDetails::AppendForward) => XfccMode::AppendForward,
            Ok(ForwardClientCertDetails::SanitizeSet) => XfccMode::SanitizeSet,
            Ok(ForwardClientCertDetails::AlwaysForwardOnly) => XfccMode::AlwaysForwardOnly,
            Err(_) => {
                ctx.error(
                    &path.field("forward_client_cert_details"),
                    format!("unknown value {forward_client_cert_details}"),
                );
                XfccMode::Sanitize
            }
        };
        let xfcc_details =
            set_current_client_cert_details
                .as_ref()
                .map_or(XfccDetails::default(), |d| {
                    let p = path.field("set_current_client_cert_details");
                    let (cert, chain) = (d.cert, d.chain);
                    reject_unsupported!(ctx, &p, cert, chain);
                    XfccDetails {
                        subject: d.subject.as_ref().is_some_and(|b| b.value),
                        dns: d.dns,
                        uri: d.uri,
                    }
                });
        let xfcc = Xfcc {
            mode: xfcc_mode,
            details: xfcc_details,
        };
        let mut extras = FilterExtras::default();
        let router =
            http_filters_router(ctx, &path.field("http_filters"), &http_filters, &mut extras);

        let route_config = match route_specifier {
            Some(RouteSpecifier::RouteConfig(rc)) => {
                RouteConfig::convert(ctx, &path.field("route_config"), &rc, clusters)
                    .map(|rc| RouteSource::Static(Arc::new(rc)))
            }
            Some(RouteSpecifier::Rds(rds)) => {
                let p = path.field("rds");
                let initial_fetch_timeout = common::ads_config_source(
                    ctx,
                    &p.field("config_source"),
                    rds.config_source.as_ref(),
                );
                if rds.route_config_name.is_empty() {
                    ctx.error(
                        &p.field("route_config_name"),
                        "a route configuration name is required",
                    );
                }
                Some(RouteSource::Rds {
                    name: rds.route_config_name.as_str().into(),
                    initial_fetch_timeout,
                })
            }
            Some(RouteSpecifier::ScopedRoutes(_)) => {
                ctx.error(&path.field("scoped_routes"), "not supported by Skiff");
                None
            }
            None => {
                ctx.error(path, "one of route_config or rds is required");
                None
            }
        };

        let server_name = if server_name.is_empty() {
            HeaderValue::from_static("envoy")
        } else {
            HeaderValue::from_str(&server_name).unwrap_or_else(|_| {
                ctx.error(&path.field("server_name"), "not a valid header value");
                HeaderValue::from_static("envoy")
            })
        };
        let server_header = match ServerHeaderTransformation::try_from(server_header_transformation)
        {
            Ok(ServerHeaderTransformation::Overwrite) => ServerHeader::Overwrite,
            Ok(ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
            Ok(ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
            Err(_) => {
                ctx.error(
                    &path.field("server_header_transformation"),
                    format!("unknown value {server_header_transformation}"),
                );
                ServerHeader::Overwrite
            }
        };
        let max_kb = max_request_headers_kb.map_or(DEFAULT_MAX_REQUEST_HEADERS_KB, |v| v.value);
        if !(1..=8192).contains(&max_kb) {
            ctx.error(
                &path.field("max_request_headers_kb"),
                format!("{max_kb} is out of range (1 to 8192)"),
            );
        }
        let dur = |ctx: &mut Ctx, field: &str, d: Option<_>, default: Option<Duration>| match d {
            None => default,
            Some(d) => common::duration(ctx, &path.field(field), &d).filter(|d| !d.is_zero()),
        };
        let stream_idle_timeout = dur(
            ctx,
            "stream_idle_timeout",
            stream_idle_timeout,
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        );
        let request_timeout = dur(ctx, "request_timeout", request_timeout, None);
        let request_headers_timeout = dur(
            ctx,
            "request_headers_timeout",
            request_headers_timeout,
            None,
        );

        let (idle_timeout, max_headers_count) = common_options(
            ctx,
            &path.field("common_http_protocol_options"),
            common_http_protocol_options.as_ref(),
        );
        if let Some(h1) = &http_protocol_options {
            http1_options(ctx, &path.field("http_protocol_options"), h1);
        }
        let http2 = http2_protocol_options
            .as_ref()
            .map(|h2| http2_options(ctx, &path.field("http2_protocol_options"), h2))
            .unwrap_or_default();
        let via = (!via.is_empty())
            .then(|| HeaderValue::from_str(&via))
            .transpose()
            .unwrap_or_else(|_| {
                ctx.error(&path.field("via"), "not a valid header value");
                None
            });
        let strip_port = match strip_port_mode {
            Some(StripPortMode::StripAnyHostPort(true)) => StripPort::Any,
            _ if strip_matching_host_port => StripPort::Matching,
            _ => StripPort::None,
        };
        let mut upgrades = Vec::new();
        for (i, u) in upgrade_configs.iter().enumerate() {
            let up = path.field("upgrade_configs").index(i);
            let filters = &u.filters;
            reject_unsupported!(ctx, &up, filters);
            if u.enabled.as_ref().is_none_or(|b| b.value) {
                upgrades.push(u.upgrade_type.to_ascii_lowercase());
            }
        }

        let routes = route_config?;
        (ctx.count() == before).then(|| HttpConnectionManager {
            stat_prefix: stat_prefix.into(),
            codec,
            routes,
            server_name,
            server_header,
            max_request_headers_bytes: max_kb as usize * 1024,
            max_headers_count,
            stream_idle_timeout,
            request_timeout,
            request_headers_timeout,
            idle_timeout,
            use_remote_address: use_remote_address.is_some_and(|b| b.value),
            xff_num_trusted_hops,
            skip_xff_append,
            via,
            generate_request_id: generate_request_id.is_none_or(|b| b.value),
            preserve_external_request_id,
            always_set_request_id_in_response,
            strip_port,
            upgrades,
            http2,
            router: router.unwrap_or_default(),
            filters: extras,
            normalize_path,
            xfcc,
        })
    }
}

/// Checks `http_filters`: the router must be last. Other filters are classified by
/// [`extensions::http_filter`]: accepted (and recorded in `extras`), refused at run time
/// (fail closed), or rejected unless marked optional (then Envoy skips it too, when unknown).
fn http_filters_router(
    ctx: &mut Ctx,
    path: &Path,
    filters: &[XdsHttpFilter],
    extras: &mut FilterExtras,
) -> Option<RouterSettings> {
    if filters.is_empty() {
        ctx.error(path, "http_filters must end with envoy.filters.http.router");
        return None;
    }
    let mut router = None;
    for (i, f) in filters.iter().enumerate() {
        let fp = path.index(i);
        let any = match &f.config_type {
            Some(ConfigType::TypedConfig(any)) => any,
            Some(ConfigType::ConfigDiscovery(_)) => {
                ctx.error(&fp.field("config_discovery"), "not supported by Skiff");
                continue;
            }
            None => {
                ctx.error(
                    &fp,
                    format!(
                        "http filter '{}' needs a typed_config naming its @type",
                        f.name
                    ),
                );
                continue;
            }
        };
        let tc = fp.field("typed_config");
        let type_name = common::any_type_name(any);
        if type_name == Router::full_name() {
            if i + 1 != filters.len() {
                ctx.error(&fp, "the router must be the last HTTP filter");
            }
            let Some(Router {
                dynamic_stats: _, // stats only
                start_child_span,
                upstream_log,
                upstream_log_options,
                suppress_envoy_headers,
                strict_check_headers,
                respect_expected_rq_timeout,
                suppress_grpc_request_failure_code_stats: _, // stats only
                upstream_http_filters,
                reject_connect_request_early_data,
            }) = common::unpack::<Router>(ctx, &tc, any)
            else {
                continue;
            };
            reject_unsupported!(
                ctx,
                &tc,
                start_child_span,
                upstream_log,
                upstream_log_options,
                strict_check_headers,
                respect_expected_rq_timeout,
                upstream_http_filters,
                reject_connect_request_early_data,
            );
            router = Some(RouterSettings {
                suppress_envoy_headers,
            });
        } else if type_name == extensions::ALPN_FILTER {
            if let Some(table) = extensions::alpn_override(ctx, &tc, any) {
                extras.accepted.push("istio.alpn");
                extras.alpn = Some(table);
            }
        } else {
            let mut probe = Ctx::default();
            match extensions::http_filter(&mut probe, &tc, any) {
                Some(Extension::Accepted(name)) => extras.accepted.push(name),
                Some(Extension::Refused(why)) => {
                    ctx.warn(
                        &tc,
                        format!(
                            "filter '{}': {}; requests through this connection manager are \
                             refused with 403",
                            f.name,
                            why.describe()
                        ),
                    );
                    extras.refusal.get_or_insert(why);
                }
                None if f.is_optional => {
                    // Envoy skips an optional filter it does not know; Skiff skips, and says so.
                    ctx.warn(
                        &tc,
                        format!(
                            "optional HTTP filter '{type_name}' is not supported by Skiff and is \
                             skipped"
                        ),
                    );
                }
                None => ctx.absorb(probe),
            }
        }
    }
    if router.is_none() {
        ctx.error(path, "http_filters must end with envoy.filters.http.router");
    }
    router
}

fn common_options(
    ctx: &mut Ctx,
    path: &Path,
    o: Option<&HttpProtocolOptions>,
) -> (Option<Duration>, usize) {
    let Some(o) = o else {
        return (
            Some(DEFAULT_CONNECTION_IDLE_TIMEOUT),
            DEFAULT_MAX_HEADERS_COUNT as usize,
        );
    };
    let HttpProtocolOptions {
        idle_timeout,
        max_connection_duration,
        max_connection_duration_jitter,
        max_headers_count,
        max_response_headers_kb,
        max_stream_duration,
        headers_with_underscores_action,
        max_requests_per_connection,
    } = o;
    reject_unsupported!(
        ctx,
        path,
        max_connection_duration,
        max_connection_duration_jitter,
        max_response_headers_kb,
        max_stream_duration,
        max_requests_per_connection,
    );
    if *headers_with_underscores_action != HeadersWithUnderscoresAction::Allow as i32 {
        ctx.error(
            &path.field("headers_with_underscores_action"),
            "only ALLOW is supported by Skiff yet",
        );
    }
    let idle = match idle_timeout {
        None => Some(DEFAULT_CONNECTION_IDLE_TIMEOUT),
        Some(d) => common::duration(ctx, &path.field("idle_timeout"), d).filter(|d| !d.is_zero()),
    };
    let count = max_headers_count
        .as_ref()
        .map_or(DEFAULT_MAX_HEADERS_COUNT, |v| v.value);
    if count == 0 {
        ctx.error(&path.field("max_headers_count"), "must be at least 1");
    }
    (idle, count as usize)
}

fn http1_options(ctx: &mut Ctx, path: &Path, o: &Http1ProtocolOptions) {
    #[allow(deprecated)]
    let Http1ProtocolOptions {
        allow_absolute_url,
        accept_http_10,
        default_host_for_http_10,
        header_key_format,
        enable_trailers,
        allow_chunked_length,
        override_stream_error_on_invalid_http_message,
        send_fully_qualified_url,
        use_balsa_parser: _, // which parser Envoy uses internally; Skiff has its own
        allow_custom_methods,
        ignore_http_11_upgrade,
    } = o;
    reject_unsupported!(
        ctx,
        path,
        allow_absolute_url,
        accept_http_10,
        default_host_for_http_10,
        header_key_format,
        enable_trailers,
        allow_chunked_length,
        override_stream_error_on_invalid_http_message,
        send_fully_qualified_url,
        allow_custom_methods,
        ignore_http_11_upgrade,
    );
}

fn http2_options(ctx: &mut Ctx, path: &Path, o: &Http2ProtocolOptions) -> Http2Settings {
    #[allow(deprecated)]
    let Http2ProtocolOptions {
        hpack_table_size,
        max_concurrent_streams,
        initial_stream_window_size,
        initial_connection_window_size,
        allow_connect,
        allow_metadata,
        max_outbound_frames,
        max_outbound_control_frames,
        max_consecutive_inbound_frames_with_empty_payload,
        max_inbound_priority_frames_per_stream,
        max_inbound_window_update_frames_per_data_frame_sent,
        stream_error_on_invalid_http_messaging,
        override_stream_error_on_invalid_http_message,
        custom_settings_parameters,
        connection_keepalive,
        use_oghttp2_codec,
        max_metadata_size,
        enable_huffman_encoding,
        max_header_field_size_kb,
        disallow_obs_text,
        stream_reset_burst,
        stream_reset_rate,
    } = o;
    reject_unsupported!(
        ctx,
        path,
        hpack_table_size,
        allow_metadata,
        max_outbound_frames,
        max_outbound_control_frames,
        max_consecutive_inbound_frames_with_empty_payload,
        max_inbound_priority_frames_per_stream,
        max_inbound_window_update_frames_per_data_frame_sent,
        stream_error_on_invalid_http_messaging,
        override_stream_error_on_invalid_http_message,
        custom_settings_parameters,
        connection_keepalive,
        use_oghttp2_codec,
        max_metadata_size,
        enable_huffman_encoding,
        max_header_field_size_kb,
        disallow_obs_text,
        stream_reset_burst,
        stream_reset_rate,
    );
    Http2Settings {
        max_concurrent_streams: max_concurrent_streams.as_ref().map(|v| v.value),
        initial_stream_window_size: initial_stream_window_size.as_ref().map(|v| v.value),
        initial_connection_window_size: initial_connection_window_size.as_ref().map(|v| v.value),
        allow_connect: *allow_connect,
    }
}
