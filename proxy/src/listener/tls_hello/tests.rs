//! Tests for the ClientHello parser: recorded hellos from real clients, every prefix and
//! re-fragmentation of them, and hand-built malformed ones.

use super::*;

// === Recorded hellos ===
//
// Our own recordings: a python3 listener on 127.0.0.1 wrote down the first flight of each
// client below (OpenSSL 3.0.19 `s_client`, curl 7.88.1 and Python's `ssl`, all on OpenSSL
// 3.0.19). Randoms and key shares are throwaway. Each is exactly one record holding one hello.

/// `openssl s_client -tls1_3 -servername example.com -alpn h2,http/1.1`
const OPENSSL_TLS13_SNI_ALPN: &str = concat!(
    "1603010102010000fe03037c4d1eb310d2391caa28d9d4caec8f663c30ad7a2fa39c8554abd8a0debf025520",
    "d5671835fe9f52ee0e343354bcb389e06fb1dd823292dad7c555b35d2ca3ee27000813021303130100ff0100",
    "00ad00000010000e00000b6578616d706c652e636f6d000b000403000102000a00160014001d0017001e0019",
    "001801000101010201030104002300000010000e000c02683208687474702f312e310016000000170000000d",
    "001e001c040305030603080708080809080a080b080408050806040105010601002b0003020304002d000201",
    "01003300260024001d0020504f0112c60ea685079f792d328c1227f4ae2701e6c086b4f6c247ef1ddb2b31",
);
/// `openssl s_client -tls1_2 -servername Api.Example.COM -alpn http/1.1`
const OPENSSL_TLS12_MIXEDCASE: &str = concat!(
    "16030100de010000da03035fb848573b6bf6bde6480c7da3705d812fd601f5712b8bd94c2549952b9441de00",
    "0038c02cc030009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033",
    "009d009c003d003c0035002f00ff0100007900000014001200000f4170692e4578616d706c652e434f4d000b",
    "000403000102000a000c000a001d0017001e00190018002300000010000b000908687474702f312e31001600",
    "0000170000000d002a0028040305030603080708080809080a080b0804080508060401050106010303030103",
    "02040205020602",
);
/// `openssl s_client -tls1 -cipher DEFAULT@SECLEVEL=0 -noservername`: client_version 3.1, no SNI,
/// no ALPN.
const OPENSSL_TLS10_NOSNI: &str = concat!(
    "16030100630100005f0301f3c39f5537f70d6d97c824ebc3c5e3d6fcf70c766d84769e9ef838b2f7016db200",
    "0012c00ac0140039c009c01300330035002f00ff01000024000b000403000102000a000c000a001d0017001e",
    "00190018002300000016000000170000",
);
/// `openssl s_client -servername backend.svc.cluster.local`: TLS 1.3 defaults, no ALPN.
const OPENSSL_DEFAULT_SNI_ONLY: &str = concat!(
    "1603010146010001420303413ca00a85b781e74cbd9b9e878f3f751cfe43bcb2bbb95efe139537cc9a393620",
    "7c8eac54d50c06aea2adbed12ab48725a6c6cb580374d4681d6849f61a78d844003e130213031301c02cc030",
    "009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d",
    "003c0035002f00ff010000bb0000001e001c0000196261636b656e642e7376632e636c75737465722e6c6f63",
    "616c000b000403000102000a00160014001d0017001e00190018010001010102010301040023000000160000",
    "00170000000d002a0028040305030603080708080809080a080b080408050806040105010601030303010302",
    "040205020602002b0009080304030303020301002d00020101003300260024001d00205851ed02f2373a429a",
    "fe3c451ae88c292b188cadf3e1e4b716743d01a37cb312",
);
/// `openssl s_client -tls1_2 -servername resume.test -sess_in ...`: resumes a TLS 1.2 session
/// (from a throwaway `openssl s_server -no_ticket`) by its 32-byte session_id.
const OPENSSL_TLS12_RESUME_SESSION_ID: &str = concat!(
    "16030100eb010000e70303dea81a1b0fb8b68fe2b3031ae70c5ace1c51afa54cd27ec2325fbea7e49d20c520",
    "cb518166c251eb0951f66564a45226563da6f9b00afc6dc739bfefcc64f6fb7e0038c02cc030009fcca9cca8",
    "ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f",
    "00ff0100006600000010000e00000b726573756d652e74657374000b000403000102000a000c000a001d0017",
    "001e00190018002300000016000000170000000d002a0028040305030603080708080809080a080b08040805",
    "0806040105010601030303010302040205020602",
);
/// `curl --http2 https://skiff.test:PORT/`: padded to 512 bytes by the padding extension.
const CURL_HTTP2: &str = concat!(
    "1603010200010001fc0303daf0a3b273ea577caed7ebf21e6e5c36b912ed608de63a1b197e7c0abfa7f07920",
    "82fe216f090a070e5517ff8b0bf5e67d068d24722daac9f7641903009082c1a9003e130213031301c02cc030",
    "009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d",
    "003c0035002f00ff010001750000000f000d00000a736b6966662e74657374000b000403000102000a001600",
    "14001d0017001e00190018010001010102010301040010000e000c02683208687474702f312e310016000000",
    "17000000310000000d002a0028040305030603080708080809080a080b080408050806040105010601030303",
    "010302040205020602002b0009080304030303020301002d00020101003300260024001d0020b82a0a9a845b",
    "aa06f1c8392d6b7486e900d084423741ff6a670f327b6fdb0800001500b30000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000",
);
/// `curl --http1.1 --tlsv1.2 --tls-max 1.2 https://skiff.test:PORT/`
const CURL_HTTP11: &str = concat!(
    "16030100d5010000d1030382e4f34594a1e9aeea7d9471a31e15892b9cb6187461e32fd613a75a3cbed70300",
    "0038c02cc030009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033",
    "009d009c003d003c0035002f00ff010000700000000f000d00000a736b6966662e74657374000b0004030001",
    "02000a000c000a001d0017001e001900180010000b000908687474702f312e310016000000170000000d002a",
    "0028040305030603080708080809080a080b080408050806040105010601030303010302040205020602",
);
/// Python `ssl` with `set_alpn_protocols(['grpc-exp', 'h2'])` and
/// `server_hostname='grpc.internal'`.
const PYTHON_SSL: &str = concat!(
    "1603010200010001fc03034a183c0d5e3e8bfe68f4ac0f22f80d031ba9fd104887a93b899573a23b9720cc20",
    "78733ba33bfc0292ec3bf3af5b8a66520a875ae64d54ca1c4b6b9424c4ba9e7c0024130213031301c02cc030",
    "c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff0100018f00000012001000000d677270632e",
    "696e7465726e616c000b000403000102000a00160014001d0017001e00190018010001010102010301040023",
    "00000010000e000c08677270632d6578700268320016000000170000000d002a002804030503060308070808",
    "0809080a080b080408050806040105010601030303010302040205020602002b00050403040303002d000201",
    "01003300260024001d0020e1d946d8266d5cb812f72193616c49f3b01fa5ffd8f14668a7994b31f876a25000",
    "1500ce0000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000",
);

