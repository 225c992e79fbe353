//! Two sidecars in the mesh path, in real network namespaces: a client in pod A calls pod B's
//! port 8080; iptables sends it to Skiff A (outbound, plaintext in), which speaks mTLS to
//! Skiff B (inbound, STRICT: TLS chains only), which hands it to nginx. Certificates come from
//! `proxy dev-ca`, in Istio's mounted layout, through `--cert-dir`; the TLS settings are the
//! shapes istiod sends (SDS secrets `default` and `ROOTCA` on `sds-grpc`).
//!
//! Needs root, `ip`, `iptables`, `setpriv`, `openssl` and nginx; fails (never skips) without.

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use support::{
    Nginx, PodProxy, TempDir, dev_ca, http_get, netns_pair, presented_leaf, sh, within_netns,
};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/server";

/// Pods A (10.252.0.1) and B (10.252.0.2, and 10.252.0.3 which A's capture leaves alone, so
/// test clients can reach B's inbound port directly). Deleted on drop.
struct Mesh {
    a: String,
    b: String,
}

impl Mesh {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let m = Mesh {
            a: format!("skiff-mtls-{id}-a"),
            b: format!("skiff-mtls-{id}-b"),
        };
        netns_pair(
            &m.a,
            &m.b,
            (&format!("sma{id}"), &["10.252.0.1/24"]),
            (&format!("smb{id}"), &["10.252.0.2/24", "10.252.0.3/24"]),
        );
        // Pod A: the workload's calls to B go to Skiff A (the proxy itself, uid 1337, is exempt).
        sh(&[
            "ip",
            "netns",
            "exec",
            &m.a,
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "10.252.0.2",
            "-m",
            "owner",
            "!",
            "--uid-owner",
            "1337",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ]);
        // Pod B: every inbound connection to 8080 goes to Skiff B.
        sh(&[
            "ip",
            "netns",
            "exec",
            &m.b,
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15006",
        ]);
        m
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// An SDS reference to `name` on Istio's `sds-grpc` cluster, as istiod writes it.
fn sds(name: &str) -> String {
    format!(
        "{{name: {name}, sds_config: {{api_config_source: {{api_type: GRPC, grpc_services: [{{envoy_grpc: {{cluster_name: sds-grpc}}}}], set_node_on_first_message_only: true, transport_api_version: V3}}, initial_fetch_timeout: 0s, resource_api_version: V3}}}}"
    )
}

const ROUTER: &str = "{name: envoy.filters.http.router, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Skiff B: virtualInbound on 15006 with only a TLS chain (STRICT), requiring a client
/// certificate from the `shop` namespace, forwarding to nginx with the client's identity in
/// `x-forwarded-client-cert`.
fn inbound_bootstrap(nginx: SocketAddr) -> String {
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - name: virtualInbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: 15006}}}}
    listener_filters:
    - {{name: envoy.filters.listener.original_dst, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}}}
    - {{name: envoy.filters.listener.tls_inspector, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}}
    filter_chains:
    - name: 0.0.0.0_8080
      filter_chain_match: {{destination_port: 8080, transport_protocol: tls}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params:
              tls_minimum_protocol_version: TLSv1_2
              tls_maximum_protocol_version: TLSv1_3
              cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [{default}]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{{san_type: URI, matcher: {{prefix: "spiffe://cluster.local/ns/shop/"}}}}]
              validation_context_sds_secret_config: {rootca}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: inbound_0.0.0.0_8080
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: {{subject: true, dns: true, uri: true}}
          route_config:
            name: inbound|8080||
            virtual_hosts: [{{name: inbound|http|8080, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: "inbound|8080||"}}}}]}}]
          http_filters: [{ROUTER}]
  clusters:
  - name: "inbound|8080||"
    connect_timeout: 2s
    load_assignment: {{cluster_name: "inbound|8080||", endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}
"#,
        default = sds("default"),
        rootca = sds("ROOTCA"),
        port = nginx.port(),
    )
}

