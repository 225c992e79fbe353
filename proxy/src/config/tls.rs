//! TLS settings: `DownstreamTlsContext` on filter chains, `UpstreamTlsContext` on clusters, and
//! the secrets they name (`static_resources.secrets`, SDS `Secret` resources).
//!
//! Certificates and keys are parsed here (PEM to DER), so a bad one is an error at load time;
//! the run-time `tls` module turns the DER into rustls objects.

use std::{fmt, path::PathBuf, sync::Arc};

use envoy_types::pb::envoy::{
    config::core::v3::{ConfigSource, DataSource, config_source::ConfigSourceSpecifier},
    extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
        Secret as XdsSecret, SubjectAltNameMatcher, TlsCertificate, TlsParameters,
        UpstreamTlsContext, common_tls_context::ValidationContextType, secret,
        subject_alt_name_matcher::SanType, tls_parameters::TlsProtocol,
    },
};
use rustls::CipherSuite;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{
    StringMatcher,
    error::{Ctx, Path, reject_unsupported},
    matcher::string_matcher,
};

/// TLS termination on a filter chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownstreamTls {
    /// Settings shared with the upstream side.
    pub common: TlsCommon,
    /// A client certificate is required (Istio's STRICT and PERMISSIVE mTLS chains).
    pub require_client_certificate: bool,
    /// Session resumption by the server's cache and tickets is off.
    pub disable_resumption: bool,
    /// The client's cipher order wins (TLS 1.2 only).
    pub prefer_client_ciphers: bool,
}

/// TLS origination to a cluster's hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Settings shared with the downstream side.
    pub common: TlsCommon,
    /// The SNI to send (Istio: `outbound_.<port>_.<subset>_.<host>`).
    pub sni: Option<String>,
}

/// `CommonTlsContext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCommon {
    /// This side's certificate and key.
    pub certificate: Option<CertificateSource>,
    /// How the peer's certificate is checked (`None`: it is not, as in Envoy).
    pub validation: Option<Validation>,
    /// ALPN protocols offered (client) or accepted (server), in preference order.
    pub alpn: Vec<String>,
    /// The lowest TLS version allowed.
    pub min_version: TlsVersion,
    /// The highest TLS version allowed.
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites, in preference order (`None`: rustls's defaults, which are all
    /// ECDHE with AEAD). TLS 1.3 suites are not configurable, as in Envoy.
    pub cipher_suites: Option<Vec<CipherSuite>>,
}

/// A TLS protocol version Skiff speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// Where a certificate and key come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateSource {
    /// A secret by name (SDS, a local provider, or `static_resources.secrets`).
    Secret(SecretRef),
    /// `tls_certificates` in the context itself.
    Inline(Arc<CertKey>),
}

/// Where trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootsSource {
    /// A secret by name (Istio's `ROOTCA`).
    Secret(SecretRef),
    /// `trusted_ca` in the context itself.
    Inline(Arc<Roots>),
}

/// A secret named by an `SdsSecretConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretRef {
    /// The secret's name (`default`, `ROOTCA`, ...).
    pub name: Arc<str>,
    /// Who serves it.
    pub source: SecretSource,
}

/// Who serves a named secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretSource {
    /// `static_resources.secrets` (an `SdsSecretConfig` without `sds_config`).
    Static,
    /// The ADS stream (`sds_config: {ads: {}}`).
    Ads,
    /// A gRPC SDS server reached through this cluster (Istio's `sds-grpc`, pilot-agent's Unix
    /// socket).
    Cluster(Arc<str>),
}

/// How a peer certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// The roots it must chain to (`None`: only `SecretRef`s merged at run time may add them;
    /// without any, every peer certificate is refused).
    pub roots: Option<RootsSource>,
    /// At least one subject alternative name must match one of these (none: any name).
    pub subject_alt_names: Vec<SanMatcher>,
}

/// One `match_typed_subject_alt_names` (or legacy `match_subject_alt_names`) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SanMatcher {
    /// Which SANs it looks at (`None`: DNS and URI, the legacy field's behaviour for the kinds
    /// Skiff reads).
    pub kind: Option<SanKind>,
    /// The comparison.
    pub matcher: StringMatcher,
}

/// A subject alternative name type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanKind {
    /// A DNS name.
    Dns,
    /// A URI (SPIFFE IDs).
    Uri,
}