/// A recorded hello and what must be read from it.
struct Recorded {
    name: &'static str,
    hex: &'static str,
    server_name: Option<&'static str>,
    alpn: &'static [&'static str],
}

const RECORDED: &[Recorded] = &[
    Recorded {
        name: "openssl tls1.3 sni+alpn",
        hex: OPENSSL_TLS13_SNI_ALPN,
        server_name: Some("example.com"),
        alpn: &["h2", "http/1.1"],
    },
    Recorded {
        name: "openssl tls1.2 mixed-case sni",
        hex: OPENSSL_TLS12_MIXEDCASE,
        server_name: Some("api.example.com"),
        alpn: &["http/1.1"],
    },
    Recorded {
        name: "openssl tls1.0 no sni",
        hex: OPENSSL_TLS10_NOSNI,
        server_name: None,
        alpn: &[],
    },
    Recorded {
        name: "openssl defaults sni only",
        hex: OPENSSL_DEFAULT_SNI_ONLY,
        server_name: Some("backend.svc.cluster.local"),
        alpn: &[],
    },
    Recorded {
        name: "openssl tls1.2 resumption by session id",
        hex: OPENSSL_TLS12_RESUME_SESSION_ID,
        server_name: Some("resume.test"),
        alpn: &[],
    },
    Recorded {
        name: "curl http2",
        hex: CURL_HTTP2,
        server_name: Some("skiff.test"),
        alpn: &["h2", "http/1.1"],
    },
    Recorded {
        name: "curl http1.1 tls1.2",
        hex: CURL_HTTP11,
        server_name: Some("skiff.test"),
        alpn: &["http/1.1"],
    },
    Recorded {
        name: "python ssl grpc",
        hex: PYTHON_SSL,
        server_name: Some("grpc.internal"),
        alpn: &["grpc-exp", "h2"],
    },
];

// === impl Recorded ===

impl Recorded {
    fn wire(&self) -> Vec<u8> {
        hex(self.hex)
    }

    /// The handshake message alone, taken out of its single record.
    fn message(&self) -> Vec<u8> {
        let wire = self.wire();
        let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        assert_eq!(
            wire.len(),
            5 + len,
            "{}: one record, nothing after it",
            self.name
        );
        wire[5..].to_vec()
    }

    fn expected(&self) -> Hello {
        Hello::ClientHello(ClientHello {
            server_name: self.server_name.map(str::to_owned),
            alpn: self.alpn.iter().map(|&p| p.to_owned()).collect(),
        })
    }
}

// === Helpers ===

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn vec8(data: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(data.len()).expect("vec8 fits")];
    out.extend_from_slice(data);
    out
}

fn vec16(data: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(data.len())
        .expect("vec16 fits")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(data);
    out
}

fn record(content_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type, 3, 1];
    out.extend(vec16(payload));
    out
}

