//! A small DER reader for the few fields the CA client and the test CA read: a certificate's
//! validity, public key and URI SANs, and a PKCS#10 request's public key, URI SANs and
//! signature.
//!
//! It is total: any input, however short or malformed, gives `None`, never a panic or a read
//! out of bounds. It reads only what DER allows (definite, minimal lengths; low tag numbers) and
//! requires each structure it walks to be consumed exactly, so a truncated or padded encoding is
//! refused rather than half read.

// The request half is read only by the test CA (feature `server`) and the tests.
#![cfg_attr(not(feature = "server"), allow(dead_code))]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `SEQUENCE`.
const SEQUENCE: u8 = 0x30;
/// `SET`.
const SET: u8 = 0x31;
/// `INTEGER`.
const INTEGER: u8 = 0x02;
/// `BIT STRING`.
const BIT_STRING: u8 = 0x03;
/// `OCTET STRING`.
const OCTET_STRING: u8 = 0x04;
/// `OBJECT IDENTIFIER`.
pub(crate) const OID: u8 = 0x06;
/// `BOOLEAN`.
const BOOLEAN: u8 = 0x01;
/// `UTCTime`.
const UTC_TIME: u8 = 0x17;
/// `GeneralizedTime`.
const GENERALIZED_TIME: u8 = 0x18;
/// `[0]` constructed: a certificate's version, a CSR's attributes.
const CONTEXT_0: u8 = 0xa0;
/// `[1]` primitive: a certificate's issuerUniqueID.
const CONTEXT_1_PRIMITIVE: u8 = 0x81;
/// `[2]` primitive: a certificate's subjectUniqueID.
const CONTEXT_2_PRIMITIVE: u8 = 0x82;
/// `[3]` constructed: a certificate's extensions.
const CONTEXT_3: u8 = 0xa3;
/// `[6]` primitive in GeneralName: uniformResourceIdentifier.
const GENERAL_NAME_URI: u8 = 0x86;

/// The OID contents (without tag and length) of the identifiers read here.
pub(crate) mod oid {
    /// subjectAltName (2.5.29.17).
    pub(crate) const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    /// PKCS#9 extensionRequest (1.2.840.113549.1.9.14).
    pub(crate) const EXTENSION_REQUEST: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
    /// id-ecPublicKey (1.2.840.10045.2.1).
    pub(crate) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// prime256v1 (1.2.840.10045.3.1.7).
    pub(crate) const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// secp384r1 (1.3.132.0.34).
    pub(crate) const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    /// rsaEncryption (1.2.840.113549.1.1.1).
    pub(crate) const RSA_ENCRYPTION: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// Ed25519 (1.3.101.112).
    pub(crate) const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    /// ecdsa-with-SHA256 (1.2.840.10045.4.3.2).
    pub(crate) const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    /// ecdsa-with-SHA384 (1.2.840.10045.4.3.3).
    pub(crate) const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    /// sha256WithRSAEncryption (1.2.840.113549.1.1.11).
    pub(crate) const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
}

/// One DER element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// The identifier octet.
    pub(crate) tag: u8,
    /// The contents.
    pub(crate) value: &'a [u8],
    /// The whole encoding: identifier, length and contents.
    pub(crate) raw: &'a [u8],
}

/// Elements read one after another.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

/// An `AlgorithmIdentifier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Algorithm<'a> {
    /// The OID contents.
    pub(crate) oid: &'a [u8],
    /// The parameters, if present (`NULL` for RSA, the curve for EC keys).
    pub(crate) parameters: Option<Tlv<'a>>,
}

/// A `SubjectPublicKeyInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spki<'a> {
    /// The whole encoding.
    pub(crate) raw: &'a [u8],
    /// The key's algorithm.
    pub(crate) algorithm: Algorithm<'a>,
    /// The key itself: the `BIT STRING` contents after its unused-bits octet.
    pub(crate) key: &'a [u8],
}

/// The fields of an X.509 certificate read here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Certificate<'a> {
    /// `validity.notBefore`.
    #[cfg_attr(not(test), allow(dead_code))] // parsed so the validity is checked whole
    pub(crate) not_before: SystemTime,
    /// `validity.notAfter`.
    pub(crate) not_after: SystemTime,
    /// The subject's public key.
    pub(crate) spki: Spki<'a>,
    /// The contents of the `extensions` `SEQUENCE`, if the certificate has any.
    extensions: Option<&'a [u8]>,
}

