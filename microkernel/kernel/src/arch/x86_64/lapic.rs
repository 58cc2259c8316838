//! The boot CPU's local APIC: its timer (the kernel's tick) and end-of-interrupt. The
//! legacy PICs are remapped and masked first (`pic`).
//!
//! Works in xAPIC mode (registers in an MMIO page, mapped uncached) or, if firmware
//! left it on, x2APIC mode (registers as MSRs 0x800+). The timer is calibrated once
//! against the PIT.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;
use volatile::VolatilePtr;

use super::{cpu, time, trap};

const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const X2APIC_MSR_BASE: u32 = 0x800;

const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SPURIOUS: u32 = 0xf0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;

const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;

const LVT_MASKED: u32 = 1 << 16;
const LVT_DELIVERY_EXTINT: u32 = 0b111 << 8;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const SPURIOUS_ENABLE: u32 = 1 << 8;
const DIVIDE_BY_16: u32 = 0b0011;

/// The kernel's tick rate.
pub const TIMER_HZ: u64 = 100;
/// Length of the calibration window.
const CALIBRATION_MS: u64 = 10;

#[derive(Clone, Copy)]
enum Access {
    Mmio(NonNull<u32>),
    X2Apic,
}

// SAFETY: the MMIO page is mapped for the kernel's whole life and LAPIC registers are
// per-CPU hardware: sharing the base address between CPUs is sound.
unsafe impl Send for Access {}
// SAFETY: as above.
unsafe impl Sync for Access {}

static ACCESS: Once<Access> = Once::new();
static TICKS: AtomicU64 = AtomicU64::new(0);
/// The timer's input clock in kHz, once calibrated.
static BUS_KHZ: AtomicU64 = AtomicU64::new(0);

fn access() -> Access {
    *ACCESS.get().expect("LAPIC used before lapic::init")
}

fn read(reg: u32) -> u32 {
    match access() {
        Access::Mmio(base) => {
            // SAFETY: `base` maps the 4 KiB LAPIC page uncached; `reg` is a register
            // offset below 0x400, 16-byte aligned.
            let ptr = unsafe { VolatilePtr::new(base.byte_add(reg as usize)) };
            ptr.read()
        }
        // SAFETY: x2APIC mode is enabled, so MSR 0x800 + reg/16 is the register.
        Access::X2Apic => unsafe { cpu::read_msr(X2APIC_MSR_BASE + reg / 16) as u32 },
    }
}

fn write(reg: u32, value: u32) {
    match access() {
        Access::Mmio(base) => {
            // SAFETY: as in `read`; the registers written here control only this CPU's
            // interrupt delivery.
            let ptr = unsafe { VolatilePtr::new(base.byte_add(reg as usize)) };
            ptr.write(value)
        }
        // SAFETY: as in `read`; writes to x2APIC registers affect interrupt delivery only.
        Access::X2Apic => unsafe { cpu::write_msr(X2APIC_MSR_BASE + reg / 16, u64::from(value)) },
    }
}

/// What calibration measured.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// LAPIC timer input clock in kHz (before the divider).
    pub bus_khz: u64,
    /// LAPIC id of the boot CPU.
    pub apic_id: u32,
    /// Whether the LAPIC is in x2APIC mode.
    pub x2apic: bool,
}

/// Enables the LAPIC, calibrates its timer and the TSC, and starts the periodic tick.
/// `map_mmio` maps a physical MMIO page uncached and returns its virtual address.
pub fn init(map_mmio: impl FnOnce(u64) -> u64) -> Calibration {
    super::pic::init();
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
    let base_msr = unsafe { cpu::read_msr(MSR_APIC_BASE) };
    let x2apic = base_msr & APIC_BASE_X2APIC != 0;
    ACCESS.call_once(|| {
        if x2apic {
            Access::X2Apic
        } else {
            if base_msr & APIC_BASE_ENABLE == 0 {
                // SAFETY: setting the global enable bit of IA32_APIC_BASE turns the
                // LAPIC on at its current base; nothing else changes.
                unsafe { cpu::write_msr(MSR_APIC_BASE, base_msr | APIC_BASE_ENABLE) };
            }
            let virt = map_mmio(base_msr & 0x000f_ffff_ffff_f000);
            Access::Mmio(NonNull::new(virt as *mut u32).expect("map_mmio returned null"))
        }
    });
    write(REG_TPR, 0);
    // The legacy PIC reaches the boot CPU through LINT0 (virtual-wire mode): deliver it as
    // ExtINT. Every PIC line stays masked until a world is granted it.
    write(REG_LVT_LINT0, LVT_DELIVERY_EXTINT);
    write(REG_LVT_LINT1, LVT_MASKED);
    write(REG_LVT_ERROR, LVT_MASKED);
    write(
        REG_SPURIOUS,
        SPURIOUS_ENABLE | u32::from(trap::VECTOR_SPURIOUS),
    );
    let apic_id = apic_id();

    // Calibrate against PIT channel 2: under QEMU both run on the virtual clock, on
    // hardware both on fixed crystals (the TSC may not agree with either under TCG).
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_MASKED);
    time::pit_window(CALIBRATION_MS, || write(REG_TIMER_INITIAL, u32::MAX));
    let lapic_elapsed = u64::from(u32::MAX - read(REG_TIMER_CURRENT));
    write(REG_TIMER_INITIAL, 0);
    let bus_khz = (lapic_elapsed * 16 / CALIBRATION_MS).max(1);
    BUS_KHZ.store(bus_khz, Ordering::Relaxed);

    // Periodic tick.
    let initial = (bus_khz * 1000 / 16 / TIMER_HZ).clamp(1, u64::from(u32::MAX)) as u32;
    write(
        REG_LVT_TIMER,
        LVT_TIMER_PERIODIC | u32::from(trap::VECTOR_TIMER),
    );
    write(REG_TIMER_INITIAL, initial);
    Calibration {
        bus_khz,
        apic_id,
        x2apic,
    }
}

