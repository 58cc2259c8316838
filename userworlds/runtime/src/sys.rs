//! Typed system calls.
//!
//! Each wrapper puts its arguments in the registers the ABI names (`esker_abi`, "System-call
//! convention"), and turns `rax` into `Result<_, Error>`. Only [`raw::syscall`] executes
//! `syscall`; everything else is register bookkeeping, tested on the host against a fake
//! kernel.
//!
//! Calls that make the kernel read or write the IPC buffer (`call`, `send`, `recv`,
//! `reply`, `reply_recv`, `kernel_info`) first check that no Rust reference into the buffer
//! is alive ([`crate::ipc`]); one that is would be a bug in the world, and it panics loudly
//! instead of letting the kernel write behind a live `&mut`.

use esker_abi::{CapSlot, Error, KernelInfo, MessageInfo, ObjectKind, Rights, Syscall};

use crate::{arch, ipc};

/// What an IPC operation sends: the info word and the four message registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Length, capability count and label.
    pub info: MessageInfo,
    /// `mr0..mr3`.
    pub mrs: [u64; 4],
}

impl Message {
    /// A message with this info word and zero message registers.
    pub const fn new(info: MessageInfo) -> Self {
        Self { info, mrs: [0; 4] }
    }
}

/// What an IPC operation receives: info word, the sender's badge and the message registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Length, capability count and label (check it: the sender chose it).
    pub info: MessageInfo,
    /// The badge of the capability the sender used (0 for replies).
    pub badge: u64,
    /// `mr0..mr3`.
    pub mrs: [u64; 4],
}

/// What [`cap_info`] reports about a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapInfo {
    /// The object kind, or `None` for a number this runtime does not know.
    pub kind: Option<ObjectKind>,
    /// The raw kind number.
    pub kind_number: u64,
    /// Its rights.
    pub rights: Rights,
    /// Its badge (0 = none).
    pub badge: u64,
}

/// Access width of an I/O-port operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum PortWidth {
    /// `in al` / `out al`.
    Byte = 1,
    /// 16 bits.
    Word = 2,
    /// 32 bits.
    Dword = 4,
}

/// Bit 63 of `log`'s length: the bytes are UTF-8 text, not a defmt frame.
pub const LOG_TEXT: u64 = 1 << 63;

/// The one place a system call happens.
pub mod raw {
    /// Executes system call `number` with `args` in `rdi, rsi, rdx, r10, r8, r9`; returns
    /// `rax` and the six result registers in the same order.
    ///
    /// On the host (tests, clippy) there is no kernel: unit tests of this crate install a
    /// fake, everything else gets `InvalidSyscall`.
    ///
    /// # Safety
    ///
    /// A system call can make the kernel write this world's IPC buffer (`call`, `recv`,
    /// `reply_recv`, `kernel_info`), read memory through pointer arguments (`log`) or
    /// remove a mapping (`memory_unmap`). The caller must hold no Rust reference into
    /// memory the call may write or unmap, and pointer arguments it passes as valid must
    /// point to memory that stays valid for the call.
    #[cfg(target_os = "none")]
    #[inline(always)]
    pub unsafe fn syscall(number: u64, args: [u64; 6]) -> (u64, [u64; 6]) {
        let rax: u64;
        let mut out = args;
        // SAFETY: `syscall` enters the kernel, which follows the ABI: it clobbers only rcx
        // and r11 (declared), returns rax and the six result registers (declared as
        // outputs), and preserves everything else, including the stack (`nostack`: the
        // instruction pushes nothing on the user stack). Memory effects are the caller's
        // responsibility (see `# Safety`), so the block is not `nomem`.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") number => rax,
                inlateout("rdi") out[0],
                inlateout("rsi") out[1],
                inlateout("rdx") out[2],
                inlateout("r10") out[3],
                inlateout("r8") out[4],
                inlateout("r9") out[5],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        (rax, out)
    }

