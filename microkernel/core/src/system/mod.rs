//! The kernel's object model and system-call semantics, without hardware.
//!
//! [`System`] owns every kernel object (worlds, endpoints, notifications, memory regions,
//! device grants), the capability space, and the run queue. The hardware layer calls it on
//! three events — a system call, an exception in a world, an interrupt — passing the
//! interrupted world's registers ([`Registers`]); `System` updates its state and leaves in
//! those registers the context of whichever world runs next (or reports that the CPU
//! should idle). Everything it needs from the machine goes through [`Platform`]: physical
//! memory, frames, port I/O, interrupt masking and the log line. Host tests drive it with a
//! fake platform; the kernel supplies the real one.
//!
//! This module must never trust a world: every argument of every system call is checked,
//! and a world can only ever hurt itself.

mod ipc;
mod syscall;
mod vm;
mod world;

#[cfg(test)]
mod tests;

use esker_abi::{CapSlot, ObjectKind};
use heapless::{String, Vec};

use crate::addr::{PhysAddr, PhysFrame};
use crate::cap::{CapSpace, ObjectId, WorldId};
use crate::logframe::{Kind, SourceId};
use crate::paging::{PageTable, PhysMemory};
use crate::sched::Scheduler;

pub use vm::{GuestEntry, GuestMode, VCPU_FXSAVE_OFFSET, Vcpu, Vm, VmExitAction, VmMapping};
pub use world::WorldError;

/// Most worlds the manifest creates (each has a capability table).
pub const MAX_WORLDS: usize = crate::cap::MAX_WORLDS;
/// Most threads of control that exist at once: the manifest's worlds (ids below
/// [`MAX_WORLDS`]) and the extra threads of worlds that have several (ids from
/// [`MAX_WORLDS`] up; each shares its world's address space and capability table).
pub const WORLD_SLOTS: usize = 4 * MAX_WORLDS;
/// Most kernel objects that exist at once.
pub const MAX_OBJECTS: usize = 128;
/// Most `memory_map` mappings a world may hold.
pub const MAX_MAPPINGS: usize = 16;
/// Pages of each world's initial stack.
pub const STACK_PAGES: u64 = 16;
/// Vector number the hardware layer uses for frames built by the system-call entry.
pub const SYSCALL_VECTOR: u64 = 0x100;
/// Code and stack selectors of user mode (fixed by the GDT layout).
pub const USER_CODE_SELECTOR: u64 = 0x23;
/// See [`USER_CODE_SELECTOR`].
pub const USER_DATA_SELECTOR: u64 = 0x1b;
/// Longest time the kernel leaves the timer unarmed: decisions that need no deadline still
/// get one this far out, so statistics stay fresh.
pub const IDLE_HEARTBEAT_NS: u64 = 100_000_000;
/// RFLAGS a world starts with (IF set, reserved bit 1).
pub const USER_RFLAGS: u64 = 0x202;

/// A world's registers as the entry stubs save them (lowest address first). 16-byte
/// aligned and 176 bytes long, so the end of the area is 16-byte aligned too: the CPU
/// aligns the stack to 16 before pushing an interrupt frame into it.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Interrupt vector, or [`SYSCALL_VECTOR`].
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<Registers>() == 22 * 8);
const _: () = assert!(core::mem::size_of::<Registers>().is_multiple_of(16));

