//! CPU scheduling policy: which schedulable entity (a world, later a vCPU) runs on which
//! CPU, and for how long, with the ESX resource controls (SEMANTICS.md, CPU section).
//!
//! Each CPU keeps three queues of the runnable entities homed on it (fixed-capacity
//! indexed binary heaps, so a decision costs O(log n) in the entities queued there):
//!
//! - **Shares** — the *share queue* orders entities by virtual time: an entity's virtual
//!   time advances by its used time divided by its shares, and the smallest runs next for
//!   up to [`SLICE_NS`] (start-time fair queueing). An entity that wakes, or comes out of
//!   its limit, is lifted to the CPU's virtual clock (the smallest virtual time picked
//!   there), so time spent idle banks no credit; a new entity starts at the clock too and
//!   so dilutes everyone from then on. Service through a reservation advances virtual
//!   time as well, so a reserving entity gets the larger of its reservation and its
//!   share, not both (a change of parameters forgives all but one slice of that lead).
//! - **Reservation** — the *reserve queue* orders the entities with a reservation by their
//!   reservation tag, which advances by used time × CPU MHz / reserved MHz (a virtual
//!   clock running at the reserved rate) and is lifted to `now` on wake-up. An entity whose
//!   tag is not ahead of `now` is owed service: it is picked before any share pick, and a
//!   running share pick is given only until the earliest tag falls due. Reservations on a
//!   CPU sum to at most its capacity, so every reserving entity gets at least its rate.
//!   While its owner is idle a reservation is simply unused, so others run in it; when the
//!   owner wakes it is due at once and the CPU it is homed on is asked to re-decide
//!   ([`take_kicks`](SchedulerOf::take_kicks)), so it preempts the borrower immediately.
//! - **Limit** — an entity may use `limit_mhz / cpu_mhz` of each aligned period of
//!   [`LIMIT_PERIOD_NS`]; a run is cut at the budget's end, after which the entity waits in
//!   the *throttle queue* until the next period (even on an otherwise idle host). Time
//!   used past the budget (a late timer) is carried into the next period as debt.
//!
//! **Admission** ([`add`](SchedulerOf::add), [`update`](SchedulerOf::update)): shares are
//! 1 to [`MAX_SHARES`]; a limit (0 = none) is not below the reservation; the affinity
//! (0 = all CPUs) names a CPU that exists. A reservation must fit, whole, into the
//! unreserved capacity of one CPU its affinity allows — with hyper-threading one *core*,
//! whose two logical CPUs share one CPU's MHz (host capacity is cores × MHz, as ESX counts
//! it) — because one entity runs on one CPU at a time. The reservation is booked on that
//! CPU (best fit), which becomes the entity's home; reserving entities migrate only with
//! their reservation, to a CPU where it fits. The refusal names the shortfall: what was
//! asked, what is unreserved in the affinity, and the largest piece if it is fragmented.
//!
//! **Placement**: a waking entity goes to an idle allowed CPU — first one on a fully idle
//! core, then its last CPU, then any — else to the least loaded allowed CPU (sum of the
//! shares queued and running there). At the end of a slice an entity whose sibling thread
//! is busy moves to a fully idle core, and one with others waiting behind it moves to an
//! idle CPU. A CPU that finds nothing to run steals a waiting entity from the busy CPU
//! with the longest queue, and every [`BALANCE_INTERVAL_NS`] a CPU pulls an entity from
//! the CPU with the most load when that reduces the imbalance, or keeps it and the entity
//! has received less (smaller virtual time) than what would run here — so indivisible
//! imbalances, such as three equal entities on two CPUs, rotate fairly. Virtual times are
//! compared across CPUs for this; a migrating entity is placed between its new CPU's
//! clock and one slice ahead of it, and the balancer moves only entities that have run
//! since their last move, so migration never starves anyone.
//!
//! **Co-scheduling** ([`set_group`](SchedulerOf::set_group)): the entities of one group
//! are the vCPUs of one multi-vCPU VM, co-scheduled the relaxed way (ESX 3 and later) so
//! that a guest spinning on a lock held by a descheduled sibling wastes little. A member's
//! progress is the time it ran in the group; a member that wakes (or joins) starts level
//! with its slowest runnable sibling, so a halted vCPU never holds the others back. Its
//! *skew* ([`skew`](SchedulerOf::skew)) is how far it is behind the most advanced
//! runnable sibling. A member that gets [`COSTOP_SKEW_NS`] ahead of the slowest runnable
//! sibling is co-stopped (its time counts as co-stop; a running one leaves its CPU, which
//! is kicked) until it is at most half of that ahead — because the slowest ran, or
//! blocked, left the group or was removed — and is then co-started like a wake-up. The
//! slowest runnable member is never co-stopped, so a group never has all its runnable
//! members co-stopped. A running member's decision deadline is no later than the moment
//! its lead over a waiting sibling could reach the threshold, and no later than the
//! threshold itself while a sibling waits (that gives a sibling on the same CPU its turn
//! first), so skews stay within the threshold plus the timer's lateness. Members should
//! have equal parameters: a member held back by its shares or its limit holds its
//! siblings back too. Entities in no group are scheduled as if co-scheduling did not
//! exist.
//!
//! **Accounting** per entity ([`Stats`]): used, ready (runnable and waiting; includes the
//! time held by its limit, which is also counted apart as limited — esxtop's %RDY and
//! %MLMTD), co-stop and waited (blocked) time, dispatches and migrations; per CPU
//! ([`CpuStats`]): used and idle time, which add up to the clock.
//!
//! This module only decides and accounts: it never touches hardware, never reads a clock
//! (every call takes `now`, in nanoseconds of one clock shared by all CPUs, starting at
//! 0), never allocates (fixed arrays; [`Scheduler::new`](SchedulerOf::new) is `const`
//! for a `static`), and never panics on an entity or CPU number it is handed.

