//! Applying a large CDS/EDS push: 10,000 clusters shaped like istiod's outbound clusters
//! (EDS, circuit breakers, Istio metadata, `tlsMode` transport socket matches), each with two
//! endpoints. Measures the time to apply the push and the memory each cluster keeps.
//!
//! Run with `cargo bench -p skiff-benches --bench xds`. Memory is the growth of the process's
//! resident set while the store holds the clusters (config, run-time cluster, hosts, and the
//! resource bytes kept for `/config_dump`), divided by the cluster count; it is printed once
//! before the timings.

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use envoy_types::pb::google::protobuf::Any;
use skiff_proxy::{
    admin::AdminState,
    config::{Bootstrap, Format, Schema, Source},
    listener::{ActiveConns, ListenerManager},
    snapshot::{Live, Snapshot},
    xds::Store,
};
use xds_client::{Resource, Update, type_url};

const CLUSTERS: usize = 10_000;

const BOOTSTRAP: &str = r#"
node: {id: bench, cluster: bench}
dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
  cds_config: {ads: {}}
static_resources:
  clusters:
  - name: xds-grpc
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: /tmp/none}}}}]}]
"#;

fn cluster(i: usize) -> String {
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
name: "outbound|8080||svc{i}.ns{n}.svc.cluster.local"
type: EDS
connect_timeout: 10s
eds_cluster_config:
  eds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
  service_name: "outbound|8080||svc{i}.ns{n}.svc.cluster.local"
circuit_breakers:
  thresholds: [{{max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295, track_remaining: true}}]
metadata: {{filter_metadata: {{istio: {{services: [{{host: svc{i}.ns{n}.svc.cluster.local, name: svc{i}, namespace: ns{n}}}]}}}}}}
transport_socket_matches:
- name: tlsMode-disabled
  match: {{}}
  transport_socket:
    name: envoy.transport_sockets.raw_buffer
    typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}
"#,
        n = i % 50
    )
}

fn assignment(i: usize) -> String {
    let a = (i >> 8) & 0xff;
    let b = i & 0xff;
    format!(
        r#"
"@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
cluster_name: "outbound|8080||svc{i}.ns{n}.svc.cluster.local"
endpoints:
- locality: {{region: r1, zone: z1}}
  lb_endpoints:
  - endpoint: {{address: {{socket_address: {{address: 10.1.{a}.{b}, port_value: 8080}}}}}}
    load_balancing_weight: 1
  - endpoint: {{address: {{socket_address: {{address: 10.2.{a}.{b}, port_value: 8080}}}}}}
    load_balancing_weight: 1
  load_balancing_weight: 2
"#,
        n = i % 50
    )
}

/// `(name, Any)` of every resource, parsed once.
fn resources(schema: &Schema, make: fn(usize) -> String) -> Vec<(String, Any)> {
    (0..CLUSTERS)
        .map(|i| {
            let value = Format::Yaml.read(&make(i)).expect("valid YAML");
            let name = value
                .get("name")
                .or_else(|| value.get("cluster_name"))
                .and_then(|n| n.as_str())
                .expect("named")
                .to_string();
            (
                name,
                schema.inner().parse_any(value).expect("valid resource"),
            )
        })
        .collect()
}

fn store() -> Store {
    let bootstrap: Bootstrap = Source {
        yaml: Some(BOOTSTRAP.to_string()),
        ..Default::default()
    }
    .load()
    .expect("valid bootstrap");
    let initial = Arc::new(Snapshot::new(&bootstrap));
    let live = Arc::new(Live::new(initial.clone()));
    let admin = Arc::new(AdminState::new(bootstrap.raw.clone()));
    let manager = ListenerManager::new(
        1,
        live.clone(),
        Arc::new(ActiveConns::default()),
        Duration::from_secs(1),
    );
    let mut store = Store::new(&bootstrap, &initial, manager, live, admin);
    store.start().expect("nothing to bind");
    store
}

fn apply(store: &mut Store, kind: &str, resources: &[(String, Any)]) {
    let added = resources
        .iter()
        .map(|(name, any)| Resource {
            name,
            version: "1",
            any,
        })
        .collect();
    let rejected = store.apply(kind, &Update::new("1", added, Vec::new()));
    assert!(rejected.is_empty(), "{rejected:?}");
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let schema = Schema::load();
    let clusters = resources(&schema, cluster);
    let assignments = resources(&schema, assignment);
    drop(schema);

    // Memory: one store holding the 10k clusters and their endpoints.
    let before = rss();
    let mut held = store();
    apply(&mut held, type_url::CLUSTER, &clusters);
    apply(&mut held, type_url::ENDPOINT, &assignments);
    let after = rss();
    eprintln!(
        "xds/10k_clusters: resident memory {:.1} MB for {CLUSTERS} clusters with 2 endpoints \
         each: {:.2} KB per cluster",
        (after - before) as f64 / 1e6,
        (after - before) as f64 / CLUSTERS as f64 / 1024.0
    );
    drop(held);

    let raw: usize = clusters
        .iter()
        .chain(&assignments)
        .map(|(_, a)| a.value.len())
        .sum();
    eprintln!(
        "xds/10k_clusters: the resources themselves are {:.2} KB per cluster encoded",
        raw as f64 / CLUSTERS as f64 / 1024.0
    );

    let mut group = c.benchmark_group("xds");
    group.sample_size(10);
    // The baseline: decoding the same protobufs, which any proxy pays before doing anything.
    group.bench_function("decode_only_10k_clusters_cds_and_eds", |b| {
        use prost::Message;
        b.iter(|| {
            for (_, any) in black_box(&clusters) {
                black_box(
                    envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(
                        any.value.as_slice(),
                    )
                    .expect("valid"),
                );
            }
            for (_, any) in black_box(&assignments) {
                black_box(
                    envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                        any.value.as_slice(),
                    )
                    .expect("valid"),
                );
            }
        });
    });
    group.bench_function("apply_10k_clusters_cds", |b| {
        b.iter_batched(
            store,
            |mut s| {
                apply(&mut s, type_url::CLUSTER, black_box(&clusters));
                s
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("apply_10k_clusters_cds_then_eds", |b| {
        b.iter_batched(
            store,
            |mut s| {
                apply(&mut s, type_url::CLUSTER, black_box(&clusters));
                apply(&mut s, type_url::ENDPOINT, black_box(&assignments));
                s
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(xds, benches);
criterion_main!(xds);
