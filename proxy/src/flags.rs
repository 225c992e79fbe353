//! Envoy's response flags: the one place that says which failure gets which short code, so logs
//! (and later access logs and the `response_flags` metric label) agree.

use std::fmt;

/// Why a connection or request did not complete normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    /// `UH`: the cluster had no healthy host.
    NoHealthyUpstream,
    /// `UF`: connecting to the upstream host failed.
    UpstreamConnectionFailure,
    /// `UC`: the upstream connection was terminated.
    UpstreamConnectionTermination,
    /// `DC`: the downstream connection was terminated.
    DownstreamConnectionTermination,
    /// `NC`: the configured cluster does not exist.
    NoClusterFound,
    /// `NR`: no filter chain (or route) matched.
    NoRouteFound,
    /// `SI`: the idle timeout fired.
    StreamIdleTimeout,
    /// `UR`: the upstream reset the stream (or closed the connection) before responding.
    UpstreamRemoteReset,
    /// `UPE`: the upstream sent something that is not valid HTTP.
    UpstreamProtocolError,
    /// `UT`: the upstream did not answer within the route timeout.
    UpstreamRequestTimeout,
    /// `DPE`: the downstream sent something that is not valid HTTP.
    DownstreamProtocolError,
    /// `UMSDR`: the stream outlived the route's `max_stream_duration`.
    UpstreamMaxStreamDurationReached,
    /// `RBAC`: an RBAC filter refused the request (Skiff: one it cannot evaluate, so it fails
    /// closed).
    RbacAccessDenied,
    /// `UAEX`: external authorization refused the request (Skiff: it has none, so it fails
    /// closed, as Envoy does when the authorization service is unreachable).
    UnauthorizedExternalService,
}

// === impl ResponseFlag ===

impl ResponseFlag {
    /// Envoy's short code.
    pub fn short(self) -> &'static str {
        match self {
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::NoRouteFound => "NR",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::UpstreamProtocolError => "UPE",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::UpstreamMaxStreamDurationReached => "UMSDR",
            ResponseFlag::RbacAccessDenied => "RBAC",
            ResponseFlag::UnauthorizedExternalService => "UAEX",
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}
