//! The ADS transport against the test server over real gRPC: startup order, subscriptions that
//! follow the subscriber, reconnects with a re-read token, both protocol variants.
#![cfg(feature = "server")]

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use envoy_types::pb::{
    envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    },
    google::protobuf::Any,
};
use prost::{Message, Name};
use tokio::net::TcpListener;
use xds_client::{
    Handler, NodeIdentity, Rejected, Update, Watch,
    server::{Resources, Server, StreamStatus},
    transport::{self, AdsConfig, Backoff, Protocol, Subscriber, Target},
    type_url,
};

const WAIT: Duration = Duration::from_secs(10);

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn resources(clusters: &[&str], listeners: &[&str]) -> Resources {
    let mut r = Resources::new();
    for c in clusters {
        r.insert(any(&Cluster {
            name: c.to_string(),
            ..Default::default()
        }))
        .unwrap();
        r.insert(any(&ClusterLoadAssignment {
            cluster_name: c.to_string(),
            ..Default::default()
        }))
        .unwrap();
    }
    for l in listeners {
        r.insert(any(&Listener {
            name: l.to_string(),
            ..Default::default()
        }))
        .unwrap();
    }
    r
}

/// Records what it applies; wants endpoints for every cluster it holds; says clusters are warm
/// only once `warm` is set.
#[derive(Clone, Default)]
struct Recorder {
    clusters: Arc<Mutex<BTreeSet<String>>>,
    /// Route names wanted; every cluster applied adds `<cluster>-routes`.
    routes: Arc<Mutex<BTreeSet<String>>>,
    applied: Arc<Mutex<Vec<String>>>,
    warm: Arc<AtomicBool>,
}

impl Handler for Recorder {
    fn apply(&mut self, type_url: &str, update: Update<'_>) -> Vec<Rejected> {
        for r in &update.added {
            self.applied.lock().unwrap().push(format!(
                "{} {}",
                type_url::short_name(type_url),
                r.name
            ));
            if type_url == type_url::CLUSTER {
                self.clusters.lock().unwrap().insert(r.name.to_string());
                self.routes
                    .lock()
                    .unwrap()
                    .insert(format!("{}-routes", r.name));
            }
        }
        for name in &update.removed {
            self.clusters.lock().unwrap().remove(*name);
        }
        Vec::new()
    }
}

impl Subscriber for Recorder {
    fn wanted(&self, type_url: &str) -> BTreeSet<String> {
        match type_url {
            type_url::ENDPOINT => self.clusters.lock().unwrap().clone(),
            type_url::ROUTE => self.routes.lock().unwrap().clone(),
            _ => BTreeSet::new(),
        }
    }

    fn warmed(&self, type_url: &str) -> bool {
        type_url != type_url::CLUSTER || self.warm.load(Ordering::Acquire)
    }
}

fn config(addr: SocketAddr, protocol: Protocol, token: Option<PathBuf>) -> AdsConfig {
    AdsConfig {
        target: Target::Tcp(addr.to_string()),
        tls: None,
        token_file: token,
        metadata: vec![("ClusterID".into(), "Kubernetes".into())],
        protocol,
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        connect_timeout: Duration::from_secs(1),
        initial_fetch_timeout: Duration::from_secs(30),
    }
}

fn watches() -> Vec<Watch> {
    vec![
        Watch::wildcard(type_url::CLUSTER),
        Watch::named(type_url::ENDPOINT, [] as [&str; 0]),
        Watch::wildcard(type_url::LISTENER),
    ]
}

fn node() -> envoy_types::pb::envoy::config::core::v3::Node {
    NodeIdentity::new([10, 0, 0, 7].into(), "web-0", "default").to_node()
}

