//! Certificate files as the CA or the disk gives them: `parse_cert_key` (chain, key) and
//! `parse_roots` return errors and never panic, and whatever they accept the TLS layer can use
//! (`Identity::new`, `TrustRoots::new`, the SPIFFE ID and the RFC 2253 subject of the leaf).
//!
//! The first byte picks how the rest becomes files:
//! - raw text, cut in two where the next two bytes say;
//! - two DER blobs wrapped in PEM (`CERTIFICATE`, then a key label);
//! - `proxy dev-ca` output (a workload certificate, its P-256 key, the root) with the DER bytes
//!   flipped and cut where the input says, then wrapped in PEM. Unmutated, it must parse and
//!   make an identity: that is the seed the fuzzer grows from, since no corpus is committed.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::{arbitrary::Unstructured, fuzz_target};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use skiff_proxy::{
    config::{parse_cert_key, parse_roots},
    tls::{
        Identity, TrustRoots,
        dev_ca::{DevCa, Validity},
        secrets::SecretError,
        spiffe_id,
        x509::name_contents_rfc2253,
    },
};

/// The DER of the seed files: leaf, PKCS#8 key, root.
struct Seed {
    leaf: Vec<u8>,
    key: Vec<u8>,
    root: Vec<u8>,
}

/// Made once per process: a key pair cannot be committed. The layout is the same from run to
/// run (a P-256 key, one URI SAN, a 20-byte serial); a signature or serial one byte shorter can
/// shift later offsets, so a crash in this mode may need the artifact re-run a few times.
static SEED: LazyLock<Seed> = LazyLock::new(|| {
    let ca = DevCa::generate("cluster.local").expect("the dev CA generates a root");
    let w = ca
        .issue(
            "spiffe://cluster.local/ns/default/sa/fuzz",
            Validity::for_lifetime(std::time::Duration::from_secs(3600)),
        )
        .expect("the dev CA issues a workload certificate");
    let cert = |pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("the dev CA writes PEM certificates")
            .to_vec()
    };
    let key = PrivateKeyDer::from_pem_slice(w.key_pem.as_bytes())
        .expect("the dev CA writes a PEM key")
        .secret_der()
        .to_vec();
    Seed {
        leaf: cert(&w.chain_pem),
        key,
        root: cert(ca.root_pem()),
    }
});

const KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.int_in_range(0..=2u8) else {
        return;
    };
    match mode {
        0 => {
            let cut = u.arbitrary::<u16>().unwrap_or(0);
            let text = u.take_rest();
            let (chain, key) = text.split_at(usize::from(cut).min(text.len()));
            check(chain, key, text);
        }
        1 => {
            let label = KEY_LABELS[usize::from(u.int_in_range(0..=2u8).unwrap_or(0))];
            let cut = u.arbitrary::<u16>().unwrap_or(0);
            let der = u.take_rest();
            let (cert, key) = der.split_at(usize::from(cut).min(der.len()));
            let chain = pem("CERTIFICATE", cert);
            let roots = chain.clone() + &pem("CERTIFICATE", key);
            check(
                chain.as_bytes(),
                pem(label, key).as_bytes(),
                roots.as_bytes(),
            );
        }
        _ => {
            let seed = &*SEED;
            let (mut leaf, mut key, mut root) =
                (seed.leaf.clone(), seed.key.clone(), seed.root.clone());
            let mut mutated = false;
            for blob in [&mut leaf, &mut key, &mut root] {
                mutated |= mutate(&mut u, blob);
            }
            let chain = pem("CERTIFICATE", &leaf);
            let roots = pem("CERTIFICATE", &root);
            let ok = check(
                chain.as_bytes(),
                pem("PRIVATE KEY", &key).as_bytes(),
                roots.as_bytes(),
            );
            assert!(
                mutated || ok == (true, true),
                "the unmutated dev-ca files must parse and make an identity"
            );
        }
    }
});

/// Flips bytes and truncates `blob` as the input says; whether anything changed.
fn mutate(u: &mut Unstructured<'_>, blob: &mut Vec<u8>) -> bool {
    let flips = u.int_in_range(0..=4u8).unwrap_or(0);
    let mut changed = false;
    for _ in 0..flips {
        let (Ok(at), Ok(xor)) = (u.arbitrary::<u16>(), u.arbitrary::<u8>()) else {
            break;
        };
        if let Some(len) = blob.len().checked_sub(1) {
            blob[usize::from(at) % (len + 1)] ^= xor;
            changed |= xor != 0;
        }
    }
    if u.ratio(1, 8).unwrap_or(false) {
        let keep = usize::from(u.arbitrary::<u16>().unwrap_or(0)) % (blob.len() + 1);
        changed |= keep < blob.len();
        blob.truncate(keep);
    }
    changed
}

/// Parses the files as Skiff reads them and uses whatever parsed. Returns whether the chain and
/// key made an identity, and whether the roots parsed.
fn check(chain: &[u8], key: &[u8], roots: &[u8]) -> (bool, bool) {
    let mut identity = false;
    if let Ok(ck) = &parse_cert_key(chain, key) {
        // Whether the key is the certificate's is checked when the pair is put to use.
        match Identity::new(ck) {
            Ok(made) => {
                assert_eq!(made.leaf(), ck.chain.first());
                identity = true;
            }
            Err(SecretError::Mismatch(_)) => {}
            Err(e) => panic!("a parsed chain and key make no identity: {e}"),
        }
        let leaf = ck.chain.first().expect("a parsed chain has a leaf");
        let _ = spiffe_id(leaf);
        let parsed = webpki::EndEntityCert::try_from(leaf).expect("the leaf was parsed before");
        let _ = name_contents_rfc2253(parsed.subject());
    }
    let parsed_roots = parse_roots(roots);
    if let Ok(r) = &parsed_roots {
        TrustRoots::new(r).expect("parsed roots make trust anchors");
    }
    (identity, parsed_roots.is_ok())
}

/// PEM armour: base64 in 64-column lines.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
