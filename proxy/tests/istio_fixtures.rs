//! Compatibility with real istiod output: every resource of the Istio config dumps in the
//! directory `SKIFF_ISTIO_FIXTURES` names is served from the test xDS server to the proxy binary,
//! which must ACK each one and show it back, unchanged, in `/config_dump`.
//!
//! The dumps are not part of this repository; `.ci/run` points the variable at them. When it is
//! unset the test says loudly that it did not run.
//!
//! Each dump is served alone, to a proxy in its own network namespace (Istio's listeners bind
//! 15001 and 15006 on every address), over a Unix socket as pilot-agent serves istiod's stream.
//! The dumps are excerpts: where a resource references one the dump lacks (a listener's route
//! configuration), or is referenced by nothing (endpoints without their cluster), the test
//! serves a minimal counterpart of its own, which is left out of the comparison. EDS clusters
//! whose endpoints are missing get none: the server says so, and warming ends. Secrets are
//! counted and reported: SDS is not subscribed to yet.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::*;
use xds_client::{
    schema::Schema,
    server::{Resources, Server},
    type_url,
};

const ENV: &str = "SKIFF_ISTIO_FIXTURES";

/// What one dump holds, by kind.
#[derive(Default, Debug)]
struct Dump {
    /// Resources served over xDS and compared: type URL → name → JSON (with `@type`).
    dynamic: BTreeMap<&'static str, BTreeMap<String, Value>>,
    static_listeners: Vec<Value>,
    static_clusters: Vec<Value>,
    /// Static endpoint configs are the bootstrap clusters' own `load_assignment`s; they are
    /// checked by conversion only.
    static_endpoints: Vec<Value>,
    secrets: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_of_the_istio_dumps_is_acked_and_dumped_back() {
    let Some(dir) = std::env::var_os(ENV) else {
        eprintln!(
            "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! NOT RUN: {ENV} is unset, so the Istio compatibility test did not run.\n\
             !! Point it at a directory of istiod config dumps (CI sets it).\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    };
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the Istio compatibility test runs the proxy in a network namespace: run it as root"
    );
    let schema = Schema::load();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{ENV}={}: {e}", Path::new(&dir).display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.json dumps in {}",
        Path::new(&dir).display()
    );

    // The bootstrap's own clusters (Istio's `agent` and `prometheus_stats`), from whichever dump
    // has them: the static listeners of every dump reference them.
    let dumps: Vec<(PathBuf, Dump)> = files.iter().map(|f| (f.clone(), read_dump(f))).collect();
    let bootstrap_clusters: Vec<Value> = dumps
        .iter()
        .flat_map(|(_, d)| d.static_clusters.iter().cloned())
        .fold(Vec::new(), |mut all, c| {
            if !all.iter().any(|a: &Value| a["name"] == c["name"]) {
                all.push(c);
            }
            all
        });

    let mut totals = BTreeMap::<&str, usize>::new();
    let mut secrets = 0;
    for (i, (file, dump)) in dumps.iter().enumerate() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for cla in &dump.static_endpoints {
            if cla.to_string().contains("\"pipe\"") {
                // xds-grpc is the control-plane connection (which may be a Unix socket);
                // sds-grpc is pilot-agent's SDS socket. Neither is a data-path cluster.
                eprintln!(
                    "Istio dumps: {name}: static endpoints {} on a Unix socket not checked \
                     (Unix-socket upstreams are supported for the control plane only)",
                    cla["cluster_name"]
                );
                continue;
            }
            let any = schema.parse_any(cla.clone()).unwrap();
            skiff_proxy::config::xds::load_assignment(&any).unwrap_or_else(|e| {
                panic!("{name}: static endpoints {}: {e}", cla["cluster_name"])
            });
        }
        let served = check_dump(&schema, i, &name, dump, &bootstrap_clusters).await;
        for (t, n) in served {
            *totals.entry(t).or_default() += n;
        }
        secrets += dump.secrets;
    }
    eprintln!("Istio dumps: ACKed and dumped back: {totals:?}");
    if secrets > 0 {
        eprintln!(
            "Istio dumps: {secrets} secrets not served: the proxy does not subscribe to SDS yet \
             (mTLS is a separate issue)"
        );
    }
    assert!(totals.get(type_url::LISTENER).copied().unwrap_or(0) >= 27);
}