/// An outbound cluster to B with Istio's mTLS settings, expecting `san` from the server.
fn outbound_cluster(name: &str, san: &str) -> String {
    format!(
        r#"  - name: "{name}"
    connect_timeout: 2s
    load_assignment: {{cluster_name: "{name}", endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 10.252.0.2, port_value: 8080}}}}}}, metadata: {{filter_metadata: {{envoy.transport_socket_match: {{tlsMode: istio}}}}}}}}]}}]}}
    transport_socket_matches:
    - name: tlsMode-istio
      match: {{tlsMode: istio}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: outbound_.8080_._.b.shop.svc.cluster.local
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}
            alpn_protocols: [istio-http/1.1, istio, http/1.1]
            tls_certificate_sds_secret_configs: [{default}]
            combined_validation_context:
              default_validation_context:
                match_subject_alt_names: [{{exact: "{san}"}}]
              validation_context_sds_secret_config: {rootca}
    - name: tlsMode-disabled
      match: {{}}
      transport_socket: {{name: envoy.transport_sockets.raw_buffer, typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}
"#,
        default = sds("default"),
        rootca = sds("ROOTCA"),
    )
}

/// Skiff A: virtualOutbound on 15001 hands port 8080 to an HTTP listener routing to B over
/// mTLS; port 9090 routes to B too, but expecting another identity.
fn outbound_bootstrap() -> String {
    let http = |port: u16, cluster: &str| {
        format!(
            r#"  - name: 0.0.0.0_{port}
    address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: outbound_0.0.0.0_{port}
          route_config:
            virtual_hosts: [{{name: b, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: "{cluster}"}}}}]}}]
          http_filters: [{ROUTER}]
"#
        )
    };
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - name: virtualOutbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: 15001}}}}
    use_original_dst: true
    filter_chains:
    - filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: PassthroughCluster, cluster: PassthroughCluster}}}}]
{l8080}{l9090}  clusters:
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
{good}{wrong}"#,
        l8080 = http(8080, "outbound|8080||b.shop.svc.cluster.local"),
        l9090 = http(9090, "outbound|8080||impostor"),
        good = outbound_cluster("outbound|8080||b.shop.svc.cluster.local", SERVER_ID),
        wrong = outbound_cluster(
            "outbound|8080||impostor",
            "spiffe://cluster.local/ns/shop/sa/someone-else"
        ),
    )
}

