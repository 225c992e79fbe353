//! Sans-IO HTTP sniffer: tells HTTP/1.0, HTTP/1.1 and h2c from other protocols by first bytes.
//!
//! This is the job of Envoy's `envoy.filters.listener.http_inspector`. Like it, we look at the
//! HTTP/2 connection preface and otherwise at the request line only; headers are the HTTP
//! codec's business. [`sniff`] is stateless: the caller peeks the connection, calls it with
//! everything peeked so far, and peeks again for as long as it answers [`Sniff::NeedMore`].
//!
//! Differences from Envoy, all on purpose:
//! - Envoy feeds the request line to its HTTP/1 codec and calls every version other than 1.1
//!   "http/1.0"; we accept only `HTTP/1.0` and `HTTP/1.1` (as Envoy's first versions did), so
//!   `HTTP/1.2` or `HTTP/2.0` in a request line is not taken for HTTP.
//! - We require the strict grammar of RFC 9112 §3: one SP between the three parts and a CRLF
//!   after them. A bare LF, doubled spaces or a missing version (HTTP/0.9) is not HTTP.
//! - When Envoy has peeked its maximum without a verdict it closes the connection; we answer
//!   [`Sniff::NotHttp`] and leave the policy to the caller.
//!
//! Like Envoy with its Balsa parser (built with `allow_custom_methods`), any token is a method,
//! not only a known list as in Envoy's first versions; and, like Envoy, a leading empty line is
//! not HTTP, even though RFC 9112 §2.2 lets servers skip one.
//!
//! Hot path, once per accepted connection: no allocation, no blocking, no logging.

/// How many bytes we peek at most before giving up on finding a request line.
///
/// Envoy's http_inspector peeks 8 KiB first and doubles up to its `MAX_INSPECT_SIZE`, 64 KiB
/// (8 KiB in its first versions). We keep its current ceiling: a request line carrying a long
/// signed query string or token can pass 8 KiB, and the same 64 KiB as the TLS inspector's
/// limit lets one peek buffer size serve both inspectors.
pub const MAX_SNIFF: usize = 64 * 1024;

/// The HTTP/2 connection preface a client with prior knowledge starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The part of an HTTP/1.x version that both accepted versions share (RFC 9112 §2.3).
const HTTP1_VERSION_PREFIX: &[u8] = b"HTTP/1.";

/// What the bytes peeked so far say about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// The bytes so far could still be HTTP; peek again once more have arrived.
    NeedMore,
    /// Not HTTP/1.0, HTTP/1.1 or an HTTP/2 preface, or no request line within [`MAX_SNIFF`] bytes.
    NotHttp,
    /// A request line ending in `HTTP/1.0`.
    Http10,
    /// A request line ending in `HTTP/1.1`.
    Http11,
    /// The HTTP/2 connection preface: HTTP/2 over cleartext with prior knowledge.
    H2c,
}

// === impl Sniff ===

impl Sniff {
    /// "http/1.0", "http/1.1", "h2c" as Envoy names them (None for the others)
    ///
    /// These are the ALPN-style names filter chains match on in `application_protocols`, so a
    /// plaintext connection selects its chain the way a TLS one does with real ALPN.
    pub fn application_protocol(self) -> Option<&'static str> {
        match self {
            Sniff::Http10 => Some("http/1.0"),
            Sniff::Http11 => Some("http/1.1"),
            Sniff::H2c => Some("h2c"),
            Sniff::NeedMore | Sniff::NotHttp => None,
        }
    }
}

/// Sniffs the first bytes of a connection, `buf` being everything peeked so far.
///
/// Answers [`Sniff::NotHttp`] at the first byte that cannot continue a request line or the
/// HTTP/2 preface, and once [`MAX_SNIFF`] bytes hold neither; a request line counts its CRLF.
pub fn sniff(buf: &[u8]) -> Sniff {
    let buf = buf.get(..MAX_SNIFF).unwrap_or(buf);
    // The preface is also a well-formed start of a request line with method PRI, so it is tried
    // first, as Envoy does; once the bytes leave it they are judged as HTTP/1.
    let common = buf.len().min(H2_PREFACE.len());
    if buf.get(..common) == H2_PREFACE.get(..common) {
        return if common == H2_PREFACE.len() {
            Sniff::H2c
        } else {
            Sniff::NeedMore
        };
    }
    request_line(buf)
}

/// Judges `buf` as the start of `method SP request-target SP HTTP-version CRLF`.
fn request_line(buf: &[u8]) -> Sniff {
    let (method, rest) = split_run(buf, is_tchar);
    let Some(rest) = after_space(method, rest) else {
        return verdict_on(buf, rest);
    };
    let (target, rest) = split_run(rest, is_target_byte);
    let Some(version) = after_space(target, rest) else {
        return verdict_on(buf, rest);
    };

    let common = version.len().min(HTTP1_VERSION_PREFIX.len());
    if version.get(..common) != HTTP1_VERSION_PREFIX.get(..common) {
        return Sniff::NotHttp;
    }
    let Some((&minor, end)) = version
        .get(HTTP1_VERSION_PREFIX.len()..)
        .and_then(<[u8]>::split_first)
    else {
        return need_more(buf);
    };
    let found = match minor {
        b'0' => Sniff::Http10,
        b'1' => Sniff::Http11,
        _ => return Sniff::NotHttp,
    };
    match end {
        [] | [b'\r'] => need_more(buf),
        [b'\r', b'\n', ..] => found,
        _ => Sniff::NotHttp,
    }
}

/// Splits `bytes` after the longest prefix whose bytes all satisfy `allowed`.
fn split_run(bytes: &[u8], allowed: fn(u8) -> bool) -> (&[u8], &[u8]) {
    let len = bytes.iter().take_while(|&&b| allowed(b)).count();
    bytes.split_at(len)
}

/// The bytes after the single SP that must end a non-empty `part`, or None when `rest` does not
/// start with one (then `rest` is empty, or starts with the offending byte).
fn after_space<'a>(part: &[u8], rest: &'a [u8]) -> Option<&'a [u8]> {
    match rest.split_first() {
        Some((b' ', after)) if !part.is_empty() => Some(after),
        _ => None,
    }
}

/// The verdict when a part of the line stopped at the end of `rest`: the bytes ran out (wait),
/// or a byte that fits neither the part nor the SP after it arrived (not HTTP).
fn verdict_on(buf: &[u8], rest: &[u8]) -> Sniff {
    if rest.is_empty() {
        need_more(buf)
    } else {
        Sniff::NotHttp
    }
}

/// NeedMore, unless `buf` already holds [`MAX_SNIFF`] bytes without a verdict.
fn need_more(buf: &[u8]) -> Sniff {
    if buf.len() >= MAX_SNIFF {
        Sniff::NotHttp
    } else {
        Sniff::NeedMore
    }
}

/// `tchar` (RFC 9110 §5.6.2): what a method token is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes allowed in a request-target: visible ASCII, plus bytes >= 0x80, which some clients
/// send unencoded (refusing them gains nothing: the version must still follow). Controls, SP
/// and DEL are not.
fn is_target_byte(b: u8) -> bool {
    b.is_ascii_graphic() || b >= 0x80
}

#[cfg(test)]
#[path = "http_sniff/tests.rs"]
mod tests;
