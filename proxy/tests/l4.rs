//! End-to-end TCP proxying over loopback: the real binary, real sockets, real nginx.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn config(listeners: &[String], clusters: &[String]) -> String {
    format!(
        "static_resources:\n  listeners:\n{}  clusters:\n{}",
        listeners.concat(),
        clusters.concat()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_echo_byte_exact_both_ways() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&config(
        &[tcp_listener("in", "echo", "")],
        &[static_cluster("echo", &[echo], "")],
    ));
    let s = TcpStream::connect(proxy.listener("in")).await.unwrap();
    let (mut r, mut w) = s.into_split();
    const TOTAL: u64 = 100 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0;
        while off < TOTAL {
            let n = buf.len().min((TOTAL - off) as usize);
            pattern(7, off, &mut buf[..n]);
            w.write_all(&buf[..n]).await.unwrap();
            off += n as u64;
        }
        w.shutdown().await.unwrap();
    });
    let mut got = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        let n = r.read(&mut got).await.unwrap();
        if n == 0 {
            break;
        }
        pattern(7, off, &mut want[..n]);
        assert!(got[..n] == want[..n], "bytes differ near offset {off}");
        off += n as u64;
    }
    writer.await.unwrap();
    assert_eq!(off, TOTAL, "every byte came back, then EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_from_real_nginx_arrives_byte_exact() {
    let root = TempDir::new("www");
    const SIZE: u64 = 100 * 1024 * 1024 + 17;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(root.path("big.bin")).unwrap());
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < SIZE {
            let n = buf.len().min((SIZE - off) as usize);
            pattern(11, off, &mut buf[..n]);
            std::io::Write::write_all(&mut f, &buf[..n]).unwrap();
            off += n as u64;
        }
    }
    let nginx = Nginx::start(&root.0, "");
    let proxy = Proxy::start(&config(
        &[tcp_listener("web", "nginx", "")],
        &[static_cluster("nginx", &[nginx.addr], "")],
    ));
    let mut s = TcpStream::connect(proxy.listener("web")).await.unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Headers first, then exactly SIZE body bytes.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("Content-Length: {SIZE}")), "{head}");
    let mut got = vec![0u8; 1 << 20];
    let mut want = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = s.read(&mut got).await.unwrap();
        if n == 0 {
            break;
        }
        pattern(11, off, &mut want[..n]);
        assert!(got[..n] == want[..n], "bytes differ near offset {off}");
        off += n as u64;
    }
    assert_eq!(off, SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_reaches_the_server_and_the_reply_still_flows() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&config(
        &[tcp_listener("in", "echo", "")],
        &[static_cluster("echo", &[echo], "")],
    ));
    let mut s = TcpStream::connect(proxy.listener("in")).await.unwrap();
    s.write_all(b"hello, then FIN").await.unwrap();
    s.shutdown().await.unwrap();
    // The echo server only closes after it saw our FIN: reading to EOF proves the half-close
    // crossed the proxy, and the echoed bytes prove the other direction stayed open.
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"hello, then FIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_half_close_reaches_the_client_and_requests_still_flow() {
    // The server says hello, closes its sending side, and then reads what the client sends.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"bye from server").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let proxy = Proxy::start(&config(
        &[tcp_listener("in", "srv", "")],
        &[static_cluster("srv", &[server_addr], "")],
    ));
    let mut s = TcpStream::connect(proxy.listener("in")).await.unwrap();
    let mut first = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, b"bye from server");
    s.write_all(b"still talking").await.unwrap();
    s.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"still talking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let echo = echo_server().await;
    let listener = tcp_listener("in", "echo", "")
        .replace("cluster: echo}", "cluster: echo, idle_timeout: 1s}");
    let proxy = Proxy::start(&config(&[listener], &[static_cluster("echo", &[echo], "")]));
    let mut s = TcpStream::connect(proxy.listener("in")).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
        .await
        .expect("the proxy closes an idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "EOF after the idle timeout");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_connections_by_weight() {
    let a = named_server("a").await;
    let b = named_server("b").await;
    let listener = format!(
        r#"  - name: split
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": {TCP_PROXY}
          stat_prefix: split
          weighted_clusters: {{clusters: [{{name: a, weight: 1}}, {{name: b, weight: 3}}]}}
"#
    );
    let proxy = Proxy::start(&config(
        &[listener],
        &[static_cluster("a", &[a], ""), static_cluster("b", &[b], "")],
    ));
    let mut count_b = 0;
    for _ in 0..200 {
        let mut s = TcpStream::connect(proxy.listener("split")).await.unwrap();
        if read_line(&mut s).await == "b" {
            count_b += 1;
        }
    }
    assert!(
        (120..=180).contains(&count_b),
        "b got {count_b} of 200 (expected ~150)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_over_endpoints_and_skips_unhealthy_ones() {
    let a = named_server("a").await;
    let b = named_server("b").await;
    let c = named_server("c").await;
    let mut cluster = static_cluster("rr", &[a, b], "");
    cluster.push_str(&format!(
        "        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}\n          health_status: UNHEALTHY\n",
        c.port()
    ));
    let proxy = Proxy::start(&config(&[tcp_listener("in", "rr", "")], &[cluster]));
    let mut seen = std::collections::HashMap::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy.listener("in")).await.unwrap();
        *seen.entry(read_line(&mut s).await).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("c"), None, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_cluster_resolves_names() {
    let srv = named_server("dns-backend").await;
    let cluster = format!(
        "  - name: dns\n    type: STRICT_DNS\n    dns_lookup_family: V4_ONLY\n    load_assignment:\n      cluster_name: dns\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{address: localhost, port_value: {}}}}}}}\n",
        srv.port()
    );
    let proxy = Proxy::start(&config(&[tcp_listener("in", "dns", "")], &[cluster]));
    let mut s = TcpStream::connect(proxy.listener("in")).await.unwrap();
    assert_eq!(read_line(&mut s).await, "dns-backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_endpoints_closes_the_connection() {
    // Istio's BlackHoleCluster: a STATIC cluster with no endpoints.
    let cluster = "  - name: BlackHoleCluster\n    type: STATIC\n".to_string();
    let proxy = Proxy::start(&config(
        &[tcp_listener("in", "BlackHoleCluster", "")],
        &[cluster],
    ));
    let mut s = TcpStream::connect(proxy.listener("in")).await.unwrap();
    let _ = s.write_all(b"anyone?").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(proxy.logs("flag=Some(\"UH\")"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_closes_the_downstream_with_uf() {
    // A port nothing listens on.
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Proxy::start(&config(
        &[tcp_listener("in", "dead", "")],
        &[static_cluster("dead", &[dead], "")],
    ));
    let mut s = TcpStream::connect(proxy.listener("in")).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(proxy.logs("flag=Some(\"UF\")"), "{}", proxy.log());
}

/// Listener filters that route by what the client sends: TLS SNI, ALPN, or plaintext HTTP.
fn inspecting_config(
    tls_sni: std::net::SocketAddr,
    http: std::net::SocketAddr,
    other: std::net::SocketAddr,
    timeout: &str,
) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: sniff
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    listener_filters_timeout: {timeout}
    continue_on_listener_filters_timeout: true
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{"@type": "{TLS_INSPECTOR}"}}
    - name: envoy.filters.listener.http_inspector
      typed_config: {{"@type": "{HTTP_INSPECTOR}"}}
    filter_chains:
    - filter_chain_match: {{transport_protocol: tls, server_names: ["*.skiff.test"]}}
      filters: [{{name: t, typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: tls, cluster: tls_sni}}}}]
    - filter_chain_match: {{application_protocols: [http/1.1, http/1.0]}}
      filters: [{{name: t, typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: http, cluster: http}}}}]
    default_filter_chain:
      filters: [{{name: t, typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: other, cluster: other}}}}]
  clusters:
{}{}{}"#,
        static_cluster("tls_sni", &[tls_sni], ""),
        static_cluster("http", &[http], ""),
        static_cluster("other", &[other], ""),
    )
}

