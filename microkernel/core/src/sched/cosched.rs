//! Relaxed co-scheduling: the members of a group (the vCPUs of one VM) are kept within
//! [`COSTOP_SKEW_NS`] of each other's progress, so a guest spinning on a lock held by a
//! descheduled sibling wastes at most that much.
//!
//! A member's *progress* is the time it has run as a member. The *paced* members are the
//! runnable ones (ready, throttled, running, or co-stopped by the group) — a blocked
//! member (a halted vCPU) is not behind anyone, and neither is one held by an explicit
//! [`co_stop`](SchedulerOf::co_stop). A member that becomes paced (wakes, joins, is
//! released by `co_start`) starts level with the slowest paced sibling, so blocking
//! resets its skew. A member's *skew* is how far it is behind the most advanced paced
//! sibling: it grows while the member waits (ready, throttled or co-stopped) and a
//! sibling ahead of it runs, and shrinks while it runs and that sibling does not.
//!
//! - **Co-stop**: a member whose progress gets [`COSTOP_SKEW_NS`] ahead of the slowest
//!   paced sibling's (so the slowest's skew has reached the threshold) is co-stopped; a
//!   running one leaves its CPU (which is kicked). Only the members that far ahead stop:
//!   the others are behind them, and may still run until they get that far ahead.
//! - **Co-start**: a co-stopped member is runnable again (as a wake-up) as soon as it is
//!   no more than half the threshold ahead of the slowest paced sibling: because the
//!   slowest ran, or because it blocked, left the group or was removed (then the next
//!   slowest counts). The slowest paced member is never co-stopped, so a group always
//!   has a runnable member that is not co-stopped (no deadlock), and every skew stays
//!   within the threshold (plus the lateness of the timer).
//! - **Deadlines**: a member running while a paced sibling waits is given at most the
//!   time until it is the threshold ahead of the slowest waiting sibling (the earliest
//!   moment its lead can reach the threshold while the running members stay as they
//!   are), at most the time until its own progress reaches a co-stopped sibling's
//!   co-start point, and at most the threshold (so a sibling waiting on the same CPU gets
//!   its turn at a decision before it falls that far behind). After every change of a
//!   group (a member stops running, wakes, blocks, joins, leaves, is co-stopped) the CPUs
//!   running its members are kicked if their decision would come later than that.
//!
//! Everything here looks at one group (at most [`MAX_GROUP_MEMBERS`] members) at a time.

use super::entity::State;
use super::{COSTOP_SKEW_NS, EntityId, GroupError, MAX_GROUP_MEMBERS, SchedulerOf};

/// The lead at or below which a co-stopped member is co-started (hysteresis).
const COSTART_SKEW_NS: u64 = COSTOP_SKEW_NS / 2;

/// One co-scheduling group: its number and its members (a slot with none is free).
#[derive(Clone, Copy, Debug)]
pub(super) struct Group {
    id: u16,
    len: u8,
    members: [u16; MAX_GROUP_MEMBERS],
}

const _: () = assert!(MAX_GROUP_MEMBERS <= u8::MAX as usize);

impl Group {
    /// A free slot.
    pub(super) const EMPTY: Self = Self {
        id: 0,
        len: 0,
        members: [0; MAX_GROUP_MEMBERS],
    };

    /// The group's number.
    pub(super) fn id(&self) -> u16 {
        self.id
    }

    /// The members' entity numbers.
    pub(super) fn members(&self) -> &[u16] {
        &self.members[..usize::from(self.len).min(MAX_GROUP_MEMBERS)]
    }
}

