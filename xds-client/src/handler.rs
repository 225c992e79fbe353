//! The typed watch API: the library's user decodes and validates resources, the client keeps the
//! protocol.
//!
//! The client knows no proxy types. For each response it computes what changed for one type URL
//! (resources added or updated, names removed) and hands that to a [`Handler`]. The handler
//! decodes each payload into its own types, validates it, applies what it accepts, and returns the
//! resources it rejects. The client turns an empty list into an ACK and anything else into a NACK
//! naming each rejected resource and the reason.
//!
//! The same [`Update`] shape serves both protocol variants: for state of the world the client
//! computes the removals itself (see [`crate::sotw`]), for delta it takes them from
//! `removed_resources` (see [`crate::delta`]).

use std::fmt;

use envoy_types::pb::google::protobuf::Any;

/// Decodes, validates and applies the resources of the types it watches.
///
/// Called once per response of a subscribed type, even when nothing changed: an empty update
/// still says that the server has answered for this type, which matters for initial fetches and
/// warming.
pub trait Handler {
    /// Applies `update` of `type_url` and returns the resources it rejects, if any.
    ///
    /// A rejected resource must be left as it was before this update: the client keeps treating
    /// its previous version as the one in use. Every resource that is not rejected is taken as
    /// applied, and every removal as done.
    fn apply(&mut self, type_url: &str, update: Update<'_>) -> Vec<Rejected>;
}

/// What changed for one type URL in one response.
#[derive(Debug)]
#[non_exhaustive]
pub struct Update<'a> {
    /// The response's `version_info` (state of the world) or `system_version_info` (delta, where
    /// it is informational and often empty).
    pub version: &'a str,
    /// Resources that are new or whose payload changed since the client last accepted them.
    /// Resources the client already holds with identical bytes are left out.
    pub added: Vec<Resource<'a>>,
    /// Names of resources the client held that are gone.
    pub removed: Vec<&'a str>,
    /// Names the client subscribes to but never held, which the server says do not exist
    /// (delta's `removed_resources` for them). A user waiting for them (Envoy's warming) can stop
    /// waiting. Always empty in state of the world, which has no way to say it.
    pub absent: Vec<&'a str>,
}

/// One added or updated resource, still encoded.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// The resource's name (field 1 of every Envoy v3 resource, or the delta `Resource.name`).
    pub name: &'a str,
    /// The resource's version: its own in delta, the response's `version_info` in state of the
    /// world (unless the server wrapped it in a `Resource` that carries one).
    pub version: &'a str,
    /// The payload exactly as the server sent it.
    pub any: &'a Any,
}

/// A resource the handler refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The rejected resource's name.
    pub name: String,
    /// Why it was rejected, written for the operator who reads the NACK in istiod's log.
    pub reason: String,
}

/// Why a payload could not be decoded as the message the caller asked for.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPayload {
    /// The `Any` holds another message type.
    #[error("payload has type {actual}, expected {expected}")]
    WrongType {
        /// The type URL the caller asked for.
        expected: String,
        /// The type URL in the `Any`.
        actual: String,
    },
    /// The bytes are not a valid encoding of the message.
    #[error("payload does not decode: {0}")]
    Malformed(#[from] prost::DecodeError),
}

// === impl Update ===

impl<'a> Update<'a> {
    /// An update, for tests of a [`Handler`] outside this crate; the clients build their own.
    pub fn new(version: &'a str, added: Vec<Resource<'a>>, removed: Vec<&'a str>) -> Self {
        Self {
            version,
            added,
            removed,
            absent: Vec::new(),
        }
    }

    /// The same update, with names the server says do not exist.
    pub fn with_absent(mut self, absent: Vec<&'a str>) -> Self {
        self.absent = absent;
        self
    }
}

// === impl Resource ===

impl Resource<'_> {
    /// Decodes the payload as `M`, after checking that the `Any` says it holds an `M`.
    pub fn decode<M>(&self) -> Result<M, InvalidPayload>
    where
        M: prost::Message + prost::Name + Default,
    {
        let expected = M::type_url();
        if self.any.type_url != expected {
            return Err(InvalidPayload::WrongType {
                expected,
                actual: self.any.type_url.clone(),
            });
        }
        Ok(M::decode(self.any.value.as_slice())?)
    }
}

// === impl Rejected ===

impl Rejected {
    /// A rejection of the resource `name` for `reason`.
    pub fn new(name: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self {
            name: name.into(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.name, self.reason)
    }
}
