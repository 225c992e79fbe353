//! Test support: network namespaces with a veth peer, the binary, sockets inside namespaces,
//! and iptables-save helpers. Everything is named `skiff-ipt-<pid>-<test>` and removed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use iptables_init::config::Config;
use iptables_init::plan::plan;
use iptables_init::rules::{Family, Table};
use iptables_init::state::{Expected, SavedState};

/// Pod side of the veth.
pub const POD_V4: &str = "10.200.0.1";
/// Peer side of the veth.
pub const PEER_V4: &str = "10.200.0.2";
/// Pod side, IPv6.
pub const POD_V6: &str = "fd00:200::1";
/// Peer side, IPv6.
pub const PEER_V6: &str = "fd00:200::2";
/// The injection template's command line.
pub const DEFAULT_INJECTION: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

/// Fails (never skips) when the machine cannot run these tests.
pub fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the namespaced iptables-init tests need root (they create network namespaces and change iptables); \
         run them as root, e.g. `sudo -E cargo test -p iptables-init --test netns`"
    );
    for tool in [
        "ip",
        "iptables-save",
        "iptables-restore",
        "ip6tables-save",
        "setpriv",
        "bash",
        "timeout",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is not installed; the namespaced tests need the Debian packages iproute2, iptables, util-linux, bash and coreutils"
        );
    }
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// `skiff-ipt-<pid>-<tag>`.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up.
    pub fn new(tag: &str) -> Self {
        let name = format!("skiff-ipt-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `/run/netns/<name>`, for `--network-namespace`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <name> args`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full);
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        Command::new("ip")
            .args(&full)
            .output()
            .expect("ip netns exec")
    }

    /// Runs a shell script inside the namespace; it must succeed.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "`{script}` failed in {}: {}",
            self.name,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs `f` on a thread that lives in this namespace; sockets it creates stay in it.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let file = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }

    /// A TCP listener inside the namespace.
    pub fn listen(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        self.enter(|| TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
    }

    /// `iptables-save` (or `ip6tables-save`, or a `-legacy`/`-nft` variant) output.
    pub fn save(&self, program: &str) -> String {
        let out = self.exec(&[program]);
        assert!(out.status.success(), "{program}: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A pod namespace and a peer namespace joined by a veth pair.
#[derive(Debug)]
pub struct Pair {
    /// The pod (rules go here). Default route via the peer.
    pub pod: Netns,
    /// The outside world.
    pub peer: Netns,
}

impl Pair {
    /// IPv4 only.
    pub fn new(tag: &str) -> Self {
        Self::build(tag, false)
    }

    /// IPv4 and IPv6 addresses on the veth.
    pub fn dual_stack(tag: &str) -> Self {
        Self::build(tag, true)
    }

    fn build(tag: &str, v6: bool) -> Self {
        let pod = Netns::new(tag);
        let peer = Netns::new(&format!("{tag}-p"));
        pod.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
        ]);
        pod.ip(&["addr", "add", &format!("{POD_V4}/24"), "dev", "eth0"]);
        peer.ip(&["addr", "add", &format!("{PEER_V4}/24"), "dev", "eth0"]);
        if v6 {
            pod.ip(&[
                "addr",
                "add",
                &format!("{POD_V6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            peer.ip(&[
                "addr",
                "add",
                &format!("{PEER_V6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        pod.ip(&["link", "set", "eth0", "up"]);
        peer.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["route", "add", "default", "via", PEER_V4]);
        if v6 {
            pod.ip(&["-6", "route", "add", "default", "via", PEER_V6]);
        }
        Self { pod, peer }
    }

    /// Runs iptables-init against the pod namespace through `--network-namespace`.
    pub fn init(&self, args: &[&str]) -> Output {
        let ns = self.pod.path();
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--network-namespace", ns.to_str().unwrap()]);
        iptables_init(&full, &[])
    }

    /// Runs iptables-init and requires success.
    pub fn init_ok(&self, args: &[&str]) -> Output {
        let out = self.init(args);
        assert!(
            out.status.success(),
            "iptables-init {args:?} failed ({}):\n{}",
            out.status,
            text(&out.stderr)
        );
        out
    }
}

/// Runs the binary with extra environment variables.
pub fn iptables_init(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iptables-init"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run iptables-init")
}

/// Runs a command that must succeed.
pub fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect(cmd[0]);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        text(&out.stderr)
    );
}

/// Lossy UTF-8.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// iptables-save output without comments and with counters zeroed, for before/after checks.
pub fn normalized(save: &str) -> String {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => format!("{} [0:0]", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks, table by table and line by line, that Skiff's part of `save` is exactly the plan.
pub fn assert_tables_match_plan(save: &str, cfg: &Config, family: Family) {
    let rules = plan(cfg);
    let expected = Expected::new(&rules, family, &|_| None).expect("plan in iptables-save form");
    let state = SavedState::parse(save).expect("parse iptables-save");
    for table in Table::ALL {
        let want = expected.lines(table);
        let have = state
            .table(table)
            .map(|t| t.own_lines(expected.tables.get(&table)))
            .unwrap_or_default();
        for (i, (w, h)) in want.iter().zip(&have).enumerate() {
            assert_eq!(
                h, w,
                "{family} {table} line {i} differs\nfull dump:\n{save}"
            );
        }
        assert_eq!(
            have.len(),
            want.len(),
            "{family} {table}: line count differs\nwant {want:#?}\nhave {have:#?}"
        );
    }
}

/// Starts `bash` as `uid` (and group `uid`) inside `ns`: connects to `addr`, sends `ping`,
/// prints the reply.
pub fn client_as(ns: &Netns, uid: u32, addr: SocketAddr) -> Child {
    client_as_ids(ns, uid, uid, addr)
}

/// Like [`client_as`] with a separate gid, to tell the uid and gid bypass rules apart.
pub fn client_as_ids(ns: &Netns, uid: u32, gid: u32, addr: SocketAddr) -> Child {
    let (ip, port) = (addr.ip().to_string(), addr.port());
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{port} || exit 3; printf ping >&3; IFS= read -r -t 5 reply <&3; printf '%s' \"$reply\""
    );
    let ids = [format!("--reuid={uid}"), format!("--regid={gid}")];
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "setpriv",
            &ids[0],
            &ids[1],
            "--clear-groups",
        ])
        .args(["timeout", "10", "bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client")
}

/// Waits for a client started by [`client_as`]; returns (exit success, stdout, stderr).
pub fn finish(child: Child) -> (bool, String, String) {
    let out = child.wait_with_output().expect("client");
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Accepts one connection within `timeout`, or `None`.
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> Option<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false).unwrap();
                return Some((s, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads the client's `ping` and answers `reply` plus a newline.
pub fn serve_once(mut stream: TcpStream, reply: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).expect("read ping");
    assert_eq!(&buf, b"ping");
    stream.write_all(format!("{reply}\n").as_bytes()).unwrap();
}

/// The original destination of a NAT-redirected IPv4 connection.
pub fn original_dst_v4(stream: &TcpStream) -> SocketAddr {
    socket2::SockRef::from(stream)
        .original_dst_v4()
        .expect("SO_ORIGINAL_DST")
        .as_socket()
        .expect("an IP address")
}

/// The original destination of a NAT-redirected IPv6 connection.
pub fn original_dst_v6(stream: &TcpStream) -> SocketAddr {
    socket2::SockRef::from(stream)
        .original_dst_v6()
        .expect("IP6T_SO_ORIGINAL_DST")
        .as_socket()
        .expect("an IP address")
}

/// Adds rules owned by "someone else" to every table, so cleanup has something to preserve.
pub fn add_foreign_rules(ns: &Netns, program: &str) {
    ns.sh(&format!(
        "{p} -t filter -A INPUT -p tcp --dport 9 -j ACCEPT && \
         {p} -t nat -N FOREIGN && {p} -t nat -A FOREIGN -p tcp --dport 9 -j RETURN && \
         {p} -t nat -A OUTPUT -j FOREIGN && {p} -t nat -A PREROUTING -p udp --dport 9 -j RETURN && \
         {p} -t mangle -A PREROUTING -p udp --dport 9 -j RETURN && \
         {p} -t raw -A OUTPUT -p udp --dport 9 -j RETURN",
        p = program
    ));
}
