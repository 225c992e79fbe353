//! The admin server (Envoy's admin API, localhost port 15000 in a pod): readiness, the config
//! dump, the bound listeners, and shutdown.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use bytes::Bytes;
use envoy_types::pb::{
    envoy::{
        admin::v3::{
            BootstrapConfigDump, ClustersConfigDump, ConfigDump, EndpointsConfigDump,
            ListenerStatus, Listeners, ListenersConfigDump, RoutesConfigDump,
            clusters_config_dump::{DynamicCluster, StaticCluster},
            endpoints_config_dump::DynamicEndpointConfig,
            listeners_config_dump::{DynamicListener, DynamicListenerState, StaticListener},
            routes_config_dump::DynamicRouteConfig,
        },
        config::{
            bootstrap::v3::Bootstrap as XdsBootstrap,
            core::v3::{Address, SocketAddress, address, socket_address::PortSpecifier},
        },
    },
    google::protobuf::{Any, Timestamp},
};
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use prost::{Message, Name};
use tokio::{net::TcpListener, sync::Notify};

use crate::config::Schema;

/// What the admin server reports on and acts on.
#[derive(Debug)]
pub struct AdminState {
    /// The bootstrap as loaded, protobuf-encoded.
    pub bootstrap: Arc<[u8]>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Bound listeners: name and actual address.
    pub listeners: std::sync::Mutex<Vec<(Arc<str>, SocketAddr)>>,
    /// Resources from the control plane, as the config dump shows them.
    pub dynamic: std::sync::Mutex<Arc<DynamicDump>>,
    /// Set once every listener accepts (and, with a control plane, the first configuration
    /// from it is applied).
    pub live: AtomicBool,
    /// Whether the ADS stream is up.
    pub xds_connected: AtomicBool,
    /// The ADS stream, once started: its per-type counters feed `/stats`.
    pub ads: std::sync::OnceLock<xds_client::transport::AdsHandle>,
    /// The Istio CA client, when certificates come from a CA: its counters feed `/stats`.
    pub ca: std::sync::OnceLock<xds_client::ca::CaHandle>,
    /// Notified by `POST /quitquitquit`.
    pub quit: Notify,
}

/// A resource from the control plane in the config dump.
#[derive(Clone, Debug)]
pub struct DumpEntry {
    /// The version it came with.
    pub version: String,
    /// When it was applied.
    pub last_updated: SystemTime,
    /// The resource as received.
    pub resource: Any,
}

/// Every resource from the control plane, for `/config_dump`.
#[derive(Clone, Debug, Default)]
pub struct DynamicDump {
    /// Listeners by name: the active version and a warming one.
    pub listeners: Vec<(String, Option<DumpEntry>, Option<DumpEntry>)>,
    /// Clusters in use.
    pub clusters_active: Vec<DumpEntry>,
    /// Clusters waiting for their endpoints.
    pub clusters_warming: Vec<DumpEntry>,
    /// Route configurations.
    pub routes: Vec<DumpEntry>,
    /// Endpoint assignments.
    pub endpoints: Vec<DumpEntry>,
    /// The last LDS version accepted whole.
    pub lds_version: String,
    /// The last CDS version accepted whole.
    pub cds_version: String,
}

type Body = Full<Bytes>;

// === impl AdminState ===

impl AdminState {
    /// State for a freshly loaded bootstrap.
    pub fn new(bootstrap: Arc<[u8]>) -> Self {
        Self {
            bootstrap,
            loaded_at: SystemTime::now(),
            listeners: Default::default(),
            dynamic: Default::default(),
            live: AtomicBool::new(false),
            xds_connected: AtomicBool::new(false),
            ads: std::sync::OnceLock::new(),
            ca: std::sync::OnceLock::new(),
            quit: Notify::new(),
        }
    }

    /// Records the control plane's resources and the bound listeners after a change.
    pub fn set_dynamic(&self, dump: DynamicDump, listeners: Vec<(Arc<str>, SocketAddr)>) {
        *self.dynamic.lock().expect("admin state is never poisoned") = Arc::new(dump);
        *self
            .listeners
            .lock()
            .expect("admin state is never poisoned") = listeners;
    }
}

/// Serves the admin API on `socket` until the runtime stops.
pub async fn serve(socket: TcpListener, state: Arc<AdminState>) {
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin: connection error");
            }
        });
    }
}