impl Registers {
    /// The six system-call arguments.
    pub fn args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }

    /// Sets the result of a system call: `rax` = 0 or the error, and up to six values.
    pub fn set_result(&mut self, result: Result<[u64; 6], esker_abi::Error>) {
        match result {
            Ok(values) => {
                self.rax = 0;
                [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9] = values;
            }
            Err(error) => self.rax = error as u64,
        }
    }

    /// Whether these registers were saved in user mode.
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// What the system needs from the machine.
pub trait Platform {
    /// Physical memory holding page tables.
    type Memory: PhysMemory;
    /// Access to page-table memory.
    fn memory(&mut self) -> &mut Self::Memory;
    /// A zeroed 4 KiB frame.
    fn allocate_frame(&mut self) -> Option<PhysFrame>;
    /// `count` physically contiguous zeroed frames.
    fn allocate_contiguous(&mut self, count: u64) -> Option<PhysFrame>;
    /// Gives a frame back.
    fn free_frame(&mut self, frame: PhysFrame);
    /// Reads physical memory (RAM only).
    fn read_phys(&mut self, addr: PhysAddr, buf: &mut [u8]);
    /// Writes physical memory (RAM only).
    fn write_phys(&mut self, addr: PhysAddr, data: &[u8]);
    /// The kernel's own page table (its upper half is shared by every world).
    fn kernel_table(&self) -> PageTable;
    /// Drops any TLB entry for `virt` in the address space rooted at `root` (on this CPU).
    fn invalidate_page(&mut self, root: PhysFrame, virt: u64);
    /// Makes sure no other CPU goes on using translations from before now: every other CPU
    /// with `root` loaded — with `None`, every CPU running a guest (nested translations)
    /// — flushes its TLB, and a guest leaves guest mode, before this returns. A single-CPU
    /// platform has nothing to do (the default).
    fn flush_other_cpus(&mut self, root: Option<PhysFrame>) {
        let _ = root;
    }
    /// Reads an I/O port (`width` 1, 2 or 4).
    fn port_in(&mut self, port: u16, width: u8) -> u32;
    /// Writes an I/O port.
    fn port_out(&mut self, port: u16, width: u8, value: u32);
    /// Unmasks or masks a legacy interrupt line.
    fn set_irq_enabled(&mut self, line: u8, enabled: bool);
    /// Sends one packet on the log line.
    fn log_packet(&mut self, kind: Kind, source: SourceId, payload: &[u8]);
    /// The TSC rate in kHz.
    fn tsc_khz(&self) -> u64;
    /// Nanoseconds since boot, from one monotonic clock.
    fn now_ns(&self) -> u64;
    /// Runs `f` on a vCPU's VMCB (in frame `vmcb`) and the general registers at the start
    /// of its register page (`state`).
    fn with_vcpu<R>(
        &mut self,
        vmcb: PhysFrame,
        state: PhysFrame,
        f: impl FnOnce(&mut crate::virt::svm::Vmcb, &mut crate::virt::vcpu::GeneralRegisters) -> R,
    ) -> R;
    /// What this CPU's SVM accepts, `None` if it cannot run guests (no SVM or no nested
    /// paging).
    fn svm_limits(&self) -> Option<crate::virt::svm::HostLimits>;
    /// How the CPUs the system schedules on share cores (`sched::topology::detect`
    /// decides it from what they report). Every CPU a core of its own unless told
    /// otherwise (the default).
    fn topology(&self) -> crate::sched::Topology {
        crate::sched::Topology::Flat
    }
}

/// A kernel object.
#[derive(Debug)]
pub enum Object {
    /// The right to log, for one world.
    Log,
    /// A world.
    World(WorldId),
    /// A synchronous rendezvous.
    Endpoint(ipc::Endpoint),
    /// Signal bits.
    Notification(ipc::Notification),
    /// RAM: `frames` contiguous frames from `base`.
    Memory {
        /// First frame.
        base: PhysFrame,
        /// Number of frames.
        frames: u64,
    },
    /// I/O ports `base..base+count`.
    IoPorts {
        /// First port.
        base: u16,
        /// Number of ports.
        count: u16,
    },
    /// Device MMIO.
    Mmio {
        /// Physical base.
        phys: u64,
        /// Size in bytes.
        size: u64,
    },
    /// A virtual machine's address space.
    Vm(Vm),
    /// A virtual CPU.
    Vcpu(Vcpu),
    /// Input typed at the host console.
    Console,
    /// An interrupt line signalling `notification`'s `bit`.
    Interrupt {
        /// The line.
        line: u8,
        /// The notification it signals.
        notification: ObjectId,
        /// The bit it sets.
        bit: u8,
    },
}

