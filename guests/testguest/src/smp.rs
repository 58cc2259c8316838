//! `spin=<ms>`: the other vCPUs started with INIT and start-up IPIs, and a measurement of
//! how long each CPU spins on one lock all of them take turns holding.
//!
//! Start-up: the BSP copies a real-mode trampoline (below) to [`TRAMPOLINE`] (page 8,
//! so the start-up vector is [`SIPI_VECTOR`]) and sends every application processor
//! (APIC ids 1..n-1) INIT, then the start-up IPI twice. An AP starts in real mode at
//! CS = 0x0800, IP = 0 with interrupts off, loads the boot GDT (`boot_gdt`, in the image)
//! through a pointer at the trampoline's end, enters 32-bit protected mode, takes its
//! APIC id from CPUID leaf 1 (EBX bits 31:24; it is the CPU's index), enables PAE, loads
//! the BSP's page tables (`boot_pml4`), sets EFER.LME and CR0.PG, jumps to 64-bit code in
//! the image, takes its own 16 KiB stack and calls [`ap_main`]. APs never print: only the
//! BSP writes COM1 (except that an exception on an AP is reported, and ends the VM, as
//! on the BSP).
//!
//! The measurement ([`esker_testguest::contend`]): every CPU waits for a common start
//! TSC, then until `<ms>` ms of TSC time have passed takes the lock (test-and-set),
//! holds it 50 µs, releases it and works 50 µs. The TSC is calibrated once, on the BSP,
//! against a 50 ms one-shot of PIT channel 2 (gate and output through port 0x61).
//! Interrupts stay off on every CPU throughout. Afterwards the APs spin with `pause`
//! (the BSP's exit ends the VM).

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use esker_testguest::{
    AWAY_GAP_US, LOCK_HOLD_US, LOCK_WORK_US, LockSpin, MAX_CPUS, PIT_CALIBRATION_COUNT,
    SpinFigures, SpinSummary, contend, cycles_to_us, exit, ms_to_cycles, range_is_free, tsc_khz,
    us_to_cycles,
};

use crate::cpu::{self, inb, outb, rdtsc};
use crate::phys::{self, Boot, MAPPED_LIMIT, MAX_REGIONS};
use crate::{interrupts, serial};

/// Physical address the trampoline is copied to and APs start at: page 8, free RAM below
/// the Multiboot information (0x9000 under Esker and QEMU; copied into the image before
/// this runs anyway).
pub const TRAMPOLINE: u64 = 0x8000;
/// The start-up IPI's vector: the trampoline's page number.
pub const SIPI_VECTOR: u8 = (TRAMPOLINE >> 12) as u8;
/// Application processors at most (APIC ids 1..=15).
const MAX_APS: u32 = MAX_CPUS - 1;
/// log2 of each AP's stack size (16 KiB).
const AP_STACK_SHIFT: u32 = 14;

/// The local APIC's registers (xAPIC, memory-mapped).
const APIC_BASE: u64 = 0xfee0_0000;
const APIC_SVR: u64 = 0xf0;
const APIC_ICR_LOW: u64 = 0x300;
const APIC_ICR_HIGH: u64 = 0x310;
/// SVR: APIC software enable, spurious vector 0xff.
const SVR_ENABLE: u32 = 0x1ff;
/// ICR: INIT, level assert, physical destination.
const ICR_INIT: u32 = 0x4500;
/// ICR: start-up, level assert, physical destination (| vector).
const ICR_STARTUP: u32 = 0x4600;
/// ICR: delivery status (send pending).
const ICR_PENDING: u32 = 1 << 12;

const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
const SYSTEM_CONTROL: u16 = 0x61;
/// Port 0x61: PIT channel 2's gate.
const GATE2: u8 = 1 << 0;
/// Port 0x61: speaker data enable.
const SPEAKER: u8 = 1 << 1;
/// Port 0x61: PIT channel 2's output.
const OUT2: u8 = 1 << 5;
/// TSC cycles after which the calibration gives up: 50 ms at 20 GHz, or 1 s at 1 GHz.
const CALIBRATION_TIMEOUT_CYCLES: u64 = 1_000_000_000;

