//! Sans-IO TLS ClientHello parser: tells TLS from other protocols and extracts SNI and ALPN.
//!
//! This is the job of Envoy's `envoy.filters.listener.tls_inspector`, which runs BoringSSL's
//! handshake on the peeked bytes until its SNI callback fires. We parse the few fields we need
//! ourselves instead, so the inspector needs no TLS library and can say *why* a hello was refused.
//!
//! [`parse`] is stateless: the caller peeks the connection, calls it with everything peeked so
//! far, and peeks again for as long as it answers [`Hello::NeedMore`]. Re-parsing from the start
//! costs O(n) per call; n is capped by [`MAX_CLIENT_HELLO`] and hellos are a few hundred bytes.
//!
//! Hot path, once per accepted connection: nothing here blocks, logs or takes a lock, and nothing
//! is allocated for a length the client claims until the bytes it describes have arrived.

use std::borrow::Cow;

/// Largest ClientHello we accept (Envoy's tls_inspector limit).
///
/// Envoy's `TLS_MAX_CLIENT_HELLO` is 64 KiB and is compared with the number of bytes peeked, so
/// we count the same way: bytes on the wire, record headers included. Real hellos are a few
/// hundred bytes, about 2 KiB with a post-quantum key share: one record, far from the limit.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// `ContentType.handshake` (RFC 8446 §5.1).
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// Every TLS and SSL 3.0 record carries major version 3. An SSLv2-compatible hello starts with a
/// length byte instead (0x80 or more), so it is reported as not TLS: no client we serve sends one.
const RECORD_MAJOR_VERSION: u8 = 3;
/// Content type (1), version (2), length (2).
const RECORD_HEADER_LEN: usize = 5;
/// RFC 8446 §5.1: a plaintext record fragment MUST NOT exceed 2^14 bytes.
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
/// Message type (1), length (3).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// `HandshakeType.client_hello`.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// The fixed fields of a ClientHello with the smallest legal contents: client_version (2),
/// random (32), empty session_id (1), one cipher suite (2 + 2), one compression method (1 + 1).
const MIN_CLIENT_HELLO_BODY: usize = 41;
/// RFC 5246 §7.4.1.2: `opaque SessionID<0..32>`.
const MAX_SESSION_ID_LEN: usize = 32;
/// `ExtensionType.server_name` (RFC 6066 §3).
const EXT_SERVER_NAME: u16 = 0;
/// `ExtensionType.application_layer_protocol_negotiation` (RFC 7301 §3.1).
const EXT_ALPN: u16 = 16;
/// `NameType.host_name`, the only name type ever defined.
const NAME_TYPE_HOST_NAME: u8 = 0;
/// BoringSSL's `TLSEXT_MAXLEN_host_name`; a DNS name cannot be longer anyway.
const MAX_HOST_NAME_LEN: usize = 255;

/// What the bytes peeked so far say about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// The bytes so far are a valid prefix of a TLS ClientHello; at least this many bytes in
    /// total are needed to go on.
    NeedMore(usize),
    /// The first bytes are not a TLS handshake record (plaintext or another protocol).
    NotTls,
    /// It starts like TLS but the ClientHello is malformed; the &'static str says what was wrong.
    ///
    /// Whether that closes the connection or sends it down a non-TLS filter chain is the
    /// caller's policy (Envoy's `close_connection_on_client_hello_parsing_errors`).
    Invalid(&'static str),
    /// The ClientHello would exceed MAX_CLIENT_HELLO.
    TooLarge,
    /// A complete, well-formed ClientHello; the bytes after it were not looked at.
    ClientHello(ClientHello),
}

