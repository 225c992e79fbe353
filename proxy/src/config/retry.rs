//! `RetryPolicy` (route, or virtual host): when a failed upstream attempt is tried again.
//!
//! istiod puts one on every outbound route (`connect-failure,refused-stream,unavailable,
//! cancelled,retriable-status-codes`, 2 retries, other hosts first), so it is converted as Envoy
//! reads it. What Skiff does not implement is rejected with its path.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RetryPolicy as XdsRetryPolicy;

use super::{
    common,
    error::{Ctx, Path, reject_unsupported},
};

/// Envoy's default back-off base interval between retries.
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// A converted `retry_policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The `retry_on` conditions.
    pub on: RetryOn,
    /// How many retries after the first attempt (`num_retries`, default 1).
    pub num_retries: u32,
    /// A timeout for each attempt, inside the route timeout.
    pub per_try_timeout: Option<Duration>,
    /// `retriable_status_codes`, for `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// `envoy.retry_host_predicates.previous_hosts`: a retry avoids hosts already tried.
    pub avoid_previous_hosts: bool,
    /// `host_selection_retry_max_attempts`: picks per retry to find a host not yet tried.
    pub host_selection_attempts: u32,
    /// `retry_back_off`: the base interval (the ceiling doubles per retry up to `max`).
    pub backoff_base: Duration,
    /// The longest back-off (default ten times the base).
    pub backoff_max: Duration,
}

/// The `retry_on` conditions Skiff implements (Envoy's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // one flag per documented condition
pub struct RetryOn {
    /// `5xx`: any 5xx response, a reset, a connect failure or a per-try timeout.
    pub server_error: bool,
    /// `gateway-error`: 502, 503, 504, a connect failure or a per-try timeout.
    pub gateway_error: bool,
    /// `reset`: no response at all (reset, disconnect, connect failure, per-try timeout).
    pub reset: bool,
    /// `reset-before-request`: a reset before the request went out. Skiff can only tell that
    /// for a connection that never opened, so it retries exactly those.
    pub reset_before_request: bool,
    /// `connect-failure`: the connection could not be made.
    pub connect_failure: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `refused-stream`: an HTTP/2 stream reset with REFUSED_STREAM.
    pub refused_stream: bool,
    /// `retriable-status-codes`: a status in `retriable_status_codes`.
    pub retriable_status_codes: bool,
    /// gRPC status codes (from `grpc-status` in the response headers): `cancelled` (1),
    /// `deadline-exceeded` (4), `resource-exhausted` (8), `internal` (13), `unavailable` (14).
    pub grpc: [bool; 17],
}

