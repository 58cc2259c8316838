//! The kernel's defmt logger.
//!
//! Each defmt frame is collected into a [`PacketBuilder`] and sent over COM1 as one
//! logframe packet from the kernel's source id, so that later sources (user worlds, guest
//! consoles) can share the line; the host decodes each packet with its source's ELF.
//!
//! The logger is a spinlock taken with interrupts off. If the CPU that holds it faults or
//! is interrupted by an exception that logs (the only way to re-enter it), the exception
//! path calls [`break_lock_for_fatal_report`] first: the half-built frame is dropped and
//! the report goes out intact.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use esker_kernel_core::logframe::{KERNEL_SOURCE, Kind, PacketBuilder, SourceId};

use crate::arch::x86_64::{cpu, serial};

struct LoggerState {
    packet: PacketBuilder,
    encoder: defmt::Encoder,
    interrupts_were_enabled: bool,
}

struct LoggerCell(UnsafeCell<LoggerState>);

// SAFETY: the state is only touched between `acquire` and `release`, which `LOCKED`
// makes mutually exclusive across CPUs (and interrupts are off while it is held).
unsafe impl Sync for LoggerCell {}

static LOCKED: AtomicBool = AtomicBool::new(false);
static STATE: LoggerCell = LoggerCell(UnsafeCell::new(LoggerState {
    packet: PacketBuilder::new(),
    encoder: defmt::Encoder::new(),
    interrupts_were_enabled: false,
}));

/// Runs `f` on the logger state. Callers hold `LOCKED`.
fn with_state<R>(f: impl FnOnce(&mut LoggerState) -> R) -> R {
    // SAFETY: only called by the logger between acquire and release, so this CPU holds
    // `LOCKED` and no other reference to the state exists.
    f(unsafe { &mut *STATE.0.get() })
}

#[defmt::global_logger]
struct KernelLogger;

// SAFETY: `acquire` takes the lock with interrupts off and `release` gives it back, so
// frames never interleave; `write` is only called in between, as defmt promises.
unsafe impl defmt::Logger for KernelLogger {
    fn acquire() {
        let interrupts_were_enabled = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        while LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        with_state(|state| {
            state.interrupts_were_enabled = interrupts_were_enabled;
            state.packet.start(Kind::Defmt, KERNEL_SOURCE);
            let LoggerState {
                packet, encoder, ..
            } = state;
            encoder.start_frame(|bytes| packet.push(bytes));
        });
    }

    unsafe fn flush() {}

    unsafe fn release() {
        let restore = with_state(|state| {
            let LoggerState {
                packet, encoder, ..
            } = state;
            encoder.end_frame(|bytes| packet.push(bytes));
            packet.finish(serial::write_byte);
            state.interrupts_were_enabled
        });
        LOCKED.store(false, Ordering::Release);
        if restore {
            cpu::enable_interrupts();
        }
    }

    unsafe fn write(bytes: &[u8]) {
        with_state(|state| {
            let LoggerState {
                packet, encoder, ..
            } = state;
            encoder.write(bytes, |out| packet.push(out));
        });
    }
}

/// Makes the logger usable by a fatal-exception or panic report even if this CPU was
/// interrupted while holding it. Only for paths that never return to the interrupted code.
pub fn break_lock_for_fatal_report() {
    LOCKED.store(false, Ordering::Release);
}

/// Sends one packet from `source` (a world's frames, console text, announcements).
pub fn emit_packet(kind: Kind, source: SourceId, payload: &[u8]) {
    let interrupts_were_enabled = cpu::interrupts_enabled();
    cpu::disable_interrupts();
    while LOCKED
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    with_state(|state| {
        state.packet.start(kind, source);
        state.packet.push(payload);
        state.packet.finish(serial::write_byte);
    });
    LOCKED.store(false, Ordering::Release);
    if interrupts_were_enabled {
        cpu::enable_interrupts();
    }
}

defmt::timestamp!("{=u64:us}", crate::arch::x86_64::time::micros_since_boot());
