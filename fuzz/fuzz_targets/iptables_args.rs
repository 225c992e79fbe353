//! Arbitrary NUL-separated arguments through iptables-init's flag, CIDR and port-list parsing:
//! never a panic; what parses also plans and renders; a CIDR that parses survives a round trip.
#![no_main]

use iptables_init::cli::parse_bytes;
use iptables_init::config::{Cidr, split_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_bytes(data);
    for item in split_list(&String::from_utf8_lossy(data)) {
        if let Ok(cidr) = item.parse::<Cidr>() {
            assert_eq!(
                cidr.to_string().parse::<Cidr>(),
                Ok(cidr),
                "round trip of {item:?}"
            );
        }
    }
});
