//! The HTTP connection manager at run time: serve a downstream connection with hyper (HTTP/1.1,
//! h2c, or either by preface), route each request, and forward it through a connection pool.
//!
//! Hot path: `handle` runs for every request. It reads only the immutable snapshot, allocates
//! only what the request needs, and logs at debug level only.

pub mod body;
pub(crate) mod forward;
pub mod headers;
mod local_reply;
pub mod pool;
pub mod route;
mod server;
pub mod timers;

use std::{net::SocketAddr, sync::Arc};

pub use self::{local_reply::LocalReply, route::RouteTable, server::serve};
use crate::config::{HttpConnectionManager, RouteSource};

/// An HTTP connection manager ready to serve: its configuration and its indexed routes.
#[derive(Debug)]
pub struct HttpManager {
    /// Its configuration.
    pub config: Arc<HttpConnectionManager>,
    /// The route table of an inline `route_config`; with RDS, each request looks its table up
    /// in the current snapshot.
    pub routes: Option<RouteTable>,
}

/// What the HTTP layer knows about the downstream connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client.
    pub client: SocketAddr,
    /// The (restored) destination.
    pub destination: SocketAddr,
    /// Whether the destination was restored from `SO_ORIGINAL_DST` (ORIGINAL_DST clusters use it).
    pub restored: bool,
    /// What TLS established, when the connection is TLS.
    pub tls: Option<Arc<crate::tls::Peer>>,
}

// === impl HttpManager ===

impl HttpManager {
    /// Prepares a connection manager for serving.
    pub fn new(config: Arc<HttpConnectionManager>) -> Self {
        let routes = match &config.routes {
            RouteSource::Static(rc) => Some(RouteTable::new(rc.clone())),
            RouteSource::Rds { .. } => None,
        };
        Self { config, routes }
    }
}
