//! The incremental ADS client (`DeltaAggregatedResources`), sans IO: responses in, requests out.
//!
//! # What a response does
//! - A response with a resource of the wrong type, without a name, with a name twice, or with a
//!   name both updated and removed is rejected whole, as Envoy's `DeltaSubscriptionState` does.
//! - Otherwise the new or changed resources and the removed names the client holds go to the
//!   [`Handler`]. Each rejected resource is rejected alone; the others are applied and their
//!   versions recorded. A rejected resource keeps the version the client held before, so that
//!   `initial_resource_versions` after a reconnect says exactly what is in use. (Envoy records
//!   no version from a response it NACKs; recording the accepted ones only makes the server
//!   resend less.)
//! - Removed names the client does not hold are ignored. A removed name of a named watch stays
//!   subscribed: the server said it does not exist now, and must send it if it appears.
//! - ACK: `response_nonce` is the response's. NACK: the same, plus `error_detail` naming each
//!   rejected resource and the reason. Delta has no version in requests.
//!
//! # Subscriptions
//! Wildcard types send an empty `resource_names_subscribe` on a new stream (the legacy wildcard
//! form, as Envoy does when its only interest is the wildcard). Named types send their names in
//! `resource_names_subscribe`; later changes go out as spontaneous requests with
//! `resource_names_subscribe` / `resource_names_unsubscribe` and no nonce, as the protocol asks.
//!
//! # Reconnect
//! [`DeltaClient::on_disconnect`] keeps every accepted resource and its version. The first
//! request of each type on the next stream repeats the whole interest and lists the held
//! resources in `initial_resource_versions`, so the server sends only what changed.

use std::{collections::BTreeSet, time::SystemTime};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse},
    },
    google::rpc::Status,
};

use crate::{
    envelope,
    handler::Handler,
    metrics::Metrics,
    nack,
    state::{InvalidWatch, TypeState, Watch},
    stream::{Core, UnexpectedResponse},
};

/// An incremental ADS client: the protocol state of every watched type, with no IO.
///
/// Driven like [`crate::SotwClient`]: [`start_stream`](Self::start_stream) when a stream opens,
/// [`handle_response`](Self::handle_response) for each response, and
/// [`on_disconnect`](Self::on_disconnect) when it ends. Requests must be sent in the order the
/// client returns them.
#[derive(Debug)]
pub struct DeltaClient {
    core: Core,
}

// === impl DeltaClient ===

impl DeltaClient {
    /// A client for `node` with these watches, in the order their initial requests go out.
    pub fn new(node: Node, watches: impl IntoIterator<Item = Watch>) -> Self {
        Self {
            core: Core::new(node, watches),
        }
    }

