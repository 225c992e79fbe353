//! Micro-benchmarks of HTTP routing: picking a virtual host among 1,000 and a route within it.
//! Run with `cargo bench -p skiff-benches --bench http`.

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use skiff_proxy::{
    config::{Format, RouteConfig, Schema},
    http::route::{Decision, RequestFacts, RouteTable},
};

/// 1,000 virtual hosts shaped like istiod's outbound routes: each service answers on its short
/// name, FQDN and `:port` forms, with a few routes.
fn thousand_vhosts() -> RouteTable {
    let mut yaml = String::from("name: bench\nvirtual_hosts:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "- name: svc{i}\n  domains: [svc{i}, \"svc{i}:8080\", svc{i}.ns.svc.cluster.local, \"svc{i}.ns.svc.cluster.local:8080\"]\n  routes:\n  - match: {{prefix: /api/v2/, headers: [{{name: x-canary, string_match: {{exact: \"true\"}}}}]}}\n    route: {{cluster: c{i}-canary}}\n  - match: {{safe_regex: {{regex: \"/items/[0-9]+\"}}}}\n    route: {{cluster: c{i}}}\n  - match: {{prefix: /}}\n    route: {{cluster: c{i}}}\n"
        ));
    }
    yaml.push_str("- name: wildcard\n  domains: [\"*.example.com\"]\n  routes: [{match: {prefix: /}, route: {cluster: w}}]\n");
    let rc = RouteConfig::from_text(&Schema::load(), &yaml, Format::Yaml).expect("valid routes");
    RouteTable::new(Arc::new(rc))
}

fn benches(c: &mut Criterion) {
    let table = thousand_vhosts();
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    let get = Method::GET;
    let mut run = |name: &str, authority: &'static str, path: &'static str| {
        let facts = RequestFacts {
            method: &get,
            authority,
            path,
            headers: &headers,
        };
        assert!(matches!(table.route(&facts), Decision::Route(..)), "{name}");
        c.bench_function(name, |b| b.iter(|| table.route(black_box(&facts))));
    };
    run(
        "route/1000_vhosts/exact_host_prefix_route",
        "svc777.ns.svc.cluster.local:8080",
        "/index.html",
    );
    run("route/1000_vhosts/regex_route", "svc3", "/items/12345?x=1");
    run(
        "route/1000_vhosts/suffix_wildcard_host",
        "api.example.com",
        "/",
    );
}

criterion_group!(http_routing, benches);
criterion_main!(http_routing);