impl Object {
    /// The kind capabilities to it carry.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::Log => ObjectKind::Log,
            Self::World(_) => ObjectKind::World,
            Self::Endpoint(_) => ObjectKind::Endpoint,
            Self::Notification(_) => ObjectKind::Notification,
            Self::Memory { .. } => ObjectKind::Memory,
            Self::IoPorts { .. } => ObjectKind::IoPorts,
            Self::Mmio { .. } => ObjectKind::Mmio,
            Self::Interrupt { .. } => ObjectKind::Interrupt,
            Self::Vm(_) => ObjectKind::Vm,
            Self::Vcpu(_) => ObjectKind::Vcpu,
            Self::Console => ObjectKind::Console,
        }
    }
}

/// A kernel object with its name (for reports).
#[derive(Debug)]
pub struct NamedObject {
    /// The object.
    pub object: Object,
    /// Its manifest name.
    pub name: String<32>,
}

/// What a world is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorldState {
    /// On the CPU.
    Running,
    /// In the run queue.
    Ready,
    /// Waiting for a receiver on `endpoint`; `call` says whether it waits for a reply after.
    Sending {
        /// The endpoint.
        endpoint: ObjectId,
        /// The badge of the capability used.
        badge: u64,
        /// A call (waits for the reply) rather than a send.
        call: bool,
    },
    /// Waiting for a message on `endpoint`.
    Receiving {
        /// The endpoint.
        endpoint: ObjectId,
    },
    /// Waiting for `server` to reply.
    AwaitingReply {
        /// The world it called.
        server: WorldId,
    },
    /// Waiting on a notification.
    Waiting {
        /// The notification.
        notification: ObjectId,
    },
    /// Sleeping until `until` (ns since boot): a monitor whose guest halted.
    Sleeping {
        /// When it wakes.
        until: u64,
    },
    /// Stopped for good (faulted or exited).
    Stopped,
}

/// A region mapped into a world through a Memory capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The capability slot it was mapped through.
    pub slot: CapSlot,
    /// The object mapped.
    pub object: ObjectId,
    /// Where.
    pub virt: u64,
    /// How many pages.
    pub pages: u64,
}

/// A user world.
#[derive(Debug)]
pub struct World {
    /// Its name (also its log source name).
    pub name: String<32>,
    /// Its log source id.
    pub source: SourceId,
    /// What it is doing.
    pub state: WorldState,
    /// Saved registers while not running.
    pub registers: Registers,
    /// Its address space.
    pub table: PageTable,
    /// First of the two frames of its IPC buffer.
    pub ipc_buffer: PhysFrame,
    /// The world waiting for this one's reply.
    pub reply_to: Option<WorldId>,
    /// Regions mapped with `memory_map`.
    pub mappings: Vec<Mapping, MAX_MAPPINGS>,
    /// What it may still write to the log (see [`LogBudget`]).
    pub log_budget: LogBudget,
    /// Frames it owns (program, stack, IPC buffer, page tables).
    pub frames: u64,
    /// The vCPU it runs while its `vcpu_run` is in progress: resuming the world enters
    /// the guest.
    pub guest: Option<GuestMode>,
    /// The world whose address space and capability table it uses: itself, or for an
    /// extra thread the world it is a thread of.
    pub leader: WorldId,
    /// Its thread index within its world (0 for the world's first thread).
    pub thread: u8,
    /// The FS base it runs with: the address of its IPC buffer in its address space (the
    /// runtime finds its thread's buffer through `fs:`).
    pub fs_base: u64,
}

impl World {
    /// Physical address of the data area of its IPC buffer (where message bytes go).
    pub fn ipc_data(&self) -> PhysAddr {
        PhysAddr::new(self.ipc_buffer.start().as_u64() + esker_abi::IPC_DATA_OFFSET as u64)
    }
}

/// A world's share of the log line: a token bucket of bytes. The kernel writes the serial
/// port synchronously with interrupts off, so without a budget one chatty world could
/// stall the whole machine on a real 115200-baud line (~11 KB/s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBudget {
    /// Bytes it may write now.
    pub tokens: u64,
    /// When `tokens` was last refilled (ns).
    pub refilled_at: u64,
    /// Bytes refused since its last successful write.
    pub dropped: u64,
}