    /// Host stand-in: see the target version.
    ///
    /// # Safety
    ///
    /// Always safe on the host; `unsafe` to match the target signature.
    #[cfg(not(target_os = "none"))]
    pub unsafe fn syscall(number: u64, args: [u64; 6]) -> (u64, [u64; 6]) {
        #[cfg(test)]
        {
            super::fake_kernel::syscall(number, args)
        }
        #[cfg(not(test))]
        {
            let _ = (number, args);
            (esker_abi::Error::InvalidSyscall as u64, [0; 6])
        }
    }
}

/// A system call that does not touch memory through pointers and does not write the IPC
/// buffer.
fn plain(call: Syscall, args: [u64; 6]) -> Result<[u64; 6], Error> {
    // SAFETY: callers pass only calls that neither write the IPC buffer nor dereference
    // pointer arguments nor remove mappings (signal, wait, poll, cap_*, memory_map into
    // the map window, port I/O, irq_ack, yield); no Rust reference can be invalidated.
    let (rax, out) = unsafe { raw::syscall(call as u64, args) };
    Error::check(rax).map(|()| out)
}

/// A system call that makes the kernel read or write the IPC buffer.
fn with_ipc_buffer(call: Syscall, args: [u64; 6]) -> Result<[u64; 6], Error> {
    ipc::assert_not_borrowed(call);
    // SAFETY: no Rust reference into the IPC buffer is alive (just checked; the runtime
    // only lends it out inside `ipc::with_data`), so the kernel may read and write it.
    let (rax, out) = unsafe { raw::syscall(call as u64, args) };
    Error::check(rax).map(|()| out)
}

fn received(out: [u64; 6]) -> Received {
    Received {
        info: MessageInfo(out[0]),
        badge: out[1],
        mrs: [out[2], out[3], out[4], out[5]],
    }
}

/// Emits one defmt frame on the kernel log, tagged with this world's name.
pub fn log(log_cap: CapSlot, frame: &[u8]) -> Result<(), Error> {
    log_bytes(log_cap, frame, 0)
}

/// Emits UTF-8 text on the kernel log (for messages that cannot be defmt frames).
pub fn log_text(log_cap: CapSlot, text: &str) -> Result<(), Error> {
    log_bytes(log_cap, text.as_bytes(), LOG_TEXT)
}

fn log_bytes(log_cap: CapSlot, bytes: &[u8], flags: u64) -> Result<(), Error> {
    let args = [
        bytes.as_ptr() as u64,
        bytes.len() as u64 | flags,
        u64::from(log_cap),
        0,
        0,
        0,
    ];
    // SAFETY: the kernel only reads `bytes.len()` bytes at `bytes.as_ptr()`, a live shared
    // borrow for the whole call; `log` writes no memory of this world.
    let (rax, _) = unsafe { raw::syscall(Syscall::Log as u64, args) };
    Error::check(rax)
}

/// Sends `message` on `endpoint` and waits for the reply.
pub fn call(endpoint: CapSlot, message: Message) -> Result<Received, Error> {
    let [m0, m1, m2, m3] = message.mrs;
    with_ipc_buffer(
        Syscall::Call,
        [u64::from(endpoint), message.info.0, m0, m1, m2, m3],
    )
    .map(received)
}

/// Sends `message` on `endpoint`, blocking until a receiver takes it; there is no reply.
pub fn send(endpoint: CapSlot, message: Message) -> Result<(), Error> {
    let [m0, m1, m2, m3] = message.mrs;
    with_ipc_buffer(
        Syscall::Send,
        [u64::from(endpoint), message.info.0, m0, m1, m2, m3],
    )
    .map(drop)
}

/// Waits for a message on `endpoint`.
pub fn recv(endpoint: CapSlot) -> Result<Received, Error> {
    with_ipc_buffer(Syscall::Recv, [u64::from(endpoint), 0, 0, 0, 0, 0]).map(received)
}

/// Answers the caller of the last `call` received.
pub fn reply(message: Message) -> Result<(), Error> {
    let [m0, m1, m2, m3] = message.mrs;
    with_ipc_buffer(Syscall::Reply, [message.info.0, m0, m1, m2, m3, 0]).map(drop)
}

/// Answers the last caller, then waits for the next message on `endpoint`.
pub fn reply_recv(endpoint: CapSlot, message: Message) -> Result<Received, Error> {
    let [m0, m1, m2, m3] = message.mrs;
    with_ipc_buffer(
        Syscall::ReplyRecv,
        [u64::from(endpoint), message.info.0, m0, m1, m2, m3],
    )
    .map(received)
}

