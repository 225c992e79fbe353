//! What both protocol variants keep across the type URLs of one ADS client: the node, whether a
//! stream is up and has carried the node yet, the per-type states in subscription order, the
//! metrics and the clock.

use std::{collections::BTreeSet, time::SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;

use crate::{
    metrics::Metrics,
    state::{InvalidWatch, NameChange, TypeState, Watch},
};

/// Why the client could not take a response.
///
/// Nothing is sent back for these: answering a type the client never subscribed to with an
/// empty request would read, to the server, as a wildcard subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnexpectedResponse {
    /// The response's type URL is not one this client watches.
    #[error("response of type {type_url:?}, which this client does not watch; ignored")]
    NotWatched {
        /// The response's type URL.
        type_url: String,
    },
    /// A response arrived while no stream is started.
    #[error("response of type {type_url:?} with no stream started; ignored")]
    NoStream {
        /// The response's type URL.
        type_url: String,
    },
}

/// Stream-level state shared by [`crate::SotwClient`] and [`crate::DeltaClient`].
#[derive(Debug)]
pub(crate) struct Core {
    node: Node,
    pub(crate) types: Vec<TypeState>,
    /// The node has not gone out on the current stream yet.
    node_pending: bool,
    streaming: bool,
    pub(crate) metrics: Metrics,
    pub(crate) clock: fn() -> SystemTime,
}

// === impl Core ===

impl Core {
    /// Types are kept in the order given, which is the order of the initial requests: give CDS
    /// before EDS before LDS before RDS to follow Envoy's warming order. A type given twice keeps
    /// its first position and its last watch.
    pub(crate) fn new(node: Node, watches: impl IntoIterator<Item = Watch>) -> Self {
        let mut types: Vec<TypeState> = Vec::new();
        for watch in watches {
            match types.iter_mut().find(|t| t.type_url() == watch.type_url) {
                Some(existing) => *existing = TypeState::new(watch),
                None => types.push(TypeState::new(watch)),
            }
        }
        Self {
            node,
            types,
            node_pending: true,
            streaming: false,
            metrics: Metrics::default(),
            clock: SystemTime::now,
        }
    }

    pub(crate) fn start_stream(&mut self) {
        self.streaming = true;
        self.node_pending = true;
        for state in &mut self.types {
            state.forget_stream();
        }
    }

    pub(crate) fn disconnect(&mut self) {
        self.streaming = false;
        self.node_pending = true;
        for state in &mut self.types {
            state.forget_stream();
        }
    }

    pub(crate) fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// The node for the request about to be sent: only the first request of a stream carries
    /// it, which the protocol allows ("Only the first request on a stream is guaranteed to carry
    /// the node identifier") and Envoy does with `set_node_on_first_message_only`.
    pub(crate) fn take_node(&mut self) -> Option<Node> {
        std::mem::take(&mut self.node_pending).then(|| self.node.clone())
    }

    pub(crate) fn index(&self, type_url: &str) -> Option<usize> {
        self.types.iter().position(|t| t.type_url() == type_url)
    }

    pub(crate) fn state(&self, type_url: &str) -> Option<&TypeState> {
        self.types.iter().find(|t| t.type_url() == type_url)
    }

    /// Finds the type a response is for, or says why the response cannot be taken.
    pub(crate) fn response_index(&self, type_url: &str) -> Result<usize, UnexpectedResponse> {
        if !self.streaming {
            return Err(UnexpectedResponse::NoStream {
                type_url: type_url.to_string(),
            });
        }
        self.index(type_url)
            .ok_or_else(|| UnexpectedResponse::NotWatched {
                type_url: type_url.to_string(),
            })
    }

    /// Replaces the names of a named watch; returns the type's index and the change.
    pub(crate) fn set_names(
        &mut self,
        type_url: &str,
        names: BTreeSet<String>,
    ) -> Result<(usize, NameChange), InvalidWatch> {
        let index = self
            .index(type_url)
            .ok_or_else(|| InvalidWatch::NotWatched {
                type_url: type_url.to_string(),
            })?;
        let change = self.types[index].set_names(names)?;
        Ok((index, change))
    }

    /// The names of a named watch with `add` added and `remove` removed.
    pub(crate) fn names_with(
        &self,
        type_url: &str,
        add: impl IntoIterator<Item = String>,
        remove: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, InvalidWatch> {
        let state = self
            .state(type_url)
            .ok_or_else(|| InvalidWatch::NotWatched {
                type_url: type_url.to_string(),
            })?;
        let crate::Interest::Named(current) = state.interest() else {
            return Err(InvalidWatch::Wildcard {
                type_url: type_url.to_string(),
            });
        };
        let mut names = current.clone();
        names.extend(add);
        names.retain(|name| !remove.contains(name));
        Ok(names)
    }
}
