//! The state-of-the-world ADS client (`StreamAggregatedResources`), sans IO: responses in,
//! requests out.
//!
//! # What a response does
//! - Every resource is read for its name; a response with a resource of the wrong type, without a
//!   readable name, or with a name twice is rejected whole and nothing in it is applied (see
//!   [`InvalidResponse`](crate::InvalidResponse) for how this compares with Envoy).
//! - Otherwise the resources that are new or changed go to the [`Handler`], which rejects some or
//!   none. Each rejected resource is rejected alone: the others are applied.
//! - For Listener and Cluster a response is the complete set, so a held resource missing from it
//!   is removed. For every other type a response only adds or updates; a resource goes away when
//!   the user stops subscribing to it ([`SotwClient::set_names`]).
//! - If nothing was rejected, the client ACKs: `version_info` and `response_nonce` echo the
//!   response, and the response's version becomes the accepted one.
//! - If anything was rejected, the client NACKs: `version_info` is the last version accepted
//!   whole, `response_nonce` is the response's, and `error_detail` names each rejected resource
//!   and the reason (see [`crate::nack`]).
//!
//! # Partial acceptance, decided against Envoy's behaviour
//! A state-of-the-world version covers the whole type, so a response is accepted or refused as a
//! unit on the wire. Envoy's LDS (`LdsApiImpl::onConfigUpdate`) and CDS (`CdsApiHelper`) still
//! apply every listener or cluster that is valid, apply the removals, and report the invalid ones
//! in one error; the mux then NACKs without moving `version_info`. Skiff does the same, for every
//! type: the valid resources of a NACKed response are live, the rejected ones keep their previous
//! version (or stay absent), and the NACK carries the last version accepted whole. When the server
//! sends the next version, the resources already applied are byte-identical and are not handed to
//! the handler again.
//!
//! # Nonces
//! Every response is processed, whatever the nonce, as Envoy does: the client never discards a
//! response as stale. Staleness is the server's call ("The management server should not send a
//! DiscoveryResponse for any DiscoveryRequest that has a stale nonce"), which the client helps by
//! putting the latest nonce of the type in every request, including subscription changes, and the
//! current names in every ACK. Nonces live only as long as their stream.
//!
//! # Reconnect
//! [`SotwClient::on_disconnect`] keeps the accepted versions and resources. The first requests of
//! the next stream ([`SotwClient::start_stream`]) carry each type's accepted `version_info` and
//! its names, no nonce, and the node on the first of them.

use std::{collections::BTreeSet, time::SystemTime};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
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
    type_url::is_full_state_in_sotw,
};

/// A state-of-the-world ADS client: the protocol state of every watched type, with no IO.
///
/// The transport calls [`start_stream`](Self::start_stream) when a stream opens and sends what it
/// returns, feeds each response to [`handle_response`](Self::handle_response) and sends the
/// request it returns, and calls [`on_disconnect`](Self::on_disconnect) when the stream ends.
/// Requests must be sent in the order the client returns them.
#[derive(Debug)]
pub struct SotwClient {
    core: Core,
}

// === impl SotwClient ===

impl SotwClient {
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
    /// for (a named type with no names is skipped: an empty list would read as a wildcard).
    pub fn start_stream(&mut self) -> Vec<DiscoveryRequest> {
        self.core.start_stream();
        let wanted: Vec<usize> = (0..self.core.types.len())
            .filter(|&i| self.core.types[i].interest().wants_anything())
            .collect();
        wanted.into_iter().map(|i| self.request(i, None)).collect()
    }

    /// The stream has ended. Accepted versions and resources are kept; nonces are dropped.
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
        response: &DiscoveryResponse,
        handler: &mut H,
    ) -> Result<DiscoveryRequest, UnexpectedResponse> {
        let index = self.core.response_index(&response.type_url)?;
        let now = (self.core.clock)();
        let type_url = response.type_url.as_str();
        self.core.types[index].set_nonce(&response.nonce);

        let entries = match envelope::read_sotw(response) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(type_url, version = %response.version_info, %error, "rejecting response");
                self.core.metrics.rejected(type_url, 0, now);
                let status = nack::invalid_response(type_url, &error);
                return Ok(self.request(index, Some(status)));
            }
        };

        let state = &mut self.core.types[index];
        let absent = if is_full_state_in_sotw(type_url) {
            state.held_names_absent_from(&entries)
        } else {
            Vec::new()
        };
        let absent: Vec<&str> = absent.iter().map(String::as_str).collect();
        let rejected = state.apply(&response.version_info, &entries, &absent, handler);

        if rejected.is_empty() {
            state.set_version(&response.version_info);
            self.core.metrics.accepted(type_url, now);
            tracing::debug!(type_url, version = %response.version_info, "ACK");
            return Ok(self.request(index, None));
        }
        let status = nack::rejected_resources(type_url, &rejected);
        tracing::warn!(type_url, version = %response.version_info, error = %status.message, "NACK");
        self.core.metrics.rejected(type_url, rejected.len(), now);
        Ok(self.request(index, Some(status)))
    }

    /// Replaces the names of a named watch. Returns the request that tells the server, or `None`
    /// when the names did not change or no stream is up (the next stream's initial request will
    /// carry them).
    ///
    /// An empty list is safe to send: a named type with no names is not asked for when a stream
    /// starts, so its list can only become empty on a stream that already asked for names, where
    /// the protocol reads an empty list as "no interest" rather than as a wildcard.
    ///
    /// Resources no longer subscribed are forgotten: the caller, who dropped them, drops them
    /// from its own state too.
    pub fn set_names<S: Into<String>>(
        &mut self,
        type_url: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Option<DiscoveryRequest>, InvalidWatch> {
        let names: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        let (index, change) = self.core.set_names(type_url, names)?;
        if (change.added.is_empty() && change.removed.is_empty()) || !self.core.is_streaming() {
            return Ok(None);
        }
        Ok(Some(self.request(index, None)))
    }

    /// Adds names to a named watch; see [`set_names`](Self::set_names).
    pub fn subscribe<S: Into<String>>(
        &mut self,
        type_url: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Option<DiscoveryRequest>, InvalidWatch> {
        let add = names.into_iter().map(Into::into);
        let names = self.core.names_with(type_url, add, &BTreeSet::new())?;
        self.set_names(type_url, names)
    }

    /// Removes names from a named watch; see [`set_names`](Self::set_names).
    pub fn unsubscribe<S: Into<String>>(
        &mut self,
        type_url: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Option<DiscoveryRequest>, InvalidWatch> {
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

    /// The request for type `index` as the state stands: accepted version, latest nonce, current
    /// names, the node if it is the stream's first request, and `error_detail` for a NACK.
    fn request(&mut self, index: usize, error_detail: Option<Status>) -> DiscoveryRequest {
        let node = self.core.take_node();
        let state = &self.core.types[index];
        DiscoveryRequest {
            version_info: state.version().to_string(),
            node,
            resource_names: state.interest().request_names(),
            type_url: state.type_url().to_string(),
            response_nonce: state.nonce().to_string(),
            error_detail,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
