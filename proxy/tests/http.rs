//! End-to-end HTTP through the real binary: streaming, upgrades, trailers, connection pools, and
//! hostile input from both sides.

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Frame, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// A bootstrap with one HTTP listener routing everything to cluster `up`; `hcm_extra` and
/// `route_extra` are spliced into the connection manager and the route action.
fn http_config(up: SocketAddr, hcm_extra: &str, route_extra: &str, cluster_extra: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": {HCM}
          stat_prefix: t
          {hcm_extra}
          http_filters: [{{name: router, typed_config: {{"@type": {ROUTER}}}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: up {route_extra}}}}}]
  clusters:
{}"#,
        static_cluster("up", &[up], cluster_extra)
    )
}

/// A hyper HTTP/1 server running `f` for every request; counts accepted connections.
async fn hyper_backend<F, Fut>(f: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
        > + Send
        + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let f = f.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let f = f.clone();
                    async move { Ok::<_, Infallible>(f(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

fn full(b: impl Into<Bytes>) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    Full::new(b.into()).boxed()
}

/// Reads a whole HTTP/1.1 response (with `Connection: close`) from a raw socket.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_byte_exact() {
    // The backend echoes the request body back as it arrives.
    let (up, _) = hyper_backend(|req: Request<hyper::body::Incoming>| async move {
        let body = req
            .into_body()
            .map_err(|_| -> Infallible { unreachable!("test body") });
        Response::new(body.boxed())
    })
    .await;
    let proxy = Proxy::start(&http_config(up, "", "", ""));
    let addr = proxy.listener("http");
    const TOTAL: u64 = 64 * 1024 * 1024;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut off = 0;
        while off < TOTAL {
            let n = buf.len().min((TOTAL - off) as usize);
            pattern(3, off, &mut buf[..n]);
            w.write_all(format!("{n:x}\r\n").as_bytes()).await.unwrap();
            w.write_all(&buf[..n]).await.unwrap();
            w.write_all(b"\r\n").await.unwrap();
            off += n as u64;
        }
        w.write_all(b"0\r\n\r\n").await.unwrap();
        w
    });
    // Decode the chunked response and compare as it streams.
    let mut data = Vec::new();
    let mut tmp = vec![0u8; 256 * 1024];
    let mut head_done = false;
    let mut got = 0u64;
    let mut want = Vec::new();
    loop {
        let n = r.read(&mut tmp).await.unwrap();
        if n == 0 {
            break;
        }
        data.extend_from_slice(&tmp[..n]);
        if !head_done {
            let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&data[..i]).to_string();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            data.drain(..i + 4);
            head_done = true;
        }
        // Consume complete chunks.
        while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&data[..i]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            if data.len() < i + 2 + size + 2 {
                break;
            }
            want.resize(size, 0);
            pattern(3, got, &mut want);
            assert!(
                data[i + 2..i + 2 + size] == want[..],
                "bytes differ near offset {got}"
            );
            got += size as u64;
            data.drain(..i + 2 + size + 2);
        }
        if got == TOTAL {
            break;
        }
    }
    writer.await.unwrap();
    assert_eq!(got, TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_to_the_upstream_are_reused() {
    let (up, conns) =
        hyper_backend(
            |_req: Request<hyper::body::Incoming>| async move { Response::new(full("ok")) },
        )
        .await;
    let proxy = Proxy::start(&http_config(up, "", "", ""));
    let addr = proxy.listener("http");
    for _ in 0..20 {
        let resp = raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "20 sequential requests used one upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_is_never_reused() {
    // This backend answers one request per connection, then closes it without saying so.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let proxy = Proxy::start(&http_config(up, "", "", ""));
    let addr = proxy.listener("http");
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(60)).await; // let the close arrive
        let resp = raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "request {i}: {resp}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstreams_multiplex_on_one_connection_and_trailers_pass() {
    let (up, conns) = hyper_backend(|_req: Request<hyper::body::Incoming>| async move {
        Response::new(GrpcLikeBody { sent: 0 }.boxed())
    })
    .await;
    let cluster_extra = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {http2_protocol_options: {}}";
    let proxy = Proxy::start(&http_config(up, "", "", cluster_extra));
    let addr = proxy.listener("http");
    // An h2c client, with many requests in flight at once.
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::builder()
                .uri(format!("http://{addr}/svc.Method"))
                .header("te", "trailers")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let collected = resp.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }));
    }
    for t in tasks {
        let (body, trailers) = t.await.unwrap();
        assert_eq!(&body[..], b"payload");
        assert_eq!(trailers.expect("trailers arrive")["grpc-status"], "0");
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "one multiplexed upstream connection"
    );
}

