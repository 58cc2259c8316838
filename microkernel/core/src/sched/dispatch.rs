//! Decisions: what a CPU runs next and for how long, and the queue operations every
//! state change goes through (charge, queue, dequeue, release, start).
//!
//! A decision touches the deciding CPU's queues (O(log n) each), scans CPUs for
//! balancing and stealing, and examines at most [`STEAL_SCAN`](super::STEAL_SCAN) queue
//! entries elsewhere; it never walks all runnable entities.

use super::entity::State;
use super::heap::Queue;
use super::{
    BALANCE_INTERVAL_NS, Decision, EntityId, LIMIT_PERIOD_NS, Reason, SLICE_NS, SchedulerOf,
};

impl<const CPUS: usize, const ENTITIES: usize> SchedulerOf<CPUS, ENTITIES> {
    /// Decides what `cpu` runs from `now`: the running entity (if still runnable) is
    /// charged and queued again (its co-scheduling group co-stops it if it got too far
    /// ahead, and co-starts the siblings it has caught up with), throttled entities whose
    /// period came are released, load is balanced when due, then the due reservation with
    /// the earliest tag, else the smallest virtual time, else an entity stolen from
    /// another CPU. A CPU that does not exist idles.
    pub fn pick(&mut self, cpu: usize, now: u64) -> Decision {
        if cpu >= self.cpu_count {
            return Decision::IDLE;
        }
        self.steps = 0;
        let previous = self.requeue_current(cpu, now);
        self.release_due(cpu, now);
        if now >= self.cpus[cpu].next_balance {
            self.cpus[cpu].next_balance = now.saturating_add(BALANCE_INTERVAL_NS);
            self.balance(cpu, now);
        }
        let mut choice = self.choose(cpu, now);
        if choice.is_none() && self.steal(cpu, now) {
            choice = self.choose(cpu, now);
        }
        let decision = self.start(cpu, choice, now);
        self.after_decision(previous, None, now);
        decision
    }

    /// Directed switch for IPC: like [`pick`](Self::pick), but runs `to` on `cpu` (waking
    /// it if it is blocked) when that keeps the guarantees: `to` may run on `cpu` (a
    /// reserving entity only on its home CPU), is not out of its limit, no other entity's
    /// reservation is due there, and `to` is at most one slice (of its own weight) ahead of
    /// the smallest virtual time queued there. Otherwise it is queued as by `wake` and the
    /// decision is an ordinary pick. The time `to` runs is charged to it as usual. A `to`
    /// that its co-scheduling group holds co-stopped is neither woken nor run.
    pub fn switch_to(&mut self, cpu: usize, to: EntityId, now: u64) -> Decision {
        if cpu >= self.cpu_count {
            let _ = self.wake(to, now);
            return Decision::IDLE;
        }
        self.steps = 0;
        let previous = self.requeue_current(cpu, now);
        self.release_due(cpu, now);
        let choice = match self.handoff(cpu, to, now) {
            Some(index) => Some((index, Reason::Handoff)),
            None => {
                let mut choice = self.choose(cpu, now);
                if choice.is_none() && self.steal(cpu, now) {
                    choice = self.choose(cpu, now);
                }
                choice
            }
        };
        let decision = self.start(cpu, choice, now);
        self.after_decision(previous, self.existing(to), now);
        decision
    }

    /// After a decision: the CPUs running members of the groups of the entity that ran
    /// before (it may have stopped running) and of the target of a directed switch (it
    /// may have woken) are kicked if co-scheduling needs them to decide sooner.
    fn after_decision(&mut self, previous: Option<usize>, target: Option<usize>, now: u64) {
        for index in [previous, target].into_iter().flatten() {
            self.arm_of(index, now);
        }
        self.last_steps = self.steps;
    }

    /// Charges the running entity of `cpu` up to `now` without re-deciding (for fresh
    /// statistics between decisions).
    pub fn charge(&mut self, cpu: usize, now: u64) {
        if cpu < self.cpu_count {
            self.charge_cpu(cpu, now);
        }
    }

