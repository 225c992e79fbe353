//! Arbitrary bytes as the first bytes of a plaintext connection: the HTTP sniffer never panics,
//! and once it has decided, more bytes do not change its mind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_proxy::listener::http_sniff::{Sniff, sniff};

fuzz_target!(|data: &[u8]| {
    let full = sniff(data);
    let half = sniff(&data[..data.len() / 2]);
    if half != Sniff::NeedMore {
        assert_eq!(half, full, "a decided verdict changed with more bytes");
    }
});
