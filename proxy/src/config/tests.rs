use super::*;

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

fn load(yaml: &str) -> Result<Bootstrap, ConfigErrors> {
    Source {
        yaml: Some(yaml.to_string()),
        ..Default::default()
    }
    .load()
}

/// A bootstrap with one listener forwarding to cluster `c`, with `extra` spliced into the
/// listener, the tcp_proxy and the cluster.
fn bootstrap(listener_extra: &str, tcp_extra: &str, cluster_extra: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    {listener_extra}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": {TCP_PROXY}
          stat_prefix: s
          cluster: c
          {tcp_extra}
  clusters:
  - name: c
    {cluster_extra}
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9000}}}}}}
"#
    )
}

fn errors(yaml: &str) -> Vec<String> {
    load(yaml)
        .expect_err("the configuration must be rejected")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_error(yaml: &str, path: &str, problem_part: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(problem_part)),
        "expected an error at {path} containing {problem_part:?}, got {errs:#?}"
    );
}

#[test]
fn a_minimal_tcp_proxy_gets_envoy_defaults() {
    let b = load(&bootstrap("", "", "")).unwrap();
    let l = &b.listeners[0];
    assert_eq!(&*l.name, "l");
    assert!(l.bind_to_port);
    assert!(!l.use_original_dst);
    assert!(l.reuse_port);
    assert_eq!(
        l.listener_filters_timeout,
        std::time::Duration::from_secs(15)
    );
    let ChainAction::TcpProxy(tp) = &l.filter_chains[0].action else {
        panic!("tcp_proxy expected")
    };
    assert_eq!(tp.idle_timeout, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(tp.max_connect_attempts, 1);
    let c = &b.clusters[0];
    assert_eq!(c.connect_timeout, std::time::Duration::from_secs(5));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.discovery, Discovery::Static);
    assert_eq!(c.localities[0].endpoints[0].weight, 1);
    assert!(b.warnings.is_empty());
}

#[test]
fn idle_timeout_zero_disables_it() {
    let b = load(&bootstrap("", "idle_timeout: 0s", "")).unwrap();
    let ChainAction::TcpProxy(tp) = &b.listeners[0].filter_chains[0].action else {
        panic!()
    };
    assert_eq!(tp.idle_timeout, None);
}

#[test]
fn use_original_dst_adds_the_original_dst_listener_filter() {
    let b = load(&bootstrap("use_original_dst: true", "", "")).unwrap();
    assert_eq!(
        b.listeners[0].listener_filters,
        vec![ListenerFilter {
            kind: ListenerFilterKind::OriginalDst,
            disabled: None
        }]
    );
}

#[test]
fn zero_listener_filters_timeout_is_bounded_with_a_warning() {
    let b = load(&bootstrap("listener_filters_timeout: 0s", "", "")).unwrap();
    assert_eq!(
        b.listeners[0].listener_filters_timeout,
        std::time::Duration::from_secs(15)
    );
    assert_eq!(b.warnings.len(), 1);
    assert_eq!(
        b.warnings[0].path.as_str(),
        "static_resources.listeners[0].listener_filters_timeout"
    );
}

#[test]
fn missing_file_is_one_clear_error() {
    let err = Source {
        path: Some("/nonexistent/skiff.yaml".into()),
        ..Default::default()
    }
    .load()
    .unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(
        err.to_string()
            .contains("cannot read config file '/nonexistent/skiff.yaml'"),
        "{err}"
    );
}

#[test]
fn no_source_at_all_is_an_error() {
    let err = Source::default().load().unwrap_err();
    assert!(err.to_string().contains("-c/--config-path"), "{err}");
}

#[test]
fn invalid_yaml_is_reported_with_its_position() {
    let errs = errors("static_resources: [\n  listeners: {");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("invalid YAML") && errs[0].contains("line"),
        "{errs:?}"
    );
}

#[test]
fn unknown_type_url_is_rejected() {
    let yaml = bootstrap("", "", "").replace(TCP_PROXY, "type.googleapis.com/acme.v1.Teleport");
    let errs = errors(&yaml);
    assert!(errs[0].contains("acme.v1.Teleport"), "{errs:?}");
    assert!(
        errs[0]
            .starts_with("static_resources.listeners[0].filter_chains[0].filters[0].typed_config"),
        "{errs:?}"
    );
}

