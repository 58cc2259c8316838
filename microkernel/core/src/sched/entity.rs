//! One schedulable entity as the policy keeps it: parameters, the three ordering keys,
//! the limit bucket of the current period, and the accounting counters.
//!
//! The arithmetic of the three controls lives here: virtual time advances by used time
//! divided by shares, the reservation tag by used time divided by the reserved fraction
//! of a CPU, and the limit bucket fills with used time in aligned periods of
//! [`LIMIT_PERIOD_NS`]. Nothing here knows about CPUs or queues.

use super::heap::Queue;
use super::{LIMIT_PERIOD_NS, Params, RunState, Stats};

/// Virtual time advances by `used_ns << VTIME_SHIFT / shares` (as a multiplication by a
/// precomputed inverse, exact to one part in 2^20 at the largest share value).
const VTIME_SHIFT: u32 = 40;

/// What an entity is doing. `Free` (0) marks an unused slot.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Free = 0,
    /// Not runnable (waiting for an event).
    Blocked,
    /// Runnable, in its CPU's share queue (and reserve queue if it reserves).
    Ready,
    /// Runnable but out of its limit for this period, in its CPU's throttle queue.
    Throttled,
    /// On its CPU.
    Running,
    /// Runnable but held back to keep a multi-vCPU VM's vCPUs together.
    CoStopped,
}

/// Time and event counters (see [`Stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub(super) used_ns: u64,
    pub(super) ready_ns: u64,
    pub(super) limited_ns: u64,
    pub(super) costop_ns: u64,
    pub(super) waited_ns: u64,
    pub(super) dispatches: u64,
    pub(super) migrations: u64,
}

impl Counters {
    const ZERO: Self = Self {
        used_ns: 0,
        ready_ns: 0,
        limited_ns: 0,
        costop_ns: 0,
        waited_ns: 0,
        dispatches: 0,
        migrations: 0,
    };
}

/// One entity's scheduling state.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entity {
    /// Service received divided by shares (proportional-share key).
    pub(super) vtime: u128,
    pub(super) params: Params,
    /// Effective affinity: the allowed CPUs that exist.
    pub(super) allowed: u64,
    /// `2^VTIME_SHIFT / shares`.
    pub(super) inv_weight: u64,
    /// Reservation tag in ns: when the entity's guaranteed service is due (key of the
    /// reserve queue; meaningful only with a reservation).
    pub(super) rtag: u64,
    /// When a throttled entity may run again (key of the throttle queue).
    pub(super) release_at: u64,
    /// The limit period `limit_used` counts in (`time / LIMIT_PERIOD_NS`).
    pub(super) limit_period: u64,
    /// Time used in `limit_period` (above the budget: debt carried into the next period).
    pub(super) limit_used: u64,
    /// When the time since the last state change starts (for the counters).
    pub(super) since: u64,
    pub(super) counters: Counters,
    /// Position + 1 in the heap of each [`Queue`] of its CPU (0: not queued there).
    pub(super) pos: [u16; 3],
    pub(super) state: State,
    /// Whether it has run since it last moved to another CPU (the balancer moves only
    /// such entities, so being moved never keeps an entity from running).
    pub(super) ran_here: bool,
    /// The CPU it is queued, throttled or running on; else the one it last ran on.
    pub(super) cpu: u8,
    /// The CPU whose capacity holds its reservation (with a reservation only).
    pub(super) res_cpu: u8,
    /// Co-scheduling progress: time run as a member of its group, as of the last charge
    /// (see `cosched.rs`; meaningless outside a group and while not paced).
    pub(super) progress: u64,
    /// Its co-scheduling group's slot + 1 (0: in no group).
    pub(super) group: u16,
    /// Co-stopped by its group's co-scheduling (not by [`co_stop`]).
    ///
    /// [`co_stop`]: super::SchedulerOf::co_stop
    pub(super) group_stopped: bool,
}

impl Entity {
    /// An unused slot.
    pub(super) const FREE: Self = Self {
        vtime: 0,
        params: Params::ZERO,
        allowed: 0,
        inv_weight: 0,
        rtag: 0,
        release_at: 0,
        limit_period: 0,
        limit_used: 0,
        since: 0,
        counters: Counters::ZERO,
        pos: [0; 3],
        state: State::Free,
        ran_here: false,
        cpu: 0,
        res_cpu: 0,
        progress: 0,
        group: 0,
        group_stopped: false,
    };

    /// The key this entity is ordered by in `queue`.
    pub(super) fn key(&self, queue: Queue) -> u128 {
        match queue {
            Queue::Share => self.vtime,
            Queue::Reserve => u128::from(self.rtag),
            Queue::Throttle => u128::from(self.release_at),
        }
    }

    /// Takes new parameters (already validated).
    pub(super) fn set_params(&mut self, params: Params, allowed: u64) {
        self.params = params;
        self.allowed = allowed;
        self.inv_weight = (1u64 << VTIME_SHIFT) / u64::from(params.shares.max(1));
    }

    /// The slot of its co-scheduling group, if it is in one.
    pub(super) fn group_slot(&self) -> Option<usize> {
        usize::from(self.group).checked_sub(1)
    }

