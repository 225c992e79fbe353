//! The little of X.509 that webpki does not expose: a distinguished name in RFC 2253 form
//! (Envoy's `Subject=` in `x-forwarded-client-cert`).
//!
//! Pure, and total on any input: malformed DER gives `None`, never a panic.

use std::fmt::Write;

/// One DER element: its tag and contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// Formats a DER `Name` (the contents of its SEQUENCE included) as RFC 2253: relative names
/// last to first, separated by `,`, multi-valued ones joined by `+`. Known attribute types get
/// their short names; others their dotted OID with the value as `#` and hex.
pub fn name_rfc2253(der: &[u8]) -> Option<String> {
    let (tag, rdns, rest) = element(der)?;
    if tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    name_contents_rfc2253(rdns)
}

/// [`name_rfc2253`] of a `Name`'s contents (what webpki's `subject()` returns).
pub fn name_contents_rfc2253(mut rdns: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (tag, mut set, rest) = element(rdns)?;
        if tag != SET {
            return None;
        }
        rdns = rest;
        let mut values = Vec::new();
        while !set.is_empty() {
            let (tag, atv, rest) = element(set)?;
            if tag != SEQUENCE {
                return None;
            }
            set = rest;
            let (tag, oid, value) = element(atv)?;
            if tag != OID {
                return None;
            }
            let (vtag, contents, end) = element(value)?;
            if !end.is_empty() {
                return None;
            }
            let name = short_name(oid);
            let text = match (name, vtag) {
                // UTF8String, PrintableString, IA5String, TeletexString (as Latin-1 is rare,
                // bytes that are not UTF-8 fall back to hex).
                (Some(_), 0x0c | 0x13 | 0x16 | 0x14) => {
                    std::str::from_utf8(contents).ok().map(escape)
                }
                _ => None,
            };
            let text = text.unwrap_or_else(|| {
                let mut hex = String::from("#");
                for b in &value[..value.len() - end.len()] {
                    let _ = write!(hex, "{b:02X}");
                }
                hex
            });
            let label = name.map_or_else(|| dotted(oid), str::to_string);
            values.push(format!("{label}={text}"));
        }
        parts.push(values.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

fn short_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "STREET",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        _ => return None,
    })
}

/// An OID's dotted form.
fn dotted(oid: &[u8]) -> String {
    let mut out = String::new();
    let mut value: u64 = 0;
    let mut first = true;
    for b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if first {
                let (a, b) = if value < 80 {
                    (value / 40, value % 40)
                } else {
                    (2, value - 80)
                };
                let _ = write!(out, "{a}.{b}");
                first = false;
            } else {
                let _ = write!(out, ".{value}");
            }
            value = 0;
        }
    }
    out
}

/// RFC 2253 escaping of an attribute value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_as_rfc2253_last_first() {
        // SEQUENCE { SET { O=Example Co }, SET { CN=a,b } }
        let o = [
            0x31, 0x13, 0x30, 0x11, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x0a, b'E', b'x', b'a',
            b'm', b'p', b'l', b'e', b' ', b'C', b'o',
        ];
        let cn = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'a', b',', b'b',
        ];
        let mut der = vec![0x30, (o.len() + cn.len()) as u8];
        der.extend_from_slice(&o);
        der.extend_from_slice(&cn);
        assert_eq!(name_rfc2253(&der).as_deref(), Some("CN=a\\,b,O=Example Co"));
        assert_eq!(name_rfc2253(&[0x30, 0x00]).as_deref(), Some(""));
    }

    #[test]
    fn unknown_types_are_dotted_with_hex_values() {
        // 1.2.840.113549.1.9.1 (emailAddress) = IA5String "x"
        let der = [
            0x30, 0x12, 0x31, 0x10, 0x30, 0x0e, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
            0x01, 0x09, 0x01, 0x16, 0x01, b'x',
        ];
        assert_eq!(
            name_rfc2253(&der).as_deref(),
            Some("1.2.840.113549.1.9.1=#160178")
        );
    }

    #[test]
    fn malformed_der_is_none_at_every_truncation() {
        let der = [
            0x30, 0x0e, 0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'a',
            b'b', b'c',
        ];
        assert_eq!(name_rfc2253(&der).as_deref(), Some("CN=abc"));
        for cut in 0..der.len() {
            assert_eq!(name_rfc2253(&der[..cut]), None, "cut at {cut}");
        }
    }
}
