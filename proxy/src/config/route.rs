//! Route configurations (`envoy.config.route.v3`): virtual hosts, routes, their matches and
//! actions, and header edits at every level.

use std::{collections::HashSet, sync::Arc, time::Duration};

use bytes::Bytes;
use envoy_types::pb::envoy::config::{
    core::v3::{
        HeaderValueOption as XdsHeaderValueOption, data_source::Specifier,
        header_value_option::HeaderAppendAction,
    },
    route::v3::{
        DirectResponseAction as XdsDirectResponse, RedirectAction as XdsRedirect,
        Route as XdsRoute, RouteAction as XdsRouteAction, RouteConfiguration as XdsRouteConfig,
        RouteMatch as XdsRouteMatch, VirtualHost as XdsVirtualHost, WeightedCluster,
        redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
        route::Action,
        route_action::{ClusterNotFoundResponseCode, ClusterSpecifier, HostRewriteSpecifier},
        route_match::PathSpecifier,
    },
};
use http::{HeaderName, HeaderValue, StatusCode};

use super::{
    common,
    error::{Ctx, Path, reject_unsupported},
    matcher::{self, FullRegex, HeaderMatcher, QueryParameterMatcher, Regex},
    retry::RetryPolicy,
};

/// Envoy's route `timeout` when unset.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A route configuration: virtual hosts and the header edits that apply to all of them.
#[derive(Debug)]
pub struct RouteConfig {
    /// Its name.
    pub name: Arc<str>,
    /// Virtual hosts, in configuration order.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Header edits for every request and response through this configuration.
    pub headers: HeaderEdits,
    /// Match the Host header without its port.
    pub ignore_port_in_host_matching: bool,
    /// Apply header edits from the most specific level last (so it wins), instead of first.
    pub most_specific_header_mutations_wins: bool,
}

/// A virtual host: the domains it serves and its routes.
#[derive(Debug)]
pub struct VirtualHost {
    /// Its name.
    pub name: Arc<str>,
    /// Domains, lowercase: exact, `*suffix`, `prefix*`, or `*`.
    pub domains: Vec<String>,
    /// Routes, tried in order.
    pub routes: Vec<Route>,
    /// Header edits for this virtual host.
    pub headers: HeaderEdits,
    /// `include_request_attempt_count`: upstream requests carry `x-envoy-attempt-count`.
    pub attempt_count_in_request: bool,
    /// `include_attempt_count_in_response`: so do responses.
    pub attempt_count_in_response: bool,
}

/// A route: a match and what to do.
#[derive(Debug)]
pub struct Route {
    /// Its name (may be empty).
    pub name: Arc<str>,
    /// When it applies.
    pub matcher: RouteMatch,
    /// What it does.
    pub action: RouteActionKind,
    /// Header edits for this route.
    pub headers: HeaderEdits,
}

/// `RouteMatch`.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch {
    /// The path test.
    pub path: PathMatch,
    /// Compare paths case-sensitively (default true).
    pub case_sensitive: bool,
    /// Every one must match.
    pub headers: Vec<HeaderMatcher>,
    /// Every one must match.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Only gRPC requests (`content-type: application/grpc...`).
    pub grpc: bool,
}

/// The path part of a route match.
#[derive(Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The path (with its query) starts with this.
    Prefix(String),
    /// The path (without its query) is exactly this.
    Path(String),
    /// The path (without its query) matches this regex as a whole.
    Regex(FullRegex),
    /// The path (without its query) is this, or this followed by `/`.
    SeparatedPrefix(String),
    /// `connect_matcher`: CONNECT requests, which no other path match matches.
    Connect,
}

/// What a route does.
#[derive(Debug)]
pub enum RouteActionKind {
    /// Forward upstream.
    Forward(RouteAction),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    Direct(DirectResponse),
}

/// `RouteAction`: forwarding to a cluster.
#[derive(Debug)]
pub struct RouteAction {
    /// Which cluster.
    pub cluster: ClusterChoice,
    /// The status when the chosen cluster does not exist (Envoy's default 503).
    pub cluster_not_found: StatusCode,
    /// Replace the matched prefix (for prefix and path matches) with this.
    pub prefix_rewrite: Option<String>,
    /// Replace regex matches in the path (without query) with a substitution.
    pub regex_rewrite: Option<(Regex, String)>,
    /// How the Host header is rewritten.
    pub host_rewrite: HostRewrite,
    /// From the end of the request to the end of the response; `None` never times out.
    pub timeout: Option<Duration>,
    /// Overrides the stream idle timeout: `Some(None)` disables it for this route.
    pub idle_timeout: Option<Option<Duration>>,
    /// Upgrades (`websocket`, `connect`, ...) this route allows, lowercase.
    pub upgrades: Vec<String>,
    /// CONNECT requests are terminated here (`connect_config`): the proxy opens a TCP
    /// connection to the upstream host and tunnels the request's bytes over it.
    pub terminate_connect: bool,
    /// How long the whole stream may last (`max_stream_duration`), if limited.
    pub max_stream: Option<MaxStream>,
    /// When a failed attempt is tried again (the route's `retry_policy`, else the virtual
    /// host's).
    pub retry: Option<Arc<RetryPolicy>>,
}

