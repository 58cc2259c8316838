//! The Esker microkernel.
//!
//! This crate is the composition root: [`kernel_entry`] brings the machine up in a fixed
//! order, each step logging what it found. The hardware layer is in `arch`; logic that
//! is not hardware (frame allocator, page-table builder, boot-info parsers, log framing)
//! is in `esker-kernel-core`, tested on the host.
//!
//! Built for `x86_64-unknown-none` only (`cargo xtask image`). On the host this crate
//! compiles to a stub so that `cargo test --workspace` and clippy can run everywhere.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod backtrace;
#[cfg(target_os = "none")]
mod bootinfo;
#[cfg(target_os = "none")]
mod log;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod selftest;
#[cfg(target_os = "none")]
mod world;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("esker-kernel runs on bare metal only: build it with `cargo xtask image`.");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
use arch::x86_64::{boot, cpu, gdt, lapic, power, serial, syscall, time, trap};
#[cfg(target_os = "none")]
use esker_kernel_core::contract::{self, exit_code};

/// Timer interrupts to see before declaring the timer alive (within 2 s).
#[cfg(target_os = "none")]
const TIMER_PROOF_TICKS: u64 = 2;

/// The 64-bit entry point, called by the boot stub on the boot CPU's stack with the
/// protocol it came by, the physical address of the boot information and (Multiboot2)
/// the loader's magic.
#[cfg(target_os = "none")]
pub extern "C" fn kernel_entry(protocol: u32, info_paddr: u32, loader_magic: u32) -> ! {
    time::mark_entry();
    serial::init();
    let tsc_khz = time::calibrate_tsc(10);
    let kernel_stack_top = &raw const boot::boot_stack_top as u64;
    let selectors = gdt::init(0, kernel_stack_top, None);
    trap::init(selectors);
    syscall::init(selectors, 0, kernel_stack_top, None);
    defmt::info!("Esker {=str} starting", env!("CARGO_PKG_VERSION"));

    let boot = match bootinfo::read(protocol, info_paddr, loader_magic) {
        Ok(boot) => boot,
        Err(error) => {
            defmt::error!(
                "boot: unusable boot information: {}",
                defmt::Display2Format(&error)
            );
            power::power_off(exit_code::BAD_BOOT);
        }
    };
    defmt::info!(
        "boot: {} (loader \"{=str}\"), command line \"{=str}\"",
        defmt::Display2Format(&boot.protocol),
        boot.loader_name.as_str(),
        boot.cmdline.as_str()
    );

    let mut cpu_apic_ids: heapless::Vec<u32, 64> = heapless::Vec::new();
    match bootinfo::read_madt(&boot) {
        Ok(madt) => {
            for cpu in madt.cpus.iter().filter(|c| c.enabled) {
                let _ = cpu_apic_ids.push(cpu.apic_id);
            }
            let enabled = madt.cpus.iter().filter(|c| c.enabled).count();
            defmt::info!(
                "acpi: {=usize} CPUs enabled ({=usize} listed{=str}), {=usize} IOAPICs, {=usize} interrupt overrides, 8259 PICs {=bool}",
                enabled,
                madt.cpus.len(),
                if madt.dropped > 0 {
                    ", some left out"
                } else {
                    ""
                },
                madt.ioapics.len(),
                madt.overrides.len(),
                madt.has_8259
            );
            for cpu in &madt.cpus {
                defmt::info!(
                    "acpi:   cpu apic id {=u32} uid {=u32}{=str}",
                    cpu.apic_id,
                    cpu.uid,
                    if cpu.enabled { "" } else { " (online-capable)" }
                );
            }
            for io in &madt.ioapics {
                defmt::info!(
                    "acpi:   ioapic {=u8} at {=u32:#x}, GSI base {=u32}",
                    io.id,
                    io.address,
                    io.gsi_base
                );
            }
            if madt.truncated {
                defmt::warn!("acpi: the MADT ends in a malformed entry; later entries ignored");
            }
        }
        Err(error) => defmt::warn!(
            "acpi: {}; continuing with the boot CPU only",
            defmt::Display2Format(&error)
        ),
    }

    let features = cpu::Features::detect();
    defmt::info!(
        "cpu: {=str} \"{=str}\", nx={=bool} smep={=bool} smap={=bool} 1g-pages={=bool} x2apic={=bool} invariant-tsc={=bool} hypervisor={=bool}",
        features.vendor_str(),
        features.brand_str(),
        features.nx,
        features.smep,
        features.smap,
        features.huge_pages_1g,
        features.x2apic,
        features.invariant_tsc,
        features.hypervisor
    );

    for region in boot.memory_map.regions() {
        defmt::info!(
            "memory:   [{=u64:#012x}, {=u64:#012x}) {}",
            region.start,
            region.end,
            defmt::Debug2Format(&region.kind)
        );
    }
    let memory = match memory::init(&boot, &features) {
        Ok(report) => report,
        Err(error) => {
            defmt::error!("memory: {}", defmt::Display2Format(&error));
            power::power_off(exit_code::BAD_BOOT);
        }
    };
    defmt::info!(
        "memory: {=u64} KiB usable in {=usize} regions, highest address {=u64:#x}",
        memory.usable_bytes / 1024,
        memory.usable_regions,
        memory.highest_usable_end
    );
    defmt::info!(
        "frames: {=u64} free of {=u64} usable; kernel image {=u64:#x}..{=u64:#x}, {=u64} page-table frames, {=u64} bitmap frames",
        memory.free_frames,
        memory.usable_frames,
        memory.kernel_image.0,
        memory.kernel_image.1,
        memory.table_frames,
        memory.bitmap_frames
    );
    defmt::info!(
        "paging: kernel tables live (W^X, NX{=str}{=str}); direct map {=u64} x 1 GiB + {=u64} x 2 MiB + {=u64} x 4 KiB pages",
        if features.smep { ", SMEP" } else { "" },
        if features.smap { ", SMAP" } else { "" },
        memory.direct_map.pages_1g,
        memory.direct_map.pages_2m,
        memory.direct_map.pages_4k
    );

    log_virtualization(&features);
    if arch::x86_64::svm::enable(&features) {
        defmt::info!("svm: enabled; virtual machines can run");
    }

    let calibration = lapic::init(|phys| memory::map_mmio(phys, 4096));
    cpu::enable_interrupts();
    let deadline = time::cycles_since_entry() + tsc_khz * 2000;
    while lapic::ticks() < TIMER_PROOF_TICKS {
        if time::cycles_since_entry() > deadline {
            defmt::error!("timer: no LAPIC timer interrupt within 2 s");
            power::power_off(exit_code::PANIC);
        }
        cpu::halt();
    }
    defmt::info!(
        "timer: LAPIC timer ticking at {=u64} Hz (APIC id {=u32}{=str}, bus {=u64} kHz, TSC {=u64} kHz)",
        lapic::TIMER_HZ,
        calibration.apic_id,
        if calibration.x2apic { ", x2APIC" } else { "" },
        calibration.bus_khz,
        tsc_khz
    );

    let (low, high) = arch::x86_64::smp::TRAMPOLINE_RANGE;
    let low_memory_usable = boot
        .memory_map
        .usable()
        .any(|region| region.start <= low && region.end >= high);
    let smp = arch::x86_64::smp::start_application_processors(&cpu_apic_ids, low_memory_usable);
    defmt::info!(
        "smp: {=usize} CPUs online{=str}",
        smp.online,
        if smp.failed + smp.left_out > 0 {
            " (some listed CPUs are not used: see above)"
        } else {
            ""
        }
    );
    if smp.left_out > 0 {
        defmt::warn!(
            "smp: {=usize} enabled CPUs beyond the kernel's {=usize} left halted",
            smp.left_out,
            arch::x86_64::MAX_CPUS
        );
    }

    world::boot();
    defmt::info!(
        "{=str} (boot took {=u64} TSC cycles)",
        contract::READY,
        time::cycles_since_entry()
    );
    selftest::run(boot.cmdline.as_str());
    world::start()
}