/// A handshake message: type, 24-bit length, body.
fn handshake(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("fits").to_be_bytes();
    let mut out = vec![msg_type, len[1], len[2], len[3]];
    out.extend_from_slice(body);
    out
}

/// `message` cut into handshake records whose payload sizes cycle through `sizes`.
fn fragment(message: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.extend(record(22, chunk));
        rest = tail;
    }
    out
}

/// ClientHello fixed fields with the given values, then `tail` (the extensions block, or not).
fn fields(
    version: [u8; 2],
    session_id: &[u8],
    suites: &[u8],
    compression: &[u8],
    tail: &[u8],
) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend([0xa5; 32]);
    body.extend(vec8(session_id));
    body.extend(vec16(suites));
    body.extend(vec8(compression));
    body.extend_from_slice(tail);
    body
}

/// A TLS 1.3-style body: 32-byte session id, two suites, null compression, then `tail`.
fn body_with_tail(tail: &[u8]) -> Vec<u8> {
    fields([3, 3], &[0x11; 32], &[0x13, 0x01, 0x13, 0x02], &[0], tail)
}

/// A body carrying these extensions (each already `ext()`-encoded).
fn body_with(extensions: &[Vec<u8>]) -> Vec<u8> {
    body_with_tail(&vec16(&extensions.concat()))
}

/// A ClientHello in one record.
fn wire(body: &[u8]) -> Vec<u8> {
    record(22, &handshake(1, body))
}

fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut out = ty.to_be_bytes().to_vec();
    out.extend(vec16(data));
    out
}

fn sni(name: &[u8]) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend(vec16(name));
    ext(0, &vec16(&entry))
}

fn alpn(names: &[&[u8]]) -> Vec<u8> {
    let list: Vec<u8> = names.iter().flat_map(|name| vec8(name)).collect();
    ext(16, &vec16(&list))
}

/// The property every valid hello must have: each strict prefix is NeedMore(n) with
/// prefix < n <= whole, and n never shrinks as bytes arrive.
fn assert_every_prefix_needs_more(name: &str, wire: &[u8]) {
    assert_prefixes_need_more(name, wire, 0..wire.len());
}

fn assert_prefixes_need_more(name: &str, wire: &[u8], cuts: impl Iterator<Item = usize>) {
    let mut last = 0;
    for cut in cuts {
        match parse(&wire[..cut]) {
            Hello::NeedMore(n) => {
                assert!(n > cut, "{name}: prefix {cut} asked for only {n}");
                assert!(
                    n <= wire.len(),
                    "{name}: prefix {cut} asked for {n} > {}",
                    wire.len()
                );
                assert!(
                    n >= last,
                    "{name}: prefix {cut} asked for {n}, after {last}"
                );
                last = n;
            }
            other => panic!("{name}: prefix {cut} of {} gave {other:?}", wire.len()),
        }
    }
}

/// A verdict that claims more bytes must never ask for fewer than present or more than the cap.
fn assert_sane(name: &str, buf: &[u8]) {
    if let Hello::NeedMore(n) = parse(buf) {
        assert!(
            n > buf.len() && n <= MAX_CLIENT_HELLO,
            "{name}: NeedMore({n}) for {} bytes",
            buf.len()
        );
    }
}

// === Recorded hellos ===

#[test]
fn recorded_hellos_yield_lowercased_sni_and_alpn() {
    for r in RECORDED {
        assert_eq!(parse(&r.wire()), r.expected(), "{}", r.name);
    }
}

#[test]
fn every_prefix_of_a_recorded_hello_needs_more() {
    for r in RECORDED {
        assert_every_prefix_needs_more(r.name, &r.wire());
    }
}