/// `max_stream_duration`: a limit on a stream's whole life, from the request's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxStream {
    /// The limit; `None` when only the gRPC header sets one.
    pub max: Option<Duration>,
    /// `grpc_timeout_header_max`: a request's `grpc-timeout` header sets the limit, capped by
    /// this (`None`: not capped).
    pub grpc_header: Option<Option<Duration>>,
}

// === impl MaxStream ===

impl MaxStream {
    /// The limit for a request carrying `grpc_timeout` (the header's value), as Envoy applies
    /// it: the header when allowed and valid (capped), else `max`.
    pub fn limit(&self, grpc_timeout: Option<&[u8]>) -> Option<Duration> {
        if let Some(cap) = self.grpc_header
            && let Some(t) = grpc_timeout.and_then(parse_grpc_timeout)
        {
            return Some(cap.map_or(t, |c| t.min(c)));
        }
        self.max
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How the cluster of a forwarded request is chosen.
#[derive(Debug)]
pub enum ClusterChoice {
    /// Always this cluster.
    Name(Arc<str>),
    /// The cluster named by this request header.
    Header(HeaderName),
    /// One of these, drawn by weight for each request.
    Weighted(Vec<WeightedChoice>),
}

/// One cluster of a weighted choice.
#[derive(Debug)]
pub struct WeightedChoice {
    /// The cluster.
    pub name: Arc<str>,
    /// Its weight.
    pub weight: u32,
    /// Header edits when it is chosen.
    pub headers: HeaderEdits,
}

/// The Host rewrite of a forwarded request.
#[derive(Debug, PartialEq, Eq)]
pub enum HostRewrite {
    /// Keep the client's Host.
    Keep,
    /// Use this value.
    Literal(HeaderValue),
    /// Use the upstream host's name (DNS clusters), or leave it.
    Auto,
}

/// `RedirectAction`.
#[derive(Debug, PartialEq, Eq)]
pub struct Redirect {
    /// A new scheme (`https_redirect` or `scheme_redirect`).
    pub scheme: Option<String>,
    /// A new host.
    pub host: Option<String>,
    /// A new port.
    pub port: Option<u16>,
    /// A new path.
    pub path: RedirectPath,
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
    /// Drop the query string.
    pub strip_query: bool,
}

/// The path of a redirect.
#[derive(Debug, PartialEq, Eq)]
pub enum RedirectPath {
    /// The request's path.
    Keep,
    /// This path (which may carry its own query).
    Replace(String),
    /// The matched prefix replaced with this.
    Prefix(String),
}

/// `DirectResponseAction`.
#[derive(Debug, PartialEq, Eq)]
pub struct DirectResponse {
    /// The status.
    pub status: StatusCode,
    /// The body, if any.
    pub body: Option<Bytes>,
}

/// Header additions and removals at one level (route config, virtual host, route, cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Added to requests.
    pub request_add: Vec<HeaderAdd>,
    /// Removed from requests.
    pub request_remove: Vec<HeaderName>,
    /// Added to responses.
    pub response_add: Vec<HeaderAdd>,
    /// Removed from responses.
    pub response_remove: Vec<HeaderName>,
}

/// One header to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderAdd {
    /// The header.
    pub name: HeaderName,
    /// Its value.
    pub value: HeaderValue,
    /// How it combines with existing values.
    pub action: AppendAction,
    /// Add it even when the value is empty.
    pub keep_empty: bool,
}

/// `HeaderValueOption.HeaderAppendAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendAction {
    /// Add another value, keeping existing ones.
    AppendIfExistsOrAdd,
    /// Add only when the header is absent.
    AddIfAbsent,
    /// Replace existing values, or add.
    OverwriteIfExistsOrAdd,
    /// Replace existing values; never add.
    OverwriteIfExists,
}

// === impl RouteConfig ===

impl RouteConfig {
    /// Converts a `RouteConfiguration`; `clusters` lists the cluster names that exist when the
    /// configuration must validate them (static configs), or is `None`.
    pub(crate) fn convert(
        ctx: &mut Ctx,
        path: &Path,
        rc: &XdsRouteConfig,
        clusters: Option<&HashSet<&str>>,
    ) -> Option<Self> {
        let before = ctx.count();
        let XdsRouteConfig {
            name,
            virtual_hosts,
            vhds,
            internal_only_headers,
            response_headers_to_add,
            response_headers_to_remove,
            request_headers_to_add,
            request_headers_to_remove,
            most_specific_header_mutations_wins,
            validate_clusters,
            max_direct_response_body_size_bytes,
            cluster_specifier_plugins,
            request_mirror_policies,
            ignore_port_in_host_matching,
            vhost_header,
            ignore_path_parameters_in_path_matching,
            typed_per_filter_config,
            metadata: _, // opaque to the data path
            route_specifiers,
        } = rc;
        reject_unsupported!(
            ctx,
            path,
            vhds,
            internal_only_headers,
            cluster_specifier_plugins,
            request_mirror_policies,
            vhost_header,
            ignore_path_parameters_in_path_matching,
            typed_per_filter_config,
            route_specifiers,
        );
        let max_body = max_direct_response_body_size_bytes
            .as_ref()
            .map_or(4096, |v| v.value as usize);
        // Envoy validates the clusters of inline (static) route configurations by default.
        let clusters = match validate_clusters {
            Some(v) if !v.value => None,
            _ => clusters,
        };
        let headers = HeaderEdits::convert(
            ctx,
            path,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
        );
        let vp = path.field("virtual_hosts");
        let virtual_hosts: Vec<VirtualHost> = virtual_hosts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| VirtualHost::convert(ctx, &vp.index(i), v, clusters, max_body))
            .collect();
        check_unique_domains(ctx, &vp, &virtual_hosts);
        (ctx.count() == before).then(|| RouteConfig {
            name: name.as_str().into(),
            virtual_hosts,
            headers,
            ignore_port_in_host_matching: *ignore_port_in_host_matching,
            most_specific_header_mutations_wins: *most_specific_header_mutations_wins,
        })
    }
}