#[test]
fn envoy_extension_skiff_does_not_support_is_rejected_by_name() {
    let yaml = bootstrap("", "", "").replace(
        &format!("\"@type\": {TCP_PROXY}\n          stat_prefix: s\n          cluster: c"),
        "\"@type\": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo",
    );
    assert_error(
        &yaml,
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config",
        "envoy.extensions.filters.network.echo.v3.Echo",
    );
    assert_error(
        &yaml,
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config",
        "not one Skiff supports",
    );
}

#[test]
fn port_out_of_range_names_the_field_and_value() {
    let yaml = bootstrap("", "", "").replace("port_value: 10000", "port_value: 70000");
    assert_error(
        &yaml,
        "static_resources.listeners[0].address.socket_address.port_value",
        "70000 is out of range",
    );
}

#[test]
fn undefined_cluster_is_rejected() {
    let yaml = bootstrap("", "", "").replace("cluster: c", "cluster: nowhere");
    assert_error(
        &yaml,
        "static_resources.listeners[0].filter_chains[0].filters",
        "references cluster 'nowhere', which is not defined",
    );
}

#[test]
fn every_unsupported_field_is_reported_at_once() {
    let yaml = bootstrap(
        "per_connection_buffer_limit_bytes: 1024",
        "hash_policy: [{source_ip: {}}]",
        "outlier_detection: {consecutive_5xx: 3}",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with(
        "static_resources.listeners[0].per_connection_buffer_limit_bytes: not supported by Skiff (value: 1024)"
    ));
    assert!(
        errs[1].contains("typed_config.hash_policy: not supported"),
        "{errs:#?}"
    );
    assert!(errs[2].starts_with("static_resources.clusters[0].outlier_detection: not supported"));
}

#[test]
fn unknown_field_is_rejected_with_its_path() {
    assert_error(
        &bootstrap("colour: blue", "", ""),
        "static_resources.listeners[0].colour",
        "unknown field",
    );
}

#[test]
fn table_of_invalid_values() {
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        // (listener extra, tcp extra, cluster extra, path, problem)
        (
            "",
            "",
            "connect_timeout: 0s",
            "static_resources.clusters[0].connect_timeout",
            "greater than 0s",
        ),
        (
            "",
            "",
            "lb_policy: MAGLEV",
            "static_resources.clusters[0].lb_policy",
            "MAGLEV is not supported",
        ),
        (
            "",
            "",
            "type: LOGICAL_DNS",
            "static_resources.clusters[0].type",
            "LOGICAL_DNS is not supported",
        ),
        (
            "",
            "",
            "type: ORIGINAL_DST",
            "static_resources.clusters[0].lb_policy",
            "only CLUSTER_PROVIDED",
        ),
        (
            "",
            "",
            "lb_policy: CLUSTER_PROVIDED",
            "static_resources.clusters[0].lb_policy",
            "only allowed with cluster type ORIGINAL_DST",
        ),
        (
            "",
            "max_connect_attempts: 0",
            "",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.max_connect_attempts",
            "at least 1",
        ),
        (
            "",
            "stat_prefix: \"\"",
            "",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix",
            "required",
        ),
        (
            // With a matcher every chain needs a name, to be selected by.
            "filter_chain_matcher: {}",
            "",
            "",
            "static_resources.listeners[0].filter_chains[0].name",
            "a name is required",
        ),
        (
            "transparent: true\n    socket_options: [{level: 1, name: 2, int_value: 3}]",
            "",
            "",
            "static_resources.listeners[0].socket_options",
            "not supported",
        ),
        (
            "",
            "",
            "dns_refresh_rate: 1s",
            "static_resources.clusters[0].dns_refresh_rate",
            "not supported",
        ),
        (
            "",
            "",
            "lb_policy: LEAST_REQUEST\n    least_request_lb_config: {choice_count: 1}",
            "static_resources.clusters[0].least_request_lb_config.choice_count",
            "less than 2",
        ),
    ];
    for (l, t, c, path, problem) in cases {
        assert_error(&bootstrap(l, t, c), path, problem);
    }
}