/// Brings up the local APIC of an application processor (the one running this), in the
/// mode the boot CPU's is in: enabled, no priority masking, LINT0/LINT1/error masked (the
/// legacy PIC reaches the boot CPU only), spurious vector set, timer divided by 16 and
/// stopped until the scheduler arms it. Returns its APIC id.
pub fn init_application_processor() -> u32 {
    let x2apic = matches!(access(), Access::X2Apic);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; setting its enable bit (and the
    // x2APIC bit when the boot CPU uses x2APIC) keeps the base address.
    unsafe {
        let base = cpu::read_msr(MSR_APIC_BASE);
        let wanted = base | APIC_BASE_ENABLE | if x2apic { APIC_BASE_X2APIC } else { 0 };
        if wanted != base {
            cpu::write_msr(MSR_APIC_BASE, wanted);
        }
    }
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_LINT1, LVT_MASKED);
    write(REG_LVT_ERROR, LVT_MASKED);
    write(
        REG_SPURIOUS,
        SPURIOUS_ENABLE | u32::from(trap::VECTOR_SPURIOUS),
    );
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_MASKED);
    apic_id()
}

/// This CPU's APIC id.
pub fn apic_id() -> u32 {
    match access() {
        Access::X2Apic => read(REG_ID),
        Access::Mmio(_) => read(REG_ID) >> 24,
    }
}

/// Writes the interrupt command register: `command` (vector, delivery mode, level) to
/// the CPU with APIC id `apic_id`, and waits until the local APIC has sent it.
fn send_command(apic_id: u32, command: u32) {
    match access() {
        Access::X2Apic => {
            // SAFETY: x2APIC mode: MSR 0x830 is the 64-bit ICR (destination in the high
            // half); sending an IPI affects interrupt delivery only.
            unsafe {
                cpu::write_msr(
                    X2APIC_MSR_BASE + REG_ICR_LOW / 16,
                    (u64::from(apic_id) << 32) | u64::from(command),
                )
            }
        }
        Access::Mmio(_) => {
            write(REG_ICR_HIGH, apic_id << 24);
            write(REG_ICR_LOW, command);
            while read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
                core::hint::spin_loop();
            }
        }
    }
}

/// Sends INIT to a CPU (the first step of starting an application processor).
pub fn send_init(apic_id: u32) {
    send_command(apic_id, ICR_INIT | ICR_ASSERT);
}

/// Sends a start-up IPI: the CPU starts in real mode at physical `page * 4096`.
pub fn send_startup(apic_id: u32, page: u8) {
    send_command(apic_id, ICR_STARTUP | ICR_ASSERT | u32::from(page));
}

/// Sends a fixed interrupt with `vector` to a CPU.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send_command(apic_id, ICR_ASSERT | u32::from(vector));
}

/// Switches the timer to one-shot mode and makes it fire `nanos` from now (the
/// scheduler's deadline). Replaces any deadline already armed.
pub fn arm_oneshot(nanos: u64) {
    let bus_khz = BUS_KHZ.load(Ordering::Relaxed).max(1);
    // Ticks of the divided-by-16 clock: nanos * kHz / 16 / 1e6, at least one.
    let ticks = (u128::from(nanos) * u128::from(bus_khz) / 16 / 1_000_000)
        .clamp(1, u128::from(u32::MAX)) as u32;
    write(REG_LVT_TIMER, u32::from(trap::VECTOR_TIMER));
    write(REG_TIMER_INITIAL, ticks);
}

/// Timer interrupt handler.
pub fn on_timer_interrupt() {
    TICKS.fetch_add(1, Ordering::Relaxed);
    end_of_interrupt();
}

/// Ticks since the timer started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Acknowledges the interrupt being handled.
pub fn end_of_interrupt() {
    if ACCESS.get().is_some() {
        write(REG_EOI, 0);
    }
}
