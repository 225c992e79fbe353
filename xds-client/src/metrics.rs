//! The client's own counters, per type URL, for the user to read and export.
//!
//! Plain numbers, no registry: the proxy decides how to name and expose them. Whether a stream is
//! connected is the transport's to report.

use std::{collections::BTreeMap, time::SystemTime};

/// Counters of every type URL the client has processed a response for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    by_type: BTreeMap<String, TypeMetrics>,
}

/// Counters of one type URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeMetrics {
    /// Responses ACKed: every resource in them was accepted.
    pub updates_accepted: u64,
    /// Responses NACKed: the handler rejected at least one resource, or the response as a whole
    /// was unusable.
    pub updates_rejected: u64,
    /// Resources the handler rejected, summed over all NACKed responses.
    pub resources_rejected: u64,
    /// When the last ACKed response was processed. Like Envoy's `update_time`, it moves even when
    /// the response changed nothing.
    pub last_update: Option<SystemTime>,
    /// When the last NACKed response was processed.
    pub last_rejection: Option<SystemTime>,
}

// === impl Metrics ===

impl Metrics {
    /// The counters of `type_url`, if a response of that type was ever processed.
    pub fn get(&self, type_url: &str) -> Option<&TypeMetrics> {
        self.by_type.get(type_url)
    }

    /// Every type URL's counters, ordered by type URL.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TypeMetrics)> {
        self.by_type.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn accepted(&mut self, type_url: &str, now: SystemTime) {
        let m = self.entry(type_url);
        m.updates_accepted += 1;
        m.last_update = Some(now);
    }

    pub(crate) fn rejected(&mut self, type_url: &str, resources: usize, now: SystemTime) {
        let m = self.entry(type_url);
        m.updates_rejected += 1;
        m.resources_rejected += resources as u64;
        m.last_rejection = Some(now);
    }

    fn entry(&mut self, type_url: &str) -> &mut TypeMetrics {
        self.by_type.entry(type_url.to_string()).or_default()
    }
}
