//! Time: the TSC read at kernel entry, its calibrated rate, and the PIT used once to
//! calibrate it (and the LAPIC timer) against a known clock.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::cpu;

static TSC_AT_ENTRY: AtomicU64 = AtomicU64::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC cycle as a 32.32 fixed-point number (no division on the hot path).
static NS_PER_CYCLE_FP32: AtomicU64 = AtomicU64::new(0);

/// Records the TSC at kernel entry; timestamps count from here.
pub fn mark_entry() {
    TSC_AT_ENTRY.store(cpu::rdtsc(), Ordering::Relaxed);
}

/// TSC cycles since kernel entry.
pub fn cycles_since_entry() -> u64 {
    cpu::rdtsc().wrapping_sub(TSC_AT_ENTRY.load(Ordering::Relaxed))
}

/// Records the calibrated TSC rate.
pub fn set_tsc_khz(khz: u64) {
    TSC_KHZ.store(khz, Ordering::Relaxed);
    NS_PER_CYCLE_FP32.store((1_000_000u64 << 32) / khz.max(1), Ordering::Relaxed);
}

/// The calibrated TSC rate in kHz (0 before calibration).
pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Nanoseconds since kernel entry (0 until the TSC is calibrated).
pub fn nanos_since_boot() -> u64 {
    let factor = NS_PER_CYCLE_FP32.load(Ordering::Relaxed);
    ((u128::from(cycles_since_entry()) * u128::from(factor)) >> 32) as u64
}

/// Microseconds since kernel entry (0 until the TSC is calibrated).
pub fn micros_since_boot() -> u64 {
    let khz = tsc_khz();
    if khz == 0 {
        return 0;
    }
    (u128::from(cycles_since_entry()) * 1000 / u128::from(khz)) as u64
}

/// Calibrates the TSC against PIT channel 2 over `millis` milliseconds and records the
/// rate; returns it in kHz.
pub fn calibrate_tsc(millis: u64) -> u64 {
    let start = pit_window(millis, cpu::rdtsc);
    let khz = (cpu::rdtsc().wrapping_sub(start) / millis).max(1);
    set_tsc_khz(khz);
    khz
}

/// The PIT's input clock.
const PIT_HZ: u64 = 1_193_182;
const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
const SPEAKER_GATE: u16 = 0x61;

fn outb(port: u16, value: u8) {
    // SAFETY: the PIT (0x40-0x43) and the keyboard controller's port B (0x61) are owned
    // by the kernel, used only here during single-threaded calibration; writing them
    // touches no memory.
    unsafe { Port::<u8>::new(port).write(value) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: as in `outb`.
    unsafe { Port::<u8>::new(port).read() }
}

/// Runs `during` once, then busy-waits until `millis` milliseconds (1..=50) have passed
/// on PIT channel 2, counted from just before `during` ran. Returns what `during` returned.
///
/// The caller samples its counters in `during` and again after this returns.
pub fn pit_window<R>(millis: u64, during: impl FnOnce() -> R) -> R {
    let count = (PIT_HZ * millis.clamp(1, 50) / 1000) as u16;
    // Gate low, speaker off; channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count).
    let gate = inb(SPEAKER_GATE) & !0x03;
    outb(SPEAKER_GATE, gate);
    outb(PIT_COMMAND, 0b1011_0000);
    outb(PIT_CHANNEL2, (count & 0xff) as u8);
    outb(PIT_CHANNEL2, (count >> 8) as u8);
    let result = during();
    outb(SPEAKER_GATE, gate | 0x01); // gate high: counting starts
    // OUT2 (bit 5) goes high at terminal count. Bound the wait so a missing PIT cannot
    // hang the boot: the caller sees an implausible measurement instead.
    for _ in 0..200_000_000u64 {
        if inb(SPEAKER_GATE) & 0x20 != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(SPEAKER_GATE, gate);
    result
}