    /// Whether `cpu` should re-decide before its deadline: it was kicked, it idles with
    /// work queued, a reservation fell due while something else runs, or its running
    /// entity is out of its limit.
    pub fn preempt_check(&self, cpu: usize, now: u64) -> bool {
        if cpu >= self.cpu_count {
            return false;
        }
        if self.kicks & (1 << cpu) != 0 {
            return true;
        }
        let c = &self.cpus[cpu];
        let Some(current) = c.current() else {
            return !c.queue(Queue::Share).is_empty()
                || c.queue(Queue::Throttle)
                    .peek()
                    .is_some_and(|t| self.entities[t].release_at <= now);
        };
        let due = c
            .queue(Queue::Reserve)
            .peek()
            .is_some_and(|r| self.entities[r].rtag <= now);
        let e = &self.entities[current];
        let ran = now.saturating_sub(c.since);
        let out_of_limit = e
            .limit_budget(self.mhz)
            .is_some_and(|budget| e.limit_room(now, budget) <= ran);
        (due && c.reason != Reason::Reservation) || out_of_limit
    }

    /// Accounts `cpu`'s time up to `now`: to its running entity, or as idle.
    pub(super) fn charge_cpu(&mut self, cpu: usize, now: u64) {
        let c = &mut self.cpus[cpu];
        let ns = now.saturating_sub(c.since);
        c.since = c.since.max(now);
        match c.current() {
            Some(index) => {
                c.used_ns += ns;
                let e = &mut self.entities[index];
                e.charge(ns, now, self.mhz);
                if e.group != 0 {
                    e.progress = e.progress.saturating_add(ns);
                }
                e.since = e.since.max(now);
            }
            None => c.idle_ns += ns,
        }
    }

    /// Takes the running entity off `cpu` (charged up to `now`); it keeps its state.
    pub(super) fn take_current(&mut self, cpu: usize, now: u64) -> Option<usize> {
        self.charge_cpu(cpu, now);
        let c = &mut self.cpus[cpu];
        let index = c.current()?;
        c.current = 0;
        c.reason = Reason::Idle;
        c.load -= u64::from(self.entities[index].params.shares);
        self.refresh_idle(cpu);
        Some(index)
    }

    /// Puts the entity running on `cpu` back in a queue, lets its co-scheduling group
    /// look at its progress, and returns it.
    pub(super) fn requeue_current(&mut self, cpu: usize, now: u64) -> Option<usize> {
        let index = self.take_current(cpu, now)?;
        let target = self.requeue_target(index, cpu);
        self.enqueue(index, target, now, false);
        self.cosched_of(index, now);
        Some(index)
    }

    /// Makes an entity not runnable (`to` is Blocked or CoStopped; a co-stop by its group
    /// is marked by the caller).
    pub(super) fn deschedule(&mut self, index: usize, now: u64, to: State) {
        match self.entities[index].state {
            State::Ready | State::Throttled => {
                self.entities[index].settle(now);
                self.dequeue(index);
            }
            State::Running => {
                let cpu = usize::from(self.entities[index].cpu);
                self.take_current(cpu, now);
                self.kick(cpu);
            }
            State::Blocked | State::CoStopped | State::Free => self.entities[index].settle(now),
        }
        let e = &mut self.entities[index];
        e.state = to;
        e.since = now;
        e.group_stopped = false;
    }