/// Logs what the CPU offers for running virtual machines.
#[cfg(target_os = "none")]
fn log_virtualization(features: &cpu::Features) {
    match features.svm {
        Some(svm) if svm.disabled_by_firmware => {
            defmt::warn!(
                "svm: present but disabled by firmware (VM_CR.SVMDIS); enable SVM in the BIOS setup"
            )
        }
        Some(svm) => {
            defmt::info!(
                "svm: supported, revision {=u32}, {=u32} ASIDs",
                svm.revision,
                svm.asids
            );
            if svm.nested_paging {
                defmt::info!("nested paging: supported");
            } else {
                defmt::warn!("nested paging: NOT supported; virtual machines need it");
            }
            defmt::info!(
                "svm: next-RIP save={=bool} decode assists={=bool} flush-by-ASID={=bool} VMCB clean bits={=bool}",
                svm.next_rip_save,
                svm.decode_assists,
                svm.flush_by_asid,
                svm.vmcb_clean
            );
        }
        None if features.vmx => {
            defmt::warn!("svm: not supported; Intel VMX present (its backend is not written yet)")
        }
        None => defmt::warn!("svm: not supported; this CPU cannot run virtual machines"),
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cpu::disable_interrupts();
    log::break_lock_for_fatal_report();
    defmt::error!("panic: {}", defmt::Display2Format(info));
    defmt::error!("system halted: kernel panic");
    power::power_off(exit_code::PANIC)
}
