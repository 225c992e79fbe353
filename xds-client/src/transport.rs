//! The ADS transport: one gRPC stream to the control plane, driven by [`SotwClient`] or
//! [`DeltaClient`], reconnecting for as long as the process wants configuration.
//!
//! # What the task does
//! 1. Connects to the [`Target`] (TCP, plaintext or TLS with a CA file; or a Unix socket, as
//!    pilot-agent serves istiod's stream to Envoy) and opens `StreamAggregatedResources` or
//!    `DeltaAggregatedResources`, with the configured metadata and, when a token file is set,
//!    `authorization: Bearer <token>` read afresh for every stream (projected tokens rotate).
//! 2. Sends the initial requests in watch order, holding each one back until every type before it
//!    has answered and its resources have warmed ([`Subscriber::warmed`]), or until
//!    `initial_fetch_timeout` has passed: Envoy's startup order (clusters, then their endpoints,
//!    then listeners, then their routes). Holding back happens once, at startup: after a
//!    reconnect every subscription goes out at once, as Envoy's does.
//! 3. Feeds every response to the client, which calls the [`Subscriber`] (the user's
//!    [`Handler`]) and answers with an ACK or a NACK; then it asks the subscriber which names it
//!    wants for each named watch (RDS and EDS follow the accepted listeners and clusters) and
//!    sends the subscription changes.
//! 4. When the stream fails, the last good configuration stays with the subscriber, and the task
//!    reconnects after an exponential backoff with jitter. The client's first requests on the new
//!    stream carry the versions it holds (`version_info`, or delta's
//!    `initial_resource_versions`), so an unchanged server sends nothing new.

use std::{
    collections::BTreeSet,
    future::Future,
    hash::{BuildHasher, Hasher},
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::{
        discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
        secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient,
    },
};
use hyper_util::rt::TokioIo;
use tokio::{net::UnixStream, sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Status, Streaming,
    metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri},
};

use crate::{
    DeltaClient, Handler, Interest, InvalidWatch, Metrics, SotwClient, UnexpectedResponse, Watch,
};

/// The largest response accepted: a mesh's full CDS can be tens of megabytes, far above tonic's
/// 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// How often held-back initial requests are re-checked while nothing arrives.
const WARMING_POLL: Duration = Duration::from_millis(100);

/// Where the control plane listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port`: an IP address or a DNS name.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// TLS to the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The PEM file of the CAs that may sign the server's certificate (re-read on reconnect).
    pub ca_file: PathBuf,
    /// The name to send as SNI and to verify; the target's host when unset.
    pub server_name: Option<String>,
}

/// Which xDS stream to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// State of the world: `StreamAggregatedResources`.
    Sotw,
    /// Incremental: `DeltaAggregatedResources` (Istio's default).
    Delta,
    /// Secrets only, state of the world: SDS's `StreamSecrets`, as pilot-agent serves it on
    /// its Unix socket (Envoy's `sds_config` with a GRPC `api_config_source`).
    Secrets,
}

/// Reconnect delays: `base`, doubling per failed attempt up to `max`, each drawn at random
/// between half and all of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

/// Everything the transport needs to reach the control plane.
#[derive(Clone, Debug)]
pub struct AdsConfig {
    /// Where the control plane is.
    pub target: Target,
    /// TLS, for a TCP target.
    pub tls: Option<TlsConfig>,
    /// A file whose trimmed content is sent as `authorization: Bearer <content>`.
    pub token_file: Option<PathBuf>,
    /// Extra request metadata, such as Istio's `ClusterID`.
    pub metadata: Vec<(String, String)>,
    /// State of the world or delta.
    pub protocol: Protocol,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one type's first answer and warming may hold up the next type's first request.
    pub initial_fetch_timeout: Duration,
}

/// The user's side of the stream: a [`Handler`] that also says which names it wants and whether
/// what it received has warmed.
pub trait Subscriber: Handler + Send + 'static {
    /// The names wanted now for a named watch (`type_url` is RDS or EDS, typically), asked after
    /// every response and before every stream starts.
    fn wanted(&self, type_url: &str) -> BTreeSet<String>;

    /// Whether the resources of `type_url` received so far are ready to serve, so that the next
    /// type's first request may go out (clusters wait for their endpoints, for example).
    fn warmed(&self, _type_url: &str) -> bool {
        true
    }

    /// The stream to the control plane came up or went down.
    fn on_connection(&mut self, _connected: bool) {}
}

