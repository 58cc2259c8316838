//! The checks of a default run. Each prints one `<check>: ok (...)` line or fails with
//! `FAILED <check>: <detail>` and the check's own exit code.

use core::arch::x86_64::__cpuid;

use esker_testguest::{Check, PAGE, cmos_seconds_valid, for_each_free, pattern, tsc_khz};

use crate::cpu::{inb, inl, outb, outl, rdtsc, wait_for_interrupt};
use crate::interrupts;
use crate::phys::{self, Boot, MAPPED_LIMIT, MAX_REGIONS};
use crate::serial;

/// The vendor signature in CPUID leaf 0x4000_0000 (EBX, ECX, EDX).
const SIGNATURE: &[u8; 12] = b"EskerEskerVM";
/// The PCI ECAM window.
const ECAM_BASE: u64 = 0xb000_0000;
/// Vendor 0x8086, device 0x29c0 at 00:00.0 (the host bridge).
const HOST_BRIDGE_ID: u32 = 0x29c0_8086;
const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
const PCI_CONFIG_DATA: u16 = 0xcfc;
const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
/// PIT divisor for ~1 kHz (1.193182 MHz / 1193).
const PIT_COUNT: u16 = 1193;
/// Timer interrupts the `timer` check waits for.
const TICKS_WANTED: u64 = 20;

/// Runs `check`.
pub fn run(check: Check, boot: &Boot, image: (u64, u64)) {
    serial::set_stage(check.name());
    match check {
        Check::Cpuid => cpuid(),
        Check::Ports => ports(),
        Check::Mmio => mmio(),
        Check::Memory => memory(boot, image),
        Check::Timer => timer(),
    }
}

macro_rules! check_failed {
    ($check:expr, $($arg:tt)*) => {
        crate::fail!($check.name(), $check.exit_code(), $($arg)*)
    };
}

