//! The timers of one HTTP stream: Envoy's route `timeout` (from the end of the request to the
//! end of the response), the stream idle timeout (no byte either way), and `request_timeout`
//! (the whole request must arrive), and the route's `max_stream_duration` (the whole stream).
//!
//! Hot path: one `StreamTimers` per request, shared by the request body, the wait for the
//! response, and the response body. Activity is recorded with relaxed atomics; nothing here
//! locks or allocates after creation.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

/// Which timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// The route timeout (Envoy's `UT`).
    Route,
    /// No activity for the stream idle timeout (Envoy's `SI`).
    Idle,
    /// The request did not arrive in full within `request_timeout`.
    Request,
    /// The stream outlived the route's `max_stream_duration` (Envoy's `UMSDR`).
    MaxStream,
}

/// The shared timer state of a stream.
#[derive(Debug)]
pub struct StreamTimers {
    start: Instant,
    route: Option<Duration>,
    idle: Option<Duration>,
    request: Option<Duration>,
    max_stream: Option<Duration>,
    /// Milliseconds after `start` of the last byte in either direction.
    last_activity: AtomicU64,
    /// Milliseconds after `start` at which the request ended; `u64::MAX` until then.
    request_done: AtomicU64,
}

const NOT_YET: u64 = u64::MAX;

// === impl StreamTimers ===

impl StreamTimers {
    /// Timers for a stream starting now; `None` disables a timer.
    pub fn new(route: Option<Duration>, idle: Option<Duration>, request: Option<Duration>) -> Self {
        Self {
            start: Instant::now(),
            route,
            idle,
            request,
            max_stream: None,
            last_activity: AtomicU64::new(0),
            request_done: AtomicU64::new(NOT_YET),
        }
    }

    /// Adds a limit on the whole stream, counted from its start.
    pub fn with_max_stream(mut self, max: Option<Duration>) -> Self {
        self.max_stream = max;
        self
    }

    /// Whether no timer is set.
    pub fn is_empty(&self) -> bool {
        self.route.is_none()
            && self.idle.is_none()
            && self.request.is_none()
            && self.max_stream.is_none()
    }

    fn since_start(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(NOT_YET - 1)
    }

    /// Records a byte moving in either direction.
    pub fn touch(&self) {
        self.last_activity
            .store(self.since_start(Instant::now()), Ordering::Relaxed);
    }

    /// Records that the whole request has arrived: the route timeout starts counting.
    pub fn request_done(&self) {
        let now = self.since_start(Instant::now());
        self.last_activity.store(now, Ordering::Relaxed);
        // The first end wins (a request body may report its end more than once).
        let _ =
            self.request_done
                .compare_exchange(NOT_YET, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the request has arrived in full.
    pub fn is_request_done(&self) -> bool {
        self.request_done.load(Ordering::Relaxed) != NOT_YET
    }

    /// The earliest deadline still to come, or which timer has already passed.
    pub fn check(&self, now: Instant) -> Result<Option<Instant>, Expired> {
        let at = |ms: u64, d: Duration| self.start + Duration::from_millis(ms) + d;
        let done = self.request_done.load(Ordering::Relaxed);
        let mut next: Option<(Instant, Expired)> = None;
        let mut consider = |deadline: Instant, kind: Expired| {
            if next.is_none_or(|(n, _)| deadline < n) {
                next = Some((deadline, kind));
            }
        };
        if let Some(d) = self.route
            && done != NOT_YET
        {
            consider(at(done, d), Expired::Route);
        }
        if let Some(d) = self.idle {
            consider(
                at(self.last_activity.load(Ordering::Relaxed), d),
                Expired::Idle,
            );
        }
        if let Some(d) = self.request
            && done == NOT_YET
        {
            consider(at(0, d), Expired::Request);
        }
        if let Some(d) = self.max_stream {
            consider(at(0, d), Expired::MaxStream);
        }
        match next {
            Some((deadline, kind)) if deadline <= now => Err(kind),
            Some((deadline, _)) => Ok(Some(deadline)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_route_timeout_counts_from_the_end_of_the_request() {
        let t = StreamTimers::new(Some(Duration::from_secs(2)), None, None);
        tokio::time::advance(Duration::from_secs(10)).await;
        // A long upload: the route timeout has not started.
        assert_eq!(t.check(Instant::now()), Ok(None));
        t.request_done();
        assert!(matches!(t.check(Instant::now()), Ok(Some(_))));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(t.check(Instant::now()), Err(Expired::Route));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_pushes_the_idle_deadline() {
        let t = StreamTimers::new(None, Some(Duration::from_secs(1)), None);
        tokio::time::advance(Duration::from_millis(800)).await;
        t.touch();
        tokio::time::advance(Duration::from_millis(800)).await;
        assert!(matches!(t.check(Instant::now()), Ok(Some(_))));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(t.check(Instant::now()), Err(Expired::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_timeout_stops_once_the_request_is_in() {
        let t = StreamTimers::new(None, None, Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(500)).await;
        t.request_done();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(t.check(Instant::now()), Ok(None));
        let t = StreamTimers::new(None, None, Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(t.check(Instant::now()), Err(Expired::Request));
    }
}
