//! Placement and load balancing: which CPU an entity is queued on when it wakes, when its
//! slice ends, when a CPU runs dry (steal), and periodically (balance).
//!
//! Every choice here scans CPUs (at most 64, as bit masks where it can) or a bounded
//! number of queue entries ([`STEAL_SCAN`]), never all runnable entities. A reserving
//! entity is only ever queued on the CPU holding its reservation; moving it moves the
//! booking, and only to a CPU where it fits.

use super::admission::cpus_in;
use super::heap::Queue;
use super::{STEAL_SCAN, SchedulerOf, Topology};

/// Even-numbered CPUs (first threads of cores).
const EVEN: u64 = 0x5555_5555_5555_5555;

impl<const CPUS: usize, const ENTITIES: usize> SchedulerOf<CPUS, ENTITIES> {
    /// Where a waking (or released) entity is queued: its reservation's CPU, else as
    /// [`place`](Self::place) says.
    pub(super) fn wake_target(&mut self, index: usize) -> usize {
        let e = &self.entities[index];
        if e.reserves() {
            usize::from(e.res_cpu)
        } else {
            self.place(index)
        }
    }

    /// An allowed idle CPU — on a fully idle core first, then the entity's last CPU, then
    /// the lowest — else the allowed CPU with the least load (its last CPU on a tie).
    pub(super) fn place(&mut self, index: usize) -> usize {
        let (allowed, last) = (
            self.entities[index].allowed,
            usize::from(self.entities[index].cpu),
        );
        let idle = self.idle & allowed;
        if idle != 0 {
            let cores = self.idle_cores() & allowed;
            return prefer(if cores != 0 { cores } else { idle }, last);
        }
        let mut best = (u64::MAX, true, usize::MAX);
        for cpu in cpus_in(allowed) {
            self.steps += 1;
            let key = (self.cpus[cpu].load, cpu != last, cpu);
            if key < best {
                best = key;
            }
        }
        best.2
    }

    /// Where an entity whose slice on `cpu` ended is queued: its reservation's CPU; a
    /// place elsewhere if `cpu` is no longer allowed; a fully idle core if its sibling
    /// thread is busy; an idle CPU if others wait on `cpu`; else `cpu` again.
    pub(super) fn requeue_target(&mut self, index: usize, cpu: usize) -> usize {
        let e = &self.entities[index];
        if e.reserves() {
            return usize::from(e.res_cpu);
        }
        let allowed = e.allowed;
        if allowed & (1 << cpu) == 0 {
            return self.place(index);
        }
        let others = self.idle & allowed & !(1 << cpu);
        if others == 0 {
            return cpu;
        }
        let cores = self.idle_cores() & others;
        if let Some(sibling) = self.sibling(cpu)
            && self.idle & (1 << sibling) == 0
            && cores != 0
        {
            return prefer(cores, cpu);
        }
        if !self.cpus[cpu].queue(Queue::Share).is_empty() {
            return prefer(if cores != 0 { cores } else { others }, cpu);
        }
        cpu
    }

    /// Idle CPUs whose sibling thread (if any) is idle too.
    fn idle_cores(&self) -> u64 {
        match self.topology {
            Topology::Flat => self.idle,
            Topology::SmtPairs => {
                let idle = self.idle;
                let sibling_idle = ((idle & EVEN) << 1) | ((idle >> 1) & EVEN);
                // A last CPU without a sibling (odd count) is a core of its own.
                let alone = if self.cpu_count % 2 == 1 {
                    1 << (self.cpu_count - 1)
                } else {
                    0
                };
                idle & (sibling_idle | alone)
            }
        }
    }

    /// Whether the queued entity may move to `cpu` (affinity, and room for its
    /// reservation there).
    fn may_move(&self, index: usize, cpu: usize) -> bool {
        let e = &self.entities[index];
        if e.allowed & (1 << cpu) == 0 {
            return false;
        }
        if !e.reserves() || usize::from(e.res_cpu) == cpu {
            return true;
        }
        let own = Some((usize::from(e.res_cpu), e.params.reservation_mhz));
        self.core_free(cpu, own) >= e.params.reservation_mhz
    }

