//! Tests for the HTTP sniffer: request lines and prefaces that are HTTP, bytes that are not, and
//! the byte at which each verdict is reached.

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Asserts `input` gets `verdict` and that every strict prefix of it is still undecided.
fn assert_decided_at_end(input: &[u8], verdict: Sniff) {
    for cut in 0..input.len() {
        assert_eq!(
            sniff(&input[..cut]),
            Sniff::NeedMore,
            "{:?} cut at {cut}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(
        sniff(input),
        verdict,
        "{:?}",
        String::from_utf8_lossy(input)
    );
}

#[test]
fn request_lines_are_http1() {
    let cases: &[(&[u8], Sniff)] = &[
        (b"GET / HTTP/1.1\r\n", Sniff::Http11),
        (b"GET / HTTP/1.0\r\n", Sniff::Http10),
        (b"POST /submit?x=1&y=%20 HTTP/1.1\r\n", Sniff::Http11),
        (b"POST /form HTTP/1.0\r\n", Sniff::Http10),
        (b"CONNECT example.com:443 HTTP/1.1\r\n", Sniff::Http11),
        (b"CONNECT [::1]:8443 HTTP/1.0\r\n", Sniff::Http10),
        (b"OPTIONS * HTTP/1.1\r\n", Sniff::Http11),
        (b"GET http://example.com/a?b#c HTTP/1.1\r\n", Sniff::Http11),
        (b"HEAD /index.html HTTP/1.0\r\n", Sniff::Http10),
        (b"PUT /v1/keys/a HTTP/1.1\r\n", Sniff::Http11),
        (b"DELETE /x HTTP/1.1\r\n", Sniff::Http11),
        (b"PATCH /x HTTP/1.1\r\n", Sniff::Http11),
        (b"PROPFIND /dav/ HTTP/1.1\r\n", Sniff::Http11),
        // Custom methods are tokens too, as Envoy's Balsa parser allows.
        (b"M-SEARCH * HTTP/1.1\r\n", Sniff::Http11),
        (b"get / HTTP/1.1\r\n", Sniff::Http11),
        // Method PRI is only the HTTP/2 preface when the whole preface follows.
        (b"PRI * HTTP/1.1\r\n", Sniff::Http11),
        // Unencoded UTF-8 in the target is let through.
        ("GET /caf\u{e9} HTTP/1.1\r\n".as_bytes(), Sniff::Http11),
    ];
    for &(line, verdict) in cases {
        assert_decided_at_end(line, verdict);
    }
}

#[test]
fn only_the_request_line_is_looked_at() {
    let with_headers: &[(&[u8], Sniff)] = &[
        (
            b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\n\r\n",
            Sniff::Http11,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", Sniff::Http10),
        // Header garbage is the codec's problem, not the sniffer's.
        (b"GET / HTTP/1.1\r\n\x00\x01\x02", Sniff::Http11),
    ];
    for &(input, verdict) in with_headers {
        assert_eq!(sniff(input), verdict, "{input:?}");
    }
}

#[test]
fn h2_preface_is_h2c_and_its_prefixes_need_more() {
    assert_decided_at_end(PREFACE, Sniff::H2c);
    // A client with prior knowledge sends its SETTINGS frame right after the preface.
    let mut with_settings = PREFACE.to_vec();
    with_settings.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    assert_eq!(sniff(&with_settings), Sniff::H2c);
}

#[test]
fn a_preface_that_goes_wrong_is_judged_as_a_request_line() {
    // "PRI * HTTP/2.0\r\n" is a request line, but 2.0 is not an HTTP/1 version.
    assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), Sniff::NotHttp);
    assert_eq!(sniff(b"PRI * HTTP/2.1"), Sniff::NotHttp);
    assert_eq!(sniff(b"PRI /x"), Sniff::NeedMore);
}