/// Milliseconds the BSP waits for the APs to come online, and after the end of the
/// measurement for their figures.
const TIMEOUT_MS: u64 = 2000;
/// Milliseconds between the common start TSC and the moment it is published, so that
/// every CPU has seen it before it passes.
const START_LEAD_MS: u64 = 1;

global_asm!(
    r#"
/* ---- The trampoline: copied to {trampoline} and run there by each AP. Addresses inside
   it are {trampoline} + (label - ap_trampoline_start); everything else is absolute. */
    .section .rodata.ap_trampoline, "a"
    .global ap_trampoline_start
    .global ap_trampoline_end
    .code16
ap_trampoline_start:
    cli
    cld
    movw %cs, %ax                   /* 0x0800: the trampoline's page */
    movw %ax, %ds
    lgdtl ap_trampoline_gdt_pointer - ap_trampoline_start
    movl %cr0, %eax
    orl $1, %eax                    /* PE */
    movl %eax, %cr0
    ljmpl $0x18, ${trampoline} + (ap_trampoline_32 - ap_trampoline_start)

    .code32
ap_trampoline_32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    /* The APIC id (CPUID leaf 1, EBX bits 31:24) is the CPU's index: 1..={max_aps}, or
       the AP parks here (the BSP then reports it as not started). */
    movl $1, %eax
    cpuid
    shrl $24, %ebx
    cmpl $1, %ebx
    jb ap_trampoline_park
    cmpl ${max_aps}, %ebx
    ja ap_trampoline_park

    /* Long mode on the BSP's page tables, as the boot stub does. */
    movl %cr4, %eax
    orl $(1 << 5), %eax             /* PAE */
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx          /* EFER */
    rdmsr
    orl $(1 << 8), %eax             /* LME */
    wrmsr
    movl %cr0, %eax
    andl $0x9fffffff, %eax          /* CD, NW off: INIT may leave caching disabled */
    orl $((1 << 31) | 1), %eax      /* PG, PE */
    movl %eax, %cr0
    ljmpl $0x08, $ap_start64

ap_trampoline_park:
    pause
    jmp ap_trampoline_park

    .balign 4
ap_trampoline_gdt_pointer:
    .short boot_gdt_limit
    .long boot_gdt
ap_trampoline_end:

/* ---- 64-bit: segments, the stack of AP %ebx (the top of the %ebx-th 16 KiB slot), Rust. */
    .section .text.ap_start64, "ax"
    .code64
ap_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movl %ebx, %edi                 /* the CPU index, zero-extended */
    movq %rdi, %rax
    shlq ${stack_shift}, %rax
    leaq ap_stacks(%rip), %rsp
    addq %rax, %rsp
    xorl %ebp, %ebp
    call {ap_main}
1:
    pause
    jmp 1b

    .section .bss.ap_stacks, "aw", @nobits
    .balign 4096
ap_stacks:
    .skip {max_aps} << {stack_shift}
    "#,
    trampoline = const TRAMPOLINE,
    max_aps = const MAX_APS,
    stack_shift = const AP_STACK_SHIFT,
    ap_main = sym ap_main,
    options(att_syntax)
);

unsafe extern "C" {
    /// First byte of the trampoline's code in the image.
    static ap_trampoline_start: u8;
    /// One past its last byte.
    static ap_trampoline_end: u8;
}