/// Sets `bits` on a notification.
pub fn signal(notification: CapSlot, bits: u64) -> Result<(), Error> {
    plain(Syscall::Signal, [u64::from(notification), bits, 0, 0, 0, 0]).map(drop)
}

/// Waits until a bit of the notification is set; takes and clears them all.
pub fn wait(notification: CapSlot) -> Result<u64, Error> {
    plain(Syscall::Wait, [u64::from(notification), 0, 0, 0, 0, 0]).map(|out| out[0])
}

/// Takes and clears the notification's bits without waiting (may be 0).
pub fn poll(notification: CapSlot) -> Result<u64, Error> {
    plain(Syscall::Poll, [u64::from(notification), 0, 0, 0, 0, 0]).map(|out| out[0])
}

/// Derives a copy of `slot` with `rights` (a subset) and, if it has none yet, `badge`
/// (0 = keep); returns the new slot.
pub fn cap_derive(slot: CapSlot, rights: Rights, badge: u64) -> Result<CapSlot, Error> {
    let out = plain(
        Syscall::CapDerive,
        [u64::from(slot), u64::from(rights.bits()), badge, 0, 0, 0],
    )?;
    CapSlot::try_from(out[0]).map_err(|_| Error::InvalidArgument)
}

/// Empties a slot.
pub fn cap_delete(slot: CapSlot) -> Result<(), Error> {
    plain(Syscall::CapDelete, [u64::from(slot), 0, 0, 0, 0, 0]).map(drop)
}

/// Deletes every capability derived from `slot`, in every world.
pub fn cap_revoke(slot: CapSlot) -> Result<(), Error> {
    plain(Syscall::CapRevoke, [u64::from(slot), 0, 0, 0, 0, 0]).map(drop)
}

/// Kind, rights and badge of a capability.
pub fn cap_info(slot: CapSlot) -> Result<CapInfo, Error> {
    let out = plain(Syscall::CapInfo, [u64::from(slot), 0, 0, 0, 0, 0])?;
    Ok(CapInfo {
        kind: ObjectKind::from_number(out[0]),
        kind_number: out[0],
        rights: Rights::from_bits_truncate(u32::try_from(out[1]).unwrap_or(u32::MAX)),
        badge: out[2],
    })
}

/// Maps a Memory capability's region at `vaddr` (in `[MAP_BASE, MAP_END)`) with at most
/// `rights`; returns the region's size in bytes.
///
/// Safe: the kernel refuses addresses outside the map window and mappings over existing
/// ones, so no memory this world already uses can change.
pub fn memory_map(slot: CapSlot, vaddr: u64, rights: Rights) -> Result<u64, Error> {
    plain(
        Syscall::MemoryMap,
        [u64::from(slot), vaddr, u64::from(rights.bits()), 0, 0, 0],
    )
    .map(|out| out[0])
}

/// Removes a mapping made with [`memory_map`].
///
/// # Safety
///
/// No Rust reference or pointer that will be used again may point into the region.
pub unsafe fn memory_unmap(slot: CapSlot) -> Result<(), Error> {
    // SAFETY: the caller guarantees nothing still uses the region (see `# Safety`).
    let (rax, _) = unsafe {
        raw::syscall(
            Syscall::MemoryUnmap as u64,
            [u64::from(slot), 0, 0, 0, 0, 0],
        )
    };
    Error::check(rax)
}

/// Reads an I/O port through an I/O-port capability.
pub fn port_in(slot: CapSlot, port: u16, width: PortWidth) -> Result<u32, Error> {
    let out = plain(
        Syscall::PortIn,
        [u64::from(slot), u64::from(port), width as u64, 0, 0, 0],
    )?;
    Ok(out[0] as u32)
}

/// Writes an I/O port through an I/O-port capability.
pub fn port_out(slot: CapSlot, port: u16, width: PortWidth, value: u32) -> Result<(), Error> {
    plain(
        Syscall::PortOut,
        [
            u64::from(slot),
            u64::from(port),
            width as u64,
            u64::from(value),
            0,
            0,
        ],
    )
    .map(drop)
}

