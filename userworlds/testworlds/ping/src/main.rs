//! The ping world: the client side of the IPC round-trip benchmark.
//!
//! After [`WARM_UP`](esker_ping::WARM_UP) calls it makes [`CALLS`](esker_ping::CALLS)
//! raw `call`s to `pong` (zero-length message, four message registers), timing each with
//! `rdtsc`, checks every echo, and logs
//!
//! ```text
//! ping: ipc round trip: median M cycles, min A, p90 B, max C over N calls
//! ```
//!
//! then the same summary for two null system calls (`cap_info` on an empty slot: the
//! error path; `poll` on its own notification: the success path of a capability lookup)
//! and for two back-to-back `rdtsc`s (what the timing itself costs), then for `yield`s
//! that switch to `pong` and back (after asking pong to become a yielder), then `ping: done`,
//! and exits 0. `cargo xtask bench` boots it under `-icount shift=0,sleep=off`, where a
//! cycle is one instruction.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 4096);

/// The TSC (one tick per instruction under QEMU icount).
#[cfg(target_os = "none")]
#[inline(always)]
fn tsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; the kernel never sets CR4.TSD,
    // so it does not fault in ring 3.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// One raw system call (the kernel's path only: no runtime bookkeeping in the way).
#[cfg(target_os = "none")]
#[inline(always)]
fn syscall(call: esker_abi::Syscall, args: [u64; 6]) -> (u64, [u64; 6]) {
    // SAFETY: ping holds no Rust reference into its IPC buffer (it never borrows it), and
    // it passes no pointers; `call`, `cap_info` and `poll` write nothing else.
    unsafe { esker_rt::sys::raw::syscall(call as u64, args) }
}

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_abi::{CAP_SLOTS, Error, Syscall};
    use esker_ping::{CALLS, Summary, WARM_UP, empty_slot, pattern};
    use esker_rt::sys;

    const BENCH: esker_rt::Declared = esker_rt::uses!("call:bench", "call", "status");
    const POLL: esker_rt::Declared = esker_rt::uses!("wait:bench-poll", "wait");

    /// The samples of the current measurement (16 KiB: kept off the stack).
    static mut SAMPLES: [u64; CALLS] = [0; CALLS];

    let Ok(bench) = rt.slot(&BENCH) else {
        sys::exit(2)
    };
    let Ok(poll) = rt.slot(&POLL) else {
        sys::exit(2)
    };
    let Some(empty) = empty_slot(
        |slot| rt.directory().any(|(used, _)| used == slot),
        CAP_SLOTS as u32,
    ) else {
        defmt::error!("ping: no empty capability slot to measure cap_info on");
        sys::exit(2)
    };
    // SAFETY: a world has one thread and `world_main` runs once, so this is the only
    // reference to SAMPLES that ever exists (the pointer is never null).
    let Some(samples) = (unsafe { (&raw mut SAMPLES).as_mut() }) else {
        sys::exit(2)
    };

    // IPC round trips.
    let mut wrong = 0usize;
    for i in 0..WARM_UP + CALLS {
        let mrs = pattern(i);
        let args = [u64::from(bench), 0, mrs[0], mrs[1], mrs[2], mrs[3]];
        let start = tsc();
        let (rax, out) = syscall(Syscall::Call, args);
        let end = tsc();
        if rax != 0 || out[0] != 0 || out[2..] != mrs {
            if wrong == 0 {
                defmt::error!(
                    "ping: call {=usize} came back wrong: rax {=u64}, info {=u64:#x}, mrs {:#x}, sent {:#x}",
                    i,
                    rax,
                    out[0],
                    &out[2..],
                    &mrs[..]
                );
            }
            wrong += 1;
        }
        if let Some(sample) = i.checked_sub(WARM_UP).and_then(|k| samples.get_mut(k)) {
            *sample = end.wrapping_sub(start);
        }
    }
    if wrong > 0 {
        defmt::error!(
            "ping: {=usize} of {=usize} echoes were wrong",
            wrong,
            WARM_UP + CALLS
        );
    }
    if let Some(s) = Summary::of(samples) {
        defmt::info!(
            "ping: ipc round trip: median {=u64} cycles, min {=u64}, p90 {=u64}, max {=u64} over {=usize} calls",
            s.median,
            s.min,
            s.p90,
            s.max,
            s.count
        );
    }

    // The null system call: cap_info on a slot the manifest left empty.
    let mut unexpected = 0usize;
    for i in 0..WARM_UP + CALLS {
        let start = tsc();
        let (rax, _) = syscall(Syscall::CapInfo, [u64::from(empty), 0, 0, 0, 0, 0]);
        let end = tsc();
        if rax != Error::InvalidCapability as u64 {
            unexpected += 1;
        }
        if let Some(sample) = i.checked_sub(WARM_UP).and_then(|k| samples.get_mut(k)) {
            *sample = end.wrapping_sub(start);
        }
    }
    if unexpected > 0 {
        defmt::error!(
            "ping: cap_info on empty slot {=u32} did not fail with InvalidCapability {=usize} times",
            empty,
            unexpected
        );
    }
    if let Some(s) = Summary::of(samples) {
        defmt::info!(
            "ping: null syscall (cap_info on an empty slot): median {=u64} cycles, min {=u64}, p90 {=u64}, max {=u64} over {=usize} calls",
            s.median,
            s.min,
            s.p90,
            s.max,
            s.count
        );
    }

    // poll on a notification nobody signals: a successful capability lookup, no switch.
    let mut unexpected = 0usize;
    for i in 0..WARM_UP + CALLS {
        let start = tsc();
        let (rax, out) = syscall(Syscall::Poll, [u64::from(poll), 0, 0, 0, 0, 0]);
        let end = tsc();
        if rax != 0 || out[0] != 0 {
            unexpected += 1;
        }
        if let Some(sample) = i.checked_sub(WARM_UP).and_then(|k| samples.get_mut(k)) {
            *sample = end.wrapping_sub(start);
        }
    }
    if unexpected > 0 {
        defmt::error!(
            "ping: poll did not return 0 bits {=usize} times",
            unexpected
        );
    }
    if let Some(s) = Summary::of(samples) {
        defmt::info!(
            "ping: notification poll: median {=u64} cycles, min {=u64}, p90 {=u64}, max {=u64} over {=usize} calls",
            s.median,
            s.min,
            s.p90,
            s.max,
            s.count
        );
    }

    // What the timing itself costs.
    for sample in samples.iter_mut() {
        let start = tsc();
        let end = tsc();
        *sample = end.wrapping_sub(start);
    }
    if let Some(s) = Summary::of(samples) {
        defmt::info!(
            "ping: rdtsc back to back: median {=u64} cycles, min {=u64}, p90 {=u64}, max {=u64} over {=usize} calls",
            s.median,
            s.min,
            s.p90,
            s.max,
            s.count
        );
    }

    // Context switches: pong becomes a yielder, so each `yield` here runs pong (which
    // yields straight back): two world-to-world switches per sample, both through the
    // scheduler.
    let args = [u64::from(bench), 0, esker_ping::START_YIELDING, 0, 0, 0];
    let (rax, _) = syscall(Syscall::Call, args);
    if rax != 0 {
        defmt::error!("ping: pong did not take the request to start yielding");
    }
    for i in 0..WARM_UP + CALLS {
        let start = tsc();
        let _ = syscall(Syscall::Yield, [0; 6]);
        let end = tsc();
        if let Some(sample) = i.checked_sub(WARM_UP).and_then(|k| samples.get_mut(k)) {
            *sample = end.wrapping_sub(start);
        }
    }
    if let Some(s) = Summary::of(samples) {
        defmt::info!(
            "ping: yield round trip (two context switches): median {=u64} cycles, min {=u64}, p90 {=u64}, max {=u64} over {=usize} calls",
            s.median,
            s.min,
            s.p90,
            s.max,
            s.count
        );
    }

    defmt::info!("ping: done");
    sys::exit(0)
}
