use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::config::{RouteActionKind, RouteConfig};

fn table(yaml: &str) -> RouteTable {
    RouteTable::new(Arc::new(RouteConfig::from_yaml_for_tests(yaml)))
}

fn route_name<'a>(
    t: &'a RouteTable,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<&'a str> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let facts = RequestFacts {
        method: &method,
        authority,
        path,
        headers: &map,
    };
    match t.route(&facts) {
        Decision::Route(vh, r) => {
            assert!(matches!(r.action, RouteActionKind::Direct(_)));
            // Tests name routes "<vhost>/<route>" to check both levels at once.
            assert!(r.name.starts_with(&*vh.name), "{} in {}", r.name, vh.name);
            Some(&r.name)
        }
        Decision::NoRoute => None,
    }
}

fn direct(name: &str, m: &str) -> String {
    format!("    - name: {name}\n      match: {m}\n      direct_response: {{status: 200}}\n")
}

#[test]
fn virtual_host_precedence_follows_envoy() {
    let t = table(&format!(
        "name: rc\nvirtual_hosts:\n\
         - name: exact\n  domains: [www.example.com, \"www.example.com:8080\"]\n  routes:\n{}\
         - name: suffix\n  domains: [\"*.example.com\"]\n  routes:\n{}\
         - name: longer-suffix\n  domains: [\"*-api.example.com\"]\n  routes:\n{}\
         - name: prefix\n  domains: [\"www.example.*\"]\n  routes:\n{}\
         - name: any\n  domains: [\"*\"]\n  routes:\n{}",
        direct("exact/r", "{prefix: /}"),
        direct("suffix/r", "{prefix: /}"),
        direct("longer-suffix/r", "{prefix: /}"),
        direct("prefix/r", "{prefix: /}"),
        direct("any/r", "{prefix: /}"),
    ));
    let cases = [
        ("www.example.com", "exact/r"),
        ("WWW.Example.COM", "exact/r"),
        ("www.example.com:8080", "exact/r"),
        // The port is part of the host: `*.example.com` no longer matches, `www.example.*` does.
        ("www.example.com:9090", "prefix/r"),
        ("api.example.com", "suffix/r"),
        ("my-api.example.com", "longer-suffix/r"),
        ("-api.example.com", "suffix/r"), // a wildcard never matches an empty label
        ("www.example.org", "prefix/r"),
        ("example.com", "any/r"),
        ("", "any/r"),
    ];
    for (host, want) in cases {
        assert_eq!(route_name(&t, "GET", host, "/", &[]), Some(want), "{host}");
    }
}

#[test]
fn ignore_port_in_host_matching_strips_the_port() {
    let t = table(&format!(
        "name: rc\nignore_port_in_host_matching: true\nvirtual_hosts:\n- name: a\n  domains: [a.test]\n  routes:\n{}",
        direct("a/r", "{prefix: /}")
    ));
    assert_eq!(route_name(&t, "GET", "a.test:1234", "/", &[]), Some("a/r"));
    assert_eq!(route_name(&t, "GET", "b.test:1234", "/", &[]), None);
}

