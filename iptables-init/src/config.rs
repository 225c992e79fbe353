//! Typed, validated capture settings: everything `plan` needs, and nothing it must look up.

pub mod cidr;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use cidr::{Cidr, CidrError};

/// A value that could not be read. The CLI wraps it with the flag or variable it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a TCP/UDP port number.
    #[error("{0:?} is not a port: expected a number from 1 to 65535")]
    Port(String),
    /// Not an IP prefix.
    #[error("{value:?} is not a CIDR: {reason}")]
    Cidr {
        /// The text that was read.
        value: String,
        /// What was wrong with it.
        reason: CidrError,
    },
    /// Not a numeric uid or gid.
    #[error("{0:?} is not a numeric id: expected a number from 0 to 4294967294")]
    Id(String),
    /// Not a group name or gid.
    #[error(
        "{0:?} is not a group: expected a numeric gid or a name of letters, digits, '.', '_' or '-'"
    )]
    Group(String),
    /// Not a network interface name.
    #[error(
        "{0:?} is not an interface name: expected 1 to 15 letters, digits or one of '-_.:@+', not starting with '-'"
    )]
    Interface(String),
    /// Not a mode istio-iptables knows.
    #[error("{0:?} is not an interception mode: expected REDIRECT or TPROXY")]
    Mode(String),
    /// A mark outside what the kernel stores (32 bits, non-zero).
    #[error("{0:?} is not a packet mark: expected a number from 1 to 4294967295")]
    Mark(String),
    /// A routing table id that is reserved or out of range.
    #[error(
        "{0:?} is not a usable routing table: expected a number from 1 to 4294967295, other than 253 (default), 254 (main) and 255 (local)"
    )]
    RouteTable(String),
    /// A value where istio-iptables forbids the wildcard.
    #[error("\"*\" is not allowed here: list CIDRs to exclude instead")]
    Wildcard,
    /// The IPv4 loopback range is not inside 127.0.0.0/8 or has a strange length.
    #[error("{0:?} must be an IPv4 loopback CIDR inside 127.0.0.0/8 with a length from 8 to 32")]
    Loopback(String),
    /// A duration in Go syntax (`5s`, `500ms`) could not be read.
    #[error("{0:?} is not a duration: expected a number with a unit, for example 5s or 500ms")]
    Duration(String),
    /// A boolean in Go's `strconv.ParseBool` syntax could not be read.
    #[error("{0:?} is not a boolean: expected true or false (or 1, 0, t, f)")]
    Bool(String),
    /// An Istio log level that does not exist.
    #[error(
        "{0:?} is not a log level: expected none, fatal, error, warn, info or debug, optionally as scope:level"
    )]
    LogLevel(String),
}

/// A TCP/UDP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(u16);

/// How inbound connections reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterceptionMode {
    /// NAT `REDIRECT` to the inbound capture port (the destination is rewritten).
    #[default]
    Redirect,
    /// Mangle-table `TPROXY`: the original destination address stays on the socket.
    Tproxy,
}

/// `-b`: which inbound ports are captured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InboundPorts {
    /// Empty flag: no inbound capture at all.
    #[default]
    None,
    /// `*`: every port, except `-d` ones.
    All,
    /// Only these ports.
    Only(Vec<Port>),
}

/// `-i`: which outbound destinations are captured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OutboundCidrs {
    /// Empty flag: no CIDR-based outbound capture.
    #[default]
    None,
    /// `*`: every destination, except `-x` ones.
    All,
    /// Only these prefixes.
    Only(Vec<Cidr>),
}

/// A group given by gid or by name (`ISTIO_OUTBOUND_OWNER_GROUPS` allows both).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group(String);

/// `ISTIO_OUTBOUND_OWNER_GROUPS` / `_EXCLUDE`: whose outbound traffic is captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Capture every group except these (`*` plus the exclude list).
    AllExcept(Vec<Group>),
    /// Capture only these groups.
    Only(Vec<Group>),
}

/// A network interface name as iptables `-i`/`-o` takes it (`+` suffix allowed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Interface(String);

/// A firewall mark (`-t`), non-zero 32-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mark(u32);

/// A policy-routing table id (`-r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteTable(u32);

