//! The test xDS server over real gRPC on loopback: in-process servers driven by envoy-types'
//! generated ADS client, directories loaded from disk, and the `xds-server` binary.

#![cfg(feature = "server")]

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, Resource,
};
use tonic::Code;
use xds_client::{
    schema::Schema,
    server::{LoadError, Protocol, Resources, Server, resource_version},
    type_url::{CLUSTER, ENDPOINT},
};

use support::*;

#[tokio::test]
async fn sotw_wildcard_cds_gets_every_cluster_and_the_ack_is_recorded() {
    let server = Server::new();
    server.set_resources(resources([
        cluster("backend", 1),
        cluster("frontend", 1),
        endpoints("backend", 9080),
    ]));
    let running = serve(&server).await;
    let metadata = [
        ("authorization", "Bearer t0ken"),
        ("clusterid", "Kubernetes"),
    ];
    let mut ads = SotwAds::connect(running.addr, &metadata).await;

    ads.send(DiscoveryRequest {
        node: Some(node(
            "sidecar~10.0.0.7~web-0.default~default.svc.cluster.local",
        )),
        ..sotw_request(CLUSTER, &[])
    })
    .await;
    let response = ads.recv().await;
    assert_eq!(response.type_url, CLUSTER);
    assert_eq!(response.version_info, "1");
    assert_eq!(cluster_names(&response.resources), ["backend", "frontend"]);

    ads.send(sotw_ack(&response, &[])).await;
    let status = server
        .wait_for(|s| s.len() == 1 && s[0].acked(CLUSTER, "1"), WAIT)
        .await
        .unwrap();
    let stream = &status[0];
    assert_eq!(stream.protocol, Protocol::Sotw);
    assert!(stream.open);
    assert_eq!(
        stream.node_id.as_deref(),
        Some("sidecar~10.0.0.7~web-0.default~default.svc.cluster.local")
    );
    assert_eq!(stream.metadata_value("authorization"), Some("Bearer t0ken"));
    assert_eq!(stream.metadata_value("clusterid"), Some("Kubernetes"));
    let cds = stream.type_status(CLUSTER).unwrap();
    assert!(cds.wildcard);
    assert_eq!((cds.acks, cds.nacks, cds.responses), (1, 0, 1));
    ads.expect_nothing().await;
    running.shutdown().await;
}

#[tokio::test]
async fn sotw_named_eds_gets_only_the_named_resources() {
    let server = Server::new();
    server.set_resources(resources([
        endpoints("backend", 9080),
        endpoints("frontend", 9081),
    ]));
    let running = serve(&server).await;
    let mut ads = SotwAds::connect(running.addr, &[]).await;

    ads.send(sotw_request(ENDPOINT, &["frontend"])).await;
    let response = ads.recv().await;
    assert_eq!(response.type_url, ENDPOINT);
    assert_eq!(
        endpoint_ports(&response.resources),
        [("frontend".to_string(), 9081)]
    );

    ads.send(sotw_ack(&response, &["frontend", "backend"]))
        .await;
    let response = ads.recv().await;
    assert_eq!(
        endpoint_ports(&response.resources),
        [
            ("backend".to_string(), 9080),
            ("frontend".to_string(), 9081)
        ]
    );
    running.shutdown().await;
}

#[tokio::test]
async fn sotw_push_delivers_a_new_version_to_an_open_stream() {
    let server = Server::new();
    server.set_resources(resources([cluster("backend", 1), cluster("frontend", 1)]));
    let running = serve(&server).await;
    let mut ads = SotwAds::connect(running.addr, &[]).await;
    ads.send(sotw_request(CLUSTER, &[])).await;
    let first = ads.recv().await;
    ads.send(sotw_ack(&first, &[])).await;
    server
        .wait_for(|s| s.iter().any(|s| s.acked(CLUSTER, "1")), WAIT)
        .await
        .unwrap();

    let version = server.set_resources(resources([cluster("backend", 5)]));
    assert_eq!(version, "2");
    let pushed = ads.recv().await;
    assert_eq!(pushed.version_info, "2");
    assert_ne!(pushed.nonce, first.nonce);
    assert_eq!(cluster_names(&pushed.resources), ["backend"]);
    assert_eq!(connect_timeout(&pushed.resources[0]), 5);

    // The same set again is not a new version and pushes nothing.
    assert_eq!(
        server.set_resources(resources([cluster("backend", 5)])),
        "2"
    );
    ads.send(sotw_ack(&pushed, &[])).await;
    server
        .wait_for(|s| s.iter().any(|s| s.acked(CLUSTER, "2")), WAIT)
        .await
        .unwrap();
    ads.expect_nothing().await;
    running.shutdown().await;
}