/// A certificate chain and its private key, as DER.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKey {
    /// The leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key (PKCS#8, SEC1 or PKCS#1), never shown.
    pub key: Arc<PrivateKeyDer<'static>>,
}

/// Trusted root certificates, as DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// Each root certificate.
    pub certificates: Vec<CertificateDer<'static>>,
}

/// A secret's content: an SDS `Secret` or a `static_resources.secrets` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretData {
    /// `tls_certificate`.
    Certificate(Arc<CertKey>),
    /// `validation_context` (trusted roots; Istio's `ROOTCA`).
    Roots(Arc<Roots>),
}

/// A named secret from `static_resources.secrets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedSecret {
    /// Its name.
    pub name: Arc<str>,
    /// Its content.
    pub data: SecretData,
    /// The files it was read from, when every part of it is a file: they are watched and the
    /// secret reloaded when they change.
    pub files: Option<SecretFiles>,
}

/// The files a static secret is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretFiles {
    /// `tls_certificate` with a file chain and a file key.
    Certificate {
        /// The PEM chain.
        chain: PathBuf,
        /// The PEM key.
        key: PathBuf,
    },
    /// `validation_context` with a file `trusted_ca`.
    Roots {
        /// The PEM roots.
        ca: PathBuf,
    },
}

// === impl CertKey ===

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKey")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

// === impl DownstreamTls ===

impl DownstreamTls {
    /// Converts a `DownstreamTlsContext`.
    pub(crate) fn convert(ctx: &mut Ctx, path: &Path, t: &DownstreamTlsContext) -> Option<Self> {
        let before = ctx.count();
        let DownstreamTlsContext {
            common_tls_context,
            require_client_certificate,
            require_sni,
            disable_stateful_session_resumption,
            session_timeout,
            ocsp_staple_policy,
            full_scan_certs_on_sni_mismatch: _, // one certificate: there is nothing to scan
            prefer_client_ciphers,
            session_ticket_keys_type,
        } = t;
        let require_sni = require_sni.as_ref().is_some_and(|b| b.value);
        let ocsp_staple_policy = *ocsp_staple_policy != 0;
        reject_unsupported!(
            ctx,
            path,
            require_sni,
            session_timeout,
            ocsp_staple_policy,
            session_ticket_keys_type
        );
        let common = TlsCommon::convert(
            ctx,
            &path.field("common_tls_context"),
            common_tls_context.as_ref(),
            TlsVersion::V1_3,
        )?;
        if common.certificate.is_none() {
            ctx.error(
                &path.field("common_tls_context"),
                "a TLS server needs a certificate: tls_certificates or \
                 tls_certificate_sds_secret_configs",
            );
        }
        let require_client_certificate =
            require_client_certificate.as_ref().is_some_and(|b| b.value);
        if require_client_certificate && common.validation.is_none() {
            ctx.error(
                &path.field("require_client_certificate"),
                "requiring a client certificate needs a validation context to check it against",
            );
        }
        (ctx.count() == before).then_some(Self {
            common,
            require_client_certificate,
            disable_resumption: *disable_stateful_session_resumption,
            prefer_client_ciphers: *prefer_client_ciphers,
        })
    }
}

// === impl UpstreamTls ===

impl UpstreamTls {
    /// Converts an `UpstreamTlsContext`.
    #[allow(deprecated)] // every field is named, deprecated ones too
    pub(crate) fn convert(ctx: &mut Ctx, path: &Path, t: &UpstreamTlsContext) -> Option<Self> {
        let before = ctx.count();
        let UpstreamTlsContext {
            common_tls_context,
            sni,
            auto_host_sni,
            auto_sni_san_validation,
            allow_renegotiation,
            max_session_keys: _, // rustls keeps its own bounded session cache
            enforce_rsa_key_usage,
        } = t;
        reject_unsupported!(
            ctx,
            path,
            auto_host_sni,
            auto_sni_san_validation,
            allow_renegotiation
        );
        if enforce_rsa_key_usage.as_ref().is_some_and(|b| b.value) {
            // rustls/webpki do not check the key usage bits of an RSA server certificate.
            ctx.warn(
                &path.field("enforce_rsa_key_usage"),
                "not enforced by Skiff: the key usage bits of RSA server certificates are not \
                 checked",
            );
        }
        // Envoy's client default stops at TLS 1.2; Istio sets 1.3 explicitly.
        let common = TlsCommon::convert(
            ctx,
            &path.field("common_tls_context"),
            common_tls_context.as_ref(),
            TlsVersion::V1_2,
        )?;
        if common.validation.is_none() {
            ctx.warn(
                path,
                "no validation context: the server's certificate is not verified (as in Envoy)",
            );
        }
        if !sni.is_empty() && rustls_pki_types::ServerName::try_from(sni.as_str()).is_err() {
            ctx.error(
                &path.field("sni"),
                format!("'{sni}' is not a valid server name"),
            );
        }
        (ctx.count() == before).then_some(Self {
            common,
            sni: (!sni.is_empty()).then(|| sni.clone()),
        })
    }
}

