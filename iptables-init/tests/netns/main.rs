//! Namespaced tests: the real binary programs real network namespaces, and real sockets check
//! where traffic lands. They need root and fail (never skip) without it.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use iptables_init::cli::{self, MapEnvironment};
use iptables_init::config::Config;
use iptables_init::plan::plan;
use iptables_init::rules::Family;
use support::*;

const WAIT: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(300);

/// The config the binary builds from `args` (no environment), with IPv6 as the pod has it.
fn config_for(args: &[&str], ipv6: bool) -> Config {
    let argv = std::iter::once("iptables-init").chain(args.iter().copied());
    let mut cfg = cli::parse(argv, &MapEnvironment::default())
        .expect("test args parse")
        .config;
    cfg.enable_ipv6 = ipv6;
    cfg
}

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = DEFAULT_INJECTION.to_vec();
    v.extend_from_slice(extra);
    v
}

fn connect_in(ns: &Netns, addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.enter(|| {
        TcpStream::connect_timeout(&addr, WAIT).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    })
}

fn stderr(out: &std::process::Output) -> String {
    text(&out.stderr)
}

#[test]
fn default_injection_installs_exactly_the_plan() {
    require_root_and_tools();
    let pair = Pair::new("exact");
    pair.init_ok(DEFAULT_INJECTION);

    let save = pair.pod.save("iptables-nft-save");
    assert_tables_match_plan(&save, &config_for(DEFAULT_INJECTION, false), Family::V4);
    assert!(
        !pair.pod.save("iptables-legacy-save").contains("ISTIO"),
        "a fresh namespace gets nft, as with Istio"
    );
    assert!(
        !pair.pod.save("ip6tables-nft-save").contains("ISTIO"),
        "an IPv4-only pod gets no ip6tables rules"
    );
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    require_root_and_tools();
    let pair = Pair::new("dry");
    let before = normalized(&pair.pod.save("iptables-save"));
    let out = pair.init_ok(&with(&["--dry-run"]));
    assert_eq!(
        text(&out.stdout),
        plan(&config_for(DEFAULT_INJECTION, false)).render_all()
    );
    assert_eq!(normalized(&pair.pod.save("iptables-save")), before);
}

#[test]
fn outbound_from_an_app_uid_lands_on_15001_with_the_original_destination() {
    require_root_and_tools();
    let pair = Pair::new("out");
    pair.init_ok(DEFAULT_INJECTION);
    let proxy = pair.pod.listen("0.0.0.0:15001");

    for dst in ["203.0.113.7:8080", "10.200.0.2:9443"] {
        let dst: SocketAddr = dst.parse().unwrap();
        let client = client_as(&pair.pod, 2000, dst);
        let (stream, _) = accept_within(&proxy, WAIT)
            .unwrap_or_else(|| panic!("uid 2000 to {dst} never reached 15001"));
        assert_eq!(
            original_dst_v4(&stream),
            dst,
            "SO_ORIGINAL_DST must give the real address"
        );
        serve_once(stream, "proxy");
        let (ok, reply, err) = finish(client);
        assert!(ok, "client failed: {err}");
        assert_eq!(reply, "proxy");
    }
}

