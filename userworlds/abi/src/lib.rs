//! The ABI between the Esker kernel and its user worlds.
//!
//! Everything both sides must agree on bit for bit lives here and nowhere else: system-call
//! numbers and register conventions, capability rights, error codes, kernel object kinds,
//! the message-info word, the per-world IPC buffer, and the fixed user address-space layout.
//! The crate is `no_std`, has no `unsafe` and no behaviour beyond encoding and decoding.
//!
//! # System-call convention
//!
//! `syscall` with the call number in `rax` and up to six arguments in
//! `rdi, rsi, rdx, r10, r8, r9` (`r10` replaces `rcx`, which `syscall` clobbers, as does
//! `r11`). On return `rax` holds `0` or an [`Error`] code, and up to six results come back in
//! `rdi, rsi, rdx, r10, r8, r9`. All other registers are preserved.
//!
//! # Messages
//!
//! An IPC message is a [`MessageInfo`] word, four message registers (`mr0..mr3`, carried in
//! CPU registers — the fast path), up to [`MAX_MESSAGE_BYTES`] of data in the sender's
//! [`IpcBuffer`], and up to [`MAX_MESSAGE_CAPS`] capabilities named in the buffer's
//! `send_caps`. The kernel copies data and capabilities into the receiver's buffer; received
//! capabilities land in free slots of the receiver's table, listed in `received_caps`.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// An index into a world's capability table.
pub type CapSlot = u32;

/// Slots in each world's capability table.
pub const CAP_SLOTS: usize = 256;

/// Most data bytes one message carries (in the IPC buffer).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Most capabilities one message carries.
pub const MAX_MESSAGE_CAPS: usize = 4;

/// Message registers carried in CPU registers.
pub const MESSAGE_REGISTERS: usize = 4;