    /// Whether its progress counts in its group's skew: runnable (co-stopped by the
    /// group included), not blocked and not held by an explicit `co_stop`.
    pub(super) fn paced(&self) -> bool {
        match self.state {
            State::Ready | State::Throttled | State::Running => true,
            State::CoStopped => self.group_stopped,
            State::Blocked | State::Free => false,
        }
    }

    /// Whether the entity has a reservation.
    pub(super) fn reserves(&self) -> bool {
        self.params.reservation_mhz > 0
    }

    /// Whether the entity's shares count in its CPU's load (queued or running).
    #[cfg(test)]
    pub(super) fn competes(&self) -> bool {
        matches!(self.state, State::Ready | State::Running)
    }

    /// Virtual time that `ns` of service is worth to this entity.
    pub(super) fn vtime_of(&self, ns: u64) -> u128 {
        u128::from(ns) * u128::from(self.inv_weight)
    }

    /// Accounts `ns` of service on a `cpu_mhz` CPU that ended at `end`.
    pub(super) fn charge(&mut self, ns: u64, end: u64, cpu_mhz: u32) {
        self.counters.used_ns += ns;
        self.vtime += self.vtime_of(ns);
        if self.reserves() {
            let advance =
                u128::from(ns) * u128::from(cpu_mhz) / u128::from(self.params.reservation_mhz);
            self.rtag = self
                .rtag
                .saturating_add(u64::try_from(advance).unwrap_or(u64::MAX));
        }
        if let Some(budget) = self.limit_budget(cpu_mhz) {
            let start = end.saturating_sub(ns);
            let (first, last) = (start / LIMIT_PERIOD_NS, end / LIMIT_PERIOD_NS);
            self.roll(first, budget);
            if first == last {
                self.limit_used += ns;
            } else {
                self.limit_used += last * LIMIT_PERIOD_NS - start;
                self.roll(last, budget);
                self.limit_used += end - last * LIMIT_PERIOD_NS;
            }
        }
    }

    /// The time the limit allows per period, or `None` if the limit does not bind (0, or
    /// at least a whole CPU).
    pub(super) fn limit_budget(&self, cpu_mhz: u32) -> Option<u64> {
        let limit = self.params.limit_mhz;
        if limit == 0 || limit >= cpu_mhz {
            return None;
        }
        Some((LIMIT_PERIOD_NS * u64::from(limit) / u64::from(cpu_mhz)).max(1))
    }

    /// Time counted against the limit in `period` (earlier use carried as debt).
    fn used_in(&self, period: u64, budget: u64) -> u64 {
        let elapsed = period.saturating_sub(self.limit_period);
        self.limit_used
            .saturating_sub(budget.saturating_mul(elapsed))
    }

    fn roll(&mut self, period: u64, budget: u64) {
        if period > self.limit_period {
            self.limit_used = self.used_in(period, budget);
            self.limit_period = period;
        }
    }

    /// Service the limit still allows in the period containing `now`.
    pub(super) fn limit_room(&self, now: u64, budget: u64) -> u64 {
        budget.saturating_sub(self.used_in(now / LIMIT_PERIOD_NS, budget))
    }

    /// The start of the first period in which an entity out of budget at `now` has room.
    pub(super) fn release_time(&self, now: u64, budget: u64) -> u64 {
        let period = now / LIMIT_PERIOD_NS;
        let later = (self.used_in(period, budget) / budget).max(1);
        period.saturating_add(later).saturating_mul(LIMIT_PERIOD_NS)
    }

    /// Adds the time since the last state change to the counter of the current state
    /// (service of a running entity is charged by its CPU instead).
    pub(super) fn settle(&mut self, now: u64) {
        let ns = now.saturating_sub(self.since);
        let c = &mut self.counters;
        match self.state {
            State::Ready => c.ready_ns += ns,
            State::Throttled => {
                c.ready_ns += ns;
                c.limited_ns += ns;
            }
            State::Blocked => c.waited_ns += ns,
            State::CoStopped => c.costop_ns += ns,
            State::Running | State::Free => {}
        }
        self.since = self.since.max(now);
    }

    /// The counters as of `now`, with `running_ns` of not yet charged service.
    pub(super) fn stats(&self, now: u64, running_ns: u64) -> Stats {
        let mut copy = *self;
        copy.settle(now);
        let c = copy.counters;
        Stats {
            used_ns: c.used_ns + running_ns,
            ready_ns: c.ready_ns,
            limited_ns: c.limited_ns,
            costop_ns: c.costop_ns,
            waited_ns: c.waited_ns,
            dispatches: c.dispatches,
            migrations: c.migrations,
            cpu: usize::from(self.cpu),
            reserved_on: self.reserves().then_some(usize::from(self.res_cpu)),
            state: match self.state {
                State::Ready => RunState::Ready,
                State::Throttled => RunState::Limited,
                State::Running => RunState::Running,
                State::CoStopped => RunState::CoStopped,
                State::Blocked | State::Free => RunState::Blocked,
            },
        }
    }
}