#[tokio::test]
async fn sotw_nack_is_recorded_with_its_error_detail() {
    let server = Server::new();
    server.set_resources(resources([cluster("backend", 1)]));
    let running = serve(&server).await;
    let mut ads = SotwAds::connect(running.addr, &[]).await;
    ads.send(sotw_request(CLUSTER, &[])).await;
    let response = ads.recv().await;
    ads.send(sotw_nack(&response, "cluster backend: no endpoints"))
        .await;

    let status = server
        .wait_for(
            |s| {
                s.iter()
                    .any(|s| s.type_status(CLUSTER).is_some_and(|t| t.nacks == 1))
            },
            WAIT,
        )
        .await
        .unwrap();
    let cds = status[0].type_status(CLUSTER).unwrap();
    assert_eq!(
        cds.last_nack.as_deref(),
        Some("cluster backend: no endpoints")
    );
    assert_eq!(cds.acked_version, None);
    assert_eq!(cds.sent_version.as_deref(), Some("1"));
    // A NACK is not answered: the server has nothing better to send.
    ads.expect_nothing().await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_request_without_type_url_ends_only_its_stream() {
    let server = Server::new();
    server.set_resources(resources([cluster("backend", 1)]));
    let running = serve(&server).await;
    let mut bad = SotwAds::connect(running.addr, &[]).await;
    let mut good = SotwAds::connect(running.addr, &[]).await;

    bad.send(sotw_request("", &[])).await;
    let status = bad.recv_end().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("type_url"), "{status:?}");

    good.send(sotw_request(CLUSTER, &[])).await;
    assert_eq!(cluster_names(&good.recv().await.resources), ["backend"]);
    running.shutdown().await;
}

#[tokio::test]
async fn delta_sends_everything_first_then_removals() {
    let server = Server::new();
    server.set_resources(resources([cluster("backend", 1), cluster("frontend", 1)]));
    let running = serve(&server).await;
    let mut ads = DeltaAds::connect(running.addr).await;

    ads.send(DeltaDiscoveryRequest {
        node: Some(node("delta-node")),
        ..delta_subscribe(CLUSTER, &[])
    })
    .await;
    let first = ads.recv().await;
    assert_eq!(first.system_version_info, "1");
    assert_eq!(resource_names(&first.resources), ["backend", "frontend"]);
    assert_eq!(
        first.resources[0].version,
        resource_version(&cluster("backend", 1))
    );
    ads.send(delta_ack(&first)).await;
    // Pushing before the ACK arrives would make it stale, and not counted.
    server
        .wait_for(|s| s.iter().any(|s| s.acked(CLUSTER, "1")), WAIT)
        .await
        .unwrap();

    server.set_resources(resources([cluster("frontend", 1)]));
    let pushed = ads.recv().await;
    assert_eq!(pushed.system_version_info, "2");
    assert!(pushed.resources.is_empty(), "{pushed:?}");
    assert_eq!(pushed.removed_resources, ["backend"]);
    ads.send(delta_ack(&pushed)).await;

    let status = server
        .wait_for(|s| s.iter().any(|s| s.acked(CLUSTER, "2")), WAIT)
        .await
        .unwrap();
    assert_eq!(status[0].protocol, Protocol::Delta);
    assert_eq!(status[0].node_id.as_deref(), Some("delta-node"));
    assert_eq!(status[0].type_status(CLUSTER).unwrap().acks, 2);
    running.shutdown().await;
}

