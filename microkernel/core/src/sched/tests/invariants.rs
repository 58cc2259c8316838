//! The scheduler's structural invariants, checked after every step of the simulations.

use super::super::entity::State;
use super::super::heap::Queue;
use super::super::{MAX_GROUP_MEMBERS, SchedulerOf};

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
        self.check_groups();
    }

    /// Co-scheduling groups: members and slots agree, only members are held co-stopped,
    /// and no group holds every runnable member co-stopped.
    fn check_groups(&self) {
        for (index, e) in self.entities.iter().enumerate() {
            match e.group_slot() {
                Some(slot) => assert!(
                    self.groups[slot].members().contains(&(index as u16)),
                    "entity {index} not in its group's slot {slot}"
                ),
                None => assert!(!e.group_stopped, "entity {index} held by no group"),
            }
            if e.group_stopped {
                assert_eq!(
                    e.state,
                    State::CoStopped,
                    "entity {index} held but {:?}",
                    e.state
                );
            }
        }
        let mut labels = std::vec::Vec::new();
        for (slot, g) in self.groups.iter().enumerate() {
            let members = g.members();
            if members.is_empty() {
                continue;
            }
            assert!(members.len() <= MAX_GROUP_MEMBERS);
            assert!(!labels.contains(&g.id()), "group {} in two slots", g.id());
            labels.push(g.id());
            for &m in members {
                let e = &self.entities[usize::from(m)];
                assert_ne!(e.state, State::Free, "group {} has a free member", g.id());
                assert_eq!(e.group_slot(), Some(slot), "member {m} of slot {slot}");
            }
            let mut paced = members
                .iter()
                .map(|&m| &self.entities[usize::from(m)])
                .filter(|e| e.paced())
                .peekable();
            if paced.peek().is_some() {
                assert!(
                    paced.any(|e| !e.group_stopped),
                    "group {}: every runnable member is co-stopped",
                    g.id()
                );
            }
        }
    }
}
