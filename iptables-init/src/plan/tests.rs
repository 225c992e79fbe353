//! Table tests: one config per case, compared with hand-written iptables-restore text in
//! `testdata/plan/<case>.golden`. The cases mirror istio-iptables' own test table
//! (`capture/run_test.go`) plus the default injection command.

use super::*;
use crate::config::{
    Group, Interface, Port, parse_cidrs, parse_groups, parse_interfaces, parse_ipv4_loopback,
    parse_outbound_cidrs, parse_ports,
};

fn ports(s: &str) -> Vec<Port> {
    parse_ports(s).unwrap()
}

fn ifaces(s: &str) -> Vec<Interface> {
    parse_interfaces(s).unwrap()
}

fn groups(s: &str) -> Vec<Group> {
    parse_groups(s).unwrap()
}

/// The injection template's command: `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x ""
/// -b '*' -d 15090,15021,15020`.
fn default_injection() -> Config {
    Config {
        inbound_ports: InboundPorts::All,
        inbound_ports_exclude: ports("15090,15021,15020"),
        outbound_cidrs: OutboundCidrs::All,
        ..Config::default()
    }
}

fn cases() -> Vec<(&'static str, Config)> {
    let v6 = |c: Config| Config {
        enable_ipv6: true,
        ..c
    };
    vec![
        ("default-injection", default_injection()),
        ("default-injection-dual-stack", v6(default_injection())),
        ("empty", Config::default()),
        (
            "tproxy",
            v6(Config {
                mode: InterceptionMode::Tproxy,
                inbound_ports: InboundPorts::All,
                outbound_cidrs_exclude: parse_cidrs("1.1.0.0/16").unwrap(),
                outbound_cidrs: parse_outbound_cidrs("9.9.0.0/16").unwrap(),
                redirect_dns: true,
                dns_servers_v4: vec!["127.0.0.53".parse().unwrap()],
                exclude_interfaces: ifaces("not-istio-nic"),
                ..Config::default()
            }),
        ),
        (
            "tproxy-default-injection",
            Config {
                mode: InterceptionMode::Tproxy,
                ..default_injection()
            },
        ),
        (
            "inbound-ports-tproxy",
            Config {
                mode: InterceptionMode::Tproxy,
                inbound_ports: InboundPorts::Only(ports("32000,31000")),
                ..Config::default()
            },
        ),
        (
            "inbound-ports-include",
            Config {
                inbound_ports: InboundPorts::Only(ports("32000,31000")),
                ..Config::default()
            },
        ),
        (
            "ip-range",
            Config {
                outbound_cidrs_exclude: parse_cidrs("1.1.0.0/16").unwrap(),
                outbound_cidrs: parse_outbound_cidrs("9.9.0.0/16").unwrap(),
                redirect_dns: true,
                dns_servers_v4: vec!["127.0.0.53".parse().unwrap()],
                proxy_uids: vec![3, 4],
                proxy_gids: vec![1, 2],
                ..Config::default()
            },
        ),
        (
            "ipv6-virt-interfaces",
            v6(Config {
                inbound_ports: InboundPorts::Only(ports("4000,5000")),
                kube_virt_interfaces: ifaces("eth0,eth1"),
                ..Config::default()
            }),
        ),
        (
            "ipv6-ipnets",
            v6(Config {
                inbound_ports: InboundPorts::Only(ports("4000,5000")),
                inbound_ports_exclude: ports("6000,7000,"),
                kube_virt_interfaces: ifaces("eth0,eth1"),
                outbound_cidrs_exclude: parse_cidrs("2001:db8::/32").unwrap(),
                outbound_cidrs: parse_outbound_cidrs("2001:db8::/32").unwrap(),
                ..Config::default()
            }),
        ),
        (
            "kube-virt-interfaces",
            Config {
                kube_virt_interfaces: ifaces("eth1,eth2"),
                outbound_cidrs: OutboundCidrs::All,
                ..Config::default()
            },
        ),
        (
            "ipnets-with-kube-virt-interfaces",
            Config {
                kube_virt_interfaces: ifaces("eth1,eth2"),
                outbound_cidrs: parse_outbound_cidrs("10.0.0.0/8").unwrap(),
                ..Config::default()
            },
        ),
        (
            "outbound-owner-groups",
            Config {
                owner_groups: OwnerGroups::Only(groups("java,202")),
                ..Config::default()
            },
        ),
        (
            "outbound-owner-groups-exclude",
            Config {
                owner_groups: OwnerGroups::AllExcept(groups("888,ftp")),
                ..Config::default()
            },
        ),
        (
            "dns-uid-gid",
            v6(Config {
                redirect_dns: true,
                dns_servers_v4: vec!["127.0.0.53".parse().unwrap()],
                dns_servers_v6: vec!["::127.0.0.53".parse().unwrap()],
                proxy_uids: vec![3, 4],
                proxy_gids: vec![1, 2],
                ..Config::default()
            }),
        ),
        (
            "capture-all-dns",
            Config {
                redirect_dns: true,
                capture_all_dns: true,
                ..default_injection()
            },
        ),
        (
            "redirect-dns-without-servers",
            Config {
                redirect_dns: true,
                ..Config::default()
            },
        ),
        (
            "drop-invalid",
            Config {
                drop_invalid: true,
                ..Config::default()
            },
        ),
        (
            "outbound-ports",
            Config {
                outbound_ports_include: ports("32000,31000"),
                outbound_ports_exclude: ports("22,80"),
                ..Config::default()
            },
        ),
        (
            "loopback-outbound-iprange",
            Config {
                outbound_cidrs: parse_outbound_cidrs("127.1.2.3/32").unwrap(),
                redirect_dns: true,
                dns_servers_v4: vec!["127.0.0.53".parse().unwrap()],
                proxy_uids: vec![3, 4],
                proxy_gids: vec![1, 2],
                ..Config::default()
            },
        ),
        (
            "host-ipv4-loopback-cidr",
            Config {
                ipv4_loopback: parse_ipv4_loopback("127.0.0.1/8").unwrap(),
                ..Config::default()
            },
        ),
        (
            "basic-exclude-nic",
            Config {
                exclude_interfaces: ifaces("not-istio-nic"),
                ..Config::default()
            },
        ),
    ]
}