/// The parts of a ClientHello that select a filter chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` from the server_name extension, if the client sent one, ASCII-lowercased.
    ///
    /// DNS names compare case-insensitively (RFC 4343), so `Api.Example.COM` must select the
    /// same chain as `api.example.com`. Lowercasing once here lets every matcher compare bytes.
    /// Envoy does the same, one step later: its tls_inspector passes on the name BoringSSL
    /// extracted, which is the client's bytes unchanged, and `ConnectionSocketImpl::
    /// setRequestedServerName` stores it through `absl::AsciiStrToLower` ("Always keep the
    /// server_name_ as lower case"); the listener lowercases configured `server_names` to match.
    /// Only ASCII letters change: an internationalised name travels as its ASCII A-label.
    pub server_name: Option<String>,
    /// The ALPN protocol names in the client's order of preference; empty without the extension.
    pub alpn: Vec<String>,
}

/// Parses the ClientHello at the start of `buf`, the bytes peeked so far from a new connection.
///
/// Decides [`Hello::NotTls`] from the first byte that rules TLS out: the record content type
/// (byte 0) or the record's major version (byte 1). A handshake may be fragmented over several
/// records; they are joined as RFC 8446 §5.1 requires, and only from bytes that have arrived.
pub fn parse(buf: &[u8]) -> Hello {
    match reassemble(buf) {
        Ok(message) => match message
            .get(HANDSHAKE_HEADER_LEN..)
            .ok_or("ClientHello is shorter than its header")
            .and_then(parse_client_hello)
        {
            Ok(hello) => Hello::ClientHello(hello),
            Err(why) => Hello::Invalid(why),
        },
        Err(verdict) => verdict,
    }
}

/// Joins the handshake records at the start of `buf` into the ClientHello message, header
/// included, or returns the verdict that stopped it (NeedMore, NotTls, Invalid or TooLarge).
///
/// Single-record hellos, nearly all of them, are borrowed; fragments are copied only once a
/// second record has arrived, and only the bytes present.
fn reassemble(buf: &[u8]) -> Result<Cow<'_, [u8]>, Hello> {
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut record_start = 0;
    let mut records = 0;
    // Sum of the payload lengths the records so far claim, whether or not they have arrived.
    let mut claimed = 0;
    // Length of the whole ClientHello message, header included, once its header has arrived.
    let mut message_len: Option<usize> = None;

    loop {
        let first = records == 0;
        let header_end = record_start + RECORD_HEADER_LEN;
        // Never ask for more than the limit. (A record's end needs no such check: it is bounded
        // by the size check below once the message length is known, and by three small records
        // before then.)
        if header_end > MAX_CLIENT_HELLO {
            return Err(Hello::TooLarge);
        }
        let header = buf.get(record_start..).unwrap_or_default();
        if let Some(&content_type) = header.first()
            && content_type != CONTENT_TYPE_HANDSHAKE
        {
            // RFC 8446 §5.1: handshake messages MUST NOT be interleaved with other record types.
            return Err(if first {
                Hello::NotTls
            } else {
                Hello::Invalid("a non-handshake record interrupts the ClientHello")
            });
        }
        if let Some(&major) = header.get(1)
            && major != RECORD_MAJOR_VERSION
        {
            return Err(if first {
                Hello::NotTls
            } else {
                Hello::Invalid("a ClientHello record has a version other than 3.x")
            });
        }
        let Some(&[_, _, _, len_hi, len_lo]) = header.first_chunk::<RECORD_HEADER_LEN>() else {
            return Err(Hello::NeedMore(header_end));
        };
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if len == 0 {
            return Err(Hello::Invalid("empty handshake record"));
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(Hello::Invalid("record is longer than 2^14 bytes"));
        }
        records += 1;
        claimed += len;
        let record_end = header_end + len;
        let payload = buf
            .get(header_end..record_end.min(buf.len()))
            .unwrap_or_default();
        if first {
            message = Cow::Borrowed(payload);
        } else {
            message.to_mut().extend_from_slice(payload);
        }

        if message_len.is_none()
            && let Some(&[msg_type, l0, l1, l2]) = message.first_chunk::<HANDSHAKE_HEADER_LEN>()
        {
            if msg_type != HANDSHAKE_CLIENT_HELLO {
                return Err(Hello::Invalid(
                    "first handshake message is not a ClientHello",
                ));
            }
            let body_len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            if body_len < MIN_CLIENT_HELLO_BODY {
                return Err(Hello::Invalid(
                    "ClientHello is shorter than its fixed fields",
                ));
            }
            message_len = Some(HANDSHAKE_HEADER_LEN + body_len);
        }
        if let Some(total) = message_len {
            // A lower bound on the hello's size on the wire: the record headers seen so far plus
            // every byte of the message. Past the limit, say so now rather than after the
            // client has sent 64 KiB.
            if records * RECORD_HEADER_LEN + total > MAX_CLIENT_HELLO {
                return Err(Hello::TooLarge);
            }
            if claimed > total {
                // The ClientHello is the client's whole first flight, so it must end its record.
                return Err(Hello::Invalid(
                    "handshake data follows the ClientHello in its record",
                ));
            }
        }
        if buf.len() < record_end {
            // Until the handshake header has arrived, ask only for it: the record's claimed
            // length alone must not decide (a too-large verdict here and a malformed one a few
            // bytes later would make the verdict depend on how the bytes were split).
            let need = match message_len {
                None => {
                    let before = message.len() - payload.len();
                    record_end.min(header_end + HANDSHAKE_HEADER_LEN.saturating_sub(before))
                }
                Some(_) => record_end,
            };
            return Err(Hello::NeedMore(need));
        }
        if let Some(total) = message_len
            && claimed == total
        {
            return Ok(message);
        }
        record_start = record_end;
    }
}

