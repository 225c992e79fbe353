//! The store without a network: updates go straight to `Store::apply`, and the snapshot it
//! publishes is inspected.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use envoy_types::pb::google::protobuf::Any;
use xds_client::{Resource, Update, type_url};

use super::*;
use crate::{
    admin::AdminState,
    config::{Bootstrap, Format, Schema, Source},
    listener::{ActiveConns, ListenerManager},
    snapshot::{Live, Snapshot},
};

const BOOTSTRAP: &str = r#"
node: {id: test, cluster: test}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
  cds_config: {ads: {}, resource_api_version: V3}
  lds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: /tmp/none}}}}]}]
"#;

struct Fixture {
    store: Store,
    live: Arc<Live>,
    admin: Arc<AdminState>,
    schema: Schema,
}

impl Fixture {
    fn new() -> Self {
        Self::with(BOOTSTRAP)
    }

    fn with(yaml: &str) -> Self {
        let bootstrap: Bootstrap = Source {
            yaml: Some(yaml.to_string()),
            ..Default::default()
        }
        .load()
        .unwrap_or_else(|e| panic!("{e}"));
        let initial = Arc::new(Snapshot::new(&bootstrap));
        let live = Arc::new(Live::new(initial.clone()));
        let admin = Arc::new(AdminState::new(bootstrap.raw.clone()));
        let manager = ListenerManager::new(
            1,
            live.clone(),
            Arc::new(ActiveConns::default()),
            Duration::from_secs(1),
        );
        let mut store = Store::new(&bootstrap, &initial, manager, live.clone(), admin.clone());
        store.start().unwrap();
        Self {
            store,
            live,
            admin,
            schema: Schema::load(),
        }
    }

    /// Applies resources written as YAML documents (each with its `@type`), named by `name`
    /// (or `cluster_name`), at `version`; returns the rejected names and reasons.
    fn apply(&mut self, kind: &str, version: &str, docs: &[&str], removed: &[&str]) -> Vec<String> {
        let anys: Vec<(String, Any)> = docs
            .iter()
            .map(|d| {
                let value = Format::Yaml.read(d).unwrap();
                let name = value
                    .get("name")
                    .or_else(|| value.get("cluster_name"))
                    .and_then(|n| n.as_str())
                    .unwrap()
                    .to_string();
                (name, self.schema.inner().parse_any(value).unwrap())
            })
            .collect();
        let added = anys
            .iter()
            .map(|(name, any)| Resource { name, version, any })
            .collect();
        let update = Update::new(version, added, removed.to_vec());
        self.store
            .apply(kind, &update)
            .into_iter()
            .map(|r| format!("{}: {}", r.name, r.reason))
            .collect()
    }
}

fn cluster_eds(name: &str) -> String {
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: {name}
type: EDS
connect_timeout: 1s
eds_cluster_config: {{eds_config: {{ads: {{}}, initial_fetch_timeout: 0s}}, service_name: "{name}"}}
"#
    )
}

fn cla(name: &str, ports: &[u16]) -> String {
    let eps: Vec<String> = ports
        .iter()
        .map(|p| {
            format!("{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}}}")
        })
        .collect();
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
cluster_name: {name}
endpoints: [{{lb_endpoints: [{}]}}]
"#,
        eps.join(", ")
    )
}

fn http_listener(name: &str, route: &str) -> String {
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.listener.v3.Listener
name: {name}
address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      rds: {{route_config_name: {route}, config_source: {{ads: {{}}, initial_fetch_timeout: 0s}}}}
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
  routes: [{{match: {{prefix: /}}, route: {{cluster: {cluster}}}}}]
"#
    )
}

#[tokio::test]
async fn clusters_warm_until_their_endpoints_arrive() {
    let mut f = Fixture::new();
    assert!(
        f.apply(type_url::CLUSTER, "1", &[&cluster_eds("a")], &[])
            .is_empty()
    );
    assert!(f.live.load().clusters.get("a").is_none(), "warming");
    assert_eq!(f.store.wanted(type_url::ENDPOINT), ["a".to_string()].into());
    assert!(!f.store.warmed(type_url::ENDPOINT));
    assert!(
        f.apply(type_url::ENDPOINT, "1", &[&cla("a", &[9001, 9002])], &[])
            .is_empty()
    );
    let snapshot = f.live.load();
    let a = snapshot.clusters.get("a").expect("warm");
    assert_eq!(a.host_addrs().len(), 2);
    assert!(f.store.warmed(type_url::ENDPOINT));
}