#[test]
fn outbound_from_the_proxy_uid_or_gid_bypasses_capture() {
    require_root_and_tools();
    let pair = Pair::new("bypass");
    pair.init_ok(DEFAULT_INJECTION);
    let proxy = pair.pod.listen("0.0.0.0:15001");
    let upstream = pair.peer.listen(&format!("{PEER_V4}:0"));
    let addr = upstream.local_addr().unwrap();

    // uid 1337 alone, gid 1337 alone, and both (as the proxy runs): each goes straight out.
    for (uid, gid) in [(1337, 2000), (2000, 1337), (1337, 1337)] {
        let client = client_as_ids(&pair.pod, uid, gid, addr);
        let (stream, from) = accept_within(&upstream, WAIT)
            .unwrap_or_else(|| panic!("uid {uid} gid {gid} should reach the peer directly"));
        assert_eq!(from.ip().to_string(), POD_V4);
        serve_once(stream, "upstream");
        let (ok, reply, err) = finish(client);
        assert!(ok, "client failed: {err}");
        assert_eq!(reply, "upstream");
        assert!(
            accept_within(&proxy, SHORT).is_none(),
            "uid {uid} gid {gid} was redirected to 15001"
        );
    }

    // The same destination from an app uid is captured: the bypass is the owner, not the address.
    let client = client_as(&pair.pod, 2000, addr);
    let (stream, _) = accept_within(&proxy, WAIT).expect("uid 2000 should be redirected");
    assert_eq!(original_dst_v4(&stream), addr);
    serve_once(stream, "proxy");
    assert_eq!(finish(client).1, "proxy");
    assert!(accept_within(&upstream, SHORT).is_none());
}

#[test]
fn outbound_to_an_excluded_cidr_or_port_is_not_captured() {
    require_root_and_tools();
    let pair = Pair::new("exclude");
    // 10.200.0.2 is excluded by CIDR (-x); 10.200.0.3 only by port (-o).
    pair.peer
        .ip(&["addr", "add", "10.200.0.3/24", "dev", "eth0"]);
    let upstream = pair.peer.listen(&format!("{PEER_V4}:0"));
    let excluded_port = pair.peer.listen("10.200.0.3:0");
    let port = excluded_port.local_addr().unwrap().port().to_string();
    let args: Vec<&str> = DEFAULT_INJECTION
        .iter()
        .copied()
        .map(|a| if a.is_empty() { "10.200.0.2/32" } else { a })
        .chain(["-o", port.as_str()])
        .collect();
    pair.init_ok(&args);
    assert_tables_match_plan(
        &pair.pod.save("iptables-save"),
        &config_for(&args, false),
        Family::V4,
    );
    let proxy = pair.pod.listen("0.0.0.0:15001");

    for listener in [&upstream, &excluded_port] {
        let addr = listener.local_addr().unwrap();
        let client = client_as(&pair.pod, 2000, addr);
        let (stream, _) = accept_within(listener, WAIT)
            .unwrap_or_else(|| panic!("{addr} should not be captured"));
        serve_once(stream, "direct");
        assert_eq!(finish(client).1, "direct");
        assert!(
            accept_within(&proxy, SHORT).is_none(),
            "{addr} was captured"
        );
    }
    // Another port on 10.200.0.3 still is.
    let client = client_as(&pair.pod, 2000, "10.200.0.3:80".parse().unwrap());
    let (stream, _) = accept_within(&proxy, WAIT).expect("10.200.0.3:80 should be captured");
    serve_once(stream, "proxy");
    assert_eq!(finish(client).1, "proxy");
}

#[test]
fn inbound_from_a_peer_lands_on_15006_except_excluded_ports() {
    require_root_and_tools();
    let pair = Pair::new("in");
    pair.init_ok(DEFAULT_INJECTION);
    let inbound = pair.pod.listen("0.0.0.0:15006");

    let client = connect_in(&pair.peer, &format!("{POD_V4}:8080"));
    let (server, from) =
        accept_within(&inbound, WAIT).expect("inbound to :8080 never reached 15006");
    assert_eq!(
        original_dst_v4(&server),
        format!("{POD_V4}:8080").parse().unwrap()
    );
    assert_eq!(
        from,
        client.local_addr().unwrap(),
        "the peer's address is kept"
    );

    // -d ports and the tunnel port are not captured: they reach their own listener.
    for port in [15090, 15021, 15020, 15008] {
        let direct = pair.pod.listen(&format!("0.0.0.0:{port}"));
        let _client = connect_in(&pair.peer, &format!("{POD_V4}:{port}"));
        assert!(
            accept_within(&direct, WAIT).is_some(),
            "port {port} did not reach its listener"
        );
        assert!(
            accept_within(&inbound, SHORT).is_none(),
            "port {port} was captured to 15006"
        );
    }
}