impl LogBudget {
    /// Bytes per second each world may log, sustained.
    pub const RATE_BYTES_PER_S: u64 = 8 * 1024;
    /// Bytes a world may log in one burst (a server's start-up lines fit easily).
    pub const BURST_BYTES: u64 = 32 * 1024;

    /// A full bucket at `now`.
    pub const fn full(now: u64) -> Self {
        Self {
            tokens: Self::BURST_BYTES,
            refilled_at: now,
            dropped: 0,
        }
    }

    /// Takes `bytes` at `now` if the bucket holds them.
    pub fn take(&mut self, bytes: u64, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.refilled_at);
        let earned = elapsed.saturating_mul(Self::RATE_BYTES_PER_S) / 1_000_000_000;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(Self::BURST_BYTES);
            self.refilled_at = now;
        }
        if bytes > self.tokens {
            self.dropped = self.dropped.saturating_add(bytes);
            return false;
        }
        self.tokens -= bytes;
        true
    }
}

/// Sends one line of kernel text (a report about a world) on the log line. The host
/// decoder shows text by lines, so the line ends here, once, for every caller.
pub(super) fn kernel_line(platform: &mut impl Platform, args: core::fmt::Arguments<'_>) {
    let mut line: String<256> = String::new();
    let _ = core::fmt::write(&mut line, args);
    if line.push('\n').is_err() {
        // A line too long for the buffer is sent cut, but still as a line.
        line.pop();
        let _ = line.push('\n');
    }
    platform.log_packet(Kind::Text, crate::logframe::KERNEL_SOURCE, line.as_bytes());
}

/// What the CPU should do after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run this world (resume it from its register area).
    World {
        /// The world.
        world: WorldId,
        /// Its address space.
        root: PhysFrame,
        /// Arm the one-shot timer to fire this many nanoseconds from now (`None`: leave
        /// the timer as it is).
        deadline_ns: Option<u64>,
    },
    /// No world is runnable: idle until an interrupt.
    Idle {
        /// As for `World`.
        deadline_ns: Option<u64>,
    },
}

/// One CPU's dispatch state. The system works on the state of the CPU whose event it
/// handles (the fields of the same names in [`System`]); [`System::select_cpu`] parks
/// one CPU's and takes up another's (the kernel serialises events with one lock).
#[derive(Clone, Copy, Debug, Default)]
struct CpuState {
    current: Option<WorldId>,
    resched: bool,
    handoff: Option<WorldId>,
    donation: Option<Donation>,
    maybe_preempt: bool,
    timer_at: Option<u64>,
    rearm: bool,
}

/// CPUs the system keeps dispatch state for.
pub const MAX_CPUS: usize = 16;

/// Every kernel object, the capability space and the run queue.
pub struct System {
    caps: CapSpace,
    objects: [Option<NamedObject>; MAX_OBJECTS],
    worlds: [Option<World>; WORLD_SLOTS],
    sched: Scheduler,
    current: Option<WorldId>,
    /// The clock at the event being handled.
    now: u64,
    /// The running world must give way to a fresh decision (timer, yield).
    resched: bool,
    /// A call just met its receiver: switch straight to it if the policy allows.
    handoff: Option<WorldId>,
    /// A server running on its caller's scheduling context (see [`Donation`]).
    donation: Option<Donation>,
    /// Something became runnable or changed parameters since the last decision, so the
    /// running world may have to give way (otherwise its armed deadline stands).
    maybe_preempt: bool,
    /// When the armed timer fires (ns since boot), as far as the system knows.
    timer_at: Option<u64>,
    /// No sleeper or guest timeout is due before this (ns since boot); `None`: none.
    next_wake: Option<u64>,
    /// `next_wake` moved since the timer was last compared with it.
    rearm: bool,
    /// The last ASID handed to a VM.
    next_asid: u32,
    /// The I/O and MSR permission maps all guests share (made with the first vCPU).
    svm_maps: Option<(PhysFrame, PhysFrame)>,
    /// Bytes typed at the host console, not yet read by the Console capability's holder.
    console: heapless::Deque<u8, CONSOLE_BUFFER>,
    /// The CPU whose event is being handled (its state is in the fields above).
    cpu: usize,
    /// CPUs scheduled on (set before the manifest's worlds are created).
    cpu_count: usize,
    /// The dispatch state of the other CPUs.
    parked: [CpuState; MAX_CPUS],
    /// CPUs other than the deciding one that must re-decide (the kernel interrupts them).
    outgoing_kicks: u64,
    /// Stopped worlds (bit per manifest world id) whose address space is not freed yet:
    /// a thread of theirs was still on another CPU.
    zombies: u64,
}

