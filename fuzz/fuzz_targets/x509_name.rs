//! Arbitrary bytes as an X.509 `Name` (the `Subject=` of `x-forwarded-client-cert`):
//! `name_rfc2253` and `name_contents_rfc2253` return `None` on malformed DER and never panic.
//!
//! Two round trips tie them together: the contents wrapped in a DER SEQUENCE print exactly as
//! the contents alone, and no strict prefix of a name that prints is a name. With the first
//! byte odd, the input is not used raw but flips bytes of a real subject (the `proxy dev-ca`
//! root's, `O=cluster.local, CN=Skiff development root CA`), so the fuzzer starts from a name
//! with two relative names of known types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_proxy::tls::x509::{name_contents_rfc2253, name_rfc2253};

/// The contents of the dev-ca root's subject SEQUENCE.
const ROOT_SUBJECT: &[u8] = &[
    0x31, 0x16, 0x30, 0x14, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x0d, b'c', b'l', b'u', b's', b't',
    b'e', b'r', b'.', b'l', b'o', b'c', b'a', b'l', 0x31, 0x22, 0x30, 0x20, 0x06, 0x03, 0x55, 0x04,
    0x03, 0x0c, 0x19, b'S', b'k', b'i', b'f', b'f', b' ', b'd', b'e', b'v', b'e', b'l', b'o', b'p',
    b'm', b'e', b'n', b't', b' ', b'r', b'o', b'o', b't', b' ', b'C', b'A',
];

fuzz_target!(|data: &[u8]| {
    let contents = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => {
            // (offset, xor) pairs over the real subject.
            let mut name = ROOT_SUBJECT.to_vec();
            for pair in rest.chunks_exact(2) {
                let at = usize::from(pair[0]) % name.len();
                name[at] ^= pair[1];
            }
            name
        }
        Some((_, rest)) => rest.to_vec(),
        None => Vec::new(),
    };
    // Raw, both ways.
    let _ = name_rfc2253(&contents);
    let printed = name_contents_rfc2253(&contents);

    // Wrapped in a SEQUENCE (definite length, long form when needed), the same text.
    let der = sequence(&contents);
    let whole = name_rfc2253(&der);
    assert_eq!(whole, printed, "a Name prints as its contents do");

    if data == [1] {
        assert_eq!(
            whole.as_deref(),
            Some("CN=Skiff development root CA,O=cluster.local")
        );
    }

    // A Name's DER length covers it all: every strict prefix is malformed.
    if whole.is_some() && der.len() <= 512 {
        for cut in 0..der.len() {
            assert_eq!(name_rfc2253(&der[..cut]), None, "prefix of {cut} bytes");
        }
    }
});

/// `SEQUENCE { contents }` in DER.
fn sequence(contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut der = vec![0x30];
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        der.push(0x80 | (bytes.len() - skip) as u8);
        der.extend_from_slice(&bytes[skip..]);
    }
    der.extend_from_slice(contents);
    der
}