#[test]
fn every_split_point_of_every_valid_hello_needs_more_until_it_is_complete() {
    // The property the caller's peek loop relies on: for a valid hello, no prefix gives a
    // verdict, and each NeedMore(n) asks for more than it has and no more than the hello.
    let mut valid: Vec<(String, Vec<u8>, Hello)> = Vec::new();
    for r in RECORDED {
        valid.push((r.name.to_owned(), r.wire(), r.expected()));
        for split in [&[1][..], &[3, 50], &[200]] {
            valid.push((
                format!("{} in {split:?}", r.name),
                fragment(&r.message(), split),
                r.expected(),
            ));
        }
    }
    let synthetic = [
        (body_with_tail(&[]), ClientHello::default()),
        (body_with(&[]), ClientHello::default()),
        (
            body_with(&[sni(b"A.B"), alpn(&[b"h2", b"http/1.1"])]),
            ClientHello {
                server_name: Some("a.b".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
            },
        ),
        (
            fields([3, 0], &[], &[0, 0x2f], &[0], &[]),
            ClientHello::default(),
        ),
    ];
    for (body, hello) in synthetic {
        valid.push((
            "synthetic".to_owned(),
            wire(&body),
            Hello::ClientHello(hello.clone()),
        ));
        valid.push((
            "synthetic in 1-byte records".to_owned(),
            fragment(&handshake(1, &body), &[1]),
            Hello::ClientHello(hello),
        ));
    }
    for (name, wire, expected) in valid {
        assert_every_prefix_needs_more(&name, &wire);
        assert_eq!(parse(&wire), expected, "{name}");
    }
}

#[test]
fn recorded_hello_asks_for_its_headers_then_its_record() {
    let wire = hex(OPENSSL_TLS13_SNI_ALPN);
    for cut in 0..5 {
        assert_eq!(parse(&wire[..cut]), Hello::NeedMore(5), "prefix {cut}");
    }
    // The handshake header first: the record's length alone decides nothing.
    for cut in 5..9 {
        assert_eq!(parse(&wire[..cut]), Hello::NeedMore(9), "prefix {cut}");
    }
    for cut in 9..wire.len() {
        assert_eq!(
            parse(&wire[..cut]),
            Hello::NeedMore(wire.len()),
            "prefix {cut}"
        );
    }
}

#[test]
fn bytes_after_the_hello_are_left_alone() {
    // A TLS 1.3 middlebox-compatible client may follow with ChangeCipherSpec and early data.
    let after: &[&[u8]] = &[
        b"\x14\x03\x03\x00\x01\x01",
        b"\x17\x03\x03\x00\x05hello",
        b"\x16\x03\x01\x00\x00",
        b"garbage",
    ];
    for r in RECORDED {
        for tail in after {
            let mut buf = r.wire();
            buf.extend_from_slice(tail);
            assert_eq!(parse(&buf), r.expected(), "{} + {tail:?}", r.name);
        }
    }
}

#[test]
fn refragmented_recorded_hellos_parse_the_same() {
    // Record payload sizes to cut each message into, cycled; 1 splits the handshake header too.
    let splits: &[&[usize]] = &[
        &[1],
        &[2],
        &[3],
        &[4],
        &[5],
        &[7, 1, 300],
        &[41],
        &[100],
        &[255],
        &[16384],
    ];
    for r in RECORDED {
        let message = r.message();
        let mut sizes: Vec<&[usize]> = splits.to_vec();
        let last_byte_alone = [message.len() - 1];
        sizes.push(&last_byte_alone);
        for split in sizes {
            let wire = fragment(&message, split);
            let name = format!("{} in records of {split:?}", r.name);
            assert_eq!(parse(&wire), r.expected(), "{name}");
            assert_every_prefix_needs_more(&name, &wire);
        }
    }
}

#[test]
fn records_may_use_any_3_x_version() {
    for version in [[3, 0], [3, 1], [3, 3], [3, 4]] {
        let mut wire = hex(CURL_HTTP11);
        wire[1..3].copy_from_slice(&version);
        assert_eq!(parse(&wire), RECORDED[6].expected(), "{version:?}");
    }
}

// === Not TLS, decided early ===

#[test]
fn not_tls_is_decided_at_the_first_telling_byte() {
    // (input, index of the byte that rules TLS out)
    let cases: &[(&[u8], usize)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0),
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", 0),
        (b"*1\r\n$4\r\nPING\r\n", 0),
        (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", 0), // PostgreSQL SSLRequest
        (b"\x17\x03\x03\x00\x10", 0),             // TLS application data, not a handshake
        (b"\x15\x03\x01\x00\x02\x02\x28", 0),     // TLS alert
        (b"\x80\x2e\x01\x00\x02", 0),             // SSLv2-compatible ClientHello
        (b"\x16\x02\x00\x00\x10", 1),             // record major version 2
        (b"\x16\x00", 1),
        (b"\x16\x04\x01", 1),
        (b"\x16\xfe\xfd\x00\x00", 1), // DTLS 1.2 record version
        (b"\x16\x16\x16\x16\x16", 1),
    ];
    for &(input, at) in cases {
        for cut in 0..at {
            assert_eq!(
                parse(&input[..cut]),
                Hello::NeedMore(5),
                "{input:?} cut at {cut}"
            );
        }
        for cut in at + 1..=input.len() {
            assert_eq!(
                parse(&input[..cut]),
                Hello::NotTls,
                "{input:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn empty_and_short_buffers_need_the_record_header() {
    for buf in [
        &b""[..],
        b"\x16",
        b"\x16\x03",
        b"\x16\x03\x01",
        b"\x16\x03\x01\x02",
    ] {
        assert_eq!(parse(buf), Hello::NeedMore(5), "{buf:?}");
    }
}

// === Record layer and handshake header ===

#[test]
fn record_and_handshake_header_errors_are_invalid() {
    let good = hex(OPENSSL_TLS13_SNI_ALPN);
    let message = RECORDED[0].message();
    let two_records = fragment(&message, &[100]);
    let with = |at: usize, byte: u8, base: &[u8]| {
        let mut out = base.to_vec();
        out[at] = byte;
        out
    };
    // A record one byte longer than the message it carries, holding a stray byte.
    let mut stray = good.clone();
    stray[3..5].copy_from_slice(&u16::try_from(message.len() + 1).unwrap().to_be_bytes());
    stray.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty record",
            b"\x16\x03\x01\x00\x00".to_vec(),
            "empty handshake record",
        ),
        (
            "record over 2^14",
            b"\x16\x03\x01\x40\x01".to_vec(),
            "record is longer than 2^14 bytes",
        ),
        (
            "server hello first",
            with(5, 2, &good),
            "first handshake message is not a ClientHello",
        ),
        (
            "hello request first",
            with(5, 0, &good),
            "first handshake message is not a ClientHello",
        ),
        (
            "hello body of 40 bytes",
            wire(&[0; 40]),
            "ClientHello is shorter than its fixed fields",
        ),
        (
            "alert between fragments",
            with(105, 0x15, &two_records),
            "a non-handshake record interrupts the ClientHello",
        ),
        (
            "ccs between fragments",
            with(105, 0x14, &two_records),
            "a non-handshake record interrupts the ClientHello",
        ),
        (
            "second record version 2.x",
            with(106, 2, &two_records),
            "a ClientHello record has a version other than 3.x",
        ),
        (
            "stray byte after the hello",
            stray,
            "handshake data follows the ClientHello in its record",
        ),
    ];
    for (name, input, why) in cases {
        assert_eq!(parse(&input), Hello::Invalid(why), "{name}");
    }
}

#[test]
fn header_errors_are_reported_before_the_record_completes() {
    // Only the record header and handshake header have arrived.
    assert_eq!(
        parse(b"\x16\x03\x01\x01\x00\x02\x00\x00\xfc"),
        Hello::Invalid("first handshake message is not a ClientHello")
    );
    assert_eq!(
        parse(b"\x16\x03\x01\x01\x00\x01\x00\x00\x10"),
        Hello::Invalid("ClientHello is shorter than its fixed fields")
    );
    // The message says 0x40 bytes, but its record claims 0x100.
    assert_eq!(
        parse(b"\x16\x03\x01\x01\x00\x01\x00\x00\x40"),
        Hello::Invalid("handshake data follows the ClientHello in its record")
    );
}

#[test]
fn oversized_hellos_are_refused_from_their_header() {
    // Only 9 bytes have arrived, each claiming a hello past the limit; nothing is allocated for it.
    for claimed in [MAX_CLIENT_HELLO, 0x01_0000, 0xff_ffff] {
        let len = u32::try_from(claimed).unwrap().to_be_bytes();
        let buf = [22, 3, 1, 0x40, 0x00, 1, len[1], len[2], len[3]];
        assert_eq!(parse(&buf), Hello::TooLarge, "claimed {claimed}");
    }
}

/// A hello whose message is `total` bytes long, padded with extension 21, in full records.
fn padded_hello(total: usize) -> Vec<u8> {
    let fixed = handshake(1, &body_with(&[sni(b"big.example"), ext(21, &[])])).len();
    let pad = total - fixed;
    let message = handshake(
        1,
        &body_with(&[sni(b"big.example"), ext(21, &vec![0; pad])]),
    );
    assert_eq!(message.len(), total);
    fragment(&message, &[MAX_RECORD_PAYLOAD])
}

#[test]
fn hello_of_exactly_max_size_on_the_wire_is_accepted() {
    // 65516 message bytes in four full records: 65516 + 4 * 5 = 65536 bytes on the wire.
    let wire = padded_hello(65_516);
    assert_eq!(wire.len(), MAX_CLIENT_HELLO);
    let expected = Hello::ClientHello(ClientHello {
        server_name: Some("big.example".into()),
        alpn: vec![],
    });
    assert_eq!(parse(&wire), expected);
    // Every prefix is too many to check in a debug build; take the record edges and a stride.
    let edges = (0..4).flat_map(|i| {
        let start = i * (MAX_RECORD_PAYLOAD + 5);
        start.saturating_sub(1)..start + 10
    });
    let cuts: Vec<usize> = edges
        .chain((0..wire.len()).step_by(997))
        .filter(|&c| c < wire.len())
        .collect();
    let mut sorted = cuts;
    sorted.sort_unstable();
    sorted.dedup();
    assert_prefixes_need_more("max-size hello", &wire, sorted.into_iter());
}

#[test]
fn hello_one_byte_over_max_size_is_too_large() {
    let wire = padded_hello(65_517);
    assert_eq!(wire.len(), MAX_CLIENT_HELLO + 1);
    assert_eq!(parse(&wire), Hello::TooLarge);
    // The first record alone does not prove it; the fourth record header does.
    assert!(matches!(
        parse(&wire[..MAX_RECORD_PAYLOAD + 5]),
        Hello::NeedMore(_)
    ));
    let fourth = 3 * (MAX_RECORD_PAYLOAD + 5);
    assert_eq!(parse(&wire[..fourth + 5]), Hello::TooLarge);
}

#[test]
fn too_large_once_the_next_record_header_would_pass_the_limit() {
    // The max-size message again, but its last byte in a fifth record: 65541 bytes on the wire.
    let message = handshake(1, &body_with(&[sni(b"big.example"), ext(21, &[])]));
    let pad = 65_516 - message.len();
    let message = handshake(
        1,
        &body_with(&[sni(b"big.example"), ext(21, &vec![0; pad])]),
    );
    let wire = fragment(&message, &[16_384, 16_384, 16_384, 16_363, 1]);
    assert_eq!(wire.len(), MAX_CLIENT_HELLO + 5);
    // After four records the message is one byte short and the fifth header would end at
    // 65540: the verdict comes now, without asking for more than the limit.
    assert_eq!(parse(&wire[..MAX_CLIENT_HELLO - 1]), Hello::TooLarge);
    assert_eq!(parse(&wire), Hello::TooLarge);
}

#[test]
fn too_large_when_waiting_would_pass_the_limit() {
    // A message that fits, cut into 1-byte records: the headers push it over the limit.
    let message = handshake(1, &body_with(&[ext(21, &vec![0; 20_000])]));
    let wire = fragment(&message, &[1]);
    assert!(wire.len() > MAX_CLIENT_HELLO);
    assert_eq!(parse(&wire), Hello::TooLarge);
    assert_sane("1-byte records", &wire[..MAX_CLIENT_HELLO - 3]);
}

// === ClientHello body ===

#[test]
fn hello_without_extensions_block_has_no_sni_or_alpn() {
    // Old clients stop after compression_methods; an empty block means the same.
    for body in [body_with_tail(&[]), body_with(&[])] {
        let wire = wire(&body);
        assert_eq!(parse(&wire), Hello::ClientHello(ClientHello::default()));
        assert_every_prefix_needs_more("no extensions", &wire);
    }
}

#[test]
fn unknown_and_empty_extensions_are_skipped() {
    let body = body_with(&[
        ext(0x0a0a, &[]),
        alpn(&[b"h2"]),
        ext(0xfe0d, &[1, 2, 3]),
        sni(b"a.b"),
        ext(0x1a1a, &[0]),
    ]);
    let expected = ClientHello {
        server_name: Some("a.b".into()),
        alpn: vec!["h2".into()],
    };
    assert_eq!(parse(&wire(&body)), Hello::ClientHello(expected));
}

#[test]
fn malformed_fixed_fields_are_invalid() {
    let suites = [0x13, 0x01];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "client_version 2.0",
            fields([2, 0], &[], &suites, &[0], &[]),
            "client_version is not 3.x",
        ),
        (
            "session id of 33",
            fields([3, 3], &[7; 33], &suites, &[0], &[]),
            "session_id is longer than 32 bytes",
        ),
        (
            "odd cipher_suites",
            fields([3, 3], &[], &[0x13, 0x01, 0x13], &[0], &[]),
            "cipher_suites is empty or of odd length",
        ),
        (
            "empty cipher_suites",
            fields([3, 3], &[1; 4], &[], &[0], &[0, 0]),
            "cipher_suites is empty or of odd length",
        ),
        (
            "empty compression",
            fields([3, 3], &[], &suites, &[], &[0, 0]),
            "compression_methods is empty",
        ),
        (
            "trailing byte, no extensions",
            body_with_tail(&[0]),
            "extensions block overruns the ClientHello",
        ),
        (
            "trailing garbage after extensions",
            body_with_tail(&[0, 0, 0xde, 0xad]),
            "trailing bytes after the extensions block",
        ),
        (
            "extensions block overruns",
            body_with_tail(&[0, 5, 0, 0, 0, 0]),
            "extensions block overruns the ClientHello",
        ),
        (
            "extension header truncated",
            body_with_tail(&[0, 2, 0, 0]),
            "extension header is truncated",
        ),
        (
            "extension data overruns",
            body_with_tail(&[0, 6, 0, 21, 0, 3, 0, 0]),
            "extension overruns the extensions block",
        ),
    ];
    for (name, body, why) in cases {
        let wire = wire(&body);
        assert_eq!(parse(&wire), Hello::Invalid(why), "{name}");
        // Invalid bodies are still valid prefixes until their last byte arrives.
        assert_every_prefix_needs_more(name, &wire);
    }
}

