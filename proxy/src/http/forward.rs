//! One request through the router: route, rewrite, pick a host, send, and shape the response.
//!
//! Hot path: runs for every request. Decisions come from the pure route table; the only awaits
//! are the upstream send and (for upgrades) the tunnel.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
    uri::{Authority, PathAndQuery, Scheme},
};
use hyper::body::Incoming;
use smallvec::SmallVec;

use super::{
    ConnInfo, HttpManager,
    body::{Direction, ProxyBody},
    headers::{self, X_REQUEST_ID},
    local_reply::LocalReply,
    pool::{ConnectSettings, SendError, UpstreamProtocol},
    route::{Decision, RequestFacts, path_only, strip_port},
    timers::{Expired, StreamTimers},
};
use crate::{
    addr::OrigDst,
    cluster::NoHost,
    config::Refusal,
    config::{
        ClusterChoice, DirectResponse, HostPort, HostRewrite, Redirect, RedirectPath, Route,
        RouteAction, RouteActionKind, RouteConfig, RouteSource, ServerHeader, StripPort,
        UpstreamProtocolConfig, VirtualHost, WeightedChoice,
    },
    flags::ResponseFlag,
    snapshot::Snapshot,
};

/// What happened to a request, for logs (and later access logs and metrics).
#[derive(Debug)]
pub struct Outcome {
    /// The status sent downstream.
    pub status: StatusCode,
    /// The cluster, if one was chosen.
    pub cluster: Option<Arc<str>>,
    /// Why the proxy answered itself, if it did.
    pub flag: Option<ResponseFlag>,
}

