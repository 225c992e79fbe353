use super::super::{ChainAction, Source, Transport};
use super::*;

/// A bootstrap with one TLS listener (the given `DownstreamTlsContext` fields) and one cluster
/// with the given `UpstreamTlsContext` fields.
fn bootstrap(downstream: &str, upstream: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - transport_socket:
        name: tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          {downstream}
      filters:
      - name: tcp
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: c}}
  clusters:
  - name: c
    load_assignment: {{cluster_name: c, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9000}}}}}}}}]}}]}}
    transport_socket:
      name: tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        {upstream}
"#
    )
}

const ISTIO_PARAMS: &str = "tls_params: {tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3, cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384]}";

fn istio_downstream(params: &str) -> String {
    format!(
        r#"require_client_certificate: true
          common_tls_context:
            {params}
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [{{name: default, sds_config: {{api_config_source: {{api_type: GRPC, grpc_services: [{{envoy_grpc: {{cluster_name: sds-grpc}}}}], transport_api_version: V3}}, initial_fetch_timeout: 0s, resource_api_version: V3}}}}]
            combined_validation_context:
              default_validation_context: {{match_subject_alt_names: [{{prefix: "spiffe://cluster.local/"}}]}}
              validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {{ads: {{}}}}}}"#
    )
}

const ISTIO_UPSTREAM: &str = r#"sni: outbound_.80_._.b.shop.svc.cluster.local
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio]
          tls_certificate_sds_secret_configs: [{name: default}]
          combined_validation_context:
            default_validation_context: {match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "spiffe://cluster.local/ns/shop/sa/b"}}]}
            validation_context_sds_secret_config: {name: ROOTCA}"#;

fn load(yaml: &str) -> Result<super::super::Bootstrap, super::super::ConfigErrors> {
    Source {
        yaml: Some(yaml.to_string()),
        ..Default::default()
    }
    .load()
}

fn errors(yaml: &str) -> String {
    load(yaml)
        .expect_err("the configuration must be refused")
        .to_string()
}

#[test]
fn istio_contexts_convert_with_their_secrets_versions_and_matchers() {
    let b = load(&bootstrap(&istio_downstream(ISTIO_PARAMS), ISTIO_UPSTREAM)).unwrap();
    let chain = &b.listeners[0].filter_chains[0];
    assert!(matches!(chain.action, ChainAction::TcpProxy(_)));
    let down = chain.tls.as_ref().unwrap();
    assert!(down.require_client_certificate);
    assert_eq!(down.common.alpn, ["h2", "http/1.1"]);
    assert_eq!(
        (down.common.min_version, down.common.max_version),
        (TlsVersion::V1_2, TlsVersion::V1_3)
    );
    // The static-RSA suite is dropped (with a warning), the others kept in order.
    assert_eq!(
        down.common.cipher_suites.as_deref(),
        Some(
            &[
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ][..]
        )
    );
    assert!(
        b.warnings
            .iter()
            .any(|w| w.to_string().contains("AES256-GCM-SHA384 are not offered")),
        "{:?}",
        b.warnings
    );
    let names: Vec<_> = down
        .common
        .secrets()
        .map(|s| (&*s.name, s.source.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("default", SecretSource::Cluster("sds-grpc".into())),
            ("ROOTCA", SecretSource::Ads)
        ]
    );
    let v = down.common.validation.as_ref().unwrap();
    assert_eq!(v.subject_alt_names.len(), 1);
    assert_eq!(v.subject_alt_names[0].kind, None);

    let Transport::Tls(up) = &b.clusters[0].transport else {
        panic!("the cluster originates TLS");
    };
    assert_eq!(
        up.sni.as_deref(),
        Some("outbound_.80_._.b.shop.svc.cluster.local")
    );
    // Envoy's client default stops at TLS 1.2.
    assert_eq!(up.common.max_version, TlsVersion::V1_2);
    let v = up.common.validation.as_ref().unwrap();
    assert_eq!(v.subject_alt_names[0].kind, Some(SanKind::Uri));
    assert!(
        v.subject_alt_names[0]
            .matcher
            .matches("spiffe://cluster.local/ns/shop/sa/b")
    );
    assert!(
        !v.subject_alt_names[0]
            .matcher
            .matches("spiffe://cluster.local/ns/shop/sa/c")
    );
}