impl RouteConfig {
    /// Parses and converts a `RouteConfiguration` document (YAML or JSON). Cluster references
    /// are not checked: the clusters are not known here.
    pub fn from_text(
        schema: &super::Schema,
        text: &str,
        format: super::Format,
    ) -> Result<Self, super::ConfigErrors> {
        let proto: XdsRouteConfig = schema.parse(text, format)?;
        let mut ctx = Ctx::default();
        let rc = Self::convert(&mut ctx, &Path::root(), &proto, None);
        ctx.finish(rc)
    }

    /// [`RouteConfig::from_text`] for YAML written in tests, panicking on any error.
    #[cfg(test)]
    pub(crate) fn from_yaml_for_tests(yaml: &str) -> Self {
        Self::from_text(&super::Schema::load(), yaml, super::Format::Yaml)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn check_unique_domains(ctx: &mut Ctx, path: &Path, vhosts: &[VirtualHost]) {
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    for (i, v) in vhosts.iter().enumerate() {
        for d in &v.domains {
            if let Some(first) = seen.insert(d, i)
                && first != i
            {
                ctx.error(
                    &path.index(i).field("domains"),
                    format!(
                        "only unique values for domains are permitted: '{d}' is also in \
                         virtual_hosts[{first}]"
                    ),
                );
            }
        }
    }
}

// === impl VirtualHost ===

impl VirtualHost {
    fn convert(
        ctx: &mut Ctx,
        path: &Path,
        v: &XdsVirtualHost,
        clusters: Option<&HashSet<&str>>,
        max_body: usize,
    ) -> Option<Self> {
        let before = ctx.count();
        let XdsVirtualHost {
            name,
            domains,
            routes,
            matcher,
            require_tls,
            virtual_clusters,
            rate_limits,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            cors,
            typed_per_filter_config,
            include_request_attempt_count,
            include_attempt_count_in_response,
            retry_policy,
            retry_policy_typed_config,
            hedge_policy,
            include_is_timeout_retry_header,
            per_request_buffer_limit_bytes,
            request_body_buffer_limit,
            request_mirror_policies,
            metadata: _, // opaque to the data path
            route_specifiers,
        } = v;
        reject_unsupported!(
            ctx,
            path,
            matcher,
            require_tls,
            virtual_clusters,
            rate_limits,
            cors,
            typed_per_filter_config,
            retry_policy_typed_config,
            hedge_policy,
            include_is_timeout_retry_header,
            per_request_buffer_limit_bytes,
            request_body_buffer_limit,
            request_mirror_policies,
            route_specifiers,
        );
        if name.is_empty() {
            ctx.error(&path.field("name"), "a virtual host name is required");
        }
        if domains.is_empty() {
            ctx.error(&path.field("domains"), "at least one domain is required");
        }
        for (i, d) in domains.iter().enumerate() {
            let stars = d.matches('*').count();
            let valid = !d.is_empty()
                && (stars == 0
                    || d == "*"
                    || (stars == 1 && (d.starts_with('*') || d.ends_with('*'))));
            if !valid {
                ctx.error(
                    &path.field("domains").index(i),
                    format!(
                        "'{d}' is not a domain: use an exact name, '*suffix', 'prefix*' or '*'"
                    ),
                );
            }
        }
        let headers = HeaderEdits::convert(
            ctx,
            path,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
        );
        let rp = path.field("routes");
        let mut routes: Vec<Route> = routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Route::convert(ctx, &rp.index(i), r, clusters, max_body))
            .collect();
        // A route without its own retry policy takes the virtual host's.
        if let Some(p) = retry_policy
            .as_ref()
            .and_then(|p| RetryPolicy::convert(ctx, &path.field("retry_policy"), p))
        {
            let p = Arc::new(p);
            for r in &mut routes {
                if let RouteActionKind::Forward(a) = &mut r.action
                    && a.retry.is_none()
                {
                    a.retry = Some(p.clone());
                }
            }
        }
        (ctx.count() == before).then(|| VirtualHost {
            name: name.as_str().into(),
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            routes,
            headers,
            attempt_count_in_request: include_request_attempt_count.to_owned(),
            attempt_count_in_response: include_attempt_count_in_response.to_owned(),
        })
    }
}

// === impl Route ===

impl Route {
    fn convert(
        ctx: &mut Ctx,
        path: &Path,
        r: &XdsRoute,
        clusters: Option<&HashSet<&str>>,
        max_body: usize,
    ) -> Option<Self> {
        let before = ctx.count();
        let XdsRoute {
            name,
            metadata: _, // opaque to the data path
            decorator,
            typed_per_filter_config,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            tracing,
            per_request_buffer_limit_bytes,
            stat_prefix: _, // stats naming only
            request_body_buffer_limit,
            route_specifiers,
            action,
            r#match: route_match,
        } = r;
        // The decorator names the span of a trace; Skiff has no tracer.
        let _ = decorator;
        per_filter_config(
            ctx,
            &path.field("typed_per_filter_config"),
            typed_per_filter_config,
        );
        reject_unsupported!(
            ctx,
            path,
            tracing,
            per_request_buffer_limit_bytes,
            request_body_buffer_limit,
            route_specifiers,
        );
        let matcher = match route_match {
            Some(m) => RouteMatch::convert(ctx, &path.field("match"), m),
            None => {
                ctx.error(&path.field("match"), "a route needs a match");
                None
            }
        };
        let action = match action {
            Some(Action::Route(a)) => RouteAction::convert(ctx, &path.field("route"), a, clusters)
                .map(RouteActionKind::Forward),
            Some(Action::Redirect(a)) => {
                Redirect::convert(ctx, &path.field("redirect"), a).map(RouteActionKind::Redirect)
            }
            Some(Action::DirectResponse(a)) => {
                DirectResponse::convert(ctx, &path.field("direct_response"), a, max_body)
                    .map(RouteActionKind::Direct)
            }
            Some(Action::FilterAction(_)) => {
                ctx.error(&path.field("filter_action"), "not supported by Skiff");
                None
            }
            Some(Action::NonForwardingAction(_)) => {
                ctx.error(
                    &path.field("non_forwarding_action"),
                    "not supported by Skiff",
                );
                None
            }
            None => {
                ctx.error(
                    path,
                    "a route needs one of route, redirect or direct_response",
                );
                None
            }
        };
        let headers = HeaderEdits::convert(
            ctx,
            path,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
        );
        let (matcher, action) = (matcher?, action?);
        (ctx.count() == before).then(|| Route {
            name: name.as_str().into(),
            matcher,
            action,
            headers,
        })
    }
}

// === impl RouteMatch ===

impl RouteMatch {
    fn convert(ctx: &mut Ctx, path: &Path, m: &XdsRouteMatch) -> Option<Self> {
        let XdsRouteMatch {
            case_sensitive,
            runtime_fraction,
            headers,
            query_parameters,
            cookies,
            grpc,
            tls_context,
            dynamic_metadata,
            filter_state,
            path_specifier,
        } = m;
        reject_unsupported!(
            ctx,
            path,
            runtime_fraction,
            cookies,
            tls_context,
            dynamic_metadata,
            filter_state
        );
        let path_match = match path_specifier {
            Some(PathSpecifier::Prefix(p)) => Some(PathMatch::Prefix(p.clone())),
            Some(PathSpecifier::Path(p)) => Some(PathMatch::Path(p.clone())),
            Some(PathSpecifier::SafeRegex(r)) => {
                matcher::full_regex(ctx, &path.field("safe_regex"), r).map(PathMatch::Regex)
            }
            Some(PathSpecifier::PathSeparatedPrefix(p)) => {
                let bad = p.contains(['?', '#']) || p.ends_with('/');
                if bad {
                    ctx.error(
                        &path.field("path_separated_prefix"),
                        format!("'{p}' must not contain '?' or '#' nor end with '/'"),
                    );
                    None
                } else {
                    Some(PathMatch::SeparatedPrefix(p.clone()))
                }
            }
            Some(PathSpecifier::ConnectMatcher(_)) => Some(PathMatch::Connect),
            Some(PathSpecifier::PathMatchPolicy(p)) => {
                ctx.error(
                    &path.field("path_match_policy"),
                    format!("path match policy '{}' is not supported by Skiff", p.name),
                );
                None
            }
            None => {
                ctx.error(
                    path,
                    "a route match needs one of prefix, path, safe_regex or path_separated_prefix",
                );
                None
            }
        };
        let case_sensitive = case_sensitive.as_ref().is_none_or(|b| b.value);
        let path_match = path_match.map(|p| match p {
            // Lowercase the pattern once; requests are compared case-insensitively.
            PathMatch::Prefix(s) if !case_sensitive => PathMatch::Prefix(s.to_ascii_lowercase()),
            PathMatch::Path(s) if !case_sensitive => PathMatch::Path(s.to_ascii_lowercase()),
            PathMatch::SeparatedPrefix(s) if !case_sensitive => {
                PathMatch::SeparatedPrefix(s.to_ascii_lowercase())
            }
            other => other,
        });
        let hp = path.field("headers");
        let headers: Vec<_> = headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| matcher::header_matcher(ctx, &hp.index(i), h))
            .collect();
        let qp = path.field("query_parameters");
        let query_parameters: Vec<_> = query_parameters
            .iter()
            .enumerate()
            .filter_map(|(i, q)| matcher::query_matcher(ctx, &qp.index(i), q))
            .collect();
        let grpc = grpc.is_some();
        Some(RouteMatch {
            path: path_match?,
            case_sensitive,
            headers,
            query_parameters,
            grpc,
        })
    }
}