/// Routes and forwards one request.
pub async fn handle(
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    mgr: &HttpManager,
    snapshot: &Snapshot,
) -> (Response<ProxyBody>, Outcome) {
    let config = &mgr.config;
    if let Some(why) = config.filters.refusal {
        // An enforcing filter Skiff cannot run: fail closed, as a denial would.
        crate::refusals::count(why);
        let flag = match why {
            Refusal::ExtAuthz => ResponseFlag::UnauthorizedExternalService,
            _ => ResponseFlag::RbacAccessDenied,
        };
        return local(mgr, &req, flag, None);
    }
    if config.normalize_path
        && let Some(normal) = normalized(req.uri())
    {
        *req.uri_mut() = normal;
    }
    // Cheap handles (reference-counted bytes) on the parts routing reads, so the request can
    // be changed while they are in use.
    let uri = req.uri().clone();
    let host_header = req.headers().get(header::HOST).cloned();
    let authority = uri
        .authority()
        .map(Authority::as_str)
        .or_else(|| host_header.as_ref().and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let host_for_routing = match config.strip_port {
        StripPort::None => authority,
        StripPort::Any => strip_port(authority),
        StripPort::Matching => {
            let stripped = strip_port(authority);
            let port = authority[stripped.len()..].trim_start_matches(':');
            if port.parse::<u16>().ok() == Some(conn.destination.port()) {
                stripped
            } else {
                authority
            }
        }
    };
    let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    prepare_request_headers(req.headers_mut(), conn, mgr);

    let table = match (&mgr.routes, &config.routes) {
        (Some(table), _) => table,
        (None, RouteSource::Rds { name, .. }) => match snapshot.route_table(name) {
            Some(table) => table,
            None => return local(mgr, &req, ResponseFlag::NoRouteFound, None),
        },
        (None, RouteSource::Static(_)) => {
            return local(mgr, &req, ResponseFlag::NoRouteFound, None);
        }
    };
    let rc = &*table.config;
    let decision = table.route(&RequestFacts {
        method: req.method(),
        authority: host_for_routing,
        path,
        headers: req.headers(),
    });
    let (vh, route) = match decision {
        Decision::Route(vh, route) => (vh, route),
        Decision::NoRoute => return local(mgr, &req, ResponseFlag::NoRouteFound, None),
    };
    let routed = Routed { mgr, rc, vh, route };
    match &route.action {
        RouteActionKind::Direct(d) => direct(mgr, rc, &req, vh, route, d),
        RouteActionKind::Redirect(r) => redirect(&routed, &req, r, authority, path),
        RouteActionKind::Forward(action) => {
            forward(req, conn, &routed, snapshot, action, authority, path).await
        }
    }
}

/// The URI with `.` and `..` segments of its path resolved (RFC 3986, 5.2.4), or `None` when
/// there is nothing to resolve. `normalize_path` in Envoy: routing and the upstream see the
/// resolved path.
fn normalized(uri: &http::Uri) -> Option<http::Uri> {
    let path = uri.path();
    let has_dots = path
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    if !has_dots {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut resolved = String::with_capacity(path.len());
    for segment in &out {
        resolved.push('/');
        resolved.push_str(segment);
    }
    if resolved.is_empty() {
        resolved.push('/');
    }
    if let Some(q) = uri.query() {
        resolved.push('?');
        resolved.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(resolved.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// `x-forwarded-client-cert` by `forward_client_cert_details`: details from a client are
/// trusted only over mTLS (or with ALWAYS_FORWARD_ONLY); this hop's element is appended or set
/// from the client certificate.
fn forwarded_client_cert(h: &mut HeaderMap, conn: &ConnInfo, xfcc: crate::config::Xfcc) {
    use crate::config::XfccMode;
    let mtls = conn.tls.as_ref().filter(|p| p.certificate.is_some());
    let Some(peer) = mtls else {
        if xfcc.mode != XfccMode::AlwaysForwardOnly {
            h.remove(headers::X_FORWARDED_CLIENT_CERT);
        }
        return;
    };
    match xfcc.mode {
        XfccMode::Sanitize => {
            h.remove(headers::X_FORWARDED_CLIENT_CERT);
        }
        XfccMode::ForwardOnly | XfccMode::AlwaysForwardOnly => {}
        XfccMode::AppendForward | XfccMode::SanitizeSet => {
            let Some(own) = peer
                .xfcc
                .get_or_init(|| headers::xfcc_element(peer, xfcc.details))
            else {
                h.remove(headers::X_FORWARDED_CLIENT_CERT);
                return;
            };
            let previous = (xfcc.mode == XfccMode::AppendForward)
                .then(|| h.get(headers::X_FORWARDED_CLIENT_CERT))
                .flatten();
            let value = match previous {
                Some(p) => {
                    let mut v = p.as_bytes().to_vec();
                    v.push(b',');
                    v.extend_from_slice(own.as_bytes());
                    HeaderValue::from_bytes(&v).unwrap_or_else(|_| own.clone())
                }
                None => own.clone(),
            };
            h.insert(headers::X_FORWARDED_CLIENT_CERT, value);
        }
    }
}

/// The connection manager's own request headers: forwarding headers and the request id.
///
/// As Envoy 1.40 with its default `internal_address_config`, no client counts as internal: the
/// `x-envoy-*` headers only Envoy may set are dropped, and with `use_remote_address` the request
/// is an edge request (its id is replaced unless `preserve_external_request_id`).
fn prepare_request_headers(h: &mut HeaderMap, conn: &ConnInfo, mgr: &HttpManager) {
    let config = &mgr.config;
    forwarded_client_cert(h, conn, config.xfcc);
    headers::strip_envoy_internal(h);
    let client = crate::config::canonical(conn.client.ip());
    // The downstream connection's scheme, as Envoy sets it: https over TLS.
    let scheme = HeaderValue::from_static(if conn.tls.is_some() { "https" } else { "http" });
    if config.use_remote_address {
        // The client as Envoy trusts it: the peer, or with trusted hops in front, the entry
        // that many places from the right of the x-forwarded-for received.
        let trusted = match config.xff_num_trusted_hops {
            0 => client,
            hops => headers::xff_entry_from_right(h, hops as usize).unwrap_or(client),
        };
        if !config.skip_xff_append {
            // Envoy records a loopback client as this host's own address.
            let shown = if client.is_loopback() {
                headers::host_address().unwrap_or(client)
            } else {
                client
            };
            headers::append_xff(h, shown);
        }
        h.insert(headers::X_FORWARDED_PROTO, scheme);
        if let Ok(v) = HeaderValue::from_str(&trusted.to_string()) {
            h.insert(headers::X_ENVOY_EXTERNAL_ADDRESS, v);
        }
        if config.generate_request_id && !config.preserve_external_request_id {
            h.insert(X_REQUEST_ID, headers::request_id());
        }
    } else if !h.contains_key(headers::X_FORWARDED_PROTO) {
        h.insert(headers::X_FORWARDED_PROTO, scheme);
    }
    if config.generate_request_id && !h.contains_key(X_REQUEST_ID) {
        h.insert(X_REQUEST_ID, headers::request_id());
    }
    if let Some(via) = &config.via {
        h.append(header::VIA, via.clone());
    }
}

fn local(
    mgr: &HttpManager,
    req: &Request<Incoming>,
    flag: ResponseFlag,
    cluster: Option<Arc<str>>,
) -> (Response<ProxyBody>, Outcome) {
    let reply = LocalReply::for_flag(flag);
    let status = reply.status;
    let mut resp = reply.into_response(&mgr.config.server_name);
    echo_request_id(mgr, req.headers(), resp.headers_mut());
    (
        resp,
        Outcome {
            status,
            cluster,
            flag: Some(flag),
        },
    )
}

/// Where a request's `x-request-id` can be read from: its headers, or the value kept after
/// the request was sent.
trait RequestIdSource {
    fn request_id(&self) -> Option<&HeaderValue>;
}

impl RequestIdSource for HeaderMap {
    fn request_id(&self) -> Option<&HeaderValue> {
        self.get(X_REQUEST_ID)
    }
}

/// The request id kept from a request that has been sent upstream.
#[derive(Clone, Copy)]
struct RequestId<'a>(Option<&'a HeaderValue>);

impl RequestIdSource for RequestId<'_> {
    fn request_id(&self) -> Option<&HeaderValue> {
        self.0
    }
}

fn echo_request_id(mgr: &HttpManager, req: &impl RequestIdSource, resp: &mut HeaderMap) {
    if mgr.config.always_set_request_id_in_response
        && let Some(id) = req.request_id()
    {
        resp.insert(X_REQUEST_ID, id.clone());
    }
}

/// Response header edits, most specific level first (Envoy's default), or last when
/// `most_specific_header_mutations_wins`.
fn edit_response(
    rc: &RouteConfig,
    vh: &VirtualHost,
    route: &Route,
    weighted: Option<&WeightedChoice>,
    h: &mut HeaderMap,
) {
    let mut levels = [
        weighted.map(|w| &w.headers),
        Some(&route.headers),
        Some(&vh.headers),
        Some(&rc.headers),
    ];
    if rc.most_specific_header_mutations_wins {
        levels.reverse();
    }
    for edits in levels.into_iter().flatten() {
        headers::apply_response(h, edits);
    }
}

fn edit_request(
    rc: &RouteConfig,
    vh: &VirtualHost,
    route: &Route,
    weighted: Option<&WeightedChoice>,
    h: &mut HeaderMap,
) {
    let mut levels = [
        weighted.map(|w| &w.headers),
        Some(&route.headers),
        Some(&vh.headers),
        Some(&rc.headers),
    ];
    if rc.most_specific_header_mutations_wins {
        levels.reverse();
    }
    for edits in levels.into_iter().flatten() {
        headers::apply_request(h, edits);
    }
}

fn direct(
    mgr: &HttpManager,
    rc: &RouteConfig,
    req: &Request<Incoming>,
    vh: &VirtualHost,
    route: &Route,
    d: &DirectResponse,
) -> (Response<ProxyBody>, Outcome) {
    let mut resp = Response::new(match &d.body {
        Some(b) => ProxyBody::full(b.clone()),
        None => ProxyBody::Empty,
    });
    *resp.status_mut() = d.status;
    if d.body.as_ref().is_some_and(|b| !b.is_empty()) {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp.headers_mut()
        .insert(header::SERVER, mgr.config.server_name.clone());
    edit_response(rc, vh, route, None, resp.headers_mut());
    echo_request_id(mgr, req.headers(), resp.headers_mut());
    let status = resp.status();
    (
        resp,
        Outcome {
            status,
            cluster: None,
            flag: None,
        },
    )
}

fn redirect(
    routed: &Routed<'_>,
    req: &Request<Incoming>,
    r: &Redirect,
    authority: &str,
    path: &str,
) -> (Response<ProxyBody>, Outcome) {
    let Routed { mgr, rc, vh, route } = *routed;
    // The request's protocol as the connection manager recorded it.
    let request_proto = req
        .headers()
        .get(headers::X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    let scheme = r.scheme.as_deref().unwrap_or(request_proto);
    let new_port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
    let host = match &r.host {
        Some(h) => h.clone(),
        None => redirect_host(authority, scheme, request_proto, !new_port.is_empty()),
    };
    let query = path.find('?').map(|i| &path[i..]).unwrap_or("");
    let (mut new_path, path_has_own_query) = match &r.path {
        RedirectPath::Keep => (path.to_string(), false),
        // A replacement path with its own query keeps it, whatever strip_query says.
        RedirectPath::Replace(p) if p.contains('?') => (p.clone(), true),
        RedirectPath::Replace(p) => (format!("{p}{query}"), false),
        RedirectPath::Prefix(p) => {
            let matched = matched_prefix_len(route, path);
            (format!("{p}{}", &path[matched..]), false)
        }
    };
    if !new_path.starts_with('/') {
        new_path.insert(0, '/');
    }
    if r.strip_query
        && !path_has_own_query
        && let Some(i) = new_path.find('?')
    {
        new_path.truncate(i);
    }
    let location = format!("{scheme}://{host}{new_port}{new_path}");
    let mut resp = Response::new(ProxyBody::Empty);
    *resp.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::SERVER, mgr.config.server_name.clone());
    edit_response(rc, vh, route, None, resp.headers_mut());
    echo_request_id(mgr, req.headers(), resp.headers_mut());
    let status = resp.status();
    (
        resp,
        Outcome {
            status,
            cluster: None,
            flag: None,
        },
    )
}

/// The request's host for a redirect, Envoy's way: its port goes when a new port is set, or
/// when the scheme changes and the port was the old scheme's default (`:80` for http, `:443`
/// for https).
fn redirect_host(authority: &str, scheme: &str, request_proto: &str, new_port: bool) -> String {
    let host = strip_port(authority);
    let port = &authority[host.len()..];
    if port.is_empty() {
        return authority.to_string();
    }
    let default_of_old =
        (request_proto == "https" && port == ":443") || (request_proto == "http" && port == ":80");
    if new_port || (scheme != request_proto && default_of_old) {
        host.to_string()
    } else {
        authority.to_string()
    }
}

/// How much of the path a prefix-style match consumed (for prefix rewrites).
/// For a regex match Envoy counts the whole path (without its query) as matched.
fn matched_prefix_len(route: &Route, path: &str) -> usize {
    use crate::config::PathMatch;
    match &route.matcher.path {
        PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) | PathMatch::Path(p) => {
            p.len().min(path.len())
        }
        PathMatch::Regex(_) => path_only(path).len(),
        PathMatch::Connect => 0,
    }
}

#[allow(clippy::too_many_arguments)] // the request's whole context, passed once
async fn forward(
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    routed: &Routed<'_>,
    snapshot: &Snapshot,
    action: &RouteAction,
    authority: &str,
    path: &str,
) -> (Response<ProxyBody>, Outcome) {
    let Routed { mgr, rc, vh, route } = *routed;
    let config = &mgr.config;
    let not_found = Some(action.cluster_not_found);
    let (cluster_name, weighted) = match pick_cluster(&action.cluster, req.headers()) {
        Some(c) => c,
        None => {
            return routed.reply(req.headers(), not_found, ResponseFlag::NoClusterFound, None);
        }
    };
    let Some(cluster) = snapshot.clusters.get(&cluster_name) else {
        let flag = ResponseFlag::NoClusterFound;
        return routed.reply(req.headers(), not_found, flag, Some(cluster_name));
    };
    if let Some(why) = cluster.config.refusal() {
        crate::refusals::count(why);
        let flag = ResponseFlag::UpstreamConnectionFailure;
        return routed.reply(req.headers(), None, flag, Some(cluster_name));
    }

    // Upgrades (WebSocket, CONNECT) pass through when the route or the connection manager
    // allows them.
    let connect = req.method() == Method::CONNECT;
    let upgrade = if connect {
        Some("connect".to_string())
    } else {
        req.headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    let upgrading = match &upgrade {
        Some(u) => action
            .upgrades
            .iter()
            .chain(&config.upgrades)
            .any(|a| a == u),
        None => false,
    };
    if upgrade.is_some() && !upgrading {
        // Envoy answers an upgrade nobody allowed with 403.
        let (status, flag) = (Some(StatusCode::FORBIDDEN), ResponseFlag::NoRouteFound);
        return routed.reply(req.headers(), status, flag, Some(cluster_name));
    }
    let downstream_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));

    let orig_dst = conn.restored.then_some(OrigDst(conn.destination));
    let host = match cluster.pick(orig_dst) {
        Ok(h) => h,
        Err(NoHost::NoHealthyHost | NoHost::NoOriginalDst) => {
            let flag = ResponseFlag::NoHealthyUpstream;
            return routed.reply(req.headers(), None, flag, Some(cluster_name));
        }
    };

    if connect
        && action.terminate_connect
        && let Some(downstream) = downstream_upgrade
    {
        return terminate_connect(routed, &req, cluster, host, downstream, cluster_name).await;
    }

    // Request headers: hop-by-hop, the route's edits, rewrites, Envoy's router headers.
    // Only the request id is needed once the request has gone upstream (for echoing it).
    let request_id = req.headers().get(X_REQUEST_ID).cloned();
    let request_headers = RequestId(request_id.as_ref());
    {
        let h = req.headers_mut();
        headers::strip_hop_by_hop(h, upgrading);
        edit_request(rc, vh, route, weighted, h);
        if let Some(t) = action.timeout
            && !config.router.suppress_envoy_headers
        {
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            h.insert(
                headers::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
                HeaderValue::from(ms),
            );
        }
    }
    let new_path = rewrite_path(route, action, path);
    if new_path.as_deref().is_some_and(|p| p != path)
        && !config.router.suppress_envoy_headers
        && let Ok(v) = HeaderValue::from_str(path)
    {
        req.headers_mut().insert(headers::X_ENVOY_ORIGINAL_PATH, v);
    }
    let new_authority = match &action.host_rewrite {
        HostRewrite::Keep => None,
        HostRewrite::Literal(v) => v.to_str().ok().map(str::to_string),
        HostRewrite::Auto => upstream_hostname(&cluster.config, host.host().addr),
    };
    let authority = new_authority.as_deref().unwrap_or(authority);
    let protocol = match cluster.config.upstream_protocol {
        UpstreamProtocolConfig::Http1 => UpstreamProtocol::Http1,
        UpstreamProtocolConfig::Http2 => UpstreamProtocol::Http2,
        UpstreamProtocolConfig::Downstream => {
            if req.version() == Version::HTTP_2 {
                UpstreamProtocol::Http2
            } else {
                UpstreamProtocol::Http1
            }
        }
    };
    let target_path = new_path.as_deref().unwrap_or(path);
    if let Err(status) = set_target(&mut req, protocol, authority, target_path) {
        let flag = ResponseFlag::DownstreamProtocolError;
        return routed.reply(&request_headers, Some(status), flag, Some(cluster_name));
    }

    // `istio.alpn`: a TLS upstream is offered the ALPN list of the protocol spoken to it.
    let alpn = routed.mgr.config.filters.alpn.as_ref().and_then(|t| {
        let list = match (protocol, req.version()) {
            (UpstreamProtocol::Http2, _) => &t.http2,
            (UpstreamProtocol::Http1, Version::HTTP_10) => &t.http10,
            (UpstreamProtocol::Http1, _) => &t.http11,
        };
        (!list.is_empty()).then_some(list.as_slice())
    });
    let settings = ConnectSettings {
        connect_timeout: cluster.config.connect_timeout,
        idle_timeout: cluster.config.upstream_idle_timeout,
        keepalive: cluster.config.tcp_keepalive,
        bind_source: cluster.config.bind_source,
        alpn,
    };
    // The stream's timers: the route timeout from the end of the request, the stream idle
    // timeout (the route's, else the connection manager's), and the whole-request timeout.
    let max_stream = action.max_stream.and_then(|m| {
        m.limit(
            req.headers()
                .get(headers::GRPC_TIMEOUT)
                .map(HeaderValue::as_bytes),
        )
    });
    let timers = Arc::new(
        StreamTimers::new(
            action.timeout,
            action.idle_timeout.unwrap_or(config.stream_idle_timeout),
            config.request_timeout,
        )
        .with_max_stream(max_stream),
    );
    // A request without a body can be sent again as it is; one with a body is not retried
    // (Envoy would buffer it), which is counted when a retry is passed up.
    let retry = action.retry.as_deref().filter(|_| !upgrading);
    let template = match retry {
        Some(_) if http_body::Body::is_end_stream(req.body()) => Some(RequestTemplate::of(&req)),
        _ => None,
    };
    let req = req.map(|b| {
        if http_body::Body::is_end_stream(&b) {
            // No body to watch (GET and the like): the request is complete already.
            timers.request_done();
            ProxyBody::stream(b, None)
        } else {
            ProxyBody::stream(b, None).timed(&timers, Direction::Request)
        }
    });
    let started = Instant::now();
    let mut host = host;
    let mut first = Some(req);
    let mut attempt: u32 = 1;
    let mut tried: SmallVec<[SocketAddr; 2]> = SmallVec::new();
    let sent = loop {
        let mut this = match (first.take(), &template) {
            (Some(r), _) => r,
            (None, Some(t)) => t.build(),
            (None, None) => unreachable!("only a request with a template is retried"),
        };
        if vh.attempt_count_in_request {
            this.headers_mut()
                .insert(headers::X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempt));
        }
        let send = host.host().pool.send(this, protocol, &settings);
        let per_try = retry.and_then(|r| r.per_try_timeout);
        let attempt_result = async {
            match per_try {
                Some(t) => tokio::time::timeout(t, send).await.map_err(|_| ()),
                None => Ok(send.await),
            }
        };
        let result = match with_timers(attempt_result, &timers).await {
            Ok(r) => r,
            Err(expired) => {
                let reply = timeout_reply(expired, &timers);
                return routed.local(&request_headers, reply, Some(cluster_name));
            }
        };
        let Some(policy) = retry else { break result };
        let retriable = match &result {
            Ok(Ok(resp)) => policy.retries_status(resp.status().as_u16(), grpc_status(resp)),
            Ok(Err(e)) => policy.retries_failure(
                matches!(e, SendError::Connect(_) | SendError::Handshake(_)),
                refused_stream(e),
            ),
            Err(()) => policy.retries_timeout(),
        };
        if !retriable || attempt > policy.num_retries {
            if retriable {
                RETRY_LIMIT_EXCEEDED.fetch_add(1, Ordering::Relaxed);
            }
            break result;
        }
        if template.is_none() {
            RETRY_SKIPPED_BODY.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(cluster = %cluster_name, "not retried: the request has a body");
            break result;
        }
        // Back off (inside the route timeout), then pick a host, avoiding those tried.
        let pause = policy.backoff(attempt, crate::cluster::random_u64());
        if let Err(expired) = with_timers(tokio::time::sleep(pause), &timers).await {
            let reply = timeout_reply(expired, &timers);
            return routed.local(&request_headers, reply, Some(cluster_name));
        }
        tried.push(host.host().addr);
        host = match pick_retry_host(cluster, orig_dst, policy, &tried) {
            Some(h) => h,
            None => break result,
        };
        RETRIES.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(cluster = %cluster_name, attempt, upstream = %host.host().addr, "retrying");
        attempt += 1;
    };
    let sent = match sent {
        Ok(sent) => sent,
        Err(()) => {
            let reply = LocalReply::for_flag(ResponseFlag::UpstreamRequestTimeout);
            return routed.local(&request_headers, reply, Some(cluster_name));
        }
    };
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            // A request body cut by its own timer fails the send: report the timer.
            if let Err(expired) = timers.check(tokio::time::Instant::now()) {
                let reply = timeout_reply(expired, &timers);
                return routed.local(&request_headers, reply, Some(cluster_name));
            }
            let flag = send_error_flag(&e);
            tracing::debug!(upstream = %host.host().addr, cluster = %cluster_name, error = %e, flag = flag.short(), "upstream request failed");
            return routed.reply(&request_headers, None, flag, Some(cluster_name));
        }
    };
    let mut resp = {
        let (parts, body) = resp.into_parts();
        Response::from_parts(parts, body.timed(&timers, Direction::Response))
    };

    // The response: hop-by-hop, server, service time, edits.
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    headers::strip_hop_by_hop(h, upgrading && switching);
    match config.server_header {
        ServerHeader::Overwrite => {
            h.insert(header::SERVER, config.server_name.clone());
        }
        ServerHeader::AppendIfAbsent if !h.contains_key(header::SERVER) => {
            h.insert(header::SERVER, config.server_name.clone());
        }
        ServerHeader::AppendIfAbsent | ServerHeader::PassThrough => {}
    }
    if !config.router.suppress_envoy_headers {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        h.insert(
            headers::X_ENVOY_UPSTREAM_SERVICE_TIME,
            HeaderValue::from(ms),
        );
    }
    edit_response(rc, vh, route, weighted, h);
    echo_request_id(mgr, &request_headers, h);
    if vh.attempt_count_in_response {
        h.insert(headers::X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempt));
    }

    let tunnelled = switching || (connect && resp.status().is_success());
    if let (true, Some(downstream)) = (tunnelled, downstream_upgrade) {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(tunnel(downstream, upstream));
    }
    let status = resp.status();
    (
        resp,
        Outcome {
            status,
            cluster: Some(cluster_name),
            flag: None,
        },
    )
}