#[test]
fn what_rustls_cannot_do_is_an_error_naming_the_field() {
    let with_params = |params: &str| bootstrap(&istio_downstream(params), ISTIO_UPSTREAM);
    let e = errors(&with_params(
        "tls_params: {tls_maximum_protocol_version: TLSv1_1}",
    ));
    assert!(
        e.contains("tls_maximum_protocol_version") && e.contains("not supported"),
        "{e}"
    );
    let e = errors(&with_params("tls_params: {cipher_suites: [NOT-A-CIPHER]}"));
    assert!(e.contains("unknown cipher suite 'NOT-A-CIPHER'"), "{e}");
    let e = errors(&with_params(
        "tls_params: {tls_maximum_protocol_version: TLSv1_2, cipher_suites: [AES128-GCM-SHA256]}",
    ));
    assert!(e.contains("TLS 1.2 cannot be spoken"), "{e}");
    let e = errors(&with_params("tls_params: {ecdh_curves: [X25519]}"));
    assert!(e.contains("ecdh_curves: not supported by Skiff"), "{e}");
    // TLS 1.0 as the minimum only warns: it is never offered.
    let b = load(&with_params(
        "tls_params: {tls_minimum_protocol_version: TLSv1_0}",
    ))
    .unwrap();
    assert!(
        b.warnings
            .iter()
            .any(|w| w.to_string().contains("TLS 1.0 and 1.1 are never offered")),
        "{:?}",
        b.warnings
    );
}

#[test]
fn missing_or_bad_certificates_are_errors() {
    let down = istio_downstream(ISTIO_PARAMS);
    // A server without a certificate.
    let e = errors(&bootstrap(
        "common_tls_context: {alpn_protocols: [h2]}",
        ISTIO_UPSTREAM,
    ));
    assert!(e.contains("a TLS server needs a certificate"), "{e}");
    // Requiring client certificates without anything to check them against.
    let e = errors(&bootstrap(
        "require_client_certificate: true\n          common_tls_context: {tls_certificate_sds_secret_configs: [{name: default}]}",
        ISTIO_UPSTREAM,
    ));
    assert!(e.contains("needs a validation context"), "{e}");
    // SAN matchers without roots.
    let e = errors(&bootstrap(
        &down,
        "common_tls_context: {validation_context: {match_subject_alt_names: [{exact: x}]}}",
    ));
    assert!(e.contains("needs trusted_ca"), "{e}");
    // Inline PEM that is not a certificate, and a missing file.
    let cert = |chain: &str, key: &str| {
        bootstrap(
            &format!(
                "common_tls_context: {{tls_certificates: [{{certificate_chain: {chain}, private_key: {key}}}]}}"
            ),
            ISTIO_UPSTREAM,
        )
    };
    let e = errors(&cert("{inline_string: \"not pem\"}", "{inline_string: x}"));
    assert!(e.contains("no PEM certificate found"), "{e}");
    let e = errors(&cert(
        "{inline_string: \"not pem\"}",
        "{filename: /nonexistent/key.pem}",
    ));
    assert!(e.contains("cannot read '/nonexistent/key.pem'"), "{e}");
    // SAN types Skiff does not read.
    let e = errors(&bootstrap(
        &down,
        "common_tls_context: {combined_validation_context: {default_validation_context: {match_typed_subject_alt_names: [{san_type: EMAIL, matcher: {exact: a@b}}]}, validation_context_sds_secret_config: {name: ROOTCA}}}",
    ));
    assert!(e.contains("SAN type 1 is not supported"), "{e}");
    // Secrets from files or REST are not SDS sources Skiff has.
    let e = errors(&bootstrap(
        "common_tls_context: {tls_certificate_sds_secret_configs: [{name: default, sds_config: {path_config_source: {path: /x}}}]}",
        ISTIO_UPSTREAM,
    ));
    assert!(e.contains("secrets come from ads"), "{e}");
}

#[test]
fn static_secrets_are_parsed_and_checked() {
    let ca = crate::tls::dev_ca::DevCa::generate("cluster.local").unwrap();
    let w = ca
        .issue(
            "spiffe://cluster.local/ns/a/sa/b",
            crate::tls::dev_ca::Validity::for_lifetime(std::time::Duration::from_secs(3600)),
        )
        .unwrap();
    let indent = |s: &str| s.trim_end().replace('\n', "\n          ");
    let yaml = format!(
        "static_resources:\n  secrets:\n  - name: default\n    tls_certificate:\n      certificate_chain:\n        inline_string: |\n          {}\n      private_key:\n        inline_string: |\n          {}\n  - name: ROOTCA\n    validation_context:\n      trusted_ca:\n        inline_string: |\n          {}\n",
        indent(&w.chain_pem),
        indent(&w.key_pem),
        indent(ca.root_pem())
    );
    let b = load(&yaml).unwrap();
    assert_eq!(b.secrets.len(), 2);
    assert!(matches!(b.secrets[0].data, SecretData::Certificate(_)));
    assert!(matches!(b.secrets[1].data, SecretData::Roots(_)));
    // A duplicate name, and a validation secret carrying more than roots.
    let dup = yaml.replace("name: ROOTCA", "name: default");
    assert!(errors(&dup).contains("duplicate secret 'default'"));
    let extra = yaml.replace(
        "    validation_context:\n",
        "    validation_context:\n      match_subject_alt_names: [{exact: x}]\n",
    );
    assert!(errors(&extra).contains("may carry trusted_ca only"));
}