use crate::manifest::SchedParams;

mod admission;
mod cosched;
mod dispatch;
mod entity;
mod error;
mod heap;
mod placement;
#[cfg(test)]
mod tests;
pub mod topology;

pub use error::{AdmissionError, ConfigError, GroupError, NoSuchEntity};

use cosched::Group;
use entity::{Entity, State};
use heap::{Heap, Queue};

/// A schedulable entity's number (a world's [`WorldId`](crate::cap::WorldId) for worlds;
/// the kernel numbers vCPUs after them).
pub type EntityId = u16;

/// CPUs the default [`Scheduler`] holds (affinity masks are 64 bits).
pub const MAX_CPUS: usize = 64;
/// Entities the default [`Scheduler`] holds.
pub const MAX_ENTITIES: usize = 256;
/// The largest share value.
pub const MAX_SHARES: u32 = 1_000_000;
/// Longest run before the CPU re-decides.
pub const SLICE_NS: u64 = 10_000_000;
/// The period a limit is enforced over: at most `limit / cpu MHz` of each.
pub const LIMIT_PERIOD_NS: u64 = 20_000_000;
/// How often each CPU looks for load to pull from another.
pub const BALANCE_INTERVAL_NS: u64 = 20_000_000;
/// Queue positions a stealing or balancing CPU examines in another CPU's share queue.
pub const STEAL_SCAN: usize = 8;
/// The co-scheduling threshold: a member of a group (a vCPU) that gets this far ahead of
/// its slowest runnable sibling is co-stopped until it is within half of it (ESX's
/// default skew threshold). See [`set_group`](SchedulerOf::set_group).
pub const COSTOP_SKEW_NS: u64 = 3_000_000;
/// Members a co-scheduling group holds (the vCPUs of one VM).
pub const MAX_GROUP_MEMBERS: usize = 16;

/// The kernel's scheduler: [`MAX_CPUS`] CPUs and [`MAX_ENTITIES`] entities.
pub type Scheduler = SchedulerOf<MAX_CPUS, MAX_ENTITIES>;