// === impl TlsCommon ===

impl TlsCommon {
    /// The secrets this context names.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretRef> {
        let cert = match &self.certificate {
            Some(CertificateSource::Secret(s)) => Some(s),
            _ => None,
        };
        let roots = match self.validation.as_ref().and_then(|v| v.roots.as_ref()) {
            Some(RootsSource::Secret(s)) => Some(s),
            _ => None,
        };
        cert.into_iter().chain(roots)
    }

    #[allow(deprecated)] // every field is named, deprecated ones too
    fn convert(
        ctx: &mut Ctx,
        path: &Path,
        c: Option<&CommonTlsContext>,
        default_max: TlsVersion,
    ) -> Option<Self> {
        let before = ctx.count();
        let default = CommonTlsContext::default();
        let CommonTlsContext {
            tls_params,
            tls_certificates,
            tls_certificate_sds_secret_configs,
            tls_certificate_provider_instance,
            custom_tls_certificate_selector,
            tls_certificate_certificate_provider,
            tls_certificate_certificate_provider_instance,
            alpn_protocols,
            custom_handshaker,
            key_log,
            validation_context_type,
        } = c.unwrap_or(&default);
        reject_unsupported!(
            ctx,
            path,
            tls_certificate_provider_instance,
            custom_tls_certificate_selector,
            tls_certificate_certificate_provider,
            tls_certificate_certificate_provider_instance,
            custom_handshaker,
            key_log
        );
        let (min_version, max_version, cipher_suites) = params(
            ctx,
            &path.field("tls_params"),
            tls_params.as_ref(),
            default_max,
        );
        let certificate = match (
            tls_certificates.as_slice(),
            tls_certificate_sds_secret_configs.as_slice(),
        ) {
            ([], []) => None,
            ([one], []) => certificate(ctx, &path.field("tls_certificates").index(0), one)
                .map(|c| CertificateSource::Inline(Arc::new(c))),
            ([], [one]) => secret_ref(
                ctx,
                &path.field("tls_certificate_sds_secret_configs").index(0),
                one,
            )
            .map(CertificateSource::Secret),
            _ => {
                ctx.error(
                    path,
                    "Skiff serves one certificate per context: give one entry in tls_certificates \
                     or tls_certificate_sds_secret_configs",
                );
                None
            }
        };
        let validation = validation_context_type.as_ref().and_then(|v| match v {
            ValidationContextType::ValidationContext(v) => {
                validation(ctx, &path.field("validation_context"), v, None)
            }
            ValidationContextType::ValidationContextSdsSecretConfig(s) => {
                let p = path.field("validation_context_sds_secret_config");
                secret_ref(ctx, &p, s).map(|r| Validation {
                    roots: Some(RootsSource::Secret(r)),
                    subject_alt_names: Vec::new(),
                })
            }
            ValidationContextType::CombinedValidationContext(c) => {
                let p = path.field("combined_validation_context");
                #[allow(deprecated)]
                let (
                    validation_context_certificate_provider,
                    validation_context_certificate_provider_instance,
                ) = (
                    &c.validation_context_certificate_provider,
                    &c.validation_context_certificate_provider_instance,
                );
                reject_unsupported!(
                    ctx,
                    &p,
                    validation_context_certificate_provider,
                    validation_context_certificate_provider_instance
                );
                let sds = match &c.validation_context_sds_secret_config {
                    Some(s) => secret_ref(ctx, &p.field("validation_context_sds_secret_config"), s),
                    None => {
                        ctx.error(
                            &p.field("validation_context_sds_secret_config"),
                            "a combined validation context needs its SDS secret",
                        );
                        None
                    }
                }?;
                let default = CertificateValidationContext::default();
                validation(
                    ctx,
                    &p.field("default_validation_context"),
                    c.default_validation_context.as_ref().unwrap_or(&default),
                    Some(sds),
                )
            }
            other => {
                ctx.error(
                    path,
                    format!("validation context {other:?} is not supported by Skiff"),
                );
                None
            }
        });
        let alpn = alpn_protocols
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                if a.is_empty() || a.len() > 255 {
                    ctx.error(
                        &path.field("alpn_protocols").index(i),
                        "an ALPN protocol name is 1 to 255 bytes",
                    );
                    return None;
                }
                Some(a.clone())
            })
            .collect();
        (ctx.count() == before).then_some(Self {
            certificate,
            validation,
            alpn,
            min_version,
            max_version,
            cipher_suites,
        })
    }
}