fn golden(name: &str) -> String {
    let path = format!("{}/testdata/plan/{name}.golden", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

#[test]
fn plans_match_hand_written_goldens() {
    let mut failures = Vec::new();
    for (name, cfg) in cases() {
        let got = plan(&cfg).render_all();
        let want = golden(name);
        if got != want {
            failures.push(format!("=== {name}: got\n{got}=== want\n{want}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_file_has_a_case() {
    let dir = format!("{}/testdata/plan", env!("CARGO_MANIFEST_DIR"));
    let names: Vec<&str> = cases().iter().map(|(n, _)| *n).collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let stem = file.trim_end_matches(".golden");
        assert!(names.contains(&stem), "testdata/plan/{file} has no case");
    }
    assert!(names.len() >= 15);
}

#[test]
fn plan_is_deterministic() {
    for (_, cfg) in cases() {
        assert_eq!(plan(&cfg), plan(&cfg));
    }
}

#[test]
fn ipv6_off_means_no_ip6tables_rules() {
    let rs = plan(&default_injection());
    assert!(rs.rules(crate::rules::Family::V6).is_empty());
    assert!(!rs.render_all().contains("ip6tables"));
}

#[test]
fn redirect_dns_without_servers_is_turned_off() {
    let cfg = Config {
        redirect_dns: true,
        ..Config::default()
    };
    assert!(!effective_redirect_dns(&cfg));
    assert_eq!(plan(&cfg), plan(&Config::default()));
}