// === impl RouteAction ===

impl RouteAction {
    fn convert(
        ctx: &mut Ctx,
        path: &Path,
        a: &XdsRouteAction,
        clusters: Option<&HashSet<&str>>,
    ) -> Option<Self> {
        let before = ctx.count();
        let XdsRouteAction {
            cluster_not_found_response_code,
            metadata_match,
            prefix_rewrite,
            regex_rewrite,
            path_rewrite_policy,
            path_rewrite,
            append_x_forwarded_host,
            timeout,
            idle_timeout,
            flush_timeout,
            early_data_policy,
            retry_policy,
            retry_policy_typed_config,
            request_mirror_policies,
            priority,
            rate_limits,
            include_vh_rate_limits,
            hash_policy,
            cors,
            max_grpc_timeout,
            grpc_timeout_offset,
            upgrade_configs,
            internal_redirect_policy,
            internal_redirect_action,
            max_internal_redirects,
            hedge_policy,
            max_stream_duration,
            cluster_specifier,
            host_rewrite_specifier,
        } = a;
        reject_unsupported!(
            ctx,
            path,
            metadata_match,
            path_rewrite_policy,
            path_rewrite,
            append_x_forwarded_host,
            flush_timeout,
            early_data_policy,
            retry_policy_typed_config,
            request_mirror_policies,
            priority,
            rate_limits,
            include_vh_rate_limits,
            hash_policy,
            cors,
            max_grpc_timeout,
            grpc_timeout_offset,
            internal_redirect_policy,
            internal_redirect_action,
            max_internal_redirects,
            hedge_policy,
        );
        let check_cluster = |ctx: &mut Ctx, p: &Path, name: &str| {
            if let Some(known) = clusters
                && !known.contains(name)
            {
                ctx.error(
                    p,
                    format!("route references cluster '{name}', which is not defined"),
                );
            }
        };
        let cluster = match cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                check_cluster(ctx, &path.field("cluster"), c);
                Some(ClusterChoice::Name(c.as_str().into()))
            }
            Some(ClusterSpecifier::ClusterHeader(h)) if !h.is_empty() => {
                matcher::header_name(ctx, &path.field("cluster_header"), h)
                    .map(ClusterChoice::Header)
            }
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                weighted(ctx, &path.field("weighted_clusters"), w, &check_cluster)
            }
            Some(ClusterSpecifier::Cluster(_) | ClusterSpecifier::ClusterHeader(_)) => {
                ctx.error(path, "the cluster name is empty");
                None
            }
            Some(
                ClusterSpecifier::ClusterSpecifierPlugin(_)
                | ClusterSpecifier::InlineClusterSpecifierPlugin(_),
            ) => {
                ctx.error(path, "cluster specifier plugins are not supported by Skiff");
                None
            }
            None => {
                ctx.error(
                    path,
                    "one of cluster, cluster_header or weighted_clusters is required",
                );
                None
            }
        };
        let cluster_not_found =
            match ClusterNotFoundResponseCode::try_from(*cluster_not_found_response_code) {
                Ok(ClusterNotFoundResponseCode::ServiceUnavailable) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Ok(ClusterNotFoundResponseCode::NotFound) => StatusCode::NOT_FOUND,
                Ok(ClusterNotFoundResponseCode::InternalServerError) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                Err(_) => {
                    ctx.error(
                        &path.field("cluster_not_found_response_code"),
                        format!("unknown value {cluster_not_found_response_code}"),
                    );
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
        let regex_rewrite = regex_rewrite.as_ref().and_then(|r| {
            let rp = path.field("regex_rewrite");
            let pattern = r.pattern.as_ref().or_else(|| {
                ctx.error(&rp.field("pattern"), "a pattern is required");
                None
            })?;
            let regex = matcher::search_regex(ctx, &rp.field("pattern"), pattern)?;
            Some((regex, rust_substitution(&r.substitution)))
        });
        if !prefix_rewrite.is_empty() && regex_rewrite.is_some() {
            ctx.error(
                &path.field("regex_rewrite"),
                "prefix_rewrite and regex_rewrite cannot both be set",
            );
        }
        let host_rewrite = match host_rewrite_specifier {
            None => HostRewrite::Keep,
            Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => match HeaderValue::from_str(h) {
                Ok(v) if !h.is_empty() => HostRewrite::Literal(v),
                _ => {
                    ctx.error(
                        &path.field("host_rewrite_literal"),
                        format!("'{h}' is not a valid Host value"),
                    );
                    HostRewrite::Keep
                }
            },
            Some(HostRewriteSpecifier::AutoHostRewrite(b)) if b.value => HostRewrite::Auto,
            Some(HostRewriteSpecifier::AutoHostRewrite(_)) => HostRewrite::Keep,
            Some(HostRewriteSpecifier::HostRewriteHeader(_)) => {
                ctx.error(
                    &path.field("host_rewrite_header"),
                    "not supported by Skiff yet",
                );
                HostRewrite::Keep
            }
            Some(HostRewriteSpecifier::HostRewritePathRegex(_)) => {
                ctx.error(
                    &path.field("host_rewrite_path_regex"),
                    "not supported by Skiff yet",
                );
                HostRewrite::Keep
            }
            Some(HostRewriteSpecifier::HostRewrite(_)) => {
                ctx.error(&path.field("host_rewrite"), "not supported by Skiff yet");
                HostRewrite::Keep
            }
        };
        // A timeout of 0s disables it; unset means Envoy's 15s.
        let timeout = match timeout {
            None => Some(DEFAULT_ROUTE_TIMEOUT),
            Some(d) => common::duration(ctx, &path.field("timeout"), d).filter(|d| !d.is_zero()),
        };
        // Unset: the connection manager's stream idle timeout; 0s: none for this route.
        let idle_timeout = idle_timeout.as_ref().map(|d| {
            common::duration(ctx, &path.field("idle_timeout"), d).filter(|d| !d.is_zero())
        });
        let mut upgrades = Vec::new();
        let mut terminate_connect = false;
        for (i, u) in upgrade_configs.iter().enumerate() {
            let up = path.field("upgrade_configs").index(i);
            let kind = u.upgrade_type.to_ascii_lowercase();
            if let Some(cc) = &u.connect_config {
                let cp = up.field("connect_config");
                if kind != "connect" {
                    ctx.error(
                        &cp,
                        format!("only for upgrade_type CONNECT, not '{}'", u.upgrade_type),
                    );
                }
                let proxy_protocol_config = &cc.proxy_protocol_config;
                let allow_post = &cc.allow_post;
                reject_unsupported!(ctx, &cp, proxy_protocol_config, allow_post);
                terminate_connect = true;
            }
            if u.enabled.as_ref().is_none_or(|b| b.value) {
                upgrades.push(kind);
            }
        }
        let cluster = cluster?;
        let max_stream = max_stream_duration
            .as_ref()
            .and_then(|m| MaxStream::convert(ctx, &path.field("max_stream_duration"), m));
        let retry = retry_policy
            .as_ref()
            .and_then(|p| RetryPolicy::convert(ctx, &path.field("retry_policy"), p))
            .map(Arc::new);
        (ctx.count() == before).then(|| RouteAction {
            cluster,
            cluster_not_found,
            prefix_rewrite: (!prefix_rewrite.is_empty()).then(|| prefix_rewrite.clone()),
            regex_rewrite,
            host_rewrite,
            timeout,
            idle_timeout,
            upgrades,
            terminate_connect,
            max_stream,
            retry,
        })
    }
}