/// Bytes of console input the kernel keeps for its reader (more are dropped).
pub const CONSOLE_BUFFER: usize = 1024;

/// Scheduling-context donation (as in seL4's MCS kernel): a call that meets a waiting
/// server runs the server at once *on the caller's scheduling context* — the policy still
/// sees the caller running and charges it — and the server's `reply_recv` hands the CPU
/// straight back. A round trip then costs the policy nothing. Anything else that changes
/// what is runnable first ends the donation, telling the policy the truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Donation {
    /// The caller, waiting for the reply; the policy believes it runs.
    pub caller: WorldId,
    /// The server running on the caller's context.
    pub server: WorldId,
}

impl Default for System {
    fn default() -> Self {
        Self::new()
    }
}

impl System {
    /// An empty system (const, so the kernel can keep it in a static).
    pub const fn new() -> Self {
        Self {
            caps: CapSpace::new(),
            objects: [const { None }; MAX_OBJECTS],
            worlds: [const { None }; WORLD_SLOTS],
            sched: Scheduler::new(),
            current: None,
            now: 0,
            resched: false,
            handoff: None,
            donation: None,
            maybe_preempt: false,
            timer_at: None,
            next_wake: None,
            rearm: false,
            next_asid: 0,
            svm_maps: None,
            console: heapless::Deque::new(),
            cpu: 0,
            cpu_count: 1,
            parked: [CpuState {
                current: None,
                resched: false,
                handoff: None,
                donation: None,
                maybe_preempt: false,
                timer_at: None,
                rearm: false,
            }; MAX_CPUS],
            outgoing_kicks: 0,
            zombies: 0,
        }
    }

    /// Sets how many CPUs the worlds are scheduled on (1 to [`MAX_CPUS`]); before
    /// [`instantiate`](Self::instantiate). Returns the count kept.
    pub fn set_cpu_count(&mut self, cpus: usize) -> usize {
        self.cpu_count = cpus.clamp(1, MAX_CPUS);
        self.cpu_count
    }

    /// CPUs the worlds are scheduled on.
    pub fn cpu_count(&self) -> usize {
        self.cpu_count
    }

    /// Makes `cpu` the CPU whose events the system handles from now on (the kernel calls
    /// it after taking the lock on a CPU). A CPU not scheduled on is a caller's bug
    /// (asserted in debug builds, ignored otherwise).
    pub fn select_cpu(&mut self, cpu: usize) {
        if cpu == self.cpu {
            return;
        }
        debug_assert!(cpu < self.cpu_count, "CPU {cpu} is not scheduled on");
        if cpu >= self.cpu_count {
            return;
        }
        self.parked[self.cpu] = CpuState {
            current: self.current,
            resched: self.resched,
            handoff: self.handoff,
            donation: self.donation,
            maybe_preempt: self.maybe_preempt,
            timer_at: self.timer_at,
            rearm: self.rearm,
        };
        let state = self.parked[cpu];
        self.current = state.current;
        self.resched = state.resched;
        self.handoff = state.handoff;
        self.donation = state.donation;
        self.maybe_preempt = state.maybe_preempt;
        self.timer_at = state.timer_at;
        self.rearm = state.rearm;
        self.cpu = cpu;
    }

