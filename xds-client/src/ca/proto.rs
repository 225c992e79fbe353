//! `istio.v1.auth.IstioCertificateService` (`proto/istio/v1/auth/ca.proto`): its two messages
//! and its one method, written by hand because the crate generates no Rust code from protos (the
//! descriptor set built from `proto/` is for YAML/JSON only). With the `schema` feature a test
//! checks these structs against that file.

use envoy_types::pb::google::protobuf::Struct;
use tonic::{
    Status,
    codegen::{GrpcMethod, http::uri::PathAndQuery},
    transport::Channel,
};

/// The service's full name.
pub const SERVICE: &str = "istio.v1.auth.IstioCertificateService";

/// The method's name within [`SERVICE`].
pub const METHOD: &str = "CreateCertificate";

/// The gRPC path of `CreateCertificate`.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// A certificate request: a CSR, the validity wanted and optional metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// The PEM-encoded PKCS#10 request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// The validity wanted, in seconds (0: the CA's default).
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Opaque metadata; sidecars send none.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<Struct>,
}

/// The issued chain.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates: the leaf first, then intermediates, the root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

impl prost::Name for IstioCertificateRequest {
    const NAME: &'static str = "IstioCertificateRequest";
    const PACKAGE: &'static str = "istio.v1.auth";
}

impl prost::Name for IstioCertificateResponse {
    const NAME: &'static str = "IstioCertificateResponse";
    const PACKAGE: &'static str = "istio.v1.auth";
}

/// Calls `CreateCertificate` on `channel` (one unary call).
pub(crate) async fn create_certificate(
    channel: Channel,
    mut request: tonic::Request<IstioCertificateRequest>,
) -> Result<IstioCertificateResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the connection to the CA is not ready: {e}")))?;
    request
        .extensions_mut()
        .insert(GrpcMethod::new(SERVICE, METHOD));
    let response = grpc
        .unary(
            request,
            PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(response.into_inner())
}

#[cfg(all(test, feature = "schema"))]
mod tests {
    use envoy_types::pb::google::protobuf::{Value, value::Kind};
    use prost::{Message, Name};

    use super::*;
    use crate::schema::Schema;

    #[test]
    fn messages_match_the_proto_file() {
        let schema = Schema::load();
        let request = IstioCertificateRequest {
            csr: "-----BEGIN CERTIFICATE REQUEST-----".into(),
            validity_duration: 3600,
            metadata: Some(Struct {
                fields: [(
                    "ClusterID".to_string(),
                    Value {
                        kind: Some(Kind::StringValue("Kubernetes".into())),
                    },
                )]
                .into(),
            }),
        };
        let json = schema
            .to_value(
                &IstioCertificateRequest::full_name(),
                &request.encode_to_vec(),
            )
            .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "csr": "-----BEGIN CERTIFICATE REQUEST-----",
                "validity_duration": "3600",
                "metadata": {"ClusterID": "Kubernetes"},
            })
        );
        let response = IstioCertificateResponse {
            cert_chain: vec!["leaf".into(), "root".into()],
        };
        let json = schema
            .to_value(
                &IstioCertificateResponse::full_name(),
                &response.encode_to_vec(),
            )
            .unwrap();
        assert_eq!(json, serde_json::json!({"cert_chain": ["leaf", "root"]}));
    }
}