const COMMANDS: &str = "admin commands are:\n  \
    /: this list\n  \
    /config_dump: dump current Envoy configs (?include_eds adds endpoints)\n  \
    /listeners: print listener info (?format=json for JSON)\n  \
    /stats: print server stats\n  \
    /quitquitquit (POST): exit the server\n  \
    /ready: print server state, return 200 if LIVE, otherwise return 503\n";

fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let post_only = matches!(path, "/quitquitquit");
    if post_only && req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "This endpoint requires POST\n".into(),
        );
    }
    match path {
        "/" => text(StatusCode::OK, COMMANDS.into()),
        "/ready" => {
            if state.live.load(Ordering::Acquire) {
                text(StatusCode::OK, "LIVE\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n".into())
            }
        }
        "/config_dump" => match config_dump(state, query.split('&').any(|p| p == "include_eds")) {
            Ok(json) => json_response(json),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("config dump failed: {e}\n"),
            ),
        },
        "/listeners" => listeners(state, query.split('&').any(|p| p == "format=json")),
        "/stats" => text(StatusCode::OK, stats(state)),
        "/quitquitquit" => {
            state.quit.notify_one();
            text(StatusCode::OK, "OK\n".into())
        }
        _ => text(StatusCode::NOT_FOUND, format!("invalid path. {COMMANDS}")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

fn json_response(body: String) -> Response<Body> {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Envoy's `/config_dump`: the bootstrap, then clusters, listeners and routes, each with the
/// static resources of the bootstrap and the dynamic ones from the control plane (version and
/// time of each), and endpoints when asked with `include_eds`.
fn config_dump(state: &AdminState, include_eds: bool) -> Result<String, String> {
    let bootstrap = XdsBootstrap::decode(&*state.bootstrap).map_err(|e| e.to_string())?;
    let at = Some(timestamp(state.loaded_at));
    let dynamic = state.dynamic.lock().map(|d| d.clone()).unwrap_or_default();
    let resources = bootstrap.static_resources.clone().unwrap_or_default();
    let mut configs = vec![
        any(&BootstrapConfigDump {
            bootstrap: Some(bootstrap),
            last_updated: at,
        }),
        any(&ClustersConfigDump {
            version_info: dynamic.cds_version.clone(),
            static_clusters: resources
                .clusters
                .iter()
                .map(|c| StaticCluster {
                    cluster: Some(any(c)),
                    last_updated: at,
                })
                .collect(),
            dynamic_active_clusters: dynamic.clusters_active.iter().map(dump_cluster).collect(),
            dynamic_warming_clusters: dynamic.clusters_warming.iter().map(dump_cluster).collect(),
        }),
        any(&ListenersConfigDump {
            version_info: dynamic.lds_version.clone(),
            static_listeners: resources
                .listeners
                .iter()
                .map(|l| StaticListener {
                    listener: Some(any(l)),
                    last_updated: at,
                })
                .collect(),
            dynamic_listeners: dynamic
                .listeners
                .iter()
                .map(|(name, active, warming)| DynamicListener {
                    name: name.clone(),
                    active_state: active.as_ref().map(dump_listener),
                    warming_state: warming.as_ref().map(dump_listener),
                    ..Default::default()
                })
                .collect(),
        }),
        any(&RoutesConfigDump {
            static_route_configs: Vec::new(),
            dynamic_route_configs: dynamic
                .routes
                .iter()
                .map(|r| DynamicRouteConfig {
                    version_info: r.version.clone(),
                    route_config: Some(r.resource.clone()),
                    last_updated: Some(timestamp(r.last_updated)),
                    ..Default::default()
                })
                .collect(),
        }),
    ];
    if include_eds {
        configs.push(any(&EndpointsConfigDump {
            static_endpoint_configs: Vec::new(),
            dynamic_endpoint_configs: dynamic
                .endpoints
                .iter()
                .map(|e| DynamicEndpointConfig {
                    version_info: e.version.clone(),
                    endpoint_config: Some(e.resource.clone()),
                    last_updated: Some(timestamp(e.last_updated)),
                    ..Default::default()
                })
                .collect(),
        }));
    }
    let dump = ConfigDump { configs };
    Schema::load().to_json(&ConfigDump::full_name(), &dump.encode_to_vec())
}

fn dump_cluster(e: &DumpEntry) -> DynamicCluster {
    DynamicCluster {
        version_info: e.version.clone(),
        cluster: Some(e.resource.clone()),
        last_updated: Some(timestamp(e.last_updated)),
        ..Default::default()
    }
}

fn dump_listener(e: &DumpEntry) -> DynamicListenerState {
    DynamicListenerState {
        version_info: e.version.clone(),
        listener: Some(e.resource.clone()),
        last_updated: Some(timestamp(e.last_updated)),
    }
}

/// The few counters Skiff keeps so far, in Envoy's `name: value` text form.
fn stats(state: &AdminState) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let connected = u8::from(state.xds_connected.load(Ordering::Acquire));
    let _ = writeln!(out, "control_plane.connected: {connected}");
    if let Some(ads) = state.ads.get() {
        let metrics = ads.metrics();
        let millis = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis())
        };
        for (type_url, short, envoy) in [
            (
                xds_client::type_url::CLUSTER,
                "cds",
                Some("cluster_manager.cds"),
            ),
            (xds_client::type_url::ENDPOINT, "eds", None),
            (
                xds_client::type_url::LISTENER,
                "lds",
                Some("listener_manager.lds"),
            ),
            (xds_client::type_url::ROUTE, "rds", None),
        ] {
            let m = metrics.get(type_url).cloned().unwrap_or_default();
            // Envoy's names where tools read them, Skiff's for the per-resource ones.
            for prefix in envoy
                .into_iter()
                .chain(Some(&*format!("skiff.xds.{short}")))
            {
                let _ = writeln!(out, "{prefix}.update_success: {}", m.updates_accepted);
                let _ = writeln!(out, "{prefix}.update_rejected: {}", m.updates_rejected);
                let _ = writeln!(out, "{prefix}.update_time: {}", millis(m.last_update));
            }
            let _ = writeln!(
                out,
                "skiff.xds.{short}.resources_rejected: {}",
                m.resources_rejected
            );
        }
        let _ = writeln!(out, "skiff.xds.connects: {}", ads.connects());
    }
    use crate::http::forward::{RETRIES, RETRY_LIMIT_EXCEEDED, RETRY_SKIPPED_BODY};
    for (name, n) in [
        ("upstream_rq_retry", &RETRIES),
        ("upstream_rq_retry_limit_exceeded", &RETRY_LIMIT_EXCEEDED),
        (
            "upstream_rq_retry_skipped_request_body",
            &RETRY_SKIPPED_BODY,
        ),
    ] {
        let _ = writeln!(out, "skiff.http.{name}: {}", n.load(Ordering::Relaxed));
    }
    let _ = writeln!(
        out,
        "skiff.listener.no_filter_chain_match: {}",
        crate::listener::NO_FILTER_CHAIN_MATCH.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Some(ca) = state.ca.get() {
        let status = ca.status();
        let _ = writeln!(out, "skiff.ca.issued: {}", status.issued);
        let _ = writeln!(out, "skiff.ca.failures: {}", status.failures);
        // Envoy reports how long until the first certificate expires; here, in seconds.
        let left = status
            .not_after
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .map_or(0, |d| d.as_secs());
        let _ = writeln!(out, "skiff.ca.seconds_until_expiry: {left}");
    }
    for side in [crate::tls::Side::Downstream, crate::tls::Side::Upstream] {
        for (stat, n) in crate::tls::counters(side).snapshot() {
            let _ = writeln!(out, "skiff.tls.{}.ssl.{stat}: {n}", side.name());
        }
    }
    for slot in crate::tls::secrets::all() {
        let _ = writeln!(
            out,
            "skiff.secret.{}.updates: {}",
            slot.name(),
            slot.version()
        );
    }
    for (why, n) in crate::refusals::snapshot() {
        let _ = writeln!(out, "skiff.refused.{}: {n}", why.name());
    }
    out
}

fn listeners(state: &AdminState, json: bool) -> Response<Body> {
    let bound = state
        .listeners
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    if !json {
        let body: String = bound
            .iter()
            .map(|(name, addr)| format!("{name}::{addr}\n"))
            .collect();
        return text(StatusCode::OK, body);
    }
    let msg = Listeners {
        listener_statuses: bound
            .iter()
            .map(|(name, addr)| ListenerStatus {
                name: name.to_string(),
                local_address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: addr.ip().to_string(),
                        port_specifier: Some(PortSpecifier::PortValue(u32::from(addr.port()))),
                        ..Default::default()
                    })),
                }),
                additional_local_addresses: Vec::new(),
            })
            .collect(),
    };
    match Schema::load().to_json(&Listeners::full_name(), &msg.encode_to_vec()) {
        Ok(j) => json_response(j),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