const _: () = assert!(core::mem::size_of::<Scheduler>() < 192 * 1024);

/// How logical CPUs share cores ([`topology::detect`] decides it from the APIC ids).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Topology {
    /// Every CPU is a core of its own.
    #[default]
    Flat,
    /// Hyper-threading: logical CPUs `2k` and `2k + 1` are the two threads of core `k`.
    SmtPairs,
}

/// An entity's resource controls (ESX semantics; see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Relative share under contention, 1 to [`MAX_SHARES`].
    pub shares: u32,
    /// Guaranteed MHz of the calibrated CPU (0 = none).
    pub reservation_mhz: u32,
    /// Ceiling in MHz (0 = unlimited; one CPU's MHz or more does not bind).
    pub limit_mhz: u32,
    /// Allowed CPUs as a bit mask (0 = all); bits of CPUs that do not exist are ignored.
    pub affinity: u64,
}

impl Params {
    const ZERO: Self = Self {
        shares: 0,
        reservation_mhz: 0,
        limit_mhz: 0,
        affinity: 0,
    };

    /// `shares` with no reservation, no limit, every CPU.
    pub const fn with_shares(shares: u32) -> Self {
        Self {
            shares,
            ..Self::ZERO
        }
    }
}

impl Default for Params {
    /// ESX's defaults: 1000 shares (normal), no reservation, no limit, every CPU.
    fn default() -> Self {
        Self::with_shares(1000)
    }
}

impl From<SchedParams> for Params {
    fn from(p: SchedParams) -> Self {
        Self {
            shares: p.shares,
            reservation_mhz: p.reservation_mhz,
            limit_mhz: p.limit_mhz,
            affinity: p.affinity,
        }
    }
}

/// Why a CPU runs what it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reason {
    /// Nothing to run.
    #[default]
    Idle,
    /// The entity's reservation was due.
    Reservation,
    /// The entity had the smallest virtual time.
    Shares,
    /// Directed switch ([`switch_to`](SchedulerOf::switch_to)).
    Handoff,
}

/// What a CPU should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The entity to run, or `None` to idle.
    pub entity: Option<EntityId>,
    /// When to call [`pick`](SchedulerOf::pick) again at the latest (slice end, limit
    /// exhausted, a reservation falling due, a throttled entity's release, a group
    /// member's co-stop or a sibling's co-start coming due); `None` when only an event (a
    /// wake-up, a kick) can change the decision.
    pub run_for_ns: Option<u64>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    const IDLE: Self = Self {
        entity: None,
        run_for_ns: None,
        reason: Reason::Idle,
    };
}

/// What an entity is doing, as esxtop would show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Waiting for an event.
    Blocked,
    /// Runnable, waiting for a CPU.
    Ready,
    /// Runnable, held back by its limit.
    Limited,
    /// On a CPU.
    Running,
    /// Runnable, held back by co-scheduling (its group, or [`co_stop`](SchedulerOf::co_stop)).
    CoStopped,
}

/// An entity's accounting (nanoseconds since it was added; they sum to its age).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Time on a CPU.
    pub used_ns: u64,
    /// Time runnable but not on a CPU (includes `limited_ns`; esxtop's %RDY).
    pub ready_ns: u64,
    /// Part of `ready_ns` spent held back by the limit (esxtop's %MLMTD).
    pub limited_ns: u64,
    /// Time co-stopped, by its co-scheduling group or by [`co_stop`](SchedulerOf::co_stop)
    /// (esxtop's %CSTP).
    pub costop_ns: u64,
    /// Time blocked (esxtop's %WAIT).
    pub waited_ns: u64,
    /// Times it was put on a CPU.
    pub dispatches: u64,
    /// Times it moved to another CPU.
    pub migrations: u64,
    /// The CPU it is on or queued at, or last ran on.
    pub cpu: usize,
    /// The CPU its reservation is booked on (its home), if it has one.
    pub reserved_on: Option<usize>,
    /// What it is doing.
    pub state: RunState,
}