/// Parses a ClientHello body (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2): everything after the
/// handshake header, exactly as long as that header said.
fn parse_client_hello(body: &[u8]) -> Result<ClientHello, &'static str> {
    let mut r = Reader::new(body);
    let [major, _] = r
        .array()
        .ok_or("ClientHello is truncated in client_version")?;
    // Checked for sanity only: which version to speak is the TLS stack's business.
    if major != RECORD_MAJOR_VERSION {
        return Err("client_version is not 3.x");
    }
    r.take(32).ok_or("ClientHello is truncated in random")?;
    let session_id = r.vec8().ok_or("session_id overruns the ClientHello")?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err("session_id is longer than 32 bytes");
    }
    let suites = r.vec16().ok_or("cipher_suites overruns the ClientHello")?;
    if suites.is_empty() || !suites.len().is_multiple_of(2) {
        return Err("cipher_suites is empty or of odd length");
    }
    let compression = r
        .vec8()
        .ok_or("compression_methods overruns the ClientHello")?;
    if compression.is_empty() {
        return Err("compression_methods is empty");
    }
    if r.is_empty() {
        // SSL 3.0 and early TLS 1.0 clients end here: RFC 5246 §7.4.1.2 lets the extensions
        // block be absent, and then there is no SNI and no ALPN.
        return Ok(ClientHello::default());
    }
    let extensions = r
        .vec16()
        .ok_or("extensions block overruns the ClientHello")?;
    if !r.is_empty() {
        return Err("trailing bytes after the extensions block");
    }
    parse_extensions(extensions)
}