/// Bit `i`: CPU `i` runs 64-bit Rust (bit 0, the BSP, is never set).
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// Bit `i`: CPU `i` has published its figures.
static DONE: AtomicU32 = AtomicU32::new(0);
/// Set by the BSP once [`START`], [`END`], [`HOLD`], [`WORK`] and [`GAP`] hold the run's TSC values.
static GO: AtomicBool = AtomicBool::new(false);
static START: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);
static HOLD: AtomicU64 = AtomicU64::new(0);
static WORK: AtomicU64 = AtomicU64::new(0);
static GAP: AtomicU64 = AtomicU64::new(0);
/// The lock every CPU contends for.
static LOCK: AtomicBool = AtomicBool::new(false);

/// One CPU's [`SpinFigures`], published before its [`DONE`] bit.
struct Published {
    acquisitions: AtomicU64,
    spin_cycles: AtomicU64,
    longest_spin: AtomicU64,
    run_cycles: AtomicU64,
}

impl Published {
    const fn new() -> Self {
        Published {
            acquisitions: AtomicU64::new(0),
            spin_cycles: AtomicU64::new(0),
            longest_spin: AtomicU64::new(0),
            run_cycles: AtomicU64::new(0),
        }
    }

    fn store(&self, figures: &SpinFigures) {
        self.acquisitions
            .store(figures.acquisitions, Ordering::Relaxed);
        self.spin_cycles
            .store(figures.spin_cycles, Ordering::Relaxed);
        self.longest_spin
            .store(figures.longest_spin, Ordering::Relaxed);
        self.run_cycles.store(figures.run_cycles, Ordering::Relaxed);
    }

    fn load(&self) -> SpinFigures {
        SpinFigures {
            acquisitions: self.acquisitions.load(Ordering::Relaxed),
            spin_cycles: self.spin_cycles.load(Ordering::Relaxed),
            longest_spin: self.longest_spin.load(Ordering::Relaxed),
            run_cycles: self.run_cycles.load(Ordering::Relaxed),
        }
    }
}

static FIGURES: [Published; MAX_CPUS as usize] = [const { Published::new() }; MAX_CPUS as usize];

/// Writes the local APIC register at `offset`.
fn apic_write(offset: u64, value: u32) {
    // SAFETY: 0xfee0_0000 is the local APIC's page (identity-mapped: below 4 GiB), not RAM
    // and no Rust object; `offset` is one of the 16-byte-aligned registers above, written
    // with a dword store as the APIC requires.
    unsafe { ((APIC_BASE + offset) as *mut u32).write_volatile(value) }
}

/// Reads the local APIC register at `offset`.
fn apic_read(offset: u64) -> u32 {
    // SAFETY: as in `apic_write`; reading these registers has no side effect.
    unsafe { phys::read_u32(APIC_BASE + offset) }
}

/// Sends the IPI `low` (ICR low: delivery mode, level, vector) to APIC id `apic_id` and
/// waits (boundedly: the monitor's always reads 0) for the delivery status to clear.
fn send_ipi(apic_id: u32, low: u32) {
    apic_write(APIC_ICR_HIGH, apic_id << 24);
    apic_write(APIC_ICR_LOW, low);
    for _ in 0..1_000_000 {
        if apic_read(APIC_ICR_LOW) & ICR_PENDING == 0 {
            break;
        }
        core::hint::spin_loop();
    }
}

/// Busy-waits `cycles` TSC cycles.
fn delay(cycles: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < cycles {
        core::hint::spin_loop();
    }
}

