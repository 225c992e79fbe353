//! Filter-chain selection: a pure function of the connection's facts and the listener's chains.
//!
//! It follows Envoy's order and its "most specific wins, no backtracking" rule. Criteria are
//! checked level by level: destination port, destination IP, server name, transport protocol,
//! application protocol, direct source IP, source type, source IP, source port. At each level only
//! the chains with the most specific matching value stay. If none of them matches a later level,
//! Envoy does not go back to a less specific one, and the default chain (if any) is used.

use std::{collections::HashMap, net::SocketAddr};

use smallvec::SmallVec;

use crate::config::{Cidr, FilterChain, SourceType, canonical};

/// What is known about a connection when its filter chain is chosen.
#[derive(Clone, Copy, Debug)]
pub struct ConnFacts<'a> {
    /// The (restored) destination.
    pub destination: SocketAddr,
    /// The source (the peer; the same as `direct_source` until PROXY protocol exists).
    pub source: SocketAddr,
    /// The directly connected peer.
    pub direct_source: SocketAddr,
    /// SNI from the ClientHello, lowercased.
    pub server_name: Option<&'a str>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'a str,
    /// ALPN from the ClientHello, or the sniffed HTTP protocol.
    pub application_protocols: &'a [Box<str>],
}

/// Chains grouped by destination port, built once per listener.
#[derive(Debug, Default)]
pub struct ChainIndex {
    by_port: HashMap<u16, Vec<u32>>,
    any_port: Vec<u32>,
}

type Candidates = SmallVec<[u32; 16]>;

// === impl ChainIndex ===

impl ChainIndex {
    /// Indexes `chains` by destination port.
    pub fn new(chains: &[FilterChain]) -> Self {
        let mut index = Self::default();
        for (i, c) in chains.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 filter chains");
            match c.matcher.destination_port {
                Some(p) => index.by_port.entry(p).or_default().push(i),
                None => index.any_port.push(i),
            }
        }
        index
    }
}

/// Which chain serves a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainId {
    /// `filter_chains[i]`.
    Index(usize),
    /// `default_filter_chain`.
    Default,
}

/// Picks the filter chain for a connection, or `None` when neither a chain nor a default
/// matches (the connection is then closed, as Envoy does).
pub fn select<'c>(
    chains: &'c [FilterChain],
    index: &ChainIndex,
    default: Option<&'c FilterChain>,
    facts: &ConnFacts<'_>,
) -> Option<&'c FilterChain> {
    match select_id(chains, index, default.is_some(), facts)? {
        ChainId::Index(i) => chains.get(i),
        ChainId::Default => default,
    }
}

/// [`select`], answering with the chain's position.
pub fn select_id(
    chains: &[FilterChain],
    index: &ChainIndex,
    has_default: bool,
    facts: &ConnFacts<'_>,
) -> Option<ChainId> {
    // A port-specific group, when it exists, is used even if nothing in it matches further down.
    let group = index
        .by_port
        .get(&facts.destination.port())
        .unwrap_or(&index.any_port);
    let mut candidates: Candidates = group.iter().copied().collect();
    let chain = |i: u32| &chains[i as usize];
    let dst_ip = canonical(facts.destination.ip());
    let src_ip = canonical(facts.source.ip());
    let direct_ip = canonical(facts.direct_source.ip());

    narrow(&mut candidates, |i| {
        prefix_score(&chain(i).matcher.prefix_ranges, dst_ip)
    });
    narrow(&mut candidates, |i| {
        server_name_score(&chain(i).matcher.server_names, facts.server_name)
    });
    narrow(&mut candidates, |i| {
        match &chain(i).matcher.transport_protocol {
            None => Some(0),
            Some(t) => (t == facts.transport_protocol).then_some(1),
        }
    });
    narrow(&mut candidates, |i| {
        alpn_score(
            &chain(i).matcher.application_protocols,
            facts.application_protocols,
        )
    });
    narrow(&mut candidates, |i| {
        prefix_score(&chain(i).matcher.direct_source_prefix_ranges, direct_ip)
    });
    narrow(&mut candidates, |i| {
        let local = src_ip.is_loopback() || src_ip == dst_ip;
        match chain(i).matcher.source_type {
            SourceType::Any => Some(0),
            SourceType::SameIpOrLoopback => local.then_some(1),
            SourceType::External => (!local).then_some(1),
        }
    });
    narrow(&mut candidates, |i| {
        prefix_score(&chain(i).matcher.source_prefix_ranges, src_ip)
    });
    narrow(&mut candidates, |i| {
        let ports = &chain(i).matcher.source_ports;
        if ports.is_empty() {
            Some(0)
        } else {
            ports.contains(&facts.source.port()).then_some(1)
        }
    });

    // Configuration validation rejects chains with identical criteria, so at most one is left.
    match candidates.first() {
        Some(&i) => Some(ChainId::Index(i as usize)),
        None => has_default.then_some(ChainId::Default),
    }
}

/// Keeps only the candidates with the highest score; `None` means "does not match".
fn narrow(candidates: &mut Candidates, score: impl Fn(u32) -> Option<u32>) {
    if candidates.len() <= 1 {
        // One candidate must still match this level; zero stays zero.
        candidates.retain(|i| score(*i).is_some());
        return;
    }
    let mut best = None;
    let mut kept: Candidates = SmallVec::new();
    for &i in candidates.iter() {
        let Some(s) = score(i) else { continue };
        match best {
            Some(b) if s < b => {}
            Some(b) if s == b => kept.push(i),
            _ => {
                best = Some(s);
                kept.clear();
                kept.push(i);
            }
        }
    }
    *candidates = kept;
}

/// An empty list matches any address at the lowest specificity; otherwise the longest matching
/// prefix wins.
fn prefix_score(ranges: &[Cidr], ip: std::net::IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges
        .iter()
        .filter(|r| r.contains(ip))
        .map(|r| u32::from(r.prefix_len()) + 1)
        .max()
}

/// Exact names beat wildcards; longer wildcard suffixes beat shorter ones; a chain without
/// names matches any connection, with or without SNI.
fn server_name_score(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    names
        .iter()
        .filter_map(|n| match n.strip_prefix('*') {
            // `*.example.com` matches any name ending in `.example.com`, at any depth.
            Some(suffix) => (sni.len() > suffix.len() && sni.ends_with(suffix))
                .then(|| u32::try_from(suffix.len()).unwrap_or(u32::MAX - 1)),
            None => (n == sni).then_some(u32::MAX),
        })
        .max()
}

/// The connection's protocols are tried in its own order (Envoy's rule): the chain holding the
/// connection's first listed protocol wins.
fn alpn_score(chain_protocols: &[String], conn: &[Box<str>]) -> Option<u32> {
    if chain_protocols.is_empty() {
        return Some(0);
    }
    conn.iter()
        .position(|p| chain_protocols.iter().any(|c| **c == **p))
        .map(|i| u32::MAX - u32::try_from(i).unwrap_or(u32::MAX - 1))
}

#[cfg(test)]
mod tests;
