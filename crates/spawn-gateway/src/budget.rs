//! A run's model budget — `limits.maxTokens`, `limits.maxCostUsd`, `limits.maxSteps` —
//! held under concurrency: each request reserves its worst case before it is forwarded and
//! settles at what the provider reports, so requests in parallel can never together spend
//! past a limit (a reservation that would is refused before anything is sent). Cost is
//! counted in micro-dollars (integers: no rounding drift over a run).

use std::sync::{Arc, Mutex};

/// The limits (`None`: not limited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub tokens: Option<u64>,
    pub cost_micros: Option<u64>,
    pub steps: Option<u64>,
}

/// What a model call costs: tokens in and out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A model's price, micro-dollars per million tokens in and out (a price table's entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input_per_mtok_micros: u64,
    pub output_per_mtok_micros: u64,
}

impl Price {
    /// What `usage` costs, in micro-dollars, rounded up (a budget errs on spending less).
    pub fn cost_micros(&self, usage: Usage) -> u64 {
        let part = |tokens: u64, per_m: u64| {
            u128::from(tokens)
                .saturating_mul(u128::from(per_m))
                .div_ceil(1_000_000)
        };
        let total = part(usage.input_tokens, self.input_per_mtok_micros)
            + part(usage.output_tokens, self.output_per_mtok_micros);
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Tokens,
    Cost,
    Steps,
}

/// A request refused because it could take the run past a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the run's {} budget is spent: {used} used or reserved of {limit}", match .which {
    Which::Tokens => "token",
    Which::Cost => "cost (micro-dollar)",
    Which::Steps => "step",
})]
pub struct Exhausted {
    pub which: Which,
    pub limit: u64,
    pub used: u64,
}

#[derive(Debug, Default)]
struct Counts {
    /// Settled.
    tokens: u64,
    cost: u64,
    steps: u64,
    /// Reserved by requests in flight.
    held_tokens: u64,
    held_cost: u64,
    held_steps: u64,
}