/// Why the transport refused its settings.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A metadata key is not a valid lower-case gRPC header name.
    #[error("invalid gRPC metadata key {key:?}: {reason}")]
    MetadataKey {
        /// The key as configured.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A metadata value is not printable ASCII.
    #[error("invalid gRPC metadata value for {key:?}: {reason}")]
    MetadataValue {
        /// The key whose value is wrong.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target is not a usable address.
    #[error("invalid control-plane address {target:?}: {reason}")]
    Target {
        /// The target as configured.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS was configured for a Unix socket.
    #[error("TLS to the control plane is only supported over TCP, not on {0}")]
    TlsOverUnix(String),
    /// Not called within a Tokio runtime.
    #[error("the ADS transport must be started inside a Tokio runtime")]
    NoRuntime,
}

/// The running stream, for its owner to observe or stop.
///
/// Dropping the handle leaves the stream running; [`AdsHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct AdsHandle {
    status: Arc<Status_>,
    task: tokio::task::JoinHandle<()>,
}

/// What the task reports, read through [`AdsHandle`].
#[derive(Debug, Default)]
struct Status_ {
    connected: AtomicBool,
    connects: AtomicU64,
    metrics: Mutex<Metrics>,
}

/// Starts the ADS stream for `node` with `watches` (in Envoy's order: CDS, EDS, LDS, RDS),
/// applying what arrives to `subscriber`. Must be called within a Tokio runtime.
pub fn spawn<S: Subscriber>(
    config: AdsConfig,
    node: Node,
    watches: Vec<Watch>,
    subscriber: S,
) -> Result<AdsHandle, TransportError> {
    let metadata = metadata(&config.metadata)?;
    let endpoint = endpoint(&config)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
    let status = Arc::new(Status_::default());
    let order: Vec<String> = watches.iter().map(|w| w.type_url.clone()).collect();
    let task = Task {
        config,
        endpoint,
        metadata,
        order,
        subscriber,
        status: status.clone(),
        held_back: true,
    };
    let task = match task.config.protocol {
        Protocol::Sotw | Protocol::Secrets => {
            runtime.spawn(task.run(SotwClient::new(node, watches)))
        }
        Protocol::Delta => runtime.spawn(task.run(DeltaClient::new(node, watches))),
    };
    Ok(AdsHandle { status, task })
}

// === impl AdsHandle ===

impl AdsHandle {
    /// Whether a stream is open now.
    pub fn connected(&self) -> bool {
        self.status.connected.load(Ordering::Acquire)
    }

    /// How many streams have been opened.
    pub fn connects(&self) -> u64 {
        self.status.connects.load(Ordering::Acquire)
    }

    /// The client's counters per type URL.
    pub fn metrics(&self) -> Metrics {
        self.status
            .metrics
            .lock()
            .expect("the metrics lock is never poisoned")
            .clone()
    }

    /// Stops the stream. The subscriber keeps what it has applied.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// What [`Task::run`] needs of a protocol variant.
trait Variant: Send + 'static {
    type Request: prost::Message + Send + 'static;
    type Response: prost::Message + Send + 'static;

    fn start_stream(&mut self) -> Vec<Self::Request>;
    fn on_disconnect(&mut self);
    fn handle<H: Handler>(
        &mut self,
        response: &Self::Response,
        handler: &mut H,
    ) -> Result<Self::Request, UnexpectedResponse>;
    fn set_names(
        &mut self,
        type_url: &str,
        names: BTreeSet<String>,
    ) -> Result<Option<Self::Request>, InvalidWatch>;
    fn is_named(&self, type_url: &str) -> bool;
    fn metrics(&self) -> &Metrics;
    fn request_type(request: &Self::Request) -> &str;
    fn response_type(response: &Self::Response) -> &str;
    fn open(
        channel: Channel,
        protocol: Protocol,
        request: tonic::Request<ReceiverStream<Self::Request>>,
    ) -> impl Future<Output = Result<Streaming<Self::Response>, Status>> + Send;
}

/// The ADS client for a channel, with the message size limits of a mesh's configuration.
fn ads_client(channel: Channel) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

impl Variant for SotwClient {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn start_stream(&mut self) -> Vec<DiscoveryRequest> {
        SotwClient::start_stream(self)
    }
    fn on_disconnect(&mut self) {
        SotwClient::on_disconnect(self);
    }
    fn handle<H: Handler>(
        &mut self,
        response: &DiscoveryResponse,
        handler: &mut H,
    ) -> Result<DiscoveryRequest, UnexpectedResponse> {
        self.handle_response(response, handler)
    }
    fn set_names(
        &mut self,
        type_url: &str,
        names: BTreeSet<String>,
    ) -> Result<Option<DiscoveryRequest>, InvalidWatch> {
        SotwClient::set_names(self, type_url, names)
    }
    fn is_named(&self, type_url: &str) -> bool {
        self.state(type_url)
            .is_some_and(|s| matches!(s.interest(), Interest::Named(_)))
    }
    fn metrics(&self) -> &Metrics {
        SotwClient::metrics(self)
    }
    fn request_type(request: &DiscoveryRequest) -> &str {
        &request.type_url
    }
    fn response_type(response: &DiscoveryResponse) -> &str {
        &response.type_url
    }
    async fn open(
        channel: Channel,
        protocol: Protocol,
        request: tonic::Request<ReceiverStream<DiscoveryRequest>>,
    ) -> Result<Streaming<DiscoveryResponse>, Status> {
        if protocol == Protocol::Secrets {
            // The same messages on SDS's own service.
            let mut sds = SecretDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES);
            return Ok(sds.stream_secrets(request).await?.into_inner());
        }
        Ok(ads_client(channel)
            .stream_aggregated_resources(request)
            .await?
            .into_inner())
    }
}