/// Delta says an endpoint set or a route configuration does not exist: what waits for it stops
/// waiting (a cluster with no host, a listener whose routes answer 404), as in Envoy.
#[tokio::test]
async fn resources_the_server_says_do_not_exist_end_warming() {
    let mut f = Fixture::new();
    f.apply(type_url::CLUSTER, "1", &[&cluster_eds("a")], &[]);
    assert!(f.live.load().clusters.get("a").is_none(), "warming");
    let absent = f.store.apply(
        type_url::ENDPOINT,
        &Update::new("", Vec::new(), Vec::new()).with_absent(vec!["a"]),
    );
    assert!(absent.is_empty());
    let snapshot = f.live.load();
    let a = snapshot.clusters.get("a").expect("no longer warming");
    assert!(a.host_addrs().is_empty());
    assert!(f.store.warmed(type_url::CLUSTER));

    f.apply(type_url::LISTENER, "1", &[&http_listener("l", "r")], &[]);
    assert!(!f.store.warmed(type_url::LISTENER), "waiting for route r");
    f.store.apply(
        type_url::ROUTE,
        &Update::new("", Vec::new(), Vec::new()).with_absent(vec!["r"]),
    );
    assert!(f.store.warmed(type_url::LISTENER));
    // When it does arrive later, it is used.
    assert!(
        f.apply(type_url::ROUTE, "2", &[&route("r", "a")], &[])
            .is_empty()
    );
    assert!(f.live.load().routes.contains_key("r"));
}

/// The pool of the host at `port`, picked by round robin.
fn pool_of(cluster: &crate::cluster::Cluster, port: u16) -> *const crate::http::pool::HostPool {
    (0..8)
        .map(|_| cluster.pick(None).unwrap())
        .find(|h| h.host().addr.port() == port)
        .map(|h| Arc::as_ptr(&h.host().pool))
        .unwrap_or_else(|| panic!("no host on port {port}"))
}

#[tokio::test]
async fn endpoint_updates_keep_the_hosts_that_remain() {
    let mut f = Fixture::new();
    f.apply(type_url::CLUSTER, "1", &[&cluster_eds("a")], &[]);
    f.apply(type_url::ENDPOINT, "1", &[&cla("a", &[9001, 9002])], &[]);
    let cluster = f.live.load().clusters.get("a").unwrap().clone();
    let pool = pool_of(&cluster, 9001);
    f.apply(type_url::ENDPOINT, "2", &[&cla("a", &[9001, 9003])], &[]);
    // The same cluster object, updated in place; 9001 keeps its host and so its pool.
    assert!(Arc::ptr_eq(
        f.live.load().clusters.get("a").unwrap(),
        &cluster
    ));
    let mut addrs = cluster.host_addrs();
    addrs.sort();
    let want: Vec<std::net::SocketAddr> = vec![
        "127.0.0.1:9001".parse().unwrap(),
        "127.0.0.1:9003".parse().unwrap(),
    ];
    assert_eq!(addrs, want);
    assert_eq!(pool_of(&cluster, 9001), pool);
    assert_ne!(pool_of(&cluster, 9003), pool);
}

#[tokio::test]
async fn a_bad_resource_is_rejected_alone_and_the_rest_applies() {
    let mut f = Fixture::new();
    let bad = r#"
"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: bad
connect_timeout: 1s
lb_policy: MAGLEV
"#;
    let good = r#"
"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: good
connect_timeout: 1s
load_assignment: {cluster_name: good, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]}
"#;
    let rejected = f.apply(type_url::CLUSTER, "1", &[bad, good], &[]);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].starts_with("bad: lb_policy"), "{rejected:?}");
    assert!(rejected[0].contains("MAGLEV"), "{rejected:?}");
    assert!(f.live.load().clusters.get("good").is_some());
    assert!(f.live.load().clusters.get("bad").is_none());
}

#[tokio::test]
async fn listeners_warm_until_their_routes_arrive_and_removal_unbinds() {
    let mut f = Fixture::new();
    assert!(
        f.apply(type_url::LISTENER, "1", &[&http_listener("web", "r1")], &[])
            .is_empty()
    );
    assert!(
        f.live.load().listener("web").is_none(),
        "warming without its routes"
    );
    assert_eq!(f.store.wanted(type_url::ROUTE), ["r1".to_string()].into());
    assert!(!f.admin.live.load(std::sync::atomic::Ordering::Acquire));
    assert!(
        f.apply(type_url::ROUTE, "1", &[&route("r1", "c")], &[])
            .is_empty()
    );
    let snapshot = f.live.load();
    assert!(snapshot.listener("web").is_some());
    assert!(snapshot.route_table("r1").is_some());
    let bound = f.admin.listeners.lock().unwrap().clone();
    assert_eq!(bound.len(), 1, "{bound:?}");
    let addr = bound[0].1;
    assert!(std::net::TcpStream::connect(addr).is_ok());

    // Removed from LDS: gone from the snapshot, its socket closed, its routes forgotten.
    f.apply(type_url::LISTENER, "2", &[], &["web"]);
    assert!(f.live.load().listener("web").is_none());
    assert!(f.store.wanted(type_url::ROUTE).is_empty());
    assert!(f.live.load().route_table("r1").is_none());
    assert!(f.admin.listeners.lock().unwrap().is_empty());
    for _ in 0..50 {
        if std::net::TcpStream::connect(addr).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the removed listener still accepts on {addr}");
}

#[tokio::test]
async fn a_listener_that_cannot_bind_is_rejected() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut f = Fixture::new();
    let l = http_listener("web", "r1").replace("port_value: 0", &format!("port_value: {port}"));
    assert!(
        f.apply(type_url::LISTENER, "1", &[&l], &[]).is_empty(),
        "warming"
    );
    // Its routes arrive: it warms, binding fails, and it is dropped (logged, not NACKed on
    // RDS, whose resources are fine).
    assert!(
        f.apply(type_url::ROUTE, "1", &[&route("r1", "c")], &[])
            .is_empty()
    );
    assert!(f.live.load().listener("web").is_none());
    // A listener that is active at once is NACKed on LDS.
    let l2 = l
        .replace("name: web", "name: web2")
        .replace("stat_prefix: web", "stat_prefix: web2");
    let rejected = f.apply(type_url::LISTENER, "2", &[&l2], &[]);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].starts_with("web2: cannot bind"), "{rejected:?}");
    assert!(f.live.load().listener("web2").is_none());
}

