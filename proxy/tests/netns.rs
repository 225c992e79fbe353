//! Interception in real network namespaces: iptables REDIRECTs a workload's outbound traffic to
//! the proxy on 15001, and the proxy routes by the original destination, as a sidecar does.
//!
//! Needs root, `ip`, `iptables` and `setpriv`. These tests fail (never skip) without them.

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{PodProxy, TCP_PROXY, netns_pair, sh, within_netns};

/// Runs a command and panics with its output when it fails.
fn require_root_tools() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the network-namespace tests need root (CI runs as root); run them with sudo"
    );
    for tool in ["ip", "iptables", "ip6tables", "setpriv"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "{tool} is not installed (apt-get install iproute2 iptables util-linux)"
        );
    }
}

/// Two namespaces joined by a veth pair: `pod` (the workload and its sidecar) at 10.251.0.1 and
/// `remote` (the services it calls) at 10.251.0.2. Deleted on drop.
struct Topology {
    pod: String,
    remote: String,
}

impl Topology {
    fn new(tag: &str) -> Self {
        require_root_tools();
        let id = format!("{}{}", std::process::id() % 100_000, tag);
        let t = Topology {
            pod: format!("skiff-l4-{id}-pod"),
            remote: format!("skiff-l4-{id}-rem"),
        };
        let (va, vb) = (format!("skp{id}"), format!("skr{id}"));
        // A second remote address, so exact-IP listeners can be told from wildcard ones.
        netns_pair(
            &t.pod,
            &t.remote,
            (&va, &["10.251.0.1/24"]),
            (&vb, &["10.251.0.2/24", "10.251.0.3/24"]),
        );
        // IPv6 too; `nodad` makes the addresses usable at once.
        for (ns, dev, ip) in [
            (&t.pod, &va, "fd00:251::1/64"),
            (&t.remote, &vb, "fd00:251::2/64"),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", dev, "nodad"]);
        }
        t
    }

    /// A server in the remote namespace on `addr` that greets with `name` and echoes.
    fn serve(&self, addr: &'static str, name: &'static str) {
        let l = within_netns(&self.remote, move || TcpListener::bind(addr).unwrap());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let _ = s.write_all(format!("{name}\n").as_bytes());
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }

    /// Connects from the pod namespace (as the workload, uid 0) and returns the greeting.
    fn call(&self, addr: &'static str) -> String {
        let s = within_netns(&self.pod, move || {
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5))
        })
        .unwrap_or_else(|e| panic!("connecting to {addr} from the pod: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        // The echo proves the connection is end to end, not just a greeting.
        (&s).write_all(b"ping\n").unwrap();
        let mut echo = String::new();
        BufReader::new(&s).read_line(&mut echo).unwrap();
        assert_eq!(echo, "ping\n");
        line.trim_end().to_string()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.pod])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.remote])
            .status();
    }
}

fn tcp_chain(cluster: &str) -> String {
    format!(
        "    filter_chains:\n    - filters: [{{name: t, typed_config: {{\"@type\": \"{TCP_PROXY}\", stat_prefix: {cluster}, cluster: {cluster}}}}}]\n"
    )
}

fn static_cluster(name: &str, addr: &str) -> String {
    let (ip, port) = addr.rsplit_once(':').unwrap();
    format!(
        "  - name: {name}\n    connect_timeout: 1s\n    load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}}}]}}]}}\n"
    )
}

/// A sidecar-shaped bootstrap: virtualOutbound on 15001 hands connections to per-port
/// `bind_to_port: false` listeners, and passes the rest through to their original destination.
fn sidecar_bootstrap() -> String {
    format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\n\
         static_resources:\n  listeners:\n\
         \x20 - name: virtualOutbound\n    address: {{socket_address: {{address: 0.0.0.0, port_value: 15001}}}}\n    use_original_dst: true\n{pass}\
         \x20 - name: 0.0.0.0_8080\n    address: {{socket_address: {{address: 0.0.0.0, port_value: 8080}}}}\n    bind_to_port: false\n{a}\
         \x20 - name: 10.251.0.3_7070\n    address: {{socket_address: {{address: 10.251.0.3, port_value: 7070}}}}\n    bind_to_port: false\n{b}\
         \x20 - name: 0.0.0.0_7070\n    address: {{socket_address: {{address: 0.0.0.0, port_value: 7070}}}}\n    bind_to_port: false\n{a}\
         \x20 clusters:\n\
         \x20 - name: PassthroughCluster\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 1s\n{svc_a}{svc_b}",
        pass = tcp_chain("PassthroughCluster"),
        a = tcp_chain("svc-a"),
        b = tcp_chain("svc-b"),
        svc_a = static_cluster("svc-a", "10.251.0.2:9001"),
        svc_b = static_cluster("svc-b", "10.251.0.2:9002"),
    )
}