#[tokio::test]
async fn delta_initial_resource_versions_avoid_resending_after_a_restart() {
    let server = Server::new();
    server.set_resources(resources([
        cluster("a", 1),
        cluster("b", 1),
        cluster("c", 1),
    ]));
    let running = serve(&server).await;
    let mut ads = DeltaAds::connect(running.addr).await;
    ads.send(delta_subscribe(CLUSTER, &[])).await;
    let held: Vec<(String, String)> = ads
        .recv()
        .await
        .resources
        .into_iter()
        .map(|r| (r.name, r.version))
        .collect();
    assert_eq!(held.len(), 3);

    // The server restarts (a new process would compute the same versions) with b changed and c
    // gone; the client reconnects and says what it holds.
    let port = running.addr;
    let status = ads.end_after(running.shutdown()).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let server = Server::new();
    server.set_resources(resources([cluster("a", 1), cluster("b", 2)]));
    let running = serve_on(&server, port).await;
    let mut ads = DeltaAds::connect(running.addr).await;
    ads.send(DeltaDiscoveryRequest {
        initial_resource_versions: held.into_iter().collect(),
        ..delta_subscribe(CLUSTER, &[])
    })
    .await;
    let response = ads.recv().await;
    assert_eq!(resource_names(&response.resources), ["b"]);
    assert_eq!(
        connect_timeout(response.resources[0].resource.as_ref().unwrap()),
        2
    );
    assert_eq!(response.removed_resources, ["c"]);
    running.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_frees_the_port() {
    let server = Server::new();
    server.set_resources(resources([cluster("backend", 1)]));
    let running = serve(&server).await;
    let addr = running.addr;
    let mut ads = SotwAds::connect(addr, &[]).await;
    ads.send(sotw_request(CLUSTER, &[])).await;
    ads.recv().await;

    let status = ads.end_after(running.shutdown()).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    server
        .wait_for(|s| s.iter().all(|s| !s.open), WAIT)
        .await
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );

    let running = serve_on(&server, addr).await;
    let mut ads = SotwAds::connect(running.addr, &[]).await;
    ads.send(sotw_request(CLUSTER, &[])).await;
    assert_eq!(cluster_names(&ads.recv().await.resources), ["backend"]);
    running.shutdown().await;
}

#[tokio::test]
async fn unix_socket_serves_ads() {
    let dir = TempDir::new("unix");
    let path = dir.path().join("xds.sock");
    let server = Server::new();
    server.set_resources(resources([cluster("backend", 1)]));
    let handle = server.serve_unix(tokio::net::UnixListener::bind(&path).unwrap());

    let mut ads = SotwAds::connect_unix(&path).await;
    ads.send(sotw_request(CLUSTER, &[])).await;
    let response = ads.recv().await;
    assert_eq!(cluster_names(&response.resources), ["backend"]);
    ads.send(sotw_ack(&response, &[])).await;
    server
        .wait_for(|s| s.iter().any(|s| s.acked(CLUSTER, "1")), WAIT)
        .await
        .unwrap();
    handle.shutdown().await.unwrap();
}

#[test]
fn load_dir_reads_single_resources_and_lists_and_skips_other_files() {
    let dir = TempDir::new("load");
    dir.write("10-clusters.yaml", CLUSTERS_YAML);
    dir.write("20-endpoints.json", BACKEND_ENDPOINTS_JSON);
    dir.write(".hidden.yaml", "not: [valid");
    dir.write("README.txt", "not a resource");
    std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();

    let loaded = Resources::load_dir(dir.path(), &Schema::load()).unwrap();
    let clusters: Vec<_> = loaded.of_type(CLUSTER).map(|(name, _)| name).collect();
    assert_eq!(clusters, ["backend", "frontend"]);
    let backend = loaded.get(CLUSTER, "backend").unwrap();
    assert_eq!(connect_timeout(backend), 1);
    assert!(loaded.get(ENDPOINT, "backend").is_some());
    assert_eq!(loaded.len(), 3);
}

