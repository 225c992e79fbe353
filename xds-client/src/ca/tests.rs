use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};

use super::*;

const ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn config() -> CaConfig {
    CaConfig::new("istiod.istio-system.svc:15012", "/nonexistent/root.pem", ID)
}

/// A root and an intermediate under it.
struct Pki {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params, key)
}

fn pki() -> Pki {
    let (root_params, root_key) = ca("root");
    let root_pem = root_params.self_signed(&root_key).unwrap().pem();
    let root = Issuer::new(root_params, root_key);
    let (params, key) = ca("intermediate");
    let intermediate_pem = params.signed_by(&key, &root).unwrap().pem();
    Pki {
        root_pem,
        intermediate_pem,
        intermediate: Issuer::new(params, key),
    }
}

/// A leaf for `key` naming `id`, valid until `not_after`.
fn leaf(pki: &Pki, key: &KeyPair, id: &str, not_after: SystemTime) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.not_before = (SystemTime::now() - Duration::from_secs(60)).into();
    params.not_after = not_after.into();
    params.signed_by(key, &pki.intermediate).unwrap().pem()
}

fn in_an_hour() -> SystemTime {
    // Whole seconds, as a certificate holds them.
    let t = SystemTime::now() + Duration::from_secs(3600);
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn validate_accepts_the_defaults_and_names_what_is_wrong() {
    config().validate().unwrap();
    for id in [
        "spiffe://cluster.local",
        "spiffe://cluster.local/",
        "spiffe:///ns/a/sa/b",
        "https://cluster.local/ns/a/sa/b",
        "spiffe://cluster.local/ns/a b/sa/c",
        "",
    ] {
        let mut c = config();
        c.spiffe_id = id.into();
        let err = c.validate().unwrap_err();
        assert!(matches!(err, CaError::SpiffeId { .. }), "{id:?}: {err}");
        assert!(err.to_string().contains(&format!("{id:?}")), "{err}");
    }
    let mut c = config();
    c.key = KeyKind::Rsa2048;
    let err = c.validate().unwrap_err();
    assert!(
        err.to_string().contains("RSA 2048 keys are not supported"),
        "{err}"
    );
    let mut c = config();
    c.lifetime = Duration::from_millis(999);
    assert!(matches!(c.validate(), Err(CaError::Lifetime { .. })));
    for address in [
        "istiod.istio-system.svc",
        "https://istiod:15012",
        "bad host:1",
    ] {
        let mut c = config();
        c.address = address.into();
        let err = c.validate().unwrap_err();
        assert!(matches!(err, CaError::Address { .. }), "{address}: {err}");
    }
    let mut c = config();
    c.cluster_id = Some("line\nbreak".into());
    assert!(matches!(c.validate(), Err(CaError::ClusterId { .. })));
}

#[test]
fn the_csr_has_an_empty_subject_and_only_the_spiffe_id() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = csr_pem(&key, ID).unwrap();
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{pem}"
    );
    let der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
    let csr = der::csr(der.as_ref()).unwrap();
    assert!(csr.subject_empty);
    assert_eq!(csr.uri_sans, vec![ID]);
    assert_eq!(csr.spki.raw, key.subject_public_key_info().as_slice());
}

#[test]
fn a_good_answer_is_split_into_chain_key_and_root() {
    let pki = pki();
    let key = KeyPair::generate().unwrap();
    let not_after = in_an_hour();
    let leaf_pem = leaf(&pki, &key, ID, not_after);
    // Istio puts the intermediates in one element between the leaf and the root.
    let answer = vec![
        leaf_pem.clone(),
        pki.intermediate_pem.clone(),
        pki.root_pem.clone(),
    ];
    let issued = issued(&config(), &key, answer).unwrap();
    assert_eq!(
        issued.chain_pem,
        format!("{leaf_pem}{}", pki.intermediate_pem)
    );
    assert_eq!(issued.root_pem, pki.root_pem);
    assert_eq!(issued.key_pem, key.serialize_pem());
    assert_eq!(issued.not_after, not_after);
    assert!(
        !format!("{issued:?}").contains("PRIVATE KEY"),
        "the key is not logged"
    );
}

#[test]
fn unusable_answers_are_refused_with_the_reason() {
    let pki = pki();
    let key = KeyPair::generate().unwrap();
    let good = leaf(&pki, &key, ID, in_an_hour());
    let other_key = leaf(&pki, &KeyPair::generate().unwrap(), ID, in_an_hour());
    let other_id = leaf(
        &pki,
        &key,
        "spiffe://cluster.local/ns/shop/sa/db",
        in_an_hour(),
    );
    let expired = leaf(&pki, &key, ID, SystemTime::now() - Duration::from_secs(10));
    let root = pki.root_pem.clone();
    for (answer, problem) in [
        (vec![], "0 PEM element(s)"),
        (vec![good.clone()], "1 PEM element(s)"),
        (
            vec!["junk".into(), root.clone()],
            "cert_chain[0] holds no certificate",
        ),
        (
            vec![good.clone(), "".into()],
            "cert_chain[1] holds no certificate",
        ),
        (
            vec![
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
                root.clone(),
            ],
            "cert_chain[0] is not PEM",
        ),
        (
            vec![other_key, root.clone()],
            "not for the key of the request",
        ),
        (vec![other_id, root.clone()], "sa/db"),
        (vec![expired, root.clone()], "expired"),
    ] {
        let err = issued(&config(), &key, answer).unwrap_err();
        assert!(matches!(err, CaError::Response { .. }), "{err}");
        assert!(err.to_string().contains(problem), "want {problem:?}: {err}");
        assert!(
            err.to_string().contains("istiod.istio-system.svc:15012"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn local_problems_fail_before_any_connection() {
    let mut c = config();
    c.key = KeyKind::Rsa2048;
    assert!(matches!(
        request_certificate(&c).await,
        Err(CaError::UnsupportedKey { .. })
    ));
    let mut c = config();
    c.token_file = Some("/nonexistent/istio-token".into());
    let err = request_certificate(&c).await.unwrap_err();
    assert!(matches!(err, CaError::Token { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/istio-token"),
        "{err}"
    );
    let err = request_certificate(&config()).await.unwrap_err();
    assert!(matches!(err, CaError::RootFile { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/root.pem"), "{err}");
}