/// Accepts one connection and returns the first `n` bytes it receives (what the proxy relayed).
async fn first_bytes_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = vec![0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        got
    });
    (addr, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_hello_routes_by_sni_and_bytes_are_not_consumed() {
    let (tls_backend, got_tls) = first_bytes_server().await;
    let http = named_server("http").await;
    let other = named_server("other").await;
    let proxy = Proxy::start(&inspecting_config(tls_backend, http, other, "5s"));
    let addr = proxy.listener("sniff");
    // A real TLS client: openssl sends a real ClientHello with this SNI.
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "api.skiff.test",
            "-alpn",
            "h2",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl is installed (apt-get install openssl)");
    let first = tokio::time::timeout(Duration::from_secs(10), got_tls)
        .await
        .expect("the TLS connection reached the SNI cluster")
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // The backend saw the ClientHello from its first byte: a TLS handshake record.
    assert_eq!(first[0], 0x16, "{first:?}");
    assert_eq!(first[1], 0x03);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_http_and_opaque_tcp_take_their_own_chains() {
    let tls = named_server("tls").await;
    let (http_backend, got_http) = first_bytes_server().await;
    let other = named_server("other").await;
    let proxy = Proxy::start(&inspecting_config(tls, http_backend, other, "5s"));
    let addr = proxy.listener("sniff");

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), got_http)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first, b"GET /");

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x01binary-protocol").await.unwrap();
    assert_eq!(read_line(&mut s).await, "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_protocols_do_not_hang_behind_inspectors() {
    let tls = named_server("tls").await;
    let http = named_server("http").await;
    let banner = named_server("server-first-banner").await;
    let proxy = Proxy::start(&inspecting_config(tls, http, banner, "0.3s"));
    // The client sends nothing and waits for the server's banner, like MySQL or SMTP.
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy.listener("sniff")).await.unwrap();
    assert_eq!(read_line(&mut s).await, "server-first-banner");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_continue_on_timeout_a_silent_client_is_closed() {
    let tls = named_server("tls").await;
    let http = named_server("http").await;
    let banner = named_server("banner").await;
    let cfg = inspecting_config(tls, http, banner, "0.3s").replace(
        "continue_on_listener_filters_timeout: true",
        "continue_on_listener_filters_timeout: false",
    );
    let proxy = Proxy::start(&cfg);
    let mut s = TcpStream::connect(proxy.listener("sniff")).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed after the listener filters timeout")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "Envoy closes on timeout unless continue_on_listener_filters_timeout is set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_client_hellos_do_not_hurt_the_listener() {
    let tls = named_server("tls").await;
    let http = named_server("http").await;
    let other = named_server("other").await;
    let proxy = Proxy::start(&inspecting_config(tls, http, other, "0.5s"));
    let addr = proxy.listener("sniff");
    // A handshake record that claims a huge ClientHello, then stops; random junk; a lone 0x16.
    let hostile: [&[u8]; 4] = [
        b"\x16\x03\x01\xff\xff\x01\xff\xff\xff",
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
        b"\x16",
        &[0xff; 300],
    ];
    for bytes in hostile {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    }
    // Still serving.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00ok").await.unwrap();
    assert_eq!(read_line(&mut s).await, "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_exits_once_connections_finish() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start_with(
        &config(
            &[tcp_listener("in", "echo", "")],
            &[static_cluster("echo", &[echo], "")],
        ),
        &["--drain-time-s", "30"],
    );
    let addr = proxy.listener("in");
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"a").await.unwrap();
    let mut b = [0u8; 1];
    open.read_exact(&mut b).await.unwrap();
    proxy.signal("TERM");
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The open connection still works during the drain.
    open.write_all(b"b").await.unwrap();
    open.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"b");
    assert!(proxy.is_running(), "exited while a connection was open");
    drop(open);
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_exits_at_once_and_config_dump_shows_the_bootstrap() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start(&config(
        &[tcp_listener("in", "echo", "")],
        &[static_cluster("echo", &[echo], "")],
    ));
    let (status, body) = http_get(proxy.admin, "/config_dump").unwrap();
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let configs = dump["configs"].as_array().unwrap();
    assert_eq!(
        configs[0]["@type"],
        "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
    );
    assert_eq!(
        configs[0]["bootstrap"]["static_resources"]["clusters"][0]["name"],
        "echo"
    );
    assert_eq!(
        configs[1]["@type"],
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
    );
    assert_eq!(configs[1]["static_clusters"][0]["cluster"]["name"], "echo");
    assert_eq!(
        configs[2]["@type"],
        "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
    );
    assert_eq!(
        configs[2]["static_listeners"][0]["listener"]["filter_chains"][0]["filters"][0]["typed_config"]
            ["@type"],
        TCP_PROXY
    );
    assert_eq!(
        http_get(proxy.admin, "/quitquitquit").unwrap().0,
        405,
        "GET is refused"
    );
    let (status, _) = http_request(
        proxy.admin,
        "POST /quitquitquit HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        proxy.wait_exit(Duration::from_secs(5)).is_some(),
        "still running after /quitquitquit"
    );
}

/// Istio's InboundPassthroughClusterIpv4 connects from 127.0.0.6 (`upstream_bind_config`), which
/// its iptables rules let through; the upstream sees that source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_bind_config_sets_the_source_address() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = l.accept().await {
            let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes()).await;
        }
    });
    let proxy = Proxy::start(&config(
        &[tcp_listener("in", "passthrough", "")],
        &[static_cluster(
            "passthrough",
            &[up],
            "    upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}}",
        )],
    ));
    let mut s = TcpStream::connect(proxy.listener("in")).await.unwrap();
    assert_eq!(read_line(&mut s).await, "127.0.0.6");
}