/// An HTTP/1.1 request over TLS to B's inbound port from pod A with `openssl s_client`,
/// presenting the certificate in `cert_dir` (none when `None`); returns what came back.
fn openssl_call(mesh: &Mesh, root: &std::path::Path, cert_dir: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &mesh.a, "openssl", "s_client", "-quiet"])
        .args(["-connect", "10.252.0.3:8080", "-CAfile"])
        .arg(root);
    if let Some(d) = cert_dir {
        cmd.arg("-cert")
            .arg(d.join("cert-chain.pem"))
            .arg("-key")
            .arg(d.join("key.pem"));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is not installed (apt-get install openssl)");
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "openssl hung");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn two_sidecars_speak_mtls_and_refuse_what_istio_refuses() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the network-namespace tests need root (CI runs as root)"
    );
    let mesh = Mesh::new();
    let dir = TempDir::new("mtls");
    let ca = dir.path("ca");
    dev_ca(
        &ca,
        &[
            &format!("a={CLIENT_ID}"),
            &format!("b={SERVER_ID}"),
            "intruder=spiffe://cluster.local/ns/evil/sa/intruder",
        ],
    );
    dev_ca(&ca, &["--expired", &format!("expired={CLIENT_ID}")]);
    let other = dir.path("other");
    dev_ca(&other, &[&format!("stranger={CLIENT_ID}")]);
    // The proxies run as uid 1337, as Istio's do: let them read their keys.
    sh(&["chmod", "-R", "a+rX", dir.0.to_str().unwrap()]);

    let site = TempDir::new("mtls-site");
    let nginx = Nginx::start_in(
        Some(&mesh.b),
        &site.0,
        "location / { default_type text/plain; return 200 \"xfcc=$http_x_forwarded_client_cert\\n\"; }",
    );
    let b = PodProxy::start_with(
        &mesh.b,
        &inbound_bootstrap(nginx.addr),
        &["--cert-dir", ca.join("b").to_str().unwrap()],
    );
    let a = PodProxy::start_with(
        &mesh.a,
        &outbound_bootstrap(),
        &["--cert-dir", ca.join("a").to_str().unwrap()],
    );

    // The workload in pod A calls B in plaintext; the sidecars carry it over mTLS.
    let target: SocketAddr = "10.252.0.2:8080".parse().unwrap();
    let (status, body) = within_netns(&mesh.a, move || http_get(target, "/")).unwrap();
    assert_eq!(
        status,
        200,
        "{body}\n--- A ---\n{}\n--- B ---\n{}",
        a.log(),
        b.log()
    );
    // B saw A's SPIFFE ID, and says so to the app the way Envoy does.
    assert!(body.contains(&format!("URI={CLIENT_ID}")), "{body}");
    assert!(body.contains(&format!("By={SERVER_ID}")), "{body}");
    assert!(
        body.contains("Hash=") && body.contains("Subject=\"\""),
        "{body}"
    );
    assert_eq!(a.stat("skiff.tls.upstream.ssl.handshake"), 1);
    assert_eq!(b.stat("skiff.tls.downstream.ssl.handshake"), 1);

    // A checks B's identity: a cluster expecting someone else gets no connection (503 UF).
    let other_port: SocketAddr = "10.252.0.2:9090".parse().unwrap();
    // Port 9090 is captured by A too (the rule covers all of 10.252.0.2).
    let (status, body) = within_netns(&mesh.a, move || http_get(other_port, "/")).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("upstream connect error"), "{body}");
    assert_eq!(a.stat("skiff.tls.upstream.ssl.fail_verify_san"), 1);

    // Straight to B's port, past A: each wrong client is refused, and counted.
    let root = ca.join("root-cert.pem");
    let good = openssl_call(&mesh, &root, Some(&ca.join("a")));
    assert!(
        good.contains("HTTP/1.1 200"),
        "the right certificate works: {good}"
    );
    for (what, cert, stat) in [
        (
            "the wrong SPIFFE ID",
            ca.join("intruder"),
            "fail_verify_san",
        ),
        (
            "an expired certificate",
            ca.join("expired"),
            "fail_verify_error",
        ),
        (
            "a certificate from another root",
            other.join("stranger"),
            "fail_verify_error",
        ),
    ] {
        let before = b.stat(&format!("skiff.tls.downstream.ssl.{stat}"));
        let out = openssl_call(&mesh, &root, Some(&cert));
        assert!(!out.contains("HTTP/1.1 200"), "{what} was let in: {out}");
        assert_eq!(
            b.stat(&format!("skiff.tls.downstream.ssl.{stat}")),
            before + 1,
            "{what} counted as {stat}"
        );
    }
    let out = openssl_call(&mesh, &root, None);
    assert!(
        !out.contains("HTTP/1.1 200"),
        "no certificate was let in: {out}"
    );
    assert_eq!(b.stat("skiff.tls.downstream.ssl.fail_verify_no_cert"), 1);

    // Plaintext: STRICT has no chain for it; the connection is closed, and counted.
    let direct: SocketAddr = "10.252.0.3:8080".parse().unwrap();
    let reply = within_netns(&mesh.a, move || {
        let mut s = TcpStream::connect_timeout(&direct, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    });
    assert!(reply.is_empty(), "plaintext got an answer: {reply}");
    assert!(b.stat("skiff.listener.no_filter_chain_match") >= 1);
    // Four refused clients, and A hanging up on the impostor check: each a connection error.
    assert_eq!(b.stat("skiff.tls.downstream.ssl.connection_error"), 5);
    assert_eq!(b.stat("skiff.tls.downstream.ssl.handshake"), 2);
}

