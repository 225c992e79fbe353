use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};

use super::*;

const ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// Seconds since the epoch as a `SystemTime` (negative: before it).
fn at(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

/// A leaf certificate for `ID`, self-signed, valid over `[not_before, not_after]`.
fn leaf(not_before: SystemTime, not_after: SystemTime) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![
        SanType::DnsName("web.shop.svc".try_into().unwrap()),
        SanType::URI(ID.try_into().unwrap()),
    ];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), key)
}

/// A CSR for `ID` with an empty subject, as the CA client writes it.
fn request() -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap();
    (csr.der().to_vec(), key)
}

fn time_of(tag: u8, text: &str) -> Option<SystemTime> {
    time(Tlv {
        tag,
        value: text.as_bytes(),
        raw: text.as_bytes(),
    })
}

#[test]
fn validity_is_read_in_both_time_forms() {
    // rcgen writes UTCTime for 1950-2049 and GeneralizedTime after.
    for (not_before, not_after) in [
        (157_766_400, 2_524_607_999), // 1975-01-01, 2049-12-31T23:59:59: both UTCTime
        (1_709_208_000, 2_524_608_000), // 2024-02-29T12:00, 2050-01-01: UTCTime, GeneralizedTime
        (-631_152_000, 253_402_300_799), // 1950-01-01, 9999-12-31T23:59:59
    ] {
        let (der, _) = leaf(at(not_before), at(not_after));
        let cert = certificate(&der).expect("a valid certificate");
        assert_eq!(cert.not_before, at(not_before));
        assert_eq!(cert.not_after, at(not_after));
        assert_eq!(super::not_after(&der), Some(at(not_after)));
    }
}

#[test]
fn certificate_key_and_uri_sans_are_read() {
    let (der, key) = leaf(at(0), at(4_000_000_000));
    let cert = certificate(&der).unwrap();
    assert_eq!(cert.spki.raw, key.subject_public_key_info().as_slice());
    assert_eq!(cert.spki.algorithm.oid, oid::EC_PUBLIC_KEY);
    assert_eq!(cert.spki.key, key.public_key_raw());
    // The DNS SAN is skipped; the URI is kept.
    assert_eq!(cert.uri_sans(), Some(vec![ID]));
}

#[test]
fn every_truncation_of_a_certificate_is_refused() {
    let (der, _) = leaf(at(0), at(4_000_000_000));
    for len in 0..der.len() {
        assert!(
            certificate(&der[..len]).is_none(),
            "{len} of {} bytes",
            der.len()
        );
        assert_eq!(super::not_after(&der[..len]), None);
    }
    let mut padded = der.clone();
    padded.push(0);
    assert!(certificate(&padded).is_none(), "trailing bytes are refused");
}

#[test]
fn every_truncation_of_a_request_is_refused() {
    let (der, _) = request();
    for len in 0..der.len() {
        assert!(csr(&der[..len]).is_none(), "{len} of {} bytes", der.len());
    }
    let mut padded = der.clone();
    padded.push(0);
    assert!(csr(&padded).is_none(), "trailing bytes are refused");
}

#[test]
fn corrupted_input_never_panics() {
    let (cert, _) = leaf(at(0), at(4_000_000_000));
    let (req, _) = request();
    for input in [&cert, &req] {
        for i in 0..input.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = input.clone();
                bad[i] ^= mask;
                let _ = certificate(&bad).map(|c| c.uri_sans());
                let _ = csr(&bad);
            }
        }
    }
    // Short garbage of every length and a few shapes.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for len in 0..300 {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()[0]
            })
            .collect();
        assert!(certificate(&garbage).is_none());
        let _ = csr(&garbage);
    }
}

#[test]
fn request_fields_are_read_and_the_signature_verifies() {
    let (der, key) = request();
    let req = csr(&der).expect("a valid request");
    assert!(req.subject_empty);
    assert_eq!(req.uri_sans, vec![ID]);
    assert_eq!(req.spki.raw, key.subject_public_key_info().as_slice());
    assert_eq!(req.spki.algorithm.oid, oid::EC_PUBLIC_KEY);
    let curve = req.spki.algorithm.parameters.unwrap();
    assert_eq!((curve.tag, curve.value), (OID, oid::P256));
    assert_eq!(req.signature_algorithm.oid, oid::ECDSA_SHA256);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, req.spki.key)
        .verify(req.info, req.signature)
        .expect("the request's own signature verifies");
}