/// `tls_params`: the version range and TLS 1.2 cipher suites.
fn params(
    ctx: &mut Ctx,
    path: &Path,
    p: Option<&TlsParameters>,
    default_max: TlsVersion,
) -> (TlsVersion, TlsVersion, Option<Vec<CipherSuite>>) {
    let default = TlsParameters::default();
    let TlsParameters {
        tls_minimum_protocol_version,
        tls_maximum_protocol_version,
        cipher_suites,
        ecdh_curves,
        signature_algorithms,
        compliance_policies,
    } = p.unwrap_or(&default);
    reject_unsupported!(
        ctx,
        path,
        ecdh_curves,
        signature_algorithms,
        compliance_policies
    );
    let version = |ctx: &mut Ctx, field: &str, v: i32, default: TlsVersion, low: bool| match (
        TlsProtocol::try_from(v),
        low,
    ) {
        (Ok(TlsProtocol::TlsAuto), _) => default,
        (Ok(TlsProtocol::TlSv12), _) => TlsVersion::V1_2,
        (Ok(TlsProtocol::TlSv13), _) => TlsVersion::V1_3,
        (Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11), true) => {
            ctx.warn(
                &path.field(field),
                "TLS 1.0 and 1.1 are never offered by Skiff (rustls); the minimum is TLS 1.2",
            );
            TlsVersion::V1_2
        }
        (Ok(TlsProtocol::TlSv10 | TlsProtocol::TlSv11), false) | (Err(_), _) => {
            ctx.error(
                &path.field(field),
                format!("TLS version {v} is not supported by Skiff (TLSv1_2, TLSv1_3)"),
            );
            default
        }
    };
    let min = version(
        ctx,
        "tls_minimum_protocol_version",
        *tls_minimum_protocol_version,
        TlsVersion::V1_2,
        true,
    );
    let mut max = version(
        ctx,
        "tls_maximum_protocol_version",
        *tls_maximum_protocol_version,
        default_max,
        false,
    );
    if max < min {
        ctx.error(
            path,
            format!("the maximum TLS version {max:?} is below the minimum {min:?}"),
        );
        max = min;
    }
    if cipher_suites.is_empty() {
        return (min, max, None);
    }
    let cp = path.field("cipher_suites");
    let mut suites = Vec::new();
    let mut dropped = Vec::new();
    for (i, entry) in cipher_suites.iter().enumerate() {
        // BoringSSL's equal-preference groups: "[A|B]".
        let names = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .map_or_else(|| vec![entry.as_str()], |g| g.split('|').collect());
        for name in names {
            match cipher_suite(name) {
                Cipher::Supported(s) => {
                    if !suites.contains(&s) {
                        suites.push(s);
                    }
                }
                Cipher::Unsupported => dropped.push(name.to_string()),
                Cipher::Unknown => {
                    ctx.error(&cp.index(i), format!("unknown cipher suite '{name}'"))
                }
            }
        }
    }
    if !dropped.is_empty() {
        ctx.warn(
            &cp,
            format!(
                "cipher suites {} are not offered: rustls implements only ECDHE key exchange \
                 with AEAD ciphers",
                dropped.join(", ")
            ),
        );
    }
    if suites.is_empty() && min == TlsVersion::V1_2 {
        if max == TlsVersion::V1_2 {
            ctx.error(
                &cp,
                "none of these cipher suites is supported by Skiff, so TLS 1.2 cannot be spoken \
                 (supported: ECDHE-{ECDSA,RSA}-{AES128-GCM-SHA256,AES256-GCM-SHA384,\
                 CHACHA20-POLY1305})",
            );
        } else {
            ctx.warn(
                &cp,
                "none of these cipher suites is supported by Skiff: only TLS 1.3 is offered",
            );
            return (TlsVersion::V1_3, max, Some(suites));
        }
    }
    (min, max, Some(suites))
}