/// A CPU's accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuStats {
    /// Time running entities.
    pub used_ns: u64,
    /// Time with nothing to run (`used_ns + idle_ns` is the clock).
    pub idle_ns: u64,
    /// What runs on it.
    pub running: Option<EntityId>,
    /// Entities waiting in its share queue.
    pub queued: usize,
    /// Entities held back by their limit on it.
    pub throttled: usize,
    /// Reservations booked on it.
    pub reserved_mhz: u32,
}

/// One CPU's queues and accounting.
struct Cpu<const E: usize> {
    /// The smallest virtual time picked here (wake-ups are lifted to it).
    vclock: u128,
    /// Sum of the shares of the entities homed here that compete (queued or running).
    load: u64,
    /// Start of the time not yet accounted (running or idle).
    since: u64,
    used_ns: u64,
    idle_ns: u64,
    next_balance: u64,
    /// When the last decision asked to be re-made (0: never, idle without a timer).
    deadline: u64,
    /// Reservations booked on this CPU.
    reserved_mhz: u32,
    /// Running entity + 1 (0: none).
    current: u16,
    reason: Reason,
    queues: [Heap<E>; 3],
}

impl<const E: usize> Cpu<E> {
    const IDLE: Self = Self {
        vclock: 0,
        load: 0,
        since: 0,
        used_ns: 0,
        idle_ns: 0,
        next_balance: 0,
        deadline: 0,
        reserved_mhz: 0,
        current: 0,
        reason: Reason::Idle,
        queues: [Heap::EMPTY, Heap::EMPTY, Heap::EMPTY],
    };

    fn current(&self) -> Option<usize> {
        usize::from(self.current).checked_sub(1)
    }

    fn queue(&self, queue: Queue) -> &Heap<E> {
        &self.queues[queue as usize]
    }
}

/// The scheduling policy for up to `CPUS` CPUs and `ENTITIES` entities; the kernel uses
/// [`Scheduler`], tests use smaller sizes.
pub struct SchedulerOf<const CPUS: usize, const ENTITIES: usize> {
    entities: [Entity; ENTITIES],
    /// Co-scheduling groups, by slot (every group has a member, so `ENTITIES` suffice).
    groups: [Group; ENTITIES],
    cpus: [Cpu<ENTITIES>; CPUS],
    cpu_count: usize,
    mhz: u32,
    topology: Topology,
    /// CPUs with nothing running and nothing queued.
    idle: u64,
    /// CPUs that should re-decide now.
    kicks: u64,
    count: usize,
    /// Steps (comparisons, CPUs and queue entries examined) of the decision in progress.
    steps: u64,
    last_steps: u64,
}

impl<const CPUS: usize, const ENTITIES: usize> core::fmt::Debug for SchedulerOf<CPUS, ENTITIES> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scheduler")
            .field("cpus", &self.cpu_count)
            .field("mhz_per_cpu", &self.mhz)
            .field("topology", &self.topology)
            .field("entities", &self.count)
            .finish()
    }
}

impl<const CPUS: usize, const ENTITIES: usize> Default for SchedulerOf<CPUS, ENTITIES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize, const ENTITIES: usize> SchedulerOf<CPUS, ENTITIES> {
    const SIZES_FIT: () = {
        assert!(CPUS >= 1 && CPUS <= 64, "CPU masks are 64-bit");
        assert!(
            CPUS <= u8::MAX as usize + 1,
            "CPU numbers are stored in 8 bits"
        );
        assert!(
            ENTITIES >= 1 && ENTITIES < u16::MAX as usize,
            "entity links are 16-bit"
        );
    };