/// Serves one dump and checks it; returns how many resources of each type were compared.
async fn check_dump(
    schema: &Schema,
    index: usize,
    name: &str,
    dump: &Dump,
    bootstrap_clusters: &[Value],
) -> BTreeMap<&'static str, usize> {
    let mut served = Resources::new();
    let scaffolding = scaffolding(dump);
    for (type_url, resources) in dump.dynamic.iter().chain(scaffolding.iter()) {
        for (n, v) in resources {
            let any = schema
                .parse_any(v.clone())
                .unwrap_or_else(|e| panic!("{name}: {type_url} {n}: {e}"));
            served
                .insert(any)
                .unwrap_or_else(|e| panic!("{name}: {type_url} {n}: {e}"));
        }
    }
    let types: BTreeSet<&str> = dump
        .dynamic
        .keys()
        .chain(scaffolding.keys())
        .copied()
        .collect();
    let server = Server::new();
    let version = server.set_resources(served);
    let dir = TempDir::new("istio");
    let sock = dir.path("XDS");
    let _serving = server.serve_unix(tokio::net::UnixListener::bind(&sock).unwrap());

    let ns = format!("skiff-fx-{}-{index}", std::process::id() % 100_000);
    let _netns = Netns::new(&ns);
    let config = bootstrap(&sock, &dump.static_listeners, bootstrap_clusters);
    let cfg = dir.path("bootstrap.json");
    std::fs::write(&cfg, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let log = std::fs::File::create(dir.path("proxy.log")).unwrap();
    let mut proxy = Running(
        Command::new("ip")
            .args(["netns", "exec", &ns, proxy_bin(), "-c"])
            .arg(&cfg)
            .args(["--concurrency", "1"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
        dir.path("proxy.log"),
    );

    let result = server
        .wait_for(
            |s| {
                s.iter().any(|st| {
                    st.open
                        && types.iter().all(|t| {
                            st.acked(t, &version)
                                || st.type_status(t).is_some_and(|ts| ts.nacks > 0)
                        })
                })
            },
            Duration::from_secs(60),
        )
        .await;
    let status = result.unwrap_or_else(|e| panic!("{name}: {e}\n{}", proxy.log()));
    let stream = status.iter().find(|s| s.open).unwrap();
    for t in &types {
        let ts = stream.type_status(t).unwrap();
        assert!(
            ts.nacks == 0 && ts.acked_version.as_deref() == Some(version.as_str()),
            "{name}: {t} was not ACKed: {ts:#?}\n{}",
            proxy.log()
        );
    }
    assert!(
        proxy.0.try_wait().unwrap().is_none(),
        "{name}: the proxy exited"
    );

    // The config dump shows every served resource as it was sent.
    let body = admin_get(&ns, "/config_dump?include_eds");
    let shown = dumped_resources(&serde_json::from_str(&body).unwrap());
    let mut compared = BTreeMap::new();
    for (type_url, resources) in &dump.dynamic {
        for (n, sent) in resources {
            let got = shown
                .get(&(*type_url, n.clone()))
                .unwrap_or_else(|| panic!("{name}: {type_url} {n} is not in /config_dump"));
            assert_eq!(
                canonical(schema, got),
                canonical(schema, sent),
                "{name}: {type_url} {n} differs in /config_dump"
            );
            *compared.entry(*type_url).or_default() += 1;
        }
    }
    drop(proxy);
    compared
}

/// Reads the resources of a config dump by kind.
fn read_dump(file: &Path) -> Dump {
    let text = std::fs::read_to_string(file).unwrap();
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut d = Dump::default();
    let mut add = |t: &'static str, r: &Value, key: &str| {
        let n = r[key].as_str().unwrap_or_default().to_string();
        d.dynamic.entry(t).or_default().insert(n, r.clone());
    };
    for c in v["configs"].as_array().unwrap() {
        for l in c["dynamic_listeners"].as_array().into_iter().flatten() {
            let r = l["active_state"]["listener"].clone();
            let r = if r.is_null() {
                l["warming_state"]["listener"].clone()
            } else {
                r
            };
            add(type_url::LISTENER, &r, "name");
        }
        for k in ["dynamic_active_clusters", "dynamic_warming_clusters"] {
            for e in c[k].as_array().into_iter().flatten() {
                add(type_url::CLUSTER, &e["cluster"], "name");
            }
        }
        for e in c["dynamic_route_configs"].as_array().into_iter().flatten() {
            add(type_url::ROUTE, &e["route_config"], "name");
        }
        for e in c["dynamic_endpoint_configs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            add(type_url::ENDPOINT, &e["endpoint_config"], "cluster_name");
        }
    }
    for c in v["configs"].as_array().unwrap() {
        for e in c["static_listeners"].as_array().into_iter().flatten() {
            d.static_listeners.push(e["listener"].clone());
        }
        for e in c["static_clusters"].as_array().into_iter().flatten() {
            d.static_clusters.push(e["cluster"].clone());
        }
        for e in c["static_endpoint_configs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            d.static_endpoints.push(e["endpoint_config"].clone());
        }
        d.secrets += c["dynamic_active_secrets"].as_array().map_or(0, Vec::len);
    }
    d
}

/// What the dump references but lacks: EDS clusters for its endpoints, empty route
/// configurations for its listeners' RDS names, and listeners naming its orphan route
/// configurations.
fn scaffolding(d: &Dump) -> BTreeMap<&'static str, BTreeMap<String, Value>> {
    let mut out: BTreeMap<&'static str, BTreeMap<String, Value>> = BTreeMap::new();
    let has = |t: &str, n: &str| d.dynamic.get(t).is_some_and(|m| m.contains_key(n));
    // EDS clusters whose endpoints the dump lacks get none: the server's delta
    // `removed_resources` says they do not exist, which ends their warming (as in Envoy).
    for n in d
        .dynamic
        .get(type_url::ENDPOINT)
        .into_iter()
        .flat_map(|m| m.keys())
    {
        if !has(type_url::CLUSTER, n) {
            out.entry(type_url::CLUSTER).or_default().insert(
                n.clone(),
                json!({
                    "@type": type_url::CLUSTER, "name": n, "type": "EDS", "connect_timeout": "1s",
                    "eds_cluster_config": {"service_name": n, "eds_config": {"ads": {}, "resource_api_version": "V3"}}
                }),
            );
        }
    }
    let mut rds = BTreeSet::new();
    for l in d
        .dynamic
        .get(type_url::LISTENER)
        .into_iter()
        .flat_map(|m| m.values())
    {
        collect_rds(l, &mut rds);
    }
    for (i, n) in d
        .dynamic
        .get(type_url::ROUTE)
        .into_iter()
        .flat_map(|m| m.keys())
        .filter(|n| !rds.contains(*n))
        .enumerate()
    {
        // A route configuration no listener of the dump names: a listener that only names it
        // (it never binds) makes the proxy subscribe to it.
        let listener = format!("skiff-test-rds-{i}");
        out.entry(type_url::LISTENER).or_default().insert(
            listener.clone(),
            json!({
                "@type": type_url::LISTENER,
                "name": listener,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 20000 + i}},
                "bind_to_port": false,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "rds",
                        "rds": {"route_config_name": n, "config_source": {"ads": {}, "resource_api_version": "V3"}},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }]
                    }
                }]}]
            }),
        );
    }
    for n in rds {
        if !has(type_url::ROUTE, &n) {
            out.entry(type_url::ROUTE)
                .or_default()
                .insert(n.clone(), json!({"@type": type_url::ROUTE, "name": n}));
        }
    }
    out
}