    /// Queues a runnable entity that is in no queue on `cpu` (its new home): lifted to
    /// the CPU's virtual clock if `waking`, throttled if out of its limit; kicks `cpu` if
    /// it idles or if the entity's reservation is due and a borrower runs there.
    pub(super) fn enqueue(&mut self, index: usize, cpu: usize, now: u64, waking: bool) {
        let from = usize::from(self.entities[index].cpu);
        let to_clock = self.cpus[cpu].vclock;
        let mhz = self.mhz;
        let e = &mut self.entities[index];
        if from != cpu {
            // Virtual times compare across CPUs (that is how the balancer finds who is
            // owed), but CPUs' clocks drift apart, so a newcomer is placed between its new
            // CPU's clock and one slice ahead of it: it neither waits long nor jumps
            // ahead of the entities already there (which could starve a low-share one).
            let lead = e.vtime_of(SLICE_NS);
            e.vtime = e.vtime.clamp(to_clock, to_clock.saturating_add(lead));
            e.cpu = cpu as u8;
            e.ran_here = false;
            e.counters.migrations += 1;
        }
        if waking {
            e.vtime = e.vtime.max(to_clock);
            e.rtag = e.rtag.max(now);
        }
        e.since = now;
        let throttled_until = e
            .limit_budget(mhz)
            .filter(|&budget| e.limit_room(now, budget) == 0)
            .map(|budget| e.release_time(now, budget));
        if let Some(release_at) = throttled_until {
            e.state = State::Throttled;
            e.release_at = release_at;
            self.push(cpu, index, Queue::Throttle);
            if !self.decides_by(cpu, release_at) {
                self.kick(cpu);
            }
            return;
        }
        e.state = State::Ready;
        let (reserves, rtag) = (e.reserves(), e.rtag);
        self.cpus[cpu].load += u64::from(e.params.shares);
        self.push(cpu, index, Queue::Share);
        if reserves {
            self.push(cpu, index, Queue::Reserve);
        }
        let c = &self.cpus[cpu];
        // An owner whose reservation is due preempts a borrower now; one due later must
        // be looked at by then.
        let owed = reserves && c.reason != Reason::Reservation && !self.decides_by(cpu, rtag);
        if c.current().is_none() || owed {
            self.kick(cpu);
        }
        self.refresh_idle(cpu);
    }

    /// Whether `cpu` will re-decide by `time` anyway (its deadline is not later).
    pub(super) fn decides_by(&self, cpu: usize, time: u64) -> bool {
        let deadline = self.cpus[cpu].deadline;
        deadline != 0 && deadline <= time
    }

    /// Takes a queued (ready or throttled) entity out of its CPU's queues.
    pub(super) fn dequeue(&mut self, index: usize) {
        let cpu = usize::from(self.entities[index].cpu);
        if self.entities[index].state == State::Ready {
            self.cpus[cpu].load -= u64::from(self.entities[index].params.shares);
        }
        for queue in [Queue::Share, Queue::Reserve, Queue::Throttle] {
            self.cpus[cpu].queues[queue as usize].remove(
                index,
                queue,
                &mut self.entities,
                &mut self.steps,
            );
        }
        self.refresh_idle(cpu);
    }

    pub(super) fn push(&mut self, cpu: usize, index: usize, queue: Queue) {
        let pushed = self.cpus[cpu].queues[queue as usize].push(
            index,
            queue,
            &mut self.entities,
            &mut self.steps,
        );
        // Every entity is in at most one queue of a kind, and a queue holds them all.
        debug_assert!(pushed, "entity {index} queued twice");
    }

    /// Releases the throttled entities of `cpu` whose period has come.
    pub(super) fn release_due(&mut self, cpu: usize, now: u64) {
        while let Some(index) = self.cpus[cpu].queue(Queue::Throttle).peek() {
            if self.entities[index].release_at > now {
                break;
            }
            self.entities[index].settle(now);
            self.dequeue(index);
            let target = self.wake_target(index);
            // Lifted like a wake-up: waiting for its period banks no credit either.
            self.enqueue(index, target, now, true);
        }
    }

    /// The due reservation with the earliest tag, else the smallest virtual time.
    pub(super) fn choose(&self, cpu: usize, now: u64) -> Option<(usize, Reason)> {
        let c = &self.cpus[cpu];
        if let Some(index) = c.queue(Queue::Reserve).peek()
            && self.entities[index].rtag <= now
        {
            return Some((index, Reason::Reservation));
        }
        c.queue(Queue::Share)
            .peek()
            .map(|index| (index, Reason::Shares))
    }