#[test]
fn outbound_capture_routes_by_original_destination() {
    let t = Topology::new("a");
    t.serve("10.251.0.2:9001", "svc-a");
    t.serve("10.251.0.2:9002", "svc-b");
    t.serve("10.251.0.2:9090", "passthrough-9090");
    t.serve("10.251.0.3:9091", "passthrough-9091");
    // The hand-written capture rule: every TCP connection from the pod to the remote subnet,
    // except the proxy's own (uid 1337), goes to 15001.
    sh(&[
        "ip",
        "netns",
        "exec",
        &t.pod,
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "10.251.0.0/24",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        "1337",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    let proxy = PodProxy::start(&t.pod, &sidecar_bootstrap());

    // 10.251.0.77 exists nowhere: only the proxy's handoff by port can answer it.
    assert_eq!(t.call("10.251.0.77:8080"), "svc-a", "{}", proxy.log());
    assert_eq!(t.call("10.251.0.2:8080"), "svc-a");
    // An exact IP:port listener wins over the 0.0.0.0 one for the same port.
    assert_eq!(t.call("10.251.0.3:7070"), "svc-b");
    assert_eq!(t.call("10.251.0.2:7070"), "svc-a");
    // No listener for these ports: virtualOutbound's own chain passes them through.
    assert_eq!(t.call("10.251.0.2:9090"), "passthrough-9090");
    assert_eq!(t.call("10.251.0.3:9091"), "passthrough-9091");

    let log = proxy.log();
    assert!(log.contains("to=0.0.0.0_8080"), "{log}");
    assert!(log.contains("to=10.251.0.3_7070"), "{log}");
}

#[test]
fn proxy_traffic_is_not_captured_again() {
    // If the proxy's own upstream connections were redirected, passthrough would loop back to
    // 15001. With the uid-owner exemption they leave the pod.
    let t = Topology::new("b");
    t.serve("10.251.0.2:9090", "direct");
    sh(&[
        "ip",
        "netns",
        "exec",
        &t.pod,
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        "1337",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    let proxy = PodProxy::start(&t.pod, &sidecar_bootstrap());
    assert_eq!(t.call("10.251.0.2:9090"), "direct", "{}", proxy.log());
    // Exactly one proxied connection: no loop through 15001. The log line is written when the
    // connection ends, just after the client closes: wait for it, then for any second one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.log().contains("destination=10.251.0.2:9090") {
        assert!(Instant::now() < deadline, "{}", proxy.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // (The harness's own readiness checks to the admin port are captured too, and pass through.)
    let log = proxy.log();
    assert_eq!(
        log.matches("destination=10.251.0.2:9090").count(),
        1,
        "{log}"
    );
    assert!(
        !log.contains(":15001))"),
        "a connection went upstream to 15001: {log}"
    );
}

#[test]
fn ipv6_outbound_capture_routes_by_original_destination() {
    let t = Topology::new("c");
    t.serve("[fd00:251::2]:9001", "svc-a6");
    t.serve("[fd00:251::2]:9090", "passthrough6");
    sh(&[
        "ip",
        "netns",
        "exec",
        &t.pod,
        "ip6tables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "fd00:251::/64",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        "1337",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    let yaml = format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\n\
         static_resources:\n  listeners:\n\
         \x20 - name: virtualOutbound\n    address: {{socket_address: {{address: \"::\", port_value: 15001}}}}\n    use_original_dst: true\n{pass}\
         \x20 - name: \"[::]_8080\"\n    address: {{socket_address: {{address: \"::\", port_value: 8080}}}}\n    bind_to_port: false\n{a}\
         \x20 clusters:\n\
         \x20 - name: PassthroughCluster\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 1s\n{svc_a}",
        pass = tcp_chain("PassthroughCluster"),
        a = tcp_chain("svc-a6"),
        svc_a = static_cluster("svc-a6", "\"fd00:251::2\":9001"),
    );
    let proxy = PodProxy::start(&t.pod, &yaml);
    // IP6T_SO_ORIGINAL_DST recovers the IPv6 destination; fd00:251::77 exists nowhere.
    assert_eq!(t.call("[fd00:251::77]:8080"), "svc-a6", "{}", proxy.log());
    assert_eq!(t.call("[fd00:251::2]:9090"), "passthrough6");
    assert!(proxy.log().contains("to=[::]_8080"), "{}", proxy.log());
}
