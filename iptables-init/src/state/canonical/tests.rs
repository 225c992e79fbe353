//! The canonical forms, checked against what iptables 1.8.9 prints (nf_tables and legacy).

use super::*;

fn spec(family: Family, rule: &str) -> String {
    let args: Vec<String> = rule.split(' ').map(str::to_string).collect();
    saved_spec(family, &args, &|name| (name == "java").then_some(1001)).unwrap()
}

#[test]
fn matches_what_iptables_1_8_9_prints() {
    // Left: what plan emits. Right: iptables-save output seen on nf_tables and legacy.
    let cases = [
        (
            "-o lo -s 127.0.0.6/32 -j RETURN",
            "-s 127.0.0.6/32 -o lo -j RETURN",
        ),
        (
            "-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        ),
        (
            "-o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j RETURN",
            "! -d 127.0.0.1/32 -o lo -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j RETURN",
        ),
        (
            "-p tcp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-ports 15053",
            "-d 127.0.0.53/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053",
        ),
        (
            "-p udp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-port 15053",
            "-d 127.0.0.53/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
        ),
        ("-d 10.1.2.3/8 -j RETURN", "-d 10.0.0.0/8 -j RETURN"),
        (
            "-m owner ! --gid-owner java -m owner ! --gid-owner 202 -j RETURN",
            "-m owner ! --gid-owner 1001 -m owner ! --gid-owner 202 -j RETURN",
        ),
        (
            "-p tcp -m mark --mark 1337 -j CONNMARK --save-mark",
            "-p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
        ),
        (
            "-p tcp -o lo -m mark --mark 1337 -j RETURN",
            "-o lo -p tcp -m mark --mark 0x539 -j RETURN",
        ),
        (
            "-p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark",
            "-p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
        ),
        (
            "-j MARK --set-mark 1337",
            "-j MARK --set-xmark 0x539/0xffffffff",
        ),
        (
            "-p tcp -i lo -m mark ! --mark 1338 -j RETURN",
            "-i lo -p tcp -m mark ! --mark 0x53a -j RETURN",
        ),
        (
            "! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006",
            "! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff",
        ),
        (
            "-p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2",
            "-p udp -m udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2",
        ),
        (
            "-i eth1 -d 10.0.0.0/8 -j RETURN",
            "-d 10.0.0.0/8 -i eth1 -j RETURN",
        ),
        (
            "-m conntrack --ctstate INVALID -j ISTIO_DROP",
            "-m conntrack --ctstate INVALID -j ISTIO_DROP",
        ),
    ];
    for (plan, saved) in cases {
        assert_eq!(spec(Family::V4, plan), saved, "{plan}");
    }
}

#[test]
fn ipv6_forms() {
    assert_eq!(
        spec(
            Family::V6,
            "! -d ::1/128 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006"
        ),
        "! -d ::1/128 -p tcp -j TPROXY --on-port 15006 --on-ip :: --tproxy-mark 0x539/0xffffffff"
    );
    assert_eq!(
        spec(
            Family::V6,
            "-p tcp --dport 53 -d ::7f00:35/128 -j REDIRECT --to-ports 15053"
        ),
        "-d ::127.0.0.53/128 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053"
    );
    assert_eq!(
        spec(Family::V6, "-d 2001:db8::1/32 -j RETURN"),
        "-d 2001:db8::/32 -j RETURN"
    );
}

#[test]
fn glibc_ipv6_formatting() {
    let f = |s: &str| glibc_ipv6(s.parse().unwrap());
    assert_eq!(f("::"), "::");
    assert_eq!(f("::1"), "::1");
    assert_eq!(f("::6"), "::6");
    assert_eq!(f("::7f00:35"), "::127.0.0.53");
    assert_eq!(f("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
    assert_eq!(f("2001:db8::"), "2001:db8::");
    assert_eq!(f("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
    assert_eq!(f("fe80::1:2"), "fe80::1:2");
    assert_eq!(f("1:0:2:3:4:5:6:7"), "1:0:2:3:4:5:6:7");
}

#[test]
fn unknown_vocabulary_is_an_error_not_a_guess() {
    let args: Vec<String> = "-m comment --comment x -j RETURN"
        .split(' ')
        .map(str::to_string)
        .collect();
    assert!(saved_spec(Family::V4, &args, &|_| None).is_err());
    let args: Vec<String> = "-m owner --gid-owner nosuch -j RETURN"
        .split(' ')
        .map(str::to_string)
        .collect();
    assert_eq!(
        saved_spec(Family::V4, &args, &|_| None),
        Err(CanonicalError::UnknownGroup("nosuch".into()))
    );
}