#[tokio::test]
async fn static_names_cannot_be_replaced() {
    let mut f = Fixture::with(&format!(
        "{BOOTSTRAP}\n  listeners:\n  - name: admin-ish\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    filter_chains: [{{filters: [{{name: t, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: x}}}}]}}]\n"
    ));
    let l = http_listener("admin-ish", "r1");
    let rejected = f.apply(type_url::LISTENER, "1", &[&l], &[]);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("static listener"), "{rejected:?}");
}

#[tokio::test]
async fn the_config_dump_shows_versions() {
    let mut f = Fixture::new();
    f.apply(type_url::CLUSTER, "v7", &[&cluster_eds("a")], &[]);
    let dump = f.admin.dynamic.lock().unwrap().clone();
    assert_eq!(dump.clusters_warming.len(), 1);
    assert_eq!(dump.clusters_warming[0].version, "v7");
    assert_eq!(dump.cds_version, "v7");
    f.apply(type_url::ENDPOINT, "e1", &[&cla("a", &[9001])], &[]);
    let dump = f.admin.dynamic.lock().unwrap().clone();
    assert_eq!(dump.clusters_active.len(), 1);
    assert_eq!(dump.endpoints[0].version, "e1");
}

#[tokio::test]
async fn istio_outbound_cluster_sends_only_to_plaintext_endpoints_until_mtls() {
    let mut f = Fixture::new();
    let c = r#"
"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: "outbound|80||web.shop.svc.cluster.local"
type: EDS
connect_timeout: 10s
lb_policy: LEAST_REQUEST
eds_cluster_config:
  eds_config: {ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}
  service_name: "outbound|80||web.shop.svc.cluster.local"
filters:
- name: istio.metadata_exchange
  typed_config:
    "@type": type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
    protocol: istio-peer-exchange
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: {idle_timeout: 3600s}
    use_downstream_protocol_config: {http_protocol_options: {}, http2_protocol_options: {}}
circuit_breakers:
  thresholds: [{max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true}]
metadata: {filter_metadata: {istio: {services: [{host: web.shop.svc.cluster.local, name: web, namespace: shop}]}}}
transport_socket_matches:
- name: tlsMode-istio
  match: {tlsMode: istio}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      sni: outbound_.80_._.web.shop.svc.cluster.local
- name: tlsMode-disabled
  match: {}
  transport_socket:
    name: envoy.transport_sockets.raw_buffer
    typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}
"#;
    assert_eq!(
        f.apply(type_url::CLUSTER, "1", &[c], &[]),
        Vec::<String>::new()
    );
    let la = r#"
"@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
cluster_name: "outbound|80||web.shop.svc.cluster.local"
endpoints:
- lb_endpoints:
  - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}
    metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}, istio: {workload: web-0}}}
    load_balancing_weight: 1
  - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 80}}}
    load_balancing_weight: 1
  load_balancing_weight: 2
policy: {overprovisioning_factor: 140}
"#;
    assert_eq!(
        f.apply(type_url::ENDPOINT, "1", &[la], &[]),
        Vec::<String>::new()
    );
    let snapshot = f.live.load();
    let cluster = snapshot
        .clusters
        .get("outbound|80||web.shop.svc.cluster.local")
        .unwrap();
    let addrs: Vec<String> = cluster
        .host_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        addrs,
        ["10.0.0.1:80", "10.0.0.2:80"],
        "both endpoints serve: the tlsMode: istio one over TLS"
    );
    let tls: Vec<bool> = ["10.0.0.1:80", "10.0.0.2:80"]
        .iter()
        .map(|a| {
            let addr: SocketAddr = a.parse().unwrap();
            (0..64)
                .map(|_| cluster.pick(None).unwrap())
                .find(|h| h.host().addr == addr)
                .unwrap()
                .host()
                .tls
                .is_some()
        })
        .collect();
    assert_eq!(tls, [true, false], "tlsMode: istio picks the TLS transport");

    // Real limits would change traffic: rejected.
    let limited = c
        .replace("max_connections: 4294967295", "max_connections: 100")
        .replace("name: \"outbound|80||", "name: \"outbound|81||");
    let rejected = f.apply(type_url::CLUSTER, "2", &[c, &limited], &[]);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].contains("circuit breaker limits"),
        "{rejected:?}"
    );
}