impl MaxStream {
    fn convert(
        ctx: &mut Ctx,
        path: &Path,
        m: &envoy_types::pb::envoy::config::route::v3::route_action::MaxStreamDuration,
    ) -> Option<Self> {
        let envoy_types::pb::envoy::config::route::v3::route_action::MaxStreamDuration {
            max_stream_duration,
            grpc_timeout_header_max,
            grpc_timeout_header_offset,
        } = m;
        reject_unsupported!(ctx, path, grpc_timeout_header_offset);
        let nonzero =
            |ctx: &mut Ctx,
             field: &str,
             d: &Option<envoy_types::pb::google::protobuf::Duration>| {
                d.as_ref()
                    .and_then(|d| common::duration(ctx, &path.field(field), d))
                    .filter(|d| !d.is_zero())
            };
        let max = nonzero(ctx, "max_stream_duration", max_stream_duration);
        let grpc_header = grpc_timeout_header_max
            .is_some()
            .then(|| nonzero(ctx, "grpc_timeout_header_max", grpc_timeout_header_max));
        (max.is_some() || grpc_header.is_some()).then_some(MaxStream { max, grpc_header })
    }
}

/// Per-route filter configs: only those of filters that do nothing in Skiff's data path are
/// accepted (Istio's HBONE `connect_authority`); any other one would change what a filter
/// Skiff does not run does, so it is rejected.
fn per_filter_config(
    ctx: &mut Ctx,
    path: &Path,
    configs: &std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>,
) {
    for (name, any) in configs {
        let p = path.field(name);
        let type_name = common::any_type_name(any);
        let inner =
            if type_name == "udpa.type.v1.TypedStruct" || type_name == "xds.type.v3.TypedStruct" {
                common::unpack::<super::TypedStruct>(ctx, &p, any).map(|t| t.type_url)
            } else {
                None
            };
        let ok = inner
            .as_deref()
            .is_some_and(|t| common::type_name(t) == "io.istio.http.connect_authority.Config");
        if !ok {
            ctx.error(
                &p,
                format!(
                    "per-route config for filter '{name}' ({}) is not supported by Skiff",
                    inner.as_deref().map_or(type_name, common::type_name)
                ),
            );
        }
    }
}

