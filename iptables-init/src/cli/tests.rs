//! Command-line tests: istio-iptables' flags and environment fallbacks, and errors that name
//! the flag and the value.

use super::*;
use crate::config::{InboundPorts, OutboundCidrs, parse_ports};

fn args(line: &str) -> Vec<String> {
    std::iter::once("iptables-init".to_string())
        .chain(line.split_whitespace().map(|a| a.replace("''", "")))
        .collect()
}

fn ok(line: &str) -> Invocation {
    parse(args(line), &MapEnvironment::default()).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn err(line: &str, env: &MapEnvironment) -> String {
    match parse(args(line), env) {
        Ok(inv) => panic!("{line} parsed: {inv:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn default_injection_command_parses_to_istio_defaults() {
    // `-x ""` is written as `''` here and becomes an empty argument.
    let inv = ok("-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x '' -b * -d 15090,15021,15020");
    let c = &inv.config;
    assert_eq!(c.proxy_port.get(), 15001);
    assert_eq!(c.inbound_capture_port.get(), 15006);
    assert_eq!(c.inbound_tunnel_port.get(), 15008);
    assert_eq!(c.proxy_uids, vec![1337]);
    assert_eq!(c.proxy_gids, vec![1337], "-g defaults to -u");
    assert_eq!(c.inbound_ports, InboundPorts::All);
    assert_eq!(
        c.inbound_ports_exclude,
        parse_ports("15090,15021,15020").unwrap()
    );
    assert_eq!(c.outbound_cidrs, OutboundCidrs::All);
    assert!(c.outbound_cidrs_exclude.is_empty());
    assert_eq!(c.owner_groups, OwnerGroups::AllExcept(vec![]));
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert!(!inv.options.dry_run);
    assert_eq!(inv.options.probe_port.get(), 15002);
    assert_eq!(inv.options.probe_timeout, Duration::from_secs(5));
}

#[test]
fn pilot_agent_style_argument_lists_work() {
    let inv = ok(
        "istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x '' -b * -d 15090,15021 --log_output_level=default:info",
    );
    assert_eq!(inv.options.log_level, LogLevel::Info);
    assert!(
        err("istio-clean-iptables", &MapEnvironment::default()).contains("unexpected argument")
    );
}

#[test]
fn long_flags_and_attached_values() {
    let inv = ok(
        "--envoy-port=15101 -z15106 --istio-inbound-interception-mode TPROXY --istio-inbound-tproxy-mark=7 -r 200",
    );
    assert_eq!(inv.config.proxy_port.get(), 15101);
    assert_eq!(inv.config.inbound_capture_port.get(), 15106);
    assert_eq!(inv.config.mode, InterceptionMode::Tproxy);
    assert_eq!(inv.config.tproxy_mark.get(), 7);
    assert_eq!(inv.config.tproxy_route_table.get(), 200);
}

#[test]
fn the_last_occurrence_of_a_flag_wins_like_pflag() {
    assert_eq!(ok("-p 1 -p 2").config.proxy_port.get(), 2);
}

#[test]
fn environment_fills_absent_flags_and_flags_win() {
    let env = MapEnvironment::with_vars(&[
        ("ISTIO_INBOUND_PORTS", "*"),
        ("ISTIO_LOCAL_EXCLUDE_PORTS", "15020"),
        ("ISTIO_SERVICE_CIDR", "10.0.0.0/8"),
        ("ISTIO_INBOUND_INTERCEPTION_MODE", "TPROXY"),
        ("INBOUND_CAPTURE_PORT", "16006"),
        ("PROXY_UID", "101"),
    ]);
    let inv = parse(args("-z 17006"), &env).unwrap();
    assert_eq!(inv.config.inbound_ports, InboundPorts::All);
    assert_eq!(
        inv.config.inbound_ports_exclude,
        parse_ports("15020").unwrap()
    );
    assert_eq!(inv.config.mode, InterceptionMode::Tproxy);
    assert_eq!(
        inv.config.inbound_capture_port.get(),
        17006,
        "flag beats INBOUND_CAPTURE_PORT"
    );
    assert_eq!(inv.config.proxy_uids, vec![101]);
    assert_eq!(inv.config.proxy_gids, vec![101]);
    let inv = parse(
        args("-x ''"),
        &MapEnvironment::with_vars(&[("ISTIO_SERVICE_EXCLUDE_CIDR", "1.0.0.0/8")]),
    )
    .unwrap();
    assert!(
        inv.config.outbound_cidrs_exclude.is_empty(),
        "an explicit empty flag beats the variable"
    );
}

#[test]
fn second_variables_follow_istio_precedence() {
    let env = MapEnvironment::with_vars(&[
        ("REDIRECT_DNS", "false"),
        ("ISTIO_META_DNS_CAPTURE", "true"),
    ]);
    assert!(parse(args(""), &env).unwrap().config.redirect_dns);
    let env = MapEnvironment::with_vars(&[("INVALID_DROP", "true")]);
    assert!(parse(args(""), &env).unwrap().config.drop_invalid);
    let env = MapEnvironment::with_vars(&[("ISTIO_DUAL_STACK", "1")]);
    assert!(parse(args(""), &env).unwrap().options.dual_stack);
    let env = MapEnvironment::with_vars(&[("ISTIO_META_DNS_CAPTURE", "true")]);
    assert!(
        !parse(args("--redirect-dns=false"), &env)
            .unwrap()
            .config
            .redirect_dns
    );
}

#[test]
fn proxy_uid_defaults_to_envoy_user_then_1337() {
    assert_eq!(ok("").config.proxy_uids, vec![1337]);
    let mut env = MapEnvironment::with_vars(&[("ENVOY_USER", "envoy")]);
    env.users.insert("envoy".into(), 101);
    let inv = parse(args(""), &env).unwrap();
    assert_eq!(inv.config.proxy_uids, vec![101]);
    assert_eq!(inv.config.proxy_gids, vec![101]);
    let inv = parse(args("-u 3,4 -g 1,2"), &env).unwrap();
    assert_eq!(inv.config.proxy_uids, vec![3, 4]);
    assert_eq!(inv.config.proxy_gids, vec![1, 2]);
}

#[test]
fn owner_groups_come_from_the_environment() {
    let env = MapEnvironment::with_vars(&[("ISTIO_OUTBOUND_OWNER_GROUPS", "java,202")]);
    let inv = parse(args(""), &env).unwrap();
    assert_eq!(
        inv.config.owner_groups,
        OwnerGroups::Only(crate::config::parse_groups("java,202").unwrap())
    );
    let env = MapEnvironment::with_vars(&[("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888,ftp")]);
    let inv = parse(args(""), &env).unwrap();
    assert_eq!(
        inv.config.owner_groups,
        OwnerGroups::AllExcept(crate::config::parse_groups("888,ftp").unwrap())
    );
}

#[test]
fn bad_values_name_the_flag_and_the_value() {
    let none = MapEnvironment::default();
    let cases = [
        (
            "-d 15090,70000",
            "-d/--istio-local-exclude-ports: \"70000\" is not a port",
        ),
        ("-p 0", "-p/--envoy-port: \"0\" is not a port"),
        (
            "-i 10.0.0.0/33",
            "-i/--istio-service-cidr: \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            "-i 10.0.0.0",
            "-i/--istio-service-cidr: \"10.0.0.0\" is not a CIDR: missing prefix length",
        ),
        (
            "-x *",
            "-x/--istio-service-exclude-cidr: \"*\" is not allowed here",
        ),
        (
            "-m tproxy",
            "-m/--istio-inbound-interception-mode: \"tproxy\" is not an interception mode",
        ),
        (
            "-m TPROXY -t 0",
            "-t/--istio-inbound-tproxy-mark: \"0\" is not a packet mark",
        ),
        (
            "-m TPROXY -t 4294967296",
            "-t/--istio-inbound-tproxy-mark: \"4294967296\" is not a packet mark",
        ),
        (
            "-m TPROXY -r 254",
            "-r/--istio-inbound-tproxy-route-table: \"254\" is not a usable routing table",
        ),
        (
            "-u istio-proxy",
            "-u/--proxy-uid: \"istio-proxy\" is not a numeric id",
        ),
        (
            "-k eth0/1",
            "-k/--kube-virt-interfaces: \"eth0/1\" is not an interface name",
        ),
        (
            "--dry-run=maybe",
            "-n/--dry-run: \"maybe\" is not a boolean",
        ),
        (
            "--probe-timeout 5",
            "--probe-timeout: \"5\" is not a duration",
        ),
        (
            "--log_output_level=default:loud",
            "--log_output_level: \"default:loud\" is not a log level",
        ),
    ];
    for (line, want) in cases {
        let got = err(line, &none);
        assert!(got.starts_with(want), "{line}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn bad_environment_values_name_the_variable() {
    let env = MapEnvironment::with_vars(&[("ISTIO_LOCAL_EXCLUDE_PORTS", "http")]);
    assert_eq!(
        err("", &env),
        "ISTIO_LOCAL_EXCLUDE_PORTS (environment for -d/--istio-local-exclude-ports): \"http\" is not a port: expected a number from 1 to 65535"
    );
    let env = MapEnvironment::with_vars(&[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "10.0.0.1/32")]);
    assert!(err("", &env).starts_with(
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: \"10.0.0.1/32\" must be an IPv4 loopback"
    ));
    let env = MapEnvironment::with_vars(&[("ISTIO_META_DNS_CAPTURE", "yes")]);
    assert!(err("", &env).starts_with("ISTIO_META_DNS_CAPTURE (environment for --redirect-dns)"));
}

#[test]
fn conflicting_settings_are_refused() {
    let none = MapEnvironment::default();
    assert!(
        err("--cleanup-only --reconcile", &none)
            .contains("--cleanup-only cannot be combined with --reconcile")
    );
    assert!(
        err("--force-apply --reconcile", &none)
            .contains("--force-apply cannot be combined with --reconcile")
    );
    assert!(err("-m TPROXY -t 1338", &none).contains("1338"));
    let env = MapEnvironment::with_vars(&[
        ("ISTIO_OUTBOUND_OWNER_GROUPS", "java"),
        ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "ftp"),
    ]);
    assert!(err("", &env).contains("mutually exclusive"));
    let many: Vec<String> = (0..65).map(|g| g.to_string()).collect();
    let env = MapEnvironment::with_vars(&[("ISTIO_OUTBOUND_OWNER_GROUPS", &many.join(","))]);
    assert!(err("", &env).contains("at most 64"));
}

#[test]
fn unsupported_istio_flags_fail_loudly_unless_off() {
    let none = MapEnvironment::default();
    assert!(
        err("--native-nftables", &none)
            .starts_with("--native-nftables is not supported by iptables-init")
    );
    assert!(err("--cni-mode", &none).contains("not supported"));
    assert!(err("--iptables-trace-logging=true", &none).contains("not supported"));
    ok("--native-nftables=false --cni-mode=false");
}

#[test]
fn ineffective_settings_are_warned_about() {
    let inv = ok("-b 80 -d 81");
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.contains("-d/--istio-local-exclude-ports has no effect"))
    );
    let inv = ok("-t 7");
    assert!(inv.warnings.iter().any(|w| w.contains("TPROXY")));
    let inv = ok("--capture-all-dns");
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.contains("--capture-all-dns has no effect"))
    );
    let inv = ok("--log_as_json");
    assert!(inv.warnings.iter().any(|w| w.contains("--log_as_json")));
}

