//! The gRPC side: the ADS service on tonic, one task per stream driving its state machine, and
//! serving on a TCP or Unix listener until stopped.

use std::{pin::Pin, sync::Arc, time::Duration};

use envoy_types::pb::envoy::service::{
    discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
    },
    secret::v3::secret_discovery_service_server::{
        SecretDiscoveryService, SecretDiscoveryServiceServer,
    },
};
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_stream::{
    Stream, StreamExt as _,
    wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream},
};
use tonic::{
    Request, Response, Status, Streaming,
    metadata::{KeyAndValueRef, MetadataMap},
    transport::server::Connected,
};

use super::{
    Server,
    delta::DeltaStream,
    protocol::{Feedback, InvalidRequest, StreamMachine},
    resources::Snapshot,
    sotw::SotwStream,
    status::Protocol,
};
use crate::type_url::short_name;

/// How many responses may wait for a slow client before its stream stops reading requests.
const RESPONSE_BUFFER: usize = 16;

/// How long a stream that ends with an error waits for room to send that error to a client that
/// is not reading.
const FINAL_STATUS_WAIT: Duration = Duration::from_secs(1);

/// How long [`ServerHandle::shutdown`] waits for connections to close before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running server, from [`Server::serve_tcp`] or [`Server::serve_unix`].
///
/// Dropping the handle leaves the server running; [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct ServerHandle {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Why serving stopped other than by [`ServerHandle::shutdown`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("the xDS gRPC server failed: {0}")]
    Transport(#[source] tonic::transport::Error),
    /// The TLS certificate or key is unusable.
    #[error("the xDS server's TLS identity is unusable: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The serving task panicked or was cancelled.
    #[error("the xDS gRPC server task ended abnormally: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// The ADS service of one serving listener.
#[derive(Clone, Debug)]
struct Ads {
    server: Server,
    /// Becomes `true` when the listener's [`ServerHandle`] shuts it down.
    shutdown: watch::Receiver<bool>,
}

type ResponseStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

// === impl Server ===

impl Server {
    /// Serves ADS on a TCP listener, in a task of the current runtime, until the returned
    /// handle's [`shutdown`](ServerHandle::shutdown).
    pub fn serve_tcp(&self, listener: TcpListener) -> ServerHandle {
        // Pushes are small messages that should leave at once, not wait for Nagle's algorithm.
        let incoming = TcpListenerStream::new(listener).map(|accepted| {
            accepted.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        self.serve(incoming)
    }

    /// Serves ADS on a Unix socket listener, in a task of the current runtime, until the
    /// returned handle's [`shutdown`](ServerHandle::shutdown).
    pub fn serve_unix(&self, listener: UnixListener) -> ServerHandle {
        self.serve(UnixListenerStream::new(listener))
    }

    /// Serves ADS over TLS on a TCP listener, with the PEM certificate chain and key given (as
    /// istiod serves on 15012).
    pub fn serve_tcp_tls(
        &self,
        listener: TcpListener,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<ServerHandle, ServeError> {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        let builder = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(ServeError::Tls)?;
        Ok(self.serve_with(builder, TcpListenerStream::new(listener)))
    }

    fn serve<I, IO>(&self, incoming: I) -> ServerHandle
    where
        I: Stream<Item = std::io::Result<IO>> + Send + 'static,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    {
        self.serve_with(tonic::transport::Server::builder(), incoming)
    }

    fn serve_with<I, IO>(&self, builder: tonic::transport::Server, incoming: I) -> ServerHandle
    where
        I: Stream<Item = std::io::Result<IO>> + Send + 'static,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    {
        let (shutdown, signal) = watch::channel(false);
        let ads = Ads {
            server: self.clone(),
            shutdown: signal.clone(),
        };
        // ADS, and SDS's own service (pilot-agent's) from the same resources.
        let services = XdsServices {
            ads: AggregatedDiscoveryServiceServer::new(ads.clone()),
            sds: SecretDiscoveryServiceServer::new(ads),
        };
        let task = tokio::spawn(builder.serve_with_incoming_shutdown(
            services,
            incoming,
            shutdown_requested(signal),
        ));
        ServerHandle { shutdown, task }
    }
}

// === impl ServerHandle ===

impl ServerHandle {
    /// Stops serving: closes the listener, ends every open stream with `UNAVAILABLE`, and waits
    /// for the connections to close (for a few seconds at most: a client that keeps its
    /// connection open without a stream is not waited for longer).
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.shutdown.send_replace(true);
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(joined) => Self::result(joined),
            Err(_) => {
                tracing::warn!(
                    "connections still open {SHUTDOWN_GRACE:?} after the xDS server shut down; not waiting for them"
                );
                self.task.abort();
                Ok(())
            }
        }
    }

    /// Waits until the server stops on its own, which only a failure makes it do.
    pub async fn wait(self) -> Result<(), ServeError> {
        Self::result(self.task.await)
    }

    fn result(
        joined: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
    ) -> Result<(), ServeError> {
        joined
            .map_err(ServeError::Task)?
            .map_err(ServeError::Transport)
    }
}

/// ADS and SDS on one listener, told apart by the gRPC path (without tonic's router).
#[derive(Clone, Debug)]
struct XdsServices {
    ads: AggregatedDiscoveryServiceServer<Ads>,
    sds: SecretDiscoveryServiceServer<Ads>,
}

const SDS_PATH: &str = "/envoy.service.secret.v3.SecretDiscoveryService/";

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for XdsServices {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Both generated services are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path().starts_with(SDS_PATH) {
            Box::pin(self.sds.call(req))
        } else {
            Box::pin(self.ads.call(req))
        }
    }
}