/// The fields of a PKCS#10 certification request read here.
#[derive(Clone, Debug)]
pub(crate) struct Csr<'a> {
    /// The whole `CertificationRequestInfo` encoding: what the signature covers.
    pub(crate) info: &'a [u8],
    /// Whether the subject name is empty (Istio's requests have none).
    pub(crate) subject_empty: bool,
    /// The requested public key.
    pub(crate) spki: Spki<'a>,
    /// The URI SANs of the extension request, in order.
    pub(crate) uri_sans: Vec<&'a str>,
    /// The signature algorithm.
    pub(crate) signature_algorithm: Algorithm<'a>,
    /// The signature: the `BIT STRING` contents after its unused-bits octet.
    pub(crate) signature: &'a [u8],
}

/// `notAfter` of a DER certificate, `None` if it is not one.
pub fn not_after(certificate_der: &[u8]) -> Option<SystemTime> {
    certificate(certificate_der).map(|c| c.not_after)
}

/// Reads a DER X.509 certificate (the whole input).
pub(crate) fn certificate(der: &[u8]) -> Option<Certificate<'_>> {
    let mut outer = Reader::whole(der, SEQUENCE)?;
    let tbs = outer.take(SEQUENCE)?;
    outer.take(SEQUENCE)?; // signatureAlgorithm
    outer.take(BIT_STRING)?; // signatureValue
    outer.end()?;

    let mut tbs = Reader::new(tbs.value);
    tbs.optional(CONTEXT_0); // version, DEFAULT v1
    tbs.take(INTEGER)?; // serialNumber
    tbs.take(SEQUENCE)?; // signature
    tbs.take(SEQUENCE)?; // issuer
    let mut validity = Reader::new(tbs.take(SEQUENCE)?.value);
    let not_before = time(validity.next()?)?;
    let not_after = time(validity.next()?)?;
    validity.end()?;
    tbs.take(SEQUENCE)?; // subject
    let spki = spki(tbs.take(SEQUENCE)?)?;
    tbs.optional(CONTEXT_1_PRIMITIVE); // issuerUniqueID
    tbs.optional(CONTEXT_2_PRIMITIVE); // subjectUniqueID
    let extensions = match tbs.optional(CONTEXT_3) {
        Some(explicit) => {
            let mut inner = Reader::new(explicit.value);
            let list = inner.take(SEQUENCE)?;
            inner.end()?;
            Some(list.value)
        }
        None => None,
    };
    tbs.end()?;
    Some(Certificate {
        not_before,
        not_after,
        spki,
        extensions,
    })
}

/// Reads a DER PKCS#10 certification request (the whole input).
pub(crate) fn csr(der: &[u8]) -> Option<Csr<'_>> {
    let mut outer = Reader::whole(der, SEQUENCE)?;
    let info = outer.take(SEQUENCE)?;
    let signature_algorithm = algorithm(outer.take(SEQUENCE)?)?;
    let signature = bit_string(outer.take(BIT_STRING)?)?;
    outer.end()?;

    let mut fields = Reader::new(info.value);
    let version = fields.take(INTEGER)?;
    if version.value != [0] {
        return None;
    }
    let subject = fields.take(SEQUENCE)?;
    let spki = spki(fields.take(SEQUENCE)?)?;
    let attributes = fields.take(CONTEXT_0)?;
    fields.end()?;

    let mut uri_sans = Vec::new();
    let mut attributes = Reader::new(attributes.value);
    while !attributes.is_empty() {
        let mut attribute = Reader::new(attributes.take(SEQUENCE)?.value);
        let kind = attribute.take(OID)?;
        let values = attribute.take(SET)?;
        attribute.end()?;
        if kind.value != oid::EXTENSION_REQUEST {
            continue;
        }
        let mut values = Reader::new(values.value);
        while !values.is_empty() {
            let extensions = values.take(SEQUENCE)?;
            uri_sans.extend(san_uris(extensions.value)?);
        }
    }
    Some(Csr {
        info: info.raw,
        subject_empty: subject.value.is_empty(),
        spki,
        uri_sans,
        signature_algorithm,
        signature,
    })
}

// === impl Certificate ===

impl<'a> Certificate<'a> {
    /// The URI SANs, in order; `None` if the extensions are malformed.
    pub(crate) fn uri_sans(&self) -> Option<Vec<&'a str>> {
        match self.extensions {
            Some(list) => san_uris(list),
            None => Some(Vec::new()),
        }
    }
}

// === impl Reader ===

impl<'a> Reader<'a> {
    /// Reads from `input`.
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    /// The contents of the one element with `tag` that makes up all of `input`.
    fn whole(input: &'a [u8], tag: u8) -> Option<Self> {
        let mut reader = Self::new(input);
        let element = reader.take(tag)?;
        reader.end()?;
        Some(Self::new(element.value))
    }

    /// Whether everything has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// `Some` when everything has been read.
    pub(crate) fn end(&self) -> Option<()> {
        self.is_empty().then_some(())
    }

