//! Live configuration over real gRPC: the proxy binary takes listeners, routes, clusters and
//! endpoints from the test xDS server (`xds_client::server`) and changes them while traffic
//! flows.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use xds_client::{
    schema::{Format, Schema},
    server::{Resources, Server, ServerHandle, StreamStatus},
    type_url,
};

const WAIT: Duration = Duration::from_secs(30);

// --- resources, written as istiod would send them ---

fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(Schema::load)
}

/// Resources from YAML documents, each with its `@type`.
fn resources(docs: &[String]) -> Resources {
    let mut out = Resources::new();
    for doc in docs {
        let value = Format::Yaml
            .read(doc)
            .unwrap_or_else(|e| panic!("{e}\n{doc}"));
        let any = schema()
            .parse_any(value)
            .unwrap_or_else(|e| panic!("{e}\n{doc}"));
        out.insert(any).unwrap();
    }
    out
}

fn http_listener(name: &str, port: u16, route: &str) -> String {
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.listener.v3.Listener
name: {name}
address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      rds:
        route_config_name: {route}
        config_source: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

fn route(name: &str, cluster: &str) -> String {
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
name: {name}
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {{prefix: /}}
    route: {{cluster: {cluster}, timeout: 5s}}
"#
    )
}

fn eds_cluster(name: &str) -> String {
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: {name}
type: EDS
connect_timeout: 1s
eds_cluster_config:
  service_name: {name}
  eds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
"#
    )
}

fn endpoints(name: &str, hosts: &[SocketAddr]) -> String {
    let lb: String = hosts
        .iter()
        .map(|h| {
            format!(
                "\n    - endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}",
                h.ip(),
                h.port()
            )
        })
        .collect();
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
cluster_name: {name}
endpoints:
- lb_endpoints:{lb}
"#
    )
}

/// One HTTP listener routing everything to `cluster`, which has `hosts`.
fn routing_to(port: u16, cluster: &str, hosts: &[SocketAddr]) -> Vec<String> {
    vec![
        http_listener("http", port, "routes"),
        route("routes", cluster),
        eds_cluster(cluster),
        endpoints(cluster, hosts),
    ]
}

// --- the proxy's bootstrap ---

enum Ads<'a> {
    Tcp(SocketAddr),
    Unix(&'a std::path::Path),
}

fn bootstrap(ads: Ads<'_>, api_type: &str, extra_metadata: &str) -> String {
    let address = match ads {
        Ads::Tcp(a) => format!(
            "{{socket_address: {{address: \"{}\", port_value: {}}}}}",
            a.ip(),
            a.port()
        ),
        Ads::Unix(p) => format!("{{pipe: {{path: \"{}\"}}}}", p.display()),
    };
    format!(
        r#"
node:
  id: sidecar~127.0.0.1~test-0.default~default.svc.cluster.local
  cluster: test.default
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{cluster_name: xds-grpc}}
{extra_metadata}
  cds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
  lds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {address}}}
"#
    )
}

async fn serve(server: &Server) -> (SocketAddr, ServerHandle) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (addr, server.serve_tcp(l))
}