#[test]
fn times_follow_rfc_5280() {
    let utc = |t| time_of(UTC_TIME, t);
    let generalized = |t| time_of(GENERALIZED_TIME, t);
    assert_eq!(utc("491231235959Z"), Some(at(2_524_607_999)));
    assert_eq!(
        utc("500101000000Z"),
        Some(at(-631_152_000)),
        "YY >= 50 is 19YY"
    );
    assert_eq!(utc("691231235959Z"), Some(at(-1)));
    assert_eq!(
        utc("240229120000Z"),
        Some(at(1_709_208_000)),
        "2024 is a leap year"
    );
    assert_eq!(generalized("20500101000000Z"), Some(at(2_524_608_000)));
    assert_eq!(generalized("00010101000000Z"), Some(at(-62_135_596_800)));
    assert_eq!(
        generalized("20000229000000Z"),
        Some(at(951_782_400)),
        "2000 is a leap year"
    );
    for bad in [
        "230229000000Z",  // 2023 is not a leap year
        "240230000000Z",  // no 30 February
        "240431000000Z",  // April has 30 days
        "241301000000Z",  // month 13
        "240001000000Z",  // month 0
        "240100000000Z",  // day 0
        "240101240000Z",  // hour 24
        "240101006000Z",  // minute 60
        "240101000060Z",  // second 60
        "2401010000000",  // no Z
        "24010100000Z",   // no seconds
        "2401010000000Z", // one digit too many
        "24010100000aZ",  // not a digit
        "24010100000-Z",  // not a digit
        "",
    ] {
        assert_eq!(utc(bad), None, "UTCTime {bad:?}");
    }
    for bad in [
        "21000229000000Z",   // 2100 is not a leap year
        "20500101000000",    // no Z
        "20500101000000.5Z", // fractions are not DER for certificates
        "20500101000000+0000",
        "2050010100000Z",
    ] {
        assert_eq!(generalized(bad), None, "GeneralizedTime {bad:?}");
    }
    assert_eq!(time_of(OCTET_STRING, "500101000000Z"), None, "other tags");
}

#[test]
fn only_der_lengths_are_read() {
    let long: Vec<u8> = [OCTET_STRING, 0x81, 0x80]
        .into_iter()
        .chain([7; 0x80])
        .collect();
    let (element, rest) = tlv(&long).expect("long form for 128 bytes");
    assert_eq!(
        (element.value.len(), element.raw.len(), rest.len()),
        (128, 131, 0)
    );
    let (element, rest) = tlv(&[OCTET_STRING, 1, 9, 42]).unwrap();
    assert_eq!((element.value, rest), (&[9][..], &[42][..]));
    for bad in [
        &[OCTET_STRING, 0x80, 0, 0][..],            // indefinite length (BER)
        &[OCTET_STRING, 0x81, 0x05, 1, 2, 3, 4, 5], // long form for a short length
        &[OCTET_STRING, 0x82, 0x00, 0x80],          // a leading zero length octet
        &[OCTET_STRING, 0x85, 1, 0, 0, 0, 0],       // five length octets
        &[OCTET_STRING, 0x84, 0xff, 0xff, 0xff, 0xff], // longer than the input
        &[OCTET_STRING, 3, 1, 2],                   // shorter than its length
        &[0x1f, 0x81, 0x01, 0],                     // a high tag number
        &[OCTET_STRING],
        &[],
    ] {
        assert_eq!(tlv(bad), None, "{bad:02x?}");
    }
}

#[test]
fn bit_strings_with_unused_bits_are_not_keys() {
    let whole = [BIT_STRING, 3, 0, 0xab, 0xcd];
    let partial = [BIT_STRING, 3, 4, 0xab, 0xc0];
    assert_eq!(bit_string(tlv(&whole).unwrap().0), Some(&[0xab, 0xcd][..]));
    assert_eq!(bit_string(tlv(&partial).unwrap().0), None);
    assert_eq!(bit_string(tlv(&[BIT_STRING, 0]).unwrap().0), None);
}