/// A response body like gRPC's: one data frame, then trailers.
struct GrpcLikeBody {
    sent: u8,
}

impl http_body::Body for GrpcLikeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.sent += 1;
        std::task::Poll::Ready(match self.sent {
            1 => Some(Ok(Frame::data(Bytes::from_static(b"payload")))),
            2 => {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(Frame::trailers(t)))
            }
            _ => None,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_its_interim_response() {
    let (up, _) = hyper_backend(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("got {} bytes", body.len())))
    })
    .await;
    let proxy = Proxy::start(&http_config(up, "", "", ""));
    let mut s = TcpStream::connect(proxy.listener("http")).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let rest = String::from_utf8_lossy(&rest).to_string();
    assert!(
        rest.contains("200 OK") && rest.ends_with("got 5 bytes"),
        "{rest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_become_a_tunnel_where_allowed() {
    // A raw upgrade server: 101, then echo every byte.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(head.contains("upgrade: websocket"), "{head}");
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .unwrap();
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let proxy = Proxy::start(&http_config(
        up,
        "upgrade_configs: [{upgrade_type: websocket}]",
        "",
        "",
    ));
    let mut s = TcpStream::connect(proxy.listener("http")).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"frames both ways").await.unwrap();
    let mut echo = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"frames both ways");

    // Without upgrade_configs the same request is refused, as Envoy does.
    let proxy = Proxy::start(&http_config(up, "", "", ""));
    let resp = raw(
        proxy.listener("http"),
        b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let (up, _) =
        hyper_backend(
            |_req: Request<hyper::body::Incoming>| async move { Response::new(full("ok")) },
        )
        .await;
    let proxy = Proxy::start(&http_config(up, "max_request_headers_kb: 16", "", ""));
    let big = "x".repeat(20 * 1024);
    let resp = raw(
        proxy.listener("http"),
        format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // The listener keeps serving.
    let resp = raw(
        proxy.listener("http"),
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_get_400() {
    let (up, _) =
        hyper_backend(
            |_req: Request<hyper::body::Incoming>| async move { Response::new(full("ok")) },
        )
        .await;
    let proxy = Proxy::start(&http_config(up, "codec_type: HTTP1", "", ""));
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let resp = raw(proxy.listener("http"), bad).await;
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{:?} -> {resp}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_by_the_header_timeout() {
    let (up, _) =
        hyper_backend(
            |_req: Request<hyper::body::Incoming>| async move { Response::new(full("ok")) },
        )
        .await;
    let proxy = Proxy::start(&http_config(up, "request_headers_timeout: 1s", "", ""));
    let mut s = TcpStream::connect(proxy.listener("http")).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    // Trickle a header byte every 300ms, never finishing.
    let mut closed = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {} // a 408 before the close
            Err(_) => {}
        }
    }
    assert!(closed, "the slow client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_protocol_violations_get_goaway() {
    let (up, _) =
        hyper_backend(
            |_req: Request<hyper::body::Incoming>| async move { Response::new(full("ok")) },
        )
        .await;
    let proxy = Proxy::start(&http_config(up, "codec_type: HTTP2", "", ""));
    let mut s = TcpStream::connect(proxy.listener("http")).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    // A DATA frame on stream 0 is a connection error (RFC 9113 6.1): PROTOCOL_ERROR.
    s.write_all(&[0, 0, 4, 0, 0, 0, 0, 0, 0, b'o', b'o', b'p', b's'])
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    // Walk the frames the server sent; one must be GOAWAY (type 7) with PROTOCOL_ERROR (1).
    let mut i = 0;
    let mut goaway = None;
    while i + 9 <= out.len() {
        let len =
            (usize::from(out[i]) << 16) | (usize::from(out[i + 1]) << 8) | usize::from(out[i + 2]);
        if out[i + 3] == 7 && i + 9 + 8 <= out.len() {
            goaway = Some(u32::from_be_bytes(out[i + 13..i + 17].try_into().unwrap()));
        }
        i += 9 + len;
    }
    assert_eq!(
        goaway,
        Some(1),
        "GOAWAY with PROTOCOL_ERROR expected, got {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_garbage_is_a_502_with_upe() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"THIS IS NOT HTTP AT ALL\r\n\r\n").await;
            });
        }
    });
    let proxy = Proxy::start(&http_config(up, "", "", ""));
    let resp = raw(
        proxy.listener("http"),
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(proxy.logs("flag=Some(\"UPE\")"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_before_headers_is_a_503_with_ur() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            drop(s); // close without answering
        }
    });
    let proxy = Proxy::start(&http_config(up, "", "", ""));
    let resp = raw(
        proxy.listener("http"),
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(proxy.logs("flag=Some(\"UR\")"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_cancels_the_upstream_request() {
    // The upstream reads the body until it ends; it must see the stream cut, not hang.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => total += n,
                Err(_) => break false,
            }
        };
        let _ = tx.send((ended, total));
    });
    let proxy = Proxy::start(&http_config(up, "", "", ""));
    let mut s = TcpStream::connect(proxy.listener("http")).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&vec![b'x'; 100_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let (ended, total) = tokio::time::timeout(Duration::from_secs(15), rx)
        .await
        .unwrap()
        .unwrap();
    assert!(
        ended,
        "the upstream connection was left hanging after the client left"
    );
    assert!(
        total < 10_000_000,
        "the upstream got a complete body: {total}"
    );
}

