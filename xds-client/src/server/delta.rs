//! The server side of an incremental stream (`DeltaAggregatedResources`), sans IO. The rules it
//! follows are in the [module docs](super).

use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as XdsResource,
};

use super::{
    protocol::{InvalidRequest, LastSent, Nonces, Step, StreamMachine},
    resources::Snapshot,
    status::TypeStatus,
};

/// The name that subscribes to every resource of a type.
const WILDCARD: &str = "*";

/// One incremental stream.
#[derive(Debug, Default)]
pub(crate) struct DeltaStream {
    node_id: Option<String>,
    nonces: Nonces,
    types: BTreeMap<String, DeltaType>,
    /// A copy of each type's status, kept in step with `types`.
    status: BTreeMap<String, TypeStatus>,
}

#[derive(Debug, Default)]
struct DeltaType {
    wildcard: bool,
    /// The names subscribed explicitly.
    names: BTreeSet<String>,
    /// Name → own version of each resource the client holds, as far as the server knows: what
    /// it said in `initial_resource_versions`, then what it was sent. A NACKed resource stays
    /// here at the version sent, so that it is not sent again until it changes.
    held: BTreeMap<String, String>,
    last: LastSent,
}

/// What a response of one type would carry.
#[derive(Debug, Default)]
struct Diff {
    resources: Vec<XdsResource>,
    removed: BTreeSet<String>,
}

// === impl DeltaStream ===

impl DeltaStream {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn respond(
        nonces: &mut Nonces,
        type_url: &str,
        state: &mut DeltaType,
        diff: Diff,
        snapshot: &Snapshot,
    ) -> DeltaDiscoveryResponse {
        state.last = LastSent {
            nonce: nonces.next(),
            version: snapshot.version().to_string(),
        };
        DeltaDiscoveryResponse {
            system_version_info: state.last.version.clone(),
            resources: diff.resources,
            type_url: type_url.to_string(),
            removed_resources: diff.removed.into_iter().collect(),
            nonce: state.last.nonce.clone(),
            ..Default::default()
        }
    }
}

impl StreamMachine for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<Step<DeltaDiscoveryResponse>, InvalidRequest> {
        if request.type_url.is_empty() {
            return Err(InvalidRequest::NoTypeUrl);
        }
        if self.node_id.is_none() {
            self.node_id = request.node.map(|node| node.id);
        }
        let type_url = request.type_url;
        let (state, feedback, first) = match self.types.entry(type_url.clone()) {
            Entry::Vacant(entry) => {
                let state = entry.insert(DeltaType {
                    wildcard: request.resource_names_subscribe.is_empty(),
                    held: request.initial_resource_versions.into_iter().collect(),
                    ..DeltaType::default()
                });
                (state, None, true)
            }
            Entry::Occupied(entry) => {
                let state = entry.into_mut();
                let feedback = state
                    .last
                    .feedback(&request.response_nonce, request.error_detail.as_ref());
                (state, feedback, false)
            }
        };
        let requested = state.subscribe(
            request.resource_names_subscribe,
            &request.resource_names_unsubscribe,
        );
        let diff = state.diff(&type_url, snapshot, &requested);
        let response = (first || !diff.is_empty())
            .then(|| Self::respond(&mut self.nonces, &type_url, state, diff, snapshot));

        let status = self.status.entry(type_url.clone()).or_default();
        status.wildcard = state.wildcard;
        status.names.clone_from(&state.names);
        if let Some(feedback) = &feedback {
            feedback.record(status);
        }
        if let Some(response) = &response {
            status.sent(&response.system_version_info);
        }
        Ok(Step {
            type_url,
            feedback,
            response,
        })
    }

    fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        let mut responses = Vec::new();
        for (type_url, state) in &mut self.types {
            let diff = state.diff(type_url, snapshot, &BTreeSet::new());
            if diff.is_empty() {
                continue;
            }
            let response = Self::respond(&mut self.nonces, type_url, state, diff, snapshot);
            if let Some(status) = self.status.get_mut(type_url) {
                status.sent(&response.system_version_info);
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

// === impl DeltaType ===

impl DeltaType {
    /// Applies a request's subscription changes, and returns the names it subscribed to. The
    /// client forgets what it unsubscribes from without being told, so those leave `held`.
    fn subscribe(&mut self, subscribe: Vec<String>, unsubscribe: &[String]) -> BTreeSet<String> {
        let mut requested = BTreeSet::new();
        for name in subscribe {
            if name == WILDCARD {
                self.wildcard = true;
            } else {
                self.names.insert(name.clone());
                requested.insert(name);
            }
        }
        for name in unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
            } else {
                self.names.remove(name);
                requested.remove(name);
            }
        }
        let (wildcard, names) = (self.wildcard, &self.names);
        self.held.retain(|name, _| wildcard || names.contains(name));
        requested
    }

    /// What the client lacks: subscribed resources it does not hold at their current version,
    /// held resources that are gone, and names it just `requested` that do not exist. Updates
    /// `held` as if the response were sent.
    fn diff(&mut self, type_url: &str, snapshot: &Snapshot, requested: &BTreeSet<String>) -> Diff {
        let mut diff = Diff::default();
        let subscribed: Vec<_> = if self.wildcard {
            snapshot.of_type(type_url).collect()
        } else {
            self.names
                .iter()
                .filter_map(|name| snapshot.get(type_url, name))
                .collect()
        };
        for (name, any, version) in subscribed {
            if self.held.get(name).map(String::as_str) != Some(version) {
                self.held.insert(name.to_string(), version.to_string());
                diff.resources.push(XdsResource {
                    name: name.to_string(),
                    version: version.to_string(),
                    resource: Some(any.clone()),
                    ..Default::default()
                });
            }
        }
        self.held.retain(|name, _| {
            let exists = snapshot.get(type_url, name).is_some();
            if !exists {
                diff.removed.insert(name.clone());
            }
            exists
        });
        for name in requested {
            if snapshot.get(type_url, name).is_none() {
                diff.removed.insert(name.clone());
            }
        }
        diff
    }
}

// === impl Diff ===

impl Diff {
    fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests;