/// Every `rds.route_config_name` in a listener.
fn collect_rds(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(n) = m.get("rds").and_then(|r| r["route_config_name"].as_str()) {
                out.insert(n.to_string());
            }
            m.values().for_each(|v| collect_rds(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_rds(v, out)),
        _ => {}
    }
}

/// An Istio-shaped bootstrap: ADS (delta, as Istio does) over the Unix socket, the admin on
/// 127.0.0.1:15000 in the namespace, and the dump's static resources.
fn bootstrap(sock: &Path, listeners: &[Value], clusters: &[Value]) -> Value {
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("@type");
        v
    };
    let mut static_clusters: Vec<Value> = clusters.iter().map(strip).collect();
    static_clusters.push(json!({
        "name": "xds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"pipe": {"path": sock.display().to_string()}}}}
        ]}]}
    }));
    json!({
        "node": {
            "id": "sidecar~10.244.0.7~productpage-v1-0.default~default.svc.cluster.local",
            "cluster": "productpage.default",
            "metadata": {"CLUSTER_ID": "Kubernetes", "NAMESPACE": "default"}
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
            },
            "cds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
        },
        "static_resources": {
            "listeners": listeners.iter().map(strip).collect::<Vec<_>>(),
            "clusters": static_clusters
        }
    })
}

/// The dynamic resources a `/config_dump` shows, by (type URL, name).
fn dumped_resources(dump: &Value) -> BTreeMap<(&'static str, String), Value> {
    let d = read_dump_value(dump);
    let mut out = BTreeMap::new();
    for (t, m) in d.dynamic {
        for (n, v) in m {
            out.insert((t, n), v);
        }
    }
    out
}

fn read_dump_value(v: &Value) -> Dump {
    let dir = TempDir::new("dump");
    let f = dir.path("dump.json");
    std::fs::write(&f, v.to_string()).unwrap();
    read_dump(&f)
}

/// A resource as the proto3 JSON mapping prints it: the same message always compares equal,
/// whatever the order of its map entries or the spelling of its defaults.
fn canonical(schema: &Schema, v: &Value) -> Value {
    let any = schema.parse_any(v.clone()).unwrap();
    let full = any.type_url.rsplit('/').next().unwrap().to_string();
    schema.to_value(&full, &any.value).unwrap()
}

/// A network namespace with loopback up; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Self {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        sh(&["ip", "netns", "add", name]);
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        Self(name.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// GETs `path` from the admin at 127.0.0.1:15000 in namespace `ns`, retrying while it comes up.
fn admin_get(ns: &str, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = path.to_string();
        match within_netns(ns, move || http_get(([127, 0, 0, 1], 15000).into(), &p)) {
            Ok((200, body)) => return body,
            Ok((status, body)) => panic!("{path}: {status} {body}"),
            Err(e) => assert!(Instant::now() < deadline, "the admin never came up: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The proxy process, killed on drop.
struct Running(Child, PathBuf);

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
