//! Counts of traffic refused because it needs something Skiff accepts in configuration but
//! cannot carry out (see `config::Refusal`): the "count it" half of failing closed.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Refusal;

static COUNTS: [AtomicU64; Refusal::ALL.len()] = [const { AtomicU64::new(0) }; Refusal::ALL.len()];

/// Counts one refused request or connection.
pub fn count(why: Refusal) {
    COUNTS[why.index()].fetch_add(1, Ordering::Relaxed);
}

/// Every reason with its count, for the admin `/stats`.
pub fn snapshot() -> impl Iterator<Item = (Refusal, u64)> {
    Refusal::ALL
        .into_iter()
        .map(|why| (why, COUNTS[why.index()].load(Ordering::Relaxed)))
}