    /// A scheduler without CPUs (const, so the kernel can keep it in a static); call
    /// [`configure`](Self::configure) once the CPUs are counted and calibrated.
    pub const fn new() -> Self {
        let () = Self::SIZES_FIT;
        Self {
            entities: [Entity::FREE; ENTITIES],
            groups: [Group::EMPTY; ENTITIES],
            cpus: [const { Cpu::IDLE }; CPUS],
            cpu_count: 0,
            mhz: 0,
            topology: Topology::Flat,
            idle: 0,
            kicks: 0,
            count: 0,
            steps: 0,
            last_steps: 0,
        }
    }

    /// Sets the CPUs: `cpus` logical CPUs of `mhz_per_cpu` each, sharing cores as
    /// `topology` says. Accounting starts at time 0. Refused while entities exist.
    pub fn configure(
        &mut self,
        cpus: usize,
        mhz_per_cpu: u32,
        topology: Topology,
    ) -> Result<(), ConfigError> {
        if self.count > 0 {
            return Err(ConfigError::EntitiesPresent { count: self.count });
        }
        if cpus == 0 || cpus > CPUS {
            return Err(ConfigError::CpuCount { cpus, max: CPUS });
        }
        if mhz_per_cpu == 0 {
            return Err(ConfigError::ZeroMhz);
        }
        self.cpu_count = cpus;
        self.mhz = mhz_per_cpu;
        self.topology = topology;
        for cpu in &mut self.cpus {
            *cpu = Cpu::IDLE;
        }
        self.groups = [Group::EMPTY; ENTITIES];
        self.idle = self.online();
        self.kicks = 0;
        Ok(())
    }

    /// Logical CPUs scheduled.
    pub fn cpus(&self) -> usize {
        self.cpu_count
    }

    /// One CPU's calibrated frequency.
    pub fn mhz_per_cpu(&self) -> u32 {
        self.mhz
    }

    /// How CPUs share cores.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Entities that exist.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no entity exists.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds an entity, not yet runnable (call [`wake`](Self::wake)), after the admission
    /// checks in the module documentation.
    pub fn add(&mut self, id: EntityId, params: Params, now: u64) -> Result<(), AdmissionError> {
        let index = usize::from(id);
        if index >= ENTITIES {
            return Err(AdmissionError::IdOutOfRange { id, max: ENTITIES });
        }
        if self.entities[index].state != State::Free {
            return Err(AdmissionError::IdInUse { id });
        }
        let admitted = self.admit(params, None)?;
        let e = &mut self.entities[index];
        *e = Entity::FREE;
        e.set_params(params, admitted.allowed);
        e.state = State::Blocked;
        e.since = now;
        e.rtag = now;
        e.limit_period = now / LIMIT_PERIOD_NS;
        e.cpu = admitted.allowed.trailing_zeros() as u8;
        if let Some(cpu) = admitted.res_cpu {
            e.res_cpu = cpu as u8;
            e.cpu = cpu as u8;
            self.cpus[cpu].reserved_mhz += params.reservation_mhz;
        }
        self.count += 1;
        Ok(())
    }

    /// Changes an entity's parameters through the same checks as [`add`](Self::add);
    /// takes effect at once (a running entity's CPU is kicked to re-decide).
    pub fn update(&mut self, id: EntityId, params: Params, now: u64) -> Result<(), AdmissionError> {
        let index = self
            .existing(id)
            .ok_or(AdmissionError::NoSuchEntity { id })?;
        let admitted = self.admit(params, Some(index))?;
        let state = self.entities[index].state;
        let queued = matches!(state, State::Ready | State::Throttled);
        if queued {
            self.entities[index].settle(now);
            self.dequeue(index);
        }
        if state == State::Running {
            let cpu = usize::from(self.entities[index].cpu);
            self.charge_cpu(cpu, now);
            let old = u64::from(self.entities[index].params.shares);
            let load = &mut self.cpus[cpu].load;
            *load = *load - old + u64::from(params.shares);
            self.kick(cpu);
        }
        let e = &mut self.entities[index];
        if e.reserves() {
            self.cpus[usize::from(e.res_cpu)].reserved_mhz -= e.params.reservation_mhz;
        } else {
            e.rtag = e.rtag.max(now);
        }
        if let Some(cpu) = admitted.res_cpu {
            e.res_cpu = cpu as u8;
            self.cpus[cpu].reserved_mhz += params.reservation_mhz;
        }
        e.set_params(params, admitted.allowed);
        // Service received through a reservation also advances virtual time, which keeps
        // a reserving entity from getting its share on top of its reservation; with new
        // parameters that lead is forgiven down to one slice, so it cannot wait long.
        let lead = e.vtime_of(SLICE_NS);
        e.vtime = e
            .vtime
            .min(self.cpus[usize::from(e.cpu)].vclock.saturating_add(lead));
        if queued {
            let target = self.wake_target(index);
            self.enqueue(index, target, now, false);
        }
        Ok(())
    }

