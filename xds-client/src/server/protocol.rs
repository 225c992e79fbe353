//! What the two ADS variants have in common on the server side: a sans-IO stream state machine
//! that takes requests and snapshots and returns responses, and what a request says about the
//! previous response.

use std::collections::BTreeMap;

use super::{resources::Snapshot, status::TypeStatus};

/// The server side of one ADS stream, with no IO: the transport feeds it every request and every
/// new snapshot, and sends the responses it returns, in order.
pub(crate) trait StreamMachine: Send + 'static {
    /// The request message of the variant.
    type Request: Send + 'static;
    /// The response message of the variant.
    type Response: Send + 'static;

    /// Handles a request against the snapshot being served.
    fn on_request(
        &mut self,
        request: Self::Request,
        snapshot: &Snapshot,
    ) -> Result<Step<Self::Response>, InvalidRequest>;

    /// Handles a new snapshot: the responses that bring every subscription up to date.
    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Self::Response>;

    /// The node id of the first request that carried a node.
    fn node_id(&self) -> Option<&str>;

    /// The status of every type requested so far.
    fn types(&self) -> &BTreeMap<String, TypeStatus>;
}

/// The outcome of one request.
#[derive(Debug)]
pub(crate) struct Step<R> {
    /// The request's type URL.
    pub(crate) type_url: String,
    /// What the request said about the last response of its type, if it answered it.
    pub(crate) feedback: Option<Feedback>,
    /// The response to send, if any.
    pub(crate) response: Option<R>,
}

/// A client's verdict on the last response sent for a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Feedback {
    /// Accepted: the response's version is now the client's.
    Ack {
        /// The version of the response ACKed.
        version: String,
    },
    /// Rejected, with the client's reason.
    Nack {
        /// The version of the response NACKed.
        version: String,
        /// `error_detail.message`.
        message: String,
    },
}

/// A request that breaks the protocol; it ends its stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidRequest {
    /// Every request on an aggregated stream must say which type it is about.
    #[error(
        "the request has no type_url: every request on an ADS stream must name its resource type"
    )]
    NoTypeUrl,
}

/// The nonces of one stream: `"1"`, `"2"`, ... across all its types.
#[derive(Debug, Default)]
pub(crate) struct Nonces {
    last: u64,
}

/// The last response sent for a type: what an ACK or NACK refers to. The default, with an empty
/// nonce, stands for "none yet": no request can answer it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LastSent {
    pub(crate) nonce: String,
    pub(crate) version: String,
}

// === impl Nonces ===

impl Nonces {
    pub(crate) fn next(&mut self) -> String {
        self.last += 1;
        self.last.to_string()
    }
}

// === impl LastSent ===

impl LastSent {
    /// What a request with this `response_nonce` and `error_detail` says about the last
    /// response. A request with an older nonce was sent before the client saw the last response,
    /// so it says nothing about it ("The management server should not send a DiscoveryResponse
    /// for any DiscoveryRequest that has a stale nonce"). Any `error_detail` makes a NACK, even
    /// one with code 0.
    pub(crate) fn feedback(
        &self,
        response_nonce: &str,
        error_detail: Option<&envoy_types::pb::google::rpc::Status>,
    ) -> Option<Feedback> {
        if response_nonce.is_empty() || response_nonce != self.nonce {
            return None;
        }
        Some(match error_detail {
            None => Feedback::Ack {
                version: self.version.clone(),
            },
            Some(status) => Feedback::Nack {
                version: self.version.clone(),
                message: status.message.clone(),
            },
        })
    }
}

// === impl Feedback ===

impl Feedback {
    /// Records this feedback in a type's status.
    pub(crate) fn record(&self, status: &mut TypeStatus) {
        match self {
            Self::Ack { version } => status.acked(version),
            Self::Nack { message, .. } => status.nacked(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status;

    use super::*;

    fn sent() -> LastSent {
        LastSent {
            nonce: "7".to_string(),
            version: "3".to_string(),
        }
    }

    #[test]
    fn the_last_nonce_without_error_is_an_ack_of_its_version() {
        let feedback = sent().feedback("7", None);
        assert_eq!(
            feedback,
            Some(Feedback::Ack {
                version: "3".to_string()
            })
        );
    }

    #[test]
    fn the_last_nonce_with_error_detail_is_a_nack() {
        let error = Status {
            code: 3,
            message: "bad cluster".to_string(),
            details: vec![],
        };
        let feedback = sent().feedback("7", Some(&error));
        assert_eq!(
            feedback,
            Some(Feedback::Nack {
                version: "3".to_string(),
                message: "bad cluster".to_string()
            })
        );
    }

    #[test]
    fn a_stale_or_missing_nonce_says_nothing() {
        assert_eq!(sent().feedback("6", None), None);
        assert_eq!(sent().feedback("", None), None);
        assert_eq!(LastSent::default().feedback("", None), None);
        assert_eq!(LastSent::default().feedback("7", None), None);
    }

    #[test]
    fn nonces_are_unique_on_a_stream() {
        let mut nonces = Nonces::default();
        assert_eq!(nonces.next(), "1");
        assert_eq!(nonces.next(), "2");
    }
}