/// System calls. The discriminant is the value in `rax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// `log(ptr, len)`: emit one defmt frame (or, with `len`'s bit 63 set, UTF-8 text) on
    /// the kernel log, tagged with this world's name. Needs a [`ObjectKind::Log`] capability
    /// in `a2`.
    Log = 0,
    /// `call(endpoint, info, mr0..mr3) -> (info, badge, mr0..mr3)`: send and wait for the reply.
    Call = 1,
    /// `send(endpoint, info, mr0..mr3)`: send, blocking until a receiver takes it; no reply.
    Send = 2,
    /// `recv(endpoint) -> (info, badge, mr0..mr3)`: wait for a message.
    Recv = 3,
    /// `reply(info, mr0..mr3)`: answer the caller of the last `call` received; never blocks.
    Reply = 4,
    /// `reply_recv(endpoint, info, mr0..mr3) -> (info, badge, mr0..mr3)`: reply, then wait.
    ReplyRecv = 5,
    /// `signal(notification, bits)`: set bits; wakes a waiter.
    Signal = 6,
    /// `wait(notification) -> bits`: wait until any bit is set, take and clear them all.
    Wait = 7,
    /// `poll(notification) -> bits`: take and clear the bits without waiting (may be 0).
    Poll = 8,
    /// `cap_derive(slot, rights, badge) -> new_slot`: a copy with fewer (or equal) rights
    /// and, if the source has none, a badge (`badge` 0 = keep). Needs [`Rights::GRANT`].
    CapDerive = 9,
    /// `cap_delete(slot)`: empty a slot (its derived copies stay).
    CapDelete = 10,
    /// `cap_revoke(slot)`: delete every capability derived from this one, in every world.
    CapRevoke = 11,
    /// `cap_info(slot) -> (kind, rights, badge)`.
    CapInfo = 12,
    /// `memory_map(slot, vaddr, rights) -> size`: map a Memory capability's region at
    /// `vaddr` in this world, with at most the capability's rights.
    MemoryMap = 13,
    /// `memory_unmap(slot)`: remove a mapping made with `memory_map`.
    MemoryUnmap = 14,
    /// `port_in(slot, port, width) -> value` on an I/O-port capability (width 1, 2 or 4).
    PortIn = 15,
    /// `port_out(slot, port, width, value)`.
    PortOut = 16,
    /// `irq_ack(slot)`: re-enable an interrupt line after handling it.
    IrqAck = 17,
    /// `yield()`: give up the rest of the time slice.
    Yield = 18,
    /// `exit(code)`: stop this world.
    Exit = 19,
    /// `kernel_info(what) -> ...`: read-only facts for the world (e.g. its own name).
    KernelInfo = 20,
    /// `sched_set(world, shares, reservation_mhz, limit_mhz, affinity)`: changes a world's
    /// scheduling parameters through a World capability with [`Rights::WRITE`], after the
    /// same admission checks as at boot ([`Error::NotAdmitted`] if they fail; the kernel
    /// log names the shortfall). A world with several threads (a VM's monitor: one per
    /// vCPU) has them divided among its threads (shares and limit split, the reservation
    /// split rounding up).
    SchedSet = 21,
    /// `sched_stats(world, thread) -> (used_ns, ready_ns, limited_ns, costop_ns,
    /// waited_ns, dispatches)`: the CPU accounting of one thread of a world (0: its first;
    /// a VM monitor's thread `n` runs vCPU `n`), through a World capability with
    /// [`Rights::READ`] (esxtop's %USED, %RDY, %MLMTD, %CSTP, %WAIT).
    /// [`Error::InvalidArgument`] for a thread the world does not have.
    SchedStats = 22,
    /// `vm_map(vm, memory, gpa, rights) -> size`: maps a whole Memory region into a VM's
    /// guest-physical space at `gpa` (page-aligned) through the VM's nested page table.
    /// Needs [`Rights::MAP`] on both capabilities; the guest may read always, write and
    /// execute only with [`Rights::WRITE`] / [`Rights::EXECUTE`] asked for and held on the
    /// Memory capability.
    VmMap = 23,
    /// `vm_unmap(vm, gpa, size)`: removes guest-physical mappings in `gpa..gpa+size`
    /// (page-aligned); the VM's TLB is flushed before it runs again. Needs [`Rights::MAP`].
    VmUnmap = 24,
    /// `vcpu_run(vcpu, reply_len, flags, timeout_ns) -> (exit_len, why)`: applies the
    /// postcard-encoded `ExitReply` of `reply_len` bytes in the IPC buffer's data area
    /// (0: none) and runs the guest until an exit the monitor must handle; the
    /// postcard-encoded `ExitMessage` is then in the data area (`exit_len` bytes, `why` =
    /// [`VCPU_EXIT`]). With `timeout_ns` > 0 the call also returns (`why` =
    /// [`VCPU_TIMEOUT`], no message) once that much time has passed; with [`VCPU_HALTED`]
    /// in `flags` the guest does not run at all: the monitor sleeps until the timeout (the
    /// guest executed HLT and waits for an interrupt). The first world to run a vCPU owns
    /// it. Needs [`Rights::WRITE`] on the Vcpu capability.
    VcpuRun = 25,
    /// `console_read(console) -> count`: takes up to [`MAX_MESSAGE_BYTES`] bytes typed at
    /// the host console (COM1) since the last call into the IPC buffer's data area. Needs
    /// [`Rights::READ`] on the Console capability (one world holds it).
    ConsoleRead = 26,
    /// `vcpu_kick(vcpu)`: makes the vCPU's `vcpu_run` return [`VCPU_TIMEOUT`] as soon as
    /// possible — at once if its monitor sleeps (halted) or the guest runs (it exits), at
    /// the next call otherwise (after that call's reply is applied). A monitor thread
    /// uses it when it made an interrupt pending for a sibling vCPU (an IPI). Needs
    /// [`Rights::WRITE`] on the Vcpu capability.
    VcpuKick = 27,
}

/// `vcpu_run` returned because the guest exited: the message is in the IPC buffer.
pub const VCPU_EXIT: u64 = 0;
/// `vcpu_run` returned because its timeout passed.
pub const VCPU_TIMEOUT: u64 = 1;
/// `vcpu_run` flag: do not run the guest, only wait for the timeout.
pub const VCPU_HALTED: u64 = 1 << 0;

impl Syscall {
    /// Every system call, in number order.
    pub const ALL: [Syscall; 28] = [
        Self::Log,
        Self::Call,
        Self::Send,
        Self::Recv,
        Self::Reply,
        Self::ReplyRecv,
        Self::Signal,
        Self::Wait,
        Self::Poll,
        Self::CapDerive,
        Self::CapDelete,
        Self::CapRevoke,
        Self::CapInfo,
        Self::MemoryMap,
        Self::MemoryUnmap,
        Self::PortIn,
        Self::PortOut,
        Self::IrqAck,
        Self::Yield,
        Self::Exit,
        Self::KernelInfo,
        Self::SchedSet,
        Self::SchedStats,
        Self::VmMap,
        Self::VmUnmap,
        Self::VcpuRun,
        Self::ConsoleRead,
        Self::VcpuKick,
    ];