    /// Removes an entity (from its CPU if it runs: that CPU is kicked) and returns its
    /// final accounting. Its reservation is released, and it leaves its co-scheduling
    /// group (siblings it held back are co-started).
    pub fn remove(&mut self, id: EntityId, now: u64) -> Result<Stats, NoSuchEntity> {
        let index = self.existing(id).ok_or(NoSuchEntity { id })?;
        self.deschedule(index, now, State::Blocked);
        self.leave_group(index, now);
        let e = self.entities[index];
        if e.reserves() {
            self.cpus[usize::from(e.res_cpu)].reserved_mhz -= e.params.reservation_mhz;
        }
        self.entities[index] = Entity::FREE;
        self.count -= 1;
        Ok(e.stats(now, 0))
    }

    /// The entity became runnable (from blocked or co-stopped; no effect otherwise, nor on
    /// a member its co-scheduling group holds co-stopped: the group co-starts it). It is
    /// queued on a CPU chosen as the module documentation says; read
    /// [`take_kicks`](Self::take_kicks) for the CPUs that should re-decide (which include
    /// CPUs running its group's members whose decisions must now come sooner).
    pub fn wake(&mut self, id: EntityId, now: u64) -> Result<(), NoSuchEntity> {
        let index = self.existing(id).ok_or(NoSuchEntity { id })?;
        let e = &self.entities[index];
        if matches!(e.state, State::Blocked | State::CoStopped) && !e.group_stopped {
            self.entities[index].settle(now);
            self.level(index, now);
            let target = self.wake_target(index);
            self.enqueue(index, target, now, true);
            self.regroup_of(index, now);
        }
        Ok(())
    }

    /// The entity stopped being runnable. If it was running, its CPU has nothing to run
    /// until the next [`pick`](Self::pick) (and is kicked). Siblings in its co-scheduling
    /// group that it held back are co-started (a blocked member is behind nobody).
    pub fn block(&mut self, id: EntityId, now: u64) -> Result<(), NoSuchEntity> {
        let index = self.existing(id).ok_or(NoSuchEntity { id })?;
        self.deschedule(index, now, State::Blocked);
        self.regroup_of(index, now);
        Ok(())
    }

    /// The entity is runnable but held back by co-scheduling (its time counts as
    /// co-stop); no effect on a blocked entity. Otherwise as [`block`](Self::block). This
    /// is an explicit hold, outside the co-scheduling of groups (which co-stops and
    /// co-starts members itself): a member held this way counts as blocked in its group.
    pub fn co_stop(&mut self, id: EntityId, now: u64) -> Result<(), NoSuchEntity> {
        let index = self.existing(id).ok_or(NoSuchEntity { id })?;
        if self.entities[index].state != State::Blocked {
            self.deschedule(index, now, State::CoStopped);
            self.regroup_of(index, now);
        }
        Ok(())
    }