#[test]
fn static_endpoints_must_be_ip_addresses_but_strict_dns_may_name_hosts() {
    let yaml = bootstrap("", "", "").replace(
        "address: 127.0.0.1, port_value: 9000",
        "address: backend.local, port_value: 9000",
    );
    assert_error(
        &yaml,
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
        "'backend.local' is not an IP address",
    );
    let yaml = bootstrap("", "", "type: STRICT_DNS\n    dns_lookup_family: V4_ONLY").replace(
        "address: 127.0.0.1, port_value: 9000",
        "address: localhost, port_value: 9000",
    );
    let b = load(&yaml).unwrap();
    assert!(matches!(
        b.clusters[0].discovery,
        Discovery::StrictDns {
            family: DnsFamily::V4Only,
            ..
        }
    ));
}

#[test]
fn duplicate_names_and_addresses_are_rejected() {
    let mut yaml = bootstrap("", "", "");
    yaml.push_str(
        r#"  - name: c
    load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9001}}}}]}]}
"#,
    );
    assert_error(
        &yaml,
        "static_resources.clusters[1].name",
        "duplicate cluster 'c'",
    );
}

#[test]
fn listeners_need_unique_names_and_addresses_except_port_zero() {
    let second = |name: &str, port: u16| {
        format!(
            "  - name: {name}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n    filter_chains: [{{filters: [{{name: t, typed_config: {{\"@type\": \"{TCP_PROXY}\", stat_prefix: s, cluster: c}}}}]}}]\n"
        )
    };
    let with = |extra: String| {
        bootstrap("", "", "").replace("  clusters:\n", &format!("{extra}  clusters:\n"))
    };
    assert_error(
        &with(second("l2", 10000)),
        "static_resources.listeners[1].address",
        "same address 127.0.0.1:10000 as listeners[0]",
    );
    assert_error(
        &with(second("l", 10001)),
        "static_resources.listeners[1].name",
        "duplicate listener name 'l'",
    );
    // Two listeners asking for any free port do not collide (Envoy accepts this too).
    let yaml = with(second("a", 0) + &second("b", 0));
    assert_eq!(load(&yaml).unwrap().listeners.len(), 3);
}

#[test]
fn identical_filter_chain_matches_are_rejected() {
    let chain = format!(
        r#"    - filter_chain_match: {{destination_port: 80, server_names: [a.example, b.example]}}
      filters: [{{name: t, typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: s, cluster: c}}}}]
    - filter_chain_match: {{destination_port: 80, server_names: [b.example]}}
      filters: [{{name: t, typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: s, cluster: c}}}}]
"#
    );
    let yaml = bootstrap("", "", "").replace(
        "    filter_chains:\n",
        &format!("    filter_chains:\n{chain}"),
    );
    assert_error(
        &yaml,
        "static_resources.listeners[0].filter_chains[1]",
        "multiple filter chains with the same matching rules",
    );
}

#[test]
fn partial_wildcard_server_names_are_rejected() {
    let chain = format!(
        r#"    - filter_chain_match: {{server_names: ["foo*.example"]}}
      filters: [{{name: t, typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: s, cluster: c}}}}]
"#
    );
    let yaml = bootstrap("", "", "").replace(
        "    filter_chains:\n",
        &format!("    filter_chains:\n{chain}"),
    );
    assert_error(
        &yaml,
        "static_resources.listeners[0].filter_chains[0].filter_chain_match.server_names[0]",
        "partial wildcards",
    );
}

#[test]
fn listener_filters_and_predicates_convert() {
    let yaml = bootstrap(
        r#"listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
      filter_disabled: {destination_port_range: {start: 15006, end: 15007}}
    - name: envoy.filters.listener.http_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}
      filter_disabled:
        or_match: {rules: [{destination_port_range: {start: 80, end: 81}}, {not_match: {any_match: true}}]}"#,
        "",
        "",
    );
    let b = load(&yaml).unwrap();
    let f = &b.listeners[0].listener_filters;
    assert_eq!(f.len(), 3);
    assert_eq!(f[0].kind, ListenerFilterKind::OriginalDst);
    let disabled = f[1].disabled.as_ref().unwrap();
    assert!(disabled.matches(15006) && !disabled.matches(15007));
    let disabled = f[2].disabled.as_ref().unwrap();
    assert!(disabled.matches(80) && !disabled.matches(81));
}

