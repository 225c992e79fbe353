use std::{
    process::Command,
    time::{Duration, SystemTime},
};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};
use rustls_pki_types::{CertificateDer, UnixTime, pem::PemObject};

use super::*;

const ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn ca() -> CaServer {
    CaServer::new(TestCaOptions {
        max_validity: Duration::from_secs(3600),
        default_validity: Duration::from_secs(600),
        ..TestCaOptions::default()
    })
    .unwrap()
}

fn csr(key: &KeyPair, sans: &[&str]) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI(s.to_string().try_into().unwrap()))
        .collect();
    params.serialize_request(key).unwrap().pem().unwrap()
}

/// Checks that `chain` is `[leaf, root]` with the leaf chaining to the CA's root for both TLS
/// usages; returns the leaf's URI SANs.
fn verify(ca: &CaServer, chain: &[String]) -> Vec<String> {
    assert_eq!(chain.len(), 2, "{chain:?}");
    assert_eq!(chain[1], ca.root_pem());
    let root = CertificateDer::from_pem_slice(ca.root_pem().as_bytes()).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
    let leaf = CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap();
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .expect("the leaf chains to the root");
    }
    ee.valid_uri_names().map(str::to_string).collect()
}

/// `openssl req` with `args`, with the SPIFFE ID as a URI SAN and an empty subject.
fn openssl_csr(args: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("skiff-ca-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join(format!("{}.key", args.join("_").replace([':', '/'], "-")));
    let out = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/", "-addext"])
        .arg(format!("subjectAltName=critical,URI:{ID}"))
        .args(args)
        .arg("-keyout")
        .arg(&key)
        .output()
        .expect("openssl is not installed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_csr_is_signed_for_its_key_and_spiffe_id() {
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let (chain, record) = ca.sign(&csr(&key, &[ID]), 120).unwrap();
    assert_eq!(verify(&ca, &chain), vec![ID]);
    assert_eq!(record.uri_sans, vec![ID]);
    assert_eq!(record.key_algorithm, KeyAlgorithm::EcdsaP256);
    assert_eq!(record.validity, Duration::from_secs(120));
    let leaf = CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap();
    let parsed = crate::ca::der::certificate(&leaf).unwrap();
    assert_eq!(parsed.spki.raw, key.subject_public_key_info().as_slice());
    assert_eq!(parsed.not_after, record.not_after);
    let left = record
        .not_after
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((118..=120).contains(&left), "{left} s left");
}

#[test]
fn validity_is_capped_and_defaulted() {
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let request = csr(&key, &[ID]);
    for (asked, granted) in [
        (7200, 3600),
        (3600, 3600),
        (0, 600),
        (-5, 600),
        (i64::MAX, 3600),
    ] {
        let (_, record) = ca.sign(&request, asked).unwrap();
        assert_eq!(
            record.validity,
            Duration::from_secs(granted),
            "asked {asked}"
        );
    }
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let good = csr(&key, &[ID]);
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    // The signature is the last element: flip its last octet.
    let mut tampered = der.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let pem = |der: &[u8]| {
        let body = der_to_base64(der);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
    };
    for (request, want) in [
        ("not pem".to_string(), "not a PEM CERTIFICATE REQUEST"),
        (pem(&der[..der.len() - 1]), "not a DER PKCS#10"),
        (pem(&tampered), "signature does not verify"),
        (csr(&key, &[]), "names no SPIFFE ID"),
        (csr(&key, &["https://example.com/x"]), "names no SPIFFE ID"),
    ] {
        let err = ca.sign(&request, 60).unwrap_err();
        assert!(err.to_string().contains(want), "want {want:?}: {err}");
        assert_eq!(err.to_status().code(), Code::InvalidArgument);
    }
}

#[test]
fn openssl_requests_are_read_too() {
    // Another implementation's encoding of the same structures: RSA and P-384 keys.
    let ca = ca();
    for (args, algorithm) in [
        (&["-newkey", "rsa:2048"][..], KeyAlgorithm::Rsa),
        (
            &[
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-sha384",
            ][..],
            KeyAlgorithm::EcdsaP384,
        ),
    ] {
        let (chain, record) = ca.sign(&openssl_csr(args), 60).unwrap();
        assert_eq!(record.key_algorithm, algorithm);
        assert_eq!(verify(&ca, &chain), vec![ID]);
    }
}

#[test]
fn the_caller_is_checked_before_the_csr() {
    let ca = CaServer::new(TestCaOptions {
        token: Some("secret".into()),
        ..TestCaOptions::default()
    })
    .unwrap();
    let with = |auth: Option<&str>| {
        let mut metadata = MetadataMap::new();
        if let Some(a) = auth {
            metadata.insert("authorization", a.parse().unwrap());
        }
        ca.check_caller(&metadata).map_err(|s| s.code())
    };
    assert_eq!(with(Some("Bearer secret")), Ok(()));
    assert_eq!(with(Some("Bearer other")), Err(Code::Unauthenticated));
    assert_eq!(with(Some("secret")), Err(Code::Unauthenticated));
    assert_eq!(with(None), Err(Code::Unauthenticated));
    ca.set_down(true);
    assert_eq!(with(Some("Bearer secret")), Err(Code::Unavailable));
    ca.set_down(false);
    assert_eq!(with(Some("Bearer secret")), Ok(()));
}

/// Standard base64 with padding, for re-wrapping DER in PEM.
fn der_to_base64(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