    /// The world whose capability table and address space world `id` uses (itself unless
    /// it is an extra thread).
    #[inline]
    pub(super) fn space(&self, id: WorldId) -> WorldId {
        self.world(id).map_or(id, |w| w.leader)
    }

    /// The threads of world `leader`: itself first, then its other threads in index order
    /// (they take slots in that order when the world is created).
    pub(super) fn threads_of(
        &self,
        leader: WorldId,
    ) -> Vec<WorldId, { esker_abi::layout::MAX_THREADS }> {
        self.worlds
            .iter()
            .enumerate()
            .filter(|(_, w)| w.as_ref().is_some_and(|w| w.leader == leader))
            .map(|(i, _)| i as WorldId)
            .take(esker_abi::layout::MAX_THREADS)
            .collect()
    }

    /// Whether a stopped world's address space still waits to be freed (another CPU was
    /// running one of its threads when it stopped). The kernel calls [`Self::reap`] after
    /// it switched address spaces while this holds.
    pub fn has_zombies(&self) -> bool {
        self.zombies != 0
    }

    /// The CPU other than this one that runs world `id`, if any.
    fn running_elsewhere(&self, id: WorldId) -> Option<usize> {
        (0..self.cpu_count).find(|&cpu| cpu != self.cpu && self.parked[cpu].current == Some(id))
    }

    /// The CPU whose events the system handles.
    pub fn this_cpu(&self) -> usize {
        self.cpu
    }

    /// CPUs (other than the one handling the event) that must re-decide now: the kernel
    /// sends each an interrupt. Clears the set.
    pub fn take_kicks(&mut self) -> u64 {
        core::mem::take(&mut self.outgoing_kicks)
    }

    /// The capability space (read-only).
    pub fn caps(&self) -> &CapSpace {
        &self.caps
    }

    /// A world.
    pub fn world(&self, id: WorldId) -> Option<&World> {
        self.worlds.get(usize::from(id))?.as_ref()
    }

    /// An object with its name.
    pub fn object(&self, id: ObjectId) -> Option<&NamedObject> {
        self.objects.get(id as usize)?.as_ref()
    }

    /// The world on the CPU.
    pub fn current(&self) -> Option<WorldId> {
        self.current
    }

    /// Worlds that exist and have not stopped.
    pub fn live_worlds(&self) -> usize {
        self.worlds
            .iter()
            .flatten()
            .filter(|w| w.state != WorldState::Stopped)
            .count()
    }

    fn world_mut(&mut self, id: WorldId) -> Option<&mut World> {
        self.worlds.get_mut(usize::from(id))?.as_mut()
    }

    /// Adds an object; returns its id.
    pub fn add_object(&mut self, name: &str, object: Object) -> Option<ObjectId> {
        let index = self.objects.iter().position(Option::is_none)?;
        let mut short = String::new();
        for c in name.chars() {
            if short.push(c).is_err() {
                break;
            }
        }
        self.objects[index] = Some(NamedObject {
            object,
            name: short,
        });
        Some(index as ObjectId)
    }

    fn object_mut(&mut self, id: ObjectId) -> Option<&mut Object> {
        Some(&mut self.objects.get_mut(id as usize)?.as_mut()?.object)
    }

    /// Ends a donation: the caller is blocked (it waits for a reply) and the server, if it
    /// can still run, is runnable in its own right; the policy decides afresh.
    fn end_donation(&mut self) {
        let Some(donation) = self.donation.take() else {
            return;
        };
        let _ = self.sched.block(donation.caller, self.now);
        if self
            .world(donation.server)
            .is_some_and(|w| matches!(w.state, WorldState::Running | WorldState::Ready))
        {
            let _ = self.sched.wake(donation.server, self.now);
        }
        self.resched = true;
    }

    /// `id` became runnable.
    fn make_ready(&mut self, id: WorldId) {
        self.end_donation();
        self.maybe_preempt = true;
        if let Some(world) = self.world_mut(id)
            && world.state != WorldState::Running
        {
            world.state = WorldState::Ready;
            let _ = self.sched.wake(id, self.now);
        }
    }