impl<const CPUS: usize, const ENTITIES: usize> SchedulerOf<CPUS, ENTITIES> {
    /// Puts entity `id` in co-scheduling group `group` (any number; entities with the same
    /// number are the vCPUs of one VM), or in none. Members of a group are co-scheduled as
    /// the module documentation says; an entity in no group (the default) is scheduled on
    /// its own. Leaving a group co-starts the entity if its group held it, and co-starts
    /// the siblings it was holding back. Refused if the entity does not exist or the group
    /// already has [`MAX_GROUP_MEMBERS`] members.
    pub fn set_group(
        &mut self,
        id: EntityId,
        group: Option<u16>,
        now: u64,
    ) -> Result<(), GroupError> {
        let index = self.existing(id).ok_or(GroupError::NoSuchEntity { id })?;
        let old = self.entities[index].group_slot();
        let Some(label) = group else {
            self.leave_group(index, now);
            return Ok(());
        };
        let found = self.find_group(label);
        if found.is_some() && found == old {
            return Ok(());
        }
        let full = GroupError::Full {
            group: label,
            max: MAX_GROUP_MEMBERS,
        };
        let slot = match found {
            Some(slot) if self.groups[slot].members().len() >= MAX_GROUP_MEMBERS => {
                return Err(full);
            }
            Some(slot) => slot,
            // A group has at least one member, so a free slot exists unless every entity
            // is alone in a group — this one too, and its slot is freed by leaving.
            None => match self.groups.iter().position(|g| g.len == 0) {
                Some(slot) => slot,
                None => old.filter(|&slot| self.groups[slot].len == 1).ok_or(full)?,
            },
        };
        self.leave_group(index, now);
        let g = &mut self.groups[slot];
        if g.len == 0 {
            g.id = label;
        }
        // There is room (checked above), so the entity always joins.
        if let Some(free) = g.members.get_mut(usize::from(g.len)) {
            *free = index as u16;
            g.len += 1;
            self.entities[index].group = slot as u16 + 1;
        }
        if self.entities[index].paced() {
            self.level(index, now);
        }
        self.regroup(slot, now);
        Ok(())
    }

    /// The co-scheduling group of `id` (`None` if it is in none or does not exist).
    pub fn group(&self, id: EntityId) -> Option<u16> {
        let slot = self.entities[self.existing(id)?].group_slot()?;
        Some(self.groups[slot].id())
    }

    /// How far `id` is behind the most advanced paced member of its group as of `now`, in
    /// nanoseconds of progress (0 in no group, and while blocked); `None` if it does not
    /// exist. Co-scheduling keeps it within [`COSTOP_SKEW_NS`] plus the timer's lateness.
    pub fn skew(&self, id: EntityId, now: u64) -> Option<u64> {
        let index = self.existing(id)?;
        let e = &self.entities[index];
        let Some(slot) = e.group_slot().filter(|_| e.paced()) else {
            return Some(0);
        };
        let mine = self.progress(index, now);
        let lead = self.groups[slot]
            .members()
            .iter()
            .map(|&m| usize::from(m))
            .filter(|&m| self.entities[m].paced())
            .map(|m| self.progress(m, now))
            .max()
            .unwrap_or(mine);
        Some(lead.saturating_sub(mine))
    }

    /// The slot of the group numbered `label`.
    fn find_group(&self, label: u16) -> Option<usize> {
        self.groups.iter().position(|g| g.len > 0 && g.id == label)
    }

    /// Takes the entity out of its group (if any): it is co-started if the group held it,
    /// and the siblings are co-scheduled anew without it.
    pub(super) fn leave_group(&mut self, index: usize, now: u64) {
        let Some(slot) = self.entities[index].group_slot() else {
            return;
        };
        let g = &mut self.groups[slot];
        if let Some(pos) = g.members().iter().position(|&m| usize::from(m) == index) {
            let last = g.members().len() - 1;
            g.members[pos] = g.members[last];
            g.len -= 1;
        }
        let e = &mut self.entities[index];
        e.group = 0;
        if e.group_stopped {
            self.costart(index, now);
        }
        self.regroup(slot, now);
    }

    /// The entity's progress as of `now` (with the service not yet charged if it runs).
    fn progress(&self, index: usize, now: u64) -> u64 {
        let e = &self.entities[index];
        let pending = if e.state == State::Running {
            now.saturating_sub(self.cpus[usize::from(e.cpu)].since)
        } else {
            0
        };
        e.progress.saturating_add(pending)
    }

    /// Sets the progress of a member that becomes paced level with its slowest paced
    /// sibling (skew 0, and nobody's lead grows); alone, it keeps its own.
    pub(super) fn level(&mut self, index: usize, now: u64) {
        let Some(slot) = self.entities[index].group_slot() else {
            return;
        };
        if self.entities[index].state == State::Running {
            self.charge_cpu(usize::from(self.entities[index].cpu), now);
        }
        let slowest = self.groups[slot]
            .members()
            .iter()
            .map(|&m| usize::from(m))
            .filter(|&m| m != index && self.entities[m].paced())
            .map(|m| self.progress(m, now))
            .min();
        if let Some(slowest) = slowest {
            self.entities[index].progress = slowest;
        }
    }