/// Everything that decides which rules `plan` produces. Build it with [`Config::default`] (the
/// defaults istio-iptables uses when a flag is absent) and override fields, or through the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `-p`: where outbound TCP is redirected.
    pub proxy_port: Port,
    /// `-z`: where inbound TCP is redirected.
    pub inbound_capture_port: Port,
    /// `-e`: the HBONE tunnel port, never captured.
    pub inbound_tunnel_port: Port,
    /// `-u`: uids whose traffic bypasses capture.
    pub proxy_uids: Vec<u32>,
    /// `-g`: gids whose traffic bypasses capture.
    pub proxy_gids: Vec<u32>,
    /// `-m`.
    pub mode: InterceptionMode,
    /// `-b`.
    pub inbound_ports: InboundPorts,
    /// `-d`: inbound ports left alone when `-b` is `*`.
    pub inbound_ports_exclude: Vec<Port>,
    /// `-q`: outbound ports always captured.
    pub outbound_ports_include: Vec<Port>,
    /// `-o`: outbound ports never captured.
    pub outbound_ports_exclude: Vec<Port>,
    /// `-i`.
    pub outbound_cidrs: OutboundCidrs,
    /// `-x`: destinations never captured.
    pub outbound_cidrs_exclude: Vec<Cidr>,
    /// `-k`: interfaces whose inbound traffic is treated as outbound (VMs).
    pub kube_virt_interfaces: Vec<Interface>,
    /// `-c`: interfaces never captured, either way.
    pub exclude_interfaces: Vec<Interface>,
    /// `-t`: the TPROXY mark.
    pub tproxy_mark: Mark,
    /// `-r`: the routing table for TPROXY-marked packets.
    pub tproxy_route_table: RouteTable,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`.
    pub owner_groups: OwnerGroups,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`: what counts as "the app talking to itself" on lo.
    pub ipv4_loopback: Cidr,
    /// `--redirect-dns`: send DNS to the agent on 15053.
    pub redirect_dns: bool,
    /// `--capture-all-dns`: all port-53 traffic, not only to the resolv.conf servers.
    pub capture_all_dns: bool,
    /// IPv4 name servers from `/etc/resolv.conf` (used when DNS is redirected).
    pub dns_servers_v4: Vec<Ipv4Addr>,
    /// IPv6 name servers from `/etc/resolv.conf`.
    pub dns_servers_v6: Vec<Ipv6Addr>,
    /// `--drop-invalid`: drop conntrack-INVALID packets instead of letting them reset.
    pub drop_invalid: bool,
    /// Also program ip6tables (Istio decides this from the pod's addresses).
    pub enable_ipv6: bool,
}

// === impl Config ===

impl Default for Config {
    /// istio-iptables' defaults with uid/gid 1337 and nothing captured (`-b ""`, `-i ""`).
    fn default() -> Self {
        Self {
            proxy_port: Port(15001),
            inbound_capture_port: Port(15006),
            inbound_tunnel_port: Port(15008),
            proxy_uids: vec![1337],
            proxy_gids: vec![1337],
            mode: InterceptionMode::Redirect,
            inbound_ports: InboundPorts::None,
            inbound_ports_exclude: Vec::new(),
            outbound_ports_include: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            outbound_cidrs: OutboundCidrs::None,
            outbound_cidrs_exclude: Vec::new(),
            kube_virt_interfaces: Vec::new(),
            exclude_interfaces: Vec::new(),
            tproxy_mark: Mark(1337),
            tproxy_route_table: RouteTable(133),
            owner_groups: OwnerGroups::AllExcept(Vec::new()),
            ipv4_loopback: Cidr::host_v4(Ipv4Addr::LOCALHOST),
            redirect_dns: false,
            capture_all_dns: false,
            dns_servers_v4: Vec::new(),
            dns_servers_v6: Vec::new(),
            drop_invalid: false,
            enable_ipv6: false,
        }
    }
}

/// Istio's `config.Split`: comma-separated, empty items dropped. Items are also trimmed, so
/// `"80, 443"` works (istio-iptables would hand `" 443"` to iptables, which rejects it).
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A comma-separated port list.
pub fn parse_ports(s: &str) -> Result<Vec<Port>, ConfigError> {
    split_list(s).map(str::parse).collect()
}

/// A comma-separated CIDR list; `*` is refused (use [`parse_outbound_cidrs`] where it means "all").
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, ConfigError> {
    if s.trim() == "*" {
        return Err(ConfigError::Wildcard);
    }
    split_list(s)
        .map(|item| {
            item.parse().map_err(|reason| ConfigError::Cidr {
                value: item.to_string(),
                reason,
            })
        })
        .collect()
}

/// `-b`: empty, `*`, or a port list.
pub fn parse_inbound_ports(s: &str) -> Result<InboundPorts, ConfigError> {
    match s.trim() {
        "" => Ok(InboundPorts::None),
        "*" => Ok(InboundPorts::All),
        _ => {
            let ports = parse_ports(s)?;
            Ok(if ports.is_empty() {
                InboundPorts::None
            } else {
                InboundPorts::Only(ports)
            })
        }
    }
}

/// `-i`: empty, `*`, or a CIDR list.
pub fn parse_outbound_cidrs(s: &str) -> Result<OutboundCidrs, ConfigError> {
    match s.trim() {
        "" => Ok(OutboundCidrs::None),
        "*" => Ok(OutboundCidrs::All),
        _ => {
            let cidrs = parse_cidrs(s)?;
            Ok(if cidrs.is_empty() {
                OutboundCidrs::None
            } else {
                OutboundCidrs::Only(cidrs)
            })
        }
    }
}

