//! Parsing tests for every value type istio-iptables takes.

use super::*;

#[test]
fn port_lists_drop_empty_items_like_istio_split() {
    let ports = parse_ports("6000,7000,").unwrap();
    assert_eq!(ports, vec![Port(6000), Port(7000)]);
    assert_eq!(parse_ports(" 80 , 443").unwrap(), vec![Port(80), Port(443)]);
    assert!(parse_ports("").unwrap().is_empty());
}

#[test]
fn ports_out_of_range_or_not_numbers_are_refused() {
    for bad in [
        "0",
        "65536",
        "-1",
        "80a",
        "http",
        "1e3",
        "+80",
        "99999999999",
    ] {
        assert_eq!(
            parse_ports(bad),
            Err(ConfigError::Port(bad.to_string())),
            "{bad}"
        );
    }
}

#[test]
fn inbound_ports_know_empty_wildcard_and_lists() {
    assert_eq!(parse_inbound_ports("").unwrap(), InboundPorts::None);
    assert_eq!(parse_inbound_ports("*").unwrap(), InboundPorts::All);
    assert_eq!(parse_inbound_ports(",").unwrap(), InboundPorts::None);
    assert_eq!(
        parse_inbound_ports("80").unwrap(),
        InboundPorts::Only(vec![Port(80)])
    );
}

#[test]
fn exclude_cidrs_refuse_the_wildcard() {
    assert_eq!(parse_cidrs("*"), Err(ConfigError::Wildcard));
    assert!(matches!(
        parse_cidrs("10.0.0.0/8,nope"),
        Err(ConfigError::Cidr { .. })
    ));
}

#[test]
fn modes_are_exact_istio_spellings() {
    assert_eq!(parse_mode("").unwrap(), InterceptionMode::Redirect);
    assert_eq!(parse_mode("TPROXY").unwrap(), InterceptionMode::Tproxy);
    assert_eq!(
        parse_mode("tproxy"),
        Err(ConfigError::Mode("tproxy".into()))
    );
    assert_eq!(parse_mode("NONE"), Err(ConfigError::Mode("NONE".into())));
}

#[test]
fn marks_and_tables_are_range_checked() {
    assert_eq!("1337".parse::<Mark>().unwrap().get(), 1337);
    assert_eq!("4294967295".parse::<Mark>().unwrap().get(), u32::MAX);
    for bad in ["0", "4294967296", "0x539", "-1", ""] {
        assert!(bad.parse::<Mark>().is_err(), "{bad}");
    }
    assert_eq!("133".parse::<RouteTable>().unwrap().get(), 133);
    for bad in ["0", "253", "254", "255", "main", "4294967296"] {
        assert!(bad.parse::<RouteTable>().is_err(), "{bad}");
    }
}

#[test]
fn groups_are_names_or_gids() {
    assert_eq!(
        parse_groups("java,202").unwrap(),
        vec![Group("java".into()), Group("202".into())]
    );
    for bad in ["-x", "a b", "a/b", "4294967295", "name;rm"] {
        assert!(bad.parse::<Group>().is_err(), "{bad}");
    }
}

#[test]
fn ids_are_numeric() {
    assert_eq!(parse_ids("3,4").unwrap(), vec![3, 4]);
    assert!(parse_ids("istio-proxy").is_err());
    assert!(parse_ids("4294967295").is_err());
}

#[test]
fn interfaces_follow_kernel_name_limits() {
    assert!(parse_interfaces("eth0,veth+").is_ok());
    for bad in ["a-very-long-interface", "-eth0", "eth 0", "eth/0", "eth0!"] {
        assert!(bad.parse::<Interface>().is_err(), "{bad}");
    }
}

#[test]
fn loopback_cidr_is_checked_like_istio() {
    assert_eq!(
        parse_ipv4_loopback("127.0.0.1/8").unwrap().to_string(),
        "127.0.0.1/8"
    );
    for bad in ["10.0.0.1/32", "127.0.0.1/7", "::1/128", "127.0.0.1"] {
        assert!(parse_ipv4_loopback(bad).is_err(), "{bad}");
    }
}

#[test]
fn go_bools_and_durations() {
    assert!(parse_bool("true").unwrap());
    assert!(parse_bool("1").unwrap());
    assert!(!parse_bool("F").unwrap());
    assert!(parse_bool("yes").is_err());
    let d = |s| parse_duration(s).unwrap();
    assert_eq!(d("5s"), std::time::Duration::from_secs(5));
    assert_eq!(d("1m30s"), std::time::Duration::from_secs(90));
    assert_eq!(d("250ms"), std::time::Duration::from_millis(250));
    assert_eq!(d("1.5s"), std::time::Duration::from_millis(1500));
    for bad in ["", "5", "s", "5x", "-5s", "1..5s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn mapped_dns_servers_count_as_ipv4() {
    let servers: Vec<IpAddr> = vec![
        "10.96.0.10".parse().unwrap(),
        "::ffff:1.2.3.4".parse().unwrap(),
        "fd00::10".parse().unwrap(),
    ];
    let (v4, v6) = split_dns_servers(&servers);
    assert_eq!(v4.len(), 2);
    assert_eq!(v6, vec!["fd00::10".parse::<Ipv6Addr>().unwrap()]);
}