#[test]
fn modes_and_namespace() {
    let inv = ok("-n --cleanup-only --network-namespace /var/run/netns/pod");
    assert!(inv.options.dry_run);
    assert!(inv.options.cleanup_only);
    assert_eq!(
        inv.options.network_namespace,
        Some(PathBuf::from("/var/run/netns/pod"))
    );
    let inv =
        ok("--run-validation --skip-rule-apply --iptables-probe-port 16002 --probe-timeout 1m");
    assert!(inv.options.run_validation && inv.options.skip_rule_apply);
    assert_eq!(inv.options.probe_port.get(), 16002);
    assert_eq!(inv.options.probe_timeout, Duration::from_secs(60));
}

#[test]
fn unknown_flags_are_usage_errors() {
    assert!(matches!(
        parse(args("--no-such-flag"), &MapEnvironment::default()),
        Err(CliError::Usage(_))
    ));
}

#[test]
fn parse_bytes_never_panics_on_odd_input() {
    for input in [
        &b""[..],
        b"-p",
        b"-p\0",
        b"-i\0*\0-b\0*",
        b"-x\0\xff\xfe",
        b"-d\0,,,,",
        b"--probe-timeout\099999999999999999999h",
        b"-i\0::/0,0.0.0.0/0\0-k\0eth0",
    ] {
        let _ = parse_bytes(input);
    }
    assert!(
        parse_bytes(b"-i\0*\0-b\0*")
            .unwrap()
            .contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    );
}

#[test]
fn probe_settings_without_validation_are_warned_about() {
    let inv = ok("--probe-timeout 1s");
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.contains("--probe-timeout has no effect without --run-validation"))
    );
    assert!(
        ok("--run-validation --probe-timeout 1s")
            .warnings
            .is_empty()
    );
}
