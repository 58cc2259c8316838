//! Host tests of the scheduling policy on a simulated clock.
//!
//! [`Sim`] plays the kernel: each CPU calls `pick` when its decision's time is up or when
//! it is kicked, and every stretch an entity spends on a CPU is recorded, so the tests
//! can measure shares, reservations, limits and placement from what actually ran.

use super::*;
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

mod admission;
mod cosched;
mod cost;
mod invariants;
mod placement;
mod policy;
mod properties;

pub(super) const MS: u64 = 1_000_000;
pub(super) const SECOND: u64 = 1_000_000_000;

/// The size the tests use: 8 CPUs, 160 entities.
pub(super) type TestScheduler = SchedulerOf<8, 160>;

/// One stretch of an entity on a CPU.
#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    pub(super) entity: EntityId,
    pub(super) cpu: usize,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) reason: Reason,
}

/// A simulated machine driving the scheduler the way the kernel will.
pub(super) struct Sim {
    pub(super) sched: Box<TestScheduler>,
    pub(super) now: u64,
    /// When each CPU picks next (`u64::MAX`: only when kicked).
    next: Vec<u64>,
    /// What each CPU runs, since when and why.
    running: Vec<Option<(EntityId, u64, Reason)>>,
    pub(super) runs: Vec<Run>,
    pub(super) picks: u64,
    pub(super) steps: u64,
    /// Check the scheduler's invariants after every decision.
    pub(super) check: bool,
}

impl Sim {
    pub(super) fn new(cpus: usize, mhz: u32, topology: Topology) -> Self {
        let mut sched = Box::new(TestScheduler::new());
        sched.configure(cpus, mhz, topology).unwrap();
        Self {
            sched,
            now: 0,
            next: vec![0; cpus],
            running: vec![None; cpus],
            runs: Vec::new(),
            picks: 0,
            steps: 0,
            check: true,
        }
    }

    pub(super) fn add(&mut self, id: EntityId, params: Params) -> Result<(), AdmissionError> {
        self.sched.add(id, params, self.now)
    }

    /// Adds an entity that is always runnable.
    pub(super) fn add_busy(&mut self, id: EntityId, params: Params) {
        self.add(id, params).unwrap();
        self.wake(id);
    }

    pub(super) fn wake(&mut self, id: EntityId) {
        self.sched.wake(id, self.now).unwrap();
    }

    pub(super) fn block(&mut self, id: EntityId) {
        self.sched.block(id, self.now).unwrap();
    }

    pub(super) fn update(&mut self, id: EntityId, params: Params) -> Result<(), AdmissionError> {
        self.sched.update(id, params, self.now)
    }

    /// Runs the machine until `end`: every CPU decides when its time is up or it is
    /// kicked (kicks are served at once, as an IPI would be).
    pub(super) fn run_until(&mut self, end: u64) {
        let mut same_instant = 0;
        loop {
            let kicks = self.sched.take_kicks();
            for (cpu, next) in self.next.iter_mut().enumerate() {
                if kicks & (1 << cpu) != 0 {
                    *next = self.now;
                }
            }
            let (cpu, at) = self
                .next
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|&(_, at)| at)
                .unwrap();
            if at > end {
                break;
            }
            same_instant = if at == self.now { same_instant + 1 } else { 0 };
            assert!(same_instant < 1000, "decisions loop at {at} ns");
            // Decisions come every few milliseconds; a storm of tiny ones is a broken
            // deadline (at most one per 20 µs on average per CPU, with room to start).
            let allowed = (self.next.len() as u64) * (1000 + at / 20_000);
            assert!(
                self.picks < allowed,
                "decision storm: {} by {at} ns",
                self.picks
            );
            self.now = self.now.max(at);
            self.decide(cpu);
        }
        self.now = self.now.max(end);
    }

    /// Runs for `ns` more.
    pub(super) fn run_for(&mut self, ns: u64) {
        self.run_until(self.now + ns);
    }

    fn decide(&mut self, cpu: usize) {
        let decision = self.sched.pick(cpu, self.now);
        self.picks += 1;
        self.steps += self.sched.last_decision_steps();
        self.close(cpu);
        self.running[cpu] = decision.entity.map(|e| (e, self.now, decision.reason));
        self.next[cpu] = decision
            .run_for_ns
            .map_or(u64::MAX, |ns| self.now.saturating_add(ns));
        if self.check {
            self.sched.check_invariants();
        }
    }

    fn close(&mut self, cpu: usize) {
        if let Some((entity, start, reason)) = self.running[cpu].take()
            && self.now > start
        {
            self.runs.push(Run {
                entity,
                cpu,
                start,
                end: self.now,
                reason,
            });
        }
    }

    /// Every stretch so far, including the ones still running (cut at `now`).
    pub(super) fn all_runs(&self) -> Vec<Run> {
        let mut runs = self.runs.clone();
        for (cpu, running) in self.running.iter().enumerate() {
            if let Some((entity, start, reason)) = *running
                && self.now > start
            {
                runs.push(Run {
                    entity,
                    cpu,
                    start,
                    end: self.now,
                    reason,
                });
            }
        }
        runs
    }

    /// Time `id` ran within `[from, to)`, from the recorded stretches.
    pub(super) fn ran_between(&self, id: EntityId, from: u64, to: u64) -> u64 {
        self.all_runs()
            .iter()
            .filter(|r| r.entity == id)
            .map(|r| r.end.min(to).saturating_sub(r.start.max(from)))
            .sum()
    }

    /// The scheduler's own count of `id`'s used time.
    pub(super) fn used(&self, id: EntityId) -> u64 {
        self.sched.stats(id, self.now).unwrap().used_ns
    }
}

/// `part / whole` as a fraction.
pub(super) fn fraction(part: u64, whole: u64) -> f64 {
    part as f64 / whole as f64
}

/// Params with shares and a reservation.
pub(super) fn reserving(shares: u32, reservation_mhz: u32) -> Params {
    Params {
        reservation_mhz,
        ..Params::with_shares(shares)
    }
}

/// Params with shares and a limit.
pub(super) fn limited(shares: u32, limit_mhz: u32) -> Params {
    Params {
        limit_mhz,
        ..Params::with_shares(shares)
    }
}

/// Params with default shares and an affinity mask.
pub(super) fn pinned(affinity: u64) -> Params {
    Params {
        affinity,
        ..Params::default()
    }
}
