//! The entry point and the panic handler.
//!
//! The kernel enters `_start` at the ELF entry with `rsp` at the top of the mapped stack
//! and `rdi` = the length of the start-info record at the beginning of the IPC buffer's
//! data. `_start` ends the frame-pointer chain, aligns the stack and calls [`rust_start`],
//! which copies the record out of the IPC buffer (the first message overwrites it),
//! decodes it, sets up the logger and the heap, and calls the world's main function
//! (`entry!`). The other threads of a world with several (`crate::thread`) wait for that
//! and call the main function too.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use esker_abi::{IPC_DATA_OFFSET, MAX_MESSAGE_BYTES, layout};

use crate::uses::{self, Declared, UseRecord};
use crate::{EXIT_BAD_START_INFO, EXIT_PANIC, Runtime, heap, logger, sys};

core::arch::global_asm!(
    ".pushsection .text._start, \"ax\", @progbits",
    ".global _start",
    ".type _start, @function",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {rust_start}",
    "ud2",
    ".size _start, . - _start",
    ".popsection",
    rust_start = sym rust_start,
);

unsafe extern "Rust" {
    /// The world's main function, defined by `entry!`.
    fn __esker_rt_main(rt: Runtime) -> !;
    /// The world's heap arena, defined by `entry!`.
    fn __esker_rt_heap() -> (*mut u8, usize);
}

/// The runtime's own declaration: every world logs.
const LOG: Declared = crate::uses!("log", "log");

/// The start-info record, copied out of the IPC buffer before anything else runs.
struct StartInfoCopy(UnsafeCell<[u8; MAX_MESSAGE_BYTES]>);

// SAFETY: written once by the first thread's `rust_start` before `READY` is set; other
// threads read it only after they saw `READY` (acquire), and nobody writes it again.
unsafe impl Sync for StartInfoCopy {}

static START_INFO: StartInfoCopy = StartInfoCopy(UnsafeCell::new([0; MAX_MESSAGE_BYTES]));
/// The record's length, once the first thread copied it.
static START_INFO_LEN: AtomicUsize = AtomicUsize::new(0);
/// The first thread has set the runtime up (start info, logger, heap).
static READY: AtomicBool = AtomicBool::new(false);

extern "C" fn rust_start(record_len: usize) -> ! {
    if crate::thread::index() != 0 {
        other_thread_start();
    }
    let len = record_len.min(MAX_MESSAGE_BYTES);
    let source = (layout::IPC_BUFFER as usize + IPC_DATA_OFFSET) as *const u8;
    // SAFETY: the kernel mapped the IPC buffer before entering the world and wrote the
    // record at the start of its data; `len` is clamped to the data area. `START_INFO` is
    // not yet referenced by anything (this runs first, once), and the two do not overlap.
    let record: &'static [u8] = unsafe {
        let copy = START_INFO.0.get().cast::<u8>();
        core::ptr::copy_nonoverlapping(source, copy, len);
        core::slice::from_raw_parts(copy, len)
    };
    let rt = match Runtime::from_start_info(record) {
        Ok(rt) => rt,
        Err(_) => sys::exit(EXIT_BAD_START_INFO),
    };
    // Through `black_box` so that the record `LOG` points at is linked into every world.
    logger::set_log_slot(rt.info.slot(core::hint::black_box(&LOG).name()));
    // SAFETY: `entry!` defines both functions with exactly these signatures.
    let (heap_base, heap_size) = unsafe { __esker_rt_heap() };
    // SAFETY: the arena is a static of the world that only this call hands out, once.
    unsafe { heap::init(heap_base, heap_size) };
    check_declarations(&rt);
    START_INFO_LEN.store(len, Ordering::Relaxed);
    READY.store(true, Ordering::Release);
    // SAFETY: as above.
    unsafe { __esker_rt_main(rt) }
}

/// A thread other than the first waits until the first has set the runtime up, then runs
/// the world's main function too (it tells threads apart with [`crate::thread::index`]).
fn other_thread_start() -> ! {
    while !READY.load(Ordering::Acquire) {
        let _ = sys::yield_now();
    }
    let len = START_INFO_LEN.load(Ordering::Relaxed);
    // SAFETY: READY (acquire) guarantees the first thread finished writing the copy; it
    // is never written again, so a shared slice of it is sound.
    let record: &'static [u8] =
        unsafe { core::slice::from_raw_parts(START_INFO.0.get().cast::<u8>(), len) };
    let rt = match Runtime::from_start_info(record) {
        Ok(rt) => rt,
        Err(_) => sys::exit(EXIT_BAD_START_INFO),
    };
    // SAFETY: `entry!` defines it with exactly this signature.
    unsafe { __esker_rt_main(rt) }
}

/// Warns about capabilities the world holds but never declared: the capability audit
/// rejects such a manifest, so seeing this at run time means the audit was skipped.
fn check_declarations(rt: &Runtime) {
    let declared = uses::own_section();
    for (slot, name) in rt.directory() {
        if !uses::records(declared).any(|r: UseRecord<'_>| r.cap == name) {
            defmt::warn!(
                "runtime: holds capability `{=str}` (slot {=u32}) but never declared it",
                name,
                slot
            );
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    sys::exit(EXIT_PANIC)
}
