//! What the client keeps per type URL, in both protocol variants: what it subscribes to, the
//! version and nonce of the conversation, and the name, version and digest of every resource it
//! holds.
//!
//! The payloads themselves stay with the handler; the client keeps only enough to compute what
//! changed, to NACK with the last good version, and to tell a new stream what it already has.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::{
    envelope::Entry,
    handler::{Handler, Rejected, Resource, Update},
};

/// A type URL to subscribe to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub(crate) type_url: String,
    pub(crate) interest: Interest,
}

/// How the client subscribes to one type URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// Every resource the server decides the node needs: Envoy's choice for LDS and CDS.
    Wildcard,
    /// Only these names: Envoy's choice for RDS and EDS, following what the accepted listeners
    /// and clusters reference.
    Named(BTreeSet<String>),
}

/// The client's state for one type URL.
#[derive(Debug, Clone)]
pub struct TypeState {
    type_url: String,
    interest: Interest,
    version: String,
    nonce: String,
    resources: BTreeMap<String, Held>,
}

/// What the client remembers of an accepted resource.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    version: String,
    digest: u64,
}

/// A change of subscribed names: what to subscribe to and unsubscribe from.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct NameChange {
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
}

/// Why a subscription change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWatch {
    /// The client was not built with a watch for this type URL.
    #[error("type {type_url} is not watched by this client")]
    NotWatched {
        /// The type URL asked for.
        type_url: String,
    },
    /// The type URL is watched by wildcard, so the server chooses its names.
    #[error("type {type_url} is a wildcard watch; its names are chosen by the server")]
    Wildcard {
        /// The type URL asked for.
        type_url: String,
    },
}

// === impl Watch ===

impl Watch {
    /// Subscribes to every resource of `type_url` the server has for this node.
    pub fn wildcard(type_url: impl Into<String>) -> Self {
        Self {
            type_url: type_url.into(),
            interest: Interest::Wildcard,
        }
    }

    /// Subscribes to the resources of `type_url` with these names; more can be added later with
    /// `set_names`, `subscribe` and `unsubscribe`.
    pub fn named<S: Into<String>>(
        type_url: impl Into<String>,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            type_url: type_url.into(),
            interest: Interest::Named(names.into_iter().map(Into::into).collect()),
        }
    }
}

// === impl Interest ===

impl Interest {
    /// The names to put in a request: none for a wildcard (Envoy's legacy wildcard form, which
    /// every server understands), the subscribed names otherwise.
    pub(crate) fn request_names(&self) -> Vec<String> {
        match self {
            Self::Wildcard => Vec::new(),
            Self::Named(names) => names.iter().cloned().collect(),
        }
    }

    /// Whether a first request on a stream has something to ask for.
    pub(crate) fn wants_anything(&self) -> bool {
        match self {
            Self::Wildcard => true,
            Self::Named(names) => !names.is_empty(),
        }
    }

    fn includes(&self, name: &str) -> bool {
        match self {
            Self::Wildcard => true,
            Self::Named(names) => names.contains(name),
        }
    }
}

// === impl TypeState ===

impl TypeState {
    pub(crate) fn new(watch: Watch) -> Self {
        Self {
            type_url: watch.type_url,
            interest: watch.interest,
            version: String::new(),
            nonce: String::new(),
            resources: BTreeMap::new(),
        }
    }

    /// The type URL.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// How the client subscribes to this type.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// The version of the last response accepted whole: what state-of-the-world requests carry
    /// as `version_info`, ACK or NACK. In delta, the last accepted `system_version_info`, kept
    /// for display only.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The nonce of the last response of this type on the current stream, empty after a
    /// disconnect: a nonce is only valid on the stream that carried it.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The accepted resources, as (name, version), ordered by name.
    pub fn resources(&self) -> impl Iterator<Item = (&str, &str)> {
        self.resources
            .iter()
            .map(|(name, held)| (name.as_str(), held.version.as_str()))
    }

