//! Upstream HTTP connection pools, one per host: HTTP/1.1 connections reused one request at a
//! time, and one multiplexed HTTP/2 connection.
//!
//! Hot path: `send` runs for every forwarded request. The per-host locks are held only to push
//! or pop an idle connection, never across an await.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::{
    Request, Response,
    body::Incoming,
    client::conn::{TrySendError, http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpSocket, time::Instant};

use super::body::ProxyBody;
use crate::{config::TcpKeepalive, conn::Conn};

/// The protocol spoken to an upstream host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// How to open connections to a host.
#[derive(Clone, Copy, Debug)]
pub struct ConnectSettings<'a> {
    /// The TCP connect timeout.
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed rather than reused.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive, if configured.
    pub keepalive: Option<TcpKeepalive>,
    /// The local address to connect from (`upstream_bind_config`).
    pub bind_source: Option<SocketAddr>,
    /// The ALPN list to offer a TLS host instead of its cluster's (`istio.alpn`).
    pub alpn: Option<&'a [String]>,
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The TCP connection could not be established (Envoy's `UF`).
    #[error("connection failure: {0}")]
    Connect(#[source] io::Error),
    /// The HTTP handshake on a new connection failed.
    #[error("connection failure: {0}")]
    Handshake(#[source] hyper::Error),
    /// The request was sent but no response came: reset, closed or malformed.
    #[error(transparent)]
    Request(hyper::Error),
}

/// The connections to one upstream host.
#[derive(Debug)]
pub struct HostPool {
    addr: SocketAddr,
    /// TLS origination to the host, if its transport is TLS.
    tls: Option<Arc<crate::tls::Connector>>,
    idle_h1: Mutex<Vec<IdleH1>>,
    h2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
    /// Held while an HTTP/2 connection is being opened, so concurrent requests share it.
    h2_connecting: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct IdleH1 {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// Keeps idle HTTP/1 connections per host bounded.
const MAX_IDLE_H1: usize = 1024;

// === impl HostPool ===

impl HostPool {
    /// An empty pool for `addr`, reached over `tls` when given.
    pub fn new(addr: SocketAddr, tls: Option<Arc<crate::tls::Connector>>) -> Self {
        Self {
            addr,
            tls,
            idle_h1: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `req` over a pooled or new connection and returns the response, whose body returns
    /// an HTTP/1 connection to the pool once it has been read to the end.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
        protocol: UpstreamProtocol,
        settings: &ConnectSettings<'_>,
    ) -> Result<Response<ProxyBody>, SendError> {
        match protocol {
            UpstreamProtocol::Http1 => {
                // Reuse idle connections while they are alive; one that turns out closed hands
                // the request back unsent, and the next one is tried.
                while let Some(mut sender) = self.take_idle(settings.idle_timeout) {
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok(self.finish_h1(resp, sender)),
                        Err(e) => req = unsent(e)?,
                    }
                }
                let mut sender = self.connect_h1(settings).await?;
                match sender.try_send_request(req).await {
                    Ok(resp) => Ok(self.finish_h1(resp, sender)),
                    Err(e) => Err(SendError::Request(e.into_error())),
                }
            }
            UpstreamProtocol::Http2 => {
                let mut sender = match self.live_h2() {
                    Some(s) => s,
                    None => {
                        // One opener at a time; the others wait and share its connection.
                        let _opening = self.h2_connecting.lock().await;
                        match self.live_h2() {
                            Some(s) => s,
                            None => self.connect_h2(settings).await?,
                        }
                    }
                };
                let resp = match sender.try_send_request(req).await {
                    Ok(resp) => resp,
                    // The connection went away before the request left: one new connection.
                    Err(e) => {
                        let req = unsent(e)?;
                        let mut sender = self.connect_h2(settings).await?;
                        sender.send_request(req).await.map_err(SendError::Request)?
                    }
                };
                Ok(resp.map(|b| ProxyBody::stream(b, None)))
            }
        }
    }

    fn live_h2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        self.h2
            .lock()
            .expect("pool lock is never poisoned")
            .clone()
            .filter(|s| !s.is_closed())
    }

    fn take_idle(&self, max_idle: Option<Duration>) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.idle_h1.lock().expect("pool lock is never poisoned");
        while let Some(c) = idle.pop() {
            let fresh = max_idle.is_none_or(|max| c.since.elapsed() < max);
            if fresh && c.sender.is_ready() {
                return Some(c.sender);
            }
            // Dropping the sender closes the connection.
        }
        None
    }

    fn give_back(&self, sender: http1::SendRequest<ProxyBody>) {
        if !sender.is_ready() {
            return;
        }
        let mut idle = self.idle_h1.lock().expect("pool lock is never poisoned");
        if idle.len() < MAX_IDLE_H1 {
            idle.push(IdleH1 {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn finish_h1(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        sender: http1::SendRequest<ProxyBody>,
    ) -> Response<ProxyBody> {
        let upgrading = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        if upgrading {
            // The connection now belongs to the upgraded tunnel.
            return resp.map(|b| ProxyBody::stream(b, None));
        }
        if http_body::Body::is_end_stream(resp.body()) {
            // Nothing to read: the connection is free now (the body may never be polled).
            self.give_back(sender);
            return resp.map(|b| ProxyBody::stream(b, None));
        }
        let pool = self.clone();
        resp.map(|b| {
            ProxyBody::stream(
                b,
                Some(Box::new(move || pool.give_back(sender)) as Box<dyn FnOnce() + Send + Sync>),
            )
        })
    }

    async fn connect_h1(
        &self,
        settings: &ConnectSettings<'_>,
    ) -> Result<http1::SendRequest<ProxyBody>, SendError> {
        let io = self.connect_tcp(settings).await?;
        let (sender, conn) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::Handshake)?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        settings: &ConnectSettings<'_>,
    ) -> Result<http2::SendRequest<ProxyBody>, SendError> {
        let io = self.connect_tcp(settings).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::Handshake)?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        *self.h2.lock().expect("pool lock is never poisoned") = Some(sender.clone());
        Ok(sender)
    }

    /// Opens a connection: TCP, then TLS when the host's transport says so, both within the
    /// connect timeout (as Envoy counts the handshake in it).
    async fn connect_tcp(&self, settings: &ConnectSettings<'_>) -> Result<Conn, SendError> {
        let deadline = Instant::now() + settings.connect_timeout;
        let tcp = self.connect_plain(settings, deadline).await?;
        let Some(tls) = &self.tls else {
            return Ok(Conn::Plain(tcp));
        };
        match tokio::time::timeout_at(deadline, tls.connect(tcp, self.addr, settings.alpn)).await {
            Ok(Ok(s)) => Ok(Conn::TlsClient(Box::new(s))),
            Ok(Err(e)) => Err(SendError::Connect(e)),
            Err(_) => Err(SendError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TLS handshake not done within the connect timeout {:?}",
                    settings.connect_timeout
                ),
            ))),
        }
    }

    async fn connect_plain(
        &self,
        settings: &ConnectSettings<'_>,
        deadline: Instant,
    ) -> Result<tokio::net::TcpStream, SendError> {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(SendError::Connect)?;
        socket.set_nodelay(true).map_err(SendError::Connect)?;
        if let Some(k) = &settings.keepalive {
            crate::tcp::set_keepalive(&socket, k).map_err(SendError::Connect)?;
        }
        crate::tcp::bind_source(&socket, settings.bind_source, self.addr)
            .map_err(SendError::Connect)?;
        match tokio::time::timeout_at(deadline, socket.connect(self.addr)).await {
            Ok(r) => r.map_err(SendError::Connect),
            Err(_) => Err(SendError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timeout after {:?}", settings.connect_timeout),
            ))),
        }
    }
}

/// The request back from a send that never left the proxy, or the error of one that did (its
/// body may be partly sent, so it cannot be retried).
fn unsent(mut e: TrySendError<Request<ProxyBody>>) -> Result<Request<ProxyBody>, SendError> {
    match e.take_message() {
        Some(req) => Ok(req),
        None => Err(SendError::Request(e.into_error())),
    }
}
