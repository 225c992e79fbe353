//! Retries as istiod configures them, differentially against real Envoy: the same bootstrap in
//! both, the same backends, the same answers and attempt counts.

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::{TcpListener, TcpStream};

/// A backend answering `status` with its `name` in the body; counts requests.
async fn backend(name: &'static str, status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    c.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let attempt = req
                            .headers()
                            .get("x-envoy-attempt-count")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let _ = req.into_body().collect().await;
                        let mut resp =
                            Response::new(Full::new(Bytes::from(format!("{name} {attempt}"))));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

/// istiod's outbound route shape: retry on connect failure, refused streams, gRPC unavailable
/// and cancelled, and 503; two retries on other hosts; attempt counts in both directions.
fn config(endpoints: &[SocketAddr]) -> String {
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
          stat_prefix: outbound_0.0.0.0_9080
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            name: "9080"
            validate_clusters: false
            virtual_hosts:
            - name: reviews.default.svc.cluster.local:9080
              domains: ["*"]
              include_request_attempt_count: true
              include_attempt_count_in_response: true
              routes:
              - name: default
                match: {{prefix: /}}
                decorator: {{operation: "reviews.default.svc.cluster.local:9080/*"}}
                route:
                  cluster: "outbound|9080||reviews.default.svc.cluster.local"
                  timeout: 0s
                  max_stream_duration: {{max_stream_duration: 0s, grpc_timeout_header_max: 0s}}
                  retry_policy:
                    retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes
                    num_retries: 2
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config: {{"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}
                    host_selection_retry_max_attempts: "5"
                    retriable_status_codes: [503]
  clusters:
{}"#,
        static_cluster(
            "outbound|9080||reviews.default.svc.cluster.local",
            endpoints,
            ""
        )
    )
}

async fn get(addr: SocketAddr, method: &str, body: &'static str) -> (u16, String, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri("/")
        .header("host", "reviews")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let attempts = resp
        .headers()
        .get("x-envoy-attempt-count")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        attempts,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// One host answers 503, one 200, one is not listening: every GET ends on the good host, in
/// at most three attempts, through both proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_retry_policy_routes_around_bad_hosts_like_envoy() {
    let (bad, bad_count) = backend("bad", 503).await;
    let (good, _) = backend("good", 200).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = config(&[bad, good, dead]);
    let skiff = Proxy::start(&config);
    let envoy = Proxy::start_envoy(&config);
    for (name, proxy) in [("skiff", &skiff), ("envoy", &envoy)] {
        let addr = proxy.listener("http");
        let mut attempts = Vec::new();
        for _ in 0..12 {
            let (status, count, body) = get(addr, "GET", "").await;
            assert_eq!(status, 200, "{name}: {body}");
            assert!(body.starts_with("good "), "{name}: {body}");
            // The upstream saw the same attempt number the client is told.
            assert_eq!(body, format!("good {count}"), "{name}");
            attempts.push(count.parse::<u32>().unwrap());
        }
        assert!(
            attempts.iter().all(|a| (1..=3).contains(a)),
            "{name}: {attempts:?}"
        );
        assert!(
            attempts.iter().any(|a| *a > 1),
            "{name} never retried: {attempts:?}"
        );
    }
    assert!(bad_count.load(Ordering::SeqCst) > 0);
    let (_, stats) = http_get(skiff.admin, "/stats").unwrap();
    let retries: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("skiff.http.upstream_rq_retry: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(retries > 0, "{stats}");
}

/// With only failing hosts, both give up after the first try and two retries and pass the last
/// 503 on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_num_retries_like_envoy() {
    let (bad, bad_count) = backend("bad", 503).await;
    let config = config(&[bad]);
    let skiff = Proxy::start(&config);
    let envoy = Proxy::start_envoy(&config);
    for (name, proxy) in [("skiff", &skiff), ("envoy", &envoy)] {
        bad_count.store(0, Ordering::SeqCst);
        let (status, attempts, body) = get(proxy.listener("http"), "GET", "").await;
        assert_eq!((status, attempts.as_str()), (503, "3"), "{name}: {body}");
        assert_eq!(bad_count.load(Ordering::SeqCst), 3, "{name}");
    }
}

/// A request with a body is not retried by Skiff (Envoy buffers it and retries): counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_does_not_retry_a_request_with_a_body_and_counts_it() {
    let (bad, bad_count) = backend("bad", 503).await;
    let skiff = Proxy::start(&config(&[bad]));
    let (status, attempts, _) = get(skiff.listener("http"), "POST", "payload").await;
    assert_eq!((status, attempts.as_str()), (503, "1"));
    assert_eq!(bad_count.load(Ordering::SeqCst), 1);
    let (_, stats) = http_get(skiff.admin, "/stats").unwrap();
    assert!(
        stats.contains("skiff.http.upstream_rq_retry_skipped_request_body: 1"),
        "{stats}"
    );
}