    /// Puts the chosen entity (queued on `cpu`) on `cpu`, or idles.
    pub(super) fn start(
        &mut self,
        cpu: usize,
        choice: Option<(usize, Reason)>,
        now: u64,
    ) -> Decision {
        let decision = match choice {
            None => {
                self.refresh_idle(cpu);
                let c = &self.cpus[cpu];
                Decision {
                    run_for_ns: c
                        .queue(Queue::Throttle)
                        .peek()
                        .map(|t| self.entities[t].release_at.saturating_sub(now).max(1)),
                    ..Decision::IDLE
                }
            }
            Some((index, reason)) => {
                if let Some(first) = self.cpus[cpu].queue(Queue::Share).peek() {
                    let c = &mut self.cpus[cpu];
                    c.vclock = c.vclock.max(self.entities[first].vtime);
                }
                self.entities[index].settle(now);
                for queue in [Queue::Share, Queue::Reserve] {
                    self.cpus[cpu].queues[queue as usize].remove(
                        index,
                        queue,
                        &mut self.entities,
                        &mut self.steps,
                    );
                }
                let e = &mut self.entities[index];
                e.state = State::Running;
                e.ran_here = true;
                e.counters.dispatches += 1;
                let c = &mut self.cpus[cpu];
                c.current = index as u16 + 1;
                c.reason = reason;
                c.since = now;
                self.refresh_idle(cpu);
                Decision {
                    entity: Some(index as EntityId),
                    run_for_ns: Some(self.run_for(cpu, index, reason, now)),
                    reason,
                }
            }
        };
        self.cpus[cpu].deadline = decision.run_for_ns.map_or(0, |ns| now.saturating_add(ns));
        self.kicks &= !(1 << cpu);
        decision
    }

    /// How long the entity just started on `cpu` may run before the next decision (slice,
    /// limit, reservation and throttle events, and its co-scheduling group's deadline).
    pub(super) fn run_for(&self, cpu: usize, index: usize, reason: Reason, now: u64) -> u64 {
        let e = &self.entities[index];
        let c = &self.cpus[cpu];
        let mut until = SLICE_NS;
        if let Some(budget) = e.limit_budget(self.mhz) {
            let room = e.limit_room(now, budget);
            let to_boundary = LIMIT_PERIOD_NS - now % LIMIT_PERIOD_NS;
            // Room past the period's end means the next period starts with a full budget.
            until = until.min(if room >= to_boundary {
                to_boundary + budget
            } else {
                room
            });
        }
        if reason != Reason::Reservation
            && let Some(r) = c.queue(Queue::Reserve).peek()
        {
            until = until.min(self.entities[r].rtag.saturating_sub(now));
        }
        if let Some(t) = c.queue(Queue::Throttle).peek() {
            until = until.min(self.entities[t].release_at.saturating_sub(now));
        }
        if let Some(ns) = self.group_deadline(index, now) {
            until = until.min(ns);
        }
        until.max(1)
    }

    /// Whether `to` may be run on `cpu` now by a directed switch (see `switch_to`); if it
    /// is blocked it is woken either way.
    pub(super) fn handoff(&mut self, cpu: usize, to: EntityId, now: u64) -> Option<usize> {
        let index = self.existing(to)?;
        let e = self.entities[index];
        let movable =
            e.allowed & (1 << cpu) != 0 && (!e.reserves() || usize::from(e.res_cpu) == cpu);
        match e.state {
            State::Blocked | State::CoStopped if !e.group_stopped => {
                self.entities[index].settle(now);
                self.level(index, now);
                let target = if movable {
                    cpu
                } else {
                    self.wake_target(index)
                };
                self.enqueue(index, target, now, true);
            }
            State::Ready if usize::from(e.cpu) != cpu && movable => {
                self.entities[index].settle(now);
                self.dequeue(index);
                self.enqueue(index, cpu, now, false);
            }
            _ => {}
        }
        let e = &self.entities[index];
        if e.state != State::Ready || usize::from(e.cpu) != cpu {
            return None;
        }
        let c = &self.cpus[cpu];
        if let Some(r) = c.queue(Queue::Reserve).peek()
            && r != index
            && self.entities[r].rtag <= now
        {
            return None;
        }
        let first = c.queue(Queue::Share).peek()?;
        let ahead = e.vtime.saturating_sub(self.entities[first].vtime);
        (ahead <= e.vtime_of(SLICE_NS)).then_some(index)
    }
}