    /// `id` stopped being runnable and now is in `state`.
    fn block(&mut self, id: WorldId, state: WorldState) {
        self.end_donation();
        if let Some(w) = self.world_mut(id) {
            w.state = state;
            let _ = self.sched.block(id, self.now);
        }
        if self.current == Some(id) {
            self.current = None;
        }
    }

    /// Decides what runs next (see [`Self::decide`]), after waking sleepers whose time has
    /// come, and makes sure the timer fires for the earliest sleeper or guest timeout.
    fn dispatch(&mut self) -> Next {
        // Sleepers are looked at only when the earliest of them is due (the common path,
        // an IPC round trip, pays one comparison).
        if self.next_wake.is_some_and(|at| at <= self.now) {
            self.next_wake = self.wake_sleepers();
            self.rearm = true;
        }
        let mut next = self.decide();
        self.outgoing_kicks |= self.sched.take_kicks_except(self.cpu);
        let (Next::World { deadline_ns, .. } | Next::Idle { deadline_ns }) = &mut next;
        match *deadline_ns {
            Some(nanos) => self.timer_at = Some(self.now.saturating_add(nanos)),
            None if !self.rearm => return next,
            None => {}
        }
        self.rearm = false;
        if let Some(wake) = self.next_wake
            && self.timer_at.is_none_or(|at| wake < at)
        {
            *deadline_ns = Some(wake.saturating_sub(self.now));
            self.timer_at = Some(wake);
        }
        next
    }

    /// Decides what runs next. The running world keeps the CPU (and its deadline) unless
    /// it blocked, the timer fired, it yielded, or the policy wants to preempt it;
    /// otherwise the scheduler picks, or, right after a call met its receiver, tries a
    /// directed switch to the receiver.
    #[inline]
    fn decide(&mut self) -> Next {
        let now = self.now;
        if !self.resched
            && self.handoff.is_none()
            && let Some(id) = self.current
            && let Some(world) = self.world(id)
            && world.state == WorldState::Running
            && !(self.maybe_preempt && self.sched.preempt_check(self.cpu, now))
        {
            let root = world.table.root();
            self.maybe_preempt = false;
            return Next::World {
                world: id,
                root,
                deadline_ns: None,
            };
        }
        self.maybe_preempt = false;
        self.end_donation();
        self.resched = false;
        let decision = match self.handoff.take() {
            Some(to) => self.sched.switch_to(self.cpu, to, now),
            None => self.sched.pick(self.cpu, now),
        };
        if let Some(previous) = self.current.take()
            && decision.entity != Some(previous)
            && let Some(world) = self.world_mut(previous)
            && world.state == WorldState::Running
        {
            world.state = WorldState::Ready;
        }
        let deadline_ns = Some(decision.run_for_ns.unwrap_or(IDLE_HEARTBEAT_NS));
        let chosen = decision
            .entity
            .and_then(|id| Some((id, self.world(id)?.state)));
        match chosen {
            Some((id, WorldState::Ready | WorldState::Running)) => {
                let Some(world) = self.world_mut(id) else {
                    return Next::Idle { deadline_ns };
                };
                world.state = WorldState::Running;
                let root = world.table.root();
                self.current = Some(id);
                Next::World {
                    world: id,
                    root,
                    deadline_ns,
                }
            }
            Some((id, _)) => {
                // The policy thinks a world runnable that is not: tell it, and idle until
                // the next event rather than guess.
                let _ = self.sched.block(id, now);
                Next::Idle {
                    deadline_ns: Some(0),
                }
            }
            None => Next::Idle { deadline_ns },
        }
    }

    /// Scheduling statistics of a world.
    pub fn sched_stats(&self, id: WorldId) -> Option<crate::sched::Stats> {
        self.sched.stats(id, self.now)
    }