enum Cipher {
    Supported(CipherSuite),
    /// Known to OpenSSL/BoringSSL, not implemented by rustls (static RSA, CBC, ...).
    Unsupported,
    Unknown,
}

/// OpenSSL's name of a TLS 1.2 cipher suite to rustls's.
fn cipher_suite(name: &str) -> Cipher {
    use CipherSuite as C;
    Cipher::Supported(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES256-GCM-SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-CHACHA20-POLY1305" => C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "AES128-GCM-SHA256"
        | "AES256-GCM-SHA384"
        | "AES128-SHA"
        | "AES256-SHA"
        | "ECDHE-ECDSA-AES128-SHA"
        | "ECDHE-RSA-AES128-SHA"
        | "ECDHE-ECDSA-AES256-SHA"
        | "ECDHE-RSA-AES256-SHA"
        | "ECDHE-PSK-AES128-CBC-SHA"
        | "ECDHE-PSK-AES256-CBC-SHA"
        | "ECDHE-PSK-CHACHA20-POLY1305"
        | "PSK-AES128-CBC-SHA"
        | "PSK-AES256-CBC-SHA"
        | "DES-CBC3-SHA" => return Cipher::Unsupported,
        _ => return Cipher::Unknown,
    })
}

/// An `SdsSecretConfig`: the name, and ADS, a gRPC SDS cluster, or the static secrets.
fn secret_ref(ctx: &mut Ctx, path: &Path, s: &SdsSecretConfig) -> Option<SecretRef> {
    let SdsSecretConfig { name, sds_config } = s;
    if name.is_empty() {
        ctx.error(&path.field("name"), "a secret needs a name");
        return None;
    }
    let source = match sds_config {
        None => SecretSource::Static,
        Some(c) => sds_source(ctx, &path.field("sds_config"), c)?,
    };
    Some(SecretRef {
        name: name.as_str().into(),
        source,
    })
}

/// The `ConfigSource` of a secret: `ads: {}`, or a gRPC `api_config_source` naming one cluster
/// (Istio's `sds-grpc`). Its initial fetch timeout is not read: listeners and clusters from
/// LDS/CDS wait for their secrets for at most the default 15 s whatever it says (Istio's `0s`,
/// for ever, included), then serve and fail the handshakes that need the missing secret,
/// counted as `ssl.no_certificate`.
fn sds_source(ctx: &mut Ctx, path: &Path, c: &ConfigSource) -> Option<SecretSource> {
    use envoy_types::pb::envoy::config::core::v3::{
        ApiConfigSource, api_config_source::ApiType, grpc_service::TargetSpecifier,
    };
    let ConfigSource {
        authorities,
        initial_fetch_timeout: _, // see above: warming waits the default time
        resource_api_version: _,  // V3 is the only one there is
        config_source_specifier,
    } = c;
    reject_unsupported!(ctx, path, authorities);
    match config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => Some(SecretSource::Ads),
        Some(ConfigSourceSpecifier::ApiConfigSource(a)) => {
            let p = path.field("api_config_source");
            let ApiConfigSource {
                api_type,
                transport_api_version: _, // V3 is the only one there is
                cluster_names,
                grpc_services,
                refresh_delay: _,                  // REST only
                request_timeout: _,                // REST only
                rate_limit_settings: _,            // Skiff never rate-limits its own requests
                set_node_on_first_message_only: _, // the node is always sent first
                config_validators,
            } = a;
            reject_unsupported!(ctx, &p, cluster_names, config_validators);
            if *api_type != ApiType::Grpc as i32 {
                ctx.error(
                    &p.field("api_type"),
                    "secrets are fetched with GRPC only (state of the world)",
                );
                return None;
            }
            match grpc_services.as_slice() {
                [one] => match &one.target_specifier {
                    Some(TargetSpecifier::EnvoyGrpc(g)) if !g.cluster_name.is_empty() => {
                        Some(SecretSource::Cluster(g.cluster_name.as_str().into()))
                    }
                    _ => {
                        ctx.error(
                            &p.field("grpc_services").index(0),
                            "an SDS server is named by envoy_grpc.cluster_name",
                        );
                        None
                    }
                },
                _ => {
                    ctx.error(
                        &p.field("grpc_services"),
                        "exactly one gRPC service is supported",
                    );
                    None
                }
            }
        }
        _ => {
            ctx.error(
                path,
                "secrets come from ads: {} or a GRPC api_config_source (not files or REST)",
            );
            None
        }
    }
}