/// A local reply for a request that matched a route: Envoy applies the route's response
/// header edits (route, virtual host and route configuration levels) to it too.
#[derive(Clone, Copy)]
struct Routed<'a> {
    mgr: &'a HttpManager,
    rc: &'a RouteConfig,
    vh: &'a VirtualHost,
    route: &'a Route,
}

impl Routed<'_> {
    /// Sends `reply` with the route's response header edits.
    fn local(
        &self,
        request_headers: &impl RequestIdSource,
        reply: LocalReply,
        cluster: Option<Arc<str>>,
    ) -> (Response<ProxyBody>, Outcome) {
        let (status, flag) = (reply.status, reply.flag);
        let mut resp = reply.into_response(&self.mgr.config.server_name);
        edit_response(self.rc, self.vh, self.route, None, resp.headers_mut());
        echo_request_id(self.mgr, request_headers, resp.headers_mut());
        (
            resp,
            Outcome {
                status,
                cluster,
                flag,
            },
        )
    }

    fn reply(
        &self,
        request_headers: &impl RequestIdSource,
        status: Option<StatusCode>,
        flag: ResponseFlag,
        cluster: Option<Arc<str>>,
    ) -> (Response<ProxyBody>, Outcome) {
        let reply = LocalReply::for_flag(flag);
        let status = status.unwrap_or(reply.status);
        let mut resp = reply.into_response(&self.mgr.config.server_name);
        *resp.status_mut() = status;
        edit_response(self.rc, self.vh, self.route, None, resp.headers_mut());
        echo_request_id(self.mgr, request_headers, resp.headers_mut());
        (
            resp,
            Outcome {
                status,
                cluster,
                flag: Some(flag),
            },
        )
    }
}