/// The TSC rate in kHz, from the cycles a one-shot of [`PIT_CALIBRATION_COUNT`] PIT clocks
/// on channel 2 (mode 0, gate on, speaker off) takes until its output rises.
fn calibrate_tsc_khz() -> u64 {
    let control = inb(SYSTEM_CONTROL);
    outb(SYSTEM_CONTROL, (control & !SPEAKER) | GATE2);
    let [low, high] = PIT_CALIBRATION_COUNT.to_le_bytes();
    outb(PIT_COMMAND, 0xb0); // channel 2, low then high byte, mode 0, binary
    outb(PIT_CHANNEL2, low);
    outb(PIT_CHANNEL2, high);
    let start = rdtsc();
    let mut cycles;
    loop {
        cycles = rdtsc().wrapping_sub(start);
        if inb(SYSTEM_CONTROL) & OUT2 != 0 {
            break;
        }
        if cycles > CALIBRATION_TIMEOUT_CYCLES {
            outb(SYSTEM_CONTROL, control & !SPEAKER & !GATE2);
            crate::fail!(
                "spin",
                exit::NO_TSC_RATE,
                "PIT channel 2's output (port 0x61 bit 5) did not rise within \
                 {CALIBRATION_TIMEOUT_CYCLES} TSC cycles of a {PIT_CALIBRATION_COUNT}-clock one-shot"
            );
        }
    }
    outb(SYSTEM_CONTROL, control & !SPEAKER & !GATE2);
    let khz = tsc_khz(cycles, 1, u64::from(PIT_CALIBRATION_COUNT));
    if khz == 0 {
        crate::fail!(
            "spin",
            exit::NO_TSC_RATE,
            "PIT channel 2's {PIT_CALIBRATION_COUNT}-clock one-shot took {cycles} TSC cycles: \
             no usable TSC rate"
        );
    }
    khz
}

/// The lowest CPU index in `1..cpus` whose bit is clear in `mask`.
fn first_missing(mask: u32, cpus: u32) -> Option<u32> {
    (1..cpus).find(|cpu| mask & (1 << cpu) == 0)
}

/// Waits until every AP of `1..cpus` has its bit set in `flags`, or `timeout` TSC cycles
/// have passed since `from`: returns the first missing one then.
fn wait_for(flags: &AtomicU32, cpus: u32, from: u64, timeout: u64) -> Option<u32> {
    loop {
        let missing = first_missing(flags.load(Ordering::Acquire), cpus)?;
        if rdtsc().wrapping_sub(from) > timeout {
            return Some(missing);
        }
        core::hint::spin_loop();
    }
}

/// Copies the trampoline to [`TRAMPOLINE`] after checking that page is free RAM.
fn install_trampoline(boot: &Boot, image: (u64, u64)) {
    let mut usable = [(0, 0); MAX_REGIONS];
    let count = boot.usable(&mut usable);
    let page_len = esker_testguest::PAGE as usize;
    let page = (TRAMPOLINE, TRAMPOLINE + esker_testguest::PAGE);
    if !range_is_free(&usable[..count], &[image], MAPPED_LIMIT, page.0, page.1) {
        crate::fail!(
            "spin",
            exit::CPU_NOT_STARTED,
            "the trampoline page [{:#x}, {:#x}) is not free RAM in the memory map",
            page.0,
            page.1
        );
    }
    let start = &raw const ap_trampoline_start;
    let len = (&raw const ap_trampoline_end) as usize - start as usize;
    if len > page_len {
        crate::fail!(
            "spin",
            exit::CPU_NOT_STARTED,
            "the trampoline ({len} bytes) does not fit in its page"
        );
    }
    // SAFETY: the two symbols bound the trampoline's bytes in the image's read-only data,
    // which nothing writes.
    let code = unsafe { core::slice::from_raw_parts(start, len) };
    // SAFETY: checked above: the page is free RAM below 4 GiB, outside the image, not
    // page 0, and the trampoline fits in it.
    unsafe { phys::copy_to(TRAMPOLINE, code) };
}

