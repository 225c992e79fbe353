//! The rotation driver: keeps a workload certificate fresh for as long as the process runs.
//!
//! - The first request goes out at once.
//! - After each issuance the next request is due at half the certificate's remaining lifetime,
//!   ±10% so that proxies started together do not renew together (a 24 h certificate renews
//!   after 10.8 to 13.2 h, leaving half its life to ride out a CA outage).
//! - A failed request is retried after 1 s, doubling up to 60 s (each delay drawn between half and
//!   all of that, as the ADS stream's reconnects), for as long as it takes. The certificate
//!   already delivered stays in use meanwhile; each failure is logged with its reason and the
//!   time to the next try.

use std::time::{Duration, SystemTime};

use tokio::{sync::watch, task::JoinHandle};

use super::{CaConfig, Issued, request_certificate};
use crate::transport::backoff_delay;

/// The shortest wait before a renewal, whatever the certificate's lifetime.
const MIN_RENEWAL_DELAY: Duration = Duration::from_millis(100);

/// What the driver has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationStatus {
    /// Certificates issued (and handed to the callback).
    pub issued: u64,
    /// Requests that failed.
    pub failures: u64,
    /// When the certificate last issued expires.
    pub not_after: Option<SystemTime>,
    /// Why the last request failed, until one succeeds.
    pub last_error: Option<String>,
}

/// The running driver, for its owner to observe or stop.
///
/// Dropping the handle leaves the driver running; [`CaHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct CaHandle {
    status: watch::Receiver<RotationStatus>,
    task: JoinHandle<()>,
}

/// Starts the driver: requests a certificate now, hands each one issued to `on_issued`, and
/// renews it before it expires. Must be called within a Tokio runtime (it spawns a task).
pub fn spawn_rotation(config: CaConfig, on_issued: impl Fn(&Issued) + Send + 'static) -> CaHandle {
    let (tx, status) = watch::channel(RotationStatus::default());
    let task = tokio::spawn(run(config, on_issued, tx));
    CaHandle { status, task }
}

// === impl CaHandle ===

impl CaHandle {
    /// The counters and the last outcome.
    pub fn status(&self) -> RotationStatus {
        self.status.borrow().clone()
    }

    /// Certificates issued so far.
    pub fn issued(&self) -> u64 {
        self.status.borrow().issued
    }

    /// Requests failed so far.
    pub fn failures(&self) -> u64 {
        self.status.borrow().failures
    }

    /// Waits until `condition` holds for the status (checked now and after every request), for
    /// at most `timeout`. Returns the status then, or `None` on timeout.
    pub async fn wait_until(
        &self,
        mut condition: impl FnMut(&RotationStatus) -> bool,
        timeout: Duration,
    ) -> Option<RotationStatus> {
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(timeout, status.wait_for(|s| condition(s))).await;
        match waited {
            Ok(Ok(s)) => Some(s.clone()),
            // The driver is gone (shut down): the status will not change any more.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Stops the driver. Certificates already handed out stay wherever they were installed.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

async fn run(
    config: CaConfig,
    on_issued: impl Fn(&Issued) + Send + 'static,
    status: watch::Sender<RotationStatus>,
) {
    let mut failures_in_a_row: u32 = 0;
    loop {
        let delay = match request_certificate(&config).await {
            Ok(issued) => {
                failures_in_a_row = 0;
                on_issued(&issued);
                let remaining = issued
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let delay = renewal_delay(remaining, random_unit());
                status.send_modify(|s| {
                    s.issued += 1;
                    s.not_after = Some(issued.not_after);
                    s.last_error = None;
                });
                tracing::info!(
                    ca = %config.address,
                    spiffe_id = %config.spiffe_id,
                    valid_for_s = remaining.as_secs(),
                    renew_in_s = delay.as_secs_f64(),
                    "CA: workload certificate issued"
                );
                delay
            }
            Err(error) => {
                let delay = backoff_delay(config.retry, failures_in_a_row);
                failures_in_a_row = failures_in_a_row.saturating_add(1);
                let reason = error.to_string();
                tracing::warn!(
                    ca = %config.address,
                    spiffe_id = %config.spiffe_id,
                    error = %reason,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "CA: certificate request failed; the current certificate stays in use"
                );
                status.send_modify(|s| {
                    s.failures += 1;
                    s.last_error = Some(reason);
                });
                delay
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// When to renew a certificate with `remaining` lifetime: at half of it, scaled by 0.9 to 1.1
/// as `unit` goes from 0 to 1.
fn renewal_delay(remaining: Duration, unit: f64) -> Duration {
    let factor = 0.9 + 0.2 * unit.clamp(0.0, 1.0);
    remaining
        .div_f64(2.0)
        .mul_f64(factor)
        .max(MIN_RENEWAL_DELAY)
}

/// A uniform draw from `[0, 1)`; 0.5 if the system's random source fails.
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        // The top 53 bits: every value exactly representable.
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_half_the_remaining_lifetime_within_ten_percent() {
        let day = Duration::from_secs(86_400);
        assert_eq!(renewal_delay(day, 0.0), Duration::from_secs(38_880)); // 10.8 h
        assert_eq!(renewal_delay(day, 0.5), Duration::from_secs(43_200)); // 12 h
        assert_eq!(renewal_delay(day, 1.0), Duration::from_secs(47_520)); // 13.2 h
        for _ in 0..1000 {
            let d = renewal_delay(Duration::from_secs(4), random_unit());
            assert!(
                d >= Duration::from_millis(1800) && d <= Duration::from_millis(2200),
                "{d:?}"
            );
        }
    }

    #[test]
    fn renewal_never_spins() {
        assert_eq!(renewal_delay(Duration::ZERO, 0.3), MIN_RENEWAL_DELAY);
        assert_eq!(
            renewal_delay(Duration::from_millis(10), 1.0),
            MIN_RENEWAL_DELAY
        );
    }

    #[test]
    fn random_draws_cover_the_unit_interval() {
        let draws: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.iter().any(|&u| u < 0.1) && draws.iter().any(|&u| u > 0.9));
    }
}
