//! What the server knows about each stream, for tests to assert on and wait for.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, MutexGuard, PoisonError},
};

use tokio::sync::watch;

/// How many closed streams the status keeps, so that a test can still see a stream that ended
/// while a long-running server does not grow without bound.
const CLOSED_STREAMS_KEPT: usize = 64;

/// The xDS stream a client opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `StreamAggregatedResources`.
    Sotw,
    /// `DeltaAggregatedResources`.
    Delta,
    /// SDS's `StreamSecrets` (state of the world, secrets only).
    StreamSecrets,
    /// SDS's `DeltaSecrets`.
    DeltaSecrets,
}

/// One stream, as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStatus {
    /// Unique on this server, in the order streams opened.
    pub id: u64,
    /// Which ADS variant.
    pub protocol: Protocol,
    /// The node id of the first request that carried a node.
    pub node_id: Option<String>,
    /// The gRPC request metadata with ASCII values (`authorization`, `clusterid`, ...), as
    /// received.
    pub metadata: Vec<(String, String)>,
    /// Whether the stream is still open.
    pub open: bool,
    /// Per type URL requested on this stream.
    pub types: BTreeMap<String, TypeStatus>,
}

/// One type URL on one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Whether the client subscribes to every resource of the type.
    pub wildcard: bool,
    /// The names it subscribes to explicitly (without `*`).
    pub names: BTreeSet<String>,
    /// How many responses were sent.
    pub responses: u64,
    /// The version of the last response sent.
    pub sent_version: Option<String>,
    /// The version of the last response ACKed.
    pub acked_version: Option<String>,
    /// How many responses were ACKed.
    pub acks: u64,
    /// How many responses were NACKed.
    pub nacks: u64,
    /// The `error_detail` message of the last NACK.
    pub last_nack: Option<String>,
}

/// Every stream's status, shared by the streams that write it and the tests that read it.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    streams: Mutex<Streams>,
    /// Bumped on every change, for [`super::Server::wait_for`].
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Streams {
    next_id: u64,
    by_id: BTreeMap<u64, StreamStatus>,
}

// === impl StreamStatus ===

impl StreamStatus {
    /// The status of one type URL, if the client requested it.
    pub fn type_status(&self, type_url: &str) -> Option<&TypeStatus> {
        self.types.get(type_url)
    }

    /// The first metadata value under `key` (lowercase, as gRPC metadata keys are).
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client ACKed `version` of `type_url` (its latest ACK).
    pub fn acked(&self, type_url: &str, version: &str) -> bool {
        self.type_status(type_url)
            .is_some_and(|t| t.acked_version.as_deref() == Some(version))
    }
}

// === impl TypeStatus ===

impl TypeStatus {
    pub(crate) fn sent(&mut self, version: &str) {
        self.responses += 1;
        self.sent_version = Some(version.to_string());
    }

    pub(crate) fn acked(&mut self, version: &str) {
        self.acks += 1;
        self.acked_version = Some(version.to_string());
    }

    pub(crate) fn nacked(&mut self, message: &str) {
        self.nacks += 1;
        self.last_nack = Some(message.to_string());
    }
}

// === impl Registry ===

impl Registry {
    /// Records a new stream and returns its id.
    pub(crate) fn open(&self, protocol: Protocol, metadata: Vec<(String, String)>) -> u64 {
        let id = {
            let mut streams = self.lock();
            let id = streams.next_id;
            streams.next_id += 1;
            streams.by_id.insert(
                id,
                StreamStatus {
                    id,
                    protocol,
                    node_id: None,
                    metadata,
                    open: true,
                    types: BTreeMap::new(),
                },
            );
            id
        };
        self.notify();
        id
    }

    /// Updates the node id and the per-type status of a stream.
    pub(crate) fn update(
        &self,
        id: u64,
        node_id: Option<&str>,
        types: &BTreeMap<String, TypeStatus>,
    ) {
        {
            let mut streams = self.lock();
            let Some(stream) = streams.by_id.get_mut(&id) else {
                return;
            };
            if stream.node_id.as_deref() == node_id && &stream.types == types {
                return;
            }
            stream.node_id = node_id.map(str::to_string);
            stream.types.clone_from(types);
        }
        self.notify();
    }

    /// Marks a stream closed, and forgets the oldest closed streams beyond a bound.
    pub(crate) fn close(&self, id: u64) {
        {
            let mut streams = self.lock();
            if let Some(stream) = streams.by_id.get_mut(&id) {
                stream.open = false;
            }
            let closed: Vec<u64> = streams
                .by_id
                .values()
                .filter(|s| !s.open)
                .map(|s| s.id)
                .collect();
            let excess = closed.len().saturating_sub(CLOSED_STREAMS_KEPT);
            for id in &closed[..excess] {
                streams.by_id.remove(id);
            }
        }
        self.notify();
    }

    pub(crate) fn statuses(&self) -> Vec<StreamStatus> {
        self.lock().by_id.values().cloned().collect()
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A panic while holding the lock cannot leave the map half-updated in a way that matters to
    /// a test server, so a poisoned lock is used as is rather than spreading the panic.
    fn lock(&self) -> MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
