use super::*;
use crate::config::{Cluster as ClusterConfig, Endpoint, LbPolicy, Locality};

fn endpoint(last: u8, health: Health) -> Endpoint {
    Endpoint {
        transport_match: Vec::new(),
        address: HostPort::Ip(([10, 0, 0, last], 80).into()),
        weight: 1,
        health,
    }
}

fn cluster(discovery: Discovery, localities: Vec<Locality>) -> Cluster {
    let original_dst = matches!(discovery, Discovery::OriginalDst);
    Cluster::new(Arc::new(ClusterConfig {
        name: "c".into(),
        discovery,
        connect_timeout: std::time::Duration::from_secs(1),
        lb_policy: if original_dst {
            LbPolicy::ClusterProvided
        } else {
            LbPolicy::RoundRobin
        },
        localities,
        tcp_keepalive: None,
        upstream_protocol: crate::config::UpstreamProtocolConfig::Http1,
        upstream_idle_timeout: None,
        transport: Default::default(),
        transport_matches: Vec::new(),
        bind_source: None,
    }))
}

fn pick_ip(c: &Cluster) -> u8 {
    match c.pick(None).unwrap().host().addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets()[3],
        std::net::IpAddr::V6(_) => panic!("v4 only here"),
    }
}

#[test]
fn lowest_priority_with_usable_hosts_wins() {
    let c = cluster(
        Discovery::Static,
        vec![
            Locality {
                priority: 1,
                endpoints: vec![endpoint(2, Health::Usable)],
            },
            Locality {
                priority: 0,
                endpoints: vec![endpoint(1, Health::Excluded)],
            },
        ],
    );
    // Priority 0's only host is excluded, so priority 1 serves.
    assert_eq!(pick_ip(&c), 2);
    assert_eq!(c.host_addrs(), vec!["10.0.0.2:80".parse().unwrap()]);
}

#[test]
fn degraded_hosts_serve_only_when_nothing_else_can() {
    let c = cluster(
        Discovery::Static,
        vec![Locality {
            priority: 0,
            endpoints: vec![endpoint(1, Health::Degraded), endpoint(2, Health::Usable)],
        }],
    );
    for _ in 0..10 {
        assert_eq!(pick_ip(&c), 2);
    }
    let c = cluster(
        Discovery::Static,
        vec![Locality {
            priority: 0,
            endpoints: vec![endpoint(1, Health::Degraded), endpoint(2, Health::Excluded)],
        }],
    );
    assert_eq!(pick_ip(&c), 1);
}

#[test]
fn a_cluster_without_usable_hosts_has_no_host() {
    let c = cluster(Discovery::Static, vec![]);
    assert_eq!(c.pick(None).unwrap_err(), NoHost::NoHealthyHost);
    let c = cluster(
        Discovery::Static,
        vec![Locality {
            priority: 0,
            endpoints: vec![endpoint(1, Health::Excluded)],
        }],
    );
    assert_eq!(c.pick(None).unwrap_err(), NoHost::NoHealthyHost);
}

#[test]
fn original_dst_connects_to_the_restored_destination() {
    let c = cluster(Discovery::OriginalDst, vec![]);
    let dst: SocketAddr = "192.0.2.7:8443".parse().unwrap();
    assert_eq!(c.pick(Some(OrigDst(dst))).unwrap().host().addr, dst);
    assert_eq!(c.pick(None).unwrap_err(), NoHost::NoOriginalDst);
}

#[test]
fn host_guard_counts_active_connections() {
    let c = cluster(
        Discovery::Static,
        vec![Locality {
            priority: 0,
            endpoints: vec![endpoint(1, Health::Usable)],
        }],
    );
    let a = c.pick(None).unwrap();
    let b = c.pick(None).unwrap();
    assert_eq!(a.host().active(), 2);
    drop(b);
    assert_eq!(a.host().active(), 1);
}

#[test]
fn dns_family_selection() {
    use crate::config::DnsFamily;
    let v4: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
    let both = vec![v4, v6];
    assert_eq!(dns::select_family(both.clone(), DnsFamily::Auto), vec![v6]);
    assert_eq!(dns::select_family(vec![v4], DnsFamily::Auto), vec![v4]);
    assert_eq!(
        dns::select_family(both.clone(), DnsFamily::V4Preferred),
        vec![v4]
    );
    assert_eq!(
        dns::select_family(vec![v6], DnsFamily::V4Preferred),
        vec![v6]
    );
    assert_eq!(
        dns::select_family(both.clone(), DnsFamily::V4Only),
        vec![v4]
    );
    assert_eq!(
        dns::select_family(both.clone(), DnsFamily::V6Only),
        vec![v6]
    );
    assert_eq!(dns::select_family(both.clone(), DnsFamily::All), both);
}

#[tokio::test]
async fn strict_dns_resolves_localhost() {
    let c = Arc::new(cluster(
        Discovery::StrictDns {
            refresh: std::time::Duration::from_secs(60),
            family: crate::config::DnsFamily::V4Only,
        },
        vec![Locality {
            priority: 0,
            endpoints: vec![Endpoint {
                transport_match: Vec::new(),
                address: HostPort::Dns("localhost".into(), 8080),
                weight: 1,
                health: Health::Usable,
            }],
        }],
    ));
    assert_eq!(c.pick(None).unwrap_err(), NoHost::NoHealthyHost);
    dns::refresh(c.clone()).await;
    assert_eq!(c.host_addrs(), vec!["127.0.0.1:8080".parse().unwrap()]);
}

#[test]
fn rebuilding_keeps_the_hosts_that_stay() {
    let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let first =
        HostSet::from_endpoints([(0, a, 1, Health::Usable), (0, b, 1, Health::Usable)].into_iter());
    let second = HostSet::rebuild(
        [(0, a, 1, Health::Usable, 0), (0, b, 5, Health::Usable, 0)].into_iter(),
        Some(&first),
        &Default::default(),
    );
    let find = |set: &HostSet, addr| {
        set.levels[0]
            .usable
            .hosts()
            .iter()
            .find(|h| h.addr == addr)
            .unwrap()
            .clone()
    };
    // Same address and weight: the same host, pool and all.
    assert!(Arc::ptr_eq(&find(&first, a), &find(&second, a)));
    // A new weight is a new host.
    assert!(!Arc::ptr_eq(&find(&first, b), &find(&second, b)));
}
