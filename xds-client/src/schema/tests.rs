use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost::Name;

use super::*;

#[test]
fn yaml_with_any_resolves_the_type_url() {
    let schema = Schema::load();
    let text = r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: s
          cluster: c
"#;
    let b: Bootstrap = schema.parse(text, Format::Yaml).unwrap();
    let l = &b.static_resources.unwrap().listeners[0];
    let filter = &l.filter_chains[0].filters[0];
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        &filter.config_type
    else {
        panic!("typed_config is kept")
    };
    assert!(any.type_url.ends_with("tcp_proxy.v3.TcpProxy"));
}

#[test]
fn unknown_field_error_names_its_path() {
    let schema = Schema::load();
    let text = "static_resources:\n  listeners:\n  - name: l\n    colour: blue\n";
    let err = schema.parse::<Bootstrap>(text, Format::Yaml).unwrap_err();
    assert_eq!(err.path, "static_resources.listeners[0].colour");
    assert!(err.problem.contains("unknown field"), "{}", err.problem);
}

#[test]
fn unknown_type_url_is_rejected_with_its_path() {
    let schema = Schema::load();
    let text = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config: {"@type": "type.googleapis.com/acme.Nope", x: 1}
"#;
    let err = schema.parse::<Bootstrap>(text, Format::Yaml).unwrap_err();
    assert!(
        err.path
            .starts_with("static_resources.listeners[0].filter_chains[0].filters[0].typed_config"),
        "{err}"
    );
    assert!(err.problem.contains("acme.Nope"), "{err}");
}

#[test]
fn knows_what_skiff_and_istiod_use() {
    let schema = Schema::load();
    for name in [
        "envoy.config.bootstrap.v3.Bootstrap",
        "envoy.config.listener.v3.Listener",
        "envoy.config.cluster.v3.Cluster",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.config.route.v3.RouteConfiguration",
        "envoy.service.discovery.v3.DiscoveryResponse",
        "envoy.service.discovery.v3.DeltaDiscoveryResponse",
        "envoy.admin.v3.ConfigDump",
        "envoy.admin.v3.BootstrapConfigDump",
        "envoy.admin.v3.ListenersConfigDump",
        "envoy.admin.v3.ClustersConfigDump",
        "envoy.admin.v3.RoutesConfigDump",
        "envoy.admin.v3.EndpointsConfigDump",
        "envoy.admin.v3.Listeners",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        "envoy.extensions.filters.http.router.v3.Router",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "envoy.extensions.transport_sockets.tls.v3.Secret",
        "envoy.extensions.filters.http.wasm.v3.Wasm",
        "envoy.extensions.filters.http.rbac.v3.RBAC",
        "envoy.extensions.filters.network.rbac.v3.RBAC",
        "envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput",
        // Written in proto/: the xDS IP matcher, TypedStruct.
        "xds.type.matcher.v3.IPMatcher",
        "xds.type.v3.TypedStruct",
        "udpa.type.v1.TypedStruct",
    ] {
        assert!(schema.knows(name), "{name} missing");
    }
}

#[test]
fn any_in_a_resource_file_round_trips() {
    let schema = Schema::load();
    let value = serde_json::json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": "c",
        "connect_timeout": "1s",
    });
    let any = schema.parse_any(value).unwrap();
    assert_eq!(
        any.type_url,
        envoy_types::pb::envoy::config::cluster::v3::Cluster::type_url()
    );
    let json = schema
        .to_value("envoy.config.cluster.v3.Cluster", &any.value)
        .unwrap();
    assert_eq!(json["name"], "c");
    assert_eq!(json["connect_timeout"], "1s");
}

#[test]
fn a_resource_without_a_type_is_refused() {
    let schema = Schema::load();
    let err = schema
        .parse_any(serde_json::json!({"name": "c"}))
        .unwrap_err();
    assert!(err.problem.contains("@type"), "{err}");
}

#[test]
fn json_round_trips() {
    let schema = Schema::load();
    let b: Bootstrap = schema
        .parse("node: {id: n1, cluster: c1}", Format::Yaml)
        .unwrap();
    let json = schema
        .to_json(&Bootstrap::full_name(), &b.encode_to_vec())
        .unwrap();
    let again: Bootstrap = schema.parse(&json, Format::Json).unwrap();
    assert_eq!(b, again);
}
