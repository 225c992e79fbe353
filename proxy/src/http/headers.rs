//! Header handling of the connection manager and router: hop-by-hop stripping, forwarding
//! headers, request ids, and the route's header edits.
//!
//! Hot path: called for every request and response; edits are applied in place.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::{AppendAction, HeaderAdd, HeaderEdits};

/// `grpc-timeout`: a gRPC client's deadline for the call.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-client-cert`.
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// `x-envoy-expected-rq-timeout-ms`.
pub const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
/// `x-envoy-upstream-service-time`.
pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
/// `x-envoy-attempt-count`: which attempt this is (1 for the first), with
/// `include_request_attempt_count`.
pub const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
/// `x-envoy-original-path`.
pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
/// `x-envoy-external-address`.
pub const X_ENVOY_EXTERNAL_ADDRESS: HeaderName =
    HeaderName::from_static("x-envoy-external-address");
/// `x-envoy-internal`.
pub const X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");

/// Request headers that only Envoy itself may set: a client's values are dropped, as Envoy drops
/// them from requests it does not consider internal (with its default, no address is internal).
const ENVOY_INTERNAL_ONLY: [HeaderName; 16] = [
    HeaderName::from_static("x-envoy-decorator-operation"),
    HeaderName::from_static("x-envoy-downstream-service-cluster"),
    HeaderName::from_static("x-envoy-downstream-service-node"),
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-external-address"),
    HeaderName::from_static("x-envoy-force-trace"),
    HeaderName::from_static("x-envoy-internal"),
    HeaderName::from_static("x-envoy-ip-tags"),
    HeaderName::from_static("x-envoy-max-retries"),
    HeaderName::from_static("x-envoy-retriable-header-names"),
    HeaderName::from_static("x-envoy-retriable-status-codes"),
    HeaderName::from_static("x-envoy-retry-grpc-on"),
    HeaderName::from_static("x-envoy-retry-on"),
    HeaderName::from_static("x-envoy-upstream-alt-stat-name"),
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms"),
];

/// Removes the `x-envoy-*` request headers a client may not set. Most requests carry none: one
/// pass over the names avoids hashing all sixteen.
pub fn strip_envoy_internal(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        return;
    }
    for name in &ENVOY_INTERNAL_ONLY {
        headers.remove(name);
    }
}

/// The address Envoy writes into `x-forwarded-for` for a client on loopback: this host's
/// first non-loopback address (IPv4 first), found once.
pub fn host_address() -> Option<std::net::IpAddr> {
    static ADDR: std::sync::OnceLock<Option<std::net::IpAddr>> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let addrs: Vec<std::net::IpAddr> = nix::ifaddrs::getifaddrs()
            .ok()?
            .filter(|i| {
                i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                    && !i
                        .flags
                        .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
            })
            .filter_map(|i| {
                let a = i.address?;
                a.as_sockaddr_in()
                    .map(|v4| std::net::IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
            })
            .filter(|ip| {
                !ip.is_loopback()
                    && !matches!(ip, std::net::IpAddr::V6(v6) if v6.is_unicast_link_local())
            })
            .collect();
        addrs
            .iter()
            .find(|ip| ip.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
    })
}

/// `keep-alive`.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `proxy-connection`.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the hop-by-hop headers Envoy removes, from a request or a response. `upgrading`
/// keeps `connection` and `upgrade` for a protocol upgrade that is being forwarded.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    // One pass over the names first: most messages carry one hop-by-hop header or none.
    let present = headers.keys().any(|k| {
        matches!(
            k.as_str(),
            "connection"
                | "upgrade"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "te"
        )
    });
    if !present {
        return;
    }
    if !upgrading {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    // `te` may only carry "trailers" through a proxy (gRPC needs it).
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
}

/// Applies one level of header edits to a request's headers (removals, then additions).
pub fn apply_request(headers: &mut HeaderMap, edits: &HeaderEdits) {
    for name in &edits.request_remove {
        headers.remove(name);
    }
    for add in &edits.request_add {
        apply_add(headers, add);
    }
}

/// Applies one level of header edits to a response's headers (removals, then additions).
pub fn apply_response(headers: &mut HeaderMap, edits: &HeaderEdits) {
    for name in &edits.response_remove {
        headers.remove(name);
    }
    for add in &edits.response_add {
        apply_add(headers, add);
    }
}