#[test]
fn session_id_lengths_overrunning_the_hello_are_invalid() {
    // The session_id length claims more than the 41-byte minimum body holds.
    let mut body = fields([3, 3], &[], &[0x13, 0x01], &[0], &[]);
    body[34] = 0xff;
    assert_eq!(
        parse(&wire(&body)),
        Hello::Invalid("session_id overruns the ClientHello")
    );
    let mut body = fields([3, 3], &[], &[0x13, 0x01], &[0], &[]);
    body[36] = 0xff;
    assert_eq!(
        parse(&wire(&body)),
        Hello::Invalid("cipher_suites overruns the ClientHello")
    );
    let mut body = fields([3, 3], &[], &[0x13, 0x01], &[0], &[]);
    body[39] = 2;
    assert_eq!(
        parse(&wire(&body)),
        Hello::Invalid("compression_methods overruns the ClientHello")
    );
}

#[test]
fn duplicate_extensions_are_invalid() {
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("two SNIs", vec![sni(b"a.example"), sni(b"b.example")]),
        ("two ALPNs", vec![alpn(&[b"h2"]), alpn(&[b"http/1.1"])]),
        (
            "two supported_versions apart",
            vec![ext(43, &[2, 3, 4]), sni(b"a"), ext(43, &[2, 3, 4])],
        ),
        (
            "two empty unknowns",
            vec![ext(0xabcd, &[]), ext(0xabcd, &[])],
        ),
    ];
    for (name, extensions) in cases {
        assert_eq!(
            parse(&wire(&body_with(&extensions))),
            Hello::Invalid("duplicate extension"),
            "{name}"
        );
    }
}