/// A `CertificateValidationContext`, with the SDS secret of a combined context.
fn validation(
    ctx: &mut Ctx,
    path: &Path,
    v: &CertificateValidationContext,
    sds: Option<SecretRef>,
) -> Option<Validation> {
    #[allow(deprecated)]
    let CertificateValidationContext {
        trusted_ca,
        ca_certificate_provider_instance,
        system_root_certs,
        watched_directory,
        verify_certificate_spki,
        verify_certificate_hash,
        match_typed_subject_alt_names,
        match_subject_alt_names,
        require_signed_certificate_timestamp,
        crl,
        allow_expired_certificate,
        trust_chain_verification,
        custom_validator_config,
        only_verify_leaf_cert_crl: _, // no CRLs
        max_verify_depth,
        suppress_client_ca_list: _, // Skiff never sends a CA list
    } = v;
    reject_unsupported!(
        ctx,
        path,
        ca_certificate_provider_instance,
        system_root_certs,
        watched_directory,
        verify_certificate_spki,
        verify_certificate_hash,
        require_signed_certificate_timestamp,
        crl,
        allow_expired_certificate,
        trust_chain_verification,
        custom_validator_config,
        max_verify_depth
    );
    let before = ctx.count();
    let inline = trusted_ca
        .as_ref()
        .and_then(|ca| data_source(ctx, &path.field("trusted_ca"), ca))
        .and_then(|pem| roots(ctx, &path.field("trusted_ca"), &pem));
    let roots = match (inline, sds) {
        (Some(_), Some(_)) => {
            ctx.error(
                &path.field("trusted_ca"),
                "trusted_ca and an SDS validation secret cannot be combined",
            );
            None
        }
        (Some(r), None) => Some(RootsSource::Inline(Arc::new(r))),
        (None, Some(s)) => Some(RootsSource::Secret(s)),
        (None, None) => None,
    };
    let mut subject_alt_names = Vec::new();
    for (i, m) in match_typed_subject_alt_names.iter().enumerate() {
        let p = path.field("match_typed_subject_alt_names").index(i);
        if let Some(m) = san_matcher(ctx, &p, m) {
            subject_alt_names.push(m);
        }
    }
    for (i, m) in match_subject_alt_names.iter().enumerate() {
        let p = path.field("match_subject_alt_names").index(i);
        if let Some(matcher) = string_matcher(ctx, &p, m) {
            subject_alt_names.push(SanMatcher {
                kind: None,
                matcher,
            });
        }
    }
    if roots.is_none() && ctx.count() == before {
        ctx.error(
            path,
            "a validation context needs trusted_ca (or an SDS validation secret): Skiff does not \
             accept peers without checking their chain",
        );
    }
    (ctx.count() == before).then_some(Validation {
        roots,
        subject_alt_names,
    })
}

fn san_matcher(ctx: &mut Ctx, path: &Path, m: &SubjectAltNameMatcher) -> Option<SanMatcher> {
    let SubjectAltNameMatcher {
        san_type,
        matcher,
        oid,
    } = m;
    reject_unsupported!(ctx, path, oid);
    let kind = match SanType::try_from(*san_type) {
        Ok(SanType::Dns) => SanKind::Dns,
        Ok(SanType::Uri) => SanKind::Uri,
        _ => {
            ctx.error(
                &path.field("san_type"),
                format!("SAN type {san_type} is not supported by Skiff (DNS, URI)"),
            );
            return None;
        }
    };
    let Some(matcher) = matcher else {
        ctx.error(&path.field("matcher"), "a SAN matcher needs a matcher");
        return None;
    };
    Some(SanMatcher {
        kind: Some(kind),
        matcher: string_matcher(ctx, &path.field("matcher"), matcher)?,
    })
}