    /// Where a world's registers are saved and restored. The hardware layer points its
    /// entry paths at this area for the running world (so a system call or interrupt saves
    /// the world's registers in place) and resumes the next world straight from its own.
    /// The area is 16-byte aligned at both ends, as the CPU's interrupt push requires.
    pub fn registers_mut(&mut self, id: WorldId) -> Option<&mut Registers> {
        Some(&mut self.world_mut(id)?.registers)
    }

    /// Starts scheduling: picks the first world.
    pub fn start(&mut self, platform: &impl Platform) -> Next {
        self.now = platform.now_ns();
        self.resched = true;
        self.dispatch()
    }

    /// The timer fired (in a world, whose registers are saved in its area, or while idle):
    /// the scheduler decides again.
    pub fn on_timer(&mut self, platform: &impl Platform) -> Next {
        self.now = platform.now_ns();
        self.resched = true;
        self.dispatch()
    }

    /// An interrupt line fired: signal the notification bound to it and mask the line
    /// until the holder acknowledges it.
    pub fn on_irq(&mut self, platform: &mut impl Platform, line: u8) -> Next {
        self.now = platform.now_ns();
        let bound = self.objects.iter().flatten().find_map(|o| match o.object {
            Object::Interrupt {
                line: l,
                notification,
                bit,
            } if l == line => Some((notification, bit)),
            _ => None,
        });
        platform.set_irq_enabled(line, false);
        if let Some((notification, bit)) = bound {
            self.signal_notification(notification, 1 << bit);
        }
        self.dispatch()
    }

    /// The running world raised an exception (its registers, with vector and error code,
    /// are in its area): it is stopped with a report; everything else runs on.
    pub fn on_user_exception(
        &mut self,
        platform: &mut impl Platform,
        fault_address: u64,
        describe: &str,
    ) -> Next {
        if let Some(id) = self.current
            && let Some(world) = self.world(id)
            && world.state != WorldState::Stopped
        {
            let (name, r) = (world.name.clone(), world.registers);
            kernel_line(
                platform,
                format_args!(
                    "world {name} stopped: {describe} (vector {}, error code {:#x}) at rip {:#x}, address {fault_address:#x}",
                    r.vector, r.error_code, r.rip
                ),
            );
            self.stop_world(platform, id);
        }
        self.dispatch()
    }

    /// Handles a system call from the running world (its registers are in its area). A
    /// thread whose world stopped meanwhile (on another CPU) makes no more calls.
    pub fn on_syscall(&mut self, platform: &mut impl Platform) -> Next {
        self.now = platform.now_ns();
        if let Some(id) = self.current
            && self
                .world(id)
                .is_some_and(|w| w.state != WorldState::Stopped)
        {
            self.syscall(platform, id);
        }
        self.dispatch()
    }

    /// Whether a world holds the console (so the hardware layer turns on COM1's receive
    /// interrupt).
    pub fn has_console(&self) -> bool {
        self.objects
            .iter()
            .flatten()
            .any(|o| matches!(o.object, Object::Console))
    }

    /// Bytes arrived from the host console: kept for the Console capability's holder, who
    /// reads them with `console_read` (bytes beyond [`CONSOLE_BUFFER`] are dropped).
    pub fn on_console_input(&mut self, platform: &impl Platform, bytes: &[u8]) -> Next {
        self.now = platform.now_ns();
        for &byte in bytes {
            let _ = self.console.push_back(byte);
        }
        self.dispatch()
    }

    /// Lists every capability installed, in world and slot order, as
    /// `world=<w> slot=<n> kind=<kind> object=<name> rights=<rights> badge=<hex>`.
    pub fn for_each_capability(&self, mut f: impl FnMut(core::fmt::Arguments<'_>)) {
        for (id, world) in self.worlds.iter().enumerate() {
            let Some(world) = world else { continue };
            for (slot, cap) in self.caps.caps_of(id as WorldId) {
                let object = self.object(cap.object).map_or("?", |o| o.name.as_str());
                f(format_args!(
                    "world={} slot={} kind={} object={} rights={} badge={:#x}",
                    world.name,
                    slot,
                    cap.kind.name(),
                    object,
                    cap.rights,
                    cap.badge
                ));
            }
        }
    }
}
