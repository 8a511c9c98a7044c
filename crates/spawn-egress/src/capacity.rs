//! What the shared proxy can hold, and what each run may take of it.
//!
//! One proxy serves every run on the host, so one run must never be able to use up what
//! the others need (descriptors, above all). Each run has caps (`maxConnections`,
//! `maxDnsQueries`); the descriptors its caps allow are *reserved* when it registers, out
//! of the proxy's own descriptor limit (which the proxy raises to the host's maximum at
//! start). A run whose reservation does not fit is refused at registration, with the
//! numbers, instead of failing other runs later: so a run at its caps never takes what a
//! registered run was promised, and a second run always starts while the first is at its
//! caps (as long as the host has room for both).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use spawn_policy::net::NetRules;

use crate::error::EgressError;

/// Kept-alive upstream connections of one run, at most (never more than its
/// `maxConnections`).
pub(crate) const POOL_PER_RUN: u32 = 32;
/// Descriptors the proxy keeps for itself (its runtime, control socket, log, resolver).
pub(crate) const PROXY_RESERVE: u64 = 256;
/// Descriptors of a run beyond its caps: its four listening sockets and its audit log.
const PER_RUN_FIXED: u64 = 8;

/// The descriptors a run under `rules` may hold at most: each connection one from the
/// sandbox and one upstream (or a resolver socket, before it connects), its kept-alive
/// upstream connections, a resolver socket per DNS query, and its own sockets.
pub fn descriptors_for(rules: &NetRules) -> u64 {
    2 * u64::from(rules.max_connections)
        + u64::from(pool_cap(rules))
        + u64::from(rules.max_dns_queries)
        + PER_RUN_FIXED
}

/// How many kept-alive upstream connections a run under `rules` may have.
pub(crate) fn pool_cap(rules: &NetRules) -> u32 {
    POOL_PER_RUN.min(rules.max_connections)
}

/// The descriptors the proxy may promise to runs.
#[derive(Debug)]
pub struct Capacity {
    total: u64,
    reserved: Mutex<u64>,
}

impl Capacity {
    /// `total` descriptors to promise.
    pub fn new(total: u64) -> Arc<Capacity> {
        Arc::new(Capacity {
            total,
            reserved: Mutex::new(0),
        })
    }

    /// The process's descriptor limit (`RLIMIT_NOFILE`, soft) less what the proxy keeps
    /// for itself.
    pub fn of_this_process() -> Arc<Capacity> {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        Capacity::new(soft.saturating_sub(PROXY_RESERVE))
    }

    /// All the descriptors it may promise.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Takes `n` descriptors until the reservation is dropped, or says how many are left.
    pub fn reserve(self: &Arc<Capacity>, n: u64) -> Result<Reservation, EgressError> {
        let mut reserved = self
            .reserved
            .lock()
            .map_err(|_| EgressError::Io(std::io::Error::other("capacity poisoned")))?;
        let free = self.total.saturating_sub(*reserved);
        if n > free {
            return Err(EgressError::Full {
                needed: n,
                free,
                total: self.total,
            });
        }
        *reserved += n;
        Ok(Reservation {
            capacity: self.clone(),
            n,
        })
    }

    /// Descriptors promised now.
    pub fn reserved(&self) -> u64 {
        self.reserved.lock().map_or(self.total, |r| *r)
    }
}

/// Descriptors promised to one run; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    capacity: Arc<Capacity>,
    n: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut r) = self.capacity.reserved.lock() {
            *r = r.saturating_sub(self.n);
        }
    }
}

/// Up to `cap` things at once (a run's connections, its DNS queries in flight).
#[derive(Debug)]
pub(crate) struct Slots {
    cap: u32,
    used: AtomicU32,
}

impl Slots {
    pub(crate) fn new(cap: u32) -> Arc<Slots> {
        Arc::new(Slots {
            cap,
            used: AtomicU32::new(0),
        })
    }

    /// One slot until the guard is dropped, or `None` at the cap.
    pub(crate) fn take(self: &Arc<Slots>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < self.cap).then_some(u + 1)
            })
            .ok()
            .map(|_| Slot {
                slots: self.clone(),
            })
    }

    pub(crate) fn cap(&self) -> u32 {
        self.cap
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }
}

/// One taken slot.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spawn_policy::net::NetRules;
    use spawn_policy::NetPolicy;

    #[test]
    fn reservations_add_up_and_are_given_back() {
        let cap = Capacity::new(1000);
        let a = cap.reserve(600).unwrap();
        let err = cap.reserve(401).unwrap_err();
        assert!(
            matches!(
                err,
                EgressError::Full {
                    needed: 401,
                    free: 400,
                    total: 1000
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("401"), "{err}");
        let b = cap.reserve(400).unwrap();
        assert_eq!(cap.reserved(), 1000);
        assert!(cap.reserve(1).is_err());
        drop(a);
        assert_eq!(cap.reserved(), 400);
        drop(b);
        assert_eq!(cap.reserved(), 0);
        assert!(cap.reserve(1000).is_ok());
    }

    #[test]
    fn a_runs_descriptors_follow_its_caps() {
        let mut rules = NetRules::plain(NetPolicy::EgressOnly);
        let default = descriptors_for(&rules);
        // 256 connections × 2 + 32 kept alive + 32 DNS queries + its own sockets.
        assert_eq!(default, 512 + 32 + 32 + 8);
        rules.max_connections = 4;
        rules.max_dns_queries = 1;
        assert_eq!(pool_cap(&rules), 4);
        assert_eq!(descriptors_for(&rules), 8 + 4 + 1 + 8);
        // The largest caps still fit many times in the host maximum (2^20).
        rules.max_connections = spawn_policy::net::MAX_CONNECTIONS;
        rules.max_dns_queries = spawn_policy::net::MAX_DNS_QUERIES;
        assert!(descriptors_for(&rules) * 100 < 1 << 20);
    }

    #[test]
    fn slots_stop_at_the_cap_and_come_back() {
        let slots = Slots::new(3);
        let held: Vec<Slot> = (0..3).map(|_| slots.take().unwrap()).collect();
        assert!(slots.take().is_none());
        assert_eq!(slots.used(), 3);
        drop(held);
        assert_eq!(slots.used(), 0);
        // Under contention the cap holds exactly.
        let taken = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Some(slot) = slots.take() {
                            taken.lock().unwrap().push(slot);
                        }
                    }
                });
            }
        });
        assert_eq!(taken.lock().unwrap().len(), 3);
        assert_eq!(slots.cap(), 3);
    }
}