impl RetryPolicy {
    pub(crate) fn convert(ctx: &mut Ctx, path: &Path, p: &XdsRetryPolicy) -> Option<Self> {
        let before = ctx.count();
        let XdsRetryPolicy {
            retry_on,
            num_retries,
            per_try_timeout,
            per_try_idle_timeout,
            retry_priority,
            retry_host_predicate,
            retry_options_predicates,
            host_selection_retry_max_attempts,
            retriable_status_codes,
            retry_back_off,
            rate_limited_retry_back_off,
            retriable_headers,
            retriable_request_headers,
            refresh_cluster_on_retry,
        } = p;
        reject_unsupported!(
            ctx,
            path,
            refresh_cluster_on_retry,
            per_try_idle_timeout,
            retry_priority,
            retry_options_predicates,
            rate_limited_retry_back_off,
            retriable_headers,
            retriable_request_headers
        );
        let mut on = RetryOn::default();
        for cond in retry_on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let grpc = |code: usize, on: &mut RetryOn| on.grpc[code] = true;
            match cond {
                "5xx" => on.server_error = true,
                "gateway-error" => on.gateway_error = true,
                "reset" => on.reset = true,
                "reset-before-request" => on.reset_before_request = true,
                "connect-failure" => on.connect_failure = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-status-codes" => on.retriable_status_codes = true,
                "cancelled" => grpc(1, &mut on),
                "deadline-exceeded" => grpc(4, &mut on),
                "resource-exhausted" => grpc(8, &mut on),
                "internal" => grpc(13, &mut on),
                "unavailable" => grpc(14, &mut on),
                // HTTP/3 is never spoken upstream, so the condition can never arise.
                "http3-post-connect-failure" => {}
                other => ctx.error(
                    &path.field("retry_on"),
                    format!("retry condition '{other}' is not supported by Skiff"),
                ),
            }
        }
        let mut avoid_previous_hosts = false;
        for (i, pred) in retry_host_predicate.iter().enumerate() {
            let any_name = pred.config_type.as_ref().map(|c| match c {
                envoy_types::pb::envoy::config::route::v3::retry_policy::retry_host_predicate::ConfigType::TypedConfig(a) => common::any_type_name(a).to_string(),
            });
            if any_name.as_deref()
                == Some("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate")
            {
                avoid_previous_hosts = true;
            } else {
                ctx.error(
                    &path.field("retry_host_predicate").index(i),
                    format!(
                        "retry host predicate '{}' is not supported by Skiff (only previous_hosts)",
                        any_name.unwrap_or_else(|| pred.name.clone())
                    ),
                );
            }
        }
        let mut codes = Vec::with_capacity(retriable_status_codes.len());
        for (i, c) in retriable_status_codes.iter().enumerate() {
            match u16::try_from(*c) {
                Ok(c) if (100..=599).contains(&c) => codes.push(c),
                _ => ctx.error(
                    &path.field("retriable_status_codes").index(i),
                    format!("{c} is not an HTTP status"),
                ),
            }
        }
        let per_try_timeout = per_try_timeout
            .as_ref()
            .and_then(|d| common::duration(ctx, &path.field("per_try_timeout"), d))
            .filter(|d| !d.is_zero());
        let (backoff_base, backoff_max) = match retry_back_off {
            None => (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10),
            Some(b) => {
                let bp = path.field("retry_back_off");
                let base = b
                    .base_interval
                    .as_ref()
                    .and_then(|d| common::duration(ctx, &bp.field("base_interval"), d))
                    .filter(|d| !d.is_zero());
                let Some(base) = base else {
                    ctx.error(
                        &bp.field("base_interval"),
                        "a base interval above 0 is required",
                    );
                    return None;
                };
                let max = b
                    .max_interval
                    .as_ref()
                    .and_then(|d| common::duration(ctx, &bp.field("max_interval"), d))
                    .unwrap_or(base * 10);
                if max < base {
                    ctx.error(
                        &bp.field("max_interval"),
                        "must be at least the base interval",
                    );
                }
                (base, max)
            }
        };
        (ctx.count() == before).then(|| RetryPolicy {
            on,
            num_retries: num_retries.as_ref().map_or(1, |n| n.value),
            per_try_timeout,
            retriable_status_codes: codes,
            avoid_previous_hosts,
            host_selection_attempts: u32::try_from((*host_selection_retry_max_attempts).max(1))
                .unwrap_or(u32::MAX),
            backoff_base,
            backoff_max,
        })
    }

    /// Whether a response with this status (and `grpc-status`, if any) is retried.
    pub fn retries_status(&self, status: u16, grpc_status: Option<u8>) -> bool {
        let on = &self.on;
        (on.server_error && (500..600).contains(&status))
            || (on.gateway_error && matches!(status, 502..=504))
            || (on.retriable_4xx && status == 409)
            || (on.retriable_status_codes && self.retriable_status_codes.contains(&status))
            || grpc_status.is_some_and(|g| on.grpc.get(usize::from(g)).copied().unwrap_or(false))
    }

    /// Whether a failure with no response is retried: `connect` when the connection could not
    /// be made, `refused` for an HTTP/2 REFUSED_STREAM, else a reset or disconnect.
    pub fn retries_failure(&self, connect: bool, refused: bool) -> bool {
        let on = &self.on;
        on.server_error
            || on.reset
            || (connect && (on.connect_failure || on.gateway_error || on.reset_before_request))
            || (refused && on.refused_stream)
    }

    /// Whether a per-try timeout is retried.
    pub fn retries_timeout(&self) -> bool {
        self.on.server_error || self.on.gateway_error || self.on.reset
    }

    /// The back-off before retry number `retry` (1 for the first): Envoy's fully jittered
    /// exponential back-off, a random duration below `base * 2^(retry-1)`, capped at `max`.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let ceiling = self
            .backoff_base
            .saturating_mul(1 << retry.saturating_sub(1).min(20))
            .min(self.backoff_max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(random % nanos)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::UInt32Value;

    use super::*;

    fn convert(p: &XdsRetryPolicy) -> Result<RetryPolicy, Vec<String>> {
        let mut ctx = Ctx::default();
        let out = RetryPolicy::convert(&mut ctx, &Path::named("retry_policy"), p);
        ctx.finish(out)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn istio() -> XdsRetryPolicy {
        XdsRetryPolicy {
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .into(),
            num_retries: Some(UInt32Value { value: 2 }),
            host_selection_retry_max_attempts: 5,
            retriable_status_codes: vec![503],
            ..Default::default()
        }
    }

    #[test]
    fn istio_default_policy_retries_what_istio_means() {
        let p = convert(&istio()).unwrap();
        assert_eq!((p.num_retries, p.host_selection_attempts), (2, 5));
        // (status, grpc-status, retried)
        for (status, grpc, want) in [
            (503, None, true),
            (502, None, false),
            (500, None, false),
            (409, None, false),
            (200, Some(14), true), // unavailable
            (200, Some(1), true),  // cancelled
            (200, Some(4), false), // deadline-exceeded: not asked for
            (200, None, false),
        ] {
            assert_eq!(p.retries_status(status, grpc), want, "{status} {grpc:?}");
        }
        assert!(p.retries_failure(true, false), "connect failure");
        assert!(p.retries_failure(false, true), "refused stream");
        assert!(!p.retries_failure(false, false), "a reset is not asked for");
        assert!(!p.retries_timeout());
    }

    #[test]
    fn five_xx_and_gateway_error_cover_what_envoy_says() {
        let p = convert(&XdsRetryPolicy {
            retry_on: "5xx".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.num_retries, 1, "Envoy's default");
        assert!(p.retries_status(500, None) && p.retries_status(503, None));
        assert!(p.retries_failure(false, false) && p.retries_timeout());
        let g = convert(&XdsRetryPolicy {
            retry_on: "gateway-error".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(g.retries_status(504, None) && !g.retries_status(500, None));
        assert!(g.retries_failure(true, false) && !g.retries_failure(false, false));
    }

    #[test]
    fn reset_before_request_retries_only_what_was_never_sent() {
        let p = convert(&XdsRetryPolicy {
            retry_on: "reset-before-request".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(
            p.retries_failure(true, false),
            "the connection never opened"
        );
        assert!(
            !p.retries_failure(false, false),
            "the request may have been sent"
        );
        assert!(!p.retries_timeout());
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_capped_ceiling() {
        let p = convert(&istio()).unwrap();
        for (retry, ceiling_ms) in [(1, 25), (2, 50), (3, 100), (4, 200), (5, 250), (30, 250)] {
            for random in [0, 1, 7_777_777, u64::MAX] {
                let d = p.backoff(retry, random);
                assert!(d < Duration::from_millis(ceiling_ms), "{retry}: {d:?}");
            }
        }
    }

    #[test]
    fn what_skiff_cannot_do_is_an_error_with_its_path() {
        let e = convert(&XdsRetryPolicy {
            retry_on: "5xx,envoy-ratelimited".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.iter().any(
                |e| e.starts_with("retry_policy.retry_on: ") && e.contains("envoy-ratelimited")
            ),
            "{e:?}"
        );
        let e = convert(&XdsRetryPolicy {
            retry_on: "5xx".into(),
            retriable_status_codes: vec![700],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e[0].contains("700"), "{e:?}");
    }
}
