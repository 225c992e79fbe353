//! The gRPC service: routes `CreateCertificate` to the CA, decoding and encoding with prost, as
//! tonic's generated servers do (this crate generates no code; see `ca::proto`).

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use tonic::{
    Status,
    codegen::{Body, BoxFuture, Service, StdError, http},
    server::{NamedService, UnaryService},
};

use super::CaServer;
use crate::ca::proto::{
    CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse, SERVICE,
};

/// `istio.v1.auth.IstioCertificateService` backed by a [`CaServer`].
#[derive(Clone, Debug)]
pub(super) struct CaService {
    ca: CaServer,
}

/// The one method.
struct CreateCertificate(CaServer);

// === impl CaService ===

impl CaService {
    pub(super) fn new(ca: CaServer) -> Self {
        Self { ca }
    }
}

impl NamedService for CaService {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for CaService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CREATE_CERTIFICATE_PATH {
            let status = Status::unimplemented(format!(
                "{} is not a method of the test CA",
                request.uri().path()
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = CreateCertificate(self.ca.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(method, request).await)
        })
    }
}

// === impl CreateCertificate ===

impl UnaryService<IstioCertificateRequest> for CreateCertificate {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let ca = self.0.clone();
        Box::pin(async move { ca.create_certificate(request) })
    }
}