#[test]
fn load_dir_errors_name_the_file_and_the_path_in_it() {
    let dir = TempDir::new("load-error");
    dir.write("10-clusters.yaml", CLUSTERS_YAML);
    dir.write(
        "20-bad.yaml",
        "- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: extra\n  lb_policy: FASTEST\n",
    );
    let err = Resources::load_dir(dir.path(), &Schema::load()).unwrap_err();
    let LoadError::Invalid { file, path, .. } = &err else {
        panic!("expected an invalid resource, got {err:?}");
    };
    assert_eq!(file, &dir.path().join("20-bad.yaml"));
    assert_eq!(path, "[0].lb_policy");
    let message = err.to_string();
    assert!(
        message.contains("20-bad.yaml: at [0].lb_policy: "),
        "{message}"
    );
    assert!(message.contains("FASTEST"), "{message}");

    let err = Resources::load_dir(&dir.path().join("missing"), &Schema::load()).unwrap_err();
    assert!(matches!(err, LoadError::ReadDir { .. }), "{err:?}");
}

#[test]
fn load_dir_refuses_a_name_defined_twice() {
    let dir = TempDir::new("load-duplicate");
    dir.write("10-clusters.yaml", CLUSTERS_YAML);
    dir.write(
        "20-again.json",
        r#"{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "frontend"}"#,
    );
    let err = Resources::load_dir(dir.path(), &Schema::load()).unwrap_err();
    assert!(matches!(err, LoadError::Duplicate { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("20-again.json"), "{message}");
    assert!(message.contains("\"frontend\""), "{message}");
    assert!(message.contains("10-clusters.yaml at [1]"), "{message}");
}

#[tokio::test]
async fn watch_dir_keeps_the_last_good_set_when_an_edit_breaks_it() {
    let dir = TempDir::new("watch");
    dir.write("clusters.yaml", CLUSTERS_YAML);
    let server = Server::new();
    let schema = std::sync::Arc::new(Schema::load());
    let watcher = server.watch_dir(dir.path(), schema, Duration::from_millis(20));
    wait_until(|| server.version() == "1").await;
    assert_eq!(server.resources().len(), 2);

    dir.write("clusters.yaml", "- \"@type\": nonsense\n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.version(), "1");
    assert_eq!(server.resources().len(), 2);

    dir.write(
        "clusters.yaml",
        &CLUSTERS_YAML.replace("connect_timeout: 1s", "connect_timeout: 3s"),
    );
    wait_until(|| server.version() == "2").await;
    let backend = server.resources().get(CLUSTER, "backend").cloned().unwrap();
    assert_eq!(connect_timeout(&backend), 3);
    watcher.abort();
}

#[tokio::test]
async fn the_binary_serves_a_directory_and_pushes_edits() {
    let dir = TempDir::new("binary");
    let resources_dir = dir.path().join("resources");
    std::fs::create_dir(&resources_dir).unwrap();
    std::fs::write(resources_dir.join("clusters.yaml"), CLUSTERS_YAML).unwrap();
    let address_path = dir.path().join("address");

    let mut child = Binary::start(
        &dir,
        &[
            "--dir".as_ref(),
            resources_dir.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--address-path".as_ref(),
            address_path.as_os_str(),
            "--poll-interval-ms".as_ref(),
            "20".as_ref(),
        ],
    );
    let address = child.wait_for_file(&address_path).await;
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert_eq!(child.stdout_line().await, format!("listening on {address}"));

    let mut ads = SotwAds::connect(address.parse().unwrap(), &[]).await;
    ads.send(DiscoveryRequest {
        node: Some(node("binary-test")),
        ..sotw_request(CLUSTER, &[])
    })
    .await;
    let first = ads.recv().await;
    assert_eq!(first.version_info, "1");
    assert_eq!(cluster_names(&first.resources), ["backend", "frontend"]);
    ads.send(sotw_ack(&first, &[])).await;

    std::fs::write(
        resources_dir.join("clusters.yaml"),
        CLUSTERS_YAML.replace("connect_timeout: 1s", "connect_timeout: 7s"),
    )
    .unwrap();
    let pushed = ads.recv().await;
    assert_eq!(pushed.version_info, "2");
    assert_eq!(connect_timeout(&pushed.resources[0]), 7);
    ads.send(sotw_ack(&pushed, &[])).await;

    let log = child.wait_for_log("ACK").await;
    assert!(log.contains("binary-test"), "{log}");
    child.stop();
}

#[tokio::test]
async fn the_binary_fails_clearly_on_a_bad_resource_a_missing_dir_and_a_busy_address() {
    let dir = TempDir::new("binary-errors");
    let resources_dir = dir.path().join("resources");
    std::fs::create_dir(&resources_dir).unwrap();
    std::fs::write(
        resources_dir.join("bad.yaml"),
        "\"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\nname: x\nconnect_timeout: soon\n",
    )
    .unwrap();
    let (code, stderr) = Binary::run(&[
        "--dir".as_ref(),
        resources_dir.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.yaml: at connect_timeout: "),
        "{stderr}"
    );

    let (code, stderr) = Binary::run(&[
        "--dir".as_ref(),
        dir.path().join("missing").as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("could not list the resource directory"),
        "{stderr}"
    );

    std::fs::remove_file(resources_dir.join("bad.yaml")).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let (code, stderr) = Binary::run(&[
        "--dir".as_ref(),
        resources_dir.as_os_str(),
        "--listen".as_ref(),
        busy_addr.as_ref(),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[tokio::test]
async fn the_binary_serves_a_unix_socket() {
    let dir = TempDir::new("binary-unix");
    let resources_dir = dir.path().join("resources");
    std::fs::create_dir(&resources_dir).unwrap();
    std::fs::write(resources_dir.join("eds.json"), BACKEND_ENDPOINTS_JSON).unwrap();
    let socket = dir.path().join("xds.sock");
    let listen = format!("unix:{}", socket.display());
    let address_path = dir.path().join("address");

    let mut child = Binary::start(
        &dir,
        &[
            "--dir".as_ref(),
            resources_dir.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--address-path".as_ref(),
            address_path.as_os_str(),
        ],
    );
    assert_eq!(child.wait_for_file(&address_path).await, listen);
    let mut ads = SotwAds::connect_unix(&socket).await;
    ads.send(sotw_request(ENDPOINT, &["backend"])).await;
    let response = ads.recv().await;
    assert_eq!(
        endpoint_ports(&response.resources),
        [("backend".to_string(), 9080)]
    );
    child.stop();
}

fn resource_names(resources: &[Resource]) -> Vec<&str> {
    resources.iter().map(|r| r.name.as_str()).collect()
}

const CLUSTERS_YAML: &str = r#"# Two clusters, as a list.
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: backend
  connect_timeout: 1s
  type: EDS
  eds_cluster_config:
    eds_config:
      ads: {}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: frontend
  connect_timeout: 2s
"#;

const BACKEND_ENDPOINTS_JSON: &str = r#"{
  "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
  "cluster_name": "backend",
  "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 9080}}}}]}]
}"#;

/// Helpers: resources, ADS clients over TCP and Unix sockets, temporary directories, and the
/// binary.
mod support {
    use std::{
        ffi::OsStr,
        net::SocketAddr,
        path::{Path, PathBuf},
        pin::Pin,
        process::{Child, Command, Stdio},
        sync::atomic::{AtomicUsize, Ordering},
        task::{Context, Poll},
        time::Duration,
    };

    use envoy_types::pb::{
        envoy::{
            config::{
                cluster::v3::Cluster,
                core::v3::{Address, Node, SocketAddress, address, socket_address::PortSpecifier},
                endpoint::v3::{
                    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
                    lb_endpoint::HostIdentifier,
                },
            },
            service::discovery::v3::{
                DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
                aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
            },
        },
        google::{
            protobuf::{Any, Duration as ProtoDuration},
            rpc::Status as RpcStatus,
        },
    };
    use hyper_util::rt::TokioIo;
    use prost::{Message, Name};
    use tokio::{net::UnixStream, sync::mpsc};
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{
        Status, Streaming,
        codegen::http::Uri,
        transport::{Channel, Endpoint as GrpcEndpoint},
    };
    use xds_client::server::{Resources, Server, ServerHandle};

    /// How long a test waits for something that should happen at once.
    pub const WAIT: Duration = Duration::from_secs(10);

    /// How long a test watches for something that should not happen.
    const QUIET: Duration = Duration::from_millis(300);

    // --- resources ---

    /// A cluster; `timeout_s` (its connect timeout) stands for any content.
    pub fn cluster(name: &str, timeout_s: i64) -> Any {
        any(&Cluster {
            name: name.to_string(),
            connect_timeout: Some(ProtoDuration {
                seconds: timeout_s,
                nanos: 0,
            }),
            ..Default::default()
        })
    }

    /// The endpoints of `cluster`: one host, 10.0.0.1:`port`.
    pub fn endpoints(cluster: &str, port: u32) -> Any {
        let address = Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.0.0.1".to_string(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        };
        any(&ClusterLoadAssignment {
            cluster_name: cluster.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(address),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn any<M: Message + Name>(message: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: message.encode_to_vec(),
        }
    }

    pub fn resources(list: impl IntoIterator<Item = Any>) -> Resources {
        let mut resources = Resources::new();
        for any in list {
            resources.insert(any).unwrap();
        }
        resources
    }

    pub fn node(id: &str) -> Node {
        Node {
            id: id.to_string(),
            ..Default::default()
        }
    }

    pub fn cluster_names(resources: &[Any]) -> Vec<String> {
        resources
            .iter()
            .map(|any| Cluster::decode(any.value.as_slice()).unwrap().name)
            .collect()
    }

    /// A cluster's connect timeout in seconds.
    pub fn connect_timeout(any: &Any) -> i64 {
        let cluster = Cluster::decode(any.value.as_slice()).unwrap();
        cluster.connect_timeout.unwrap().seconds
    }

    /// (cluster name, port of the first endpoint) of each ClusterLoadAssignment.
    pub fn endpoint_ports(resources: &[Any]) -> Vec<(String, u32)> {
        resources
            .iter()
            .map(|any| {
                let cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
                let Some(HostIdentifier::Endpoint(endpoint)) =
                    &cla.endpoints[0].lb_endpoints[0].host_identifier
                else {
                    panic!("no endpoint in {cla:?}");
                };
                let Some(address::Address::SocketAddress(socket)) =
                    &endpoint.address.as_ref().unwrap().address
                else {
                    panic!("no socket address in {cla:?}");
                };
                let Some(PortSpecifier::PortValue(port)) = socket.port_specifier else {
                    panic!("no port in {cla:?}");
                };
                (cla.cluster_name, port)
            })
            .collect()
    }

    // --- requests ---

    pub fn sotw_request(type_url: &str, names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn sotw_ack(response: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            ..sotw_request(&response.type_url, names)
        }
    }

    pub fn sotw_nack(response: &DiscoveryResponse, message: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            response_nonce: response.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..sotw_request(&response.type_url, &[])
        }
    }

    pub fn delta_subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn delta_ack(response: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        }
    }

    // --- servers ---

    /// An in-process server on loopback.
    pub struct Running {
        pub addr: SocketAddr,
        handle: ServerHandle,
    }

    impl Running {
        pub async fn shutdown(self) {
            self.handle.shutdown().await.unwrap();
        }
    }

    pub async fn serve(server: &Server) -> Running {
        serve_on(server, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn serve_on(server: &Server, addr: SocketAddr) -> Running {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        Running {
            addr,
            handle: server.serve_tcp(listener),
        }
    }

    /// Polls `condition` until it holds.
    pub async fn wait_until(mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // --- clients ---

    /// One ADS stream from envoy-types' generated client.
    pub struct Ads<Req, Resp> {
        requests: mpsc::Sender<Req>,
        responses: Streaming<Resp>,
    }

    pub type SotwAds = Ads<DiscoveryRequest, DiscoveryResponse>;
    pub type DeltaAds = Ads<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

    impl SotwAds {
        pub async fn connect(addr: SocketAddr, metadata: &[(&'static str, &str)]) -> Self {
            let channel = GrpcEndpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            Self::open(channel, metadata).await
        }

        pub async fn connect_unix(path: &Path) -> Self {
            let channel = GrpcEndpoint::from_static("http://localhost")
                .connect_with_connector(UnixConnector(path.to_path_buf()))
                .await
                .unwrap();
            Self::open(channel, &[]).await
        }

        async fn open(channel: Channel, metadata: &[(&'static str, &str)]) -> Self {
            let (requests, rx) = mpsc::channel(16);
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            for (key, value) in metadata {
                request.metadata_mut().insert(*key, value.parse().unwrap());
            }
            let responses = AggregatedDiscoveryServiceClient::new(channel)
                .stream_aggregated_resources(request)
                .await
                .unwrap()
                .into_inner();
            Self {
                requests,
                responses,
            }
        }
    }

    impl DeltaAds {
        pub async fn connect(addr: SocketAddr) -> Self {
            let (requests, rx) = mpsc::channel(16);
            let responses = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap()
                .delta_aggregated_resources(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            Self {
                requests,
                responses,
            }
        }
    }

    impl<Req, Resp> Ads<Req, Resp>
    where
        Req: std::fmt::Debug,
        Resp: Message + Default + std::fmt::Debug + 'static,
    {
        pub async fn send(&self, request: Req) {
            self.requests.send(request).await.unwrap();
        }

        /// The next response.
        pub async fn recv(&mut self) -> Resp {
            match tokio::time::timeout(WAIT, self.responses.message()).await {
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => panic!("the stream ended"),
                Ok(Err(status)) => panic!("the stream failed: {status:?}"),
                Err(_) => panic!("no response within {WAIT:?}"),
            }
        }

        /// The status the stream ends with.
        pub async fn recv_end(&mut self) -> Status {
            match tokio::time::timeout(WAIT, self.responses.message()).await {
                Ok(Err(status)) => status,
                Ok(Ok(other)) => panic!("expected the stream to fail, got {other:?}"),
                Err(_) => panic!("the stream did not end within {WAIT:?}"),
            }
        }

        /// Runs `action` (a shutdown), and returns the status the stream ends with meanwhile.
        pub async fn end_after(&mut self, action: impl Future<Output = ()>) -> Status {
            let (status, ()) = tokio::join!(self.recv_end(), action);
            status
        }

        /// Asserts that no response comes for a while.
        pub async fn expect_nothing(&mut self) {
            if let Ok(message) = tokio::time::timeout(QUIET, self.responses.message()).await {
                panic!("expected no response, got {message:?}");
            }
        }
    }

    /// Connects gRPC to a Unix socket, whatever the URI.
    #[derive(Clone)]
    struct UnixConnector(PathBuf);

    impl tower_service::Service<Uri> for UnixConnector {
        type Response = TokioIo<UnixStream>;
        type Error = std::io::Error;
        type Future =
            Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            let path = self.0.clone();
            Box::pin(async move { UnixStream::connect(path).await.map(TokioIo::new) })
        }
    }

    // --- files ---

    /// A fresh directory under the system's temporary directory, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "skiff-xds-server-{name}-{}-{unique}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    // --- the binary ---

    /// A running `xds-server`, killed on drop. Its stderr goes to a file in the test's
    /// directory, so that failures can show it.
    pub struct Binary {
        child: Child,
        log: PathBuf,
    }

    impl Binary {
        pub fn start(dir: &TempDir, args: &[&OsStr]) -> Self {
            let log = dir.path().join("xds-server.log");
            let child = Command::new(env!("CARGO_BIN_EXE_xds-server"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            Self { child, log }
        }

        /// Runs the binary to its exit: (exit code, stderr).
        pub async fn run(args: &[&OsStr]) -> (Option<i32>, String) {
            let args: Vec<_> = args.iter().map(|a| a.to_os_string()).collect();
            let output = tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_xds-server"))
                    .args(args)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }

        /// Waits for the file the binary writes, and returns its content.
        pub async fn wait_for_file(&mut self, path: &Path) -> String {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                if let Ok(text) = std::fs::read_to_string(path) {
                    return text;
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("xds-server exited with {status}: {}", self.log());
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no {} within {WAIT:?}: {}",
                    path.display(),
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// The first line the binary printed.
        pub async fn stdout_line(&mut self) -> String {
            let stdout = self.child.stdout.take().expect("stdout is read once");
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                    .unwrap();
                line.trim_end().to_string()
            })
            .await
            .unwrap()
        }

        /// Waits until the log holds `needle`, and returns the log.
        pub async fn wait_for_log(&self, needle: &str) -> String {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let log = self.log();
                if log.contains(needle) {
                    return log;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no {needle:?} in the log within {WAIT:?}: {log}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        pub fn stop(mut self) {
            self.kill();
        }

        fn log(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Binary {
        fn drop(&mut self) {
            self.kill();
        }
    }
}