    /// Decodes `rax`.
    pub fn from_number(number: u64) -> Option<Self> {
        Self::ALL.get(usize::try_from(number).ok()?).copied()
    }
}

/// Errors a system call returns in `rax`. `0` means success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Error {
    /// No such system call.
    InvalidSyscall = 1,
    /// The slot is out of range or empty.
    InvalidCapability = 2,
    /// The capability names an object of another kind.
    WrongObjectKind = 3,
    /// The capability lacks a right the operation needs.
    InsufficientRights = 4,
    /// An argument is out of range or malformed.
    InvalidArgument = 5,
    /// More data or capabilities than a message carries.
    MessageTooLong = 6,
    /// No free slot for a received or derived capability.
    NoFreeSlot = 7,
    /// The kernel ran out of memory for the operation.
    OutOfMemory = 8,
    /// A user address is not mapped, not writable, or not in user space.
    BadAddress = 9,
    /// The operation would block and the caller asked it not to.
    WouldBlock = 10,
    /// There is no caller to reply to.
    NoReplyTarget = 11,
    /// The peer stopped (faulted or exited) while the operation was in progress.
    PeerStopped = 12,
    /// The port or range lies outside what the capability grants.
    OutOfRange = 13,
    /// The mapping conflicts with an existing one.
    AlreadyMapped = 14,
    /// Scheduling parameters that admission control refuses (a reservation that cannot be
    /// guaranteed, a limit below the reservation, invalid shares or affinity).
    NotAdmitted = 15,
}

impl Error {
    /// Every error, in code order.
    pub const ALL: [Error; 15] = [
        Self::InvalidSyscall,
        Self::InvalidCapability,
        Self::WrongObjectKind,
        Self::InsufficientRights,
        Self::InvalidArgument,
        Self::MessageTooLong,
        Self::NoFreeSlot,
        Self::OutOfMemory,
        Self::BadAddress,
        Self::WouldBlock,
        Self::NoReplyTarget,
        Self::PeerStopped,
        Self::OutOfRange,
        Self::AlreadyMapped,
        Self::NotAdmitted,
    ];

    /// Decodes `rax` after a system call: `Ok(())` for 0, `Err` for a known code, and
    /// `InvalidSyscall` for anything else (a kernel never returns unknown codes).
    pub fn check(code: u64) -> Result<(), Error> {
        if code == 0 {
            return Ok(());
        }
        Err(Self::ALL
            .iter()
            .copied()
            .find(|e| *e as u64 == code)
            .unwrap_or(Self::InvalidSyscall))
    }

    /// A short description.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::InvalidSyscall => "no such system call",
            Self::InvalidCapability => "empty or out-of-range capability slot",
            Self::WrongObjectKind => "capability names another kind of object",
            Self::InsufficientRights => "capability lacks a needed right",
            Self::InvalidArgument => "invalid argument",
            Self::MessageTooLong => "message too long",
            Self::NoFreeSlot => "no free capability slot",
            Self::OutOfMemory => "kernel out of memory",
            Self::BadAddress => "bad user address",
            Self::WouldBlock => "operation would block",
            Self::NoReplyTarget => "no caller to reply to",
            Self::PeerStopped => "peer stopped",
            Self::OutOfRange => "outside the range the capability grants",
            Self::AlreadyMapped => "already mapped",
            Self::NotAdmitted => "scheduling parameters not admitted",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Rights a capability carries. Derived copies can only drop rights, never add them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Rights(u32);

impl Rights {
    /// No rights.
    pub const NONE: Self = Self(0);
    /// Read memory / receive on an endpoint.
    pub const READ: Self = Self(1 << 0);
    /// Write memory.
    pub const WRITE: Self = Self(1 << 1);
    /// Map memory executable.
    pub const EXECUTE: Self = Self(1 << 2);
    /// Pass this capability in a message or derive copies of it.
    pub const GRANT: Self = Self(1 << 3);
    /// Call (or send to) an endpoint.
    pub const CALL: Self = Self(1 << 4);
    /// Receive from (serve) an endpoint.
    pub const RECEIVE: Self = Self(1 << 5);
    /// Signal a notification.
    pub const SIGNAL: Self = Self(1 << 6);
    /// Wait on a notification.
    pub const WAIT: Self = Self(1 << 7);
    /// Map a memory region.
    pub const MAP: Self = Self(1 << 8);
    /// Use a device (port I/O, MMIO mapping, interrupt acknowledgement).
    pub const DEVICE: Self = Self(1 << 9);
    /// Emit log frames.
    pub const LOG: Self = Self(1 << 10);
    /// Every right.
    pub const ALL: Self = Self((1 << 11) - 1);