#[test]
fn routes_match_in_order_by_path_headers_query_and_grpc() {
    let routes = [
        direct("v/exact-path", "{path: /exact}"),
        direct(
            "v/case-insensitive",
            "{prefix: /CI/, case_sensitive: false}",
        ),
        direct("v/regex", "{safe_regex: {regex: \"/users/[0-9]+\"}}"),
        direct("v/separated", "{path_separated_prefix: /sep}"),
        direct(
            "v/header-exact",
            "{prefix: /h, headers: [{name: x-env, string_match: {exact: canary}}]}",
        ),
        direct(
            "v/header-inverted",
            "{prefix: /h, headers: [{name: x-env, string_match: {exact: prod}, invert_match: true}]}",
        ),
        direct(
            "v/header-range",
            "{prefix: /r, headers: [{name: x-n, range_match: {start: 10, end: 20}}]}",
        ),
        direct(
            "v/header-present-false",
            "{prefix: /p, headers: [{name: x-debug, present_match: false}]}",
        ),
        direct(
            "v/query",
            "{prefix: /q, query_parameters: [{name: v, string_match: {prefix: \"2\"}}]}",
        ),
        direct(
            "v/query-present",
            "{prefix: /q, query_parameters: [{name: debug, present_match: true}]}",
        ),
        direct("v/grpc", "{prefix: /x.Svc/, grpc: {}}"),
        direct("v/catch-all", "{prefix: /}"),
    ];
    let t = table(&format!(
        "name: rc\nvirtual_hosts:\n- name: v\n  domains: [\"*\"]\n  routes:\n{}",
        routes.concat()
    ));
    let grpc = [("content-type", "application/grpc+proto")];
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    #[rustfmt::skip]
    let cases: &[Case<'_>] = &[
        ("/exact", &[], "v/exact-path"),
        ("/exact?x=1", &[], "v/exact-path"),
        ("/exact/more", &[], "v/catch-all"),
        ("/ci/thing", &[], "v/case-insensitive"),
        ("/Ci/thing", &[], "v/case-insensitive"),
        ("/users/42", &[], "v/regex"),
        ("/users/42?page=2", &[], "v/regex"),
        ("/users/42x", &[], "v/catch-all"),
        ("/sep", &[], "v/separated"),
        ("/sep/x", &[], "v/separated"),
        ("/separate", &[], "v/catch-all"),
        ("/h", &[("x-env", "canary")], "v/header-exact"),
        ("/h", &[("x-env", "staging")], "v/header-inverted"),
        ("/h", &[("x-env", "prod")], "v/catch-all"),
        ("/r", &[("x-n", "15")], "v/header-range"),
        ("/r", &[("x-n", "20")], "v/catch-all"),
        ("/r", &[("x-n", "abc")], "v/catch-all"),
        ("/p", &[], "v/header-present-false"),
        ("/p", &[("x-debug", "1")], "v/catch-all"),
        ("/q?v=2.1", &[], "v/query"),
        ("/q?a=b&v=1", &[], "v/catch-all"),
        ("/q?debug", &[], "v/query-present"),
        ("/x.Svc/Call", &grpc, "v/grpc"),
        ("/x.Svc/Call", &[("content-type", "application/json")], "v/catch-all"),
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            route_name(&t, "POST", "any", path, headers),
            Some(*want),
            "{path} {headers:?}"
        );
    }
}

#[test]
fn repeated_headers_are_matched_joined_by_commas() {
    let t = table(&format!(
        "name: rc\nvirtual_hosts:\n- name: v\n  domains: [\"*\"]\n  routes:\n{}",
        direct(
            "v/joined",
            "{prefix: /, headers: [{name: x-a, string_match: {exact: \"1,2\"}}]}"
        )
    ));
    assert_eq!(
        route_name(&t, "GET", "h", "/", &[("x-a", "1"), ("x-a", "2")]),
        Some("v/joined")
    );
    assert_eq!(route_name(&t, "GET", "h", "/", &[("x-a", "1")]), None);
}

#[test]
fn no_virtual_host_or_no_route_is_no_route() {
    let t = table(&format!(
        "name: rc\nvirtual_hosts:\n- name: v\n  domains: [a.test]\n  routes:\n{}",
        direct("v/only", "{path: /only}")
    ));
    assert_eq!(route_name(&t, "GET", "b.test", "/only", &[]), None);
    assert_eq!(route_name(&t, "GET", "a.test", "/other", &[]), None);
}

#[test]
fn strip_port_keeps_ipv6_literals() {
    assert_eq!(strip_port("a.test:80"), "a.test");
    assert_eq!(strip_port("[::1]:80"), "[::1]");
    assert_eq!(strip_port("[::1]"), "[::1]");
    assert_eq!(strip_port("a.test"), "a.test");
}