    /// After a change to the entity's group (if any): co-stops and co-starts, then
    /// kicks the CPUs whose decisions would come too late.
    pub(super) fn regroup_of(&mut self, index: usize, now: u64) {
        if let Some(slot) = self.entities[index].group_slot() {
            self.regroup(slot, now);
        }
    }

    fn regroup(&mut self, slot: usize, now: u64) {
        self.cosched(slot, now);
        self.arm(slot, now);
    }

    /// Co-stops the members of group `slot` that are the threshold ahead of the slowest
    /// paced member, and co-starts those that are within half of it.
    pub(super) fn cosched_of(&mut self, index: usize, now: u64) {
        if let Some(slot) = self.entities[index].group_slot() {
            self.cosched(slot, now);
        }
    }

    fn cosched(&mut self, slot: usize, now: u64) {
        let group = self.groups[slot];
        let members = group.members();
        self.steps += members.len() as u64;
        let Some(slowest) = members
            .iter()
            .map(|&m| usize::from(m))
            .filter(|&m| self.entities[m].paced())
            .map(|m| self.progress(m, now))
            .min()
        else {
            return;
        };
        for m in members.iter().map(|&m| usize::from(m)) {
            let e = &self.entities[m];
            if e.group_stopped && self.progress(m, now).saturating_sub(slowest) <= COSTART_SKEW_NS {
                self.costart(m, now);
            }
        }
        for m in members.iter().map(|&m| usize::from(m)) {
            let e = &self.entities[m];
            if matches!(e.state, State::Ready | State::Throttled | State::Running)
                && self.progress(m, now).saturating_sub(slowest) >= COSTOP_SKEW_NS
            {
                self.deschedule(m, now, State::CoStopped);
                self.entities[m].group_stopped = true;
            }
        }
    }

    /// Makes a co-stopped entity runnable, as a wake-up.
    fn costart(&mut self, index: usize, now: u64) {
        let e = &mut self.entities[index];
        e.group_stopped = false;
        e.settle(now);
        let target = self.wake_target(index);
        self.enqueue(index, target, now, true);
    }

    /// Kicks each CPU running a member of group `slot` whose decision comes later than
    /// co-scheduling needs (see [`group_deadline`](Self::group_deadline)).
    pub(super) fn arm_of(&mut self, index: usize, now: u64) {
        if let Some(slot) = self.entities[index].group_slot() {
            self.arm(slot, now);
        }
    }

    fn arm(&mut self, slot: usize, now: u64) {
        let group = self.groups[slot];
        for m in group.members().iter().map(|&m| usize::from(m)) {
            self.steps += 1;
            if self.entities[m].state != State::Running {
                continue;
            }
            if let Some(ns) = self.group_deadline(m, now) {
                let cpu = usize::from(self.entities[m].cpu);
                if !self.decides_by(cpu, now.saturating_add(ns)) {
                    self.kick(cpu);
                }
            }
        }
    }

    /// How long the running member `index` may run before co-scheduling must look again,
    /// `None` if it need not (it is in no group, or no paced sibling waits):
    ///
    /// - until it is the threshold ahead of the slowest paced sibling that is not running
    ///   (while the running set stays as it is, the slowest paced progress is at most that
    ///   sibling's, so this is when its lead can first reach the threshold; a running
    ///   slowest keeps pace and does not bring it closer);
    /// - until its progress reaches a co-stopped sibling's co-start point (its progress
    ///   may be what the co-start waits for);
    /// - at most the threshold, so that a sibling waiting on the same CPU gets its turn
    ///   before it falls that far behind (at that decision the lower virtual time runs).
    pub(super) fn group_deadline(&self, index: usize, now: u64) -> Option<u64> {
        let slot = self.entities[index].group_slot()?;
        let mine = self.progress(index, now);
        let mut until: Option<u64> = None;
        let mut sooner = |ns: u64| until = Some(until.map_or(ns, |u| u.min(ns)));
        for m in self.groups[slot].members().iter().map(|&m| usize::from(m)) {
            let e = &self.entities[m];
            if m == index || !e.paced() || e.state == State::Running {
                continue;
            }
            let progress = self.progress(m, now);
            sooner(
                progress
                    .saturating_add(COSTOP_SKEW_NS)
                    .saturating_sub(mine)
                    .min(COSTOP_SKEW_NS),
            );
            let point = progress.saturating_sub(COSTART_SKEW_NS);
            if e.state == State::CoStopped && point > mine {
                sooner(point - mine);
            }
        }
        until
    }
}
