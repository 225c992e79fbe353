//! Load balancers: weighted round robin, weighted random, and least request (power of choices).

use std::{
    cell::Cell,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use super::Host;
use crate::config::LbPolicy;

/// A set of hosts with precomputed weights, built once per host-set change.
#[derive(Debug, Default)]
pub struct Weighted {
    hosts: Vec<Arc<Host>>,
    /// `cumulative[i]` is the sum of the weights of hosts `0..=i`; empty when all weights are
    /// equal (then picking is plain indexing).
    cumulative: Vec<u64>,
    /// A stride coprime with the total weight: walking `n * stride mod total` visits every weight
    /// unit once per cycle, interleaving hosts instead of sending runs to one host.
    stride: u64,
}

/// Picks hosts by a cluster's policy. Lock-free: the only shared state is an atomic counter.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    next: AtomicU64,
}

// === impl Weighted ===

impl Weighted {
    /// Precomputes the weights of `hosts`.
    pub fn new(hosts: Vec<Arc<Host>>) -> Self {
        let equal = hosts.windows(2).all(|w| w[0].weight == w[1].weight);
        let (cumulative, stride) = if equal {
            (Vec::new(), 1)
        } else {
            let mut sum = 0u64;
            let cumulative: Vec<u64> = hosts
                .iter()
                .map(|h| {
                    sum += u64::from(h.weight);
                    sum
                })
                .collect();
            (cumulative, coprime_stride(sum))
        };
        Self {
            hosts,
            cumulative,
            stride,
        }
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Arc<Host>] {
        &self.hosts
    }

    fn total(&self) -> u64 {
        self.cumulative
            .last()
            .copied()
            .unwrap_or(self.hosts.len() as u64)
    }

    /// The host that owns weight unit `unit` (`unit < total`).
    fn at_unit(&self, unit: u64) -> &Arc<Host> {
        if self.cumulative.is_empty() {
            return &self.hosts[usize::try_from(unit).unwrap_or(0) % self.hosts.len()];
        }
        let i = self.cumulative.partition_point(|&c| c <= unit);
        &self.hosts[i.min(self.hosts.len() - 1)]
    }

    /// Round robin: the `n`th pick.
    fn nth(&self, n: u64) -> &Arc<Host> {
        let total = self.total();
        self.at_unit(n.wrapping_mul(self.stride) % total)
    }

    /// A weighted random pick.
    fn random(&self) -> &Arc<Host> {
        self.at_unit(random_u64() % self.total())
    }
}

/// The smallest number at or above 61.8% of `total` that shares no factor with it.
fn coprime_stride(total: u64) -> u64 {
    fn gcd(mut a: u64, mut b: u64) -> u64 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    let mut s = (total * 618 / 1000).max(1);
    while gcd(s, total) != 1 {
        s += 1;
    }
    s
}

// === impl Balancer ===

impl Balancer {
    /// A balancer for `policy`.
    pub fn new(policy: LbPolicy) -> Self {
        Self {
            policy,
            next: AtomicU64::new(random_u64()),
        }
    }

    /// Picks one of `set`'s hosts; `set` must not be empty.
    pub fn pick<'a>(&self, set: &'a Weighted) -> &'a Arc<Host> {
        if set.hosts.len() == 1 {
            return &set.hosts[0];
        }
        match self.policy {
            LbPolicy::RoundRobin | LbPolicy::ClusterProvided => {
                set.nth(self.next.fetch_add(1, Ordering::Relaxed))
            }
            LbPolicy::Random => set.random(),
            // Envoy compares `choice_count` random hosts and takes the least loaded. With unequal
            // weights Envoy switches to a weighted EDF schedule; Skiff keeps the power-of-choices
            // comparison but draws the candidates by weight (README, "Differences").
            LbPolicy::LeastRequest { choice_count } => {
                let mut best = set.random();
                for _ in 1..choice_count {
                    let candidate = set.random();
                    if candidate.active() < best.active() {
                        best = candidate;
                    }
                }
                best
            }
        }
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS once per process and varies per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() | 1
}

/// A fast per-thread pseudo-random number (xorshift64*): load balancing needs spread, not secrecy.
pub(crate) fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(weights: &[u32]) -> Vec<Arc<Host>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Arc::new(Host::new(([10, 0, 0, i as u8 + 1], 80).into(), *w)))
            .collect()
    }

    fn counts(set: &Weighted, picks: impl Fn() -> std::net::SocketAddr, n: usize) -> Vec<usize> {
        let mut c = vec![0; set.hosts().len()];
        for _ in 0..n {
            let a = picks();
            c[set.hosts().iter().position(|h| h.addr == a).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_equal_weights_cycles_through_every_host() {
        let set = Weighted::new(hosts(&[1, 1, 1]));
        let b = Balancer::new(LbPolicy::RoundRobin);
        let c = counts(&set, || b.pick(&set).addr, 300);
        assert_eq!(c, vec![100, 100, 100]);
    }

    #[test]
    fn round_robin_weights_are_exact_per_cycle_and_interleaved() {
        let set = Weighted::new(hosts(&[1, 3, 6]));
        let b = Balancer::new(LbPolicy::RoundRobin);
        let c = counts(&set, || b.pick(&set).addr, 1000);
        assert_eq!(c, vec![100, 300, 600]);
        // No host gets more than its share of a window plus one: picks are interleaved.
        let seq: Vec<_> = (0..10).map(|_| b.pick(&set).addr).collect();
        let heavy = set.hosts()[2].addr;
        assert!(
            seq.windows(4)
                .all(|w| w.iter().filter(|a| **a == heavy).count() < 4),
            "{seq:?}"
        );
    }

    #[test]
    fn random_follows_weights() {
        let set = Weighted::new(hosts(&[1, 9]));
        let b = Balancer::new(LbPolicy::Random);
        let c = counts(&set, || b.pick(&set).addr, 20_000);
        assert!((1400..2600).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_request_prefers_the_idle_host() {
        let hs = hosts(&[1, 1]);
        hs[0].active.store(50, Ordering::Relaxed);
        let set = Weighted::new(hs);
        let b = Balancer::new(LbPolicy::LeastRequest { choice_count: 2 });
        let c = counts(&set, || b.pick(&set).addr, 1000);
        // Host 0 wins only when both draws land on it: about a quarter of the time.
        assert!(c[1] > 650, "{c:?}");
    }

    #[test]
    fn stride_is_coprime() {
        for total in 1..500u64 {
            let s = coprime_stride(total);
            let mut seen = vec![false; total as usize];
            for n in 0..total {
                seen[(n * s % total) as usize] = true;
            }
            assert!(seen.iter().all(|x| *x), "total {total} stride {s}");
        }
    }
}