/// Waits for `send` while watching the stream's timers.
async fn with_timers<F: std::future::Future>(
    send: F,
    timers: &StreamTimers,
) -> Result<F::Output, Expired> {
    let mut send = std::pin::pin!(send);
    loop {
        let Some(deadline) = timers.check(tokio::time::Instant::now())? else {
            return Ok(send.await);
        };
        tokio::select! {
            out = &mut send => return Ok(out),
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Envoy's local reply for a stream ended by a timer.
fn timeout_reply(expired: Expired, timers: &StreamTimers) -> LocalReply {
    match expired {
        Expired::Route => LocalReply::for_flag(ResponseFlag::UpstreamRequestTimeout),
        // 504 when the client had sent everything (the upstream was slow), else 408.
        Expired::Idle => LocalReply::stream_idle_timeout(timers.is_request_done()),
        Expired::Request => LocalReply::request_timeout(),
        Expired::MaxStream => LocalReply::for_flag(ResponseFlag::UpstreamMaxStreamDurationReached),
    }
}

/// Retries sent, retries passed up because the request had a body, and requests that ran out
/// of retries while still failing (for `/stats`).
pub static RETRIES: AtomicU64 = AtomicU64::new(0);
/// See [`RETRIES`].
pub static RETRY_SKIPPED_BODY: AtomicU64 = AtomicU64::new(0);
/// See [`RETRIES`].
pub static RETRY_LIMIT_EXCEEDED: AtomicU64 = AtomicU64::new(0);

/// What is needed to send a bodiless request again.
struct RequestTemplate {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl RequestTemplate {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    fn build(&self) -> Request<ProxyBody> {
        let mut req = Request::new(ProxyBody::full(bytes::Bytes::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// The host for a retry: with `previous_hosts`, up to `host_selection_attempts` picks to find
/// one not tried yet (else the last pick), as Envoy does.
fn pick_retry_host(
    cluster: &crate::cluster::Cluster,
    orig_dst: Option<OrigDst>,
    policy: &crate::config::RetryPolicy,
    tried: &[SocketAddr],
) -> Option<crate::cluster::HostGuard> {
    let mut pick = cluster.pick(orig_dst).ok()?;
    if policy.avoid_previous_hosts {
        for _ in 1..policy.host_selection_attempts {
            if !tried.contains(&pick.host().addr) {
                break;
            }
            pick = cluster.pick(orig_dst).ok()?;
        }
    }
    Some(pick)
}

/// The `grpc-status` of a trailers-only gRPC response (in its headers), if any.
fn grpc_status<B>(resp: &Response<B>) -> Option<u8> {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether an HTTP/2 stream was refused by the upstream (REFUSED_STREAM), so never processed.
fn refused_stream(e: &SendError) -> bool {
    let SendError::Request(e) = e else {
        return false;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = err.source();
    }
    false
}

/// The flag for an upstream send failure (Envoy's mapping).
fn send_error_flag(e: &SendError) -> ResponseFlag {
    match e {
        SendError::Connect(_) | SendError::Handshake(_) => ResponseFlag::UpstreamConnectionFailure,
        SendError::Request(e) if e.is_parse() => ResponseFlag::UpstreamProtocolError,
        SendError::Request(_) => ResponseFlag::UpstreamRemoteReset,
    }
}

/// The cluster for this request, and the weighted entry it came from.
fn pick_cluster<'a>(
    choice: &'a ClusterChoice,
    headers: &HeaderMap,
) -> Option<(Arc<str>, Option<&'a WeightedChoice>)> {
    match choice {
        ClusterChoice::Name(n) => Some((n.clone(), None)),
        ClusterChoice::Header(h) => headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .map(|s| (Arc::from(s), None)),
        ClusterChoice::Weighted(ws) => {
            let total: u64 = ws.iter().map(|w| u64::from(w.weight)).sum();
            let mut draw = crate::cluster::random_u64() % total.max(1);
            for w in ws {
                if draw < u64::from(w.weight) {
                    return Some((w.name.clone(), Some(w)));
                }
                draw -= u64::from(w.weight);
            }
            ws.last().map(|w| (w.name.clone(), Some(w)))
        }
    }
}

/// The path after the route's prefix or regex rewrite, if it has one.
fn rewrite_path(route: &Route, action: &RouteAction, path: &str) -> Option<String> {
    if let Some(prefix) = &action.prefix_rewrite {
        let matched = matched_prefix_len(route, path);
        return Some(format!("{prefix}{}", &path[matched..]));
    }
    if let Some((regex, substitution)) = &action.regex_rewrite {
        let only = path_only(path);
        let query = &path[only.len()..];
        let rewritten = regex.regex().replace_all(only, substitution.as_str());
        return Some(format!("{rewritten}{query}"));
    }
    None
}

/// The name auto_host_rewrite uses: the DNS name the host was resolved from.
fn upstream_hostname(
    cluster: &crate::config::Cluster,
    addr: std::net::SocketAddr,
) -> Option<String> {
    cluster.endpoints().find_map(|(_, e)| match &e.address {
        HostPort::Dns(name, port) if *port == addr.port() => Some(name.clone()),
        _ => None,
    })
}

/// Rewrites the request line for the upstream protocol: origin-form plus Host for HTTP/1.1,
/// scheme and authority in the URI for HTTP/2.
fn set_target<B>(
    req: &mut Request<B>,
    protocol: UpstreamProtocol,
    authority: &str,
    path: &str,
) -> Result<(), StatusCode> {
    let path_and_query = if req.method() == Method::CONNECT && req.uri().path().is_empty() {
        None
    } else {
        Some(PathAndQuery::try_from(path).map_err(|_| StatusCode::BAD_REQUEST)?)
    };
    let authority_value = Authority::try_from(authority).map_err(|_| StatusCode::BAD_REQUEST)?;
    match protocol {
        UpstreamProtocol::Http1 => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = path_and_query;
            if parts.path_and_query.is_none() {
                parts.authority = Some(authority_value);
            }
            *req.uri_mut() = Uri::from_parts(parts).map_err(|_| StatusCode::BAD_REQUEST)?;
            *req.version_mut() = Version::HTTP_11;
            let host = HeaderValue::from_str(authority).map_err(|_| StatusCode::BAD_REQUEST)?;
            req.headers_mut().insert(header::HOST, host);
        }
        UpstreamProtocol::Http2 => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority_value);
            parts.path_and_query = path_and_query.or_else(|| Some(PathAndQuery::from_static("/")));
            *req.uri_mut() = Uri::from_parts(parts).map_err(|_| StatusCode::BAD_REQUEST)?;
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
        }
    }
    Ok(())
}

/// Envoy's CONNECT termination: open a TCP connection to the upstream host, answer 200, and
/// carry the client's bytes over it.
async fn terminate_connect(
    routed: &Routed<'_>,
    req: &Request<Incoming>,
    cluster: &crate::cluster::Cluster,
    host: crate::cluster::HostGuard,
    downstream: hyper::upgrade::OnUpgrade,
    cluster_name: Arc<str>,
) -> (Response<ProxyBody>, Outcome) {
    let addr = host.host().addr;
    let upstream = match crate::tcp::connect_host(cluster, host.host()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(upstream = %addr, error = %e, "CONNECT: upstream connect failed");
            let flag = ResponseFlag::UpstreamConnectionFailure;
            return routed.reply(req.headers(), None, flag, Some(cluster_name));
        }
    };
    tokio::spawn(async move {
        let _host = host; // counted as active while the tunnel lives
        let down = match downstream.await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT: downstream upgrade failed");
                return;
            }
        };
        let mut down = hyper_util::rt::TokioIo::new(down);
        let mut up = upstream;
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "CONNECT tunnel ended");
        }
    });
    let mut resp = Response::new(ProxyBody::Empty);
    resp.headers_mut()
        .insert(header::SERVER, routed.mgr.config.server_name.clone());
    (
        resp,
        Outcome {
            status: StatusCode::OK,
            cluster: Some(cluster_name),
            flag: None,
        },
    )
}

/// Joins an upgraded downstream and upstream connection (WebSocket and other upgrades).
async fn tunnel(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded tunnel ended");
    }
}