/// `spin=<ms>`: starts `spin.cpus - 1` APs, runs the lock measurement on all CPUs for
/// `spin.ms` ms, prints each CPU's figures and a summary, exits 0.
pub fn lock_spin(spin: LockSpin, boot: &Boot, image: (u64, u64)) -> ! {
    serial::set_stage("spin");
    let cpus = spin.cpus;
    let khz = calibrate_tsc_khz();
    crate::say!(
        "spin: TSC at {} MHz (PIT channel 2, {PIT_CALIBRATION_COUNT} clocks)",
        khz / 1000
    );
    let timeout = ms_to_cycles(TIMEOUT_MS, khz);
    if cpus > 1 {
        install_trampoline(boot, image);
        let place = format_args!("trampoline at {TRAMPOLINE:#x}, SIPI vector {SIPI_VECTOR:#04x}");
        if cpus == 2 {
            crate::say!("spin: starting cpu 1 ({place})");
        } else {
            crate::say!("spin: starting cpus 1 to {} ({place})", cpus - 1);
        }
        apic_write(APIC_SVR, SVR_ENABLE);
        for cpu in 1..cpus {
            send_ipi(cpu, ICR_INIT);
        }
        delay(ms_to_cycles(10, khz));
        for _ in 0..2 {
            for cpu in 1..cpus {
                send_ipi(cpu, ICR_STARTUP | u32::from(SIPI_VECTOR));
            }
            delay(us_to_cycles(200, khz));
        }
        if let Some(cpu) = wait_for(&ONLINE, cpus, rdtsc(), timeout) {
            crate::fail!("spin", exit::CPU_NOT_STARTED, "cpu {cpu} did not start");
        }
    }
    crate::say!("spin: {cpus} cpus up");

    let hold = us_to_cycles(LOCK_HOLD_US, khz);
    let work = us_to_cycles(LOCK_WORK_US, khz);
    let gap = us_to_cycles(AWAY_GAP_US, khz);
    GAP.store(gap, Ordering::Relaxed);
    let start = rdtsc() + ms_to_cycles(START_LEAD_MS, khz);
    let end = start + ms_to_cycles(u64::from(spin.ms), khz);
    START.store(start, Ordering::Relaxed);
    END.store(end, Ordering::Relaxed);
    HOLD.store(hold, Ordering::Relaxed);
    WORK.store(work, Ordering::Relaxed);
    GO.store(true, Ordering::Release);
    let own = contend(&LOCK, rdtsc, start, end, hold, work, gap);
    FIGURES[0].store(&own);
    if let Some(cpu) = wait_for(&DONE, cpus, end, timeout) {
        crate::fail!(
            "spin",
            exit::CPU_NOT_DONE,
            "cpu {cpu} did not finish within {TIMEOUT_MS} ms of the end of the run"
        );
    }

    let mut all = [SpinFigures::default(); MAX_CPUS as usize];
    for (cpu, figures) in all.iter_mut().enumerate().take(cpus as usize) {
        *figures = FIGURES[cpu].load();
        crate::say!(
            "spin cpu {cpu}: {} acquisitions, spun {}% of its time, longest spin {} us",
            figures.acquisitions,
            figures.percent_spun(),
            cycles_to_us(figures.longest_spin, khz)
        );
    }
    let total = SpinFigures::total(&all[..cpus as usize]);
    crate::say!("{}", SpinSummary::of(&total, spin.ms, khz));
    crate::say!("spin: passed");
    serial::set_stage("exit");
    cpu::exit(exit::PASS)
}

/// An application processor's Rust entry (from the trampoline, in 64-bit mode on its own
/// stack, interrupts off): online, wait for the start, contend, publish, spin forever.
extern "C" fn ap_main(cpu: u32) -> ! {
    interrupts::load();
    let index = cpu as usize;
    ONLINE.fetch_or(1 << cpu, Ordering::Release);
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let figures = contend(
        &LOCK,
        rdtsc,
        START.load(Ordering::Relaxed),
        END.load(Ordering::Relaxed),
        HOLD.load(Ordering::Relaxed),
        WORK.load(Ordering::Relaxed),
        GAP.load(Ordering::Relaxed),
    );
    if let Some(slot) = FIGURES.get(index) {
        slot.store(&figures);
    }
    DONE.fetch_or(1 << cpu, Ordering::Release);
    loop {
        core::hint::spin_loop();
    }
}
