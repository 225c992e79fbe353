//! Reading a response without knowing its resource types: each resource's name, version and
//! payload digest, and the faults that make a whole response unusable.
//!
//! Names: every Envoy v3 resource type keeps its name as a string in field 1 (`Listener.name`,
//! `Cluster.name`, `RouteConfiguration.name`, `ClusterLoadAssignment.cluster_name`,
//! `Secret.name`, `Runtime.name`, `VirtualHost.name`, `ScopedRouteConfiguration.name`,
//! `TypedExtensionConfig.name`), which is also the field Envoy's own decoders read. The client
//! reads only that field, so it needs no descriptor of the type.
//!
//! Faults found here reject the whole response and nothing in it is applied: a resource whose
//! type does not match the response, a resource without a readable name, or the same name twice.
//! Without a trustworthy name the client cannot tell which resource a payload replaces.
//!
//! Compared with Envoy: its state-of-the-world mux (`GrpcMuxImpl::onDiscoveryResponse`) rejects
//! the whole response for a type mismatch or a resource that does not decode, and its delta state
//! (`DeltaSubscriptionState::handleGoodResponse`) for a type mismatch, a repeated name, or a name
//! both updated and removed. For a name repeated in a state-of-the-world response, Envoy's LDS
//! and CDS apply the first copy and reject the second; Skiff applies neither, since the protocol
//! calls such a response an error ("Clients should NACK responses that contain multiple
//! instances of the same resource name") and which copy the server meant cannot be known.

use std::{
    borrow::Cow,
    collections::HashSet,
    hash::{DefaultHasher, Hash, Hasher},
};

use envoy_types::pb::{
    envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource as XdsResource,
    },
    google::protobuf::Any,
};
use prost::Message;

use crate::type_url::RESOURCE_WRAPPER;

/// Why a whole response was rejected before any of its resources reached the handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResponse {
    /// A resource's `Any` names another type than the response.
    #[error("resource #{index} has type {actual}, the response has type {expected}")]
    TypeMismatch {
        /// Position of the resource in the response.
        index: usize,
        /// The resource's type URL.
        actual: String,
        /// The response's type URL.
        expected: String,
    },
    /// A resource's name could not be read, or is empty.
    #[error("resource #{index} has no name: {reason}")]
    Unnamed {
        /// Position of the resource in the response.
        index: usize,
        /// What went wrong reading it.
        reason: String,
    },
    /// The same name appears twice among the added or updated resources.
    #[error("resource {name:?} appears more than once")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A delta response both updates and removes the same name.
    #[error("resource {name:?} is both updated and removed")]
    AddedAndRemoved {
        /// The name in both lists.
        name: String,
    },
}

/// One resource of a response, read far enough to track it.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) version: Cow<'a, str>,
    /// `None` for a heartbeat: a wrapper without payload, which only refreshes a TTL.
    pub(crate) payload: Option<Payload<'a>>,
}

/// A resource payload and the digest the client uses to skip unchanged resources.
#[derive(Debug)]
pub(crate) struct Payload<'a> {
    pub(crate) any: Cow<'a, Any>,
    pub(crate) digest: u64,
}

/// The part of every Envoy v3 resource the client reads: its name in field 1.
#[derive(Clone, PartialEq, Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

