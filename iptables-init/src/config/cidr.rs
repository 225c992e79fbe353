//! IP prefixes as istio-iptables reads them: `addr/len`, host bits kept as written.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a prefix could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/len` part: istio-iptables wants `10.0.0.0/8`, not `10.0.0.0`.
    #[error("missing prefix length (write it as ADDRESS/LENGTH, for example 10.0.0.0/8)")]
    MissingLength,
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// The length is not a number or is too long for the address family.
    #[error("prefix length {0:?} must be a number from 0 to {1}")]
    BadLength(String, u8),
}

/// An IP prefix. Like Go's `netip.Prefix` (which istio-iptables uses), the address is kept as
/// written, host bits included: `10.1.2.3/8` renders as `10.1.2.3/8`, and iptables masks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

// === impl Cidr ===

impl Cidr {
    /// A prefix from its parts; `None` if `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Self { addr, len })
    }

    /// A single IPv4 host (`/32`).
    pub fn host_v4(addr: Ipv4Addr) -> Self {
        Self {
            addr: IpAddr::V4(addr),
            len: 32,
        }
    }

    /// A single IPv6 host (`/128`).
    pub fn host_v6(addr: Ipv6Addr) -> Self {
        Self {
            addr: IpAddr::V6(addr),
            len: 128,
        }
    }

    /// The address as written.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// True when the address lies in the loopback range (127/8 or ::1), as Go's `IsLoopback`.
    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }

    /// The prefix with host bits cleared, as the kernel stores it.
    pub fn network(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Self {
            addr,
            len: self.len,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or(CidrError::MissingLength)?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        // Go's ParsePrefix refuses signs and leading zeros in the length; so do we.
        let digits_ok = !len.is_empty()
            && len.bytes().all(|b| b.is_ascii_digit())
            && (len == "0" || !len.starts_with('0'));
        let len_num = digits_ok
            .then(|| len.parse::<u8>().ok())
            .flatten()
            .filter(|l| *l <= max)
            .ok_or_else(|| CidrError::BadLength(len.to_string(), max))?;
        Ok(Self { addr, len: len_num })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_like_go_netip() {
        for s in [
            "10.0.0.0/8",
            "10.1.2.3/8",
            "0.0.0.0/0",
            "2001:db8::/32",
            "::1/128",
            "127.0.0.1/32",
        ] {
            assert_eq!(s.parse::<Cidr>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_what_go_netip_rejects() {
        assert_eq!("10.0.0.0".parse::<Cidr>(), Err(CidrError::MissingLength));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::BadLength(..))
        ));
        assert!(matches!(
            "10.0.0.0/08".parse::<Cidr>(),
            Err(CidrError::BadLength(..))
        ));
        assert!(matches!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(CidrError::BadLength(..))
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::BadLength(..))
        ));
        assert!(matches!(
            "10.0.0.256/8".parse::<Cidr>(),
            Err(CidrError::BadAddress(..))
        ));
        assert!(matches!(
            "fe80::1%eth0/64".parse::<Cidr>(),
            Err(CidrError::BadAddress(..))
        ));
    }

    #[test]
    fn network_clears_host_bits() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.network().to_string(), "10.0.0.0/8");
        let c: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(c.network().to_string(), "2001:db8::/32");
        let c: Cidr = "1.2.3.4/0".parse().unwrap();
        assert_eq!(c.network().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn loopback_detection_follows_the_address() {
        assert!("127.1.2.3/32".parse::<Cidr>().unwrap().is_loopback());
        assert!("::1/128".parse::<Cidr>().unwrap().is_loopback());
        assert!(!"10.0.0.0/8".parse::<Cidr>().unwrap().is_loopback());
    }
}