#[test]
fn inline_yaml_merges_over_the_file() {
    let dir = std::env::temp_dir().join(format!("skiff-config-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("base.yaml");
    std::fs::write(&file, bootstrap("", "", "")).unwrap();
    let b = Source {
        path: Some(file),
        yaml: Some("node: {id: from-inline, cluster: c1}".into()),
        service_cluster: Some("from-flag".into()),
        ..Default::default()
    }
    .load()
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(b.node.id, "from-inline");
    assert_eq!(b.node.cluster, "from-flag");
    assert_eq!(b.listeners.len(), 1);
}

#[test]
fn json_files_are_read_as_json() {
    let dir = std::env::temp_dir().join(format!("skiff-config-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("b.json");
    std::fs::write(&file, r#"{"node": {"id": "n"}, "static_resources": {}}"#).unwrap();
    let b = Source {
        path: Some(file.clone()),
        ..Default::default()
    }
    .load()
    .unwrap();
    assert_eq!(b.node.id, "n");
    std::fs::write(&file, "node: {id: n}").unwrap();
    let err = Source {
        path: Some(file),
        ..Default::default()
    }
    .load()
    .unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.to_string().contains("invalid JSON"), "{err}");
}

#[test]
fn an_eds_cluster_needs_an_ads_source_and_no_inline_endpoints() {
    assert_error(
        &bootstrap("", "", "type: EDS"),
        "static_resources.clusters[0].eds_cluster_config",
        "eds_config: {ads: {}}",
    );
    assert_error(
        &bootstrap(
            "",
            "",
            "type: EDS\n    eds_cluster_config: {eds_config: {path_config_source: {path: /x}}}",
        ),
        "static_resources.clusters[0].eds_cluster_config.eds_config.path_config_source",
        "ADS stream only",
    );
}

#[test]
fn dynamic_resources_name_the_control_plane_cluster() {
    let yaml = r#"
node: {id: n, cluster: c}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {cluster_name: xds-grpc}
      initial_metadata: [{key: ClusterID, value: Kubernetes}]
  cds_config: {ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}
  lds_config: {ads: {}, initial_fetch_timeout: 3s, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: ./etc/istio/proxy/XDS}}}}]}]
"#;
    let b = load(yaml).unwrap();
    let d = b.dynamic.expect("dynamic resources");
    assert_eq!(d.ads.protocol, AdsProtocol::Delta);
    assert_eq!(
        d.ads.target,
        AdsTarget::Unix("./etc/istio/proxy/XDS".into())
    );
    assert_eq!(
        d.ads.metadata,
        vec![("clusterid".to_string(), "Kubernetes".to_string())]
    );
    assert_eq!(d.cds, Some(None), "0s waits for ever");
    assert_eq!(d.lds, Some(Some(std::time::Duration::from_secs(3))));
    assert!(
        b.clusters.is_empty(),
        "the control-plane cluster is not a data-path cluster"
    );

    let errs = errors(&yaml.replace("xds-grpc}", "nope}"));
    assert!(
        errs.iter()
            .any(|e| e.contains("names cluster 'nope', which is not a static cluster")),
        "{errs:?}"
    );
    let errs = errors(&yaml.replace("DELTA_GRPC", "REST"));
    assert!(
        errs.iter()
            .any(|e| e.contains("REST: Skiff speaks ADS over gRPC only")),
        "{errs:?}"
    );
}

#[test]
fn grpc_timeouts_parse_as_grpc_writes_them() {
    assert_eq!(
        parse_grpc_timeout(b"100m"),
        Some(std::time::Duration::from_millis(100))
    );
    assert_eq!(
        parse_grpc_timeout(b"2S"),
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(
        parse_grpc_timeout(b"1H"),
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(parse_grpc_timeout(b"123456789S"), None, "at most 8 digits");
    assert_eq!(parse_grpc_timeout(b"5"), None);
    assert_eq!(parse_grpc_timeout(b"S"), None);
    assert_eq!(parse_grpc_timeout(b"1x"), None);
}
