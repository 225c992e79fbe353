//! The server side of a state-of-the-world stream (`StreamAggregatedResources`), sans IO. The
//! rules it follows are in the [module docs](super).

use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
    google::protobuf::Any,
};

use super::{
    protocol::{InvalidRequest, LastSent, Nonces, Step, StreamMachine},
    resources::Snapshot,
    status::TypeStatus,
};

/// One state-of-the-world stream.
#[derive(Debug, Default)]
pub(crate) struct SotwStream {
    node_id: Option<String>,
    nonces: Nonces,
    types: BTreeMap<String, SotwType>,
    /// A copy of each type's status, kept in step with `types`.
    status: BTreeMap<String, TypeStatus>,
}

#[derive(Debug)]
struct SotwType {
    interest: Interest,
    last: LastSent,
    /// Name → own version of each resource the last response carried, to tell whether a new
    /// snapshot changes what this client would be sent.
    contents: BTreeMap<String, String>,
}

/// The resources a response of one type would carry: (name, resource, own version).
struct View<'a>(Vec<(&'a str, &'a Any, &'a str)>);

/// What a client subscribes to for one type.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Interest {
    /// Every resource. `legacy` when it came from an empty list rather than `*`: then an empty
    /// list keeps it, where it otherwise means "nothing".
    Wildcard {
        legacy: bool,
        names: BTreeSet<String>,
    },
    Named(BTreeSet<String>),
}

// === impl SotwStream ===

impl SotwStream {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Builds the response that sends `view`, and remembers it as the last one of its type.
    fn send(
        nonces: &mut Nonces,
        type_url: &str,
        state: &mut SotwType,
        view: View<'_>,
        snapshot: &Snapshot,
    ) -> DiscoveryResponse {
        state.last = LastSent {
            nonce: nonces.next(),
            version: snapshot.version().to_string(),
        };
        state.contents = view.contents();
        DiscoveryResponse {
            version_info: state.last.version.clone(),
            resources: view.0.into_iter().map(|(_, any, _)| any.clone()).collect(),
            type_url: type_url.to_string(),
            nonce: state.last.nonce.clone(),
            ..Default::default()
        }
    }
}

impl StreamMachine for SotwStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn on_request(
        &mut self,
        request: DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<Step<DiscoveryResponse>, InvalidRequest> {
        if request.type_url.is_empty() {
            return Err(InvalidRequest::NoTypeUrl);
        }
        if self.node_id.is_none() {
            self.node_id = request.node.map(|node| node.id);
        }
        let type_url = request.type_url;
        let (state, feedback, resubscribed) = match self.types.entry(type_url.clone()) {
            Entry::Vacant(entry) => {
                let state = entry.insert(SotwType {
                    interest: Interest::first(&request.resource_names),
                    last: LastSent::default(),
                    contents: BTreeMap::new(),
                });
                (state, None, true)
            }
            Entry::Occupied(entry) => {
                let state = entry.into_mut();
                let feedback = state
                    .last
                    .feedback(&request.response_nonce, request.error_detail.as_ref());
                let interest = state.interest.next(&request.resource_names);
                let resubscribed = !interest.same_resources(&state.interest);
                state.interest = interest;
                (state, feedback, resubscribed)
            }
        };
        let response = resubscribed.then(|| {
            let view = View::of(&type_url, &state.interest, snapshot);
            Self::send(&mut self.nonces, &type_url, state, view, snapshot)
        });

        let status = self.status.entry(type_url.clone()).or_default();
        state.interest.record(status);
        if let Some(feedback) = &feedback {
            feedback.record(status);
        }
        if let Some(response) = &response {
            status.sent(&response.version_info);
        }
        Ok(Step {
            type_url,
            feedback,
            response,
        })
    }

    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DiscoveryResponse> {
        let mut responses = Vec::new();
        for (type_url, state) in &mut self.types {
            // For Listener and Cluster a removal must be sent, as omission is how the client
            // learns of it. For the other types the client keeps what it has until it
            // unsubscribes, but the response still tells it the new version, as go-control-plane
            // does.
            let view = View::of(type_url, &state.interest, snapshot);
            if view.contents() == state.contents {
                continue;
            }
            let response = Self::send(&mut self.nonces, type_url, state, view, snapshot);
            if let Some(status) = self.status.get_mut(type_url) {
                status.sent(&response.version_info);
            }
            responses.push(response);
        }
        responses
    }

    fn node_id(&self) -> Option<&str> {
        self.node_id.as_deref()
    }

    fn types(&self) -> &BTreeMap<String, TypeStatus> {
        &self.status
    }
}

// === impl View ===

impl<'a> View<'a> {
    /// What `interest` selects of `type_url` in `snapshot`, by name.
    fn of(type_url: &str, interest: &Interest, snapshot: &'a Snapshot) -> Self {
        match interest {
            Interest::Wildcard { .. } => Self(snapshot.of_type(type_url).collect()),
            Interest::Named(names) => Self(
                names
                    .iter()
                    .filter_map(|name| snapshot.get(type_url, name))
                    .collect(),
            ),
        }
    }

    fn contents(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(name, _, version)| (name.to_string(), version.to_string()))
            .collect()
    }
}

// === impl Interest ===

impl Interest {
    /// The interest of a type's first request: an empty list is a wildcard.
    fn first(names: &[String]) -> Self {
        if names.is_empty() {
            Self::Wildcard {
                legacy: true,
                names: BTreeSet::new(),
            }
        } else {
            Self::from_names(names)
        }
    }

    /// The interest after a later request: an empty list keeps a legacy wildcard, and otherwise
    /// the list replaces the subscription.
    fn next(&self, names: &[String]) -> Self {
        match self {
            Self::Wildcard { legacy: true, .. } if names.is_empty() => self.clone(),
            _ => Self::from_names(names),
        }
    }

    fn from_names(names: &[String]) -> Self {
        let explicit = names.iter().filter(|n| *n != "*").cloned().collect();
        if names.iter().any(|n| n == "*") {
            Self::Wildcard {
                legacy: false,
                names: explicit,
            }
        } else {
            Self::Named(explicit)
        }
    }

    /// Whether both subscribe to the same resources (a wildcard covers every name).
    fn same_resources(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Wildcard { .. }, Self::Wildcard { .. }) => true,
            (Self::Named(a), Self::Named(b)) => a == b,
            _ => false,
        }
    }

    fn record(&self, status: &mut TypeStatus) {
        let (wildcard, names) = match self {
            Self::Wildcard { names, .. } => (true, names),
            Self::Named(names) => (false, names),
        };
        status.wildcard = wildcard;
        status.names.clone_from(names);
    }
}

#[cfg(test)]
mod tests;