/// A comma-separated list of numeric uids or gids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>, ConfigError> {
    split_list(s)
        .map(|item| {
            // u32::MAX is (uid_t)-1, "no id"; the kernel never matches it.
            let digits = !item.is_empty() && item.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| item.parse::<u32>().ok())
                .flatten()
                .filter(|id| *id != u32::MAX)
                .ok_or_else(|| ConfigError::Id(item.to_string()))
        })
        .collect()
}

/// A comma-separated list of interface names.
pub fn parse_interfaces(s: &str) -> Result<Vec<Interface>, ConfigError> {
    split_list(s).map(str::parse).collect()
}

/// A comma-separated list of groups (names or gids).
pub fn parse_groups(s: &str) -> Result<Vec<Group>, ConfigError> {
    split_list(s).map(str::parse).collect()
}

/// `-m`: empty means REDIRECT, as in istio-iptables.
pub fn parse_mode(s: &str) -> Result<InterceptionMode, ConfigError> {
    match s.trim() {
        "" | "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        other => Err(ConfigError::Mode(other.to_string())),
    }
}

/// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`, with Istio's checks: IPv4, loopback, length 8 to 32.
pub fn parse_ipv4_loopback(s: &str) -> Result<Cidr, ConfigError> {
    let cidr: Cidr = s.trim().parse().map_err(|reason| ConfigError::Cidr {
        value: s.to_string(),
        reason,
    })?;
    if !cidr.is_ipv4() || !cidr.is_loopback() || cidr.prefix_len() < 8 {
        return Err(ConfigError::Loopback(s.to_string()));
    }
    Ok(cidr)
}

/// Go's `strconv.ParseBool`, which istio-iptables uses for boolean flags and variables.
pub fn parse_bool(s: &str) -> Result<bool, ConfigError> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(ConfigError::Bool(other.to_string())),
    }
}

/// A Go `time.ParseDuration` string such as `5s`, `1m30s` or `250ms` (non-negative only).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, ConfigError> {
    let bad = || ConfigError::Duration(s.to_string());
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())
}

// === impl Port ===

impl Port {
    /// A port from a number; `None` for 0.
    pub const fn new(port: u16) -> Option<Self> {
        if port == 0 { None } else { Some(Self(port)) }
    }

    /// The port number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for Port {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = !t.is_empty() && t.len() <= 5 && t.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| t.parse::<u16>().ok())
            .flatten()
            .and_then(Port::new)
            .ok_or_else(|| ConfigError::Port(s.to_string()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === impl Group ===

impl Group {
    /// The group as written (name or gid).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The gid, when the group was given as a number.
    pub fn gid(&self) -> Option<u32> {
        self.0.parse().ok()
    }
}

impl FromStr for Group {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let numeric = t.bytes().all(|b| b.is_ascii_digit());
        let ok = if numeric {
            !t.is_empty() && t.parse::<u32>().is_ok_and(|g| g != u32::MAX)
        } else {
            // POSIX portable user/group names, plus a trailing '$' some systems allow.
            (1..=32).contains(&t.len())
                && !t.starts_with('-')
                && t.bytes().enumerate().all(|(i, b)| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'_' | b'.' | b'-')
                        || (b == b'$' && i == t.len() - 1)
                })
        };
        if ok {
            Ok(Self(t.to_string()))
        } else {
            Err(ConfigError::Group(s.to_string()))
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Interface ===

impl FromStr for Interface {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let ok = (1..=15).contains(&t.len())
            && !t.starts_with('-')
            && t.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'+')
            });
        if ok {
            Ok(Self(t.to_string()))
        } else {
            Err(ConfigError::Interface(s.to_string()))
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Mark ===

impl Mark {
    /// A mark from a number; `None` for 0 (an unmarked packet).
    pub const fn new(mark: u32) -> Option<Self> {
        if mark == 0 { None } else { Some(Self(mark)) }
    }

    /// The mark value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for Mark {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| t.parse::<u32>().ok())
            .flatten()
            .and_then(Mark::new)
            .ok_or_else(|| ConfigError::Mark(s.to_string()))
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// The table id.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for RouteTable {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| t.parse::<u32>().ok())
            .flatten()
            .filter(|id| !matches!(id, 0 | 253..=255))
            .map(Self)
            .ok_or_else(|| ConfigError::RouteTable(s.to_string()))
    }
}

impl fmt::Display for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Splits name servers into IPv4 and IPv6 the way Istio does (IPv4-mapped IPv6 counts as IPv4).
pub fn split_dns_servers(servers: &[IpAddr]) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for s in servers {
        match s {
            IpAddr::V4(a) => v4.push(*a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => v4.push(m),
                None => v6.push(*a),
            },
        }
    }
    (v4, v6)
}