/// Waits until some open stream has ACKed `version` for every type in `types`.
async fn acked(server: &Server, version: &str, types: &[&str]) -> Vec<StreamStatus> {
    server
        .wait_for(
            |s| {
                s.iter()
                    .any(|st| st.open && types.iter().all(|t| st.acked(t, version)))
            },
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

const ALL: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

// --- backends and load ---

/// An HTTP/1.1 backend answering every request with `name`.
async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// One GET on a fresh connection: (status, body), or the error.
async fn get(addr: SocketAddr) -> Result<(u16, String), String> {
    let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    send_get(&mut send).await
}

/// Waits until a GET through `addr` answers 200 with `body`.
async fn until_body(addr: SocketAddr, body: &str) {
    let deadline = Instant::now() + WAIT;
    let mut last = Err(String::new());
    while Instant::now() < deadline {
        last = get(addr).await;
        if matches!(&last, Ok((200, b)) if b == body) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} never answered {body:?}; last: {last:?}");
}

fn admin_json(proxy: &Proxy, path: &str) -> serde_json::Value {
    let (status, body) = http_get(proxy.admin, path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}\n{body}"))
}

fn stat(proxy: &Proxy, name: &str) -> Option<String> {
    let (_, body) = http_get(proxy.admin, "/stats").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
}

// --- tests ---

/// A route change pushed while 500 requests per second flow is in effect within a second, and
/// no request fails across it (requests in flight finish on the old snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_route_change_takes_effect_within_a_second_under_load() {
    let (a, b) = (backend("A").await, backend("B").await);
    let port = free_port();
    let server = Server::new();
    let v1 = server.set_resources(resources(&routing_to(port, "svc-a", &[a])));
    let (xds, _serving) = serve(&server).await;
    let proxy = Proxy::start(&bootstrap(Ads::Tcp(xds), "DELTA_GRPC", ""));
    acked(&server, &v1, &ALL).await;
    let http: SocketAddr = ([127, 0, 0, 1], port).into();
    until_body(http, "A").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (samples, tasks) = load(http, 500, 10, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Istio's order: the new cluster and its endpoints first, then the route that uses it.
    let mut docs = routing_to(port, "svc-a", &[a]);
    docs.extend([eds_cluster("svc-b"), endpoints("svc-b", &[b])]);
    let v2 = server.set_resources(resources(&docs));
    acked(&server, &v2, &[type_url::CLUSTER, type_url::ENDPOINT]).await;
    let mut docs = routing_to(port, "svc-a", &[a]);
    docs[1] = route("routes", "svc-b");
    docs.extend([eds_cluster("svc-b"), endpoints("svc-b", &[b])]);
    let pushed = Instant::now();
    let v3 = server.set_resources(resources(&docs));
    acked(&server, &v3, &[type_url::ROUTE]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }

    let samples = samples.lock().unwrap().clone();
    let failed: Vec<_> = samples
        .iter()
        .filter(|s| !matches!(&s.result, Ok((200, _))))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let first_b = samples
        .iter()
        .filter(|s| matches!(&s.result, Ok((_, b)) if b == "B"))
        .map(|s| s.sent)
        .min()
        .expect("some request reached B");
    let last_a = samples
        .iter()
        .filter(|s| matches!(&s.result, Ok((_, b)) if b == "A"))
        .map(|s| s.sent)
        .max()
        .unwrap();
    let took = first_b.saturating_duration_since(pushed);
    eprintln!(
        "{} requests over {:?}; the push took effect after {took:?}",
        samples.len(),
        samples.last().unwrap().sent - samples[0].sent
    );
    assert!(took < Duration::from_secs(1), "the push took {took:?}");
    assert!(
        last_a < first_b + Duration::from_millis(100),
        "A still served {:?} after B was",
        last_a - first_b
    );
    assert!(
        samples.len() > 1000,
        "only {} requests were sent",
        samples.len()
    );
    drop(proxy);
}

/// A resource the proxy cannot take is NACKed with its name and the reason; the proxy keeps
/// serving the last good version of it, and the next good version is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_resource_is_nacked_and_the_last_good_one_keeps_serving() {
    let (a, b) = (backend("A").await, backend("B").await);
    let port = free_port();
    let server = Server::new();
    let mut docs = routing_to(port, "svc-a", &[a]);
    docs.extend([eds_cluster("svc-b"), endpoints("svc-b", &[b])]);
    let v1 = server.set_resources(resources(&docs));
    let (xds, _serving) = serve(&server).await;
    let mut proxy = Proxy::start(&bootstrap(Ads::Tcp(xds), "GRPC", ""));
    acked(&server, &v1, &ALL).await;
    let http: SocketAddr = ([127, 0, 0, 1], port).into();
    until_body(http, "A").await;

    // A route to svc-b with a regex RE2 refuses: the whole route configuration is rejected.
    let mut bad = docs.clone();
    bad[1] = route("routes", "svc-b").replace(
        "match: {prefix: /}",
        "match: {safe_regex: {regex: \"(unclosed\"}}",
    );
    let v2 = server.set_resources(resources(&bad));
    let status = server
        .wait_for(
            |s| {
                s.iter().any(|st| {
                    st.open && st.type_status(type_url::ROUTE).is_some_and(|t| t.nacks > 0)
                })
            },
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rds = status
        .iter()
        .find(|s| s.open)
        .unwrap()
        .type_status(type_url::ROUTE)
        .unwrap();
    let nack = rds.last_nack.clone().unwrap();
    assert!(
        nack.contains("routes"),
        "the NACK names the resource: {nack}"
    );
    assert!(nack.contains("regex"), "the NACK says why: {nack}");
    assert_ne!(rds.acked_version.as_deref(), Some(v2.as_str()));
    // The old route still serves, and the proxy says which version it holds.
    for _ in 0..20 {
        assert_eq!(get(http).await.unwrap(), (200, "A".to_string()));
    }
    let dump = admin_json(&proxy, "/config_dump");
    let routes = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"].as_str().unwrap().ends_with("RoutesConfigDump"))
        .unwrap();
    assert_eq!(
        routes["dynamic_route_configs"][0]["version_info"], v1,
        "{routes:#}"
    );
    assert!(proxy.is_running());
    // The client's counters, under Envoy's names where tools read them.
    let count = |name: &str| -> u64 {
        stat(&proxy, name)
            .unwrap_or_else(|| panic!("no stat {name}"))
            .parse()
            .unwrap()
    };
    assert!(count("skiff.xds.rds.update_rejected") >= 1);
    assert!(count("skiff.xds.rds.resources_rejected") >= 1);
    assert!(count("listener_manager.lds.update_success") >= 1);
    assert!(count("cluster_manager.cds.update_success") >= 1);
    assert_eq!(count("cluster_manager.cds.update_rejected"), 0);
    assert!(count("skiff.xds.rds.update_time") > 1_600_000_000_000);

    // A fixed version is taken.
    let mut good = docs.clone();
    good[1] = route("routes", "svc-b");
    let v3 = server.set_resources(resources(&good));
    acked(&server, &v3, &[type_url::ROUTE]).await;
    until_body(http, "B").await;
}

/// With the control plane gone, traffic keeps flowing on the last good configuration; when it
/// comes back (with a changed configuration) the proxy reconnects and resynchronises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_the_control_plane_going_away_and_it_resyncs_on_return() {
    let (a, b) = (backend("A").await, backend("B").await);
    let port = free_port();
    let server = Server::new();
    let v1 = server.set_resources(resources(&routing_to(port, "svc-a", &[a])));
    let (xds, serving) = serve(&server).await;
    let proxy = Proxy::start(&bootstrap(Ads::Tcp(xds), "DELTA_GRPC", ""));
    acked(&server, &v1, &ALL).await;
    let http: SocketAddr = ([127, 0, 0, 1], port).into();
    until_body(http, "A").await;
    assert_eq!(
        stat(&proxy, "control_plane.connected").as_deref(),
        Some("1")
    );

    serving.shutdown().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while stat(&proxy, "control_plane.connected").as_deref() != Some("0") {
        assert!(Instant::now() < deadline, "the proxy never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..50 {
        assert_eq!(get(http).await.unwrap(), (200, "A".to_string()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The same address again, with the endpoints moved to B meanwhile.
    let v2 = server.set_resources(resources(&routing_to(port, "svc-a", &[b])));
    let l = loop {
        match TcpListener::bind(xds).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let _serving = server.serve_tcp(l);
    let status = acked(&server, &v2, &[type_url::ENDPOINT]).await;
    until_body(http, "B").await;
    assert_eq!(
        stat(&proxy, "control_plane.connected").as_deref(),
        Some("1")
    );
    // The new stream carried what the proxy held, so unchanged resources were not resent: the
    // listener, route and cluster responses on it (if any) were empty of them.
    let stream = status.iter().rfind(|s| s.open).unwrap();
    assert!(stream.node_id.as_deref().unwrap().starts_with("sidecar~"));
}

/// A Unix-socket control plane (pilot-agent's layout), bearer token and `ClusterID` metadata;
/// a listener removed by the control plane stops accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_token_and_metadata_then_a_listener_is_removed() {
    let a = backend("A").await;
    let (port, port2) = (free_port(), free_port());
    let server = Server::new();
    let mut docs = routing_to(port, "svc-a", &[a]);
    docs.push(http_listener("second", port2, "routes"));
    let v1 = server.set_resources(resources(&docs));
    let dir = TempDir::new("xds-uds");
    let sock = dir.path("XDS");
    let _serving = server.serve_unix(tokio::net::UnixListener::bind(&sock).unwrap());
    let token = dir.path("token");
    std::fs::write(&token, "secret-jwt\n").unwrap();
    let metadata = "      initial_metadata: [{key: ClusterID, value: Kubernetes}]";
    let proxy = Proxy::start_with(
        &bootstrap(Ads::Unix(&sock), "DELTA_GRPC", metadata),
        &["--xds-token-file", token.to_str().unwrap()],
    );
    let status = acked(&server, &v1, &ALL).await;
    let stream = status.iter().find(|s| s.open).unwrap();
    assert_eq!(
        stream.metadata_value("authorization"),
        Some("Bearer secret-jwt")
    );
    assert_eq!(stream.metadata_value("clusterid"), Some("Kubernetes"));
    let second: SocketAddr = ([127, 0, 0, 1], port2).into();
    until_body(second, "A").await;

    // A keep-alive connection open on the listener about to go.
    let s = TcpStream::connect(second).await.unwrap();
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(send_get(&mut open).await.unwrap().1, "A");

    let v2 = server.set_resources(resources(&routing_to(port, "svc-a", &[a])));
    acked(&server, &v2, &[type_url::LISTENER]).await;
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(second).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_body(([127, 0, 0, 1], port).into(), "A").await;
    let dump = admin_json(&proxy, "/config_dump");
    let text = dump.to_string();
    assert!(
        !text.contains("\"second\""),
        "the removed listener is gone from the dump"
    );
}

/// Ten thousand clusters with their endpoints, pushed at once, are all applied, and the last of
/// them routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clusters_are_applied() {
    const N: usize = 10_000;
    let a = backend("A").await;
    let port = free_port();
    let server = Server::new();
    let mut docs = routing_to(port, "svc-0", &[a]);
    docs.truncate(2);
    let filler: SocketAddr = "10.1.2.3:8080".parse().unwrap();
    for i in 0..N {
        let name = format!("svc-{i}");
        docs.push(eds_cluster(&name));
        docs.push(endpoints(&name, &[if i == N - 1 { a } else { filler }]));
    }
    docs[1] = route("routes", &format!("svc-{}", N - 1));
    let built = resources(&docs);
    let (xds, _serving) = serve(&server).await;
    let proxy = Proxy::start(&bootstrap(Ads::Tcp(xds), "DELTA_GRPC", ""));
    let started = Instant::now();
    let v1 = server.set_resources(built);
    acked(&server, &v1, &ALL).await;
    let took = started.elapsed();
    until_body(([127, 0, 0, 1], port).into(), "A").await;
    eprintln!("{N} clusters and endpoints applied in {took:?} (debug build)");
    let dump = admin_json(&proxy, "/config_dump");
    let clusters = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"].as_str().unwrap().ends_with("ClustersConfigDump"))
        .unwrap();
    assert_eq!(
        clusters["dynamic_active_clusters"]
            .as_array()
            .unwrap()
            .len(),
        N
    );
}

/// Real Envoy and Skiff on the same control plane and the same resources: both ACK them, both
/// NACK the same bad route configuration, and both route the same way before and after a push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_envoy_and_skiff_ack_nack_and_route_alike() {
    for api_type in ["DELTA_GRPC", "GRPC"] {
        envoy_and_skiff_alike(api_type).await;
    }
}

async fn envoy_and_skiff_alike(api_type: &str) {
    let (a, b) = (backend("A").await, backend("B").await);
    let server = Server::new();
    // Port 0: each proxy binds its own port for the same listener resource.
    let mut docs = routing_to(0, "svc-a", &[a]);
    docs.extend([eds_cluster("svc-b"), endpoints("svc-b", &[b])]);
    let v1 = server.set_resources(resources(&docs));
    let (xds, _serving) = serve(&server).await;
    let config = bootstrap(Ads::Tcp(xds), api_type, "");
    let skiff = Proxy::start(&config);
    let envoy = Proxy::start_envoy(&config);
    let both_acked = |version: String, types: Vec<&'static str>| {
        move |s: &[StreamStatus]| {
            s.iter()
                .filter(|st| st.open && types.iter().all(|t| st.acked(t, &version)))
                .count()
                == 2
        }
    };
    server
        .wait_for(both_acked(v1.clone(), ALL.to_vec()), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", envoy.log()));
    let http = |p: &Proxy| {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(a) = p.read_listeners().get("http") {
                return *a;
            }
            assert!(Instant::now() < deadline, "no http listener:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (on_skiff, on_envoy) = (http(&skiff), http(&envoy));
    until_body(on_skiff, "A").await;
    until_body(on_envoy, "A").await;

    let mut bad = docs.clone();
    bad[1] = route("routes", "svc-b").replace(
        "match: {prefix: /}",
        "match: {safe_regex: {regex: \"(unclosed\"}}",
    );
    server.set_resources(resources(&bad));
    let status = server
        .wait_for(
            |s| {
                s.iter()
                    .filter(|st| {
                        st.open && st.type_status(type_url::ROUTE).is_some_and(|t| t.nacks > 0)
                    })
                    .count()
                    == 2
            },
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("both must NACK: {e}"));
    for st in status.iter().filter(|s| s.open) {
        eprintln!(
            "{api_type} NACK: {}",
            st.type_status(type_url::ROUTE)
                .unwrap()
                .last_nack
                .as_deref()
                .unwrap()
        );
    }
    assert_eq!(get(on_skiff).await.unwrap(), (200, "A".into()));
    assert_eq!(get(on_envoy).await.unwrap(), (200, "A".into()));

    let mut good = docs.clone();
    good[1] = route("routes", "svc-b");
    let v3 = server.set_resources(resources(&good));
    server
        .wait_for(both_acked(v3, vec![type_url::ROUTE]), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until_body(on_skiff, "B").await;
    until_body(on_envoy, "B").await;
}

/// A TLS listener from LDS whose certificate is an SDS secret on the ADS stream (`sds_config:
/// {ads: {}}`): a listener warms until its secret arrives (the others serve meanwhile), a new
/// secret version applies to new handshakes, and a bad one is NACKed while the last good one
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sds_secrets_on_ads_warm_rotate_and_nack() {
    let dir = TempDir::new("sds");
    let ca = dir.path("ca");
    let issue = |name: &str| {
        dev_ca(
            &ca,
            &[&format!("{name}=spiffe://cluster.local/ns/shop/sa/web")],
        );
        let read = |f: &str| std::fs::read_to_string(ca.join(name).join(f)).unwrap();
        (read("cert-chain.pem"), read("key.pem"))
    };
    let secret = |name: &str, (chain, key): &(String, String)| {
        let indent = |s: &str| s.replace('\n', "\n      ");
        format!(
            "\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\nname: {name}\ntls_certificate:\n  certificate_chain:\n    inline_string: |\n      {}\n  private_key:\n    inline_string: |\n      {}\n",
            indent(chain.trim_end()),
            indent(key.trim_end())
        )
    };
    let listener = |name: &str, port: u16, cert: &str| {
        format!(
            r#"
"@type": type.googleapis.com/envoy.config.listener.v3.Listener
name: {name}
address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
filter_chains:
- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      common_tls_context:
        tls_certificate_sds_secret_configs:
        - name: {cert}
          sds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      route_config:
        virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200, body: {{inline_string: tls}}}}}}]}}]
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
        )
    };
    let leaf = |addr: SocketAddr| {
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + WAIT;
            loop {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return presented_leaf(addr, None);
                }
                assert!(Instant::now() < deadline, "{addr} never accepted");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (port, other_port) = (free_port(), free_port());
    let (https, other): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], port).into(),
        ([127, 0, 0, 1], other_port).into(),
    );
    let first = issue("v1");
    let web = listener("https", port, "web-cert");
    let server = Server::new();
    let v1 = server.set_resources(resources(&[web.clone(), secret("web-cert", &first)]));
    let (xds, _serving) = serve(&server).await;
    let proxy = Proxy::start(&bootstrap(Ads::Tcp(xds), "DELTA_GRPC", ""));
    acked(&server, &v1, &[type_url::LISTENER, type_url::SECRET]).await;
    assert_eq!(leaf(https).await.unwrap().trim(), first.0.trim());

    // A second listener naming a secret the server does not have: it warms, unbound, while
    // the first one serves.
    let second_listener = listener("other", other_port, "other-cert");
    let v2 = server.set_resources(resources(&[
        web.clone(),
        secret("web-cert", &first),
        second_listener.clone(),
    ]));
    acked(&server, &v2, &[type_url::LISTENER]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dumped = admin_json(&proxy, "/config_dump").to_string();
    assert!(
        dumped.contains("warming_state"),
        "the listener warms until its secret comes: {dumped}"
    );
    assert!(
        std::net::TcpStream::connect(other).is_err(),
        "a warming listener is not bound"
    );
    assert_eq!(leaf(https).await.unwrap().trim(), first.0.trim());

    // Its secret arrives: it starts, with it.
    let third = issue("v3");
    let v3 = server.set_resources(resources(&[
        web.clone(),
        secret("web-cert", &first),
        second_listener.clone(),
        secret("other-cert", &third),
    ]));
    acked(&server, &v3, &[type_url::SECRET]).await;
    assert_eq!(leaf(other).await.unwrap().trim(), third.0.trim());

    // A new version of a secret: new handshakes present it.
    let second = issue("v2");
    let v4 = server.set_resources(resources(&[
        web.clone(),
        secret("web-cert", &second),
        second_listener.clone(),
        secret("other-cert", &third),
    ]));
    acked(&server, &v4, &[type_url::SECRET]).await;
    assert_eq!(leaf(https).await.unwrap().trim(), second.0.trim());

    // A key that is not the certificate's: NACKed, and the last good secret keeps serving.
    let bad = (second.0.clone(), first.1.clone());
    server.set_resources(resources(&[
        web,
        secret("web-cert", &bad),
        second_listener,
        secret("other-cert", &third),
    ]));
    let status = server
        .wait_for(
            |s| {
                s.iter().any(|st| {
                    st.open
                        && st
                            .type_status(type_url::SECRET)
                            .is_some_and(|t| t.nacks > 0)
                })
            },
            WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let nack = status
        .iter()
        .find(|s| s.open)
        .and_then(|s| s.type_status(type_url::SECRET))
        .and_then(|t| t.last_nack.clone())
        .unwrap();
    assert!(
        nack.contains("web-cert") && nack.contains("does not match"),
        "{nack}"
    );
    assert_eq!(leaf(https).await.unwrap().trim(), second.0.trim());
    assert_eq!(
        stat(&proxy, "skiff.secret.web-cert.updates").as_deref(),
        Some("2")
    );
}

/// Istio's shape without ADS for secrets: the TLS context names `default` and `ROOTCA` on the
/// static cluster `sds-grpc`, a Unix socket (pilot-agent's). Skiff opens SDS's `StreamSecrets`
/// there, asks for exactly those names, serves with what arrives, and follows a rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_an_sds_server_on_a_unix_socket() {
    let dir = TempDir::new("sds-uds");
    let ca = dir.path("ca");
    let issue = |name: &str| {
        dev_ca(
            &ca,
            &[&format!("{name}=spiffe://cluster.local/ns/shop/sa/web")],
        );
        let read = |f: &str| std::fs::read_to_string(ca.join(name).join(f)).unwrap();
        (read("cert-chain.pem"), read("key.pem"))
    };
    let indent = |s: &str| s.trim_end().replace('\n', "\n      ");
    let secrets = |(chain, key): &(String, String)| {
        let root = std::fs::read_to_string(ca.join("root-cert.pem")).unwrap();
        vec![
            format!(
                "\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\nname: default\ntls_certificate:\n  certificate_chain:\n    inline_string: |\n      {}\n  private_key:\n    inline_string: |\n      {}\n",
                indent(chain),
                indent(key)
            ),
            format!(
                "\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\nname: ROOTCA\nvalidation_context:\n  trusted_ca:\n    inline_string: |\n      {}\n",
                indent(&root)
            ),
        ]
    };
    let first = issue("v1");
    let server = Server::new();
    let v1 = server.set_resources(resources(&secrets(&first)));
    let socket = dir.path("sds.sock");
    let _serving = server.serve_unix(tokio::net::UnixListener::bind(&socket).unwrap());

    let sds = |name: &str| {
        format!(
            "{{name: {name}, sds_config: {{api_config_source: {{api_type: GRPC, grpc_services: [{{envoy_grpc: {{cluster_name: sds-grpc}}}}], set_node_on_first_message_only: true, transport_api_version: V3}}, initial_fetch_timeout: 0s, resource_api_version: V3}}}}"
        )
    };
    let port = free_port();
    let proxy = Proxy::start(&format!(
        r#"
node: {{id: "sidecar~127.0.0.1~web-0.shop~shop.svc.cluster.local", cluster: web.shop}}
static_resources:
  listeners:
  - name: inbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs: [{default}]
            combined_validation_context:
              default_validation_context: {{match_subject_alt_names: [{{prefix: "spiffe://cluster.local/"}}]}}
              validation_context_sds_secret_config: {rootca}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          route_config:
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200}}}}]}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: sds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: "{socket}"}}}}}}}}]}}]
"#,
        default = sds("default"),
        rootca = sds("ROOTCA"),
        socket = socket.display(),
    ));
    let status = acked(&server, &v1, &[type_url::SECRET]).await;
    let stream = status.iter().find(|s| s.open).unwrap();
    assert_eq!(stream.protocol, xds_client::server::Protocol::StreamSecrets);
    assert_eq!(
        stream.node_id.as_deref(),
        Some("sidecar~127.0.0.1~web-0.shop~shop.svc.cluster.local")
    );
    let asked = &stream.types[type_url::SECRET];
    assert!(!asked.wildcard, "secrets are asked for by name");
    let https: SocketAddr = ([127, 0, 0, 1], port).into();
    let leaf = |want: String| {
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + WAIT;
            loop {
                let got = presented_leaf(https, None);
                if got.trim() == want.trim() {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "never presented:\n{want}\nbut:\n{got}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    leaf(first.0.clone()).await.unwrap();

    // pilot-agent rotates: the new certificate serves new handshakes.
    let second = issue("v2");
    let v2 = server.set_resources(resources(&secrets(&second)));
    acked(&server, &v2, &[type_url::SECRET]).await;
    leaf(second.0.clone()).await.unwrap();
    assert_eq!(
        stat(&proxy, "skiff.secret.default.updates").as_deref(),
        Some("2")
    );
}
