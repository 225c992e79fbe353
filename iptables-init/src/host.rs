//! Facts read from the host: capabilities, the pod's addresses, name servers, users, and the
//! network namespace to enter.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::unistd::{Group, User};

/// Bit of `CAP_NET_ADMIN` in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// A host fact that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The `--network-namespace` path could not be opened.
    #[error("cannot open network namespace {path} (--network-namespace): {source}")]
    OpenNetns {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `setns` refused.
    #[error(
        "cannot enter network namespace {path} (--network-namespace): {source}; is it a network namespace, and does iptables-init have CAP_SYS_ADMIN?"
    )]
    EnterNetns {
        /// The path.
        path: PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// `/proc/self/status` is unreadable or has no CapEff line.
    #[error("cannot read capabilities from /proc/self/status: {0}")]
    Capabilities(String),
    /// Interface addresses could not be listed.
    #[error("cannot list interface addresses: {0}")]
    Addresses(nix::Error),
    /// Only loopback or link-local addresses: nothing to decide IPv4 or IPv6 from.
    #[error(
        "no non-loopback, non-link-local IP address in this network namespace, so IPv4 or IPv6 cannot be decided (istio-iptables fails the same way); is --network-namespace right?"
    )]
    NoAddress,
    /// `/etc/resolv.conf` is needed for `--redirect-dns` and could not be read.
    #[error("cannot read {path} for --redirect-dns: {source}")]
    ResolvConf {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the namespace's addresses say about IP families (Istio's `getLocalIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFamilies {
    /// Program ip6tables as well.
    pub enable_ipv6: bool,
    /// The first usable address is IPv6 (validation probes over IPv6 then).
    pub first_is_ipv6: bool,
}

/// True when the effective capability set holds `CAP_NET_ADMIN`.
pub fn has_net_admin() -> Result<bool, HostError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| HostError::Capabilities(e.to_string()))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .ok_or_else(|| HostError::Capabilities("no CapEff line".to_string()))?;
    let caps = u64::from_str_radix(hex, 16)
        .map_err(|e| HostError::Capabilities(format!("CapEff {hex:?}: {e}")))?;
    Ok(caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Moves the calling thread into the network namespace at `path` (`--network-namespace`).
/// Call it before starting threads or child processes; children inherit the namespace.
pub fn enter_netns(path: &Path) -> Result<(), HostError> {
    let file = File::open(path).map_err(|source| HostError::OpenNetns {
        path: path.to_path_buf(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| HostError::EnterNetns {
        path: path.to_path_buf(),
        source,
    })
}

/// Decides IPv4/IPv6 from this namespace's addresses, as istio-iptables does: without
/// `dual_stack` the first usable address decides; with it, any IPv6 address enables IPv6.
pub fn ip_families(dual_stack: bool) -> Result<IpFamilies, HostError> {
    let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map_err(HostError::Addresses)?
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    families_from(&addrs, dual_stack)
}

/// The pure part of [`ip_families`].
pub fn families_from(addrs: &[IpAddr], dual_stack: bool) -> Result<IpFamilies, HostError> {
    let usable: Vec<IpAddr> = addrs
        .iter()
        .map(|a| a.to_canonical())
        .filter(|a| !a.is_loopback() && !is_link_local(a))
        .collect();
    let first = usable.first().ok_or(HostError::NoAddress)?;
    let any_v6 = usable.iter().any(IpAddr::is_ipv6);
    Ok(IpFamilies {
        enable_ipv6: if dual_stack { any_v6 } else { first.is_ipv6() },
        first_is_ipv6: first.is_ipv6(),
    })
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local() || (v4.octets()[..3] == [224, 0, 0]),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xff0f) == 0xff02
        }
    }
}

/// Name servers from resolv.conf text, plus lines that could not be read (reported, not used).
pub fn parse_resolv_conf(text: &str) -> (Vec<IpAddr>, Vec<String>) {
    let mut servers = Vec::new();
    let mut skipped = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        match words.next().map(str::parse::<IpAddr>) {
            Some(Ok(addr)) => servers.push(addr),
            _ => skipped.push(line.trim().to_string()),
        }
    }
    (servers, skipped)
}

/// Reads name servers from a resolv.conf file.
pub fn read_resolv_conf(path: &Path) -> Result<(Vec<IpAddr>, Vec<String>), HostError> {
    let text = std::fs::read_to_string(path).map_err(|source| HostError::ResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_resolv_conf(&text))
}

/// The uid of a user name, if it exists.
pub fn user_id(name: &str) -> Option<u32> {
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

/// The gid of a group name, if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn first_usable_address_decides_without_dual_stack() {
        let a = addrs(&["127.0.0.1", "::1", "fe80::1", "10.0.0.5", "fd00::5"]);
        let f = families_from(&a, false).unwrap();
        assert!(!f.enable_ipv6);
        let a = addrs(&["fe80::1", "fd00::5", "10.0.0.5"]);
        assert!(families_from(&a, false).unwrap().enable_ipv6);
    }

    #[test]
    fn dual_stack_enables_ipv6_when_any_ipv6_address_exists() {
        let a = addrs(&["10.0.0.5", "fd00::5"]);
        let f = families_from(&a, true).unwrap();
        assert!(f.enable_ipv6);
        assert!(!f.first_is_ipv6);
        assert!(
            !families_from(&addrs(&["10.0.0.5"]), true)
                .unwrap()
                .enable_ipv6
        );
    }

    #[test]
    fn mapped_addresses_count_as_ipv4_and_loopback_only_is_an_error() {
        assert!(
            !families_from(&addrs(&["::ffff:10.0.0.5"]), false)
                .unwrap()
                .enable_ipv6
        );
        assert!(matches!(
            families_from(&addrs(&["127.0.0.1", "::1", "169.254.1.1"]), false),
            Err(HostError::NoAddress)
        ));
    }

    #[test]
    fn resolv_conf_nameservers() {
        let (servers, skipped) = parse_resolv_conf(
            "# c\nsearch x\nnameserver 10.96.0.10\nnameserver fd00::a\nnameserver fe80::1%eth0\n",
        );
        assert_eq!(servers, addrs(&["10.96.0.10", "fd00::a"]));
        assert_eq!(skipped, vec!["nameserver fe80::1%eth0"]);
    }

    #[test]
    fn this_process_capabilities_are_readable() {
        // Whatever the answer, reading it must work on Linux.
        has_net_admin().unwrap();
    }
}