/// A run's budget, shared by its requests.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// A request's reservation: settled with what it used, or released when dropped unsettled
/// (the request failed before the provider answered).
#[derive(Debug)]
pub struct Reservation {
    budget: Budget,
    tokens: u64,
    cost: u64,
    settled: bool,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves a step and the worst case of a request (`tokens` in and out at most, costing
    /// at most `cost_micros`), or refuses it when that could pass a limit.
    pub fn reserve(&self, tokens: u64, cost_micros: u64) -> Result<Reservation, Exhausted> {
        let mut c = self.counts();
        let check = |which, limit: Option<u64>, used: u64, held: u64, more: u64| match limit {
            Some(limit) if used.saturating_add(held).saturating_add(more) > limit => {
                Err(Exhausted {
                    which,
                    limit,
                    used: used.saturating_add(held),
                })
            }
            _ => Ok(()),
        };
        check(Which::Steps, self.limits.steps, c.steps, c.held_steps, 1)?;
        check(
            Which::Tokens,
            self.limits.tokens,
            c.tokens,
            c.held_tokens,
            tokens,
        )?;
        check(
            Which::Cost,
            self.limits.cost_micros,
            c.cost,
            c.held_cost,
            cost_micros,
        )?;
        // Saturating: without a limit a worst case may be "everything" (u64::MAX), and
        // what is held then counts for nothing.
        c.held_steps += 1;
        c.held_tokens = c.held_tokens.saturating_add(tokens);
        c.held_cost = c.held_cost.saturating_add(cost_micros);
        Ok(Reservation {
            budget: self.clone(),
            tokens,
            cost: cost_micros,
            settled: false,
        })
    }

    /// Settled totals: (tokens, micro-dollars, steps).
    pub fn used(&self) -> (u64, u64, u64) {
        let c = self.counts();
        (c.tokens, c.cost, c.steps)
    }

    /// Tokens left to reserve (`u64::MAX` without a token limit).
    pub fn remaining_tokens(&self) -> u64 {
        let c = self.counts();
        self.limits.tokens.map_or(u64::MAX, |l| {
            l.saturating_sub(c.tokens.saturating_add(c.held_tokens))
        })
    }

    /// Micro-dollars left to reserve (`u64::MAX` without a cost limit).
    pub fn remaining_cost(&self) -> u64 {
        let c = self.counts();
        self.limits.cost_micros.map_or(u64::MAX, |l| {
            l.saturating_sub(c.cost.saturating_add(c.held_cost))
        })
    }

    /// Whether a token or cost limit holds (a call's worst case then matters).
    pub fn is_limited(&self) -> bool {
        self.limits.tokens.is_some() || self.limits.cost_micros.is_some()
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The first limit that is reached by what is settled, if one is (the run stops).
    pub fn reached(&self) -> Option<Which> {
        let c = self.counts();
        let at = |limit: Option<u64>, used: u64| limit.is_some_and(|l| used >= l);
        if at(self.limits.steps, c.steps) {
            Some(Which::Steps)
        } else if at(self.limits.tokens, c.tokens) {
            Some(Which::Tokens)
        } else if at(self.limits.cost_micros, c.cost) {
            Some(Which::Cost)
        } else {
            None
        }
    }
}

impl Reservation {
    /// What it holds: tokens and micro-dollars (its worst case).
    pub fn held(&self) -> (u64, u64) {
        (self.tokens, self.cost)
    }

    /// The request is done: what it used (as the provider reported) replaces what it held.
    /// A provider reporting more than the worst case is counted as reported.
    pub fn settle(mut self, tokens: u64, cost_micros: u64) {
        let mut c = self.budget.counts();
        c.held_steps = c.held_steps.saturating_sub(1);
        c.held_tokens = c.held_tokens.saturating_sub(self.tokens);
        c.held_cost = c.held_cost.saturating_sub(self.cost);
        c.steps += 1;
        c.tokens = c.tokens.saturating_add(tokens);
        c.cost = c.cost.saturating_add(cost_micros);
        drop(c);
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut c = self.budget.counts();
        c.held_steps = c.held_steps.saturating_sub(1);
        c.held_tokens = c.held_tokens.saturating_sub(self.tokens);
        c.held_cost = c.held_cost.saturating_sub(self.cost);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_run_stops_exactly_at_each_limit() {
        // Tokens: 100, requests of 30 worst, 25 used: the fourth reservation (4 × 30 > 100
        // with three settled at 75: 75 + 30 > 100) is refused; settled is 75.
        let b = Budget::new(Limits {
            tokens: Some(100),
            ..Limits::default()
        });
        for _ in 0..3 {
            b.reserve(30, 0).unwrap().settle(25, 0);
        }
        let e = b.reserve(30, 0).unwrap_err();
        assert_eq!((e.which, e.limit, e.used), (Which::Tokens, 100, 75));
        // A request that fits the rest exactly goes; then the limit is reached.
        b.reserve(25, 0).unwrap().settle(25, 0);
        assert_eq!(b.used().0, 100);
        assert_eq!(b.reached(), Some(Which::Tokens));
        assert!(b.reserve(1, 0).is_err());
        // Steps and cost alike.
        let b = Budget::new(Limits {
            steps: Some(2),
            cost_micros: Some(1_000),
            ..Limits::default()
        });
        b.reserve(0, 400).unwrap().settle(0, 400);
        assert_eq!(b.reserve(0, 700).unwrap_err().which, Which::Cost);
        b.reserve(0, 600).unwrap().settle(0, 600);
        assert_eq!(b.reserve(0, 0).unwrap_err().which, Which::Steps);
        assert_eq!(b.reached(), Some(Which::Steps));
        // A failed request (dropped unsettled) gives its reservation back.
        let b = Budget::new(Limits {
            tokens: Some(10),
            ..Limits::default()
        });
        drop(b.reserve(10, 0).unwrap());
        b.reserve(10, 0).unwrap().settle(3, 0);
        assert_eq!(b.used(), (3, 0, 1));
    }

    /// 50 requests in parallel racing the last tokens: what is reserved never passes the
    /// limit, so what is settled never does; exactly as many go as fit.
    #[test]
    fn parallel_requests_cannot_overshoot() {
        for _ in 0..20 {
            let b = Budget::new(Limits {
                tokens: Some(1_000),
                cost_micros: Some(10_000),
                steps: None,
            });
            // 900 spent already: room for 3 requests of 30 worst.
            b.reserve(900, 0).unwrap().settle(900, 0);
            let barrier = Arc::new(std::sync::Barrier::new(50));
            let handles: Vec<_> = (0..50)
                .map(|_| {
                    let (b, barrier) = (b.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        match b.reserve(30, 100) {
                            Ok(r) => {
                                std::thread::yield_now();
                                r.settle(30, 100);
                                true
                            }
                            Err(_) => false,
                        }
                    })
                })
                .collect();
            let went = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|g| *g)
                .count();
            let (tokens, cost, _) = b.used();
            assert!(tokens <= 1_000 && cost <= 10_000, "{tokens} {cost}");
            assert_eq!(went, 3);
            assert_eq!(tokens, 990);
        }
    }

    #[test]
    fn prices_round_up_and_never_overflow() {
        let p = Price {
            input_per_mtok_micros: 3_000_000,
            output_per_mtok_micros: 15_000_000,
        };
        let u = |i, o| Usage {
            input_tokens: i,
            output_tokens: o,
        };
        assert_eq!(p.cost_micros(u(1_000_000, 0)), 3_000_000);
        assert_eq!(p.cost_micros(u(1, 0)), 3);
        assert_eq!(p.cost_micros(u(0, 1)), 15);
        assert_eq!(p.cost_micros(u(1, 1)), 18);
        let tiny = Price {
            input_per_mtok_micros: 1,
            output_per_mtok_micros: 0,
        };
        assert_eq!(tiny.cost_micros(u(1, 0)), 1, "rounded up");
        assert_eq!(p.cost_micros(u(u64::MAX, u64::MAX)), u64::MAX);
    }
}
