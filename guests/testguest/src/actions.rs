//! What the guest does instead of reporting success: the isolation probe, two ways to
//! shut the CPU down, and spinning.

use esker_testguest::{MARKER_LEN, PAGE, exit, for_each_free, marker, marker_head, marker_owner};

use crate::cpu;
use crate::phys::{self, Boot, MAPPED_LIMIT, MAX_REGIONS};
use crate::serial;

/// Foreign markers reported one by one (the rest are only counted).
const REPORTED: u64 = 4;

/// Writes guest `n`'s marker at the start of every free page, then scans all RAM outside
/// the image, at every 64-byte boundary, for markers. Exit 0 when every marker found is
/// its own and all of them are there, 5 when another guest's marker shows up, 6 when some
/// of its own are missing.
/// TSC cycles to wait between writing the markers and scanning (about 1.5 s at 2.6 GHz).
const ISOLATION_WAIT_CYCLES: u64 = 4_000_000_000;

pub fn isolation(n: u32, boot: &Boot, image: (u64, u64)) -> ! {
    serial::set_stage("isolation");
    let mut usable = [(0, 0); MAX_REGIONS];
    let count = boot.usable(&mut usable);
    let usable = &usable[..count];
    let n = u64::from(n);
    let head = marker_head();
    let own = marker(n);
    let mut pages = 0u64;
    for_each_free(usable, &[image], MAPPED_LIMIT, |start, end| {
        for page in (start..end).step_by(PAGE as usize) {
            // SAFETY: a free page: usable RAM below 4 GiB, outside the image, not page 0.
            unsafe { phys::copy_to(page, &own) };
            pages += 1;
        }
    });
    if pages == 0 {
        crate::fail!(
            "isolation",
            exit::BOOT,
            "no free page outside the image to mark"
        );
    }
    crate::say!("isolation {n}: ready");
    // Give a second guest started at the same time (the QEMU test runs two) the time to
    // write its markers too, so that this scan would see them if memory were shared.
    let start = crate::cpu::rdtsc();
    while crate::cpu::rdtsc().wrapping_sub(start) < ISOLATION_WAIT_CYCLES {
        core::hint::spin_loop();
    }
    let mut foreign = 0u64;
    let mut found_own = 0u64;
    for_each_free(usable, &[image], MAPPED_LIMIT, |start, end| {
        for addr in (start..end).step_by(MARKER_LEN) {
            // SAFETY: usable RAM below 4 GiB outside the image and page 0, 8-aligned.
            if unsafe { phys::read_u64(addr) } != head {
                continue;
            }
            let mut candidate = [0u8; MARKER_LEN];
            // SAFETY: as above; 64-byte aligned, so the whole marker is in the same page.
            unsafe { phys::copy_from(addr, &mut candidate) };
            match marker_owner(head, &candidate) {
                Some(owner) if owner == n => found_own += 1,
                Some(owner) => {
                    foreign += 1;
                    if foreign <= REPORTED {
                        crate::say!("isolation {n}: marker of guest {owner} at {addr:#x}");
                    }
                }
                None => {}
            }
        }
    });
    crate::say!("isolation {n}: wrote {pages} pages, foreign markers found: {foreign}");
    if foreign > 0 {
        cpu::exit(exit::FOREIGN_MARKERS);
    }
    if found_own != pages {
        crate::fail!(
            "isolation",
            exit::MARKERS_LOST,
            "found {found_own} of the {pages} markers this guest wrote"
        );
    }
    serial::set_stage("exit");
    cpu::exit(exit::PASS)
}

/// An empty IDT and `int3`: #BP cannot be delivered, nor the #GP or #DF after it, so the
/// CPU shuts down (triple fault).
pub fn triple_fault() -> ! {
    serial::set_stage("triple-fault");
    crate::say!("triple-fault: int3 with an empty IDT; the CPU shuts down now");
    // SAFETY: a zero-limit IDT is exactly what this action wants: the next exception
    // shuts the CPU down. Interrupts are off, so nothing else arrives.
    unsafe { cpu::load_idt(0, 0) };
    // SAFETY: with the empty IDT just loaded, the breakpoint ends in a shutdown.
    unsafe { cpu::breakpoint() };
    crate::fail!(
        "triple-fault",
        exit::NO_SHUTDOWN,
        "int3 with an empty IDT returned instead of shutting the CPU down"
    )
}

#[repr(C, align(4096))]
struct Page([u8; PAGE as usize]);

/// The page `garbage` fills with 0xff and runs.
static mut GARBAGE: Page = Page([0; PAGE as usize]);

/// Jumps into a page of 0xff bytes (`ff ff` is an invalid opcode) with an empty IDT:
/// #UD cannot be delivered, so the CPU shuts down.
pub fn garbage() -> ! {
    serial::set_stage("garbage");
    let page = &raw mut GARBAGE;
    // SAFETY: GARBAGE is the guest's own page, used by nothing else; interrupts are off.
    unsafe { page.cast::<u8>().write_bytes(0xff, PAGE as usize) };
    crate::say!(
        "garbage: jumping to {:#x} (a page of 0xff bytes) with an empty IDT; the CPU shuts down now",
        page as u64
    );
    // SAFETY: as in `triple_fault`: the empty IDT turns the first exception into a
    // shutdown, which is the point.
    unsafe { cpu::load_idt(0, 0) };
    // SAFETY: the page is mapped (identity map, no NX) and holds only invalid opcodes,
    // so the CPU faults on the first byte and shuts down.
    unsafe { cpu::jump_to(page as u64) }
}

/// Prints a line and spins with interrupts off, forever.
pub fn spin() -> ! {
    serial::set_stage("spin");
    crate::say!("spin: looping forever");
    loop {
        core::hint::spin_loop();
    }
}

/// Samples of [`cpuid_bench`].
const CPUID_SAMPLES: usize = 1001;

/// Times single CPUID instructions (each one a full exit to the monitor and back) with
/// RDTSC and prints `cpuid round trip: median <m> cycles, min <n>, over <k> samples, rdtsc
/// <r>` (`r`: two back-to-back RDTSCs, the timing overhead included in each sample), then
/// exits 0. Under QEMU's `-icount shift=0` a TSC cycle is one instruction.
pub fn cpuid_bench() -> ! {
    serial::set_stage("cpuid-bench");
    let mut samples = [0u64; CPUID_SAMPLES];
    for sample in samples.iter_mut() {
        let start = crate::cpu::rdtsc();
        let _ = core::hint::black_box(core::arch::x86_64::__cpuid(0));
        *sample = crate::cpu::rdtsc().wrapping_sub(start);
    }
    samples.sort_unstable();
    let overhead = {
        let start = crate::cpu::rdtsc();
        crate::cpu::rdtsc().wrapping_sub(start)
    };
    crate::say!(
        "cpuid round trip: median {} cycles, min {}, over {} samples, rdtsc {}",
        samples[CPUID_SAMPLES / 2],
        samples[0],
        CPUID_SAMPLES,
        overhead
    );
    crate::cpu::exit(0)
}
