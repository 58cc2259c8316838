//! The scheduler's structural invariants, checked after every step of the simulations.

use super::super::SchedulerOf;
use super::super::entity::State;
use super::super::heap::Queue;

impl<const CPUS: usize, const ENTITIES: usize> SchedulerOf<CPUS, ENTITIES> {
    /// Checks every structural invariant; panics with a description on the first one
    /// broken.
    pub(super) fn check_invariants(&self) {
        let online = self.online();
        let mut counted = 0;
        let mut reserved = [0u32; CPUS];
        let mut load = [0u64; CPUS];
        for (index, e) in self.entities.iter().enumerate() {
            if e.state == State::Free {
                continue;
            }
            counted += 1;
            let cpu = usize::from(e.cpu);
            assert!(cpu < self.cpu_count, "entity {index} on CPU {cpu}");
            assert!(e.allowed != 0 && e.allowed & !online == 0);
            if e.reserves() {
                reserved[usize::from(e.res_cpu)] += e.params.reservation_mhz;
                assert!(
                    e.allowed & (1 << e.res_cpu) != 0,
                    "reservation outside affinity"
                );
            }
            if e.competes() {
                load[cpu] += u64::from(e.params.shares);
            }
            let c = &self.cpus[cpu];
            let queued = |q: Queue| e.pos[q as usize] != 0;
            match e.state {
                State::Ready => {
                    assert!(queued(Queue::Share) && !queued(Queue::Throttle));
                    assert_eq!(queued(Queue::Reserve), e.reserves());
                }
                State::Throttled => {
                    assert!(queued(Queue::Throttle) && !queued(Queue::Share));
                    assert!(!queued(Queue::Reserve));
                }
                State::Running => {
                    assert_eq!(c.current(), Some(index), "entity {index} runs elsewhere");
                    assert_eq!(e.pos, [0; 3]);
                }
                _ => assert_eq!(e.pos, [0; 3], "entity {index} blocked but queued"),
            }
        }
        assert_eq!(counted, self.count);
        for (cpu, c) in self.cpus.iter().enumerate().take(self.cpu_count) {
            for queue in [Queue::Share, Queue::Reserve, Queue::Throttle] {
                c.queue(queue).check(queue, &self.entities);
            }
            assert_eq!(c.reserved_mhz, reserved[cpu], "CPU {cpu} reservation sum");
            assert!(
                self.core_reserved(cpu) <= self.mhz,
                "CPU {cpu}'s core is over-reserved"
            );
            assert_eq!(c.load, load[cpu], "CPU {cpu} load");
            let idle = c.current().is_none() && c.queue(Queue::Share).is_empty();
            assert_eq!(self.idle & (1 << cpu) != 0, idle, "CPU {cpu} idle bit");
        }
    }
}