async fn wait(server: &Server, what: impl FnMut(&[StreamStatus]) -> bool) -> Vec<StreamStatus> {
    server
        .wait_for(what, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_asked_for_only_once_clusters_have_warmed() {
    for protocol in [Protocol::Sotw, Protocol::Delta] {
        let server = Server::new();
        let version = server.set_resources(resources(&["a", "b"], &["l"]));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _serving = server.serve_tcp(l);
        let sub = Recorder::default();
        let handle =
            transport::spawn(config(addr, protocol, None), node(), watches(), sub.clone()).unwrap();

        // Clusters arrive and their endpoints are asked for, by name; listeners wait.
        let status = wait(&server, |s| {
            s.iter().any(|st| {
                st.acked(type_url::CLUSTER, &version) && st.acked(type_url::ENDPOINT, &version)
            })
        })
        .await;
        let stream = &status[0];
        let eds = stream.type_status(type_url::ENDPOINT).unwrap();
        assert_eq!(
            eds.names,
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        assert!(!eds.wildcard);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            server.status()[0].type_status(type_url::LISTENER).is_none(),
            "{protocol:?}: LDS was asked for before the clusters warmed"
        );
        assert_eq!(stream.metadata_value("clusterid"), Some("Kubernetes"));

        sub.warm.store(true, Ordering::Release);
        wait(&server, |s| {
            s.iter().any(|st| st.acked(type_url::LISTENER, &version))
        })
        .await;
        assert!(handle.connected());
        let metrics = handle.metrics();
        assert!(metrics.get(type_url::LISTENER).unwrap().updates_accepted >= 1);
        let applied = sub.applied.lock().unwrap().clone();
        let first_listener = applied.iter().position(|a| a.contains("Listener")).unwrap();
        assert!(
            applied[..first_listener]
                .iter()
                .filter(|a| a.contains("Cluster "))
                .count()
                == 2,
            "{applied:?}"
        );
        handle.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_resubscribes_rereads_the_token_and_follows_removals() {
    let dir = std::env::temp_dir().join(format!("xds-transport-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "first\n").unwrap();

    let server = Server::new();
    let v1 = server.set_resources(resources(&["a", "b"], &["l"]));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let serving = server.serve_tcp(l);
    let sub = Recorder::default();
    sub.warm.store(true, Ordering::Release);
    let handle = transport::spawn(
        config(addr, Protocol::Delta, Some(token.clone())),
        node(),
        watches(),
        sub.clone(),
    )
    .unwrap();
    let status = wait(&server, |s| {
        s.iter()
            .any(|st| st.acked(type_url::LISTENER, &v1) && st.acked(type_url::ENDPOINT, &v1))
    })
    .await;
    assert_eq!(
        status[0].metadata_value("authorization"),
        Some("Bearer first")
    );

    serving.shutdown().await.unwrap();
    std::fs::write(&token, "second\n").unwrap();
    let v2 = server.set_resources(resources(&["a"], &["l"]));
    let l = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let _serving = server.serve_tcp(l);
    let status = wait(&server, |s| {
        s.iter().any(|st| {
            st.open && st.acked(type_url::CLUSTER, &v2) && st.acked(type_url::ENDPOINT, &v2)
        })
    })
    .await;
    let stream = status.iter().find(|s| s.open).unwrap();
    assert_eq!(
        stream.metadata_value("authorization"),
        Some("Bearer second")
    );
    // Cluster b went away while disconnected: its endpoints are no longer asked for.
    let eds = wait(&server, |s| {
        s.iter().any(|st| {
            st.open
                && st
                    .type_status(type_url::ENDPOINT)
                    .is_some_and(|t| t.names == BTreeSet::from(["a".to_string()]))
        })
    })
    .await;
    assert!(!eds.is_empty());
    assert_eq!(handle.connects(), 2);
    assert_eq!(
        *sub.clusters.lock().unwrap(),
        BTreeSet::from(["a".to_string()])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_control_plane_is_retried_and_never_connected() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let handle = transport::spawn(
        config(addr, Protocol::Sotw, None),
        node(),
        watches(),
        Recorder::default(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!handle.connected());
    assert_eq!(handle.connects(), 0);
    handle.shutdown();
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir`: `name.pem` and `name.key`.
fn ca(dir: &std::path::Path, name: &str) {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_control_plane_verifies_the_server_against_the_ca_file() {
    let dir = std::env::temp_dir().join(format!("xds-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ca(&dir, "root");
    ca(&dir, "other");
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "istiod.key",
            "-out",
            "istiod.csr",
            "-subj",
            "/CN=istiod",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:istiod.istio-system.svc\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "istiod.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-out",
            "istiod.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
    let server = Server::new();
    let version = server.set_resources(resources(&["a"], &[]));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _serving = server
        .serve_tcp_tls(
            l,
            &std::fs::read(dir.join("istiod.pem")).unwrap(),
            &std::fs::read(dir.join("istiod.key")).unwrap(),
        )
        .unwrap();

    let with_ca = |ca: &str| {
        let mut c = config(addr, Protocol::Delta, None);
        c.tls = Some(transport::TlsConfig {
            ca_file: dir.join(ca),
            server_name: Some("istiod.istio-system.svc".into()),
        });
        c
    };
    // Signed by another CA: the handshake fails, the client never connects.
    let wrong =
        transport::spawn(with_ca("other.pem"), node(), watches(), Recorder::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wrong.connects(), 0);
    assert!(server.status().is_empty(), "{:?}", server.status());
    wrong.shutdown();

    let sub = Recorder::default();
    sub.warm.store(true, Ordering::Release);
    let right = transport::spawn(with_ca("root.pem"), node(), watches(), sub).unwrap();
    wait(&server, |s| {
        s.iter().any(|st| st.acked(type_url::CLUSTER, &version))
    })
    .await;
    assert!(right.connected());
    right.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A named type whose first request is held back at startup (routes named before the stream,
/// waiting behind unwarmed clusters) and whose names change meanwhile subscribes to all of
/// them once released: the change goes out after the first request, not instead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_changed_while_a_first_request_is_held_are_all_subscribed() {
    for protocol in [Protocol::Delta, Protocol::Sotw] {
        let server = Server::new();
        let mut r = resources(&["a"], &["l"]);
        for name in ["static-routes", "a-routes"] {
            r.insert(any(
                &envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
                    name: name.to_string(),
                    ..Default::default()
                },
            ))
            .unwrap();
        }
        let version = server.set_resources(r);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _serving = server.serve_tcp(l);
        let sub = Recorder::default();
        sub.routes.lock().unwrap().insert("static-routes".into());
        let mut w = watches();
        w.push(Watch::named(type_url::ROUTE, [] as [&str; 0]));
        let handle =
            transport::spawn(config(addr, protocol, None), node(), w, sub.clone()).unwrap();
        wait(&server, |s| {
            s.iter().any(|st| st.acked(type_url::CLUSTER, &version))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            server.status()[0].type_status(type_url::ROUTE).is_none(),
            "{protocol:?}: held"
        );

        sub.warm.store(true, Ordering::Release);
        let status = wait(&server, |s| {
            s.iter().any(|st| {
                st.type_status(type_url::ROUTE)
                    .is_some_and(|t| t.names.len() == 2 && t.acked_version.is_some())
            })
        })
        .await;
        let names = &status[0].type_status(type_url::ROUTE).unwrap().names;
        assert_eq!(
            names,
            &BTreeSet::from(["a-routes".to_string(), "static-routes".to_string()]),
            "{protocol:?}"
        );
        handle.shutdown();
    }
}