    /// The names of the rights, in bit order (for manifests and reports).
    pub const NAMES: [(&'static str, Rights); 11] = [
        ("read", Self::READ),
        ("write", Self::WRITE),
        ("execute", Self::EXECUTE),
        ("grant", Self::GRANT),
        ("call", Self::CALL),
        ("receive", Self::RECEIVE),
        ("signal", Self::SIGNAL),
        ("wait", Self::WAIT),
        ("map", Self::MAP),
        ("device", Self::DEVICE),
        ("log", Self::LOG),
    ];

    /// From raw bits; unknown bits are dropped.
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & Self::ALL.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every right in `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Rights in both.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Rights in either.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether no right is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Looks up one right by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
    }
}

impl core::ops::BitOr for Rights {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Rights {
    /// `call+grant`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (name, right) in Self::NAMES {
            if self.contains(right) {
                if !first {
                    f.write_str("+")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Kinds of kernel objects a capability can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum ObjectKind {
    /// A world (thread of control + address space + capability table).
    World = 1,
    /// A synchronous call/reply rendezvous.
    Endpoint = 2,
    /// Asynchronous signal bits.
    Notification = 3,
    /// A region of physical memory.
    Memory = 4,
    /// A range of I/O ports.
    IoPorts = 5,
    /// A region of device MMIO.
    Mmio = 6,
    /// An interrupt line, delivered as a notification.
    Interrupt = 7,
    /// The right to write to the kernel log.
    Log = 8,
    /// A virtual machine: its guest-physical address space (nested page table) and ASID.
    Vm = 9,
    /// A virtual CPU of a VM (its VMCB and registers).
    Vcpu = 10,
    /// Input typed at the host console.
    Console = 11,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [ObjectKind; 11] = [
        Self::World,
        Self::Endpoint,
        Self::Notification,
        Self::Memory,
        Self::IoPorts,
        Self::Mmio,
        Self::Interrupt,
        Self::Log,
        Self::Vm,
        Self::Vcpu,
        Self::Console,
    ];

    /// Decodes a kind number.
    pub const fn from_number(number: u64) -> Option<Self> {
        Some(match number {
            1 => Self::World,
            2 => Self::Endpoint,
            3 => Self::Notification,
            4 => Self::Memory,
            5 => Self::IoPorts,
            6 => Self::Mmio,
            7 => Self::Interrupt,
            8 => Self::Log,
            9 => Self::Vm,
            10 => Self::Vcpu,
            11 => Self::Console,
            _ => return None,
        })
    }

    /// Lower-case name used in manifests and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::World => "world",
            Self::Endpoint => "endpoint",
            Self::Notification => "notification",
            Self::Memory => "memory",
            Self::IoPorts => "ioports",
            Self::Mmio => "mmio",
            Self::Interrupt => "interrupt",
            Self::Log => "log",
            Self::Vm => "vm",
            Self::Vcpu => "vcpu",
            Self::Console => "console",
        }
    }
}

/// The first word of every message: data length, capability count and a label.
///
/// Bits 0..13 length in bytes (0..=4096), bits 16..19 capability count (0..=4),
/// bits 32..63 a label the protocol chooses (e.g. request kind or reply status).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageInfo(pub u64);

impl MessageInfo {
    /// Builds an info word; `None` if length or capability count is out of range.
    pub const fn new(label: u32, length: usize, caps: usize) -> Option<Self> {
        if length > MAX_MESSAGE_BYTES || caps > MAX_MESSAGE_CAPS {
            return None;
        }
        Some(Self(
            ((label as u64) << 32) | ((caps as u64) << 16) | length as u64,
        ))
    }

    /// Data length in bytes (may exceed the maximum in a hostile word: check it).
    pub const fn length(self) -> usize {
        (self.0 & 0x3fff) as usize
    }

    /// Capability count (may exceed the maximum in a hostile word: check it).
    pub const fn caps(self) -> usize {
        ((self.0 >> 16) & 0xf) as usize
    }

    /// The protocol's label.
    pub const fn label(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Whether length and capability count are within limits.
    pub const fn is_valid(self) -> bool {
        self.length() <= MAX_MESSAGE_BYTES
            && self.caps() <= MAX_MESSAGE_CAPS
            && self.0 & 0xfff0_c000 == 0
    }
}

impl fmt::Debug for MessageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MessageInfo(label {}, {} bytes, {} caps)",
            self.label(),
            self.length(),
            self.caps()
        )
    }
}

/// The per-world IPC buffer, mapped read-write at [`layout::IPC_BUFFER`].
#[repr(C)]
pub struct IpcBuffer {
    /// Slots of the capabilities to send with the next message.
    pub send_caps: [CapSlot; MAX_MESSAGE_CAPS],
    /// Slots where the capabilities of the last received message were placed. Written
    /// only for messages that carry capabilities: read it only when the received info
    /// word's capability count is non-zero.
    pub received_caps: [CapSlot; MAX_MESSAGE_CAPS],
    /// How many entries of `received_caps` are valid (same rule as `received_caps`).
    pub received_count: u32,
    /// Which thread of the world this buffer belongs to (0: the first; see
    /// [`layout::thread_ipc_buffer`]). Written by the kernel when the thread is created.
    pub thread: u32,
    /// This buffer's own address: every thread's FS base points at its IPC buffer, so
    /// `fs:[IPC_ADDRESS_OFFSET]` finds it. Written by the kernel when the thread is created.
    pub address: u64,
    /// Reserved, zero.
    pub reserved: [u32; 4],
    /// Message data.
    pub data: [u8; MAX_MESSAGE_BYTES],
}

/// Offset of [`IpcBuffer::data`] in the buffer.
pub const IPC_DATA_OFFSET: usize = 64;
/// Offset of [`IpcBuffer::thread`] in the buffer.
pub const IPC_THREAD_OFFSET: usize = 36;
/// Offset of [`IpcBuffer::address`] in the buffer.
pub const IPC_ADDRESS_OFFSET: usize = 40;
const _: () = assert!(core::mem::offset_of!(IpcBuffer, thread) == IPC_THREAD_OFFSET);
const _: () = assert!(core::mem::offset_of!(IpcBuffer, address) == IPC_ADDRESS_OFFSET);
const _: () = assert!(core::mem::offset_of!(IpcBuffer, data) == IPC_DATA_OFFSET);
const _: () = assert!(core::mem::size_of::<IpcBuffer>() <= layout::IPC_BUFFER_SIZE as usize);

/// The fixed layout of every user world's address space.
pub mod layout {
    /// Lowest address a world's program may be linked at.
    pub const PROGRAM_BASE: u64 = 0x40_0000;
    /// The IPC buffer (two pages).
    pub const IPC_BUFFER: u64 = 0x7fff_ff00_0000;
    /// Size of the IPC buffer mapping.
    pub const IPC_BUFFER_SIZE: u64 = 2 * 4096;
    /// One past the top of the initial stack.
    pub const STACK_TOP: u64 = 0x7fff_fe00_0000;
    /// Where `memory_map` may place regions: [MAP_BASE, MAP_END).
    pub const MAP_BASE: u64 = 0x1000_0000_0000;
    /// See [`MAP_BASE`].
    pub const MAP_END: u64 = 0x7000_0000_0000;
    /// One past the highest user address.
    pub const USER_END: u64 = 0x8000_0000_0000;
    /// Most threads one world has (a VM's monitor runs one per vCPU).
    pub const MAX_THREADS: usize = 16;
    /// Distance between the IPC buffers of successive threads.
    pub const THREAD_IPC_STRIDE: u64 = 0x1_0000;
    /// Distance between the stack tops of successive threads.
    pub const THREAD_STACK_STRIDE: u64 = 0x10_0000;

    /// Where thread `index`'s IPC buffer is (thread 0's is [`IPC_BUFFER`]).
    pub const fn thread_ipc_buffer(index: u64) -> u64 {
        IPC_BUFFER + index * THREAD_IPC_STRIDE
    }

    /// One past the top of thread `index`'s stack (thread 0's is [`STACK_TOP`]).
    pub const fn thread_stack_top(index: u64) -> u64 {
        STACK_TOP - index * THREAD_STACK_STRIDE
    }

    const _: () = assert!(thread_ipc_buffer(MAX_THREADS as u64) <= USER_END);
}

/// What [`Syscall::KernelInfo`] can be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum KernelInfo {
    /// Copies the world's name into the IPC buffer's data; returns its length.
    WorldName = 1,
    /// Returns the TSC rate in kHz.
    TscKhz = 2,
    /// Returns the index of the CPU the world runs on (0 = the boot CPU) and the number
    /// of CPUs worlds are scheduled on. (The answer may be stale by the time the world
    /// reads it: the scheduler may move it at any moment.)
    Cpu = 3,
}

/// How servers encode who may use which operations of a channel into a capability's badge.
///
/// Every client's endpoint capability carries a badge: the low 32 bits are a mask of the
/// channel operations (request kinds) it may invoke, bits 32..47 identify the client
/// world (its index in the manifest). The kernel only delivers the badge; the server's
/// channel runtime refuses requests whose operation bit is missing, and the capability
/// audit checks the same masks statically.
pub mod badge {
    /// Builds a badge.
    pub const fn encode(client: u16, operations: u32) -> u64 {
        ((client as u64) << 32) | operations as u64
    }

    /// The client world index in a badge.
    pub const fn client(badge: u64) -> u16 {
        (badge >> 32) as u16
    }

    /// The operation mask in a badge.
    pub const fn operations(badge: u64) -> u32 {
        badge as u32
    }

    /// Whether a badge allows operation number `op` (0..32).
    pub const fn allows(badge: u64, op: u32) -> bool {
        op < 32 && operations(badge) & (1 << op) != 0
    }
}

/// What a world finds at start: its name and a directory of its capabilities.
///
/// At entry `rdi` holds the length of this record, which the kernel wrote at the start of
/// the IPC buffer's data. Layout (little-endian): `name_len:u8 name` then, until the end,
/// entries `slot:u32 name_len:u8 name`. Capability names come from the manifest
/// (`log`, `serve:<channel>`, `call:<channel>`, `device:<name>`, `memory:<name>`, …).
pub mod start_info {
    /// Why a start-info record could not be written or read.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum StartInfoError {
        /// The output buffer is too small.
        TooLong,
        /// A name is longer than 255 bytes.
        NameTooLong,
        /// The record is truncated or not UTF-8.
        Malformed,
    }

    /// Writes a record into `out`; returns its length.
    pub fn encode<'a>(
        world_name: &str,
        caps: impl IntoIterator<Item = (u32, &'a str)>,
        out: &mut [u8],
    ) -> Result<usize, StartInfoError> {
        let mut at = 0;
        let mut put = |bytes: &[u8], at: &mut usize| -> Result<(), StartInfoError> {
            let end = at.checked_add(bytes.len()).ok_or(StartInfoError::TooLong)?;
            out.get_mut(*at..end)
                .ok_or(StartInfoError::TooLong)?
                .copy_from_slice(bytes);
            *at = end;
            Ok(())
        };
        let name_len = u8::try_from(world_name.len()).map_err(|_| StartInfoError::NameTooLong)?;
        put(&[name_len], &mut at)?;
        put(world_name.as_bytes(), &mut at)?;
        for (slot, name) in caps {
            let len = u8::try_from(name.len()).map_err(|_| StartInfoError::NameTooLong)?;
            put(&slot.to_le_bytes(), &mut at)?;
            put(&[len], &mut at)?;
            put(name.as_bytes(), &mut at)?;
        }
        Ok(at)
    }

    /// A decoded record, borrowing from the buffer.
    #[derive(Clone, Copy, Debug)]
    pub struct StartInfo<'a> {
        /// The world's name.
        pub world_name: &'a str,
        entries: &'a [u8],
    }

    impl<'a> StartInfo<'a> {
        /// Reads a record.
        pub fn decode(bytes: &'a [u8]) -> Result<Self, StartInfoError> {
            let (&len, rest) = bytes.split_first().ok_or(StartInfoError::Malformed)?;
            let name = rest
                .get(..usize::from(len))
                .ok_or(StartInfoError::Malformed)?;
            let world_name = core::str::from_utf8(name).map_err(|_| StartInfoError::Malformed)?;
            let info = Self {
                world_name,
                entries: &rest[usize::from(len)..],
            };
            // Validate every entry once so that iteration cannot fail later.
            let mut rest = info.entries;
            while !rest.is_empty() {
                let (_, _, tail) = split_entry(rest)?;
                rest = tail;
            }
            Ok(info)
        }

        /// The `(slot, name)` entries.
        pub fn caps(&self) -> impl Iterator<Item = (u32, &'a str)> + 'a {
            let mut rest = self.entries;
            core::iter::from_fn(move || {
                let (slot, name, tail) = split_entry(rest).ok()?;
                rest = tail;
                Some((slot, name))
            })
        }

        /// The slot of the capability called `name`.
        pub fn slot(&self, name: &str) -> Option<u32> {
            self.caps().find(|(_, n)| *n == name).map(|(s, _)| s)
        }
    }

    fn split_entry(bytes: &[u8]) -> Result<(u32, &str, &[u8]), StartInfoError> {
        let (slot, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or(StartInfoError::Malformed)?;
        let (&len, rest) = rest.split_first().ok_or(StartInfoError::Malformed)?;
        let name = rest
            .get(..usize::from(len))
            .ok_or(StartInfoError::Malformed)?;
        let name = core::str::from_utf8(name).map_err(|_| StartInfoError::Malformed)?;
        Ok((u32::from_le_bytes(*slot), name, &rest[usize::from(len)..]))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn syscall_numbers_round_trip_and_unknown_numbers_are_refused() {
        for (i, call) in Syscall::ALL.iter().enumerate() {
            assert_eq!(*call as u64, i as u64);
            assert_eq!(Syscall::from_number(i as u64), Some(*call));
        }
        assert_eq!(Syscall::from_number(Syscall::ALL.len() as u64), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }

    #[test]
    fn object_kinds_round_trip() {
        for kind in ObjectKind::ALL {
            assert_eq!(ObjectKind::from_number(kind as u64), Some(kind));
        }
        assert_eq!(ObjectKind::from_number(0), None);
        assert_eq!(ObjectKind::from_number(12), None);
    }

    #[test]
    fn error_codes_round_trip() {
        assert_eq!(Error::check(0), Ok(()));
        for e in Error::ALL {
            assert_eq!(Error::check(e as u64), Err(e));
        }
        assert_eq!(Error::check(9999), Err(Error::InvalidSyscall));
    }

    #[test]
    fn rights_print_and_parse() {
        let r = Rights::CALL | Rights::GRANT;
        assert_eq!(format!("{r}"), "grant+call");
        assert_eq!(Rights::from_name("call"), Some(Rights::CALL));
        assert_eq!(Rights::from_name("fly"), None);
        assert!(r.contains(Rights::CALL));
        assert!(!r.contains(Rights::RECEIVE));
        assert_eq!(Rights::from_bits_truncate(u32::MAX), Rights::ALL);
    }

    #[test]
    fn message_info_checks_limits() {
        let info = MessageInfo::new(7, 4096, 4).unwrap();
        assert_eq!((info.label(), info.length(), info.caps()), (7, 4096, 4));
        assert!(info.is_valid());
        assert!(MessageInfo::new(0, 4097, 0).is_none());
        assert!(MessageInfo::new(0, 0, 5).is_none());
        assert!(!MessageInfo(0x3fff).is_valid());
        assert!(!MessageInfo(5 << 16).is_valid());
        assert!(
            !MessageInfo(1 << 20).is_valid(),
            "reserved bits must be zero"
        );
    }

    #[test]
    fn start_info_round_trips_and_rejects_truncation() {
        let mut buf = [0u8; 128];
        let n = start_info::encode("hostd", [(0, "log"), (3, "call:auth")], &mut buf).unwrap();
        let info = start_info::StartInfo::decode(&buf[..n]).unwrap();
        assert_eq!(info.world_name, "hostd");
        assert_eq!(info.slot("call:auth"), Some(3));
        assert_eq!(info.slot("serve:auth"), None);
        assert_eq!(info.caps().count(), 2);
        for cut in 1..n {
            if let Ok(info) = start_info::StartInfo::decode(&buf[..cut]) {
                assert!(
                    info.caps().count() < 2,
                    "truncated record at {cut} decoded fully"
                );
            }
        }
        assert_eq!(
            start_info::encode("x", [(0, "log")], &mut buf[..4]),
            Err(start_info::StartInfoError::TooLong)
        );
    }

    #[test]
    fn badges_carry_client_and_operations() {
        let b = badge::encode(3, 0b101);
        assert_eq!(badge::client(b), 3);
        assert!(badge::allows(b, 0) && !badge::allows(b, 1) && badge::allows(b, 2));
        assert!(!badge::allows(b, 40));
    }
}