/// Certificates rotated on disk under a steady 500 requests per second: no request fails, the
/// connections already open carry on, and new handshakes get the new certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_loses_no_request() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let dir = TempDir::new("rotation");
    let ca = dir.path("ca");
    let issue = {
        let ca = ca.clone();
        move || dev_ca(&ca, &[&format!("a={CLIENT_ID}"), &format!("b={SERVER_ID}")])
    };
    issue();
    let site = TempDir::new("rotation-site");
    let app = Nginx::start(
        &site.0,
        "location / { default_type text/plain; return 200 \"ok\"; }",
    );
    let server = support::Proxy::start_with(
        &inbound_bootstrap(app.addr)
            .replace(
                "address: 0.0.0.0, port_value: 15006",
                "address: 127.0.0.1, port_value: 0",
            )
            .replace(
                "filter_chain_match: {destination_port: 8080, transport_protocol: tls}",
                "filter_chain_match: {transport_protocol: tls}",
            ),
        &["--cert-dir", ca.join("b").to_str().unwrap()],
    );
    let b = server.listener("virtualInbound");
    let client = support::Proxy::start_with(
        &format!(
            "static_resources:\n  listeners:\n  - name: outbound\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \"@type\": {HCM}\n          stat_prefix: outbound\n          route_config:\n            virtual_hosts: [{{name: b, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: b}}}}]}}]\n          http_filters: [{ROUTER}]\n  clusters:\n{}",
            outbound_cluster("b", SERVER_ID)
                .replace(
                    "address: 10.252.0.2, port_value: 8080",
                    &format!("address: 127.0.0.1, port_value: {}", b.port())
                )
                .replace("name: \"b\"", "name: b")
        ),
        &["--cert-dir", ca.join("a").to_str().unwrap()],
    );
    let before = presented_leaf(b, Some(&ca.join("a")));
    let counter = |p: &support::Proxy, name: &str| -> u64 {
        let (_, stats) = http_get(p.admin, "/stats").unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (samples, tasks) = support::load(client.listener("outbound"), 500, 10, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let handshakes_before = counter(&server, "skiff.tls.downstream.ssl.handshake");
    // Both workloads get new keys and certificates, written over the old files.
    tokio::task::spawn_blocking(issue).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }

    let samples = samples.lock().unwrap().clone();
    let failed: Vec<_> = samples
        .iter()
        .filter(|s| !matches!(&s.result, Ok((200, b)) if b == "ok"))
        .collect();
    assert!(samples.len() > 1500, "only {} requests", samples.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}\n{}",
        failed.len(),
        samples.len(),
        failed.first(),
        server.log()
    );
    // Both reloaded their secrets (a second delivery each)...
    assert_eq!(
        counter(&server, "skiff.secret.default.updates"),
        2,
        "{}",
        server.log()
    );
    assert_eq!(
        counter(&client, "skiff.secret.default.updates"),
        2,
        "{}",
        client.log()
    );
    // ...while the pooled connections from A to B carried on: no new handshakes under load.
    assert_eq!(
        counter(&server, "skiff.tls.downstream.ssl.handshake"),
        handshakes_before,
        "established connections were re-handshaken"
    );
    // A new handshake gets the new certificate.
    let after = presented_leaf(b, Some(&ca.join("a")));
    assert_ne!(before, after);
    let on_disk = std::fs::read_to_string(ca.join("b").join("cert-chain.pem")).unwrap();
    assert_eq!(after.trim(), on_disk.trim());
}

/// Static secrets read from files (`static_resources.secrets` with `filename`) are watched as
/// `--cert-dir` is: a certificate rewritten on disk is what the next handshake gets.
#[test]
fn certificate_files_named_in_the_bootstrap_are_reloaded() {
    let dir = TempDir::new("files");
    let ca = dir.path("ca");
    dev_ca(&ca, &[&format!("web={SERVER_ID}")]);
    let web = ca.join("web");
    let f = |n: &str| web.join(n).display().to_string();
    let proxy = support::Proxy::start(&format!(
        r#"
static_resources:
  listeners:
  - name: https
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context: {{tls_certificate_sds_secret_configs: [{{name: default}}]}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: https
          route_config:
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200}}}}]}}]
          http_filters: [{ROUTER}]
  secrets:
  - name: default
    tls_certificate: {{certificate_chain: {{filename: "{chain}"}}, private_key: {{filename: "{key}"}}}}
"#,
        chain = f("cert-chain.pem"),
        key = f("key.pem"),
    ));
    let https = proxy.listener("https");
    let first = presented_leaf(https, None);
    assert_eq!(
        first.trim(),
        std::fs::read_to_string(web.join("cert-chain.pem"))
            .unwrap()
            .trim()
    );
    // A new key and certificate over the old files.
    dev_ca(&ca, &[&format!("web={SERVER_ID}")]);
    let renewed = std::fs::read_to_string(web.join("cert-chain.pem")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = presented_leaf(https, None);
        if now.trim() == renewed.trim() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still the old certificate:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(proxy.logs("certificate files reloaded"), "{}", proxy.log());
}