/// Envoy (RE2) writes capture groups as `\1`; Rust's regex writes `${1}`.
fn rust_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                out.push(chars.next().unwrap_or('0'));
                out.push('}');
            }
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                out.push('\\');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn weighted(
    ctx: &mut Ctx,
    path: &Path,
    w: &WeightedCluster,
    check_cluster: &dyn Fn(&mut Ctx, &Path, &str),
) -> Option<ClusterChoice> {
    #[allow(deprecated)] // total_weight is deprecated but still honoured when set
    let WeightedCluster {
        clusters,
        total_weight,
        runtime_key_prefix,
        random_value_specifier,
    } = w;
    reject_unsupported!(ctx, path, runtime_key_prefix, random_value_specifier);
    let cp = path.field("clusters");
    if clusters.is_empty() {
        ctx.error(&cp, "at least one cluster is required");
        return None;
    }
    let mut out = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        let p = cp.index(i);
        let cluster_header = &c.cluster_header;
        let metadata_match = &c.metadata_match;
        let typed_per_filter_config = &c.typed_per_filter_config;
        let host_rewrite_specifier = &c.host_rewrite_specifier;
        reject_unsupported!(
            ctx,
            &p,
            cluster_header,
            metadata_match,
            typed_per_filter_config,
            host_rewrite_specifier
        );
        if c.name.is_empty() {
            ctx.error(&p.field("name"), "the cluster name is empty");
            continue;
        }
        check_cluster(ctx, &p.field("name"), &c.name);
        let headers = HeaderEdits::convert(
            ctx,
            &p,
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            &c.response_headers_to_add,
            &c.response_headers_to_remove,
        );
        out.push(WeightedChoice {
            name: c.name.as_str().into(),
            weight: c.weight.as_ref().map_or(0, |w| w.value),
            headers,
        });
    }
    let sum: u64 = out.iter().map(|c| u64::from(c.weight)).sum();
    if sum == 0 {
        ctx.error(&cp, "the weights add up to 0");
    }
    if let Some(total) = total_weight
        && u64::from(total.value) != sum
    {
        ctx.error(
            &path.field("total_weight"),
            format!(
                "is {}, but the cluster weights add up to {sum}",
                total.value
            ),
        );
    }
    Some(ClusterChoice::Weighted(out))
}