    /// The version of the accepted resource `name`, if the client holds one.
    pub fn resource_version(&self, name: &str) -> Option<&str> {
        self.resources.get(name).map(|held| held.version.as_str())
    }

    pub(crate) fn set_nonce(&mut self, nonce: &str) {
        nonce.clone_into(&mut self.nonce);
    }

    pub(crate) fn set_version(&mut self, version: &str) {
        version.clone_into(&mut self.version);
    }

    pub(crate) fn forget_stream(&mut self) {
        self.nonce.clear();
    }

    /// Replaces the subscribed names; forgets the resources no longer subscribed, so that a
    /// later subscription fetches them again.
    pub(crate) fn set_names(
        &mut self,
        names: BTreeSet<String>,
    ) -> Result<NameChange, InvalidWatch> {
        let Interest::Named(current) = &mut self.interest else {
            return Err(InvalidWatch::Wildcard {
                type_url: self.type_url.clone(),
            });
        };
        let change = NameChange {
            added: names.difference(current).cloned().collect(),
            removed: current.difference(&names).cloned().collect(),
        };
        for name in &change.removed {
            self.resources.remove(name);
        }
        *current = names;
        Ok(change)
    }

    /// The names this client holds that are absent from `entries`: the deletions a
    /// full-state response implies.
    pub(crate) fn held_names_absent_from(&self, entries: &[Entry<'_>]) -> Vec<String> {
        let present: HashSet<&str> = entries.iter().map(|e| e.name.as_ref()).collect();
        self.resources
            .keys()
            .filter(|name| !present.contains(name.as_str()))
            .cloned()
            .collect()
    }

    /// The resource versions to announce on a new delta stream.
    pub(crate) fn held_versions(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.resources
            .iter()
            .map(|(name, held)| (name.clone(), held.version.clone()))
    }

    /// Hands what changed to the handler, then records what it accepted.
    ///
    /// - Resources outside a named subscription are ignored, as the protocol asks.
    /// - A resource whose payload is byte-identical to the one held is left out of the update.
    /// - A resource without payload is a heartbeat if its version is the one held, and is
    ///   skipped; otherwise it is rejected.
    /// - A rejected resource keeps its previous version, or stays absent if it was new.
    /// - Removals of names not held are ignored: there is nothing to remove.
    ///
    /// Returns every rejection, the handler's and the client's own.
    pub(crate) fn apply<H: Handler + ?Sized>(
        &mut self,
        version: &str,
        entries: &[Entry<'_>],
        removed: &[&str],
        handler: &mut H,
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        let mut changed = Vec::new();
        for entry in entries.iter().filter(|e| self.interest.includes(&e.name)) {
            let held = self.resources.get(entry.name.as_ref());
            match &entry.payload {
                Some(payload) if held.is_some_and(|h| h.digest == payload.digest) => {}
                Some(payload) => changed.push((entry, payload)),
                None if held.is_some_and(|h| h.version == entry.version) => {}
                None => rejected.push(Rejected::new(
                    entry.name.as_ref(),
                    format!(
                        "resource has no payload, and version {:?} is not the one held",
                        entry.version
                    ),
                )),
            }
        }
        let (removed, absent): (Vec<&str>, Vec<&str>) = removed
            .iter()
            .copied()
            .partition(|name| self.resources.contains_key(*name));
        let absent: Vec<&str> = absent
            .into_iter()
            .filter(|name| self.interest.includes(name))
            .collect();

        let update = Update {
            version,
            added: changed
                .iter()
                .map(|(entry, payload)| Resource {
                    name: &entry.name,
                    version: &entry.version,
                    any: &payload.any,
                })
                .collect(),
            removed: removed.clone(),
            absent,
        };
        rejected.extend(handler.apply(&self.type_url, update));

        let refused: HashSet<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
        for (entry, payload) in changed {
            if refused.contains(entry.name.as_ref()) {
                continue;
            }
            let held = Held {
                version: entry.version.to_string(),
                digest: payload.digest,
            };
            self.resources.insert(entry.name.to_string(), held);
        }
        for name in removed {
            self.resources.remove(name);
        }
        rejected
    }
}
