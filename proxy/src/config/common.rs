//! Conversions shared by every part of the configuration: addresses, CIDR ranges, durations.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use envoy_types::pb::{
    envoy::config::core::v3::{
        Address as XdsAddress, CidrRange as XdsCidrRange, SocketAddress as XdsSocketAddress,
        address::Address as XdsAddressKind, socket_address::PortSpecifier,
        socket_address::Protocol,
    },
    google::protobuf::{Any, Duration as XdsDuration},
};

use super::error::{Ctx, Path, reject_unsupported};

/// An IP network: an address and a prefix length, with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// A socket address as a configuration may write it: an IP, or a DNS name to resolve.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPort {
    /// An IP literal and a port.
    Ip(SocketAddr),
    /// A name resolved at run time, and a port.
    Dns(String, u16),
}

// === impl Cidr ===

impl Cidr {
    /// A network, normalised (host bits cleared). `len` must fit the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return None;
        }
        Some(Self {
            addr: mask(addr, len),
            len,
        })
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An IPv4-mapped IPv6 address as IPv4, anything else unchanged: connections accepted on a
/// dual-stack socket report IPv4 peers that way.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// Converts a `CidrRange`.
pub(crate) fn cidr(ctx: &mut Ctx, path: &Path, range: &XdsCidrRange) -> Option<Cidr> {
    let ip: IpAddr = match range.address_prefix.parse() {
        Ok(ip) => ip,
        Err(_) => {
            ctx.error(
                &path.field("address_prefix"),
                format!("'{}' is not an IP address", range.address_prefix),
            );
            return None;
        }
    };
    // An unset prefix_len means the whole address (Envoy: a /32 or /128 host route).
    let len = range
        .prefix_len
        .as_ref()
        .map(|v| v.value)
        .unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
    match u8::try_from(len).ok().and_then(|l| Cidr::new(ip, l)) {
        Some(c) => Some(c),
        None => {
            ctx.error(
                &path.field("prefix_len"),
                format!("{len} is too long for {ip}"),
            );
            None
        }
    }
}

/// Converts an `Address` that must be a TCP socket address; `ip_only` refuses DNS names (for
/// listeners and STATIC endpoints). Returns the address and the `ipv4_compat` flag.
pub(crate) fn socket_address(
    ctx: &mut Ctx,
    path: &Path,
    address: Option<&XdsAddress>,
    ip_only: bool,
) -> Option<(HostPort, bool)> {
    let Some(XdsAddress {
        address: Some(kind),
    }) = address
    else {
        ctx.error(path, "an address is required");
        return None;
    };
    let sa = match kind {
        XdsAddressKind::SocketAddress(sa) => sa,
        XdsAddressKind::Pipe(_) => {
            ctx.error(
                &path.field("pipe"),
                "unix socket addresses are not supported by Skiff",
            );
            return None;
        }
        XdsAddressKind::EnvoyInternalAddress(_) => {
            ctx.error(
                &path.field("envoy_internal_address"),
                "internal listeners are not supported by Skiff",
            );
            return None;
        }
    };
    let path = path.field("socket_address");
    let XdsSocketAddress {
        protocol,
        address,
        resolver_name,
        ipv4_compat,
        network_namespace_filepath,
        port_specifier,
    } = sa;
    reject_unsupported!(ctx, &path, resolver_name, network_namespace_filepath);
    if *protocol != Protocol::Tcp as i32 {
        ctx.error(
            &path.field("protocol"),
            format!(
                "only TCP is supported (value: {})",
                protocol_name(*protocol)
            ),
        );
    }
    let port = match port_specifier {
        Some(PortSpecifier::PortValue(p)) => match u16::try_from(*p) {
            Ok(p) => p,
            Err(_) => {
                ctx.error(
                    &path.field("port_value"),
                    format!("{p} is out of range (0 to 65535)"),
                );
                return None;
            }
        },
        Some(PortSpecifier::NamedPort(name)) => {
            ctx.error(
                &path.field("named_port"),
                format!("named ports are not supported by Skiff (value: '{name}')"),
            );
            return None;
        }
        None => 0,
    };
    if address.is_empty() {
        ctx.error(&path.field("address"), "an address is required");
        return None;
    }
    let hp = match address.parse::<IpAddr>() {
        Ok(ip) => HostPort::Ip(SocketAddr::new(ip, port)),
        Err(_) if ip_only => {
            ctx.error(
                &path.field("address"),
                format!("'{address}' is not an IP address"),
            );
            return None;
        }
        Err(_) => HostPort::Dns(address.clone(), port),
    };
    Some((hp, *ipv4_compat))
}