// === impl Redirect ===

impl Redirect {
    fn convert(ctx: &mut Ctx, path: &Path, r: &XdsRedirect) -> Option<Self> {
        let XdsRedirect {
            host_redirect,
            port_redirect,
            response_code,
            strip_query,
            scheme_rewrite_specifier,
            path_rewrite_specifier,
        } = r;
        let scheme = match scheme_rewrite_specifier {
            Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
            Some(SchemeRewriteSpecifier::HttpsRedirect(false)) | None => None,
            Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
        };
        let port = if *port_redirect == 0 {
            None
        } else {
            match u16::try_from(*port_redirect) {
                Ok(p) => Some(p),
                Err(_) => {
                    ctx.error(
                        &path.field("port_redirect"),
                        format!("{port_redirect} is out of range"),
                    );
                    None
                }
            }
        };
        let redirect_path = match path_rewrite_specifier {
            None => RedirectPath::Keep,
            Some(PathRewriteSpecifier::PathRedirect(p)) => RedirectPath::Replace(p.clone()),
            Some(PathRewriteSpecifier::PrefixRewrite(p)) => RedirectPath::Prefix(p.clone()),
            Some(PathRewriteSpecifier::RegexRewrite(_)) => {
                ctx.error(&path.field("regex_rewrite"), "not supported by Skiff yet");
                return None;
            }
            Some(PathRewriteSpecifier::PathRewrite(_)) => {
                ctx.error(&path.field("path_rewrite"), "not supported by Skiff yet");
                return None;
            }
        };
        let status = match RedirectResponseCode::try_from(*response_code) {
            Ok(RedirectResponseCode::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
            Ok(RedirectResponseCode::Found) => StatusCode::FOUND,
            Ok(RedirectResponseCode::SeeOther) => StatusCode::SEE_OTHER,
            Ok(RedirectResponseCode::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
            Ok(RedirectResponseCode::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
            Err(_) => {
                ctx.error(
                    &path.field("response_code"),
                    format!("unknown value {response_code}"),
                );
                return None;
            }
        };
        Some(Redirect {
            scheme,
            host: (!host_redirect.is_empty()).then(|| host_redirect.clone()),
            port,
            path: redirect_path,
            status,
            strip_query: *strip_query,
        })
    }
}

// === impl DirectResponse ===

impl DirectResponse {
    fn convert(ctx: &mut Ctx, path: &Path, d: &XdsDirectResponse, max_body: usize) -> Option<Self> {
        let XdsDirectResponse {
            status,
            body,
            body_format,
        } = d;
        reject_unsupported!(ctx, path, body_format);
        let status = match u16::try_from(*status)
            .ok()
            .filter(|s| (200..600).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
        {
            Some(s) => s,
            None => {
                ctx.error(
                    &path.field("status"),
                    format!("{status} is not an HTTP status from 200 to 599"),
                );
                return None;
            }
        };
        let body = match body.as_ref().and_then(|b| b.specifier.as_ref()) {
            None => None,
            Some(Specifier::InlineString(s)) => Some(Bytes::from(s.clone())),
            Some(Specifier::InlineBytes(b)) => Some(Bytes::from(b.clone())),
            Some(Specifier::Filename(f)) => match std::fs::read(f) {
                Ok(b) => Some(Bytes::from(b)),
                Err(e) => {
                    ctx.error(
                        &path.field("body").field("filename"),
                        format!("cannot read '{f}': {e}"),
                    );
                    return None;
                }
            },
            Some(Specifier::EnvironmentVariable(v)) => match std::env::var(v) {
                Ok(s) => Some(Bytes::from(s)),
                Err(_) => {
                    ctx.error(
                        &path.field("body").field("environment_variable"),
                        format!("environment variable '{v}' is not set"),
                    );
                    return None;
                }
            },
        };
        if let Some(b) = &body
            && b.len() > max_body
        {
            ctx.error(
                &path.field("body"),
                format!(
                    "the body is {} bytes, over max_direct_response_body_size_bytes ({max_body})",
                    b.len()
                ),
            );
            return None;
        }
        Some(DirectResponse { status, body })
    }
}

// === impl HeaderEdits ===

impl HeaderEdits {
    fn convert(
        ctx: &mut Ctx,
        path: &Path,
        req_add: &[XdsHeaderValueOption],
        req_remove: &[String],
        resp_add: &[XdsHeaderValueOption],
        resp_remove: &[String],
    ) -> Self {
        let adds = |ctx: &mut Ctx, field: &str, list: &[XdsHeaderValueOption], request: bool| {
            let p = path.field(field);
            list.iter()
                .enumerate()
                .filter_map(|(i, h)| header_add(ctx, &p.index(i), h, request))
                .collect()
        };
        let removes = |ctx: &mut Ctx, field: &str, list: &[String], request: bool| {
            let p = path.field(field);
            list.iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let hp = p.index(i);
                    let name = matcher::header_name(ctx, &hp, h)?;
                    protected(ctx, &hp, &name, request).then_some(name)
                })
                .collect()
        };
        HeaderEdits {
            request_add: adds(ctx, "request_headers_to_add", req_add, true),
            request_remove: removes(ctx, "request_headers_to_remove", req_remove, true),
            response_add: adds(ctx, "response_headers_to_add", resp_add, false),
            response_remove: removes(ctx, "response_headers_to_remove", resp_remove, false),
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// Envoy refuses edits of pseudo-headers, and of `host` in requests: they are not headers to
/// add or remove but parts of the request line. Returns whether `name` may be edited.
fn protected(ctx: &mut Ctx, path: &Path, name: &HeaderName, request: bool) -> bool {
    if request && name == http::header::HOST {
        ctx.error(
            path,
            "'host' cannot be added or removed this way (use host_rewrite_literal)",
        );
        return false;
    }
    true
}

#[allow(deprecated)] // `append` is deprecated, replaced by append_action
fn header_add(
    ctx: &mut Ctx,
    path: &Path,
    h: &XdsHeaderValueOption,
    request: bool,
) -> Option<HeaderAdd> {
    let XdsHeaderValueOption {
        header,
        append,
        append_action,
        keep_empty_value,
    } = h;
    let Some(header) = header else {
        ctx.error(&path.field("header"), "a header is required");
        return None;
    };
    let hp = path.field("header");
    if header.key.starts_with(':') {
        ctx.error(
            &hp.field("key"),
            format!("pseudo-header '{}' cannot be added", header.key),
        );
        return None;
    }
    let name = matcher::header_name(ctx, &hp.field("key"), &header.key)?;
    if !protected(ctx, &hp.field("key"), &name, request) {
        return None;
    }
    let raw: &[u8] = if header.raw_value.is_empty() {
        header.value.as_bytes()
    } else {
        &header.raw_value
    };
    if raw.contains(&b'%') && !is_literal_percent_value(raw) {
        ctx.error(
            &hp.field("value"),
            format!(
                "'{}' uses a %COMMAND% operator; header value formatting is not supported by \
                 Skiff yet",
                String::from_utf8_lossy(raw)
            ),
        );
        return None;
    }
    let value = match HeaderValue::from_bytes(&unescape_percent(raw)) {
        Ok(v) => v,
        Err(_) => {
            ctx.error(&hp.field("value"), "not a valid header value");
            return None;
        }
    };
    let action = match (append, HeaderAppendAction::try_from(*append_action)) {
        (Some(_), Ok(a)) if a != HeaderAppendAction::AppendIfExistsOrAdd => {
            ctx.error(path, "append and append_action cannot both be set");
            return None;
        }
        (Some(a), _) if a.value => AppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AppendIfExistsOrAdd)) => AppendAction::AppendIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => {
            AppendAction::OverwriteIfExistsOrAdd
        }
        (None, Ok(HeaderAppendAction::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
        (None, Err(_)) => {
            ctx.error(
                &path.field("append_action"),
                format!("unknown value {append_action}"),
            );
            return None;
        }
    };
    Some(HeaderAdd {
        name,
        value,
        action,
        keep_empty: *keep_empty_value,
    })
}

/// `%%` is Envoy's escape for a literal `%`; any other `%` starts a command operator.
fn is_literal_percent_value(raw: &[u8]) -> bool {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            if raw.get(i + 1) != Some(&b'%') {
                return false;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    true
}

fn unescape_percent(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        out.push(raw[i]);
        i += if raw[i] == b'%' { 2 } else { 1 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_substitutions_become_rust_ones() {
        assert_eq!(rust_substitution(r"/v2/\1/x"), "/v2/${1}/x");
        assert_eq!(rust_substitution(r"\\1 $5"), r"\1 $$5");
    }

    #[test]
    fn percent_escapes() {
        assert!(is_literal_percent_value(b"100%% sure"));
        assert!(!is_literal_percent_value(b"%DOWNSTREAM_REMOTE_ADDRESS%"));
        assert_eq!(unescape_percent(b"100%% sure"), b"100% sure");
    }
}