/// Re-enables an interrupt line after handling it.
pub fn irq_ack(slot: CapSlot) -> Result<(), Error> {
    plain(Syscall::IrqAck, [u64::from(slot), 0, 0, 0, 0, 0]).map(drop)
}

/// Gives up the rest of the time slice.
pub fn yield_now() -> Result<(), Error> {
    plain(Syscall::Yield, [0; 6]).map(drop)
}

/// Stops this world. Never returns: if the kernel ever came back, the world stops itself
/// with an invalid instruction.
pub fn exit(code: u64) -> ! {
    let _ = plain(Syscall::Exit, [code, 0, 0, 0, 0, 0]);
    arch::halt_forever()
}

/// Raw `kernel_info(what)`: the six result registers.
pub fn kernel_info(what: KernelInfo) -> Result<[u64; 6], Error> {
    with_ipc_buffer(Syscall::KernelInfo, [what as u64, 0, 0, 0, 0, 0])
}

/// The TSC rate in kHz.
pub fn tsc_khz() -> Result<u64, Error> {
    kernel_info(KernelInfo::TscKhz).map(|out| out[0])
}

/// `kernel_info(Cpu)`: the CPU this world runs on and how many CPUs worlds are
/// scheduled on.
pub fn current_cpu() -> Result<(u64, u64), Error> {
    kernel_info(KernelInfo::Cpu).map(|out| (out[0], out[1]))
}

/// A world's CPU accounting (`sched_stats`), in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStats {
    /// Time it ran.
    pub used_ns: u64,
    /// Time it was runnable but waited (includes `limited_ns`).
    pub ready_ns: u64,
    /// Time held back by its limit.
    pub limited_ns: u64,
    /// Time co-stopped (multi-vCPU VMs).
    pub costop_ns: u64,
    /// Time blocked.
    pub waited_ns: u64,
    /// Times it was dispatched.
    pub dispatches: u64,
}

/// `sched_set`: changes the scheduling parameters of the world behind a World capability
/// (write right); `NotAdmitted` if admission control refuses them.
pub fn sched_set(
    world: CapSlot,
    shares: u32,
    reservation_mhz: u32,
    limit_mhz: u32,
    affinity: u64,
) -> Result<(), Error> {
    plain(
        Syscall::SchedSet,
        [
            u64::from(world),
            u64::from(shares),
            u64::from(reservation_mhz),
            u64::from(limit_mhz),
            affinity,
            0,
        ],
    )
    .map(drop)
}

/// `sched_stats`: the CPU accounting of the world behind a World capability (read right).
pub fn sched_stats(world: CapSlot) -> Result<SchedStats, Error> {
    thread_sched_stats(world, 0)
}

/// `sched_stats(world, thread)`: the accounting of one thread of a world (a VM monitor's
/// thread `n` runs vCPU `n`).
pub fn thread_sched_stats(world: CapSlot, thread: u8) -> Result<SchedStats, Error> {
    let out = plain(
        Syscall::SchedStats,
        [u64::from(world), u64::from(thread), 0, 0, 0, 0],
    )?;
    Ok(SchedStats {
        used_ns: out[0],
        ready_ns: out[1],
        limited_ns: out[2],
        costop_ns: out[3],
        waited_ns: out[4],
        dispatches: out[5],
    })
}

/// A scriptable kernel for this crate's unit tests.
#[cfg(all(test, not(target_os = "none")))]
pub(crate) mod fake_kernel {
    use std::boxed::Box;
    use std::cell::RefCell;

    type Handler = Box<dyn FnMut(u64, [u64; 6]) -> (u64, [u64; 6])>;

    std::thread_local! {
        static HANDLER: RefCell<Option<Handler>> = const { RefCell::new(None) };
    }

    /// Installs `handler` as the kernel for this test thread.
    pub fn install(handler: impl FnMut(u64, [u64; 6]) -> (u64, [u64; 6]) + 'static) {
        HANDLER.with(|h| *h.borrow_mut() = Some(Box::new(handler)));
    }