fn apply_add(headers: &mut HeaderMap, add: &HeaderAdd) {
    if add.value.is_empty() && !add.keep_empty {
        return;
    }
    let present = headers.contains_key(&add.name);
    match add.action {
        AppendAction::AppendIfExistsOrAdd => {
            headers.append(add.name.clone(), add.value.clone());
        }
        AppendAction::AddIfAbsent if !present => {
            headers.insert(add.name.clone(), add.value.clone());
        }
        AppendAction::OverwriteIfExistsOrAdd => {
            headers.insert(add.name.clone(), add.value.clone());
        }
        AppendAction::OverwriteIfExists if present => {
            headers.insert(add.name.clone(), add.value.clone());
        }
        AppendAction::AddIfAbsent | AppendAction::OverwriteIfExists => {}
    }
}

/// Appends `addr` to `x-forwarded-for` (comma-separated, as Envoy writes it).
pub fn append_xff(headers: &mut HeaderMap, addr: std::net::IpAddr) {
    let ip = addr.to_string();
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// The `n`th address from the right of `x-forwarded-for` (1 is the last), if there is one.
pub fn xff_entry_from_right(headers: &HeaderMap, n: usize) -> Option<std::net::IpAddr> {
    let mut entries: Vec<&str> = Vec::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        entries.extend(v.to_str().ok()?.split(',').map(str::trim));
    }
    let i = entries.len().checked_sub(n)?;
    entries.get(i)?.parse().ok()
}

/// A random version-4 UUID in its text form, for `x-request-id`.
pub fn request_id() -> HeaderValue {
    let hi = crate::cluster::random_u64();
    let lo = crate::cluster::random_u64();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(byte >> 4)];
        out[o + 1] = HEX[usize::from(byte & 0xf)];
        o += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

/// This hop's `x-forwarded-client-cert` element, in Envoy's order: `By` (our URI SAN), `Hash`
/// (SHA-256 of the client certificate, hex), then as configured `Subject="..."`, `URI=` (the
/// first URI SAN) and one `DNS=` per DNS SAN.
pub fn xfcc_element(
    peer: &crate::tls::Peer,
    details: crate::config::XfccDetails,
) -> Option<HeaderValue> {
    use std::fmt::Write;
    let cert = peer.certificate.as_ref()?;
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut parts: Vec<String> = Vec::new();
    if let Some(by) = &peer.local_spiffe_id {
        parts.push(format!("By={by}"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut hash = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(hash, "{b:02x}");
    }
    parts.push(format!("Hash={hash}"));
    if details.subject {
        let subject = crate::tls::x509::name_contents_rfc2253(parsed.subject()).unwrap_or_default();
        parts.push(format!("Subject=\"{}\"", subject.replace('"', "\\\"")));
    }
    if details.uri
        && let Some(uri) = parsed.valid_uri_names().next()
    {
        parts.push(format!("URI={uri}"));
    }
    if details.dns {
        for dns in parsed.valid_dns_names() {
            parts.push(format!("DNS={dns}"));
        }
    }
    HeaderValue::from_str(&parts.join(";")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(name: &'static str, value: &'static str, action: AppendAction) -> HeaderAdd {
        HeaderAdd {
            name: HeaderName::from_static(name),
            value: HeaderValue::from_static(value),
            action,
            keep_empty: false,
        }
    }

    #[test]
    fn append_actions_follow_envoy() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        apply_add(
            &mut h,
            &add("x-a", "new", AppendAction::AppendIfExistsOrAdd),
        );
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        apply_add(
            &mut h,
            &add("x-a", "only", AppendAction::OverwriteIfExistsOrAdd),
        );
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["only"]);
        apply_add(&mut h, &add("x-a", "ignored", AppendAction::AddIfAbsent));
        assert_eq!(h["x-a"], "only");
        apply_add(&mut h, &add("x-b", "added", AppendAction::AddIfAbsent));
        assert_eq!(h["x-b"], "added");
        apply_add(
            &mut h,
            &add("x-c", "never", AppendAction::OverwriteIfExists),
        );
        assert!(!h.contains_key("x-c"));
        apply_add(
            &mut h,
            &add("x-b", "replaced", AppendAction::OverwriteIfExists),
        );
        assert_eq!(h["x-b"], "replaced");
        apply_add(&mut h, &add("x-d", "", AppendAction::AppendIfExistsOrAdd));
        assert!(
            !h.contains_key("x-d"),
            "empty values are dropped unless keep_empty_value"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-kept", "1"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 3, "{h:?}");
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }
}