    /// Replaces the clock the metrics read (tests pin it).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.core.clock = clock;
        self
    }

    /// A stream has opened: returns its initial requests, one per type that has something to ask
    /// for, each with the versions the client holds.
    pub fn start_stream(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.core.start_stream();
        let mut requests = Vec::new();
        for index in 0..self.core.types.len() {
            let state = &self.core.types[index];
            if !state.interest().wants_anything() {
                continue;
            }
            let subscribe = state.interest().request_names();
            let initial_resource_versions = state.held_versions().collect();
            let request = DeltaDiscoveryRequest {
                resource_names_subscribe: subscribe,
                initial_resource_versions,
                ..self.request(index)
            };
            requests.push(request);
        }
        requests
    }

    /// The stream has ended. Accepted resources and versions are kept; nonces are dropped.
    pub fn on_disconnect(&mut self) {
        self.core.disconnect();
    }

    /// Whether a stream is started and not yet disconnected.
    pub fn is_streaming(&self) -> bool {
        self.core.is_streaming()
    }

    /// Processes one response and returns the ACK or NACK to send.
    ///
    /// Errors, with nothing to send, when no stream is started or the type is not watched.
    pub fn handle_response<H: Handler + ?Sized>(
        &mut self,
        response: &DeltaDiscoveryResponse,
        handler: &mut H,
    ) -> Result<DeltaDiscoveryRequest, UnexpectedResponse> {
        let index = self.core.response_index(&response.type_url)?;
        let now = (self.core.clock)();
        let type_url = response.type_url.as_str();
        let version = response.system_version_info.as_str();
        self.core.types[index].set_nonce(&response.nonce);

        let (entries, removed) = match envelope::read_delta(response) {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(type_url, nonce = %response.nonce, %error, "rejecting response");
                self.core.metrics.rejected(type_url, 0, now);
                let status = nack::invalid_response(type_url, &error);
                return Ok(self.reply(index, Some(status)));
            }
        };

        let state = &mut self.core.types[index];
        let rejected = state.apply(version, &entries, &removed, handler);
        if rejected.is_empty() {
            state.set_version(version);
            self.core.metrics.accepted(type_url, now);
            tracing::debug!(type_url, nonce = %response.nonce, "ACK");
            return Ok(self.reply(index, None));
        }
        let status = nack::rejected_resources(type_url, &rejected);
        tracing::warn!(type_url, nonce = %response.nonce, error = %status.message, "NACK");
        self.core.metrics.rejected(type_url, rejected.len(), now);
        Ok(self.reply(index, Some(status)))
    }

    /// Replaces the names of a named watch. Returns the request that subscribes to the new names
    /// and unsubscribes from the dropped ones, or `None` when nothing changed or no stream is up
    /// (the next stream's initial request will carry the names).
    ///
    /// Resources no longer subscribed are forgotten: the caller, who dropped them, drops them
    /// from its own state too.
    pub fn set_names<S: Into<String>>(
        &mut self,
        type_url: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Option<DeltaDiscoveryRequest>, InvalidWatch> {
        let names: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        let (index, change) = self.core.set_names(type_url, names)?;
        if (change.added.is_empty() && change.removed.is_empty()) || !self.core.is_streaming() {
            return Ok(None);
        }
        // A type not yet requested on this stream had no names, so `added` is its whole
        // interest, as a first request must state.
        Ok(Some(DeltaDiscoveryRequest {
            resource_names_subscribe: change.added,
            resource_names_unsubscribe: change.removed,
            ..self.request(index)
        }))
    }

    /// Adds names to a named watch; see [`set_names`](Self::set_names).
    pub fn subscribe<S: Into<String>>(
        &mut self,
        type_url: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Option<DeltaDiscoveryRequest>, InvalidWatch> {
        let add = names.into_iter().map(Into::into);
        let names = self.core.names_with(type_url, add, &BTreeSet::new())?;
        self.set_names(type_url, names)
    }

    /// Removes names from a named watch; see [`set_names`](Self::set_names).
    pub fn unsubscribe<S: Into<String>>(
        &mut self,
        type_url: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Option<DeltaDiscoveryRequest>, InvalidWatch> {
        let remove = names.into_iter().map(Into::into).collect();
        let names = self.core.names_with(type_url, [], &remove)?;
        self.set_names(type_url, names)
    }

    /// The state of one watched type.
    pub fn state(&self, type_url: &str) -> Option<&TypeState> {
        self.core.state(type_url)
    }

    /// The state of every watched type, in subscription order.
    pub fn states(&self) -> impl Iterator<Item = &TypeState> {
        self.core.types.iter()
    }

    /// The client's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }

    /// The ACK or NACK of the latest response of type `index`.
    fn reply(&mut self, index: usize, error_detail: Option<Status>) -> DeltaDiscoveryRequest {
        let nonce = self.core.types[index].nonce().to_string();
        DeltaDiscoveryRequest {
            response_nonce: nonce,
            error_detail,
            ..self.request(index)
        }
    }

    /// A bare request for type `index`: its type URL, and the node if it is the stream's first.
    fn request(&mut self, index: usize) -> DeltaDiscoveryRequest {
        let node = self.core.take_node();
        let state = &self.core.types[index];
        DeltaDiscoveryRequest {
            node,
            type_url: state.type_url().to_string(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