#[test]
fn second_apply_is_idempotent_and_reconcile_replaces() {
    require_root_and_tools();
    let pair = Pair::new("idem");
    pair.init_ok(DEFAULT_INJECTION);
    let first = normalized(&pair.pod.save("iptables-save"));

    let out = pair.init_ok(DEFAULT_INJECTION);
    assert!(
        stderr(&out).contains("already present and identical"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        normalized(&pair.pod.save("iptables-save")),
        first,
        "a second apply must not duplicate"
    );
    pair.init_ok(&with(&["--reconcile"]));
    assert_eq!(
        normalized(&pair.pod.save("iptables-save")),
        first,
        "reconcile of identical rules changes nothing"
    );

    // Different rules without --reconcile: refused, nothing changed.
    let other: Vec<&str> = DEFAULT_INJECTION
        .iter()
        .map(|a| {
            if *a == "15090,15021,15020" {
                "15090,15021"
            } else {
                *a
            }
        })
        .collect();
    let out = pair.init(&other);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--reconcile") && err.contains("--dport 15020"),
        "{err}"
    );
    assert_eq!(normalized(&pair.pod.save("iptables-save")), first);

    // With --reconcile the new plan replaces the old one, in one transaction.
    let mut reconcile = other.clone();
    reconcile.push("--reconcile");
    pair.init_ok(&reconcile);
    assert_tables_match_plan(
        &pair.pod.save("iptables-save"),
        &config_for(&other, false),
        Family::V4,
    );
}

#[test]
fn cleanup_only_restores_iptables_save_exactly() {
    require_root_and_tools();
    let pair = Pair::new("clean");
    add_foreign_rules(&pair.pod, "iptables");
    let before = normalized(&pair.pod.save("iptables-save"));

    let args = with(&["--drop-invalid", "-k", "eth9"]);
    pair.init_ok(&args);
    let applied = pair.pod.save("iptables-save");
    assert_tables_match_plan(&applied, &config_for(&args, false), Family::V4);
    assert!(
        applied.contains("-A OUTPUT -j FOREIGN"),
        "foreign rules are kept"
    );

    let mut cleanup = args.clone();
    cleanup.push("--cleanup-only");
    pair.init_ok(&cleanup);
    assert_eq!(normalized(&pair.pod.save("iptables-save")), before);

    let out = pair.init_ok(&cleanup);
    assert!(stderr(&out).contains("nothing changed"), "{}", stderr(&out));
    assert_eq!(normalized(&pair.pod.save("iptables-save")), before);
}

/// A listener with IP_TRANSPARENT, as Envoy's TPROXY inbound listener.
fn transparent_listener(ns: &Netns, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.enter(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_ip_transparent_v4(true).expect("IP_TRANSPARENT");
        s.bind(&addr.into()).unwrap();
        s.listen(16).unwrap();
        s.into()
    })
}