/// Parses the extensions block, refusing duplicates and reading SNI and ALPN.
fn parse_extensions(block: &[u8]) -> Result<ClientHello, &'static str> {
    // Bounded by the bytes present: every extension takes at least 4 of them.
    let mut extensions = Vec::new();
    let mut r = Reader::new(block);
    while !r.is_empty() {
        let [t0, t1, l0, l1] = r.array().ok_or("extension header is truncated")?;
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let data = r
            .take(len)
            .ok_or("extension overruns the extensions block")?;
        extensions.push((u16::from_be_bytes([t0, t1]), data));
    }
    // RFC 8446 §4.2: "There MUST NOT be more than one extension of the same type". A hello
    // with two SNIs could otherwise route by one name while the TLS stack serves the other.
    // Sorting a copy keeps this O(n log n) against a hello stuffed with thousands of them.
    let mut types: Vec<u16> = extensions.iter().map(|&(ty, _)| ty).collect();
    types.sort_unstable();
    if types
        .windows(2)
        .any(|pair| matches!(pair, [a, b] if a == b))
    {
        return Err("duplicate extension");
    }

    let mut hello = ClientHello::default();
    for (ty, data) in extensions {
        match ty {
            EXT_SERVER_NAME => hello.server_name = Some(parse_server_name(data)?),
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

/// Parses the server_name extension (RFC 6066 §3) down to its one host name, lowercased.
///
/// Holds to BoringSSL's reading, which is what Envoy sees: the list must contain exactly one
/// entry, of type host_name, 1 to 255 bytes long. BoringSSL only refuses NUL beyond that; we also
/// refuse non-UTF-8 and control or whitespace characters, which no resolvable name contains and
/// which would end up in logs, metrics labels and filter-chain matches.
fn parse_server_name(data: &[u8]) -> Result<String, &'static str> {
    let mut r = Reader::new(data);
    let list = r.vec16().ok_or("server_name list overruns its extension")?;
    if !r.is_empty() {
        return Err("trailing bytes after the server_name list");
    }
    let mut list = Reader::new(list);
    let [name_type] = list.array().ok_or("server_name list is empty")?;
    if name_type != NAME_TYPE_HOST_NAME {
        return Err("server_name entry is not a host_name");
    }
    let name = list
        .vec16()
        .ok_or("host_name overruns the server_name list")?;
    if !list.is_empty() {
        return Err("server_name list holds more than one name");
    }
    if name.is_empty() {
        return Err("host_name is empty");
    }
    if name.len() > MAX_HOST_NAME_LEN {
        return Err("host_name is longer than 255 bytes");
    }
    let name = std::str::from_utf8(name).map_err(|_| "host_name is not UTF-8")?;
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("host_name contains control or whitespace characters");
    }
    Ok(name.to_ascii_lowercase())
}

/// Parses the ALPN extension (RFC 7301 §3.1) into its protocol names, in the client's order.
///
/// RFC 7301 requires a non-empty list of non-empty names. Envoy's tls_inspector drops a
/// malformed list silently and leaves the error to the handshake; we report it instead, so the
/// caller picks the policy. Names are opaque bytes on the wire, but every registered one is
/// ASCII, and ours are compared as strings, so non-UTF-8 is refused rather than mangled.
fn parse_alpn(data: &[u8]) -> Result<Vec<String>, &'static str> {
    let mut r = Reader::new(data);
    let list = r.vec16().ok_or("ALPN list overruns its extension")?;
    if !r.is_empty() {
        return Err("trailing bytes after the ALPN list");
    }
    if list.is_empty() {
        return Err("ALPN list is empty");
    }
    let mut list = Reader::new(list);
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list
            .vec8()
            .ok_or("ALPN protocol name overruns the ALPN list")?;
        if name.is_empty() {
            return Err("ALPN protocol name is empty");
        }
        let name = std::str::from_utf8(name).map_err(|_| "ALPN protocol name is not UTF-8")?;
        protocols.push(name.to_owned());
    }
    Ok(protocols)
}

/// A cursor over TLS wire data whose reads fail, rather than panic, past the end.
#[derive(Debug)]
struct Reader<'a> {
    rest: &'a [u8],
}

// === impl Reader ===

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    /// An `opaque x<0..2^8-1>` vector: a one-byte length, then that many bytes.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let [len] = self.array()?;
        self.take(usize::from(len))
    }

    /// An `opaque x<0..2^16-1>` vector: a two-byte length, then that many bytes.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = u16::from_be_bytes(self.array()?);
        self.take(usize::from(len))
    }
}

#[cfg(test)]
#[path = "tls_hello/tests.rs"]
mod tests;