    pub fn syscall(number: u64, args: [u64; 6]) -> (u64, [u64; 6]) {
        HANDLER.with(|h| match h.borrow_mut().as_mut() {
            Some(handler) => handler(number, args),
            None => (esker_abi::Error::InvalidSyscall as u64, [0; 6]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::vec::Vec;

    /// The calls a fake kernel saw: `(number, args)`.
    type Seen = Rc<std::cell::RefCell<Vec<(u64, [u64; 6])>>>;

    /// Records every call and answers with `rax` and fixed results.
    fn recording(rax: u64, results: [u64; 6]) -> Seen {
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = log.clone();
        fake_kernel::install(move |number, args| {
            seen.borrow_mut().push((number, args));
            (rax, results)
        });
        log
    }

    #[test]
    fn call_follows_the_register_convention() {
        let log = recording(0, [0x0005_0000_0010, 0xbad9e, 1, 2, 3, 4]);
        let info = MessageInfo::new(2, 16, 0).unwrap();
        let got = call(
            7,
            Message {
                info,
                mrs: [10, 11, 12, 13],
            },
        )
        .unwrap();
        assert_eq!(log.borrow()[0], (1, [7, info.0, 10, 11, 12, 13]));
        assert_eq!(got.info, MessageInfo(0x0005_0000_0010));
        assert_eq!(got.badge, 0xbad9e);
        assert_eq!(got.mrs, [1, 2, 3, 4]);
    }

    #[test]
    fn reply_puts_info_first_and_recv_names_the_endpoint() {
        let log = recording(0, [0; 6]);
        reply(Message {
            info: MessageInfo(9),
            mrs: [1, 2, 3, 4],
        })
        .unwrap();
        recv(3).unwrap();
        reply_recv(3, Message::new(MessageInfo(8))).unwrap();
        send(4, Message::new(MessageInfo(5))).unwrap();
        let log = log.borrow();
        assert_eq!(log[0], (4, [9, 1, 2, 3, 4, 0]));
        assert_eq!(log[1], (3, [3, 0, 0, 0, 0, 0]));
        assert_eq!(log[2], (5, [3, 8, 0, 0, 0, 0]));
        assert_eq!(log[3], (2, [4, 5, 0, 0, 0, 0]));
    }

    #[test]
    fn errors_come_back_typed() {
        let _log = recording(Error::InsufficientRights as u64, [0; 6]);
        assert_eq!(signal(1, 1), Err(Error::InsufficientRights));
        assert_eq!(cap_delete(1), Err(Error::InsufficientRights));
        let _log = recording(77, [0; 6]);
        assert_eq!(
            yield_now(),
            Err(Error::InvalidSyscall),
            "unknown codes are not success"
        );
    }

    #[test]
    fn log_passes_pointer_length_and_slot() {
        let log = recording(0, [0; 6]);
        let frame = [1u8, 2, 3];
        super::log(5, &frame).unwrap();
        log_text(5, "hi").unwrap();
        let log = log.borrow();
        assert_eq!(log[0].0, 0);
        assert_eq!(log[0].1[0], frame.as_ptr() as u64);
        assert_eq!(log[0].1[1], 3);
        assert_eq!(log[0].1[2], 5);
        assert_eq!(log[1].1[1], 2 | LOG_TEXT);
    }

    #[test]
    fn capability_and_device_calls_decode_results() {
        let log = recording(
            0,
            [
                ObjectKind::Endpoint as u64,
                u64::from((Rights::CALL | Rights::GRANT).bits()),
                42,
                0,
                0,
                0,
            ],
        );
        let info = cap_info(9).unwrap();
        assert_eq!(info.kind, Some(ObjectKind::Endpoint));
        assert_eq!(info.rights, Rights::CALL | Rights::GRANT);
        assert_eq!(info.badge, 42);
        assert_eq!(log.borrow()[0], (12, [9, 0, 0, 0, 0, 0]));

        let log = recording(0, [0x1_0000_0041, 0, 0, 0, 0, 0]);
        assert_eq!(
            port_in(2, 0x3f8, PortWidth::Byte),
            Ok(0x41),
            "only the low 32 bits count"
        );
        port_out(2, 0x3f9, PortWidth::Word, 0xffff).unwrap();
        assert_eq!(log.borrow()[0], (15, [2, 0x3f8, 1, 0, 0, 0]));
        assert_eq!(log.borrow()[1], (16, [2, 0x3f9, 2, 0xffff, 0, 0]));

        let log = recording(0, [300, 0, 0, 0, 0, 0]);
        assert_eq!(cap_derive(1, Rights::CALL, 0x55), Ok(300));
        assert_eq!(
            memory_map(3, 0x1000_0000_0000, Rights::READ | Rights::WRITE),
            Ok(300)
        );
        assert_eq!(
            log.borrow()[0],
            (9, [1, u64::from(Rights::CALL.bits()), 0x55, 0, 0, 0])
        );
        assert_eq!(log.borrow()[1], (13, [3, 0x1000_0000_0000, 3, 0, 0, 0]));

        let _log = recording(0, [u64::MAX, 0, 0, 0, 0, 0]);
        assert_eq!(
            cap_derive(1, Rights::CALL, 0),
            Err(Error::InvalidArgument),
            "slot beyond u32"
        );
    }
}

/// Maps the whole region of Memory capability `memory` into VM `vm`'s guest-physical
/// space at `gpa`; the guest may read, and write/execute as `rights` asks (within the
/// capability's rights). Returns the size mapped.
pub fn vm_map(vm: CapSlot, memory: CapSlot, gpa: u64, rights: Rights) -> Result<u64, Error> {
    plain(
        Syscall::VmMap,
        [
            u64::from(vm),
            u64::from(memory),
            gpa,
            u64::from(rights.bits()),
            0,
            0,
        ],
    )
    .map(|out| out[0])
}

/// Removes VM `vm`'s guest-physical mappings inside `gpa..gpa+size`; returns the bytes
/// removed.
pub fn vm_unmap(vm: CapSlot, gpa: u64, size: u64) -> Result<u64, Error> {
    plain(Syscall::VmUnmap, [u64::from(vm), gpa, size, 0, 0, 0]).map(|out| out[0])
}

/// Why [`vcpu_run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuReturn {
    /// The guest exited: a postcard `ExitMessage` of this many bytes is in the IPC
    /// buffer's data area.
    Exit(usize),
    /// The timeout passed.
    Timeout,
}

/// Runs vCPU `vcpu` (see `esker_abi::Syscall::VcpuRun`): the IPC buffer's data area must
/// hold the postcard `ExitReply` of `reply_len` bytes (0: none). `halted`: do not run the
/// guest, sleep until `timeout_ns` passes. `timeout_ns` 0: no timeout.
pub fn vcpu_run(
    vcpu: CapSlot,
    reply_len: usize,
    halted: bool,
    timeout_ns: u64,
) -> Result<VcpuReturn, Error> {
    let flags = if halted { esker_abi::VCPU_HALTED } else { 0 };
    let out = with_ipc_buffer(
        Syscall::VcpuRun,
        [u64::from(vcpu), reply_len as u64, flags, timeout_ns, 0, 0],
    )?;
    Ok(if out[1] == esker_abi::VCPU_TIMEOUT {
        VcpuReturn::Timeout
    } else {
        VcpuReturn::Exit(out[0] as usize)
    })
}

/// `vcpu_kick(vcpu)`: the vCPU's `vcpu_run` returns [`VcpuReturn::Timeout`] as soon as it
/// can (its monitor thread looks at what was made pending for it). Needs write rights.
pub fn vcpu_kick(vcpu: CapSlot) -> Result<(), Error> {
    plain(Syscall::VcpuKick, [u64::from(vcpu), 0, 0, 0, 0, 0]).map(drop)
}

#[cfg(target_os = "none")]
/// Takes what was typed at the host console since the last call (up to 256 bytes) into
/// `out`; returns how many bytes. Needs the Console capability.
pub fn console_read(console: CapSlot, out: &mut [u8]) -> Result<usize, Error> {
    let result = with_ipc_buffer(Syscall::ConsoleRead, [u64::from(console), 0, 0, 0, 0, 0])?;
    let count = (result[0] as usize).min(out.len());
    ipc::with_data(|data| out[..count].copy_from_slice(&data[..count]));
    Ok(count)
}