#[test]
fn tproxy_keeps_the_original_destination_of_inbound_traffic() {
    require_root_and_tools();
    let pair = Pair::new("tproxy");
    add_foreign_rules(&pair.pod, "iptables");
    let before = normalized(&pair.pod.save("iptables-save"));
    let args: Vec<&str> = DEFAULT_INJECTION
        .iter()
        .map(|a| if *a == "REDIRECT" { "TPROXY" } else { *a })
        .collect();
    pair.init_ok(&args);
    pair.init_ok(&args);
    assert_tables_match_plan(
        &pair.pod.save("iptables-save"),
        &config_for(&args, false),
        Family::V4,
    );
    let rules = pair.pod.sh("ip rule show");
    let copies = rules.matches("fwmark 0x539 lookup 133").count();
    assert_eq!(copies, 1, "one TPROXY rule after two runs:\n{rules}");
    assert!(
        pair.pod
            .sh("ip route show table 133")
            .contains("local default dev lo")
    );

    let inbound = transparent_listener(&pair.pod, "0.0.0.0:15006");
    let mut client = connect_in(&pair.peer, &format!("{POD_V4}:8080"));
    let (server, from) = accept_within(&inbound, WAIT).expect("TPROXY never delivered to 15006");
    assert_eq!(
        server.local_addr().unwrap(),
        format!("{POD_V4}:8080").parse().unwrap(),
        "TPROXY keeps the original destination on the socket"
    );
    assert_eq!(from, client.local_addr().unwrap());
    client.write_all(b"ping").unwrap();
    serve_once(server, "tproxy");
    let mut reply = String::new();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "tproxy\n");

    let direct = pair.pod.listen("0.0.0.0:15021");
    let _c = connect_in(&pair.peer, &format!("{POD_V4}:15021"));
    assert!(
        accept_within(&direct, WAIT).is_some(),
        "-d port 15021 must not be captured"
    );
    assert!(accept_within(&inbound, SHORT).is_none());

    let mut cleanup = args.clone();
    cleanup.push("--cleanup-only");
    pair.init_ok(&cleanup);
    assert_eq!(normalized(&pair.pod.save("iptables-save")), before);
    assert!(
        !pair.pod.sh("ip rule show").contains("lookup 133"),
        "cleanup removes the TPROXY rule"
    );
}