/// A `TlsCertificate`: a PEM chain and key.
fn certificate(ctx: &mut Ctx, path: &Path, t: &TlsCertificate) -> Option<CertKey> {
    let TlsCertificate {
        certificate_chain,
        private_key,
        pkcs12,
        watched_directory,
        private_key_provider,
        password,
        ocsp_staple,
        signed_certificate_timestamp,
        tls_params,
    } = t;
    reject_unsupported!(
        ctx,
        path,
        pkcs12,
        watched_directory,
        private_key_provider,
        password,
        ocsp_staple,
        signed_certificate_timestamp,
        tls_params
    );
    let need = |ctx: &mut Ctx, field: &str, d: &Option<DataSource>| match d {
        Some(d) => data_source(ctx, &path.field(field), d),
        None => {
            ctx.error(&path.field(field), "required");
            None
        }
    };
    let chain = need(ctx, "certificate_chain", certificate_chain);
    let key = need(ctx, "private_key", private_key);
    cert_key(ctx, path, &chain?, &key?)
}

/// Parses a PEM certificate chain and a PEM private key.
pub(crate) fn cert_key(ctx: &mut Ctx, path: &Path, chain: &[u8], key: &[u8]) -> Option<CertKey> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(chain).collect();
    let chain = match certs {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            ctx.error(
                &path.field("certificate_chain"),
                "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
            );
            return None;
        }
        Err(e) => {
            ctx.error(
                &path.field("certificate_chain"),
                format!("bad PEM certificate: {e}"),
            );
            return None;
        }
    };
    if let Err(e) = webpki::EndEntityCert::try_from(&chain[0]) {
        ctx.error(
            &path.field("certificate_chain"),
            format!("the leaf certificate cannot be parsed: {e}"),
        );
        return None;
    }
    let key = match PrivateKeyDer::from_pem_slice(key) {
        Ok(k) => k,
        Err(e) => {
            ctx.error(
                &path.field("private_key"),
                format!("bad PEM private key: {e}"),
            );
            return None;
        }
    };
    if let Err(e) = rustls::crypto::ring::sign::any_supported_type(&key) {
        ctx.error(
            &path.field("private_key"),
            format!("unusable private key: {e}"),
        );
        return None;
    }
    Some(CertKey {
        chain,
        key: Arc::new(key),
    })
}

/// Parses PEM root certificates; each must be usable as a trust anchor.
pub(crate) fn roots(ctx: &mut Ctx, path: &Path, pem: &[u8]) -> Option<Roots> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => {
            for (i, cert) in c.iter().enumerate() {
                if let Err(e) = webpki::anchor_from_trusted_cert(cert) {
                    ctx.error(path, format!("root certificate {i} cannot be used: {e}"));
                    return None;
                }
            }
            Some(Roots { certificates: c })
        }
        Ok(_) => {
            ctx.error(path, "no PEM certificate found");
            None
        }
        Err(e) => {
            ctx.error(path, format!("bad PEM certificate: {e}"));
            None
        }
    }
}

/// Reads a `DataSource`: a file (read now, as Envoy does), inline bytes or an inline string.
fn data_source(ctx: &mut Ctx, path: &Path, d: &DataSource) -> Option<Vec<u8>> {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    let DataSource {
        watched_directory,
        specifier,
    } = d;
    reject_unsupported!(ctx, path, watched_directory);
    match specifier {
        Some(Specifier::Filename(f)) => match std::fs::read(f) {
            Ok(b) => Some(b),
            Err(e) => {
                ctx.error(&path.field("filename"), format!("cannot read '{f}': {e}"));
                None
            }
        },
        Some(Specifier::InlineBytes(b)) => Some(b.clone()),
        Some(Specifier::InlineString(s)) => Some(s.clone().into_bytes()),
        Some(Specifier::EnvironmentVariable(v)) => match std::env::var(v) {
            Ok(s) => Some(s.into_bytes()),
            Err(_) => {
                ctx.error(
                    &path.field("environment_variable"),
                    format!("environment variable '{v}' is not set"),
                );
                None
            }
        },
        None => {
            ctx.error(
                path,
                "one of filename, inline_bytes, inline_string is required",
            );
            None
        }
    }
}

// === impl SecretData ===