fn protocol_name(p: i32) -> String {
    Protocol::try_from(p).map_or_else(|_| p.to_string(), |p| p.as_str_name().to_string())
}

/// Converts a `Duration`, refusing negative and out-of-range values.
pub(crate) fn duration(ctx: &mut Ctx, path: &Path, d: &XdsDuration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        ctx.error(
            path,
            format!(
                "{}s{}ns is not a valid non-negative duration",
                d.seconds, d.nanos
            ),
        );
        return None;
    }
    #[allow(clippy::cast_sign_loss)] // both checked non-negative above
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Converts an optional `Duration` field with a default for when it is unset.
pub(crate) fn duration_or(
    ctx: &mut Ctx,
    path: &Path,
    d: Option<&XdsDuration>,
    default: Duration,
) -> Duration {
    d.and_then(|d| duration(ctx, path, d)).unwrap_or(default)
}

/// The fully-qualified message name an `Any`'s type URL names (what follows the last `/`).
pub(crate) fn any_type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

/// The fully-qualified message name a type URL names (what follows the last `/`).
pub(crate) fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or_default()
}

/// Decodes an `Any` as `T`, or records why it could not be.
pub(crate) fn unpack<T: prost::Message + prost::Name + Default>(
    ctx: &mut Ctx,
    path: &Path,
    any: &Any,
) -> Option<T> {
    match T::decode(any.value.as_slice()) {
        Ok(t) => Some(t),
        Err(e) => {
            ctx.error(path, format!("could not decode {}: {e}", T::full_name()));
            None
        }
    }
}

/// Envoy's `initial_fetch_timeout` when a config source leaves it unset.
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks that a `ConfigSource` says "from the ADS stream" (`ads: {}`), the only dynamic source
/// Skiff has, and returns how long the first fetch may take before the resource stops holding
/// up its users: `None` waits for ever (`0s`), as Envoy does.
pub(crate) fn ads_config_source(
    ctx: &mut Ctx,
    path: &Path,
    source: Option<&envoy_types::pb::envoy::config::core::v3::ConfigSource>,
) -> Option<Duration> {
    use envoy_types::pb::envoy::config::core::v3::{
        ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
    };
    let Some(ConfigSource {
        authorities,
        initial_fetch_timeout,
        resource_api_version,
        config_source_specifier,
    }) = source
    else {
        ctx.error(path, "a config source is required");
        return None;
    };
    reject_unsupported!(ctx, path, authorities);
    if *resource_api_version != ApiVersion::Auto as i32
        && *resource_api_version != ApiVersion::V3 as i32
    {
        ctx.error(
            &path.field("resource_api_version"),
            format!("{resource_api_version}: only V3 is supported"),
        );
    }
    match config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => {}
        Some(other) => {
            let field = match other {
                #[allow(deprecated)]
                ConfigSourceSpecifier::Path(_) => "path",
                ConfigSourceSpecifier::PathConfigSource(_) => "path_config_source",
                ConfigSourceSpecifier::ApiConfigSource(_) => "api_config_source",
                ConfigSourceSpecifier::Self_(_) => "self",
                ConfigSourceSpecifier::Ads(_) => "ads",
            };
            ctx.error(
                &path.field(field),
                "not supported by Skiff: resources come from the ADS stream only (write `ads: {}`)",
            );
        }
        None => ctx.error(path, "one of ads, api_config_source, ... is required"),
    }
    let timeout = duration_or(
        ctx,
        &path.field("initial_fetch_timeout"),
        initial_fetch_timeout.as_ref(),
        DEFAULT_INITIAL_FETCH_TIMEOUT,
    );
    (!timeout.is_zero()).then_some(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_masks_host_bits_and_matches_mapped_v4() {
        let c = Cidr::new("10.1.2.3".parse().unwrap(), 8).unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let any6 = Cidr::new("::".parse().unwrap(), 0).unwrap();
        assert!(any6.contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::new("10.0.0.0".parse().unwrap(), 33).is_none());
    }
}