    /// An entity co-stopped by [`co_stop`](Self::co_stop) may run again (as
    /// [`wake`](Self::wake); no effect on an entity that is not co-stopped, nor on one its
    /// co-scheduling group holds).
    pub fn co_start(&mut self, id: EntityId, now: u64) -> Result<(), NoSuchEntity> {
        let index = self.existing(id).ok_or(NoSuchEntity { id })?;
        if self.entities[index].state == State::CoStopped {
            self.wake(id, now)?;
        }
        Ok(())
    }

    /// The CPUs (bit mask) that should re-decide now because of what happened since the
    /// last call: an entity queued on an idle CPU, a reservation owner woke on a CPU
    /// running a borrower, a running entity was blocked, changed, removed or co-stopped,
    /// or a group member runs past the moment co-scheduling must look again. The kernel
    /// interrupts each of them (its own CPU simply picks); `pick` clears its CPU's bit.
    pub fn take_kicks(&mut self) -> u64 {
        core::mem::take(&mut self.kicks)
    }

    /// Like [`take_kicks`](Self::take_kicks), but leaves `cpu`'s own bit (the CPU asking
    /// decides next anyway, and [`preempt_check`](Self::preempt_check) looks at it).
    pub fn take_kicks_except(&mut self, cpu: usize) -> u64 {
        let own = self.kicks & (1u64 << (cpu % 64));
        core::mem::replace(&mut self.kicks, own) & !own
    }

    /// Steps the last [`pick`](Self::pick) or [`switch_to`](Self::switch_to) took: heap
    /// comparisons plus CPUs and queue entries examined. It grows with the logarithm of
    /// the entities queued on a CPU and with the number of CPUs, never with the number of
    /// runnable entities.
    pub fn last_decision_steps(&self) -> u64 {
        self.last_steps
    }

    /// What runs on `cpu`.
    pub fn running(&self, cpu: usize) -> Option<EntityId> {
        self.cpus.get(cpu)?.current().map(|index| index as EntityId)
    }

    /// An entity's parameters as admitted.
    pub fn params(&self, id: EntityId) -> Option<Params> {
        Some(self.entities[self.existing(id)?].params)
    }

    /// An entity's accounting as of `now`.
    pub fn stats(&self, id: EntityId, now: u64) -> Option<Stats> {
        let index = self.existing(id)?;
        let e = &self.entities[index];
        let cpu = &self.cpus[usize::from(e.cpu)];
        let running = if e.state == State::Running {
            now.saturating_sub(cpu.since)
        } else {
            0
        };
        Some(e.stats(now, running))
    }

    /// A CPU's accounting as of `now`.
    pub fn cpu_stats(&self, cpu: usize, now: u64) -> Option<CpuStats> {
        if cpu >= self.cpu_count {
            return None;
        }
        let c = &self.cpus[cpu];
        let pending = now.saturating_sub(c.since);
        let busy = c.current().is_some();
        Some(CpuStats {
            used_ns: c.used_ns + if busy { pending } else { 0 },
            idle_ns: c.idle_ns + if busy { 0 } else { pending },
            running: c.current().map(|index| index as EntityId),
            queued: c.queue(Queue::Share).len(),
            throttled: c.queue(Queue::Throttle).len(),
            reserved_mhz: c.reserved_mhz,
        })
    }

    fn existing(&self, id: EntityId) -> Option<usize> {
        let index = usize::from(id);
        (self.entities.get(index)?.state != State::Free).then_some(index)
    }

    fn online(&self) -> u64 {
        if self.cpu_count >= 64 {
            u64::MAX
        } else {
            (1u64 << self.cpu_count) - 1
        }
    }

    fn kick(&mut self, cpu: usize) {
        self.kicks |= 1 << cpu;
    }

    /// Marks `cpu` idle or not (nothing running and nothing queued).
    fn refresh_idle(&mut self, cpu: usize) {
        let c = &self.cpus[cpu];
        if c.current().is_none() && c.queue(Queue::Share).is_empty() {
            self.idle |= 1 << cpu;
        } else {
            self.idle &= !(1 << cpu);
        }
    }
}
