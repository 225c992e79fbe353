//! Arbitrary bytes as the first bytes of a connection: the ClientHello parser never panics, and
//! every prefix of its input gets a consistent verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_proxy::listener::tls_hello::{Hello, parse};

fuzz_target!(|data: &[u8]| {
    let full = parse(data);
    // A prefix can only ask for more bytes, or reach the verdict the whole input reaches early.
    if let Hello::NeedMore(n) = full {
        assert!(n > data.len(), "NeedMore({n}) with {} bytes present", data.len());
    }
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        if let Hello::NeedMore(n) = parse(&data[..cut]) {
            assert!(n > cut);
        }
    }
});