#[test]
fn server_name_is_lowercased_ascii_and_otherwise_as_sent() {
    let long =
        "a".repeat(63) + "." + &"B".repeat(63) + "." + &"c".repeat(63) + "." + &"D".repeat(63);
    assert_eq!(long.len(), 255);
    let cases: &[(&[u8], &str)] = &[
        (b"WWW.Example.COM", "www.example.com"),
        (b"example.com.", "example.com."),
        (b"xn--BCHER-kva.Example", "xn--bcher-kva.example"),
        (b"_grpc._tcp.Svc", "_grpc._tcp.svc"),
        (b"10.0.0.1", "10.0.0.1"),
        ("B\u{fc}cher.Example".as_bytes(), "b\u{fc}cher.example"),
        (long.as_bytes(), &long.to_ascii_lowercase()),
    ];
    for &(sent, want) in cases {
        let expected = ClientHello {
            server_name: Some(want.to_owned()),
            alpn: vec![],
        };
        assert_eq!(
            parse(&wire(&body_with(&[sni(sent)]))),
            Hello::ClientHello(expected),
            "{sent:?}"
        );
    }
}

#[test]
fn malformed_server_names_are_invalid() {
    let entry = |name_type: u8, name: &[u8]| {
        let mut out = vec![name_type];
        out.extend(vec16(name));
        out
    };
    let two_names = [entry(0, b"a.example"), entry(0, b"b.example")].concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty host_name", sni(b""), "host_name is empty"),
        (
            "256-byte host_name",
            sni(&[b'a'; 256]),
            "host_name is longer than 255 bytes",
        ),
        (
            "not UTF-8",
            sni(b"caf\xe9.example"),
            "host_name is not UTF-8",
        ),
        (
            "NUL inside",
            sni(b"a\0.example"),
            "host_name contains control or whitespace characters",
        ),
        (
            "space inside",
            sni(b"a b.example"),
            "host_name contains control or whitespace characters",
        ),
        (
            "newline inside",
            sni(b"a.example\n"),
            "host_name contains control or whitespace characters",
        ),
        (
            "DEL inside",
            sni(b"a\x7f.example"),
            "host_name contains control or whitespace characters",
        ),
        (
            "C1 control inside",
            sni("a\u{85}.example".as_bytes()),
            "host_name contains control or whitespace characters",
        ),
        (
            "empty extension",
            ext(0, &[]),
            "server_name list overruns its extension",
        ),
        (
            "empty list",
            ext(0, &vec16(&[])),
            "server_name list is empty",
        ),
        (
            "name type 1",
            ext(0, &vec16(&entry(1, b"a.example"))),
            "server_name entry is not a host_name",
        ),
        (
            "two names",
            ext(0, &vec16(&two_names)),
            "server_name list holds more than one name",
        ),
        (
            "list longer than extension",
            ext(0, &[0, 9, 0, 0, 1, b'a']),
            "server_name list overruns its extension",
        ),
        (
            "name longer than list",
            ext(0, &[0, 4, 0, 0, 5, b'a']),
            "host_name overruns the server_name list",
        ),
        (
            "trailing byte after list",
            ext(0, &[vec16(&entry(0, b"a")), vec![0]].concat()),
            "trailing bytes after the server_name list",
        ),
    ];
    for (name, extension, why) in cases {
        assert_eq!(
            parse(&wire(&body_with(&[extension]))),
            Hello::Invalid(why),
            "{name}"
        );
    }
}