impl Variant for DeltaClient {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn start_stream(&mut self) -> Vec<DeltaDiscoveryRequest> {
        DeltaClient::start_stream(self)
    }
    fn on_disconnect(&mut self) {
        DeltaClient::on_disconnect(self);
    }
    fn handle<H: Handler>(
        &mut self,
        response: &DeltaDiscoveryResponse,
        handler: &mut H,
    ) -> Result<DeltaDiscoveryRequest, UnexpectedResponse> {
        self.handle_response(response, handler)
    }
    fn set_names(
        &mut self,
        type_url: &str,
        names: BTreeSet<String>,
    ) -> Result<Option<DeltaDiscoveryRequest>, InvalidWatch> {
        DeltaClient::set_names(self, type_url, names)
    }
    fn is_named(&self, type_url: &str) -> bool {
        self.state(type_url)
            .is_some_and(|s| matches!(s.interest(), Interest::Named(_)))
    }
    fn metrics(&self) -> &Metrics {
        DeltaClient::metrics(self)
    }
    fn request_type(request: &DeltaDiscoveryRequest) -> &str {
        &request.type_url
    }
    fn response_type(response: &DeltaDiscoveryResponse) -> &str {
        &response.type_url
    }
    async fn open(
        channel: Channel,
        _protocol: Protocol,
        request: tonic::Request<ReceiverStream<DeltaDiscoveryRequest>>,
    ) -> Result<Streaming<DeltaDiscoveryResponse>, Status> {
        Ok(ads_client(channel)
            .delta_aggregated_resources(request)
            .await?
            .into_inner())
    }
}

/// The reconnecting loop.
struct Task<S> {
    config: AdsConfig,
    endpoint: Endpoint,
    metadata: MetadataMap,
    /// The watched types in the order of their initial requests.
    order: Vec<String>,
    subscriber: S,
    status: Arc<Status_>,
    /// Initial requests still wait for the types before them (startup only).
    held_back: bool,
}

/// Which types the initial requests of a stream asked for, and which have answered.
#[derive(Debug)]
struct Startup {
    asked: BTreeSet<String>,
    answered: BTreeSet<String>,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("cannot read the token file {path}: {error}")]
    Token { path: String, error: std::io::Error },
    #[error("the stream failed: {0}")]
    Status(#[from] Status),
    #[error("the server closed the stream")]
    Closed,
}

