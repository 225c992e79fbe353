//! Route selection: a pure function from a request's facts to a virtual host and route, with
//! Envoy's precedence rules. No IO, no allocation on the common paths.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use http::{HeaderMap, Method};

use crate::config::{
    HeaderMatch, HeaderMatcher, PathMatch, QueryParameterMatcher, Route, RouteConfig, RouteMatch,
    VirtualHost,
};

/// A route configuration with its virtual hosts indexed by domain.
#[derive(Debug)]
pub struct RouteTable {
    /// The configuration.
    pub config: Arc<RouteConfig>,
    exact: HashMap<String, usize>,
    /// `*suffix` domains by suffix length, longest first when iterated in reverse.
    suffixes: BTreeMap<usize, HashMap<String, usize>>,
    /// `prefix*` domains by prefix length.
    prefixes: BTreeMap<usize, HashMap<String, usize>>,
    any: Option<usize>,
}

/// What routing needs to know about a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// Host (HTTP/1) or :authority (HTTP/2), as received.
    pub authority: &'a str,
    /// The path with its query string.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// The routing decision.
#[derive(Clone, Copy, Debug)]
pub enum Decision<'a> {
    /// No virtual host serves this authority, or no route of it matches (Envoy's `NR`).
    NoRoute,
    /// This route of this virtual host.
    Route(&'a VirtualHost, &'a Route),
}

// === impl RouteTable ===

impl RouteTable {
    /// Indexes `config`'s virtual hosts by domain.
    pub fn new(config: Arc<RouteConfig>) -> Self {
        let mut table = RouteTable {
            exact: HashMap::new(),
            suffixes: BTreeMap::new(),
            prefixes: BTreeMap::new(),
            any: None,
            config: config.clone(),
        };
        for (i, vh) in config.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                if d == "*" {
                    table.any = Some(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    table
                        .suffixes
                        .entry(suffix.len())
                        .or_default()
                        .insert(suffix.to_string(), i);
                } else if let Some(prefix) = d.strip_suffix('*') {
                    table
                        .prefixes
                        .entry(prefix.len())
                        .or_default()
                        .insert(prefix.to_string(), i);
                } else {
                    table.exact.insert(d.clone(), i);
                }
            }
        }
        table
    }

    /// Envoy's domain search: exact, then the longest `*suffix`, then the longest `prefix*`,
    /// then `*`. Wildcards never match an empty remainder. `host` is lowercased by the caller.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let host = if self.config.ignore_port_in_host_matching {
            strip_port(host)
        } else {
            host
        };
        let index = self
            .exact
            .get(host)
            .or_else(|| {
                self.suffixes
                    .range(..host.len())
                    .rev()
                    .find_map(|(len, m)| m.get(&host[host.len() - len..]))
            })
            .or_else(|| {
                self.prefixes
                    .range(..host.len())
                    .rev()
                    .find_map(|(len, m)| host.get(..*len).and_then(|p| m.get(p)))
            })
            .copied()
            .or(self.any)?;
        self.config.virtual_hosts.get(index)
    }

    /// Picks the virtual host and the first matching route for a request.
    pub fn route<'a>(&'a self, req: &RequestFacts<'_>) -> Decision<'a> {
        let lowered;
        let host = if req.authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = req.authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            req.authority
        };
        let Some(vh) = self.virtual_host(host) else {
            return Decision::NoRoute;
        };
        match vh.routes.iter().find(|r| matches(&r.matcher, req)) {
            Some(r) => Decision::Route(vh, r),
            None => Decision::NoRoute,
        }
    }
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

/// The path without its query string or fragment.
pub fn path_only(path: &str) -> &str {
    path.find(['?', '#']).map_or(path, |i| &path[..i])
}

/// Whether `req` satisfies every part of `m`.
pub fn matches(m: &RouteMatch, req: &RequestFacts<'_>) -> bool {
    // CONNECT requests carry no path: only `connect_matcher` matches them, and only them.
    let connect = req.method == Method::CONNECT;
    if connect != (m.path == PathMatch::Connect) {
        return false;
    }
    (connect || path_matches(m, req.path))
        && (!m.grpc || is_grpc(req.headers))
        && m.headers.iter().all(|h| header_matches(h, req.headers))
        && m.query_parameters
            .iter()
            .all(|q| query_matches(q, req.path))
}

fn path_matches(m: &RouteMatch, path: &str) -> bool {
    let eq = |a: &str, b: &str| {
        if m.case_sensitive {
            a == b
        } else {
            a.eq_ignore_ascii_case(b)
        }
    };
    match &m.path {
        PathMatch::Prefix(p) => path.get(..p.len()).is_some_and(|start| eq(start, p)),
        PathMatch::Path(p) => eq(path_only(path), p),
        PathMatch::Regex(r) => r.is_match(path_only(path)),
        PathMatch::SeparatedPrefix(p) => {
            let path = path_only(path);
            path.get(..p.len()).is_some_and(|start| eq(start, p))
                && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
        }
        PathMatch::Connect => false,
    }
}

/// Envoy's test for a gRPC request: `content-type` is `application/grpc`, or starts with
/// `application/grpc+` or `application/grpc;`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

fn header_matches(h: &HeaderMatcher, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(&h.name).iter();
    let first = values.next();
    let joined;
    let value: Option<&str> = match (first, values.next()) {
        (None, _) => h.treat_missing_as_empty.then_some(""),
        (Some(v), None) => Some(v.to_str().unwrap_or("")),
        // Envoy matches several values of one header as one, joined by commas.
        (Some(v), Some(second)) => {
            let mut s = String::from(v.to_str().unwrap_or(""));
            for v in std::iter::once(second).chain(values) {
                s.push(',');
                s.push_str(v.to_str().unwrap_or(""));
            }
            joined = s;
            Some(joined.as_str())
        }
    };
    let result = match (&h.kind, value) {
        (HeaderMatch::Present(want), v) => v.is_some() == *want,
        (_, None) => return false, // a missing header fails every value test, even inverted
        (HeaderMatch::Range(start, end), Some(v)) => {
            v.parse::<i64>().is_ok_and(|n| *start <= n && n < *end)
        }
        (HeaderMatch::String(s), Some(v)) => s.matches(v),
    };
    result != h.invert
}

fn query_matches(q: &QueryParameterMatcher, path: &str) -> bool {
    let Some((_, query)) = path.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or("");
    let value = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == q.name).then_some(v)
    });
    match (value, &q.value) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(v), Some(m)) => m.matches(v),
    }
}

#[cfg(test)]
mod tests;