/// Reads every resource of a state-of-the-world response.
pub(crate) fn read_sotw(response: &DiscoveryResponse) -> Result<Vec<Entry<'_>>, InvalidResponse> {
    let mut entries = Vec::with_capacity(response.resources.len());
    for (index, any) in response.resources.iter().enumerate() {
        let entry = if any.type_url == RESOURCE_WRAPPER {
            let wrapper = XdsResource::decode(any.value.as_slice()).map_err(|e| {
                InvalidResponse::Unnamed {
                    index,
                    reason: format!("Resource wrapper does not decode: {e}"),
                }
            })?;
            let version = if wrapper.version.is_empty() {
                Cow::Borrowed(response.version_info.as_str())
            } else {
                Cow::Owned(wrapper.version)
            };
            let payload = match wrapper.resource {
                Some(inner) => {
                    check_type(index, &inner, &response.type_url)?;
                    Some(Payload::new(Cow::Owned(inner)))
                }
                None => None,
            };
            let name = match (&payload, wrapper.name.is_empty()) {
                (Some(payload), true) => Cow::Owned(read_name(index, &payload.any)?),
                _ => Cow::Owned(wrapper.name),
            };
            Entry {
                name,
                version,
                payload,
            }
        } else {
            check_type(index, any, &response.type_url)?;
            Entry {
                name: Cow::Owned(read_name(index, any)?),
                version: Cow::Borrowed(response.version_info.as_str()),
                payload: Some(Payload::new(Cow::Borrowed(any))),
            }
        };
        entries.push(entry);
    }
    check_names(&entries)?;
    Ok(entries)
}

/// Reads the added or updated resources and the removed names of a delta response.
pub(crate) fn read_delta(
    response: &DeltaDiscoveryResponse,
) -> Result<(Vec<Entry<'_>>, Vec<&str>), InvalidResponse> {
    let mut entries = Vec::with_capacity(response.resources.len());
    for (index, resource) in response.resources.iter().enumerate() {
        let name = match (&resource.name, &resource.resource_name) {
            (name, Some(rn)) if name.is_empty() => rn.name.as_str(),
            (name, _) => name.as_str(),
        };
        let payload = match &resource.resource {
            Some(any) => {
                check_type(index, any, &response.type_url)?;
                Some(Payload::new(Cow::Borrowed(any)))
            }
            None => None,
        };
        let entry = Entry {
            name: Cow::Borrowed(name),
            version: Cow::Borrowed(resource.version.as_str()),
            payload,
        };
        entries.push(entry);
    }
    let seen = check_names(&entries)?;

    let mut removed: Vec<&str> = Vec::with_capacity(response.removed_resources.len());
    let names = response.removed_resources.iter().map(String::as_str);
    let more = response
        .removed_resource_names
        .iter()
        .map(|rn| rn.name.as_str());
    let mut removed_seen = HashSet::new();
    for name in names.chain(more) {
        if seen.contains(name) {
            return Err(InvalidResponse::AddedAndRemoved {
                name: name.to_string(),
            });
        }
        // A server may list a name in both `removed_resources` and `removed_resource_names`.
        if removed_seen.insert(name) {
            removed.push(name);
        }
    }
    Ok((entries, removed))
}

fn check_type(index: usize, any: &Any, expected: &str) -> Result<(), InvalidResponse> {
    if any.type_url == expected {
        return Ok(());
    }
    Err(InvalidResponse::TypeMismatch {
        index,
        actual: any.type_url.clone(),
        expected: expected.to_string(),
    })
}

/// Checks that every entry has a name and no name repeats; returns the set of names.
fn check_names<'a>(entries: &'a [Entry<'_>]) -> Result<HashSet<&'a str>, InvalidResponse> {
    let mut seen = HashSet::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        if entry.name.is_empty() {
            return Err(InvalidResponse::Unnamed {
                index,
                reason: "the name is empty".to_string(),
            });
        }
        if !seen.insert(entry.name.as_ref()) {
            return Err(InvalidResponse::DuplicateName {
                name: entry.name.to_string(),
            });
        }
    }
    Ok(seen)
}

fn read_name(index: usize, any: &Any) -> Result<String, InvalidResponse> {
    Named::decode(any.value.as_slice())
        .map(|named| named.name)
        .map_err(|e| InvalidResponse::Unnamed {
            index,
            reason: format!("payload does not decode: {e}"),
        })
}

// === impl Payload ===

impl<'a> Payload<'a> {
    fn new(any: Cow<'a, Any>) -> Self {
        // SipHash with fixed keys: stable for the life of the process, which is all the client
        // compares it across.
        let mut hasher = DefaultHasher::new();
        any.hash(&mut hasher);
        Self {
            digest: hasher.finish(),
            any,
        }
    }
}