impl<S: Subscriber> Task<S> {
    async fn run<V: Variant>(mut self, mut client: V) {
        let mut failures: u32 = 0;
        loop {
            let mut answered = false;
            let end = self.stream(&mut client, &mut answered).await;
            client.on_disconnect();
            if self.status.connected.swap(false, Ordering::AcqRel) {
                self.subscriber.on_connection(false);
            }
            if answered {
                failures = 0;
            }
            let delay = backoff_delay(self.config.backoff, failures);
            failures = failures.saturating_add(1);
            tracing::warn!(
                target = ?self.config.target,
                error = %end,
                retry_in_ms = delay.as_millis() as u64,
                "xDS: stream to the control plane ended; serving the last good configuration"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One stream, from connecting to its end. Sets `answered` once a response arrives.
    async fn stream<V: Variant>(&mut self, client: &mut V, answered: &mut bool) -> StreamEnd {
        let channel = match connect(self.endpoint.clone(), self.config.target.clone()).await {
            Ok(channel) => channel,
            Err(end) => return end,
        };
        let mut metadata = self.metadata.clone();
        if let Some(path) = &self.config.token_file {
            match read_token(path) {
                Ok(value) => {
                    metadata.insert("authorization", value);
                }
                Err(error) => {
                    return StreamEnd::Token {
                        path: path.display().to_string(),
                        error,
                    };
                }
            }
        }

        // Subscriptions follow what the subscriber holds, which may have changed while down.
        for type_url in self.order.clone() {
            if client.is_named(&type_url) {
                let names = self.subscriber.wanted(&type_url);
                // With no stream started the change is only recorded, so this never sends.
                let _ = client.set_names(&type_url, names);
            }
        }
        let (tx, rx) = mpsc::channel::<V::Request>(64);
        let initial = client.start_stream();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        *request.metadata_mut() = metadata;
        // The request stream is consumed lazily by tonic, so queue the first request before
        // opening: some servers wait for it before answering the call at all.
        let started = Instant::now();
        let mut progress = Startup {
            asked: initial
                .iter()
                .map(|r| V::request_type(r).to_string())
                .collect(),
            answered: BTreeSet::new(),
        };
        let mut held: Vec<(V::Request, Instant)> =
            initial.into_iter().map(|r| (r, started)).collect();
        if let Err(end) = self.release::<V>(&mut held, &progress, &tx).await {
            return end;
        }
        let mut responses = match V::open(channel, self.config.protocol, request).await {
            Ok(responses) => responses,
            Err(status) => return StreamEnd::Status(status),
        };
        self.status.connects.fetch_add(1, Ordering::AcqRel);
        self.status.connected.store(true, Ordering::Release);
        self.subscriber.on_connection(true);
        tracing::info!(target = ?self.config.target, "xDS: connected to the control plane");

        let mut poll = tokio::time::interval(WARMING_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let response = tokio::select! {
                message = responses.message() => match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return StreamEnd::Closed,
                    Err(status) => return StreamEnd::Status(status),
                },
                _ = poll.tick(), if !held.is_empty() => {
                    if let Err(end) = self.release::<V>(&mut held, &progress, &tx).await {
                        return end;
                    }
                    continue;
                }
            };
            *answered = true;
            progress
                .answered
                .insert(V::response_type(&response).to_string());
            match client.handle(&response, &mut self.subscriber) {
                Ok(reply) => {
                    if tx.send(reply).await.is_err() {
                        return StreamEnd::Closed;
                    }
                }
                Err(error) => tracing::warn!(%error, "xDS: response ignored"),
            }
            *self
                .status
                .metrics
                .lock()
                .expect("the metrics lock is never poisoned") = client.metrics().clone();
            for type_url in self.order.clone() {
                if !client.is_named(&type_url) {
                    continue;
                }
                let names = self.subscriber.wanted(&type_url);
                match client.set_names(&type_url, names) {
                    Ok(Some(change)) => {
                        // A type whose first request is still held back sends the change right
                        // after it (in delta the change is relative to what that request asked).
                        if let Some(i) = held
                            .iter()
                            .rposition(|(r, _)| V::request_type(r) == type_url)
                        {
                            let since = held[i].1;
                            held.insert(i + 1, (change, since));
                        } else if tx.send(change).await.is_err() {
                            return StreamEnd::Closed;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "xDS: subscription not changed"),
                }
            }
            if let Err(end) = self.release::<V>(&mut held, &progress, &tx).await {
                return end;
            }
        }
    }

    /// Sends the held-back initial requests whose turn has come, in order.
    async fn release<V: Variant>(
        &mut self,
        held: &mut Vec<(V::Request, Instant)>,
        progress: &Startup,
        tx: &mpsc::Sender<V::Request>,
    ) -> Result<(), StreamEnd> {
        while let Some((first, since)) = held.first() {
            let type_url = V::request_type(first).to_string();
            if self.held_back && !self.earlier_types_ready(&type_url, progress, *since) {
                return Ok(());
            }
            let (request, _) = held.remove(0);
            if tx.send(request).await.is_err() {
                return Err(StreamEnd::Closed);
            }
            // The next one waits for this one from now on.
            if let Some(next) = held.first_mut() {
                next.1 = Instant::now();
            }
        }
        self.held_back = false;
        Ok(())
    }

    /// Whether every type before `type_url` has answered (if it was asked for) and warmed, or the
    /// wait has lasted the initial fetch timeout.
    fn earlier_types_ready(&self, type_url: &str, progress: &Startup, since: Instant) -> bool {
        let ready = self
            .order
            .iter()
            .take_while(|t| t.as_str() != type_url)
            .all(|t| {
                (!progress.asked.contains(t) || progress.answered.contains(t))
                    && self.subscriber.warmed(t)
            });
        if ready {
            return true;
        }
        if since.elapsed() >= self.config.initial_fetch_timeout {
            tracing::warn!(
                type_url,
                "xDS: initial fetch timeout passed; requesting without waiting further"
            );
            return true;
        }
        false
    }
}

/// Connects a channel to `target` (taking clones: the task's subscriber need not be `Sync`).
async fn connect(endpoint: Endpoint, target: Target) -> Result<Channel, StreamEnd> {
    let connecting = match target {
        Target::Tcp(_) => endpoint.connect().await,
        Target::Unix(path) => {
            endpoint
                .connect_with_connector(UnixConnector(Arc::new(path)))
                .await
        }
    };
    connecting.map_err(|e| StreamEnd::Connect(error_chain(&e)))
}

/// The delay before reconnect attempt `failures` (0 for the first): exponential, capped, and
/// drawn between half and all of it so that many proxies restarted together spread out.
pub(crate) fn backoff_delay(backoff: Backoff, failures: u32) -> Duration {
    let ceiling = backoff
        .base
        .saturating_mul(2u32.saturating_pow(failures.min(30)))
        .min(backoff.max);
    let half = ceiling / 2;
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let extra = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random.checked_rem(extra.max(1)).unwrap_or(0))
}

fn metadata(pairs: &[(String, String)]) -> Result<MetadataMap, TransportError> {
    let mut map = MetadataMap::new();
    for (key, value) in pairs {
        let k: AsciiMetadataKey = key.to_ascii_lowercase().parse().map_err(
            |e: tonic::metadata::errors::InvalidMetadataKey| TransportError::MetadataKey {
                key: key.clone(),
                reason: e.to_string(),
            },
        )?;
        let v: AsciiMetadataValue =
            value
                .parse()
                .map_err(|e: tonic::metadata::errors::InvalidMetadataValue| {
                    TransportError::MetadataValue {
                        key: key.clone(),
                        reason: e.to_string(),
                    }
                })?;
        map.append(k, v);
    }
    Ok(map)
}

fn endpoint(config: &AdsConfig) -> Result<Endpoint, TransportError> {
    let (uri, target) = match &config.target {
        Target::Tcp(addr) => {
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            (format!("{scheme}://{addr}"), addr.clone())
        }
        Target::Unix(path) => {
            if config.tls.is_some() {
                return Err(TransportError::TlsOverUnix(path.display().to_string()));
            }
            // The authority is a placeholder: the connector ignores it.
            ("http://localhost".to_string(), path.display().to_string())
        }
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| TransportError::Target {
            target: target.clone(),
            reason: error_chain(&e),
        })?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(tls) = &config.tls {
        let pem = std::fs::read(&tls.ca_file).map_err(|e| TransportError::Target {
            target: target.clone(),
            reason: format!("cannot read the CA file {}: {e}", tls.ca_file.display()),
        })?;
        let mut client = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(name) = &tls.server_name {
            client = client.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(client)
            .map_err(|e| TransportError::Target {
                target,
                reason: error_chain(&e),
            })?;
    }
    Ok(endpoint)
}

pub(crate) fn read_token(path: &std::path::Path) -> std::io::Result<AsciiMetadataValue> {
    let token = std::fs::read_to_string(path)?;
    format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not printable ASCII"))
}

/// An error and its causes on one line (tonic's transport errors say little at the top).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Connects every channel of a Unix-socket target to the same path.
#[derive(Clone, Debug)]
struct UnixConnector(Arc<PathBuf>);

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path.as_path()).await?)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        };
        for (failures, ceiling_ms) in [(0, 500), (1, 1000), (2, 2000), (6, 30_000), (40, 30_000)] {
            for _ in 0..50 {
                let d = backoff_delay(b, failures).as_millis() as u64;
                assert!(
                    d >= ceiling_ms / 2 && d <= ceiling_ms,
                    "failures {failures}: {d} ms outside [{}, {ceiling_ms}]",
                    ceiling_ms / 2
                );
            }
        }
    }

    #[test]
    fn bad_metadata_is_refused_with_the_key() {
        let err = metadata(&[("Bad Key".into(), "v".into())]).unwrap_err();
        assert!(err.to_string().contains("\"Bad Key\""), "{err}");
        let err = metadata(&[("clusterid".into(), "line\nbreak".into())]).unwrap_err();
        assert!(err.to_string().contains("clusterid"), "{err}");
        let ok = metadata(&[("ClusterID".into(), "Kubernetes".into())]).unwrap();
        assert_eq!(ok.get("clusterid").unwrap(), "Kubernetes");
    }
}