impl SecretData {
    /// Converts an SDS `Secret` (or a `static_resources.secrets` entry).
    pub(crate) fn convert(ctx: &mut Ctx, path: &Path, s: &XdsSecret) -> Option<Self> {
        match &s.r#type {
            Some(secret::Type::TlsCertificate(t)) => {
                certificate(ctx, &path.field("tls_certificate"), t)
                    .map(|c| Self::Certificate(Arc::new(c)))
            }
            Some(secret::Type::ValidationContext(v)) => {
                let p = path.field("validation_context");
                let mut inner = v.clone();
                let ca = inner.trusted_ca.take();
                // Matchers in a secret would merge into a combined context; Istio's ROOTCA
                // carries roots only, and so must these.
                if inner != CertificateValidationContext::default() {
                    ctx.error(&p, "a validation secret may carry trusted_ca only in Skiff");
                    return None;
                }
                let Some(ca) = ca else {
                    ctx.error(&p.field("trusted_ca"), "required");
                    return None;
                };
                let pem = data_source(ctx, &p.field("trusted_ca"), &ca)?;
                roots(ctx, &p.field("trusted_ca"), &pem).map(|r| Self::Roots(Arc::new(r)))
            }
            Some(secret::Type::SessionTicketKeys(_)) => {
                ctx.error(&path.field("session_ticket_keys"), "not supported by Skiff");
                None
            }
            Some(secret::Type::GenericSecret(_)) => {
                ctx.error(&path.field("generic_secret"), "not supported by Skiff");
                None
            }
            None => {
                ctx.error(path, "a secret needs tls_certificate or validation_context");
                None
            }
        }
    }
}

/// `static_resources.secrets`.
pub(crate) fn static_secrets(
    ctx: &mut Ctx,
    path: &Path,
    secrets: &[XdsSecret],
) -> Vec<NamedSecret> {
    let mut out: Vec<NamedSecret> = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        let p = path.index(i);
        if s.name.is_empty() {
            ctx.error(&p.field("name"), "a secret needs a name");
            continue;
        }
        if out.iter().any(|o| *o.name == *s.name) {
            ctx.error(&p.field("name"), format!("duplicate secret '{}'", s.name));
            continue;
        }
        if let Some(data) = SecretData::convert(ctx, &p, s) {
            out.push(NamedSecret {
                name: s.name.as_str().into(),
                data,
                files: secret_files(s),
            });
        }
    }
    out
}

/// The files a secret is read from, when all its parts are files.
fn secret_files(s: &XdsSecret) -> Option<SecretFiles> {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    let file = |d: &Option<DataSource>| match d.as_ref()?.specifier.as_ref()? {
        Specifier::Filename(f) => Some(PathBuf::from(f)),
        _ => None,
    };
    match s.r#type.as_ref()? {
        secret::Type::TlsCertificate(t) => Some(SecretFiles::Certificate {
            chain: file(&t.certificate_chain)?,
            key: file(&t.private_key)?,
        }),
        secret::Type::ValidationContext(v) => Some(SecretFiles::Roots {
            ca: file(&v.trusted_ca)?,
        }),
        _ => None,
    }
}

// === impl SecretFiles ===

impl SecretFiles {
    /// The files, to watch.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            SecretFiles::Certificate { chain, key } => vec![chain.clone(), key.clone()],
            SecretFiles::Roots { ca } => vec![ca.clone()],
        }
    }

    /// Reads and parses the files again.
    pub fn read(&self) -> Result<SecretData, String> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| format!("cannot read '{}': {e}", p.display()))
        };
        match self {
            SecretFiles::Certificate { chain, key } => parse_cert_key(&read(chain)?, &read(key)?)
                .map(|c| SecretData::Certificate(Arc::new(c))),
            SecretFiles::Roots { ca } => {
                parse_roots(&read(ca)?).map(|r| SecretData::Roots(Arc::new(r)))
            }
        }
    }
}

/// Parses a PEM certificate chain and key outside a configuration (certificate files, CA
/// responses): the first problem, or the pair.
pub fn parse_cert_key(chain: &[u8], key: &[u8]) -> Result<CertKey, String> {
    let mut ctx = Ctx::default();
    let parsed = cert_key(&mut ctx, &Path::root(), chain, key);
    ctx.finish(parsed)
        .map_err(|e| e.to_string().trim().to_string())
}

/// Parses PEM root certificates outside a configuration.
pub fn parse_roots(pem: &[u8]) -> Result<Roots, String> {
    let mut ctx = Ctx::default();
    let parsed = roots(&mut ctx, &Path::root(), pem);
    ctx.finish(parsed)
        .map_err(|e| e.to_string().trim().to_string())
}

#[cfg(test)]
mod tests;