    /// Moves a ready entity to `cpu`'s queues, with its reservation.
    fn move_queued(&mut self, index: usize, cpu: usize, now: u64) {
        self.entities[index].settle(now);
        self.dequeue(index);
        let e = &mut self.entities[index];
        if e.reserves() {
            let mhz = e.params.reservation_mhz;
            self.cpus[usize::from(e.res_cpu)].reserved_mhz -= mhz;
            self.cpus[cpu].reserved_mhz += mhz;
            e.res_cpu = cpu as u8;
        }
        self.enqueue(index, cpu, now, false);
    }

    /// `cpu` has nothing to run: takes a waiting entity that may run here from the busy
    /// CPU with the longest queue (examining at most [`STEAL_SCAN`] entries per CPU).
    pub(super) fn steal(&mut self, cpu: usize, now: u64) -> bool {
        let mut best: Option<(usize, usize)> = None;
        let mut longest = 0;
        for other in cpus_in(self.online() & !(1 << cpu)) {
            self.steps += 1;
            let queue = self.cpus[other].queue(Queue::Share);
            // Work queued on a CPU that runs nothing is about to run there (it was kicked).
            if queue.len() <= longest || self.cpus[other].current().is_none() {
                continue;
            }
            let mut scanned = 0;
            let found = (0..queue.len().min(STEAL_SCAN))
                .filter_map(|i| queue.at(i))
                .inspect(|_| scanned += 1)
                .find(|&index| self.may_move(index, cpu));
            self.steps += scanned;
            if let Some(index) = found {
                best = Some((other, index));
                longest = queue.len();
            }
        }
        let Some((_, index)) = best else {
            return false;
        };
        self.move_queued(index, cpu, now);
        true
    }

    /// Pulls one waiting entity to `cpu` from the CPU with the most load, if it may run
    /// here, has run since it last moved (so moves never starve it), and moving it
    /// reduces the imbalance (its shares are below the difference) or keeps it (equal)
    /// while the entity is owed more than what `cpu` would run next (a smaller virtual
    /// time): indivisible imbalances rotate in favour of whoever has received the least.
    pub(super) fn balance(&mut self, cpu: usize, now: u64) {
        let mine = self.cpus[cpu].load;
        let mut busiest: Option<(u64, usize)> = None;
        for other in cpus_in(self.online() & !(1 << cpu)) {
            self.steps += 1;
            let c = &self.cpus[other];
            if c.load > mine
                && c.current().is_some()
                && !c.queue(Queue::Share).is_empty()
                && busiest.is_none_or(|(load, _)| c.load > load)
            {
                busiest = Some((c.load, other));
            }
        }
        let Some((load, other)) = busiest else {
            return;
        };
        let difference = load - mine;
        let next_here = self.cpus[cpu]
            .queue(Queue::Share)
            .peek()
            .map_or(u128::MAX, |index| self.entities[index].vtime);
        let queue = self.cpus[other].queue(Queue::Share);
        let mut scanned = 0;
        let found = (0..queue.len().min(STEAL_SCAN))
            .filter_map(|i| queue.at(i))
            .inspect(|_| scanned += 1)
            .find(|&index| {
                let e = &self.entities[index];
                let shares = u64::from(e.params.shares);
                e.ran_here
                    && (shares < difference || (shares == difference && e.vtime < next_here))
                    && self.may_move(index, cpu)
            });
        self.steps += scanned;
        if let Some(index) = found {
            self.move_queued(index, cpu, now);
        }
    }
}

/// `last` if it is in `mask` (non-empty), else the lowest CPU in it.
fn prefer(mask: u64, last: usize) -> usize {
    if mask & (1 << last) != 0 {
        last
    } else {
        mask.trailing_zeros() as usize
    }
}