/// A backend that answers each request with headers promising `len` bytes, sends `first` of
/// them, then goes silent.
async fn stalling_backend(len: usize, first: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n{}",
                    "x".repeat(first)
                );
                let _ = s.write_all(resp.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

/// Reads a response until the proxy closes it; returns (text, seconds it took).
async fn read_until_closed(addr: SocketAddr, request: &[u8]) -> (String, f64) {
    let started = Instant::now();
    let resp = raw(addr, request).await;
    (resp, started.elapsed().as_secs_f64())
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_covers_the_response_body() {
    let up = stalling_backend(1000, 10).await;
    let proxy = Proxy::start(&http_config(up, "", ", timeout: 1s", ""));
    let (resp, secs) = read_until_closed(proxy.listener("http"), GET).await;
    // The headers went out; the body was cut when the timer fired.
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("xxxxxxxxxx"), "{resp}");
    assert!((0.9..5.0).contains(&secs), "closed after {secs}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_a_504_after_the_stream_idle_timeout() {
    // Accepts and reads, never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    let proxy = Proxy::start(&http_config(
        up,
        "stream_idle_timeout: 1s",
        ", timeout: 0s",
        "",
    ));
    let (resp, secs) = read_until_closed(proxy.listener("http"), GET).await;
    assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");
    assert!(resp.ends_with("stream timeout"), "{resp}");
    assert!((0.9..5.0).contains(&secs), "{secs}s");
    assert!(proxy.logs("flag=Some(\"SI\")"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_idle_timeout_also_cuts_a_stalled_body_and_a_route_can_disable_it() {
    let up = stalling_backend(1000, 10).await;
    let proxy = Proxy::start(&http_config(
        up,
        "stream_idle_timeout: 1s",
        ", timeout: 0s",
        "",
    ));
    let (resp, secs) = read_until_closed(proxy.listener("http"), GET).await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("xxxxxxxxxx"),
        "{resp}"
    );
    assert!((0.9..5.0).contains(&secs), "{secs}s");

    // The route's idle_timeout: 0s turns the timer off: the stall outlives it.
    let proxy = Proxy::start(&http_config(
        up,
        "stream_idle_timeout: 1s",
        ", timeout: 0s, idle_timeout: 0s",
        "",
    ));
    let mut s = TcpStream::connect(proxy.listener("http")).await.unwrap();
    s.write_all(GET).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let still_open = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let n = s.read(&mut buf[got..]).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            got += n;
        }
    })
    .await
    .is_err();
    assert!(
        still_open,
        "closed although the route disabled the idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_starts_when_the_request_is_complete() {
    let (up, _) = hyper_backend(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("got {}", body.len())))
    })
    .await;
    let proxy = Proxy::start(&http_config(up, "", ", timeout: 1s", ""));
    // A slow upload: 2.5 s of body, longer than the route timeout.
    let mut s = TcpStream::connect(proxy.listener("http")).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for b in b"hello" {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("got 5"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_and_a_stalled_upload_get_408() {
    let (up, _) = hyper_backend(|req: Request<hyper::body::Incoming>| async move {
        let _ = req.into_body().collect().await;
        Response::new(full("late"))
    })
    .await;
    let stalled =
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nConnection: close\r\n\r\nabc";
    // request_timeout: the whole request must arrive within 1 s.
    let proxy = Proxy::start(&http_config(up, "request_timeout: 1s", "", ""));
    let (resp, secs) = read_until_closed(proxy.listener("http"), stalled).await;
    assert!(
        resp.starts_with("HTTP/1.1 408") && resp.ends_with("request timeout"),
        "{resp}"
    );
    assert!((0.9..5.0).contains(&secs), "{secs}s");
    // The stream idle timeout while the client has not finished sending: 408 too.
    let proxy = Proxy::start(&http_config(up, "stream_idle_timeout: 1s", "", ""));
    let (resp, _) = read_until_closed(proxy.listener("http"), stalled).await;
    assert!(
        resp.starts_with("HTTP/1.1 408") && resp.ends_with("stream timeout"),
        "{resp}"
    );
}

fn connect_config(up: SocketAddr, route_upgrades: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": {HCM}
          stat_prefix: t
          http_filters: [{{name: router, typed_config: {{"@type": {ROUTER}}}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{connect_matcher: {{}}}}
                route: {{cluster: up, timeout: 0s {route_upgrades}}}
              - match: {{prefix: /}}
                route: {{cluster: up}}
  clusters:
{}"#,
        static_cluster("up", &[up], "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_terminated_into_a_tcp_tunnel_where_the_route_says_so() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&connect_config(
        echo,
        ", upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]",
    ));
    let mut s = TcpStream::connect(proxy.listener("http")).await.unwrap();
    s.write_all(b"CONNECT backend.test:443 HTTP/1.1\r\nHost: backend.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The tunnel carries raw bytes to the upstream (an echo server) and back.
    s.write_all(b"\x16\x03\x01 any bytes at all").await.unwrap();
    let mut echo_back = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo_back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo_back, b"\x16\x03\x01 any bytes at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_nobody_allowed_is_403_and_other_routes_never_match_it() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&connect_config(echo, ""));
    let resp = raw(
        proxy.listener("http"),
        b"CONNECT backend.test:443 HTTP/1.1\r\nHost: backend.test:443\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_for_http1_and_http2() {
    let (up, _) =
        hyper_backend(
            |_req: Request<hyper::body::Incoming>| async move { Response::new(full("ok")) },
        )
        .await;
    let proxy = Proxy::start(&http_config(
        up,
        "common_http_protocol_options: {idle_timeout: 1s}",
        "",
        "",
    ));
    let addr = proxy.listener("http");

    // HTTP/1.1 keep-alive: one request, then silence; the proxy closes the connection.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("an idle keep-alive connection is closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // HTTP/2: after a request, an idle connection gets GOAWAY and is closed.
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{addr}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
}
