//! A test xDS management server (feature `server`): serves a set of Envoy v3 resources over ADS,
//! both state of the world (`StreamAggregatedResources`) and incremental
//! (`DeltaAggregatedResources`), and records what every client ACKed and NACKed.
//!
//! It exists to test Skiff (and Envoy, for differential tests) against a real gRPC control plane:
//! the `xds-server` binary serves a directory of YAML/JSON resources and pushes every edit, and
//! tests embed a [`Server`] to push resources and await ACKs with [`Server::wait_for`].
//!
//! # Versions
//! - The whole set has one version, a counter (`"0"` when empty, then `"1"`, `"2"`, ...) bumped by
//!   every [`Server::set_resources`] that changes anything. State-of-the-world responses carry it
//!   as `version_info` and delta responses as `system_version_info`.
//! - Each resource also has a version of its own: a digest of its type URL and encoded bytes
//!   ([`resource_version`]). Delta responses carry it, and since it depends only on the content, a
//!   restarted server and a reconnecting client that sends `initial_resource_versions` agree on
//!   which resources the client already has.
//!
//! # State of the world
//! Following "Resource Subscription" and "ACK/NACK and resource type instance version" in
//! Envoy's `xds_protocol.rst`:
//! - The first request of a type with no names, or any request naming `*`, subscribes to every
//!   resource of the type (wildcard). An empty first request stays a wildcard while later requests
//!   stay empty (the legacy form); once the client names resources without `*`, an empty list
//!   means it wants none.
//! - The server answers the first request of a type, every request that changes what the client
//!   subscribes to, and every change to the set that changes what a subscribed client would be
//!   sent. A request that only ACKs or NACKs gets no answer, so a NACKed version is never resent.
//! - Listener and Cluster responses carry every subscribed resource, so omission means deletion.
//!   For every other type a response carries the subscribed resources that exist; the client
//!   forgets the others when it unsubscribes.
//! - Every response has a nonce unique on its stream. A request whose `response_nonce` is the
//!   last nonce sent for its type is an ACK of that response's version, or a NACK when it carries
//!   `error_detail`. A request with an older nonce crossed a newer response on the wire: it is not
//!   counted as an ACK or NACK, but its names still count, as the client's latest wish.
//!
//! # Incremental
//! Following "Incremental xDS" in the same document:
//! - The server tracks, per stream and type, which resources the client holds and at which
//!   version, seeded from `initial_resource_versions`. A response carries only the subscribed
//!   resources whose version differs, and `removed_resources` for held resources that are gone.
//! - Subscribing to a name that does not exist puts that name in `removed_resources` once, which
//!   is how the incremental protocol says a resource does not exist (a state-of-the-world client
//!   has to wait for a timeout instead). Unsubscribing forgets the name without a response.
//! - The first request of a type with nothing to subscribe, or subscribing to `*`, is a wildcard;
//!   unsubscribing from `*` ends it.
//! - The first request of a type is always answered, even with nothing to send, so that the
//!   client knows the server has heard it (Envoy waits for it before it finishes warming; istiod
//!   does the same). After that, a response that would be empty is not sent.
//!
//! # What is recorded
//! [`Server::status`] returns, for every stream (open or recently closed), the node id from its
//! first request, the request metadata (`authorization`, `clusterid`, ...), and per type what the
//! client subscribes to, the last version sent and ACKed, and the ACK and NACK counts. ACKs and
//! NACKs are also logged with `tracing`.
//!
//! # Faults
//! A malformed request (no `type_url`) ends its stream with `INVALID_ARGUMENT`; the server and
//! the other streams carry on. Stopping a [`ServerHandle`] ends every stream it serves with
//! `UNAVAILABLE`, as a clean server shutdown does.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

mod delta;
mod grpc;
mod protocol;
mod resources;
mod sotw;
mod status;
mod watch_dir;

pub use grpc::{ServeError, ServerHandle};
pub use resources::{InvalidResource, LoadError, Resources, resource_version};
pub use status::{Protocol, StreamStatus, TypeStatus};

use crate::schema::Schema;
use resources::Snapshot;
use status::Registry;

/// The test xDS server: a set of resources, the clients streaming it, and what they ACKed.
///
/// Cloning is cheap and every clone is the same server: set resources through one clone and the
/// streams served through another see them.
#[derive(Clone, Debug)]
pub struct Server {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The resources being served; every stream watches it to push changes.
    snapshot: watch::Sender<Arc<Snapshot>>,
    streams: Registry,
}

/// [`Server::wait_for`] gave up: the condition did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the xDS server status did not reach the expected state within {timeout:?}; last status: {last:#?}"
)]
pub struct WaitTimeout {
    /// How long it waited.
    pub timeout: Duration,
    /// The status when it gave up, to say what was missing.
    pub last: Vec<StreamStatus>,
}

// === impl Server ===

impl Server {
    /// A server with no resources, at version `"0"`.
    pub fn new() -> Self {
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::empty()));
        Self {
            inner: Arc::new(Inner {
                snapshot,
                streams: Registry::default(),
            }),
        }
    }

    /// Replaces every resource at once and pushes the change to every open stream. Returns the
    /// version now served: a new one if anything changed, the current one otherwise.
    pub fn set_resources(&self, resources: Resources) -> String {
        let mut changed = false;
        self.inner.snapshot.send_if_modified(|current| {
            if current.resources() == &resources {
                return false;
            }
            *current = Arc::new(current.next(resources));
            changed = true;
            true
        });
        let snapshot = self.snapshot();
        if changed {
            tracing::info!(
                version = snapshot.version(),
                resources = snapshot.resources().len(),
                "serving a new version"
            );
        }
        snapshot.version().to_string()
    }

    /// The resources being served.
    pub fn resources(&self) -> Resources {
        self.snapshot().resources().clone()
    }

    /// The version being served.
    pub fn version(&self) -> String {
        self.snapshot().version().to_string()
    }

    /// What every stream (open, or among the most recently closed) has subscribed to, been sent,
    /// ACKed and NACKed, in the order the streams opened.
    pub fn status(&self) -> Vec<StreamStatus> {
        self.inner.streams.statuses()
    }

    /// Waits until `condition` holds for the [`status`](Self::status), and returns that status.
    /// The condition is checked now and after every change of status.
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&[StreamStatus]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<StreamStatus>, WaitTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.streams.changes();
        loop {
            changes.borrow_and_update();
            let status = self.status();
            if condition(&status) {
                return Ok(status);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The registry lives as long as `self`, so its sender cannot be gone; time out.
                Ok(Err(_)) | Err(_) => {
                    return Err(WaitTimeout {
                        timeout,
                        last: self.status(),
                    });
                }
            }
        }
    }

    /// Polls `dir` every `poll` and serves what it holds (see [`Resources::load_dir`]) whenever
    /// its files change. A directory that does not load is logged (naming the file and the field)
    /// and the last good resources stay served. The first poll is immediate.
    ///
    /// The task runs until aborted.
    pub fn watch_dir(
        &self,
        dir: impl Into<std::path::PathBuf>,
        schema: Arc<Schema>,
        poll: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(watch_dir::run(self.clone(), dir.into(), schema, poll))
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.borrow().clone()
    }

    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.snapshot.subscribe()
    }

    fn registry(&self) -> &Registry {
        &self.inner.streams
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}