// === impl Ads ===

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(self.open(Protocol::Sotw, SotwStream::new(), request))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(self.open(Protocol::Delta, DeltaStream::new(), request))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Ads {
    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        Ok(self.open(Protocol::StreamSecrets, SotwStream::new(), request))
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Ok(self.open(Protocol::DeltaSecrets, DeltaStream::new(), request))
    }

    async fn fetch_secrets(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented(
            "the test server streams secrets; FetchSecrets (REST-style) is not served",
        ))
    }
}

impl Ads {
    /// Registers a stream and spawns the task that drives it.
    fn open<M: StreamMachine>(
        &self,
        protocol: Protocol,
        machine: M,
        request: Request<Streaming<M::Request>>,
    ) -> Response<ResponseStream<M::Response>> {
        let metadata = ascii_metadata(request.metadata());
        let id = self.server.registry().open(protocol, metadata);
        tracing::info!(stream = id, ?protocol, "stream opened");
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let driver = Driver {
            id,
            server: self.server.clone(),
            machine,
            tx,
        };
        tokio::spawn(driver.run(request.into_inner(), self.shutdown.clone()));
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

/// The task of one stream.
struct Driver<M: StreamMachine> {
    id: u64,
    server: Server,
    machine: M,
    tx: mpsc::Sender<Result<M::Response, Status>>,
}

/// Why a stream's task stopped.
enum End {
    /// The client closed its side, or went away.
    Client,
    /// The stream must end with this status.
    Status(Status),
}

impl<M: StreamMachine> Driver<M> {
    async fn run(mut self, mut requests: Streaming<M::Request>, shutdown: watch::Receiver<bool>) {
        let mut snapshots = self.server.snapshots();
        snapshots.borrow_and_update();
        let end = tokio::select! {
            end = self.serve(&mut requests, &mut snapshots) => end,
            () = shutdown_requested(shutdown) => {
                End::Status(Status::unavailable("the xDS server is shutting down"))
            }
        };
        if let End::Status(status) = end {
            // The client may be gone already, or not reading; then there is nobody to tell.
            let _ = tokio::time::timeout(FINAL_STATUS_WAIT, self.tx.send(Err(status))).await;
        }
        self.server.registry().close(self.id);
        tracing::info!(stream = self.id, node = self.node(), "stream closed");
    }

    async fn serve(
        &mut self,
        requests: &mut Streaming<M::Request>,
        snapshots: &mut watch::Receiver<Arc<Snapshot>>,
    ) -> End {
        loop {
            tokio::select! {
                request = requests.message() => {
                    let request = match request {
                        Ok(Some(request)) => request,
                        Ok(None) => return End::Client,
                        Err(status) => {
                            tracing::debug!(stream = self.id, %status, "the request stream failed");
                            return End::Client;
                        }
                    };
                    let snapshot = snapshots.borrow().clone();
                    let step = match self.machine.on_request(request, &snapshot) {
                        Ok(step) => step,
                        Err(invalid) => {
                            tracing::warn!(stream = self.id, node = self.node(), error = %invalid, "ending the stream");
                            return End::Status(invalid_request(&invalid));
                        }
                    };
                    if let Some(feedback) = &step.feedback {
                        self.log(&step.type_url, feedback);
                    }
                    self.record();
                    if let Some(response) = step.response
                        && self.tx.send(Ok(response)).await.is_err()
                    {
                        return End::Client;
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        // The server is gone, which cannot happen while this task holds it.
                        return End::Status(Status::internal("the xDS server was dropped"));
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    let responses = self.machine.on_snapshot(&snapshot);
                    self.record();
                    for response in responses {
                        if self.tx.send(Ok(response)).await.is_err() {
                            return End::Client;
                        }
                    }
                }
                () = self.tx.closed() => return End::Client,
            }
        }
    }

    fn record(&self) {
        self.server
            .registry()
            .update(self.id, self.machine.node_id(), self.machine.types());
    }

    fn log(&self, type_url: &str, feedback: &Feedback) {
        let node = self.node();
        let type_url = short_name(type_url);
        match feedback {
            Feedback::Ack { version } => {
                tracing::info!(stream = self.id, node, type_url, version, "ACK");
            }
            Feedback::Nack { version, message } => {
                tracing::warn!(
                    stream = self.id,
                    node,
                    type_url,
                    version,
                    error = message,
                    "NACK"
                );
            }
        }
    }

    fn node(&self) -> &str {
        self.machine.node_id().unwrap_or("(no node)")
    }
}

/// The one place a protocol fault becomes a gRPC status.
fn invalid_request(invalid: &InvalidRequest) -> Status {
    match invalid {
        InvalidRequest::NoTypeUrl => Status::invalid_argument(invalid.to_string()),
    }
}

/// The request metadata whose values are ASCII, as (key, value).
fn ascii_metadata(metadata: &MetadataMap) -> Vec<(String, String)> {
    metadata
        .iter()
        .filter_map(|entry| match entry {
            KeyAndValueRef::Ascii(key, value) => {
                Some((key.as_str().to_string(), value.to_str().ok()?.to_string()))
            }
            KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

/// Completes when `signal` turns `true`. If its [`ServerHandle`] is dropped instead, never: a
/// dropped handle leaves the server running.
async fn shutdown_requested(mut signal: watch::Receiver<bool>) {
    if signal.wait_for(|&stop| stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