    /// The next element, whatever its tag.
    pub(crate) fn next(&mut self) -> Option<Tlv<'a>> {
        let (element, rest) = tlv(self.rest)?;
        self.rest = rest;
        Some(element)
    }

    /// The next element, which must have `tag`.
    pub(crate) fn take(&mut self, tag: u8) -> Option<Tlv<'a>> {
        let (element, rest) = tlv(self.rest)?;
        if element.tag != tag {
            return None;
        }
        self.rest = rest;
        Some(element)
    }

    /// The next element if it has `tag`; otherwise nothing is read.
    pub(crate) fn optional(&mut self, tag: u8) -> Option<Tlv<'a>> {
        if self.rest.first() != Some(&tag) {
            return None;
        }
        self.take(tag)
    }
}

/// Splits the first element off `input`.
fn tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, after_tag) = input.split_first()?;
    // High tag numbers (continued in more octets) never occur in the fields read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, after_first) = after_tag.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), after_first)
    } else {
        // 0x80 is BER's indefinite length; more than four octets is more than any input here.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || after_first.len() < count {
            return None;
        }
        let (octets, body) = after_first.split_at(count);
        // DER: the shortest form, so no leading zero octet and no long form below 128.
        if octets.first() == Some(&0) {
            return None;
        }
        let len = octets
            .iter()
            .fold(0u64, |len, &octet| (len << 8) | u64::from(octet));
        let len = usize::try_from(len).ok()?;
        if len < 0x80 {
            return None;
        }
        (len, body)
    };
    if body.len() < len {
        return None;
    }
    let header = input.len() - body.len();
    let (raw, rest) = input.split_at(header + len);
    Some((
        Tlv {
            tag,
            value: &body[..len],
            raw,
        },
        rest,
    ))
}

/// Reads an `AlgorithmIdentifier` (a `SEQUENCE` already split off).
fn algorithm(element: Tlv<'_>) -> Option<Algorithm<'_>> {
    let mut fields = Reader::new(element.value);
    let oid = fields.take(OID)?.value;
    let parameters = if fields.is_empty() {
        None
    } else {
        Some(fields.next()?)
    };
    fields.end()?;
    Some(Algorithm { oid, parameters })
}

/// Reads a `SubjectPublicKeyInfo` (a `SEQUENCE` already split off).
fn spki(element: Tlv<'_>) -> Option<Spki<'_>> {
    let mut fields = Reader::new(element.value);
    let algorithm = algorithm(fields.take(SEQUENCE)?)?;
    let key = bit_string(fields.take(BIT_STRING)?)?;
    fields.end()?;
    Some(Spki {
        raw: element.raw,
        algorithm,
        key,
    })
}

/// The octets of a `BIT STRING` whose length is a whole number of octets.
fn bit_string(element: Tlv<'_>) -> Option<&[u8]> {
    match element.value.split_first() {
        Some((0, octets)) => Some(octets),
        _ => None,
    }
}

/// The URI SANs in the contents of an `Extensions` `SEQUENCE`.
fn san_uris(extensions: &[u8]) -> Option<Vec<&str>> {
    let mut uris = Vec::new();
    let mut extensions = Reader::new(extensions);
    while !extensions.is_empty() {
        let mut extension = Reader::new(extensions.take(SEQUENCE)?.value);
        let id = extension.take(OID)?;
        extension.optional(BOOLEAN); // critical
        let value = extension.take(OCTET_STRING)?;
        extension.end()?;
        if id.value != oid::SUBJECT_ALT_NAME {
            continue;
        }
        let mut names = Reader::whole(value.value, SEQUENCE)?;
        while !names.is_empty() {
            let name = names.next()?;
            if name.tag == GENERAL_NAME_URI {
                // IA5String: ASCII.
                if !name.value.is_ascii() {
                    return None;
                }
                uris.push(std::str::from_utf8(name.value).ok()?);
            }
        }
    }
    Some(uris)
}

/// A `UTCTime` or `GeneralizedTime` in DER's form (`...Z`, whole seconds).
fn time(element: Tlv<'_>) -> Option<SystemTime> {
    let v = element.value;
    let (year, rest) = match element.tag {
        // YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY, otherwise 20YY.
        UTC_TIME if v.len() == 13 => {
            let yy = digits(v.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, v.get(2..)?)
        }
        // YYYYMMDDHHMMSSZ.
        GENERALIZED_TIME if v.len() == 15 => (digits(v.get(..4)?)?, v.get(4..)?),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(rest.get(0..2)?)?;
    let day = digits(rest.get(2..4)?)?;
    let hour = digits(rest.get(4..6)?)?;
    let minute = digits(rest.get(6..8)?)?;
    let second = digits(rest.get(8..10)?)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    let offset = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

/// ASCII decimal digits as a number (at most four here).
fn digits(ascii: &[u8]) -> Option<i64> {
    ascii.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests;