#[test]
fn malformed_alpn_lists_are_invalid() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "zero-length name first",
            alpn(&[b"", b"h2"]),
            "ALPN protocol name is empty",
        ),
        (
            "zero-length name last",
            alpn(&[b"h2", b""]),
            "ALPN protocol name is empty",
        ),
        ("empty list", alpn(&[]), "ALPN list is empty"),
        (
            "empty extension",
            ext(16, &[]),
            "ALPN list overruns its extension",
        ),
        (
            "name longer than list",
            ext(16, &[0, 3, 5, b'h', b'2']),
            "ALPN protocol name overruns the ALPN list",
        ),
        (
            "list longer than extension",
            ext(16, &[0, 9, 2, b'h', b'2']),
            "ALPN list overruns its extension",
        ),
        (
            "trailing byte after list",
            ext(16, &[0, 3, 2, b'h', b'2', 0]),
            "trailing bytes after the ALPN list",
        ),
        (
            "not UTF-8",
            alpn(&[b"h2", b"\xff\xfe"]),
            "ALPN protocol name is not UTF-8",
        ),
    ];
    for (name, extension, why) in cases {
        assert_eq!(
            parse(&wire(&body_with(&[extension]))),
            Hello::Invalid(why),
            "{name}"
        );
    }
}

// === Corruption of real hellos ===