#[test]
fn not_http_is_decided_at_the_first_offending_byte() {
    // (input, index of the byte that rules HTTP out)
    let cases: &[(&[u8], usize)] = &[
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0), // a TLS ClientHello
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", 38),  // banner: "method", target, then CR
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", 21),
        (b"*1\r\n$4\r\nPING\r\n", 2), // redis RESP
        (b"PING\r\n", 4),             // redis inline
        (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", 0),
        (b"\r\nGET / HTTP/1.1\r\n", 0), // leading empty line, refused as Envoy does
        (b"\nGET / HTTP/1.1\r\n", 0),
        (b" GET / HTTP/1.1\r\n", 0),
        (b"GE(T / HTTP/1.1\r\n", 2),
        (b"GET\t/ HTTP/1.1\r\n", 3),
        (b"GET  / HTTP/1.1\r\n", 4),      // empty target
        (b"GET /a\x01b HTTP/1.1\r\n", 6), // control byte in target
        (b"GET /a\x7f HTTP/1.1\r\n", 6),
        (b"GET /a\tb HTTP/1.1\r\n", 6),
        (b"GET /\r\n", 5), // HTTP/0.9
        (b"GET / \r\n", 6),
        (b"GET / http/1.1\r\n", 6),
        (b"GET / HTTPS/1.1\r\n", 10),
        (b"GET / HTTP/2.0\r\n", 11),
        (b"GET / HTTP/1.2\r\n", 13),
        (b"GET / HTTP/1.10\r\n", 14),
        (b"GET / HTTP/1.1 \r\n", 14),
        (b"GET / HTTP/1.1\n", 14), // bare LF
        (b"GET / HTTP/1.1\r\r\n", 15),
        (b"GET / HTTP/1.0\rX", 15),
        (b"GET / HTTP/1.1 extra\r\n", 14),
    ];
    for &(input, at) in cases {
        let show = String::from_utf8_lossy(input);
        for cut in 0..at {
            assert_eq!(
                sniff(&input[..cut]),
                Sniff::NeedMore,
                "{show:?} cut at {cut}"
            );
        }
        for cut in at + 1..=input.len() {
            assert_eq!(
                sniff(&input[..cut]),
                Sniff::NotHttp,
                "{show:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn empty_buffer_needs_more() {
    assert_eq!(sniff(b""), Sniff::NeedMore);
}

#[test]
fn request_line_up_to_max_sniff_is_accepted() {
    let line = |total: usize| {
        let fixed = b"GET / HTTP/1.1\r\n".len();
        let mut out = b"GET /".to_vec();
        out.resize(total - (fixed - 5), b'a');
        out.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(out.len(), total);
        out
    };
    assert_eq!(sniff(&line(MAX_SNIFF)), Sniff::Http11);
    assert_eq!(sniff(&line(MAX_SNIFF + 1)), Sniff::NotHttp);
    // Below the limit a long line is still only undecided.
    let long = line(MAX_SNIFF);
    assert_eq!(sniff(&long[..MAX_SNIFF - 1]), Sniff::NeedMore);
    assert_eq!(sniff(&long[..40_000]), Sniff::NeedMore);
}

#[test]
fn undecided_bytes_stop_at_max_sniff() {
    // Each stays a plausible request-line prefix however long it runs; the limit ends the wait.
    for head in [&b""[..], b"GET /"] {
        let mut buf = head.to_vec();
        buf.resize(MAX_SNIFF - 1, b'a');
        assert_eq!(sniff(&buf), Sniff::NeedMore, "{head:?}");
        buf.push(b'a');
        assert_eq!(sniff(&buf), Sniff::NotHttp, "{head:?}");
        // Bytes past the limit are not looked at, so a late end of line changes nothing.
        buf.extend_from_slice(b" / HTTP/1.1\r\n");
        assert_eq!(sniff(&buf), Sniff::NotHttp, "{head:?}");
    }
}

#[test]
fn verdicts_do_not_change_as_more_bytes_arrive() {
    let inputs: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        PREFACE,
        b"SSH-2.0-OpenSSH_9.2p1\r\n",
        b"\x16\x03\x01\x00\x05hello",
        b"GET / HTTP/1.1\n\n",
    ];
    for input in inputs {
        let mut decided = None;
        for cut in 0..=input.len() {
            let verdict = sniff(&input[..cut]);
            match decided {
                None if verdict != Sniff::NeedMore => decided = Some(verdict),
                None => {}
                Some(first) => assert_eq!(verdict, first, "{input:?} cut at {cut}"),
            }
        }
        assert!(decided.is_some(), "{input:?} never decided");
    }
}

#[test]
fn application_protocols_use_envoy_names() {
    let cases = [
        (Sniff::Http10, Some("http/1.0")),
        (Sniff::Http11, Some("http/1.1")),
        (Sniff::H2c, Some("h2c")),
        (Sniff::NotHttp, None),
        (Sniff::NeedMore, None),
    ];
    for (sniffed, name) in cases {
        assert_eq!(sniffed.application_protocol(), name, "{sniffed:?}");
    }
}