/// The hypervisor bit (leaf 1 ECX bit 31) and the vendor signature of leaf 0x4000_0000.
fn cpuid() {
    let leaf1 = __cpuid(1);
    if leaf1.ecx & (1 << 31) == 0 {
        check_failed!(
            Check::Cpuid,
            "leaf 1 ECX is {:#010x}: the hypervisor bit (31) is clear",
            leaf1.ecx
        );
    }
    let leaf = __cpuid(0x4000_0000);
    let mut signature = [0u8; 12];
    signature[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    signature[8..].copy_from_slice(&leaf.edx.to_le_bytes());
    if signature != *SIGNATURE {
        check_failed!(
            Check::Cpuid,
            "leaf 0x40000000 signature is \"{}\" (EBX, ECX, EDX), expected \"{}\"",
            signature.escape_ascii(),
            SIGNATURE.escape_ascii()
        );
    }
    crate::say!(
        "cpuid: ok (hypervisor bit set, signature \"{}\", highest hypervisor leaf {:#x})",
        signature.escape_ascii(),
        leaf.eax
    );
}

fn cmos_read(register: u8) -> u8 {
    outb(CMOS_INDEX, register);
    inb(CMOS_DATA)
}

/// UART scratch register round trips; a readable, valid CMOS seconds register.
fn ports() {
    for value in [0x5a, 0xa5, 0x00, 0xff] {
        outb(serial::SCRATCH, value);
        let got = inb(serial::SCRATCH);
        if got != value {
            check_failed!(
                Check::Ports,
                "UART scratch register ({:#x}) read {got:#04x} after writing {value:#04x}",
                serial::SCRATCH
            );
        }
    }
    // Wait out an update in progress (status A bit 7), boundedly.
    let mut settled = false;
    for _ in 0..1_000_000 {
        if cmos_read(0x0a) & 0x80 == 0 {
            settled = true;
            break;
        }
        core::hint::spin_loop();
    }
    if !settled {
        check_failed!(
            Check::Ports,
            "CMOS status A keeps reporting an update in progress"
        );
    }
    let status_b = cmos_read(0x0b);
    let binary = status_b & 0x04 != 0;
    let seconds = cmos_read(0x00);
    let mode = if binary { "binary" } else { "BCD" };
    if !cmos_seconds_valid(seconds, binary) {
        check_failed!(
            Check::Ports,
            "CMOS seconds register reads {seconds:#04x}, not valid {mode} (status B {status_b:#04x})"
        );
    }
    crate::say!(
        "ports: ok (UART scratch round trips, CMOS seconds {seconds:#04x} valid {mode}, status B {status_b:#04x})"
    );
}

/// The host bridge's vendor/device word through ECAM and through ports 0xcf8/0xcfc.
fn mmio() {
    // SAFETY: 0xb000_0000 is the emulated PC's ECAM window: below 4 GiB (mapped by the
    // boot stub), not RAM and no Rust object; reading 00:00.0's ID register has no
    // side effects.
    let ecam = unsafe { phys::read_u32(ECAM_BASE) };
    outl(PCI_CONFIG_ADDRESS, 0x8000_0000); // enable, bus 0, device 0, function 0, register 0
    let port = inl(PCI_CONFIG_DATA);
    if ecam != HOST_BRIDGE_ID {
        check_failed!(
            Check::Mmio,
            "ECAM read of 00:00.0 at {ECAM_BASE:#x} returned {ecam:#010x}, expected \
             {HOST_BRIDGE_ID:#010x} (0xcf8/0xcfc read {port:#010x})"
        );
    }
    if port != ecam {
        check_failed!(
            Check::Mmio,
            "00:00.0 reads {port:#010x} through 0xcf8/0xcfc but {ecam:#010x} through ECAM"
        );
    }
    crate::say!(
        "mmio: ok (host bridge 00:00.0 is {ecam:#010x} through ECAM at {ECAM_BASE:#x} and through 0xcf8/0xcfc)"
    );
}

/// Every free page written with [`pattern`], then all read back.
fn memory(boot: &Boot, image: (u64, u64)) {
    let mut usable = [(0, 0); MAX_REGIONS];
    let count = boot.usable(&mut usable);
    let usable = &usable[..count];
    if usable.is_empty() {
        check_failed!(
            Check::Memory,
            "the boot information describes no usable RAM"
        );
    }
    if let Some(&(_, end)) = usable.iter().find(|(_, end)| *end > MAPPED_LIMIT) {
        crate::say!(
            "memory: RAM up to {end:#x} reaches above 4 GiB, which the guest does not map: \
             checking below 4 GiB only"
        );
    }
    let reserved = [image];
    let mut pages = 0;
    let mut ranges = 0;
    for_each_free(usable, &reserved, MAPPED_LIMIT, |start, end| {
        for addr in (start..end).step_by(8) {
            // SAFETY: a free page: usable RAM below 4 GiB, outside the image, not page 0.
            unsafe { phys::write_u64(addr, pattern(addr)) };
        }
        pages += (end - start) / PAGE;
        ranges += 1;
    });
    for_each_free(usable, &reserved, MAPPED_LIMIT, |start, end| {
        for addr in (start..end).step_by(8) {
            // SAFETY: as for the writes above.
            let got = unsafe { phys::read_u64(addr) };
            if got != pattern(addr) {
                check_failed!(
                    Check::Memory,
                    "word at {addr:#x} reads {got:#018x}, expected {:#018x}",
                    pattern(addr)
                );
            }
        }
    });
    if pages == 0 {
        check_failed!(Check::Memory, "no free page outside the image to check");
    }
    crate::say!(
        "memory: ok, checked {} MiB ({pages} pages in {ranges} ranges; the image [{:#x}, {:#x}) left out)",
        (pages * PAGE) >> 20,
        image.0,
        image.1
    );
}

/// PIC remapped, PIT at ~1 kHz, 20 ticks taken with `sti; hlt`.
fn timer() {
    interrupts::remap_pic();
    crate::say!(
        "timer: PIC at vectors {:#x}/{:#x}, PIT channel 0 mode 2 count {PIT_COUNT}; waiting for {TICKS_WANTED} ticks",
        interrupts::PIC_BASE,
        interrupts::PIC_BASE + 8
    );
    interrupts::start_pit(PIT_COUNT);
    let start = rdtsc();
    interrupts::set_pic_masks(0xfe, 0xff); // IRQ 0 only
    let mut halts = 0u64;
    while interrupts::ticks() < TICKS_WANTED {
        wait_for_interrupt();
        halts += 1;
    }
    let end = rdtsc();
    interrupts::set_pic_masks(0xff, 0xff);
    let ticks = interrupts::ticks();
    if end <= start {
        check_failed!(
            Check::Timer,
            "the TSC went from {start} to {end} over {ticks} ticks"
        );
    }
    let cycles = end - start;
    crate::say!(
        "timer: ok, {ticks} ticks in {cycles} TSC cycles (~{} MHz TSC), {halts} halts",
        tsc_khz(cycles, ticks, u64::from(PIT_COUNT)) / 1000
    );
}