/// Offsets of the length fields in a recorded single-record hello.
struct Offsets {
    session_id: usize,
    suites: usize,
    compression: usize,
    extensions: usize,
}

fn offsets(wire: &[u8]) -> Offsets {
    let session_id = 5 + 4 + 2 + 32;
    let suites = session_id + 1 + usize::from(wire[session_id]);
    let compression =
        suites + 2 + usize::from(u16::from_be_bytes([wire[suites], wire[suites + 1]]));
    let extensions = compression + 1 + usize::from(wire[compression]);
    Offsets {
        session_id,
        suites,
        compression,
        extensions,
    }
}

#[test]
fn corrupted_lengths_in_recorded_hellos_are_invalid() {
    for r in RECORDED {
        let good = r.wire();
        let at = offsets(&good);
        let bump = |index: usize, delta: i16| {
            let mut out = good.clone();
            out[index] = u8::try_from(i16::from(out[index]) + delta).expect("no wrap");
            out
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("session_id +1", bump(at.session_id, 1)),
            ("cipher_suites +1", bump(at.suites + 1, 1)),
            ("cipher_suites -1", bump(at.suites + 1, -1)),
            ("cipher_suites +0x100", bump(at.suites, 1)),
            ("compression +1", bump(at.compression, 1)),
            ("compression 0", {
                let mut out = good.clone();
                out[at.compression] = 0;
                out
            }),
            ("extensions +1", bump(at.extensions + 1, 1)),
            ("extensions -1", bump(at.extensions + 1, -1)),
            ("extensions +0x100", bump(at.extensions, 1)),
            ("first extension length +0x100", bump(at.extensions + 4, 1)),
        ];
        for (name, input) in cases {
            assert!(
                matches!(parse(&input), Hello::Invalid(_)),
                "{}: {name} gave {:?}",
                r.name,
                parse(&input)
            );
        }
        // Only the extensions of hellos that have them are parsed at all.
        // One byte fewer in the record and the handshake header: the extensions now overrun.
        let mut message = r.message();
        message.pop();
        let body_len = u32::try_from(message.len() - 4).unwrap().to_be_bytes();
        message[1..4].copy_from_slice(&body_len[1..]);
        let shortened = record(22, &message);
        assert!(
            matches!(parse(&shortened), Hello::Invalid(_)),
            "{}: shortened",
            r.name
        );
    }
}

#[test]
fn every_single_byte_corruption_of_recorded_hellos_is_handled() {
    for r in RECORDED {
        let good = r.wire();
        for index in 0..good.len() {
            for change in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[index] ^= change;
                let name = format!("{} byte {index} ^ {change:#x}", r.name);
                assert_sane(&name, &bad);
                if index >= 2 {
                    // Once the record header says TLS, no later byte can make it "not TLS".
                    assert_ne!(parse(&bad), Hello::NotTls, "{name}");
                }
            }
        }
    }
}

#[test]
fn random_bytes_behind_a_handshake_header_never_panic() {
    // A small xorshift keeps this deterministic without a dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000 {
        let len = usize::try_from(next() % 300).unwrap();
        let mut buf: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
        // Make most of them get past the record header so the body parser is exercised.
        let header = [
            22,
            3,
            1,
            0,
            u8::try_from(len.saturating_sub(5).min(255)).unwrap(),
            1,
            0,
            0,
        ];
        let keep = usize::try_from(next() % 9).unwrap().min(buf.len());
        buf[..keep].copy_from_slice(&header[..keep]);
        for cut in [buf.len() / 2, buf.len()] {
            assert_sane(&format!("round {round} cut {cut}"), &buf[..cut]);
        }
    }
}

/// Found by the `tls_server_records` fuzz target: a record claiming 16 KiB whose ClientHello is
/// short, so handshake data would follow it. The verdict must not depend on how many bytes
/// had arrived: asking for the whole record first made a small `max_client_hello` refuse it as
/// too large, where a few more bytes gave "malformed".
#[test]
fn the_verdict_waits_for_the_handshake_header_not_the_record() {
    let mut wire = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x00, 0x64];
    wire.resize(5 + 0x4000, 0);
    for cut in 5..9 {
        assert_eq!(parse(&wire[..cut]), Hello::NeedMore(9), "prefix {cut}");
    }
    for cut in 9..=wire.len() {
        assert_eq!(
            parse(&wire[..cut]),
            Hello::Invalid("handshake data follows the ClientHello in its record"),
            "prefix {cut}"
        );
    }
}