#[test]
fn bad_input_is_refused_naming_the_flag_and_tables_stay_untouched() {
    require_root_and_tools();
    let pair = Pair::new("bad");
    add_foreign_rules(&pair.pod, "iptables");
    let before = normalized(&pair.pod.save("iptables-save"));
    let cases: [(&[&str], &str); 6] = [
        (
            &["-i", "10.0.0.0/33"],
            "-i/--istio-service-cidr: \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            &["-b", "*", "-d", "15090,70000"],
            "-d/--istio-local-exclude-ports: \"70000\" is not a port",
        ),
        (&["-p", "http"], "-p/--envoy-port: \"http\" is not a port"),
        (
            &["-m", "tproxy"],
            "-m/--istio-inbound-interception-mode: \"tproxy\" is not an interception mode",
        ),
        (
            &["-m", "TPROXY", "-t", "4294967296"],
            "-t/--istio-inbound-tproxy-mark: \"4294967296\" is not a packet mark",
        ),
        (&["--cleanup-only", "--reconcile"], "conflicting settings"),
    ];
    for (args, want) in cases {
        let out = pair.init(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert_eq!(
            normalized(&pair.pod.save("iptables-save")),
            before,
            "{args:?} changed the tables"
        );
    }

    let ns = pair.pod.path();
    let mut args = DEFAULT_INJECTION.to_vec();
    args.extend(["--network-namespace", ns.to_str().unwrap()]);
    let out = iptables_init(
        &args,
        &[("ISTIO_OUTBOUND_OWNER_GROUPS", "no-such-group-skiff")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no-such-group-skiff"),
        "{}",
        stderr(&out)
    );
    assert_eq!(normalized(&pair.pod.save("iptables-save")), before);
}

#[test]
fn a_missing_iptables_binary_fails_clearly_and_changes_nothing() {
    require_root_and_tools();
    let pair = Pair::new("nobin");
    let before = normalized(&pair.pod.save("iptables-save"));
    let ns = pair.pod.path();
    let mut args = DEFAULT_INJECTION.to_vec();
    args.extend(["--network-namespace", ns.to_str().unwrap()]);
    let out = iptables_init(&args, &[("PATH", "/nonexistent-skiff-bin")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no IPv4 iptables binaries found")
            && err.contains("install the iptables package"),
        "{err}"
    );
    assert_eq!(normalized(&pair.pod.save("iptables-save")), before);
}

#[test]
fn without_cap_net_admin_it_fails_and_changes_nothing() {
    require_root_and_tools();
    let pair = Pair::new("nocap");
    let before = normalized(&pair.pod.save("iptables-save"));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.pod.name,
            "setpriv",
            "--reuid=2000",
            "--regid=2000",
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_iptables-init"))
        .args(DEFAULT_INJECTION)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("CAP_NET_ADMIN"), "{}", stderr(&out));
    assert_eq!(normalized(&pair.pod.save("iptables-save")), before);
}

#[test]
fn legacy_backend_is_used_when_legacy_already_has_rules() {
    require_root_and_tools();
    let pair = Pair::new("legacy");
    add_foreign_rules(&pair.pod, "iptables-legacy");
    let before = normalized(&pair.pod.save("iptables-legacy-save"));
    pair.init_ok(DEFAULT_INJECTION);
    assert_tables_match_plan(
        &pair.pod.save("iptables-legacy-save"),
        &config_for(DEFAULT_INJECTION, false),
        Family::V4,
    );
    assert!(
        !pair.pod.save("iptables-nft-save").contains("ISTIO"),
        "nothing may go to nft"
    );

    pair.init_ok(&with(&["--cleanup-only"]));
    assert_eq!(normalized(&pair.pod.save("iptables-legacy-save")), before);
}

#[test]
fn dual_stack_programs_ip6tables_with_6_and_1() {
    require_root_and_tools();
    let pair = Pair::dual_stack("dual");
    // Without --dual-stack the first address (IPv4 here) decides, as in istio-iptables.
    pair.init_ok(DEFAULT_INJECTION);
    assert!(!pair.pod.save("ip6tables-save").contains("ISTIO"));
    pair.init_ok(&with(&["--cleanup-only"]));

    pair.init_ok(&with(&["--dual-stack"]));
    // A second run finds everything in place, the ::6 address included.
    pair.init_ok(&with(&["--dual-stack"]));
    let cfg = config_for(DEFAULT_INJECTION, true);
    assert_tables_match_plan(&pair.pod.save("iptables-save"), &cfg, Family::V4);
    let save6 = pair.pod.save("ip6tables-save");
    assert_tables_match_plan(&save6, &cfg, Family::V6);
    assert!(save6.contains("-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN"));
    assert!(
        pair.pod.sh("ip -6 addr show dev lo").contains("::6/128"),
        "the ::6 passthrough address is added"
    );

    let proxy = pair.pod.listen("[::]:15001");
    let dst: SocketAddr = format!("[{PEER_V6}]:9443").parse().unwrap();
    let client = client_as(&pair.pod, 2000, dst);
    let (stream, _) = accept_within(&proxy, WAIT).expect("IPv6 app traffic never reached 15001");
    assert_eq!(original_dst_v6(&stream), dst);
    serve_once(stream, "proxy6");
    assert_eq!(finish(client).1, "proxy6");
}

/// Runs `--run-validation --skip-rule-apply` as `uid` inside the pod.
fn validate_as(pod: &Netns, uid: u32, timeout: &str) -> std::process::Output {
    let ids = [format!("--reuid={uid}"), format!("--regid={uid}")];
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.name,
            "setpriv",
            &ids[0],
            &ids[1],
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_iptables-init"))
        .args(DEFAULT_INJECTION)
        .args([
            "--run-validation",
            "--skip-rule-apply",
            "--probe-timeout",
            timeout,
        ])
        .output()
        .unwrap()
}

#[test]
fn run_validation_passes_only_when_redirection_works() {
    require_root_and_tools();
    let pair = Pair::new("valid");
    let out = validate_as(&pair.pod, 1337, "1s");
    assert_eq!(
        out.status.code(),
        Some(126),
        "no rules yet: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("validation failed"),
        "{}",
        stderr(&out)
    );

    pair.init_ok(DEFAULT_INJECTION);
    let out = validate_as(&pair.pod, 1337, "5s");
    assert!(
        out.status.success(),
        "validation as the proxy uid failed: {}",
        stderr(&out)
    );
    let out = validate_as(&pair.pod, 0, "1s");
    assert_eq!(
        out.status.code(),
        Some(126),
        "root's probe is not redirected: {}",
        stderr(&out)
    );
}