/// Istio's PERMISSIVE port: one listener takes mTLS (a `transport_protocol: tls` chain) and
/// plaintext (a `raw_buffer` chain) alike. Opaque TCP rides mTLS end to end: Skiff A
/// (tcp_proxy, TLS origination) to Skiff B (TLS termination, tcp_proxy), with half-close and a
/// payload large enough to need many TLS records each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_port_and_opaque_tcp_over_mtls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("permissive");
    let ca = dir.path("ca");
    dev_ca(&ca, &[&format!("a={CLIENT_ID}"), &format!("b={SERVER_ID}")]);
    let (echo, plain) = (
        support::echo_server().await,
        support::named_server("plaintext chain").await,
    );
    let tcp = |cluster: &str| {
        format!(
            "[{{name: envoy.filters.network.tcp_proxy, typed_config: {{\"@type\": {}, stat_prefix: {cluster}, cluster: {cluster}}}}}]",
            support::TCP_PROXY
        )
    };
    let b = support::Proxy::start(&format!(
        r#"
static_resources:
  listeners:
  - name: inbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    listener_filters:
    - {{name: envoy.filters.listener.tls_inspector, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}}
    filter_chains:
    - filter_chain_match: {{transport_protocol: tls}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [istio-peer-exchange, istio]
            tls_certificate_sds_secret_configs: [{{name: default}}]
            combined_validation_context:
              default_validation_context: {{match_subject_alt_names: [{{prefix: "spiffe://cluster.local/"}}]}}
              validation_context_sds_secret_config: {{name: ROOTCA}}
      filters: {mtls}
    - filter_chain_match: {{transport_protocol: raw_buffer}}
      filters: {plaintext}
  clusters:
{echo_cluster}{plain_cluster}{secrets}"#,
        mtls = tcp("echo"),
        plaintext = tcp("plain"),
        echo_cluster = support::static_cluster("echo", &[echo], ""),
        plain_cluster = support::static_cluster("plain", &[plain], ""),
        secrets = support::static_secrets(&ca.join("b")),
    ));
    let inbound = b.listener("inbound");
    let a = support::Proxy::start(&format!(
        r#"
static_resources:
  listeners:
  - name: outbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters: {to_b}
  clusters:
  - name: b
    connect_timeout: 2s
    load_assignment: {{cluster_name: b, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.9000_._.b.shop.svc.cluster.local
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio]
          tls_certificate_sds_secret_configs: [{{name: default}}]
          combined_validation_context:
            default_validation_context: {{match_subject_alt_names: [{{exact: "{SERVER_ID}"}}]}}
            validation_context_sds_secret_config: {{name: ROOTCA}}
{secrets}"#,
        to_b = tcp("b"),
        port = inbound.port(),
        secrets = support::static_secrets(&ca.join("a")),
    ));

    // Opaque bytes through A and B over mTLS: 1 MiB each way, then a half-close.
    let mut s = tokio::net::TcpStream::connect(a.listener("outbound"))
        .await
        .unwrap();
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let sent = payload.clone();
    let (wrote, back) = tokio::join!(
        async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        },
        async move {
            let mut back = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut back))
                .await
                .expect("the echo ends after the half-close")
                .unwrap();
            back
        }
    );
    let () = wrote;
    assert_eq!(back.len(), payload.len(), "{}", b.log());
    assert!(back == payload, "the echo differs");
    let stat = |p: &support::Proxy, name: &str| -> u64 {
        let (_, stats) = http_get(p.admin, "/stats").unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(stat(&a, "skiff.tls.upstream.ssl.handshake"), 1);
    assert_eq!(stat(&b, "skiff.tls.downstream.ssl.handshake"), 1);
    assert!(
        b.logs(&format!("peer=Some(\"{CLIENT_ID}\")")),
        "B logs the peer's SPIFFE ID: {}",
        b.log()
    );

    // Plaintext on the same port: the raw_buffer chain (PERMISSIVE), no TLS counted. The
    // client speaks first, as the TLS inspector waits for its first bytes.
    let mut p = tokio::net::TcpStream::connect(inbound).await.unwrap();
    p.write_all(b"hello\n").await.unwrap();
    assert_eq!(support::read_line(&mut p).await, "plaintext chain");
    assert_eq!(support::read_line(&mut p).await, "hello");
    assert_eq!(stat(&b, "skiff.tls.downstream.ssl.connection_error"), 0);
}
